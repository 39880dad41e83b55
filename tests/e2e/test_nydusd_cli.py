"""nydusd's command line, signals, external unmount and read-only mount."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time

import pytest

import util
from nydusd import (FSTYPE, daemons, fuse_mounts_at, guarded, make_data_tree,  # noqa: F401
                    nydusd_bin, read_bytes, regular_files, v1_config, write_config)


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("nydusd-cli")
    src = make_data_tree(root / "src", files=4)
    os.setxattr(src / "readme.txt", "user.k", b"v")
    return src, util.create(src, root / "out", compressor="zstd", chunk_size=0x1000)


def run(binary, *args, timeout=10):
    p = subprocess.run([os.fspath(binary), *map(os.fspath, args)], capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["fuse", "--help"], ["-h"]],
                         ids=["help", "fuse-help", "h"])
def test_help(nydusd_bin, argv):
    rc, out = run(nydusd_bin, *argv)
    assert rc == 0, f"nydusd {' '.join(argv)}: exit {rc}\n{out}"
    for opt in ("--config", "--mountpoint", "--bootstrap", "--localfs-dir", "--thread-num"):
        assert opt in out, f"--help does not mention {opt}\n{out}"


def test_version(nydusd_bin):
    rc, out = run(nydusd_bin, "--version")
    assert rc == 0 and out.strip(), f"--version: exit {rc}\n{out}"


@pytest.mark.parametrize("drop", ["--bootstrap", "--mountpoint"])
def test_missing_required_option(nydusd_bin, tmp_path, small_image, drop):
    src, img = small_image
    args = {"--localfs-dir": img.blob_dir, "--mountpoint": tmp_path, "--bootstrap": img.bootstrap}
    del args[drop]
    argv = [x for kv in args.items() for x in kv]
    rc, out = run(nydusd_bin, *argv)
    assert rc != 0, f"nydusd without {drop} exited 0\n{out}"
    assert drop.lstrip("-") in out, f"the message does not mention {drop}\n{out}"
    assert not fuse_mounts_at(tmp_path)


def test_no_config_and_no_localfs_dir(nydusd_bin, tmp_path, small_image):
    src, img = small_image
    rc, out = run(nydusd_bin, "--mountpoint", tmp_path, "--bootstrap", img.bootstrap)
    assert rc != 0, out
    assert "--config" in out or "config" in out.lower(), out
    assert not fuse_mounts_at(tmp_path)


@pytest.mark.parametrize("case", ["missing", "regular-file"])
def test_bad_mountpoint(nydusd_bin, tmp_path, small_image, case):
    src, img = small_image
    mp = tmp_path / "mp"
    if case == "regular-file":
        mp.write_text("x")
    rc, out = run(nydusd_bin, "--localfs-dir", img.blob_dir, "--mountpoint", mp,
                  "--bootstrap", img.bootstrap)
    assert rc != 0 and rc != 101 and "panicked" not in out, f"exit {rc}\n{out}"
    assert str(mp) in out, f"the error does not name the mountpoint\n{out}"


def test_missing_bootstrap_file(nydusd_bin, tmp_path, small_image):
    src, img = small_image
    boot = tmp_path / "no-such-bootstrap"
    (tmp_path / "mnt").mkdir()
    rc, out = run(nydusd_bin, "--localfs-dir", img.blob_dir, "--mountpoint", tmp_path / "mnt",
                  "--bootstrap", boot)
    assert rc != 0 and str(boot) in out, f"exit {rc}\n{out}"
    assert not fuse_mounts_at(tmp_path / "mnt")


def test_all_options_and_log_file(daemons, tmp_path, small_image):
    """`nydusd fuse` with every option: the log goes to --log-file."""
    src, img = small_image
    conf = write_config(tmp_path / "c.json", v1_config(img.blob_dir, tmp_path / "cache"))
    plist = tmp_path / "prefetch.txt"
    plist.write_text("/readme.txt\n")
    logf = tmp_path / "daemon.log"
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf, subcommand=True,
                      extra=["--thread-num", "2", "--prefetch-files", plist, "--id", "e2e-id",
                             "--log-level", "debug", "--log-file", logf,
                             "--apisock", tmp_path / "api.sock"])
    for rel in regular_files(src):
        assert read_bytes(d.mountpoint / rel) == (src / rel).read_bytes()
    d.stop()
    assert logf.is_file() and logf.stat().st_size > 0, "nothing written to --log-file"
    text = logf.read_text()
    assert "DEBUG" in text, "--log-level debug wrote no DEBUG line"
    assert "e2e-id" in text, "the --id is not reported in the log"


# --------------------------------------------------------------------------
# signals and unmount
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unmounts_and_exits_0(daemons, tmp_path, small_image, sig):
    src, img = small_image
    # --localfs-dir caches next to the blobs: use a copy, keep the shared image pristine.
    blobs = tmp_path / "blobs"
    shutil.copytree(img.blob_dir, blobs)
    d = daemons.start(img.bootstrap, tmp_path / "mnt", localfs_dir=blobs)
    rel = regular_files(src)[0]
    assert read_bytes(d.mountpoint / rel) == (src / rel).read_bytes()
    t0 = time.monotonic()
    d.stop(sig, timeout=5)          # exit 0 within 5 s, and the mount is gone
    assert time.monotonic() - t0 < 5
    assert os.path.isdir(d.mountpoint) and not os.listdir(d.mountpoint), \
        "the mountpoint directory is not back to its empty self"


def test_signal_with_open_file(daemons, tmp_path, small_image):
    """SIGTERM while a file in the mount is open: still exits 0 in time."""
    src, img = small_image
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    rel = regular_files(src)[0]
    fd = os.open(d.mountpoint / rel, os.O_RDONLY)
    try:
        os.pread(fd, 10, 0)
        d.send_signal(signal.SIGTERM)
        rc = d.wait_exit(5)
        assert rc == 0, f"exit status {rc} within 5s of SIGTERM with an open file\n" \
                        f"{d.describe()}"
    finally:
        try:
            os.close(fd)        # FLUSH to a server that is gone: ENOTCONN is fine
        except OSError as e:
            assert e.errno in (errno.ENOTCONN, errno.EIO), e
    deadline = time.monotonic() + 5
    while fuse_mounts_at(d.mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not fuse_mounts_at(d.mountpoint), \
        f"still mounted after exit: {fuse_mounts_at(d.mountpoint)}"


def test_external_umount_stops_daemon(daemons, tmp_path, small_image):
    src, img = small_image
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    assert d.new_mount()[1] == FSTYPE
    p = subprocess.run(["umount", os.fspath(d.mountpoint)], capture_output=True, text=True)
    assert p.returncode == 0, f"umount failed: {p.stderr}"
    rc = d.wait_exit(5)
    assert rc == 0, f"nydusd exit status {rc} within 5s of an external umount\n{d.describe()}"
    assert not fuse_mounts_at(d.mountpoint)
    d.assert_clean_log()


# --------------------------------------------------------------------------
# read-only
# --------------------------------------------------------------------------

def test_mount_is_read_only(daemons, tmp_path, small_image):
    src, img = small_image
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    m = d.mountpoint
    rel = regular_files(src)[0]
    f = m / rel
    ops = {
        "open O_WRONLY": lambda: os.close(os.open(f, os.O_WRONLY)),
        "open O_RDWR": lambda: os.close(os.open(f, os.O_RDWR)),
        "open O_TRUNC": lambda: os.close(os.open(f, os.O_RDONLY | os.O_TRUNC)),
        "open O_APPEND": lambda: os.close(os.open(f, os.O_WRONLY | os.O_APPEND)),
        "create": lambda: os.close(os.open(m / "new_file", os.O_WRONLY | os.O_CREAT, 0o644)),
        "mkdir": lambda: os.mkdir(m / "new_dir"),
        "rmdir": lambda: os.rmdir(m / "a"),
        "unlink": lambda: os.unlink(f),
        "rename": lambda: os.rename(f, m / "renamed"),
        "link": lambda: os.link(f, m / "hard"),
        "symlink": lambda: os.symlink("x", m / "sym"),
        "mknod fifo": lambda: os.mkfifo(m / "fifo"),
        "chmod": lambda: os.chmod(f, 0o600),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (0, 0)),
        "truncate": lambda: os.truncate(f, 0),
        "setxattr": lambda: os.setxattr(m / "readme.txt", "user.new", b"x"),
        "setxattr existing": lambda: os.setxattr(m / "readme.txt", "user.k", b"y"),
        "removexattr": lambda: os.removexattr(m / "readme.txt", "user.k"),
    }
    wrong = []
    for name, op in ops.items():
        kind, val = guarded(op, what=name)
        if kind == "ok":
            wrong.append(f"{name}: succeeded")
        elif val.errno != errno.EROFS:
            wrong.append(f"{name}: {errno.errorcode.get(val.errno, val.errno)} ({val})")
    assert not wrong, "expected EROFS:\n  " + "\n  ".join(wrong) + "\n" + d.describe()
    st = os.statvfs(m)
    assert st.f_flag & os.ST_RDONLY, f"statvfs f_flag {st.f_flag:#x} lacks ST_RDONLY"
    # Nothing changed.
    assert sorted(os.listdir(m)) == sorted(os.listdir(src))
    assert read_bytes(f) == (src / rel).read_bytes()
    assert os.getxattr(m / "readme.txt", "user.k") == b"v"
    assert d.alive()
    d.stop()


def test_xattr_lookups(daemons, tmp_path, small_image):
    src, img = small_image
    d = daemons.mount(img, tmp_path / "mnt", tmp_path / "cache")
    f = d.mountpoint / "readme.txt"
    assert os.listxattr(f) == ["user.k"]
    assert os.getxattr(f, "user.k") == b"v"
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.nope")
    assert e.value.errno == errno.ENODATA, e.value
    d.stop()


def test_enable_xattr_false(daemons, tmp_path, small_image):
    """enable_xattr: false hides the xattrs (empty list; lookups fail) but
    the rest of the tree is served."""
    src, img = small_image
    cfg = v1_config(img.blob_dir, tmp_path / "cache")
    cfg["enable_xattr"] = False
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=write_config(tmp_path / "c.json",
                                                                           cfg))
    f = d.mountpoint / "readme.txt"
    try:
        names = os.listxattr(f)
    except OSError as e:
        assert e.errno in (errno.EOPNOTSUPP, errno.ENODATA), e
        names = []
    assert names == [], f"xattrs listed with enable_xattr false: {names}"
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.k")
    assert e.value.errno in (errno.ENODATA, errno.EOPNOTSUPP), e.value
    assert read_bytes(f) == (src / "readme.txt").read_bytes()
    d.stop()
