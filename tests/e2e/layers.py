"""A 4-layer image fixture in OCI whiteout form, plus its conversion to
overlayfs form, for the layered-build tests (test_layers.py).

Every case of spec §6.3 appears at least once:

  * `.wh.NAME` deleting a lower file, a lower directory tree, one name of a
    lower hard-link pair, and a name that does not exist below;
  * `.wh..wh..opq` on a directory that also gets new entries, on a directory
    first created by a middle layer, and on the root's child of a new layer;
  * a whiteout and a new entry of the same name in one layer (delete then
    re-add: the new directory must not show the lower children);
  * file -> directory -> file and directory -> file -> directory;
  * a file deleted by one layer and re-added (same content) by a later one;
  * metadata-only changes (mode, owner, mtime, xattrs; same content) on a
    file, a directory, the root and a symlink retarget;
  * hard links inside one layer, and lower hard links broken by an upper
    layer replacing one name;
  * devices, fifos, symlinks and xattrs in upper layers.

`convert_to_overlay(src, dst)` rewrites one OCI layer as overlayfs expects it:
`.wh.X` -> a 0/0 character device X (or, when the layer also has X and X is a
directory, the opaque xattr on X), `.wh..wh..opq` -> `trusted.overlay.opaque=y`
on its directory. Timestamps of directories are restored afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

T0 = 1_650_000_000_000_000_000
OPAQUE_XATTR = "trusted.overlay.opaque"


class _Layer:
    def __init__(self, root: Path, seed: int, tick: int):
        self.root = root
        self.rng = random.Random(seed)
        self.tick = tick
        root.mkdir(parents=True)

    def p(self, rel: str) -> Path:
        return self.root / rel

    def dir(self, rel: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        d = self.p(rel)
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, mode)
        os.chown(d, uid, gid)
        return d

    def file(self, rel: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
             xattrs: dict | None = None) -> Path:
        f = self.p(rel)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        os.chmod(f, mode)
        os.chown(f, uid, gid)
        for k, v in (xattrs or {}).items():
            os.setxattr(f, k, v)
        return f

    def rand(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def whiteout(self, rel: str) -> None:
        parent, name = os.path.split(rel)
        self.file(os.path.join(parent, ".wh." + name), b"")

    def opaque(self, rel_dir: str) -> None:
        self.file(os.path.join(rel_dir, ".wh..wh..opq"), b"")

    def finish(self) -> None:
        """Deterministic mtimes for everything (children before parents)."""
        paths = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for n in filenames + dirnames:
                paths.append(Path(dirpath) / n)
        paths.sort(key=lambda q: (-len(q.parts), str(q)))
        for i, q in enumerate(paths):
            os.utime(q, ns=(T0, T0 + self.tick * 1_000_000_000 + i * 1000 + 7),
                     follow_symlinks=False)
        os.utime(self.root, ns=(T0, T0 + self.tick * 1_000_000_000 + 999_999_999))


BIG = 3 * 1024 * 1024 + 12345


def make_layers(base: Path) -> list[Path]:
    """Write layers base/l1 .. base/l4 (lowest first) in OCI form."""
    base = Path(base)
    shared_rng = random.Random(42)
    big = shared_rng.randbytes(BIG)
    re_add = shared_rng.randbytes(70_000)
    meta = shared_rng.randbytes(200_000)
    layers = []

    # ---- layer 1: the base
    l1 = _Layer(base / "l1", 1, 1)
    l1.dir("etc")
    l1.file("etc/conf", b"conf v1\n", xattrs={"user.origin": b"l1"})
    l1.file("etc/keep", b"keep me\n")
    l1.file("etc/drop", b"dropped by l4\n")
    l1.dir("dir")
    l1.file("dir/a", b"a" * 5000)
    l1.file("dir/b", b"b" * 10)
    l1.file("dir/sub/c", l1.rand(9000))
    l1.dir("opq")
    l1.file("opq/x", b"x")
    l1.file("opq/sub/y", b"y")
    l1.file("f2d", b"file that becomes a directory\n")
    l1.file("d2f/inner", b"inside a directory that becomes a file\n")
    l1.file("del_file", l1.rand(3000))
    l1.file("del_dir/deep/er", b"deleted with its directory\n")
    l1.file("readd_dir/p", b"p")
    l1.file("readd_dir/q", b"q")
    l1.file("meta", meta, mode=0o644, uid=10, gid=10, xattrs={"user.v": b"1"})
    l1.file("hl_a", b"hard link pair one\n", mode=0o600)
    os.link(l1.p("hl_a"), l1.p("hl_b"))
    l1.file("hl_c", b"hard link pair two\n")
    os.link(l1.p("hl_c"), l1.p("hl_d"))
    os.symlink("etc/conf", l1.p("sym"))
    l1.file("big", big)
    l1.file("re_add", re_add, mode=0o640)
    l1.finish()
    layers.append(l1.root)

    # ---- layer 2
    l2 = _Layer(base / "l2", 2, 2)
    l2.whiteout("del_file")
    l2.whiteout("del_dir")
    l2.whiteout("re_add")
    l2.whiteout("hl_c")
    l2.whiteout("never_existed")
    l2.dir("opq")
    l2.opaque("opq")
    l2.file("opq/new", b"only child after the opaque marker\n")
    l2.file("f2d/child", b"now a directory\n")
    l2.file("d2f", b"now a file\n", mode=0o755)
    l2.file("meta", meta, mode=0o600, uid=20, gid=30, xattrs={"user.v": b"2", "user.w": b"x"})
    l2.file("hl_a", b"replaced in layer 2\n")
    l2.dir("dir")
    l2.whiteout("dir/a")
    l2.file("dir/sub/d", b"added below a merged directory\n")
    l2.file("etc/conf", b"conf v1\n", mode=0o600, xattrs={"user.origin": b"l2"})
    l2.file("opq2/one", b"1")
    l2.file("opq2/two", b"2")
    l2.finish()
    layers.append(l2.root)

    # ---- layer 3
    l3 = _Layer(base / "l3", 3, 3)
    l3.file("re_add", re_add, mode=0o640)          # same data as layer 1
    l3.file("f2d", b"a file again\n")               # directory -> file
    l3.file("d2f/again", b"a directory again\n")    # file -> directory
    l3.whiteout("readd_dir")                        # delete and re-add in one layer
    l3.file("readd_dir/r", b"r")
    l3.dir("opq2")
    l3.opaque("opq2")
    l3.file("opq2/three", b"3")
    l3.file("n1", l3.rand(5000) + big[:100_000])
    os.link(l3.p("n1"), l3.p("n2"))
    l3.dir("newdir")
    l3.opaque("newdir")                             # opaque with nothing below
    l3.file("newdir/f", b"f")
    l3.finish()
    layers.append(l3.root)

    # ---- layer 4
    l4 = _Layer(base / "l4", 4, 4)
    os.chmod(l4.root, 0o750)
    os.chown(l4.root, 1, 2)
    l4.dir("dir", mode=0o700, uid=5, gid=6)        # metadata-only directory change
    os.symlink("etc/keep", l4.p("sym"))             # symlink retarget
    l4.whiteout("etc/drop")
    l4.dir("dev")
    os.mknod(l4.p("dev/null"), 0o20666, os.makedev(1, 3))
    os.mknod(l4.p("dev/loop"), 0o60660, os.makedev(7, 0))
    os.mkfifo(l4.p("dev/fifo"), 0o644)
    l4.file("big2", big[:2 * 1024 * 1024] + l4.rand(300_000))
    l4.file("hl_b", b"hl_b replaced; was linked to hl_a in l1\n")
    l4.finish()
    os.utime(l4.root, ns=(T0, T0 + 4_000_000_000 + 999_999_999))
    layers.append(l4.root)
    return layers


def convert_to_overlay(src: Path, dst: Path) -> Path:
    """Copy one OCI layer to dst in overlayfs whiteout form."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", os.fspath(src), os.fspath(dst)], check=True)
    times = {}
    for dirpath, _dirs, _files in os.walk(dst):
        st = os.lstat(dirpath)
        times[dirpath] = (st.st_atime_ns, st.st_mtime_ns)
    for dirpath, _dirs, files in os.walk(dst):
        d = Path(dirpath)
        for name in sorted(files):
            if name == ".wh..wh..opq":
                os.unlink(d / name)
                os.setxattr(d, OPAQUE_XATTR, b"y")
            elif name.startswith(".wh."):
                os.unlink(d / name)
                target = d / name[4:]
                if os.path.lexists(target):
                    if target.is_dir() and not target.is_symlink():
                        os.setxattr(target, OPAQUE_XATTR, b"y")
                else:
                    os.mknod(target, 0o20000, os.makedev(0, 0))
                    os.utime(target, ns=(T0, T0), follow_symlinks=False)
    for dirpath, ns in times.items():
        os.utime(dirpath, ns=ns)
    return dst


def remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
