"""Tar sources (`create --type tar-rafs` / `targz-rafs`).

Each fixture is built from its directory and from `tar --format=pax` (and
`.tar.gz`) of it, from a file and from stdin; the images must read back as
the same tree (EROFS mount of `export --block` where loop devices exist,
else `unpack`). Layered: each layer of layers.py's stack built from its
tar with `--parent-bootstrap` equals the stack built from the directories.
Malicious tars (made with Python's tarfile) fail with a one-line error
naming the entry, a non-zero exit, no outputs and nothing written outside.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import layers
import treecmp
import util
from test_kernel import export_block

CHUNK = 0x10000


def make_tar(src: Path, dst: Path, gz: bool = False) -> Path:
    """tar --xattrs --xattrs-include='*' --format=pax -cf DST -C SRC ."""
    p = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=pax",
                        "-C", os.fspath(src), "-cf", os.fspath(dst), "."],
                       capture_output=True, text=True, timeout=600)
    # Sockets cannot be archived: GNU tar warns ("socket ignored") but succeeds.
    assert p.returncode == 0, f"tar failed: {p.stderr}"
    if gz:
        gzp = dst.with_name(dst.name + ".gz")
        subprocess.run(["gzip", "-kf", os.fspath(dst)], check=True, timeout=600)
        return gzp
    return dst


def image_tree(img: util.Image, tmp: Path) -> treecmp.Tree:
    """The image's tree as the kernel mounts it (or as unpacked)."""
    if util.have_loop():
        disk = tmp / f"{img.bootstrap.name}.disk"
        export_block(img, disk)
        with util.erofs_mount(disk, tmp / f"mnt-{img.bootstrap.name}") as mnt:
            return treecmp.load_dir(mnt)
    tar = tmp / f"{img.bootstrap.name}.unpacked.tar"
    util.unpack(img, tar)
    return treecmp.load_tar(tar)


def assert_same(a: treecmp.Tree, b: treecmp.Tree, what: str) -> None:
    diffs = treecmp.compare(a, b, ignore_sockets=True)
    assert not diffs, f"{what}:\n" + treecmp.format_diffs(diffs, a, b)


def create_stdin(src_file: Path, out: Path, name: str, typ: str, extra=()) -> util.Image:
    """util.create, but the tar comes on stdin (SOURCE is -)."""
    out.mkdir(parents=True, exist_ok=True)
    blob_dir = out / "blobs"
    blob_dir.mkdir(exist_ok=True)
    boot, js = out / name, out / f"{name}.create.json"
    cmd = [os.fspath(util.nydus_path()), "create", "--type", typ, "-", "-B", os.fspath(boot),
           "-D", os.fspath(blob_dir), "--chunk-size", hex(CHUNK), "-J", os.fspath(js), *extra]
    with open(src_file, "rb") as f:
        p = subprocess.run(cmd, stdin=f, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"create from stdin failed: {p.stderr}"
    import json
    return util.Image(src_file, out, boot, blob_dir, json.loads(js.read_text()), "zstd",
                      "blake3", CHUNK)


def test_small_fixture_from_tar_and_targz(nydus, tmp_path, src_small):
    """The small fixture from its directory, its tar and its tar.gz (from a
    file and from stdin): identical trees; the tar image's blob holds the
    same chunks as the directory image's."""
    out = tmp_path / "out"
    tar = make_tar(src_small.path, tmp_path / "src.tar")
    tgz = make_tar(src_small.path, tmp_path / "src.tar", gz=True)
    d = util.create(src_small.path, out / "d", chunk_size=CHUNK, name="dir")
    t = util.create(tar, out / "t", chunk_size=CHUNK, name="tar", extra=["--type", "tar-rafs"])
    z = create_stdin(tgz, out / "z", "targz", "targz-rafs")
    want = image_tree(d, tmp_path)
    # Sanity: the directory image is the fixture (minus sockets).
    assert_same(src_small.tree, want, "fixture (A) vs directory image (B)")
    for img, what in ((t, "tar"), (z, "tar.gz on stdin")):
        assert img.info["data_bytes"] == d.info["data_bytes"], (img.info, d.info)
        assert img.info["chunks"] == d.info["chunks"], (img.info, d.info)
        util.check_json(img, tmp_path)
        assert_same(want, image_tree(img, tmp_path), f"directory image (A) vs {what} image (B)")


@pytest.fixture(scope="module")
def layer_dirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("layers")
    oci = layers.make_layers(base / "oci")
    ovl = [layers.convert_to_overlay(p, base / "ovl" / p.name) for p in oci]
    return oci, ovl


@pytest.mark.parametrize("spec", ["oci", "overlayfs"])
def test_layers_from_tar_equal_layers_from_dirs(nydus, tmp_path, layer_dirs, spec):
    """Each layer alone, and the stack built layer by layer with
    --parent-bootstrap: from tars (tar.gz for even layers) == from dirs."""
    oci, ovl = layer_dirs
    dirs = oci if spec == "oci" else ovl
    out = tmp_path / "out"
    parent_d = parent_t = None
    for i, src in enumerate(dirs, 1):
        gz = i % 2 == 0
        archive = make_tar(src, tmp_path / f"layer{i}.tar", gz=gz)
        typ = "targz-rafs" if gz else "tar-rafs"
        w = ["--whiteout-spec", spec]
        alone_d = util.create(src, out / f"d{i}", chunk_size=CHUNK, name=f"d{i}", extra=w)
        alone_t = util.create(archive, out / f"t{i}", chunk_size=CHUNK, name=f"t{i}",
                              extra=[*w, "--type", typ])
        assert_same(image_tree(alone_d, tmp_path), image_tree(alone_t, tmp_path),
                    f"layer {i} alone: directory (A) vs {typ} (B)")
        pd = [] if parent_d is None else ["--parent-bootstrap", parent_d.bootstrap]
        pt = [] if parent_t is None else ["--parent-bootstrap", parent_t.bootstrap]
        parent_d = util.create(src, out / "sd", chunk_size=CHUNK, name=f"sd{i}", extra=[*w, *pd])
        parent_t = util.create(archive, out / "st", chunk_size=CHUNK, name=f"st{i}",
                               extra=[*w, *pt, "--type", typ])
        assert len(parent_t.blob_ids) == len(parent_d.blob_ids), (parent_t.info, parent_d.info)
        assert_same(image_tree(parent_d, tmp_path), image_tree(parent_t, tmp_path),
                    f"stack of {i} layer(s): directories (A) vs tars (B)")
    util.check_json(parent_t, tmp_path)


# --------------------------------------------------------------------------
# synthetic archives
# --------------------------------------------------------------------------

def tar_bytes(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    """members: (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name, type=tarfile.REGTYPE, size=0, mode=0o644, **kw) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.size, i.mode = type, size, mode
    for k, v in kw.items():
        setattr(i, k, v)
    return i


def test_tar_entry_kinds(nydus, tmp_path):
    """Long names (GNU and PAX), binary PAX xattrs, negative and
    nanosecond mtimes, large ids, special modes, devices, hard links,
    implicit parents, duplicates (the later wins)."""
    long_dir = "d" * 120 + "/" + "e" * 120
    data = os.urandom(3 * CHUNK + 7)
    big_id = 3_000_000_000
    members = [
        (ti("./", tarfile.DIRTYPE, mode=0o750, mtime=1000), None),
        (ti(f"{long_dir}/f", size=5, pax_headers={"SCHILY.xattr.user.bin": "\x00\x01\xff".encode(
            "latin-1").decode("utf-8", "surrogateescape")}), b"hello"),
        (ti("implicit/deep/file", size=len(data), mode=0o4755, uid=big_id, gid=big_id,
            pax_headers={"mtime": "-12.25"}), data),
        (ti("hl", tarfile.LNKTYPE, linkname="implicit/deep/file"), None),
        (ti("sym", tarfile.SYMTYPE, linkname="x" * 200), None),
        (ti("chr", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (ti("blk", tarfile.BLKTYPE, devmajor=8, devminor=1), None),
        (ti("fifo", tarfile.FIFOTYPE), None),
        (ti("sticky", tarfile.DIRTYPE, mode=0o1777, pax_headers={"mtime": "1700000000.123456789"}), None),
        (ti("dup", size=3), b"old"),
        (ti("dup", size=3), b"new"),
        (ti("dupdir", tarfile.DIRTYPE, mode=0o700), None),
        (ti("dupdir/kept", size=1), b"k"),
        (ti("dupdir", tarfile.DIRTYPE, mode=0o711), None),
    ]
    tar = tmp_path / "kinds.tar"
    tar.write_bytes(tar_bytes(members))
    gnu = tmp_path / "gnu.tar"
    gnu.write_bytes(tar_bytes([(ti("g" * 200 + "/h", size=2), b"hi"),
                               (ti("gl", tarfile.SYMTYPE, linkname="t" * 300), None)],
                              fmt=tarfile.GNU_FORMAT))
    img = util.create(tar, tmp_path / "out", chunk_size=CHUNK, name="kinds", extra=["-t", "tar-rafs"])
    got = image_tree(img, tmp_path).entries
    assert got["."]["mode"] == 0o750 and got["."]["mtime_ns"] == 1000 * 10**9
    assert got[f"{long_dir}/f"]["xattrs"] == {"user.bin": b"\x00\x01\xff"}, got[f"{long_dir}/f"]
    f = got["implicit/deep/file"]
    assert (f["mode"], f["uid"], f["gid"]) == (0o4755, big_id, big_id), f
    assert f["mtime_ns"] == -12_250_000_000, f
    assert f["sha256"] == __import__("hashlib").sha256(data).hexdigest()
    for d in ("implicit", "implicit/deep"):
        assert (got[d]["type"], got[d]["mode"], got[d]["uid"], got[d]["mtime_ns"]) == ("dir", 0o755, 0, 0), got[d]
    t = image_tree(img, tmp_path)
    assert frozenset({"hl", "implicit/deep/file"}) in t.hardlinks, t.hardlinks
    assert got["sym"]["target"] == "x" * 200
    assert got["chr"]["rdev"] == (1, 3) and got["blk"]["rdev"] == (8, 1) and got["fifo"]["type"] == "fifo"
    assert got["sticky"]["mode"] == 0o1777 and got["sticky"]["mtime_ns"] == 1700000000123456789
    assert got["dup"]["size"] == 3 and got["dupdir"]["mode"] == 0o711 and "dupdir/kept" in got
    g = util.create(gnu, tmp_path / "out-gnu", chunk_size=CHUNK, name="gnu", extra=["-t", "tar-rafs"])
    got = image_tree(g, tmp_path).entries
    assert got["g" * 200 + "/h"]["size"] == 2 and got["gl"]["target"] == "t" * 300


@contextlib.contextmanager
def watch_outside(tmp: Path):
    """Paths a malicious archive targets; none may appear."""
    victims = [tmp / "evil", Path("/tmp/nydus-tar-escape-x"), Path("/etc/nydus-tar-escape"),
               Path("/tmp/nydus-tar-escape-x/y")]
    for v in victims:
        assert not v.exists(), v
    yield
    made = [v for v in victims if os.path.lexists(v)]
    assert not made, f"files written outside the output: {made}"


def bad_tars():
    big = ti("huge", size=10 * 2**30)
    huge = io.BytesIO()
    huge.write(big.tobuf(tarfile.PAX_FORMAT))
    huge.write(os.urandom(4096))
    return {
        "dotdot": (tar_bytes([(ti("../evil", size=1), b"x")]), "../evil", "escapes"),
        "inner-dotdot": (tar_bytes([(ti("a/../../evil", size=1), b"x")]), "a/../../evil", "escapes"),
        "absolute": (tar_bytes([(ti("/etc/nydus-tar-escape", size=1), b"x")]), "/etc/nydus-tar-escape",
                     "absolute"),
        "symlink-escape": (tar_bytes([(ti("link", tarfile.SYMTYPE, linkname="/tmp/nydus-tar-escape-x"), None),
                                      (ti("link/y", size=1), b"x")]), "link/y", "not a directory"),
        "hardlink-escape": (tar_bytes([(ti("hl", tarfile.LNKTYPE, linkname="../../etc/passwd"), None)]),
                            "hl", "escapes"),
        "declared-10g": (huge.getvalue(), "huge", "truncated|ends"),
    }


@pytest.mark.parametrize("case", sorted(bad_tars()))
@pytest.mark.parametrize("gz", [False, True])
def test_malicious_tar(nydus, tmp_path, case, gz):
    data, entry, cause = bad_tars()[case]
    src = tmp_path / ("bad.tar.gz" if gz else "bad.tar")
    src.write_bytes(gzip.compress(data) if gz else data)
    out = tmp_path / "out"
    out.mkdir()
    with watch_outside(tmp_path):
        res = util.run_nydus(["create", "-t", "targz-rafs" if gz else "tar-rafs", src,
                              "-B", out / "boot", "-D", out], mem_limit_gib=2)
    util.assert_clean_error(res, mentions=[entry], cause=cause, absent=[out / "boot"],
                            dirs_before={out: set()})
    assert len(res.error_lines) == 1, res.describe()


def test_truncated_gzip(nydus, tmp_path):
    """gzip cut inside an entry's data and inside the end-of-archive
    padding: clean error, nothing left."""
    payload = os.urandom(5 * CHUNK)
    raw = tar_bytes([(ti("a", size=len(payload)), payload), (ti("b", size=3), b"xyz")])
    z = gzip.compress(raw)
    out = tmp_path / "out"
    out.mkdir()
    for cut, mention in ((len(z) // 2, "a"), (len(z) - 6, "bad.tar.gz")):
        src = tmp_path / "bad.tar.gz"
        src.write_bytes(z[:cut])
        res = util.run_nydus(["create", "-t", "targz-rafs", src, "-B", out / "boot", "-D", out])
        util.assert_clean_error(res, mentions=[mention], absent=[out / "boot"],
                                dirs_before={out: set()})
        assert len(res.error_lines) == 1, res.describe()
    # A truncated plain tar too.
    src = tmp_path / "bad.tar"
    src.write_bytes(raw[:4096])
    res = util.run_nydus(["create", "-t", "tar-rafs", src, "-B", out / "boot", "-D", out])
    util.assert_clean_error(res, mentions=["a"], cause="truncated", absent=[out / "boot"],
                            dirs_before={out: set()})


def test_tar_source_errors(nydus, tmp_path):
    """A directory given as a tar, a tar given as a directory, and file data
    without a blob output are refused cleanly."""
    out = tmp_path / "out"
    out.mkdir()
    res = util.run_nydus(["create", "-t", "tar-rafs", tmp_path, "-B", out / "boot", "-D", out])
    util.assert_clean_error(res, mentions=[tmp_path], absent=[out / "boot"], dirs_before={out: set()})
    tar = tmp_path / "one.tar"
    tar.write_bytes(tar_bytes([(ti("f", size=2), b"hi")]))
    res = util.run_nydus(["create", tar, "-B", out / "boot", "-D", out])
    util.assert_clean_error(res, mentions=[tar], absent=[out / "boot"], dirs_before={out: set()})
    res = util.run_nydus(["create", "-t", "tar-rafs", tar, "-B", out / "boot"])
    util.assert_clean_error(res, cause="no blob output", absent=[out / "boot"],
                            dirs_before={out: set()})
    # Metadata only: no blob output needed.
    empty = tmp_path / "meta.tar"
    empty.write_bytes(tar_bytes([(ti("d", tarfile.DIRTYPE), None), (ti("e", size=0), b"")]))
    util.run_nydus(["create", "-t", "tar-rafs", empty, "-B", out / "boot"], expect_rc=0)
    assert (out / "boot").is_file()
