"""`nydus-image merge`: the 4-layer fixture of test_layers.py, each layer
built on its own (whiteouts kept as entries with `--whiteout-spec none`),
merged into one bootstrap, must read back as the kernel's overlay of the
same layers, and as the `--parent-bootstrap` chain does; blobs can be
renamed to their layer digests and then served by nydusd under those
names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import layers
import treecmp
import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_layers import (CHUNK, assert_final_facts, assert_link_counts, assert_same,  # noqa: F401
                         build_stack, layer_dirs, mounted_image, overlay_tree)

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not util.have_loop(),
                       reason="SKIPPED LOUDLY: /dev/loop-control is absent, cannot mount EROFS"),
]


def build_layers(paths, out: Path, extra=(), first: int = 1) -> list:
    """Each layer alone, whiteouts kept; blobs of all layers in out/blobs;
    bootstraps out/l<first>, out/l<first+1>, ..."""
    return [util.create(p, out, chunk_size=CHUNK, name=f"l{i}", validate=False,
                        extra=["--whiteout-spec", "none", *extra])
            for i, p in enumerate(paths, first)]


def merge(sources, out: Path, name: str, extra=()) -> util.Image:
    boot, js = out / name, out / f"{name}.merge.json"
    res = util.run_nydus(["merge", "-B", boot, "-J", js, *extra, *[s.bootstrap for s in sources]],
                         expect_rc=0)
    info = json.loads(js.read_text())
    assert boot.is_file() and info["layers"] == len(sources), res.describe()
    return util.Image(sources[-1].src, out, boot, out / "blobs", info, "zstd", "blake3", CHUNK, res)


def assert_no_whiteouts(t: treecmp.Tree) -> None:
    leaked = [r for r, e in t.entries.items()
              if os.path.basename(r).startswith(".wh.") or (e["type"] == "chr" and e["rdev"] == (0, 0))
              or layers.OPAQUE_XATTR in e["xattrs"]]
    assert not leaked, f"whiteouts leaked into the merged image: {leaked}"


@pytest.mark.parametrize("spec", ["oci", "overlayfs"])
def test_merge_matches_overlayfs(nydus, tmp_path, layer_dirs, spec):
    oci, ovl = layer_dirs
    out = tmp_path / "out"
    parts = build_layers(oci if spec == "oci" else ovl, out)
    merged = merge(parts, out, "merged", ["--whiteout-spec", spec])
    assert merged.info["whiteouts"] > 0, merged.info
    own = [b for p in parts for b in p.blob_ids]
    assert merged.blob_ids == [b for b in own if b in merged.blob_ids], merged.info
    util.check_json(merged, tmp_path)

    got = mounted_image(merged, tmp_path)
    want = overlay_tree(ovl, tmp_path, len(ovl))
    assert_same(want, got, f"--whiteout-spec {spec}: overlay (A) vs merged image (B)")
    assert_link_counts(got)
    assert_no_whiteouts(got)
    assert_final_facts(got)

    chain = build_stack(oci, tmp_path / "chain", "oci")[-1]
    assert_same(mounted_image(chain, tmp_path), got, "--parent-bootstrap chain (A) vs merged (B)")


def test_merge_on_parent_with_renamed_blobs(nydus, daemons, tmp_path, layer_dirs):
    """Layers 3 and 4 merged onto the chain image of layers 1-2, their blobs
    renamed to (made-up) layer digests and recorded sizes; nydusd, given a
    backend directory holding the blobs under those names only, serves the
    overlay of all four layers."""
    oci, ovl = layer_dirs
    out = tmp_path / "out"
    lower = build_stack(oci[:2], out, "oci")[-1]
    parts = build_layers(oci[2:], out, first=3)
    digests, sizes, renamed = [], [], {}
    for i, p in enumerate(parts):
        d = hashlib.sha256(f"layer-{i + 3}".encode()).hexdigest()
        digests.append(f"sha256:{d}")
        assert len(p.blob_ids) == 1, p.info
        sizes.append(str(p.blob_path().stat().st_size))
        renamed[p.blob_ids[0]] = d
    merged = merge(parts, out, "merged", ["--parent-bootstrap", lower.bootstrap,
                                          "--blob-digests", ",".join(digests),
                                          "--blob-sizes", ",".join(sizes)])
    assert merged.blob_ids[:len(lower.blob_ids)] == lower.blob_ids, merged.info
    assert merged.blob_ids[len(lower.blob_ids):] == list(renamed.values()), merged.info

    backend = tmp_path / "backend"
    backend.mkdir()
    for b in lower.blob_ids:
        shutil.copy(out / "blobs" / b, backend / b)
    for old, new in renamed.items():
        shutil.copy(out / "blobs" / old, backend / new)
    merged.blob_dir = backend
    util.check_json(merged, tmp_path)
    d = daemons.mount(merged, tmp_path / "mnt", tmp_path / "cache")
    got = treecmp.load_dir(d.mountpoint)
    want = overlay_tree(ovl, tmp_path, len(ovl))
    assert_same(want, got, "overlay (A) vs merged image on nydusd (B)")
    assert_final_facts(got)
    d.stop()
    d.assert_clean_log()


def test_merge_with_chunk_dict(nydus, tmp_path, layer_dirs):
    """Layers 2-4 built with layer 1's image as chunk dictionary: their
    bootstraps reference layer 1's blob too; merge (told the dictionary)
    keeps it under its own name and renames only the layers' own blobs."""
    oci, ovl = layer_dirs
    out = tmp_path / "out"
    (l1,) = build_layers(oci[:1], out)
    rest = build_layers(oci[1:], out, ["--chunk-dict", f"bootstrap={l1.bootstrap}"], first=2)
    assert any(l1.blob_ids[0] in p.blob_ids for p in rest), [p.info for p in rest]
    sources = [l1, *rest]
    ids = [f"layer{i}" for i in range(len(sources))]
    merged = merge(sources, out, "merged", ["--chunk-dict", f"bootstrap={l1.bootstrap}",
                                            "--original-blob-ids", ",".join(ids)])
    assert merged.blob_ids[0] == l1.blob_ids[0], merged.info
    assert set(merged.blob_ids[1:]) <= set(ids[1:]), merged.info
    backend = tmp_path / "backend"
    backend.mkdir()
    shutil.copy(l1.blob_path(), backend / l1.blob_ids[0])
    for i, p in enumerate(rest, 1):
        own = [b for b in p.blob_ids if b != l1.blob_ids[0]]
        for b in own:
            shutil.copy(out / "blobs" / b, backend / ids[i])
    merged.blob_dir = backend
    got = mounted_image(merged, tmp_path)
    want = overlay_tree(ovl, tmp_path, len(ovl))
    assert_same(want, got, "overlay (A) vs merged image with a chunk dictionary (B)")


def test_merge_bad_input(nydus, tmp_path, layer_dirs, src_mini):
    """Clean errors: list flags of the wrong length, a source built on a
    parent (two own blobs), layers of different chunk sizes."""
    oci, _ = layer_dirs
    out = tmp_path / "out"
    parts = build_layers(oci[:2], out)
    chain = build_stack(oci[:2], tmp_path / "chain", "oci")[-1]
    other = util.create(src_mini.path, tmp_path / "other", chunk_size=0x1000)
    boot = out / "merged"
    cases = ((["--blob-sizes", "1", parts[0].bootstrap, parts[1].bootstrap], [], "--blob-sizes has 1 entries"),
             (["--blob-digests", "sha256:12,34", parts[0].bootstrap, parts[1].bootstrap], [], "not a sha-256"),
             ([parts[0].bootstrap, chain.bootstrap], [chain.bootstrap], "at most one"),
             ([parts[0].bootstrap, other.bootstrap], [other.bootstrap], "chunk size"))
    for args, mentions, cause in cases:
        res = util.run_nydus(["merge", "-B", boot, *args])
        util.assert_clean_error(res, mentions=mentions, cause=cause, absent=[boot])
