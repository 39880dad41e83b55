"""eStargz sources: `create --type estargztoc-ref` and `--type estargz-rafs`.

The eStargz layers are real: containerd's converter (``ctr-remote image
convert --estargz``, Debian's stargz-snapshotter) turns an OCI image made
from estargz.make_tree into eStargz, once with its default 4 MiB chunks and
once with 64 KiB ones (multi-chunk files everywhere). Then:

* estargztoc-ref, from the TOC (stargz.index.json + --blob-data-size) and
  from the blob itself: a bootstrap only; nydusd serves it with the
  unmodified eStargz blob as the blob file (localfs, named by the layer
  digest) and shows the layer's tree (whiteouts applied; mtimes in whole
  seconds, all a TOC keeps); `check -D` and `unpack` agree;
* estargz-rafs: a native image with exactly the chunks and bytes of
  targz-rafs on the original layer (the TOC and landmark entries are not
  content); mounted, it is the tree with nanosecond mtimes;
* one byte flipped inside a chunk's stored data: with digest validation
  that file alone reads EIO (without it, the daemon returns the damaged
  bytes, which shows what validation catches); `check -D` names the chunk;
* on top of a parent layer, the TOC's whiteouts delete and hide the
  parent's entries;
* bad sources fail with one clear error line and no output;
* the daemon's build API (and nydusctl build -t) builds both types to the
  same bytes as the CLI.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

import estargz
import treecmp
import util
from nydusd import daemons, nydusd_bin, v1_config, write_config  # noqa: F401  (pytest fixtures)
from test_api import _build, api_daemon
from test_nydusctl import ctl

CHUNK_VARIANTS = {"default": (None, 0x400000), "64k": (0x10000, 0x10000)}


class Layer:
    """One converted layer: the original tar.gz, the eStargz blob and its TOC."""

    def __init__(self, work: Path, layer: Path, blob: Path, hexid: str):
        self.layer, self.blob, self.hexid = layer, blob, hexid
        data = blob.read_bytes()
        toc, self.toc_offset = estargz.read_toc(data)
        self.toc_json = work / estargz.TOC_NAME
        self.toc_json.write_bytes(toc)
        self.toc = json.loads(toc)
        self.size = len(data)
        # A directory holding only the blob, as a localfs backend sees it.
        self.blob_dir = work / "blobs"
        self.blob_dir.mkdir()
        shutil.copyfile(blob, self.blob_dir / hexid)

    def entry(self, *names: str) -> dict:
        """The reg entry of the first of ``names`` (hard links) the tar holds as a file."""
        return next(e for e in self.toc["entries"] if e["name"].removeprefix("./") in names
                    and e["type"] == "reg")


@pytest.fixture(scope="module")
def esgz(tmp_path_factory):
    """The source tree and its eStargz layers, by chunk variant."""
    for tool in ("containerd", "ctr-remote"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: run tools/deps.sh (packages containerd, "
                        "stargz-snapshotter)", pytrace=False)
    base = tmp_path_factory.mktemp("estargz")
    src = estargz.make_tree(base / "src")
    ctrd = estargz.Containerd(base / "ctrd").start()
    try:
        layers = {}
        for name, (chunk, _) in CHUNK_VARIANTS.items():
            work = base / name
            layers[name] = Layer(work, *estargz.make_estargz(ctrd, src, work, name, chunk))
    finally:
        ctrd.stop()
    return src, layers


def is_whiteout(rel: str) -> bool:
    return Path(rel).name.startswith(".wh.")


def expected(src: Path, *, seconds: bool) -> treecmp.Tree:
    """The source tree as a single image layer shows it: whiteout files
    dropped; with ``seconds`` mtimes cut to whole seconds (a TOC's precision)."""
    t = treecmp.load_dir(src)
    t.entries = {k: v for k, v in t.entries.items() if not is_whiteout(k)}
    if seconds:
        for e in t.entries.values():
            e["mtime_ns"] -= e["mtime_ns"] % 10**9
    return t


def assert_same(want: treecmp.Tree, got: treecmp.Tree, what: str, **kw) -> None:
    diffs = treecmp.compare(want, got, **kw)
    assert not diffs, f"{what}:\n" + treecmp.format_diffs(diffs, want, got)


def toc_ref(layer: Layer, out: Path, *, from_blob: bool, extra=()) -> util.Image:
    """create --type estargztoc-ref from the TOC (+ --blob-data-size) or the blob."""
    out.mkdir(parents=True, exist_ok=True)
    boot, js = out / "bootstrap", out / "create.json"
    if from_blob:
        args = ["create", "--source-type", "stargz_index", layer.blob]   # upstream's legacy spelling
    else:
        args = ["create", "--type", "estargztoc-ref", layer.toc_json,
                "--blob-id", layer.hexid, "--blob-data-size", hex(layer.size)]
    res = util.run_nydus([*args, "-B", boot, "-J", js, *extra], expect_rc=0)
    info = json.loads(js.read_text())
    assert info["blob_paths"] == [], f"estargztoc-ref wrote a blob\n{res.describe()}"
    return util.Image(layer.blob, out, boot, layer.blob_dir, info, "gzip", "sha256",
                      info["chunk_size"], res)


def mount(daemons, img: util.Image, tmp: Path, name: str, *, validate: bool):
    conf = write_config(tmp / f"{name}.json",
                        v1_config(img.blob_dir, tmp / f"cache-{name}", digest_validate=validate))
    return daemons.start(img.bootstrap, tmp / f"mnt-{name}", config=conf)


@pytest.mark.parametrize("variant", list(CHUNK_VARIANTS))
def test_toc_ref_serves_the_layer(esgz, daemons, tmp_path, variant):
    src, layers = esgz
    layer = layers[variant]
    want = expected(src, seconds=True)
    toc_img = toc_ref(layer, tmp_path / "toc", from_blob=False)
    blob_img = toc_ref(layer, tmp_path / "blob", from_blob=True)
    chunk_size = CHUNK_VARIANTS[variant][1]
    for img in (toc_img, blob_img):
        info = img.info
        assert info["blobs"] == [layer.hexid] and info["blob_sizes"] == [layer.size], info
        assert (info["compressor"], info["digester"], info["chunk_size"]) == \
            ("gzip", "sha256", chunk_size), info
        # Every chunk the TOC lists for a file the image keeps, and no more.
        toc_chunks = sum(1 for e in layer.toc["entries"]
                         if (e["type"] == "chunk" or e["type"] == "reg" and e.get("size"))
                         and "landmark" not in e["name"] and not is_whiteout(e["name"]))
        assert info["chunks"] == toc_chunks, (info, toc_chunks)
        if variant == "64k":
            assert info["chunks"] >= estargz.BIG // 0x10000 + estargz.RAND // 0x10000, info
        util.check_json(img, tmp_path)                      # reads and verifies every chunk
        tar = img.out / "unpacked.tar"
        util.unpack(img, tar)
        assert_same(want, treecmp.load_tar(tar), f"source (A) vs unpack of {img.out.name} (B)",
                    nlink=False)

    d = mount(daemons, toc_img, tmp_path, "toc", validate=True)
    assert_same(want, treecmp.load_dir(d.mountpoint), "source (A) vs nydusd mount (B)")
    # Hard links: one inode for both names.
    assert os.lstat(d.mountpoint / "etc/hl").st_ino == os.lstat(d.mountpoint / "bin/rand").st_ino
    d.stop()
    d.assert_clean_log()
    assert util.sha256_file(layer.blob_dir / layer.hexid) == layer.hexid, "the blob was modified"


def test_estargz_rafs_equals_targz_rafs(esgz, daemons, tmp_path):
    src, layers = esgz
    layer = layers["64k"]
    extra_z = ["--type", "targz-rafs"]
    z = util.create(layer.layer, tmp_path / "targz", chunk_size=0x10000, extra=extra_z)
    e = util.create(layer.blob, tmp_path / "esgz", chunk_size=0x10000,
                    extra=["--type", "estargz-rafs"])
    # Same chunks and bytes: the TOC and the landmark file are not content.
    for k in ("inodes", "files", "chunks", "dedup_chunks", "data_bytes"):
        assert e.info[k] == z.info[k], (k, e.info, z.info)
    util.check_json(e, tmp_path)
    d = daemons.mount(e, tmp_path / "mnt", tmp_path / "cache", digest_validate=True)
    assert_same(expected(src, seconds=False), treecmp.load_dir(d.mountpoint),
                "source (A) vs estargz-rafs mount (B)")
    d.stop()
    d.assert_clean_log()


def test_corrupt_chunk_is_eio_for_that_file_only(esgz, daemons, tmp_path):
    src, layers = esgz
    layer = layers["default"]
    ent = layer.entry("bin/rand", "etc/hl")
    data = bytearray(layer.blob.read_bytes())
    # Random data is stored, not deflated: flipping a byte in the middle of
    # the member changes the chunk's bytes without breaking the gzip stream.
    at = ent["offset"] + 1000
    data[at] ^= 0xFF
    plain = zlib.decompressobj(31).decompress(bytes(data[ent["offset"]:layer.toc_offset]),
                                              estargz.RAND)
    good = (src / "bin/rand").read_bytes()
    assert len(plain) == estargz.RAND and plain != good, "the flip did not land in the data"
    img = toc_ref(layer, tmp_path / "img", from_blob=False)
    bad_dir = tmp_path / "bad-blobs"
    bad_dir.mkdir()
    (bad_dir / layer.hexid).write_bytes(data)
    img.blob_dir = bad_dir

    res = util.run_nydus(["check", img.bootstrap, "-D", bad_dir])
    util.assert_clean_error(res, cause=r"digest mismatch")

    d = mount(daemons, img, tmp_path, "validate", validate=True)
    for rel in ("bin/rand", "etc/hl"):
        with pytest.raises(OSError) as ei:
            (d.mountpoint / rel).read_bytes()
        assert ei.value.errno == errno.EIO, f"{rel}: {ei.value!r}"
    # Every other file reads correctly.
    want = expected(src, seconds=True)
    got = treecmp.load_dir(d.mountpoint, content=False)
    assert_same(want, got, "source (A) vs mount with a damaged chunk (B)", content=False)
    for rel, e in want.entries.items():
        if e["type"] == "reg" and rel not in ("bin/rand", "etc/hl"):
            assert hashlib.sha256((d.mountpoint / rel).read_bytes()).hexdigest() == e["sha256"], rel
    d.stop()

    # Without validation the damaged bytes come through: validation is what
    # turned them into EIO.
    d = mount(daemons, img, tmp_path, "novalidate", validate=False)
    assert (d.mountpoint / "bin/rand").read_bytes() == plain
    d.stop()


def test_toc_layer_on_a_parent(esgz, daemons, tmp_path):
    """The TOC's whiteouts apply to a parent layer (built from a directory
    with the TOC's chunk size and sha256)."""
    src, layers = esgz
    layer = layers["default"]
    lower = tmp_path / "lower"
    for rel, body in (("etc/gone", b"deleted by etc/.wh.gone\n"), ("etc/kept", b"kept\n"),
                      ("opq/old", b"hidden by the opaque marker\n")):
        (lower / rel).parent.mkdir(parents=True, exist_ok=True)
        (lower / rel).write_bytes(body)
    base = util.create(lower, tmp_path / "base", digester="sha256", chunk_size=0x400000)
    blob_dir = tmp_path / "blobs"
    shutil.copytree(base.blob_dir, blob_dir)
    shutil.copyfile(layer.blob, blob_dir / layer.hexid)
    img = toc_ref(layer, tmp_path / "upper", from_blob=False,
                  extra=["--parent-bootstrap", base.bootstrap])
    assert img.info["blobs"] == base.info["blobs"] + [layer.hexid], img.info
    img.blob_dir = blob_dir
    d = mount(daemons, img, tmp_path, "layered", validate=True)
    mnt = d.mountpoint
    assert not os.path.lexists(mnt / "etc/gone") and not os.path.lexists(mnt / "opq/old")
    assert (mnt / "etc/kept").read_bytes() == b"kept\n"
    assert (mnt / "opq/new").read_bytes() == b"new\n"
    assert (mnt / "bin/big").read_bytes() == (src / "bin/big").read_bytes()
    assert sorted(os.listdir(mnt / "opq")) == ["new"]
    d.stop()
    d.assert_clean_log()


def test_bad_sources_fail_cleanly(esgz, tmp_path):
    src, layers = esgz
    layer = layers["default"]
    boot = tmp_path / "boot"

    def run(*args):
        return util.run_nydus(["create", "--type", "estargztoc-ref", *args, "-B", boot])

    # A TOC needs the blob's size and id.
    util.assert_clean_error(run(layer.toc_json, "--blob-id", layer.hexid),
                            cause=r"--blob-data-size", absent=[boot])
    util.assert_clean_error(run(layer.toc_json, "--blob-data-size", hex(layer.size)),
                            cause=r"--blob-id", absent=[boot])
    # A plain tar.gz layer has no eStargz footer.
    util.assert_clean_error(run(layer.layer), cause=r"no eStargz footer.*targz-rafs",
                            absent=[boot])
    # Malformed TOCs: not JSON, a chunk beyond the blob, a broken digest.
    bad = tmp_path / "bad.json"
    toc = json.loads(layer.toc_json.read_text())
    cases = [
        (b"{\"version\": 1, \"entries\": [", r"not a valid TOC"),
        (json.dumps({**toc, "version": 2}).encode(), r"version 2"),
    ]
    far = json.loads(json.dumps(toc))
    next(e for e in far["entries"] if e.get("offset"))["offset"] = layer.size * 2
    cases.append((json.dumps(far).encode(), r"beyond the blob"))
    dig = json.loads(json.dumps(toc))
    next(e for e in dig["entries"] if e.get("chunkDigest"))["chunkDigest"] = "sha256:zz"
    cases.append((json.dumps(dig).encode(), r"chunkDigest"))
    for body, cause in cases:
        bad.write_bytes(body)
        res = run(bad, "--blob-id", layer.hexid, "--blob-data-size", hex(layer.size))
        util.assert_clean_error(res, cause=cause, absent=[boot])
    # --blob: nothing to write.
    res = run(layer.blob, "--blob", tmp_path / "b")
    util.assert_clean_error(res, cause=r"drop --blob", absent=[boot, tmp_path / "b"])


def test_build_api_takes_estargz_sources(esgz, daemons, tmp_path):
    """POST /api/v1/build with estargztoc-ref (from the TOC and from the blob)
    and estargz-rafs writes what the CLI writes; nydusctl passes -t through."""
    src, layers = esgz
    layer = layers["64k"]
    d, api, _ = api_daemon(daemons, tmp_path / "d")
    out = tmp_path / "api"
    (out / "blobs").mkdir(parents=True)
    cli_toc = toc_ref(layer, tmp_path / "cli-toc", from_blob=False)
    job = _build(api, {"source": str(layer.toc_json), "source_type": "estargztoc-ref",
                       "blob_id": layer.hexid, "blob_data_size": layer.size,
                       "bootstrap": str(out / "toc"), "blob_dir": str(out / "blobs")})
    assert job["state"] == "succeeded", job
    assert (out / "toc").read_bytes() == cli_toc.bootstrap.read_bytes()
    cli_blob = toc_ref(layer, tmp_path / "cli-blob", from_blob=True)
    job = _build(api, {"source": str(layer.blob), "source_type": "stargz_index",
                       "bootstrap": str(out / "blob"), "blob_dir": str(out / "blobs")})
    assert job["state"] == "succeeded", job
    assert (out / "blob").read_bytes() == cli_blob.bootstrap.read_bytes()
    assert list((out / "blobs").iterdir()) == [], "estargztoc-ref wrote a blob"
    # The API-built reference image serves the layer.
    m = mount(daemons, util.Image(layer.blob, out, out / "toc", layer.blob_dir, {}, "gzip", "sha256",
                                  0x10000, None), tmp_path, "api-toc", validate=True)
    assert_same(expected(src, seconds=True), treecmp.load_dir(m.mountpoint), "source (A) vs API build (B)")
    m.stop()
    m.assert_clean_log()

    cli = util.create(layer.blob, tmp_path / "cli-rafs", chunk_size=0x10000, extra=["--type", "estargz-rafs"])
    ctl(api.sock, "build", layer.blob, "-t", "estargz-rafs", "-B", out / "rafs", "-D", out / "blobs",
        "-S", "0x10000")
    assert (out / "rafs").read_bytes() == cli.bootstrap.read_bytes()
    assert sorted(p.name for p in (out / "blobs").iterdir()) == cli.info["blobs"]

    # blob_data_size belongs to estargztoc-ref only; a sha256: prefix is refused.
    for body, cause in [({"source_type": "targz-rafs", "blob_data_size": "0x10"}, "only applies"),
                        ({"source_type": "estargztoc-ref", "blob_id": "sha256:" + layer.hexid}, "hex digest"),
                        ({"source_type": "estargztoc-ref", "blob_data_size": "zz"}, "blob_data_size")]:
        st, v = api.call("POST", "/api/v1/build", {"source": str(layer.blob), "bootstrap": str(out / "x"),
                                                    "blob_dir": str(out / "blobs"), **body})
        assert st == 400 and cause in v["message"], f"{body}: {st} {v}"
    d.stop()
