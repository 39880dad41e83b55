"""Round trip: create -> check -> check -D -> unpack -> the tar equals the source.

Every compressor x digester x chunk size (18 combinations).

Why only three combinations use the 300 MiB sparse file: it is ~77k chunks at
a 4 KiB chunk size, unpack writes all 300 MiB into the tar and the comparison
reads them back, so each such run costs seconds; running it 18 times would
blow the time budget without exercising different code.  The three "-big"
combinations are chosen so that every compressor, every digester and every
chunk size meets the big file at least once; the other 15 use the identical
tree with an 8 MiB sparse file (same islands, scaled).
"""

from __future__ import annotations

import itertools
import json
import os
import tarfile

import pytest

import treecmp
import util
from util import CHUNK_SIZES, COMPRESSORS, DIGESTERS

BIG_COMBOS = {
    ("none", "blake3", 0x1000),
    ("lz4_block", "sha256", 0x100000),
    ("zstd", "blake3", 0x1000000),
}


def _combos():
    for c, d, cs in itertools.product(COMPRESSORS, DIGESTERS, CHUNK_SIZES):
        big = (c, d, cs) in BIG_COMBOS
        yield pytest.param(c, d, cs, big, id=f"{c}-{d}-{cs:#x}" + ("-big" if big else ""),
                           marks=[pytest.mark.slow] if big else [])


def tar_layout_problems(tar_path) -> list:
    """Structural problems of an unpack tar: absolute or '..' names,
    duplicates, non-PAX archive."""
    problems = []
    seen = set()
    with tarfile.open(tar_path, "r:") as tf:
        members = tf.getmembers()
        fmt_pax = any(m.pax_headers for m in members)
    for m in members:
        name = m.name
        norm = treecmp._norm_tar_path(name)
        if name.startswith("/"):
            problems.append(f"absolute member name {name!r}")
        if ".." in name.split("/"):
            problems.append(f"member name with '..': {name!r}")
        if norm in seen:
            problems.append(f"duplicate member {name!r}")
        seen.add(norm)
    if not fmt_pax:
        problems.append("no PAX headers at all (nanosecond mtimes need PAX 'mtime' records)")
    return problems


def verify_counts(img: util.Image, check_info: dict, src) -> None:
    st = src.chunk_stats(img.chunk_size)
    info = img.info
    blob = check_info["blobs"][0]
    ctx = (f"\nexpected from the source tree: inodes={src.inode_count()} "
           f"(entries={src.entry_count()}), chunk refs={st['total']}, unique chunks="
           f"{st['unique']}, unique bytes={st['unique_bytes']} "
           f"(4K-aligned {st['unique_bytes_4k']})\ncreate -J: {json.dumps(info)}\n"
           f"check -J blob: {json.dumps(blob)}")
    # inodes: hard links share one inode; also accept a count of entries.
    assert info["inodes"] in (src.inode_count(), src.entry_count()), "inodes" + ctx
    # chunks: either all chunk references or the unique chunks in the blob;
    # dedup_chunks: references that were satisfied by an existing chunk.
    assert info["chunks"] in (st["total"], st["unique"]), "chunks" + ctx
    assert info["dedup_chunks"] == st["total"] - st["unique"], "dedup_chunks" + ctx
    assert blob["chunk_count"] == st["unique"], "blob chunk_count" + ctx
    assert st["unique_bytes"] <= blob["uncompressed_size"] <= st["unique_bytes_4k"], \
        "blob uncompressed_size" + ctx
    blob_file_size = img.blob_path(0).stat().st_size
    assert 0 < blob["compressed_size"] <= blob_file_size, "blob compressed_size" + ctx
    if img.compressor != "none":
        # The fixture is dominated by zeros and text: compression must pay off.
        assert blob["compressed_size"] < blob["uncompressed_size"], "compression" + ctx


@pytest.mark.parametrize("compressor,digester,chunk_size,big", list(_combos()))
def test_roundtrip(request, nydus, tmp_path, compressor, digester, chunk_size, big):
    src = request.getfixturevalue("src_full" if big else "src_small")
    img = util.create(src.path, tmp_path / "out", compressor=compressor, digester=digester,
                      chunk_size=chunk_size)
    assert len(img.blob_ids) == 1, f"expected one data blob: {img.info}"

    check_info = util.check_json(img, tmp_path, verify_blobs=True)
    verify_counts(img, check_info, src)

    tar = tmp_path / "unpacked.tar"
    res = util.unpack(img, tar)
    assert "socket" in res.stderr.lower(), \
        "unpack should warn that it skipped special/socket\n" + res.describe()
    problems = tar_layout_problems(tar)
    assert not problems, "\n".join(problems)
    unpacked = treecmp.load_tar(tar)
    diffs = treecmp.compare(src.tree, unpacked, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src.tree, unpacked)
    tar.unlink()  # hundreds of MiB for the big combos; kept only on failure


def test_unpack_with_blob_file(nydus, tmp_path, src_small):
    """unpack --blob FILE (instead of --blob-dir) gives the same tar."""
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd", digester="sha256",
                      chunk_size=0x100000)
    t1, t2 = tmp_path / "dir.tar", tmp_path / "file.tar"
    util.unpack(img, t1)
    util.unpack(img, t2, blob_file=img.blob_path(0))
    a, b = treecmp.load_tar(t1), treecmp.load_tar(t2)
    diffs = treecmp.compare(a, b)
    assert not diffs, treecmp.format_diffs(diffs, a, b)
    diffs = treecmp.compare(src_small.tree, b, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, b)


def make_non_utf8_tree(src) -> None:
    src.mkdir()
    b = os.fsencode(src)
    with open(os.path.join(b, b"bad\xff\xfe-name"), "wb") as f:
        f.write(b"latin-1 \xe9")
    os.mkdir(os.path.join(b, b"dir\xc3("))
    with open(os.path.join(b, b"dir\xc3(", b"inner\x80"), "wb") as f:
        f.write(b"")
    os.symlink(b"target\xff", os.path.join(b, b"link\xfe"))
    os.setxattr(os.path.join(b, b"bad\xff\xfe-name"), "user.v", b"\xff\xfe\xfd")
    os.mkfifo(os.path.join(b, b"fifo\xff"))
    for i, p in enumerate(sorted(os.listdir(b))):
        os.utime(os.path.join(b, p), ns=(10**18 + i, 10**18 + i * 7), follow_symlinks=False)
    os.utime(os.path.join(b, b"dir\xc3("), ns=(5, 123456789), follow_symlinks=False)
    os.utime(b, ns=(1, 987654321))


def test_roundtrip_non_utf8_names(nydus, tmp_path):
    """Names, symlink targets and xattr values that are not UTF-8 (Linux
    names are bytes)."""
    src = tmp_path / "src"
    make_non_utf8_tree(src)
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    util.check_json(img, tmp_path, verify_blobs=True)
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    a, t = treecmp.load_dir(src), treecmp.load_tar(tar)
    diffs = treecmp.compare(a, t)
    assert not diffs, treecmp.format_diffs(diffs, a, t)


def test_roundtrip_tree_without_data(nydus, tmp_path):
    """No file data at all: no blob is written, blobs == [], and check/unpack
    work without any blob."""
    src = tmp_path / "src"
    (src / "d/e").mkdir(parents=True)
    (src / "empty").write_bytes(b"")
    (src / "d/empty2").write_bytes(b"")
    os.symlink("empty", src / "link")
    os.mknod(src / "null", 0o20644, os.makedev(1, 3))
    os.setxattr(src / "empty", "user.only_metadata", b"1")
    for i, p in enumerate(["empty", "d/empty2", "link", "null", "d/e", "d", "."]):
        os.utime(src / p, ns=(0, 1_000_000_007 * (i + 1)), follow_symlinks=False)
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    assert img.info["blobs"] == [] and img.info["blob_sizes"] == [], img.info
    assert util.listing(img.blob_dir) == set(), "no blob file expected for a data-less tree"
    info = util.check_json(img, tmp_path, verify_blobs=True)
    assert info["blobs"] == []
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    a, t = treecmp.load_dir(src), treecmp.load_tar(tar)
    diffs = treecmp.compare(a, t)
    assert not diffs, treecmp.format_diffs(diffs, a, t)


def make_hardlinked_specials(src) -> None:
    """Hard links to a fifo, a char device, a symlink and an empty file."""
    src.mkdir()
    os.mkfifo(src / "fifo")
    os.link(src / "fifo", src / "fifo_link")
    os.mknod(src / "null", 0o20644, os.makedev(1, 3))
    os.link(src / "null", src / "null_link")
    os.symlink("target", src / "sym")
    os.link(src / "sym", src / "sym_link", follow_symlinks=False)
    (src / "empty").write_bytes(b"")
    os.link(src / "empty", src / "empty_link")
    for i, p in enumerate(["fifo", "null", "sym", "empty", "."]):
        os.utime(src / p, ns=(0, 1_000_000_000 * (i + 1) + i), follow_symlinks=False)


def test_roundtrip_hardlinked_special_files(nydus, tmp_path):
    """Hard links are not only for regular files: a fifo, device or symlink
    with several names must come back as one inode (tar hardlink entries)."""
    src = tmp_path / "src"
    make_hardlinked_specials(src)
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    a, t = treecmp.load_dir(src), treecmp.load_tar(tar)
    diffs = treecmp.compare(a, t)
    assert not diffs, treecmp.format_diffs(diffs, a, t)


def test_roundtrip_pre_epoch_mtime(nydus, tmp_path):
    """mtimes before 1970 (ext4 and tar can hold them; the EROFS on-disk u64
    read back as a signed time64_t by the kernel can too)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old").write_bytes(b"from 1969")
    os.utime(src / "old", ns=(0, -1_500_000_000))          # 1969-12-31T23:59:58.5
    (src / "very_old").write_bytes(b"")
    os.utime(src / "very_old", ns=(0, -1_000_000_000_000_000_000 + 7))  # 1938
    os.utime(src, ns=(0, 1_600_000_000_000_000_000))
    img = util.create(src, tmp_path / "out", chunk_size=0x1000)
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    a, t = treecmp.load_dir(src), treecmp.load_tar(tar)
    diffs = treecmp.compare(a, t)
    assert not diffs, treecmp.format_diffs(diffs, a, t)
