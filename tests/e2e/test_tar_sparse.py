"""Sparse files in tar layers (`tar --sparse`).

GNU sparse entries (with extension blocks for many holes) build into an
image whose files read back exactly as the source, through the kernel's
EROFS (export --block) and nydusd; PAX sparse entries are refused with a
message that says how to repack.
"""

from __future__ import annotations

import os
import subprocess

import treecmp
import util
from nydusd import daemons, nydusd_bin, v1_config, write_config  # noqa: F401


def sparse_tree(root):
    root.mkdir(parents=True)
    with open(root / "few-holes.bin", "wb") as f:
        f.truncate(20 << 20)
        f.write(b"head")
        f.seek(15 << 20)
        f.write(b"tail")
    with open(root / "many-holes.bin", "wb") as f:
        f.truncate(8 << 20)
        for i in range(40):  # more than the header's 4 segments: extension blocks
            f.seek(i * (200 << 10) + 7)
            f.write(os.urandom(3000))
    with open(root / "all-hole.bin", "wb") as f:
        f.truncate(5 << 20)
    (root / "plain.txt").write_bytes(b"not sparse\n")
    # The GNU format keeps whole seconds only.
    for p in [*root.iterdir(), root]:
        os.utime(p, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    return root


def test_gnu_sparse_tar_builds_the_same_files(tmp_path, daemons):
    src = sparse_tree(tmp_path / "src")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", layer, "-C", src, "."], check=True)
    assert layer.stat().st_size < 2 << 20, "tar did not store the files sparsely"
    img = util.create(layer, tmp_path / "out", extra=["--type", "tar-rafs"])
    util.run_nydus(["check", "-B", img.bootstrap, "-D", img.blob_dir], expect_rc=0)
    want = treecmp.load_dir(src)
    conf = write_config(tmp_path / "c.json", v1_config(img.blob_dir, tmp_path / "cache"))
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    got = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(want, got, ignore_root_mtime=True)
    assert not diffs, treecmp.format_diffs(diffs, want, got)
    d.stop()
    # Holes cost one zero chunk, not their size.
    assert sum(p.stat().st_size for p in img.blob_dir.iterdir()) < 2 << 20


def test_pax_sparse_tar_is_refused_clearly(tmp_path):
    src = sparse_tree(tmp_path / "src")
    layer = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", "--format=pax", "-cf", layer, "-C", src, "."], check=True)
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    r = util.run_nydus(["create", "--type", "tar-rafs", "-B", out / "boot", "-D", out / "blobs", layer])
    assert r.rc != 0 and "PAX sparse entries are not supported" in r.stderr and "--format=gnu" in r.stderr, r.stderr
    assert not (out / "boot").exists()
