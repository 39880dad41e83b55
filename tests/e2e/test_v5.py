"""RAFS v5 images written by upstream's nydus-image (tests/fixtures/rafs-v5).

nydusd mounts them and `check -D`, `inspect`, `unpack` and `export --block`
read them: the trees equal the source (shipped as a tar), but for the root
directory's mtime, which upstream's builder sets to 0.
"""

from __future__ import annotations

import subprocess

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, v1_config, write_config  # noqa: F401

FIXTURES = util.REPO / "tests" / "fixtures" / "rafs-v5"


@pytest.fixture(scope="module")
def v5_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("v5") / "src"
    root.mkdir()
    z = subprocess.run(["zstd", "-dc", FIXTURES / "src.tar.zst"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf", "-", "-C", root],
                   input=z, check=True)
    return root, treecmp.load_dir(root)


def image(compressor):
    d = FIXTURES / compressor
    return d / "bootstrap", d / "blobs"


def assert_same(src_tree, path):
    got = treecmp.load_dir(path)
    diffs = treecmp.compare(src_tree, got, ignore_root_mtime=True)
    assert not diffs, treecmp.format_diffs(diffs, src_tree, got)


@pytest.mark.parametrize("compressor", ["lz4_block", "zstd"])
def test_nydusd_mounts_upstream_v5(v5_src, daemons, tmp_path, compressor):
    _, tree = v5_src
    boot, blobs = image(compressor)
    before = sorted(p.name for p in blobs.iterdir())
    # The cache goes to tmp_path: never write into the repository's fixtures.
    conf = write_config(tmp_path / "c.json", v1_config(blobs, tmp_path / "cache"))
    d = daemons.start(boot, tmp_path / "mnt", config=conf)
    assert_same(tree, d.mountpoint)
    d.stop()
    d.assert_clean_log()
    assert sorted(p.name for p in blobs.iterdir()) == before, "nydusd wrote into the fixture directory"


@pytest.mark.parametrize("compressor", ["lz4_block", "zstd"])
def test_check_inspect_unpack_export_v5(v5_src, tmp_path, compressor):
    _, tree = v5_src
    boot, blobs = image(compressor)
    r = util.run_nydus(["check", "-B", boot, "-D", blobs])
    assert r.rc == 0 and "chunks read and verified" in r.stdout + r.stderr, r.stdout + r.stderr
    r = util.run_nydus(["inspect", boot, "-R", "stats"])
    assert r.rc == 0, r.stderr
    out = tmp_path / "out.tar"
    r = util.run_nydus(["unpack", "-B", boot, "-D", blobs, "-o", out])
    assert r.rc == 0, r.stderr
    got = treecmp.load_tar(out)
    diffs = treecmp.compare(tree, got, ignore_root_mtime=True)
    assert not diffs, treecmp.format_diffs(diffs, tree, got)


@pytest.mark.parametrize("compressor", ["lz4_block", "zstd"])
def test_export_block_of_v5_mounts_in_the_kernel(v5_src, tmp_path, compressor):
    _, tree = v5_src
    boot, blobs = image(compressor)
    disk = tmp_path / "disk.erofs"
    util.run_nydus(["export", "--block", "-B", boot, "-D", blobs, "-O", disk], expect_rc=0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with util.erofs_mount(disk, mnt):
        assert_same(tree, mnt)


def test_damaged_v5_bootstrap_is_a_clear_error(tmp_path):
    boot, blobs = image("zstd")
    data = bytearray(boot.read_bytes())
    data[56:60] = (10_000_000).to_bytes(4, "little")  # inode table entries
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    r = util.run_nydus(["check", "-B", bad])
    assert r.rc != 0 and "invalid RAFS v5 bootstrap" in r.stderr, r.stderr
    assert "panicked" not in r.stderr
