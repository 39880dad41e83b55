"""Real eStargz layers for the e2e tests, made by containerd's own converter.

Debian's ``stargz-snapshotter`` package ships ``ctr-remote`` (``ctr`` with
``image convert --estargz``); it needs a containerd, which ``Containerd``
starts on a private socket under a test directory (no systemd, no CRI) and
stops again. ``make_estargz`` turns a directory into an OCI image (a tar.gz
layer in an OCI layout archive written here, imported with ``ctr image
import``), converts it and returns the eStargz layer blob from containerd's
content store, with the original layer.

Layout facts used by the tests (stargz-snapshotter's estargz package): the
last 51 bytes of a blob are a gzip member whose extra field is
``SG`` + 22 + ``%016x`` (TOC offset) + ``STARGZ``; the member at the TOC
offset holds a tar whose one entry is ``stargz.index.json``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import tarfile
import time
from pathlib import Path

FOOTER_SIZE = 51
TOC_NAME = "stargz.index.json"
NAMESPACE = "nydus-e2e"


def _arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


class Containerd:
    """A containerd on a private socket; ``ctr`` runs ctr-remote against it."""

    def __init__(self, work: Path):
        self.work = Path(work)
        self.sock = self.work / "containerd.sock"
        self.log = self.work / "containerd.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Containerd":
        self.work.mkdir(parents=True, exist_ok=True)
        conf = self.work / "config.toml"
        conf.write_text("\n".join([
            "version = 2",
            f'root = "{self.work / "root"}"',
            f'state = "{self.work / "state"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{self.sock}"',
            "[ttrpc]",
            f'  address = "{self.sock}.ttrpc"',
            "",
        ]))
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(["containerd", "--config", os.fspath(conf)],
                                         stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited with {self.proc.returncode}:\n"
                                   + self.log.read_text(errors="replace")[-4000:])
            if self.sock.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.05)
        raise RuntimeError("containerd did not answer within 20 s:\n"
                           + self.log.read_text(errors="replace")[-4000:])

    def ctr(self, *args, check: bool = True, binary: bool = False) -> subprocess.CompletedProcess:
        cmd = ["ctr-remote", "-a", os.fspath(self.sock), "-n", NAMESPACE, *map(str, args)]
        p = subprocess.run(cmd, capture_output=True, timeout=300, text=not binary)
        if check and p.returncode != 0:
            err = p.stderr if not binary else p.stderr.decode(errors="replace")
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {err}")
        return p

    def content(self, digest: str) -> bytes:
        return self.ctr("content", "get", digest, binary=True).stdout

    def manifest(self, ref: str) -> dict:
        """The image manifest of ``ref`` (an OCI manifest, not an index)."""
        out = self.ctr("image", "ls").stdout
        for line in out.splitlines()[1:]:
            cols = line.split()
            if cols and cols[0] == ref:
                digest = next(c for c in cols if c.startswith("sha256:"))
                return json.loads(self.content(digest))
        raise RuntimeError(f"image {ref} not found:\n{out}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tar_layer(src: Path, dst: Path) -> Path:
    """A PAX tar.gz of ``src`` (xattrs included), as a build would produce."""
    plain = dst.with_suffix("")
    p = subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--format=pax",
                        "--numeric-owner", "-C", os.fspath(src), "-cf", os.fspath(plain), "."],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"tar failed: {p.stderr}"
    with open(plain, "rb") as f, gzip.open(dst, "wb", compresslevel=6) as g:
        while b := f.read(1 << 20):
            g.write(b)
    return dst


def _blob(tf: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
    return "sha256:" + digest


def oci_archive(layer_tgz: Path, out: Path, ref: str) -> Path:
    """An OCI image layout archive holding one image (``ref``) of one layer."""
    layer = layer_tgz.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({
        "architecture": _arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {},
    }).encode()
    with tarfile.open(out, "w") as tf:
        layer_digest = _blob(tf, layer)
        config_digest = _blob(tf, config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer)}],
        }).encode()
        manifest_digest = _blob(tf, manifest)
        index = json.dumps({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest),
                "annotations": {"io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
            }],
        }).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", index)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out


def make_estargz(ctrd: Containerd, src: Path, work: Path, name: str,
                 chunk_size: int | None = None) -> tuple[Path, Path, str]:
    """Convert directory ``src`` into an eStargz layer.  Returns (original
    tar.gz layer, eStargz blob, eStargz layer digest hex); the blob file is
    ``work/<digest hex>``."""
    work.mkdir(parents=True, exist_ok=True)
    layer = tar_layer(src, work / f"{name}.tar.gz")
    ref = f"example.com/nydus-e2e/{name}:v1"
    archive = oci_archive(layer, work / f"{name}.oci.tar", ref)
    ctrd.ctr("image", "import", archive)
    esgz = ref + "-esgz"
    extra = ["--estargz-chunk-size", str(chunk_size)] if chunk_size else []
    ctrd.ctr("image", "convert", "--estargz", "--oci", *extra, ref, esgz)
    manifest = ctrd.manifest(esgz)
    (desc,) = manifest["layers"]
    assert desc["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", desc
    assert "containerd.io/snapshot/stargz/toc.digest" in desc.get("annotations", {}), desc
    data = ctrd.content(desc["digest"])
    assert hashlib.sha256(data).hexdigest() == desc["digest"].split(":", 1)[1]
    hexid = desc["digest"].split(":", 1)[1]
    blob = work / hexid
    blob.write_bytes(data)
    return layer, blob, hexid


def toc_offset(blob: bytes) -> int:
    footer = blob[-FOOTER_SIZE:]
    m = re.search(rb"SG\x16\x00([0-9a-f]{16})STARGZ", footer)
    assert m, f"no eStargz footer: {footer!r}"
    return int(m.group(1), 16)


def read_toc(blob: bytes) -> tuple[bytes, int]:
    """(stargz.index.json bytes, TOC offset) of an eStargz blob."""
    off = toc_offset(blob)
    d = __import__("zlib").decompressobj(31)
    plain = d.decompress(blob[off:])
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        m = tf.getmember(TOC_NAME)
        return tf.extractfile(m).read(), off


# --------------------------------------------------------------------------
# the source tree
# --------------------------------------------------------------------------

BASE_SEC = 1_650_000_000
BIG = 5 * 1024 * 1024 + 123         # two chunks at the converter's default 4 MiB
RAND = 300_000                       # incompressible: stored deflate blocks
NS_FILE = "etc/ns"                   # the one file with a sub-second mtime


def make_tree(root: Path) -> Path:
    """Every entry type an eStargz TOC describes, with whiteouts, xattrs,
    foreign owners, set-id bits and hard links.  mtimes are whole seconds
    (the TOC keeps no more) except NS_FILE's."""
    import random
    rng = random.Random(4242)
    root = Path(root)
    root.mkdir(parents=True)
    old = os.umask(0)
    try:
        def write(rel, data, mode=0o644):
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            p.write_bytes(data)
            os.chmod(p, mode)
            return p

        words = [b"estargz ", b"toc ", b"chunk ", b"gzip ", b"member ", b"nydus\n"]
        text = b"".join(rng.choice(words) for _ in range(BIG // 5))[:BIG]
        write("bin/big", text, 0o755)
        write("bin/rand", rng.randbytes(RAND))
        write("data/exact64k", rng.randbytes(0x10000))
        write("data/exact128k", bytes(0x20000))                    # zeros, two 64 KiB chunks
        write("data/tiny", b"x")
        write("etc/small", b"hello eStargz\n")
        write("etc/empty", b"")
        write(NS_FILE, b"nanoseconds\n")
        os.setxattr(root / "etc/small", "user.k", b"v\x00v")
        os.setxattr(root / "etc/small", "trusted.t", bytes(range(256)))
        os.setxattr(root / "bin/rand", "security.capability",
                    bytes.fromhex("0100000200040000000000000000000000000000"))
        owned = write("etc/owned", b"o", 0o644)
        os.chown(owned, 70000, 70001)
        os.chmod(owned, 0o4755)
        os.link(root / "bin/rand", root / "etc/hl")
        os.symlink("small", root / "etc/lnk")
        os.symlink("d" * 300, root / "dangling")
        (root / "dev").mkdir(mode=0o755)
        os.mknod(root / "dev/null", 0o020666, os.makedev(1, 3))
        os.mknod(root / "dev/loop9", 0o060660, os.makedev(7, 9))
        os.mkfifo(root / "dev/fifo", 0o600)
        (root / "empty").mkdir(mode=0o700)
        os.chown(root / "empty", 1000, 1000)
        # OCI whiteouts: a deleted file and an opaque directory.
        write("etc/.wh.gone", b"")
        write("opq/.wh..wh..opq", b"")
        write("opq/new", b"new\n")
        # mtimes: files first, then directories bottom-up.
        paths = sorted(root.rglob("*"), key=lambda p: -len(p.parts))
        for i, p in enumerate(paths):
            ns = (BASE_SEC + i) * 10**9
            if p.relative_to(root).as_posix() == NS_FILE:
                ns += 123_456_789
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
        os.utime(root, ns=(BASE_SEC * 10**9,) * 2)
    finally:
        os.umask(old)
    return root
