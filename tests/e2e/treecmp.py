#!/usr/bin/env python3
"""Load a file tree (a directory or a tar archive) into a canonical form and
compare two of them, reporting every difference in readable form.

Canonical form (``Tree``):
  entries:   {relpath: {field: value}}; relpath is "." for the root, else a
             '/'-joined path without leading "./" (non-UTF-8 bytes are kept
             via surrogateescape).
             fields: type (reg/dir/lnk/chr/blk/fifo/sock), mode (07777 bits),
             uid, gid, mtime_ns, xattrs {name: bytes},
             size + sha256 (reg), target (lnk), rdev (major, minor) (chr/blk),
             nlink (directories on disk only; a tar has no link counts).
  hardlinks: set of frozensets of paths naming the same non-directory inode
             (only groups of >= 2 names inside the tree).

Never compared: atime, ctime, directory sizes, inode numbers, uname/gname.

Tar reading: PAX ``mtime`` records are parsed exactly (nanoseconds);
``SCHILY.xattr.NAME`` records give xattrs (binary safe, tarfile decodes them
with surrogateescape and we re-encode); ``LIBARCHIVE.xattr.NAME`` (base64)
is accepted too; hard link entries (type '1') join the group of their target
and inherit its metadata.

CLI:  python3 treecmp.py A B [--ignore-sockets] [--ignore-root-mtime]
                             [--no-content] [--no-nlink] [--ignore-xattrs]
      A and B are each a directory or a tar file; exits 1 on any difference,
      2 if a tree cannot be read.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import stat
import sys
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

READ_BLOCK = 1 << 20


@dataclass
class Tree:
    source: str
    entries: dict = field(default_factory=dict)
    hardlinks: set = field(default_factory=set)
    warnings: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entries)


# --------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------

_S_TYPES = [
    (stat.S_ISREG, "reg"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "lnk"),
    (stat.S_ISCHR, "chr"), (stat.S_ISBLK, "blk"), (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "sock"),
]


def _ftype(mode: int) -> str:
    for pred, name in _S_TYPES:
        if pred(mode):
            return name
    return "unknown(%o)" % stat.S_IFMT(mode)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(READ_BLOCK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _read_xattrs(path: str) -> dict:
    out = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:  # e.g. filesystem without xattr support
        return {"<listxattr error>": str(e).encode()}
    for name in names:
        out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def load_dir(root, content: bool = True) -> Tree:
    """Walk a directory with lstat (never follows symlinks)."""
    root = os.fspath(root)
    tree = Tree(source=root)
    inodes: dict = {}

    def visit(abspath: str, rel: str) -> None:
        st = os.lstat(abspath)
        t = _ftype(st.st_mode)
        e = {
            "type": t,
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
            "xattrs": _read_xattrs(abspath),
            "nlink": st.st_nlink,
        }
        if t == "reg":
            e["size"] = st.st_size
            e["sha256"] = _sha256_file(abspath) if content else None
        elif t == "lnk":
            e["target"] = os.readlink(abspath)
        elif t in ("chr", "blk"):
            e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        tree.entries[rel] = e
        if t != "dir":
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        else:
            with os.scandir(abspath) as it:
                names = sorted(d.name for d in it)
            for name in names:
                visit(os.path.join(abspath, name), name if rel == "." else rel + "/" + name)

    visit(root, ".")
    tree.hardlinks = {frozenset(v) for v in inodes.values() if len(v) > 1}
    return tree


def _norm_tar_path(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    name = name.rstrip("/")
    if name in ("", "."):
        return "."
    return name


def _pax_mtime_ns(member: tarfile.TarInfo) -> int:
    raw = member.pax_headers.get("mtime")
    if raw is not None:
        return int((Decimal(raw) * 1_000_000_000).to_integral_value())
    return int(member.mtime) * 1_000_000_000


def _surrogate_bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _tar_xattrs(member: tarfile.TarInfo, warnings: list) -> dict:
    out = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            out[key[len("SCHILY.xattr."):]] = _surrogate_bytes(value)
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[len("LIBARCHIVE.xattr."):])
            out.setdefault(name, base64.b64decode(value + "=" * (-len(value) % 4)))
        elif key.startswith("SCHILY.acl."):
            warnings.append(f"{member.name}: textual ACL record {key} ignored")
    return out


_TAR_TYPES = {
    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.CONTTYPE: "reg",
    tarfile.GNUTYPE_SPARSE: "reg", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "lnk",
    tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk", tarfile.FIFOTYPE: "fifo",
}


def load_tar(path, content: bool = True) -> Tree:
    path = os.fspath(path)
    tree = Tree(source=path)
    groups: dict = {}      # target path -> list of names
    # errors='surrogateescape' keeps non-UTF-8 names / binary xattrs intact.
    with tarfile.open(path, "r:*", errors="surrogateescape") as tf:
        for m in tf:
            rel = _norm_tar_path(m.name)
            if rel in tree.entries:
                tree.warnings.append(f"{rel}: duplicate tar entry (later one wins)")
            if m.islnk():
                target = _norm_tar_path(m.linkname)
                if target not in tree.entries:
                    tree.entries[rel] = {"type": "hardlink-to-missing", "target": target}
                    tree.warnings.append(f"{rel}: hard link to {target!r} which is not "
                                         "an earlier entry")
                    continue
                tgt = tree.entries[target]
                # Hard-linked names share one inode: same metadata + content.
                tree.entries[rel] = {k: (dict(v) if isinstance(v, dict) else v)
                                     for k, v in tgt.items()}
                groups.setdefault(target, [target]).append(rel)
                continue
            t = _TAR_TYPES.get(m.type)
            if t is None:
                t = "tar-type-%r" % m.type
            e = {
                "type": t,
                "mode": m.mode & 0o7777,
                "uid": m.uid,
                "gid": m.gid,
                "mtime_ns": _pax_mtime_ns(m),
                "xattrs": _tar_xattrs(m, tree.warnings),
                "nlink": None,
            }
            if t == "reg":
                e["size"] = m.size
                if content:
                    h = hashlib.sha256()
                    f = tf.extractfile(m)
                    n = 0
                    while True:
                        b = f.read(READ_BLOCK)
                        if not b:
                            break
                        n += len(b)
                        h.update(b)
                    e["sha256"] = h.hexdigest()
                    if n != m.size:
                        tree.warnings.append(f"{rel}: read {n} bytes, header says {m.size}")
                else:
                    e["sha256"] = None
            elif t == "lnk":
                e["target"] = m.linkname
            elif t in ("chr", "blk"):
                e["rdev"] = (m.devmajor, m.devminor)
            tree.entries[rel] = e
    tree.hardlinks = {frozenset(v) for v in groups.values() if len(v) > 1}
    return tree


def load(path, content: bool = True) -> Tree:
    """A directory, or anything tarfile can read."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        return load_dir(path, content=content)
    return load_tar(path, content=content)


# --------------------------------------------------------------------------
# comparing
# --------------------------------------------------------------------------

def _fmt_val(key: str, v) -> str:
    if key == "mode" and isinstance(v, int):
        return "0o%04o" % v
    if key == "mtime_ns" and isinstance(v, int):
        s, ns = divmod(abs(v), 10**9)
        return f"{'-' if v < 0 else ''}{s}.{ns:09d}"
    if isinstance(v, bytes):
        return repr(v if len(v) <= 64 else v[:64] + b"...")
    if isinstance(v, str) and len(v) > 120:
        return repr(v[:120] + "...") + f" (len {len(v)})"
    return repr(v)


FIELDS = ("type", "mode", "uid", "gid", "mtime_ns", "size", "sha256", "target", "rdev", "nlink")


def compare(a: Tree, b: Tree, *, ignore_sockets: bool = False,
            ignore_root_mtime: bool = False, content: bool = True,
            nlink: bool = True, xattrs: bool = True, hardlinks: bool = True,
            ignore_fields: tuple = (), ignore_paths: tuple = ()) -> list[str]:
    """Return a list of human-readable differences (empty list == equal).

    ignore_sockets: drop sockets from both sides (a tar cannot hold them).
    nlink: compare link counts where both sides know them (dir vs dir).
    hardlinks: compare hard link groups.
    ignore_paths: relpaths (and everything under them) to leave out.
    """
    diffs: list[str] = []

    def keep(rel: str, e: dict) -> bool:
        if ignore_sockets and e.get("type") == "sock":
            return False
        for p in ignore_paths:
            if rel == p or rel.startswith(p.rstrip("/") + "/"):
                return False
        return True

    ea = {k: v for k, v in a.entries.items() if keep(k, v)}
    eb = {k: v for k, v in b.entries.items() if keep(k, v)}
    skip = set(ignore_fields)
    if not content:
        skip.add("sha256")
    if not nlink:
        skip.add("nlink")

    for rel in sorted(ea.keys() - eb.keys()):
        diffs.append(f"only in A: {rel!r} ({ea[rel].get('type')})")
    for rel in sorted(eb.keys() - ea.keys()):
        diffs.append(f"only in B: {rel!r} ({eb[rel].get('type')})")

    for rel in sorted(ea.keys() & eb.keys()):
        x, y = ea[rel], eb[rel]
        if x.get("type") != y.get("type"):
            diffs.append(f"{rel!r}: type A={x.get('type')} B={y.get('type')}")
            continue
        for key in FIELDS:
            if key in skip or key == "type":
                continue
            if key == "mtime_ns" and rel == "." and ignore_root_mtime:
                continue
            if key == "nlink" and (x.get("nlink") is None or y.get("nlink") is None):
                continue
            if key == "sha256" and (x.get("sha256") is None or y.get("sha256") is None):
                continue
            if x.get(key) != y.get(key):
                diffs.append(f"{rel!r}: {key} A={_fmt_val(key, x.get(key))} "
                             f"B={_fmt_val(key, y.get(key))}")
        if xattrs and "xattrs" not in skip:
            xa, xb = x.get("xattrs") or {}, y.get("xattrs") or {}
            for name in sorted(xa.keys() | xb.keys()):
                if name not in xb:
                    diffs.append(f"{rel!r}: xattr {name} only in A ({_fmt_val('', xa[name])})")
                elif name not in xa:
                    diffs.append(f"{rel!r}: xattr {name} only in B ({_fmt_val('', xb[name])})")
                elif xa[name] != xb[name]:
                    diffs.append(f"{rel!r}: xattr {name} A={_fmt_val('', xa[name])} "
                                 f"B={_fmt_val('', xb[name])}")

    def kept_groups(groups):
        out = set()
        for g in groups:
            g2 = frozenset(p for p in g if p in ea or p in eb)
            if len(g2) > 1:
                out.add(g2)
        return out

    if not hardlinks:
        return diffs
    ga, gb = kept_groups(a.hardlinks), kept_groups(b.hardlinks)
    for g in sorted(ga - gb, key=sorted):
        others = sorted((sorted(h) for h in gb if h & g))
        diffs.append(f"hard link group only in A: {sorted(g)}; B has {others or 'no group'}")
    for g in sorted(gb - ga, key=sorted):
        others = sorted((sorted(h) for h in ga if h & g))
        diffs.append(f"hard link group only in B: {sorted(g)}; A has {others or 'no group'}")
    return diffs


def format_diffs(diffs: list[str], a: Tree | None = None, b: Tree | None = None,
                 limit: int = 200) -> str:
    head = []
    if a is not None and b is not None:
        head.append(f"A = {a.source} ({len(a)} entries)")
        head.append(f"B = {b.source} ({len(b)} entries)")
        for t in (a, b):
            for w in t.warnings[:20]:
                head.append(f"warning ({t.source}): {w}")
    body = diffs[:limit]
    if len(diffs) > limit:
        body.append(f"... and {len(diffs) - limit} more")
    return "\n".join(head + [f"{len(diffs)} difference(s):"] + ["  " + d for d in body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare two trees (directories or tar files).")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore-sockets", action="store_true")
    ap.add_argument("--ignore-root-mtime", action="store_true")
    ap.add_argument("--no-content", action="store_true", help="compare sizes, not sha256")
    ap.add_argument("--no-nlink", action="store_true")
    ap.add_argument("--ignore-xattrs", action="store_true")
    args = ap.parse_args(argv)
    try:
        ta = load(args.a, content=not args.no_content)
        tb = load(args.b, content=not args.no_content)
    except (OSError, tarfile.TarError) as e:
        print(f"treecmp: {e}", file=sys.stderr)
        return 2
    diffs = compare(ta, tb, ignore_sockets=args.ignore_sockets,
                    ignore_root_mtime=args.ignore_root_mtime,
                    content=not args.no_content, nlink=not args.no_nlink,
                    xattrs=not args.ignore_xattrs)
    if diffs:
        print(format_diffs(diffs, ta, tb))
        return 1
    print(f"equal: {len(ta)} entries, {len(ta.hardlinks)} hard link group(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
