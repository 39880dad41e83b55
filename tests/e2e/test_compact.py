"""`nydus-image compact`: an image whose upper layers deleted or replaced
most of a lower layer's files gets fewer, fuller blobs, and reads back
exactly as before.

The stack: a "bulk" base layer of 16 incompressible 200 KB files, the
4-layer fixture of test_layers.py (whiteouts, hard links, devices,
xattrs, ...), and a top layer that deletes 13 bulk files and replaces one.
The base blob is then 12.5% used; the fixture's layer 1 holds a 3 MiB file
and stays; the other layers' blobs are small.

Oracles: the compacted image, exported with `export --block` and mounted
by the kernel's EROFS driver, and mounted by nydusd, shows the same tree as
the original image; `check -D` reads and verifies every chunk of the new
blobs; blob count and bytes shrink by the figures the layers imply.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

import layers
import treecmp
import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_layers import (CHUNK, assert_final_facts, assert_same, build_stack,  # noqa: F401
                         layer_dirs, mounted_image)
from test_merge import build_layers, merge

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not util.have_loop(),
                       reason="SKIPPED LOUDLY: /dev/loop-control is absent, cannot mount EROFS"),
]

BULK_FILES = 16
BULK_SIZE = 200_000
KEPT = ("f00", "f01")            # bulk files still visible at the top
REPLACED = "f03"                 # replaced by the top layer
MIB = 1 << 20
V5 = util.REPO / "tests" / "fixtures" / "rafs-v5" / "zstd"


def bulk_layers(base: Path) -> tuple:
    """(bulk base layer, top layer deleting/replacing bulk files, contents)."""
    rng = random.Random(77)
    contents = {f"f{i:02}": rng.randbytes(BULK_SIZE) for i in range(BULK_FILES)}
    bottom = layers._Layer(base / "bulk", 10, 0)
    for name, data in contents.items():
        bottom.file(f"bulk/{name}", data)
    bottom.finish()
    top = layers._Layer(base / "top", 11, 5)
    for name in contents:
        if name not in KEPT and name != REPLACED:
            top.whiteout(f"bulk/{name}")
    contents[REPLACED] = top.rand(150_000)
    top.file(f"bulk/{REPLACED}", contents[REPLACED])
    # The fixture's top layer sets the root's attributes; keep them.
    os.chmod(top.root, 0o750)
    os.chown(top.root, 1, 2)
    top.finish()
    return bottom.root, top.root, {n: contents[n] for n in (*KEPT, REPLACED)}


@pytest.fixture(scope="module")
def stack_dirs(layer_dirs, tmp_path_factory):
    oci, _ovl = layer_dirs
    bottom, top, visible = bulk_layers(tmp_path_factory.mktemp("bulk"))
    return [bottom, *oci, top], visible


def blob_bytes(img: util.Image) -> int:
    return sum((img.blob_dir / b).stat().st_size for b in img.blob_ids)


def compact(img: util.Image, name: str, args=(), expect_rc: int | None = 0) -> tuple:
    """nydus-image compact -B IMG -O OUT/NAME -J OUT/NAME.json ARGS;
    returns (the output as an Image, the -J report, the run)."""
    boot, js = img.out / name, img.out / f"{name}.compact.json"
    res = util.run_nydus(["compact", "-B", img.bootstrap, "-O", boot, "-J", js, *args], expect_rc=expect_rc)
    info = json.loads(js.read_text()) if js.is_file() else {}
    out = util.Image(img.src, img.out, boot, img.blob_dir, info, img.compressor, img.digester,
                     img.chunk_size, res)
    return out, info, res


def check_blobs(img: util.Image, tmp: Path) -> dict:
    """`check -D`: every chunk read and verified; the blob table as reported."""
    js = tmp / f"{img.bootstrap.name}.check.json"
    res = util.run_nydus(["check", img.bootstrap, "-D", img.blob_dir, "-J", js], expect_rc=0)
    info = json.loads(js.read_text())
    assert [b["blob_id"] for b in info["blobs"]] == img.blob_ids, res.describe()
    assert info["chunks_verified"] > 0, info
    return info


def assert_report_figures(before: util.Image, after: util.Image, info: dict) -> None:
    """The report's figures are those of the blob files on disk."""
    assert info["blobs_before"] == len(before.blob_ids), info
    assert info["blobs_after"] == len(after.blob_ids) == len(info["blob_sizes"]), info
    assert info["bytes_before"] == blob_bytes(before), info
    assert info["bytes_after"] == blob_bytes(after) == sum(info["blob_sizes"]), info
    for b in info["new_blobs"]:
        p = after.blob_dir / b
        assert util.HEX64.match(b) and util.sha256_file(p) == b, f"new blob {b} is not named by its sha256"
    for b in set(before.blob_ids) & set(after.blob_ids):
        assert util.sha256_file(after.blob_dir / b) == b, f"kept blob {b} was modified"


def assert_bulk(t: treecmp.Tree, visible: dict) -> None:
    for name, data in visible.items():
        e = t.entries.get(f"bulk/{name}")
        assert e and e["sha256"] == hashlib.sha256(data).hexdigest(), f"bulk/{name}: {e}"
    gone = [n for n in (f"f{i:02}" for i in range(BULK_FILES)) if n not in visible and f"bulk/{n}" in t.entries]
    assert not gone, f"deleted bulk files visible: {gone}"


def test_compact_rewrites_sparse_blobs_and_merges_small_ones(nydus, daemons, tmp_path, stack_dirs):
    dirs, visible = stack_dirs
    imgs = build_stack(dirs, tmp_path / "out", "oci")
    img = imgs[-1]
    base_blob = imgs[0].blob_ids[0]
    big_blob = imgs[1].blob_ids[-1]      # the fixture's layer 1 (3 MiB file)
    assert (img.blob_dir / big_blob).stat().st_size > MIB
    small = [b for b in img.blob_ids if b not in (base_blob, big_blob)]
    assert len(small) >= 2 and all((img.blob_dir / b).stat().st_size < MIB for b in small), img.info

    cfg = tmp_path / "compact.json"
    cfg.write_text(json.dumps({"min_used_ratio": 50, "compact_blob_size": MIB, "max_compact_size": 64 * MIB,
                               "layers_to_compact": 2, "blobs_dir": os.fspath(img.blob_dir)}))
    out, info, res = compact(img, "compacted", ["--config", cfg])
    assert info["compacted"] is True, res.describe()
    # The base blob (12.5% used) is rewritten; once rewritten it is small and
    # merged with the other small blobs into one new blob at its place; the
    # large, fully used blob keeps its id.
    assert out.blob_ids == [info["new_blobs"][0], big_blob], info
    assert len(info["new_blobs"]) == 1 and info["dropped_blobs"] == [], info
    assert sorted(info["rewritten_blobs"]) == sorted([base_blob, *small]), info
    assert_report_figures(img, out, info)
    deleted = (BULK_FILES - len(KEPT) - 1) * BULK_SIZE
    assert info["bytes_before"] - info["bytes_after"] >= deleted, info
    assert f"blobs {len(img.blob_ids)} -> 2" in res.stdout, res.describe()
    check_blobs(out, tmp_path)

    want = mounted_image(img, tmp_path)
    got = mounted_image(out, tmp_path)
    assert_same(want, got, "original image (A) vs compacted image (B), kernel EROFS")
    assert_final_facts(got)
    assert_bulk(got, visible)

    d = daemons.mount(out, tmp_path / "mnt", tmp_path / "cache")
    assert_same(want, treecmp.load_dir(d.mountpoint), "original image (A) vs compacted image on nydusd (B)")
    d.stop()
    d.assert_clean_log()

    # Compacting the result again finds nothing to do: a byte copy.
    again, info2, _ = compact(out, "again", ["--config", cfg])
    assert info2["compacted"] is False and again.blob_ids == out.blob_ids, info2
    assert util.sha256_file(again.bootstrap) == util.sha256_file(out.bootstrap)


def test_compact_nothing_qualifies(nydus, tmp_path, stack_dirs):
    dirs, _ = stack_dirs
    img = build_stack(dirs, tmp_path / "out", "oci")[-1]
    before = util.listing(img.blob_dir)
    out, info, res = compact(img, "same", ["-D", img.blob_dir, "--min-used-ratio", "0",
                                           "--compact-blob-size", "0"])
    assert info["compacted"] is False and info["new_blobs"] == [], info
    assert out.blob_ids == img.blob_ids and info["bytes_after"] == info["bytes_before"], info
    assert util.sha256_file(out.bootstrap) == util.sha256_file(img.bootstrap), "output differs from input"
    assert util.listing(img.blob_dir) == before
    assert "nothing to compact" in res.stdout, res.describe()

    # Fewer blobs than layers_to_compact: nothing at all is written.
    n = len(img.blob_ids)
    out, info, res = compact(img, "skipped", ["-D", img.blob_dir, "--min-used-ratio", "90",
                                              "--layers-to-compact", str(n + 1)])
    assert not out.bootstrap.exists() and info["bootstrap"] is None, res.describe()
    assert "layers_to_compact" in res.stdout and util.listing(img.blob_dir) == before, res.describe()
    # ... and with exactly that many blobs it compacts (upstream: blobs >= layers_to_compact).
    out, info, res = compact(img, "done", ["-D", img.blob_dir, "--min-used-ratio", "50",
                                           "--layers-to-compact", str(n)])
    assert info["compacted"] is True and len(out.blob_ids) < n, info

    # A RAFS v5 image with nothing to compact: copied as it is.
    v5 = tmp_path / "v5"
    shutil.copytree(V5, v5)
    res = util.run_nydus(["compact", "-B", v5 / "bootstrap", "-D", v5 / "blobs"], expect_rc=0)
    copy = v5 / "bootstrap.bootstrap.compact"     # upstream's default output name
    assert copy.is_file() and copy.read_bytes() == (v5 / "bootstrap").read_bytes(), res.describe()


def test_compact_keeps_chunk_dict_blobs(nydus, tmp_path, stack_dirs):
    """Blobs of the --chunk-dict are shared: never rewritten, however unused."""
    dirs, _ = stack_dirs
    imgs = build_stack(dirs, tmp_path / "out", "oci")
    img, base_blob = imgs[-1], imgs[0].blob_ids[0]
    out, info, _ = compact(img, "dict", ["-D", img.blob_dir, "--min-used-ratio", "50",
                                         "--compact-blob-size", "0",
                                         "--chunk-dict", f"bootstrap={imgs[0].bootstrap}"])
    assert base_blob in out.blob_ids, info
    assert_report_figures(img, out, info)
    check_blobs(out, tmp_path)
    out, info, _ = compact(img, "nodict", ["-D", img.blob_dir, "--min-used-ratio", "50",
                                           "--compact-blob-size", "0"])
    assert base_blob not in out.blob_ids and len(out.blob_ids) == len(img.blob_ids), info
    assert base_blob in info["rewritten_blobs"], info
    assert_report_figures(img, out, info)
    check_blobs(out, tmp_path)


def test_compact_reads_sources_from_a_backend(nydus, tmp_path, stack_dirs):
    """Source blobs absent from the blob directory come from --backend-type;
    the new blobs go to the blob directory."""
    dirs, _ = stack_dirs
    img = build_stack(dirs, tmp_path / "out", "oci")[-1]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    out, info, _ = compact(img, "remote", ["-D", fresh, "--min-used-ratio", "50",
                                           "--compact-blob-size", str(MIB), "--backend-type", "localfs",
                                           "--backend-config", json.dumps({"dir": os.fspath(img.blob_dir)})])
    assert info["compacted"] is True and util.listing(fresh) == set(info["new_blobs"]), info
    for b in out.blob_ids:
        if not (fresh / b).exists():
            shutil.copy(img.blob_dir / b, fresh / b)
    out.blob_dir = fresh
    assert_report_figures(img, out, info)
    check_blobs(out, tmp_path)


def test_compact_merged_image(nydus, tmp_path, stack_dirs):
    """Layers built alone and merged (`merge`), then compacted."""
    dirs, visible = stack_dirs
    out_dir = tmp_path / "out"
    parts = build_layers(dirs, out_dir)
    merged = merge(parts, out_dir, "merged", ["--whiteout-spec", "oci"])
    base_blob = parts[0].blob_ids[0]
    assert base_blob in merged.blob_ids, merged.info
    out, info, res = compact(merged, "compacted", ["-D", merged.blob_dir, "--min-used-ratio", "50",
                                                   "--compact-blob-size", str(MIB)])
    assert info["compacted"] is True and base_blob not in out.blob_ids, info
    assert len(out.blob_ids) < len(merged.blob_ids), info
    assert_report_figures(merged, out, info)
    assert info["bytes_before"] - info["bytes_after"] >= (BULK_FILES - len(KEPT) - 1) * BULK_SIZE, info
    check_blobs(out, tmp_path)
    want = mounted_image(merged, tmp_path)
    got = mounted_image(out, tmp_path)
    assert_same(want, got, "merged image (A) vs compacted merged image (B)")
    assert_final_facts(got)
    assert_bulk(got, visible)


def test_compact_errors(nydus, tmp_path, stack_dirs):
    dirs, _ = stack_dirs
    imgs = build_stack(dirs, tmp_path / "out", "oci")
    img, base_blob = imgs[-1], imgs[0].blob_ids[0]
    boot = tmp_path / "o.boot"
    run = ["compact", "-B", img.bootstrap, "-O", boot, "--min-used-ratio", "50"]

    # A blob the compaction needs is missing: nothing is written.
    partial = tmp_path / "partial"
    partial.mkdir()
    for b in img.blob_ids:
        if b != base_blob:
            shutil.copy(img.blob_dir / b, partial / b)
    before = util.listing(partial)
    res = util.run_nydus([*run, "-D", partial])
    util.assert_clean_error(res, mentions=[base_blob], cause="--blob-dir", absent=[boot],
                            dirs_before={partial: before})

    # A corrupt chunk (the first bytes of bulk/f00, stored uncompressed) stops the run.
    shutil.copy(img.blob_dir / base_blob, partial / base_blob)
    with open(partial / base_blob, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    before = util.listing(partial)
    res = util.run_nydus([*run, "-D", partial])
    util.assert_clean_error(res, mentions=[base_blob], cause="digest", absent=[boot],
                            dirs_before={partial: before})

    # No blob directory at all.
    res = util.run_nydus(run)
    util.assert_clean_error(res, cause="--blob-dir", absent=[boot])

    # compact.json: a value of the wrong type is an error naming the key;
    # an unknown key is a warning.
    cfg = tmp_path / "compact.json"
    cfg.write_text('{"min_used_ratio": "50"}')
    res = util.run_nydus(["compact", "-B", img.bootstrap, "-O", boot, "-D", img.blob_dir, "-C", cfg])
    util.assert_clean_error(res, mentions=[cfg, "min_used_ratio"], cause="percentage", absent=[boot])
    cfg.write_text('{"min_used_ratio": 0, "compact_blob_size": 0, "colour": "red"}')
    res = util.run_nydus(["compact", "-B", img.bootstrap, "-O", boot, "-D", img.blob_dir, "-C", cfg],
                         expect_rc=0)
    assert "unknown key \"colour\"" in res.stderr and boot.is_file(), res.describe()
