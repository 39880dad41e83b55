"""Self-tests of the harness (no nydus-image needed): the fixture generator is
deterministic, treecmp sees a GNU tar of the tree and a kernel EROFS mount of
an mkfs.erofs image of the tree as equal, and treecmp catches differences."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import fixture as fx
import treecmp
import util


def test_fixture_is_deterministic(tmp_path, src_small):
    again = fx.make_fixture(tmp_path / "again", big_sparse_mib=8)
    t = treecmp.load_dir(again)
    diffs = treecmp.compare(src_small.tree, t)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, t)


def test_fixture_has_the_corner_cases(src_small):
    e = src_small.tree.entries
    types = {v["type"] for v in e.values()}
    assert types == {"reg", "dir", "lnk", "chr", "blk", "fifo", "sock"}
    assert any(len(g) == 3 for g in src_small.tree.hardlinks)
    assert e["xattrs/acl"]["xattrs"].get("system.posix_acl_access")
    assert e["xattrs/capability"]["xattrs"]["security.capability"] == fx.CAPABILITY_V2
    assert e["times/mtime_zero"]["mtime_ns"] == 0
    assert e["owners/huge_ids"]["uid"] == 4_000_000_000
    assert len(os.listdir(src_small.path / "many")) == 600
    assert e["sparse/big"]["size"] == 8 << 20
    assert len(e["symlinks/long_4095"]["target"]) == 4095
    assert any(len(os.fsencode(os.path.basename(p))) == 255 for p in e)


def test_treecmp_gnu_tar_equals_dir(tmp_path, src_small):
    tar = tmp_path / "gnu.tar"
    p = subprocess.run(["tar", "--format=pax", "--xattrs", "--xattrs-include=*",
                        "--numeric-owner", "-C", str(src_small.path), "-cf", str(tar), "."],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr  # it warns about the socket on stderr
    t = treecmp.load_tar(tar)
    diffs = treecmp.compare(src_small.tree, t, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, t)
    # Without ignore_sockets the socket is reported.
    assert treecmp.compare(src_small.tree, t) == ["only in A: 'special/socket' (sock)"]


def test_treecmp_detects_differences(tmp_path):
    a = fx.make_mini_fixture(tmp_path / "a")
    b = fx.make_mini_fixture(tmp_path / "b")
    assert not treecmp.compare(treecmp.load_dir(a), treecmp.load_dir(b))
    st = os.lstat(b / "data/text")
    with open(b / "data/text", "r+b") as f:
        f.write(b"X")
    os.utime(b / "data/text", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.utime(b / "link", ns=(0, 1), follow_symlinks=False)
    os.setxattr(b / "data/text", "user.k", b"w")
    os.chmod(b / "data/owned", 0o755)
    os.chown(b / "data/empty", 1, 2)
    os.unlink(b / "hardlink")
    shutil.copy2(b / "data/multi", b / "hardlink")
    os.unlink(b / "fifo")
    diffs = treecmp.compare(treecmp.load_dir(a), treecmp.load_dir(b))
    text = "\n".join(diffs)
    for needle in ["'data/text': sha256", "'link': mtime_ns", "'data/text': xattr user.k",
                   "'data/owned': mode", "'data/empty': uid", "'data/empty': gid",
                   "hard link group only in A", "only in A: 'fifo'", "'hardlink': nlink"]:
        assert needle in text, f"missing {needle!r} in:\n{text}"


@pytest.mark.skipif(not util.have_loop(), reason="/dev/loop-control absent")
def test_treecmp_kernel_mount_of_mkfs_erofs_image(tmp_path, src_small):
    """The kernel oracle machinery, validated with erofs-utils' own mkfs.
    mkfs.erofs 1.5 cannot handle 255-byte names, so those are excluded."""
    if not shutil.which("mkfs.erofs"):
        pytest.skip("mkfs.erofs not installed")
    long_names = [p for p in src_small.tree.entries
                  if len(os.fsencode(os.path.basename(p))) == 255]
    img = tmp_path / "ref.erofs"
    cmd = ["mkfs.erofs", "--quiet", "--preserve-mtime", str(img), str(src_small.path)]
    cmd[2:2] = [f"--exclude-path={p}" for p in long_names]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    with util.erofs_mount(img, tmp_path / "mnt") as mnt:
        mounted = treecmp.load_dir(mnt)
    diffs = treecmp.compare(src_small.tree, mounted, ignore_paths=tuple(long_names))
    # names/ lost an excluded subdirectory, hence one link fewer.
    diffs = [d for d in diffs if not d.startswith("'names': nlink")]
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, mounted)
