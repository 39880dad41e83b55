"""Layered builds (`create --parent-bootstrap`), checked against the kernel:
each image of a 4-layer stack, exported with `export --block` and mounted
as EROFS, must show exactly what the kernel's own `mount -t overlay` of the
same layer directories shows (layers.py has the fixture and the OCI ->
overlayfs whiteout conversion).

Not compared: link counts (overlayfs reports 1 for merged directories and
the lower inode's count for files whose other names were deleted or
replaced above); the image's own link counts are checked against its hard
link groups instead.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

import layers
import treecmp
import util
from test_kernel import export_block

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not util.have_loop(),
                       reason="SKIPPED LOUDLY: /dev/loop-control is absent, cannot mount EROFS"),
]

CHUNK = 0x10000   # small chunks: dedup across layers happens inside big files too


@contextlib.contextmanager
def overlay_mount(lowers_bottom_first, mnt: Path):
    """Read-only overlay of the layer directories (no upper dir)."""
    mnt.mkdir(parents=True, exist_ok=True)
    lower = ":".join(os.fspath(p) for p in reversed(lowers_bottom_first))
    if len(lowers_bottom_first) == 1:
        # overlayfs needs two layers without an upper dir: add an empty one
        # at the bottom (the top layer's root gives the root's attributes).
        empty = mnt.parent / (mnt.name + "-empty")
        empty.mkdir(exist_ok=True)
        lower = f"{lower}:{empty}"
    p = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}",
                        os.fspath(mnt)], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.fail(f"mount -t overlay failed: {p.stderr.strip()}", pytrace=False)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", os.fspath(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def layer_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("layers")
    oci = layers.make_layers(base / "oci")
    ovl = [layers.convert_to_overlay(p, base / "ovl" / p.name) for p in oci]
    return oci, ovl


def build_stack(layer_paths, out: Path, spec: str) -> list:
    """Build each layer on top of the previous bootstrap; all blobs in out/blobs."""
    imgs = []
    parent = None
    for i, src in enumerate(layer_paths, 1):
        extra = ["--whiteout-spec", spec]
        if parent is not None:
            extra += ["--parent-bootstrap", parent.bootstrap]
        img = util.create(src, out, chunk_size=CHUNK, name=f"layer{i}", extra=extra)
        if parent is not None:
            assert img.blob_ids[:len(parent.blob_ids)] == parent.blob_ids, \
                f"layer {i}: parent blobs not kept in order: {img.blob_ids} vs {parent.blob_ids}"
        imgs.append(img)
        parent = img
    return imgs


def mounted_image(img: util.Image, tmp: Path) -> treecmp.Tree:
    disk = tmp / f"{img.bootstrap.name}.disk"
    export_block(img, disk)
    with util.erofs_mount(disk, tmp / f"mnt-{img.bootstrap.name}") as mnt:
        return treecmp.load_dir(mnt)


def overlay_tree(ovl_layers, tmp: Path, n: int) -> treecmp.Tree:
    with overlay_mount(ovl_layers[:n], tmp / f"ovl-{n}") as mnt:
        return treecmp.load_dir(mnt)


def assert_link_counts(t: treecmp.Tree) -> None:
    group = {p: len(g) for g in t.hardlinks for p in g}
    bad = [(rel, e["nlink"], group.get(rel, 1)) for rel, e in t.entries.items()
           if e["type"] != "dir" and e["nlink"] != group.get(rel, 1)]
    assert not bad, f"nlink differs from the hard link group size: {bad}"


# Facts of the full 4-layer stack, so that a vacuous comparison (both sides
# wrong the same way) cannot pass.
FINAL_ABSENT = ("del_file", "del_dir", "opq/x", "opq/sub", "readd_dir/p", "readd_dir/q", "hl_c",
                "etc/drop", "dir/a", "opq2/one", "f2d/child", "d2f/inner", "never_existed")
FINAL_TYPES = {"f2d": "reg", "d2f": "dir", "d2f/again": "reg", "readd_dir/r": "reg",
               "opq/new": "reg", "opq2/three": "reg", "re_add": "reg", "hl_d": "reg",
               "dev/null": "chr", "dev/fifo": "fifo", "sym": "lnk", "dir/sub/c": "reg",
               "dir/sub/d": "reg", "newdir/f": "reg", "meta": "reg", "etc/keep": "reg"}


def assert_final_facts(t: treecmp.Tree) -> None:
    present = [p for p in FINAL_ABSENT if p in t.entries]
    assert not present, f"deleted entries still present: {present}"
    wrong = {p: t.entries.get(p, {}).get("type") for p, ty in FINAL_TYPES.items()
             if t.entries.get(p, {}).get("type") != ty}
    assert not wrong, f"entries missing or of the wrong type: {wrong}"
    assert frozenset({"n1", "n2"}) in t.hardlinks, t.hardlinks
    assert not any("hl_a" in g or "hl_b" in g for g in t.hardlinks), t.hardlinks
    assert t.entries["meta"]["uid"] == 20 and t.entries["meta"]["mode"] == 0o600
    assert t.entries["sym"]["target"] == "etc/keep"
    assert t.entries["."]["mode"] == 0o750 and t.entries["dir"]["mode"] == 0o700


def assert_same(want: treecmp.Tree, got: treecmp.Tree, what: str) -> None:
    diffs = treecmp.compare(want, got, nlink=False)
    assert not diffs, f"{what}:\n" + treecmp.format_diffs(diffs, want, got)


@pytest.mark.parametrize("spec", ["oci", "overlayfs"])
def test_layers_match_overlayfs(nydus, tmp_path, layer_dirs, spec):
    """Every prefix of the stack, built layer by layer, equals the kernel's
    overlay of the same layers; whiteouts never show up."""
    oci, ovl = layer_dirs
    imgs = build_stack(oci if spec == "oci" else ovl, tmp_path / "out", spec)
    for n, img in enumerate(imgs, 1):
        got = mounted_image(img, tmp_path)
        want = overlay_tree(ovl, tmp_path, n)
        assert_same(want, got, f"{n} layer(s), --whiteout-spec {spec}: overlay (A) vs image (B)")
        assert_link_counts(got)
        leaked = [r for r, e in got.entries.items()
                  if os.path.basename(r).startswith(".wh.") or (e["type"] == "chr" and e["rdev"] == (0, 0))
                  or layers.OPAQUE_XATTR in e["xattrs"]]
        assert not leaked, f"whiteouts leaked into image {n}: {leaked}"
    assert_final_facts(got)


def test_layered_check_and_unpack(nydus, tmp_path, layer_dirs):
    """check -D verifies every chunk of every blob of the final image, and
    unpack writes the merged tree."""
    oci, ovl = layer_dirs
    imgs = build_stack(oci, tmp_path / "out", "oci")
    final = imgs[-1]
    assert len(final.blob_ids) == 4, f"one blob per layer with new data: {final.info}"
    info = util.check_json(final, tmp_path)
    assert len(info["blobs"]) == 4
    tar = tmp_path / "final.tar"
    util.unpack(final, tar)
    got = treecmp.load_tar(tar)
    want = overlay_tree(ovl, tmp_path, len(ovl))
    assert_same(want, got, "overlay (A) vs unpacked tar (B)")
    assert_final_facts(got)


def test_parent_chunks_are_reused(nydus, tmp_path, layer_dirs):
    """Data already in a lower blob is referenced, not stored again: a layer
    that only changes metadata adds no blob, and a partly new file stores
    only its new chunks."""
    oci, _ = layer_dirs
    out = tmp_path / "out"
    base = util.create(oci[0], out, chunk_size=CHUNK, name="base")
    meta = tmp_path / "meta-only"
    meta.mkdir()
    for name in ("big", "meta"):
        dst = meta / name
        dst.write_bytes((oci[0] / name).read_bytes())
        os.chmod(dst, 0o400)
        os.chown(dst, 77, 88)
    img = util.create(meta, out, chunk_size=CHUNK, name="meta",
                      extra=["--parent-bootstrap", base.bootstrap])
    assert img.blob_ids == base.blob_ids, f"metadata-only layer stored data: {img.info}"
    assert img.info["dedup_chunks"] == img.info["chunks"] > 0, img.info

    grow = tmp_path / "grow"
    grow.mkdir()
    data = (oci[0] / "big").read_bytes()
    data = data[:len(data) // CHUNK * CHUNK]     # whole chunks of the lower file
    (grow / "big_plus").write_bytes(data + os.urandom(CHUNK))
    img2 = util.create(grow, out, chunk_size=CHUNK, name="grow",
                       extra=["--parent-bootstrap", base.bootstrap])
    assert len(img2.blob_ids) == 2, img2.info
    new_blob = img2.blob_dir / img2.blob_ids[1]
    assert new_blob.stat().st_size < 3 * CHUNK + 8192, \
        f"new blob is {new_blob.stat().st_size} bytes for one new {CHUNK}-byte chunk"
    assert img2.info["chunks"] - img2.info["dedup_chunks"] == 1, img2.info
    tar = tmp_path / "grow.tar"
    util.unpack(img2, tar)
    t = treecmp.load_tar(tar)
    assert t.entries["big_plus"]["sha256"] == util.sha256_file(grow / "big_plus")


def test_incompatible_parent(nydus, tmp_path, src_mini):
    """A parent with another chunk size or digester is refused, naming the
    parent and the flag to fix it; nothing is written."""
    base = util.create(src_mini.path, tmp_path / "base", chunk_size=0x1000)
    out = tmp_path / "out"
    out.mkdir()
    for extra, cause in ((["--chunk-size", "0x2000"], "chunk size.*--chunk-size 0x1000"),
                         (["--chunk-size", "0x1000", "--digester", "sha256"],
                          "digest.*--digester blake3")):
        res = util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out,
                              "--parent-bootstrap", base.bootstrap, *extra])
        util.assert_clean_error(res, mentions=[base.bootstrap], cause=cause,
                                absent=[out / "boot"], dirs_before={out: set()})
    bad = tmp_path / "not-a-bootstrap"
    bad.write_bytes(b"\0" * 8192)
    res = util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out,
                          "--parent-bootstrap", bad])
    util.assert_clean_error(res, mentions=[bad], absent=[out / "boot"], dirs_before={out: set()})


def test_readded_data_matching_a_parent_blob(nydus, tmp_path):
    """A layer whose new blob is byte-identical to a parent blob (its only
    file was deleted by a middle layer and is added again) reuses that blob
    instead of listing the same blob id twice."""
    data = os.urandom(3 * CHUNK + 100)
    l1, l2, l3 = (tmp_path / n for n in ("l1", "l2", "l3"))
    for d in (l1, l2, l3):
        d.mkdir()
    (l1 / "x").write_bytes(data)
    (l2 / ".wh.x").write_bytes(b"")
    (l3 / "x").write_bytes(data)
    out = tmp_path / "out"
    b1 = util.create(l1, out, chunk_size=CHUNK, name="b1")
    b2 = util.create(l2, out, chunk_size=CHUNK, name="b2", extra=["-p", b1.bootstrap])
    b3 = util.create(l3, out, chunk_size=CHUNK, name="b3", extra=["-p", b2.bootstrap])
    assert b2.blob_ids == b1.blob_ids == b3.blob_ids, (b1.info, b2.info, b3.info)
    util.check_json(b3, tmp_path)
    tar = tmp_path / "b3.tar"
    util.unpack(b3, tar)
    t = treecmp.load_tar(tar)
    assert set(t.entries) == {".", "x"} and t.entries["x"]["sha256"] == util.sha256_file(l3 / "x")
    tar2 = tmp_path / "b2.tar"
    util.unpack(b2, tar2)
    assert set(treecmp.load_tar(tar2).entries) == {"."}
