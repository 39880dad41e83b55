#!/usr/bin/env python3
"""Deterministic fixture trees for the nydus-image end-to-end tests.

``make_fixture(root)`` builds the "everything" tree: every file type the
RAFS v6 / EROFS format can describe, with the metadata corner cases that an
image builder tends to get wrong (see the layout below).  ``make_mini_fixture``
builds a tiny tree with the same kinds of entries, used where a test runs
the binary hundreds of times (bit-flip fuzzing).

Both must run as root (mknod, chown to arbitrary ids, trusted.* xattrs).
Generation is deterministic: contents come from a seeded RNG, every inode gets
an explicit mode/owner/mtime, directory mtimes are set last (bottom-up).
Only atime/ctime and inode numbers differ between two generations.

CLI:  python3 tests/e2e/fixture.py DIR [--small] [--mini]
      (DIR must not exist or be empty)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

MiB = 1024 * 1024

# Sizes around the chunk-size boundaries that the round-trip tests use
# (0x1000, 0x100000, 0x1000000).  The two 16 MiB ones are sparse-ish: a few
# random islands in a hole, so they cost almost nothing on disk.
EDGE_SIZES = [0xFFF, 0x1000, 0x1001, 0xFFFFF, 0x100000, 0x100001, 0x1000000, 0x1000001]
SPARSE_EDGE_MIN = 0x1000000  # sizes >= this are written sparse

# Deterministic timestamps.
BASE_SEC = 1_600_000_000
MTIME_NS_SPECIAL = 1_234_567_890_123_456_789      # 2009, odd nanoseconds
MTIME_NS_MAXNSEC = 1_700_000_000_999_999_999      # nsec = 999999999
MTIME_NS_Y2242 = (2**33 + 5) * 10**9 + 500_000_000  # needs > 32-bit seconds


def _cap_v2(permitted: int, inheritable: int = 0, effective: bool = True) -> bytes:
    """struct vfs_cap_data (VFS_CAP_REVISION_2), as stored in security.capability."""
    magic = 0x02000000 | (1 if effective else 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                       permitted >> 32, inheritable >> 32)


# cap_net_bind_service (10) + cap_net_raw (13) + cap_sys_admin (21) + cap_bpf (39)
CAPABILITY_V2 = _cap_v2((1 << 10) | (1 << 13) | (1 << 21) | (1 << 39), inheritable=1 << 10)


class _Gen:
    def __init__(self, root: Path, seed: int):
        self.root = root
        self.rng = random.Random(seed)
        self.mtimes: dict[Path, int] = {}   # explicit mtime overrides (ns)
        self.counter = 0

    # -- helpers ---------------------------------------------------------
    def p(self, rel: str) -> Path:
        return self.root / rel

    def rand(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def text(self, n: int) -> bytes:
        words = [b"nydus", b"rafs", b"erofs", b"chunk", b"blob", b"bootstrap",
                 b"inode", b"xattr", b"dirent", b"lorem", b"ipsum", b"\n"]
        out = bytearray()
        while len(out) < n:
            out += self.rng.choice(words) + b" "
            if self.rng.random() < 0.02:
                out += b"%d\n" % self.rng.randrange(10**6)
        return bytes(out[:n])

    def mkdir(self, rel: str, mode: int = 0o755) -> Path:
        path = self.p(rel)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        return path

    def write(self, rel: str, data: bytes = b"", mode: int = 0o644,
              mtime_ns: int | None = None) -> Path:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        if mtime_ns is not None:
            self.mtimes[path] = mtime_ns
        return path

    def write_sparse(self, rel: str, size: int, islands: list[tuple[int, int]],
                     mode: int = 0o644) -> Path:
        """A file of ``size`` bytes that is a hole except for random islands
        given as (offset, length) (clipped to the file size)."""
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)
            for off, length in islands:
                off = max(0, min(off, size))
                length = max(0, min(length, size - off))
                if length:
                    f.seek(off)
                    f.write(self.rand(length))
        os.chmod(path, mode)
        return path

    def symlink(self, rel: str, target: str, mtime_ns: int | None = None) -> Path:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)
        if mtime_ns is not None:
            self.mtimes[path] = mtime_ns
        return path

    def setx(self, rel: str, name: str, value: bytes) -> None:
        os.setxattr(self.p(rel), name, value, follow_symlinks=False)

    def socket(self, rel: str) -> Path:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        # sun_path is limited to 108 bytes: bind a relative name from inside
        # the parent directory, then restore the working directory.
        old = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(path.parent)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(path.name)
            finally:
                s.close()
        finally:
            os.fchdir(old)
            os.close(old)
        os.chmod(path, 0o755)
        return path

    def next_mtime(self) -> int:
        self.counter += 1
        return BASE_SEC * 10**9 + self.counter * 1_000_003_007 + (self.counter * 7919) % 10**9

    def finish(self) -> None:
        """Set mtimes of all non-directories, then of directories bottom-up."""
        nondirs, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames
                                            if os.path.islink(os.path.join(dirpath, d))]):
                nondirs.append(Path(dirpath) / name)
            dirs.append(Path(dirpath))
        done_inodes = set()
        for path in sorted(nondirs):
            st = os.lstat(path)
            key = (st.st_dev, st.st_ino)
            if key in done_inodes:
                continue
            done_inodes.add(key)
            ns = self.mtimes.get(path, self.next_mtime())
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        for path in sorted(dirs, key=lambda d: (-len(d.parts), str(d))):
            ns = self.mtimes.get(path, self.next_mtime())
            os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _setfacl(args: list[str]) -> None:
    subprocess.run(["setfacl", *args], check=True, stdout=subprocess.DEVNULL)


def make_fixture(root: Path, big_sparse_mib: int = 300, seed: int = 0x6E79647573) -> Path:
    """Build the full fixture tree under ``root`` (created if missing).

    ``big_sparse_mib`` is the size of ``sparse/big`` (300 MiB by default;
    the CLI's --small uses 8 MiB).  Returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o022)
    try:
        _make_fixture(_Gen(root, seed), big_sparse_mib)
    finally:
        os.umask(old_umask)
    return root


def _make_fixture(g: _Gen, big_sparse_mib: int) -> None:
    root = g.root
    os.chmod(root, 0o755)
    os.setxattr(root, "user.root_attr", b"on the root inode")

    # ---- files: sizes around chunk boundaries, content kinds ------------
    g.write("files/empty", b"")
    g.write("files/one_byte", b"\x5a")
    g.write("files/two_bytes", b"\x00\x01")
    for size in EDGE_SIZES:
        name = f"files/size_{size:#x}"
        if size >= SPARSE_EDGE_MIN:
            g.write_sparse(name, size, [(0, 0x10000), (0x800000 - 0x1000, 0x2000),
                                        (size - 1, 1)])
        else:
            g.write(name, g.rand(size))
    g.write("files/random_3m", g.rand(3 * MiB + 123))
    g.write("files/compressible_3m", g.text(3 * MiB + 17))
    mixed = bytearray()
    for i in range(32):
        kind = i % 3
        block = 0x10000 + (i * 37)
        mixed += g.rand(block) if kind == 0 else (bytes(block) if kind == 1 else g.text(block))
    g.write("files/mixed", bytes(mixed))
    g.write("files/zeros_2m", bytes(2 * MiB))          # real zeros, not a hole
    g.write("files/ones_1m", b"\xff" * MiB)

    # ---- dedup: identical content under different names / dirs ----------
    orig = g.rand(5 * MiB + 777)
    g.write("dup/orig", orig)
    g.write("dup/copy", orig)
    g.write("dup/sub/copy2", orig)
    g.write("dup/prefix_1m", orig[:MiB])              # chunk-aligned prefix
    g.write("dup/prefix_4k_plus", orig[:0x1000 + 99])
    g.write("dup/shifted", b"!" + orig[:2 * MiB])     # same bytes, misaligned
    small = g.rand(100)
    g.write("dup/small_a", small)
    g.write("dup/small_b", small)
    g.write("dup/zeros_copy", bytes(2 * MiB))         # same as files/zeros_2m

    # ---- the big sparse file -------------------------------------------
    big = big_sparse_mib * MiB
    g.write_sparse("sparse/big", big, [
        (0, 0x1000),
        (MiB + 123, 100 * 1024),
        (big // 2 - 7, MiB),
        (big - 1000, 1000),
    ])
    g.write_sparse("sparse/hole_only", 3 * MiB + 5, [])
    g.write_sparse("sparse/hole_at_start", 2 * MiB, [(2 * MiB - 4096, 4096)])

    # ---- modes ---------------------------------------------------------
    g.write("modes/setuid", b"suid\n", 0o4755)
    g.write("modes/setgid", b"sgid\n", 0o2755)
    g.write("modes/all_bits", b"all\n", 0o7777)
    g.write("modes/no_perms", b"none\n", 0o000)
    g.write("modes/read_only", b"ro\n", 0o444)
    g.write("modes/sticky_file", b"sticky\n", 0o1644)
    g.mkdir("modes/sticky_dir", 0o1777)
    g.mkdir("modes/setgid_dir", 0o2775)
    g.write("modes/setgid_dir/inside", b"x")
    g.mkdir("modes/no_perm_dir", 0o000)

    # ---- owners (ids > 65535 need extended inodes) -----------------------
    for name, uid, gid in [("uid_65535", 65535, 65535), ("uid_65536", 65536, 65536),
                           ("big_ids", 70000, 70001), ("huge_ids", 4_000_000_000, 4_000_000_001),
                           ("mixed_ids", 0, 123456)]:
        path = g.write(f"owners/{name}", name.encode())
        os.chown(path, uid, gid)
    os.chown(g.mkdir("owners/dir_owned"), 100000, 100001)
    os.lchown(g.symlink("owners/link_owned", "uid_65535"), 70000, 70002)

    # ---- timestamps ------------------------------------------------------
    g.write("times/mtime_zero", b"epoch", mtime_ns=0)
    g.write("times/mtime_ns", b"ns", mtime_ns=MTIME_NS_SPECIAL)
    g.write("times/mtime_max_nsec", b"max", mtime_ns=MTIME_NS_MAXNSEC)
    g.write("times/mtime_y2242", b"future", mtime_ns=MTIME_NS_Y2242)
    g.write("times/mtime_whole_sec", b"whole", mtime_ns=1_500_000_000 * 10**9)
    g.symlink("times/link_mtime_ns", "mtime_ns", mtime_ns=MTIME_NS_SPECIAL + 1)
    g.mkdir("times/dir_mtime_zero")
    g.mtimes[g.p("times/dir_mtime_zero")] = 0

    # ---- xattrs ----------------------------------------------------------
    g.write("xattrs/user", b"user xattrs")
    g.setx("xattrs/user", "user.a", b"hello")
    g.setx("xattrs/user", "user.empty", b"")
    g.setx("xattrs/user", "user.binary", b"\x00\xff\x01bin\x00\x80\n")
    g.setx("xattrs/user", "user.long", g.text(1500))
    g.write("xattrs/trusted", b"trusted xattrs")
    g.setx("xattrs/trusted", "trusted.overlay.opaque", b"y")
    g.setx("xattrs/trusted", "trusted.foo", b"bar")
    g.write("xattrs/capability", b"#!/bin/true\n", 0o755)
    g.setx("xattrs/capability", "security.capability", CAPABILITY_V2)
    g.write("xattrs/acl", b"acl\n", 0o640)
    g.mkdir("xattrs/acl_dir", 0o750)
    g.write("xattrs/many", b"many")
    for i in range(40):
        g.setx("xattrs/many", f"user.attr_{i:02d}", (b"v%d" % i) * (i % 7 + 1))
    for i in range(6):
        g.write(f"xattrs/shared_{i}", b"s%d" % i)
        g.setx(f"xattrs/shared_{i}", "user.shared", b"same value on six inodes")
        g.setx(f"xattrs/shared_{i}", "trusted.shared", b"another shared one")
    g.mkdir("xattrs/dir_with_xattr")
    g.setx("xattrs/dir_with_xattr", "user.dirattr", b"directory")
    g.symlink("xattrs/symlink_with_xattr", "user")
    g.setx("xattrs/symlink_with_xattr", "trusted.link", b"on the link itself")
    os.mkfifo(g.p("xattrs/fifo_with_xattr"), 0o600)
    g.setx("xattrs/fifo_with_xattr", "trusted.fifo", b"fifo")
    g.write("xattrs/mixed_ns", b"all namespaces")
    g.setx("xattrs/mixed_ns", "user.u", b"1")
    g.setx("xattrs/mixed_ns", "trusted.t", b"2")
    g.setx("xattrs/mixed_ns", "security.capability", CAPABILITY_V2)

    # ---- hard links (3 names across directories, plus an empty group) ------
    hl = g.write("links/a/hl_1", g.rand(10_000), 0o640)
    os.chown(hl, 1000, 1000)
    os.setxattr(hl, "user.hardlinked", b"yes")
    g.mkdir("links/b")
    os.link(hl, g.p("links/b/hl_2"))
    os.link(hl, g.p("links/hl_3"))
    e = g.write("links/empty_1", b"")
    os.link(e, g.p("links/a/empty_2"))
    big_hl = g.write("links/big_1", g.rand(2 * MiB + 3))
    os.link(big_hl, g.p("links/b/big_2"))

    # ---- symlinks ----------------------------------------------------------
    g.symlink("symlinks/dangling", "does/not/exist")
    g.symlink("symlinks/abs_dangling", "/nonexistent/path/for/nydus")
    g.symlink("symlinks/relative", "../files/one_byte")
    g.symlink("symlinks/to_dir", "../dup")
    g.symlink("symlinks/self_loop", "self_loop")
    g.symlink("symlinks/unicode_target", "ünïcödé/🦀/目标")
    g.symlink("symlinks/long_1000", ("long_component_" * 70)[:999] + "Z")
    g.symlink("symlinks/long_4095", (("d" * 254 + "/") * 17)[:4094] + "Y")
    g.symlink("symlinks/one_char", "x")

    # ---- names ---------------------------------------------------------------
    names = [
        "héllo_wörld", "日本語ファイル.txt", "🦀crab", "e\u0301combining", "Ωmega",
        "a" * 255, "é" * 127 + "x",                      # 255 bytes each
        "!bang", "-dash", " space", "  two spaces ", "#hash", "+plus", ",comma",
        "'quote", '"dquote', "(paren", "$dollar", "%percent", "&amp", "*star",
        ".hidden", "...", "..a", ".a", "a b c", "tab\tname", "new\nline",
        "back\\slash", "colon:name", "ends_with_dot.", "UPPER", "upper", "~tilde",
        "\x01ctrl", "\x7fdel",
    ]
    for i, name in enumerate(names):
        g.write(f"names/{name}", name.encode() + b"\n")
    g.mkdir("names/ !dir_sorting_before_dot")
    g.write("names/ !dir_sorting_before_dot/-inner", b"x")
    g.mkdir("names/" + "d" * 255)
    g.write("names/" + "d" * 255 + "/" + "f" * 255, b"long path")

    # ---- empty directories ------------------------------------------------
    g.mkdir("empty_dir")
    g.mkdir("nested_empty/a/b/c")
    g.mkdir("empty_dir_0700", 0o700)

    # ---- a directory with ~600 entries (multi-block directory) --------------
    for i in range(600):
        name = f"many/entry_{i:04d}_" + "x" * (i % 41)
        if i % 50 == 7:
            g.mkdir(name)
        elif i % 60 == 11:
            g.symlink(name, f"entry_{(i + 1):04d}")
        elif i % 3 == 0:
            g.write(name, b"")
        else:
            g.write(name, (b"%d " % i) * (i % 9 + 1))

    # ---- deep nesting with a > 1000 byte path --------------------------------
    deep = "deep/" + "/".join(f"level_{i:02d}_" + "n" * 20 for i in range(36))
    g.write(deep + "/leaf", b"deep leaf")

    # ---- special files ---------------------------------------------------------
    g.mkdir("special")
    os.mknod(g.p("special/char_1_3"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(g.p("special/block_8_1"), stat.S_IFBLK | 0o660, os.makedev(8, 1))
    os.mknod(g.p("special/char_big"), stat.S_IFCHR | 0o600, os.makedev(4095, 0xFFFFF))
    os.mknod(g.p("special/block_big"), stat.S_IFBLK | 0o640, os.makedev(259, 70000))
    os.chown(g.p("special/block_big"), 0, 6)
    os.mkfifo(g.p("special/fifo"), 0o644)
    os.mkfifo(g.p("special/fifo_suid"), 0o4600)
    os.chmod(g.p("special/fifo_suid"), 0o4600)
    g.socket("special/socket")

    # ---- ACLs last: setfacl rewrites the group bits / mask ------------------
    _setfacl(["-m", "u:1234:rw", str(g.p("xattrs/acl"))])
    _setfacl(["-m", "u:1234:rwx,g:4321:rx", str(g.p("xattrs/acl_dir"))])
    _setfacl(["-d", "-m", "u:1234:rx", str(g.p("xattrs/acl_dir"))])

    g.finish()


def make_mini_fixture(root: Path, seed: int = 7) -> Path:
    """A tiny tree with one of each kind of entry (for fuzz-style tests that
    run the binary hundreds of times).  With a 0x1000 chunk size the files
    ``data/multi`` and ``data/dup`` span several chunks."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o022)
    try:
        g = _Gen(root, seed)
        g.write("data/multi", g.rand(3 * 0x1000 + 100))
        g.write("data/dup", (root / "data/multi").read_bytes())
        g.write("data/text", g.text(5000))
        g.write("data/empty", b"")
        g.setx("data/text", "user.k", b"v")
        g.setx("data/text", "trusted.t", b"\x00\x01")
        g.setx("data/multi", "security.capability", CAPABILITY_V2)
        os.chown(g.write("data/owned", b"o"), 70000, 70000)
        os.chmod(g.p("data/owned"), 0o4755)          # after chown, which clears setuid
        os.link(g.p("data/multi"), g.p("hardlink"))
        g.symlink("link", "data/text")
        g.symlink("dangling", "x" * 300)
        os.mknod(g.p("chr"), stat.S_IFCHR | 0o644, os.makedev(1, 5))
        os.mkfifo(g.p("fifo"))
        for i in range(40):
            g.write(f"dir/f{i:02d}_" + "n" * (i * 3), b"%d" % i)
        g.mkdir("empty")
        g.finish()
    finally:
        os.umask(old_umask)
    return root


def tree_digest(root: Path) -> str:
    """A quick digest of names+content (used to sanity check determinism of
    the generator itself)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            h.update(os.fsencode(os.path.relpath(p, root)) + b"\0")
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--small", action="store_true",
                    help="8 MiB instead of 300 MiB for sparse/big")
    ap.add_argument("--mini", action="store_true", help="the tiny fuzzing tree instead")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("fixture.py must run as root (mknod, chown, trusted.* xattrs)", file=sys.stderr)
        return 2
    if args.dir.exists() and any(args.dir.iterdir()):
        print(f"{args.dir}: exists and is not empty", file=sys.stderr)
        return 2
    kw = {} if args.seed is None else {"seed": args.seed}
    if args.mini:
        make_mini_fixture(args.dir, **kw)
    else:
        make_fixture(args.dir, big_sparse_mib=8 if args.small else 300, **kw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
