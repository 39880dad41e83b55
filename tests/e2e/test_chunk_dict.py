"""Chunk dictionaries (`create --chunk-dict bootstrap=DICT`) and the dedup
figures of `stat`.

Tree B is tree A with about a fifth of its data changed. Built with A's
bootstrap as the dictionary, B's own blob holds only the new chunks (sizes
measured against the same build without a dictionary), B's blob table
lists A's blob, and the image reads back as tree B through nydusd (with
A's blob found in the same backend directory) and through `check -D`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)

CHUNK = 0x10000


def make_tree_a(root: Path) -> None:
    rng = random.Random(7)
    for i in range(24):
        d = root / f"d{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        # Random (incompressible) data, so blob sizes measure chunk counts.
        (d / f"f{i}").write_bytes(rng.randbytes(rng.randrange(2, 6) * CHUNK + rng.randrange(CHUNK)))
    (root / "small").write_bytes(b"tiny\n")
    os.symlink("d0/f0", root / "link")


def make_tree_b(a: Path, b: Path) -> int:
    """B = A, minus two files, plus new data (about 20%); returns new bytes."""
    shutil.copytree(a, b, symlinks=True)
    rng = random.Random(8)
    os.unlink(b / "d1/f1")
    os.unlink(b / "d2/f2")
    new = 0
    for i in range(3):
        data = rng.randbytes(4 * CHUNK + 100)
        (b / f"d{i}" / f"new{i}").write_bytes(data)
        new += len(data)
    # One file grows by one new chunk; its first chunks stay shared.
    f = b / "d3/f3"
    old = f.read_bytes()
    extra = rng.randbytes(CHUNK)
    f.write_bytes(old[:len(old) // CHUNK * CHUNK] + extra)
    return new + len(extra)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("chunkdict")
    a, b = base / "a", base / "b"
    make_tree_a(a)
    new_bytes = make_tree_b(a, b)
    return a, b, new_bytes


def stat_json(boot: Path, tmp: Path) -> dict:
    js = tmp / f"{boot.name}.stat.json"
    res = util.run_nydus(["stat", "-B", boot, "-J", js], expect_rc=0)
    assert js.is_file(), res.describe()
    return json.loads(js.read_text()) | {"_text": res.stdout}


def test_chunk_dict_stores_only_new_chunks(nydus, daemons, tmp_path, trees):
    a, b, new_bytes = trees
    out = tmp_path / "out"
    img_a = util.create(a, out, chunk_size=CHUNK, name="a")
    plain = util.create(b, tmp_path / "plain", chunk_size=CHUNK, name="b")
    img_b = util.create(b, out, chunk_size=CHUNK, name="b",
                        extra=["--chunk-dict", f"bootstrap={img_a.bootstrap}"])

    assert img_b.blob_ids[0] == img_a.blob_ids[0] and len(img_b.blob_ids) == 2, img_b.info
    own = (img_b.blob_dir / img_b.blob_ids[1]).stat().st_size
    nodict = plain.blob_path(0).stat().st_size
    print(f"B's blob: {nodict} bytes without the dictionary, {own} with it "
          f"({own / nodict:.1%}); new data {new_bytes} bytes")
    assert own <= 0.25 * nodict, f"own blob {own} bytes vs {nodict} without dictionary"
    assert new_bytes <= own < new_bytes + 3 * 4096 + 8192, \
        f"own blob {own} bytes for {new_bytes} new incompressible bytes"
    chunks_new = img_b.info["chunks"] - img_b.info["dedup_chunks"]
    assert chunks_new == 3 * 5 + 1, img_b.info   # 4 chunks + a 100-byte tail each, +1 grown

    util.check_json(img_b, tmp_path)
    d = daemons.mount(img_b, tmp_path / "mnt", tmp_path / "cache")
    got = treecmp.load_dir(d.mountpoint)
    want = treecmp.load_dir(b)
    diffs = treecmp.compare(want, got)
    assert not diffs, treecmp.format_diffs(diffs, want, got) + "\n" + d.describe()
    d.stop()
    d.assert_clean_log()

    # stat: A's blob is only partly used by B (two files deleted, one cut);
    # B's own blob entirely.
    st = stat_json(img_b.bootstrap, tmp_path)
    ba, bb = st["blobs"]
    assert ba["blob_id"] == img_a.blob_ids[0] and bb["blob_id"] == img_b.blob_ids[1], st
    assert bb["referenced_chunks"] == bb["stored_chunks"] == chunks_new, st
    assert 0 < ba["referenced_chunks"] < ba["stored_chunks"], st
    assert ba["referenced_chunks"] + bb["referenced_chunks"] == st["unique_chunks"], st
    assert ba["chunk_refs"] + bb["chunk_refs"] == st["chunk_refs"] == img_b.info["chunks"], st
    assert bb["stored_bytes"] == own, st
    assert f"blob 0 {ba['blob_id']}: {ba['referenced_chunks']} of {ba['stored_chunks']} stored chunks" \
        in st["_text"], st["_text"]


def test_chunk_dict_with_parent(nydus, tmp_path, trees):
    """--chunk-dict and --parent-bootstrap together: parent blobs first, then
    the dictionary blob, then the own blob; a plain path works as the value."""
    a, b, _ = trees
    out = tmp_path / "out"
    img_a = util.create(a, out, chunk_size=CHUNK, name="a")
    base = tmp_path / "base"
    base.mkdir()
    (base / "only-in-base").write_bytes(random.Random(3).randbytes(2 * CHUNK))
    img_p = util.create(base, out, chunk_size=CHUNK, name="p", validate=False)  # A's blob is there too
    img = util.create(b, out, chunk_size=CHUNK, name="b",
                      extra=["--chunk-dict", img_a.bootstrap, "--parent-bootstrap", img_p.bootstrap])
    assert img.blob_ids[:2] == [img_p.blob_ids[0], img_a.blob_ids[0]] and len(img.blob_ids) == 3, img.info
    util.check_json(img, tmp_path)
    tar = tmp_path / "b.tar"
    util.unpack(img, tar)
    got = treecmp.load_tar(tar)
    assert "only-in-base" in got.entries
    assert got.entries["d0/new0"]["sha256"] == util.sha256_file(b / "d0/new0")

    # The parent as its own dictionary adds nothing: the parent's blob keeps its index.
    again = util.create(base, out, chunk_size=CHUNK, name="again",
                        extra=["--chunk-dict", f"bootstrap={img_p.bootstrap}",
                               "--parent-bootstrap", img_p.bootstrap], validate=False)
    assert again.blob_ids == img_p.blob_ids, again.info


def test_dedup_figures(nydus, tmp_path):
    """stat's dedup figures on an image with known duplication: three copies
    of one 4-chunk file and one unique 2-chunk file."""
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(4 * CHUNK)
    for n in ("x", "y", "z"):
        (src / n).write_bytes(data)
    (src / "u").write_bytes(random.Random(6).randbytes(2 * CHUNK))
    img = util.create(src, tmp_path / "out", chunk_size=CHUNK)
    st = stat_json(img.bootstrap, tmp_path)
    assert st["chunk_refs"] == 14 and st["unique_chunks"] == 6, st
    assert st["chunk_ref_bytes"] == 14 * CHUNK and st["unique_chunk_bytes"] == 6 * CHUNK, st
    assert st["dedup_saved_bytes"] == 8 * CHUNK, st
    assert abs(st["dedup_ratio"] - 14 / 6) < 1e-9, st
    (blob,) = st["blobs"]
    assert blob["stored_chunks"] == blob["referenced_chunks"] == 6 and blob["chunk_refs"] == 14, st
    assert blob["used_ratio"] == 1.0 and blob["stored_bytes"] == img.blob_path().stat().st_size, st
    assert "dedup ratio 2.333" in st["_text"], st["_text"]


def test_bad_chunk_dict(nydus, tmp_path, src_mini):
    """A dictionary of another chunk size, an unknown type or a missing file
    is a clean error naming the dictionary; nothing is written."""
    d = util.create(src_mini.path, tmp_path / "dict", chunk_size=0x1000)
    out = tmp_path / "out"
    out.mkdir()
    cases = ((f"bootstrap={d.bootstrap}", [d.bootstrap], "chunk size.*--chunk-size 0x1000"),
             (f"blobs={d.bootstrap}", ["blobs"], "unknown dictionary type"),
             (f"bootstrap={tmp_path / 'missing'}", [tmp_path / "missing"], "no such file"))
    for arg, mentions, cause in cases:
        res = util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out,
                              "--chunk-size", "0x2000", "--chunk-dict", arg])
        util.assert_clean_error(res, mentions=mentions, cause=cause,
                                absent=[out / "boot"], dirs_before={out: set()})
