"""Command-line surface: help, option validation, -b/--blob-id, stat/inspect,
logging options."""

from __future__ import annotations

import json
import os
import re
import threading

import pytest

import treecmp
import util

SUBCOMMANDS = ["create", "check", "stat", "inspect", "unpack", "export"]


def test_top_level_help(nydus):
    res = util.run_nydus(["--help"], expect_rc=0)
    for sub in SUBCOMMANDS:
        assert sub in res.stdout, f"--help does not list {sub!r}\n{res.describe()}"


def test_version(nydus):
    res = util.run_nydus(["--version"], expect_rc=0)
    assert res.stdout.strip(), res.describe()


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_subcommand_help(nydus, sub):
    res = util.run_nydus([sub, "--help"], expect_rc=0)
    assert re.search(r"usage", res.stdout, re.I), res.describe()


def test_unknown_subcommand(nydus):
    res = util.run_nydus(["frobnicate"])
    util.assert_clean_error(res, mentions=["frobnicate"])


@pytest.mark.parametrize("chunk_size", ["0x3000", "0x800", "0x2000000", "0", "0x1001",
                                        "0x100000000", "banana", "-4096"])
def test_invalid_chunk_size(nydus, tmp_path, src_mini, chunk_size):
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    res = util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out / "blobs",
                          f"--chunk-size={chunk_size}"])
    util.assert_clean_error(res, cause=r"chunk[ _-]?size", absent=[out / "boot"],
                            dirs_before={out / "blobs": set()})


@pytest.mark.parametrize("opt,value", [("--compressor", "gzip"), ("--digester", "md5"),
                                       ("--fs-version", "7"), ("--whiteout-spec", "aufs")])
def test_invalid_enum_values(nydus, tmp_path, src_mini, opt, value):
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    res = util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out / "blobs",
                          opt, value])
    util.assert_clean_error(res, mentions=[value], absent=[out / "boot"],
                            dirs_before={out / "blobs": set()})


def test_create_requires_blob_destination(nydus, tmp_path, src_mini):
    """A tree with file data and neither -b nor -D cannot be built."""
    boot = tmp_path / "boot"
    res = util.run_nydus(["create", src_mini.path, "-B", boot])
    util.assert_clean_error(res, absent=[boot], dirs_before={tmp_path: set()})


def test_create_blob_file_and_dir_conflict(nydus, tmp_path, src_mini):
    (tmp_path / "blobs").mkdir()
    boot, blob = tmp_path / "boot", tmp_path / "blob"
    res = util.run_nydus(["create", src_mini.path, "-B", boot, "-b", blob,
                          "-D", tmp_path / "blobs"])
    util.assert_clean_error(res, absent=[boot, blob], dirs_before={tmp_path / "blobs": set()})


def test_blob_file_with_custom_blob_id(nydus, tmp_path, src_mini):
    blob_id = "0123456789abcdef" * 4
    boot, blob, js = tmp_path / "boot", tmp_path / "my.blob", tmp_path / "c.json"
    util.run_nydus(["create", src_mini.path, "-B", boot, "-b", blob, "--blob-id", blob_id,
                    "--chunk-size", "0x1000", "-J", js], expect_rc=0)
    info = json.loads(js.read_text())
    assert info["blobs"] == [blob_id], info
    assert info["blob_sizes"] == [blob.stat().st_size], info
    cjs = tmp_path / "check.json"
    util.run_nydus(["check", boot, "-J", cjs], expect_rc=0)
    assert [b["blob_id"] for b in json.loads(cjs.read_text())["blobs"]] == [blob_id]
    tar = tmp_path / "out.tar"
    util.run_nydus(["unpack", boot, "--blob", blob, "--output", tar], expect_rc=0)
    t = treecmp.load_tar(tar)
    diffs = treecmp.compare(src_mini.tree, t, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src_mini.tree, t)


def test_blob_file_default_id_is_sha256(nydus, tmp_path, src_mini):
    boot, blob, js = tmp_path / "boot", tmp_path / "data.blob", tmp_path / "c.json"
    util.run_nydus(["create", src_mini.path, "-B", boot, "-b", blob, "-J", js], expect_rc=0)
    info = json.loads(js.read_text())
    assert info["blobs"] == [util.sha256_file(blob)], info


@pytest.fixture(scope="module")
def mini_built(nydus, src_mini, tmp_path_factory) -> util.Image:
    return util.create(src_mini.path, tmp_path_factory.mktemp("cli-img"), chunk_size=0x1000,
                       compressor="lz4_block", digester="sha256")


def test_stat(nydus, tmp_path, mini_built):
    util.run_nydus(["stat", "-B", mini_built.bootstrap], expect_rc=0)
    js = tmp_path / "stat.json"
    util.run_nydus(["stat", "-B", mini_built.bootstrap, "-J", js], expect_rc=0)
    json.loads(js.read_text())


def _find_values(obj, pred):
    """All (key, value) pairs anywhere in a JSON document matching pred."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if pred(k, v):
                out.append((k, v))
            out += _find_values(v, pred)
    elif isinstance(obj, list):
        for v in obj:
            out += _find_values(v, pred)
    return out


def test_inspect_commands(nydus, mini_built, src_mini):
    boot = mini_built.bootstrap

    def inspect(cmd):
        return util.run_nydus(["inspect", boot, "-R", cmd], expect_rc=0).json()

    inspect("stats")
    ls = json.dumps(inspect("ls"), ensure_ascii=False)
    for name in ("data", "hardlink", "link", "dir", "empty", "fifo", "chr"):
        assert name in ls, f"`inspect -R ls` does not list {name!r}: {ls[:2000]}"
    blobs = json.dumps(inspect("blobs"))
    assert mini_built.blob_ids[0] in blobs, blobs

    st = inspect("stat /data/text")
    sizes = _find_values(st, lambda k, v: k in ("size", "i_size", "st_size") and v == 5000)
    assert sizes, f"`inspect -R stat /data/text` does not report size 5000: {st}"

    chunks = inspect("chunk /data/multi")   # 3 * 4096 + 100 bytes -> 4 chunks of 0x1000
    doc = json.dumps(chunks)
    lists = _find_values(chunks, lambda k, v: isinstance(v, list) and len(v) == 4)
    assert lists or (isinstance(chunks, list) and len(chunks) == 4), \
        f"`inspect -R chunk /data/multi` should show 4 chunks: {doc[:2000]}"

    inos = _find_values(st, lambda k, v: k in ("ino", "inode", "i_ino", "st_ino", "nid")
                        and isinstance(v, int))
    assert inos, f"no inode number in `inspect -R stat` output: {st}"
    inspect(f"icheck {inos[0][1]}")


def test_inspect_bad_requests(nydus, mini_built):
    boot = mini_built.bootstrap
    for cmd in ("stat /no/such/path", "chunk /no/such/file", "ls /no/such/dir", "frobnicate"):
        res = util.run_nydus(["inspect", boot, "-R", cmd])
        util.assert_clean_error(res)
    # An inode number that does not exist: an empty answer or a clean error.
    res = util.run_nydus(["inspect", boot, "-R", "icheck 999999999"])
    if res.rc == 0:
        assert res.json() in ([], {}, None), res.describe()
    else:
        util.assert_clean_error(res)


def test_logging_options(nydus, tmp_path, src_mini):
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    log = tmp_path / "build.log"
    util.run_nydus(["create", src_mini.path, "-B", out / "boot", "-D", out / "blobs",
                    "-l", "debug", "-L", log], expect_rc=0)
    assert log.is_file() and log.stat().st_size > 0, "-L log file missing or empty"
    # (-l also takes arbitrary tracing filters, so there is no "invalid level" case.)


@pytest.mark.parametrize("spec", ["oci", "overlayfs", "none"])
def test_whiteout_specs_accepted(nydus, tmp_path, src_mini, spec):
    """The mini tree has no whiteouts, so every spec gives the same tree."""
    img = util.create(src_mini.path, tmp_path / "out", chunk_size=0x1000,
                      extra=["--whiteout-spec", spec])
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    t = treecmp.load_tar(tar)
    diffs = treecmp.compare(src_mini.tree, t, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src_mini.tree, t)


def _whiteout_tree(src):
    (src / "a").mkdir(parents=True)
    (src / "a/keep").write_bytes(b"kept")
    (src / "a/.wh.gone").write_bytes(b"")
    (src / "a/.wh..wh..opq").write_bytes(b"")
    os.mknod(src / "a/overlay_whiteout", 0o20000, os.makedev(0, 0))
    (src / "opaque").mkdir()
    os.setxattr(src / "opaque", "trusted.overlay.opaque", b"y")
    for i, p in enumerate(["a/keep", "a/.wh.gone", "a/.wh..wh..opq", "a/overlay_whiteout",
                           "a", "opaque", "."]):
        os.utime(src / p, ns=(0, 1_600_000_000_000_000_000 + i), follow_symlinks=False)


@pytest.mark.parametrize("spec", ["oci", "overlayfs", "none"])
def test_whiteout_spec_semantics(nydus, tmp_path, spec):
    """As documented in `create --help`: oci drops `.wh.` files when there is
    no parent layer; overlayfs and none keep everything as it is."""
    src = tmp_path / "src"
    _whiteout_tree(src)
    img = util.create(src, tmp_path / "out", chunk_size=0x1000,
                      extra=["--whiteout-spec", spec])
    tar = tmp_path / "t.tar"
    util.unpack(img, tar)
    a, t = treecmp.load_dir(src), treecmp.load_tar(tar)
    wh = ("a/.wh.gone", "a/.wh..wh..opq")
    if spec == "oci":
        assert not set(wh) & t.entries.keys(), f"oci whiteouts kept: {sorted(t.entries)}"
        diffs = treecmp.compare(a, t, ignore_paths=wh)
    else:
        diffs = treecmp.compare(a, t)
    assert not diffs, treecmp.format_diffs(diffs, a, t)


def test_blob_to_fifo(nydus, tmp_path, src_mini):
    """`-b` may be a FIFO (streaming the blob); the id is the sha256 of what
    was streamed and that data unpacks to the source tree."""
    fifo = tmp_path / "blob.fifo"
    os.mkfifo(fifo)
    captured = bytearray()

    def reader():
        with open(fifo, "rb") as f:
            while True:
                b = f.read(65536)
                if not b:
                    return
                captured.extend(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    boot, js = tmp_path / "boot", tmp_path / "c.json"
    try:
        res = util.run_nydus(["create", src_mini.path, "-B", boot, "-b", fifo, "-J", js,
                              "--chunk-size", "0x1000"], timeout=120)
    finally:
        if t.is_alive():      # never opened for writing: unblock the reader
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        t.join(30)
    assert res.rc == 0, res.describe()
    info = json.loads(js.read_text())
    blob = tmp_path / "captured.blob"
    blob.write_bytes(bytes(captured))
    assert info["blobs"] == [util.sha256_file(blob)], info
    assert info["blob_sizes"] == [len(captured)], info
    tar = tmp_path / "t.tar"
    util.run_nydus(["unpack", boot, "--blob", blob, "--output", tar], expect_rc=0)
    tt = treecmp.load_tar(tar)
    diffs = treecmp.compare(src_mini.tree, tt, ignore_sockets=True)
    assert not diffs, treecmp.format_diffs(diffs, src_mini.tree, tt)
