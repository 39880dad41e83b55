"""Shared helpers for the nydus-image end-to-end tests: running the binary,
asserting clean failures, building images, EROFS superblock parsing and
kernel mounts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shlex
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parents[1]

COMPRESSORS = ("none", "lz4_block", "zstd")
DIGESTERS = ("blake3", "sha256")
CHUNK_SIZES = (0x1000, 0x100000, 0x1000000)

DEFAULT_TIMEOUT = 300
HANG_RC = -9999          # Result.rc used for a run killed at its timeout
EROFS_MAGIC = 0xE0F5E1E2
EROFS_SB_OFFSET = 1024


def nydus_path() -> Path:
    return Path(os.environ.get("NYDUS_IMAGE", REPO / "target" / "release" / "nydus-image"))


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def listing(path) -> set:
    """Names in a directory (empty set if it does not exist)."""
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


# --------------------------------------------------------------------------
# running the binary
# --------------------------------------------------------------------------

@dataclass
class Result:
    cmd: list
    rc: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    def describe(self, limit: int = 4000) -> str:
        def cut(s: str) -> str:
            return s if len(s) <= limit else s[:limit] + f"\n... ({len(s) - limit} more chars)"
        return (f"$ {shlex.join(self.cmd)}\n"
                f"exit status: {self.rc} ({self.seconds:.1f}s)\n"
                f"--- stdout ---\n{cut(self.stdout)}\n--- stderr ---\n{cut(self.stderr)}")

    @property
    def error_lines(self) -> list:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]

    def json(self):
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise AssertionError(f"stdout is not JSON ({e}):\n{self.describe()}") from None


def crash_reason(res: Result) -> str | None:
    """Why ``res`` counts as a crash (never acceptable), or None."""
    if res.rc == HANG_RC:
        return "hang (no exit before the timeout)"
    if res.rc < 0:
        try:
            name = signal.Signals(-res.rc).name
        except ValueError:
            name = f"signal {-res.rc}"
        return f"killed by {name}"
    if "panicked at" in res.stderr:
        return "Rust panic ('panicked at' in stderr)"
    if res.rc == 101:
        return "exit status 101 (Rust panic exit code)"
    if re.search(r"memory allocation of \d+ bytes failed", res.stderr):
        return "allocation failure abort"
    if "stack overflow" in res.stderr:
        return "stack overflow"
    return None


def _preexec(mem_limit_gib: int | None, cpus: set | None):
    if not mem_limit_gib and not cpus:
        return None

    def fn():
        if mem_limit_gib:
            lim = mem_limit_gib << 30
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
        if cpus:
            os.sched_setaffinity(0, cpus)
    return fn


def run_nydus(args, *, timeout: float = DEFAULT_TIMEOUT, expect_rc: int | None = None,
              cwd=None, env=None, mem_limit_gib: int | None = None,
              cpus: set | None = None, raise_on_crash: bool = True) -> Result:
    """Run the binary.  Always fails the test on a crash (signal, panic) or a
    hang (timeout) unless raise_on_crash=False (then the caller inspects
    crash_reason()); with expect_rc, fails unless the exit status matches.
    mem_limit_gib sets RLIMIT_AS; cpus pins the process to those CPUs."""
    cmd = [str(nydus_path())] + [os.fspath(a) if isinstance(a, Path) else str(a) for a in args]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd, env=env,
                           preexec_fn=_preexec(mem_limit_gib, cpus))
    except subprocess.TimeoutExpired as e:
        res = Result(cmd, HANG_RC, (e.stdout or b"").decode(errors="replace"),
                     (e.stderr or b"").decode(errors="replace"), time.monotonic() - t0)
        if raise_on_crash:
            pytest.fail(f"HANG: no exit within {timeout}s\n{res.describe()}", pytrace=False)
        return res
    res = Result(cmd, p.returncode, p.stdout.decode(errors="replace"),
                 p.stderr.decode(errors="replace"), time.monotonic() - t0)
    why = crash_reason(res)
    if why and raise_on_crash:
        pytest.fail(f"CRASH: {why}\n{res.describe()}", pytrace=False)
    if expect_rc is not None and res.rc != expect_rc:
        pytest.fail(f"expected exit status {expect_rc}\n{res.describe()}", pytrace=False)
    return res


def clean_error_problems(res: Result, *, mentions=(), cause: str | None = None,
                         absent=(), dirs_before: dict | None = None) -> list:
    """Problems with a run that was supposed to fail cleanly (empty == fine).

    mentions: strings (paths / blob ids) that must appear in an ``error:``
      line; a Path matches by its full path or its file name.
    cause: regex (case-insensitive) an ``error:`` line must match.
    absent: paths that must not exist afterwards (no partial outputs).
    dirs_before: {dir: listing before the run}; the listing must be unchanged
      (no temp files left behind)."""
    problems = []
    why = crash_reason(res)
    if why:
        problems.append(f"crash: {why}")
    if res.rc == 0:
        problems.append("exit status 0 (expected failure)")
    errs = res.error_lines
    if res.rc != 0 and not errs:
        problems.append("no stderr line starting with 'error:'")
    text = "\n".join(errs)
    for m in mentions:
        if isinstance(m, Path):
            ok = os.fspath(m) in text or m.name in text
        else:
            ok = str(m) in text
        if errs and not ok:
            problems.append(f"error line does not mention {str(m)!r}")
    if cause and errs and not re.search(cause, text, re.I):
        problems.append(f"error line does not match /{cause}/i")
    for p in absent:
        if os.path.lexists(p):
            problems.append(f"partial output left behind: {p}")
    for d, before in (dirs_before or {}).items():
        after = listing(d)
        if after != before:
            problems.append(f"directory {d} changed: added {sorted(after - before)}, "
                            f"removed {sorted(before - after)}")
    return problems


def assert_clean_error(res: Result, **kw) -> None:
    problems = clean_error_problems(res, **kw)
    if problems:
        pytest.fail("not a clean failure:\n  - " + "\n  - ".join(problems) + "\n"
                    + res.describe(), pytrace=False)


# --------------------------------------------------------------------------
# building images
# --------------------------------------------------------------------------

@dataclass
class Image:
    src: Path
    out: Path
    bootstrap: Path
    blob_dir: Path
    info: dict
    compressor: str
    digester: str
    chunk_size: int
    result: Result | None = None
    extra: dict = field(default_factory=dict)

    @property
    def blob_ids(self) -> list:
        return list(self.info.get("blobs", []))

    def blob_path(self, i: int = 0) -> Path:
        return self.blob_dir / self.blob_ids[i]


def create(src, out, *, compressor="zstd", digester="blake3", chunk_size=0x100000,
           repeatable=True, extra=(), timeout=DEFAULT_TIMEOUT, name="bootstrap",
           validate=True, cpus: set | None = None) -> Image:
    """nydus-image create SRC -B OUT/NAME -D OUT/blobs -J OUT/NAME.create.json ..."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    boot = out / name
    blob_dir = out / "blobs"
    blob_dir.mkdir(exist_ok=True)
    js = out / f"{name}.create.json"
    args = ["create", src, "-B", boot, "-D", blob_dir, "--fs-version", "6",
            "--compressor", compressor, "--digester", digester,
            "--chunk-size", hex(chunk_size), "-J", js]
    if repeatable:
        args.append("--repeatable")
    args += list(extra)
    res = run_nydus(args, timeout=timeout, expect_rc=0, cpus=cpus)
    assert boot.is_file(), f"bootstrap not written\n{res.describe()}"
    assert js.is_file(), f"-J output not written\n{res.describe()}"
    info = json.loads(js.read_text())
    img = Image(Path(src), out, boot, blob_dir, info, compressor, digester, chunk_size, res)
    if validate:
        validate_create_json(img)
    return img


CREATE_KEYS = {"bootstrap", "blobs", "blob_sizes", "fs_version", "compressor", "digester",
               "chunk_size", "inodes", "chunks", "dedup_chunks"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def validate_create_json(img: Image) -> None:
    info = img.info
    ctx = f"create -J output: {json.dumps(info)}"
    missing = CREATE_KEYS - info.keys()
    assert not missing, f"missing keys {sorted(missing)}; {ctx}"
    assert info["fs_version"] == 6, ctx
    assert info["compressor"] == img.compressor, ctx
    assert info["digester"] == img.digester, ctx
    assert info["chunk_size"] == img.chunk_size, ctx
    assert os.path.samefile(info["bootstrap"], img.bootstrap), ctx
    assert isinstance(info["blobs"], list) and isinstance(info["blob_sizes"], list), ctx
    assert len(info["blobs"]) == len(info["blob_sizes"]), ctx
    for blob_id, size in zip(info["blobs"], info["blob_sizes"]):
        assert HEX64.match(blob_id), f"blob id {blob_id!r} is not 64 lowercase hex; {ctx}"
        path = img.blob_dir / blob_id
        assert path.is_file(), f"blob file {path} missing; {ctx}"
        assert path.stat().st_size == size, f"blob_sizes {size} != file size " \
                                            f"{path.stat().st_size}; {ctx}"
        assert sha256_file(path) == blob_id, f"blob id is not sha256 of the blob file; {ctx}"
    stray = listing(img.blob_dir) - set(info["blobs"])
    assert not stray, f"unexpected files in blob dir: {sorted(stray)}; {ctx}"


CHECK_BLOB_KEYS = {"blob_id", "chunk_count", "compressed_size", "uncompressed_size",
                   "compressor", "digester"}


def check_json(img: Image, tmp: Path, *, verify_blobs: bool = True) -> dict:
    """Run ``check -v -J`` (and with -D when verify_blobs) and validate the JSON."""
    js = tmp / "check.json"
    args = ["check", img.bootstrap, "-v", "-J", js]
    if verify_blobs:
        args += ["-D", img.blob_dir]
    res = run_nydus(args, expect_rc=0)
    assert js.is_file(), f"check -J wrote nothing\n{res.describe()}"
    info = json.loads(js.read_text())
    ctx = f"check -J output: {json.dumps(info)[:3000]}"
    assert info.get("fs_version") == 6, ctx
    assert isinstance(info.get("inodes"), int), ctx
    assert re.match(r"^0x[0-9a-fA-F]+$", str(info.get("flags"))), ctx
    blobs = info.get("blobs")
    assert isinstance(blobs, list), ctx
    assert [b.get("blob_id") for b in blobs] == img.blob_ids, ctx
    for b in blobs:
        missing = CHECK_BLOB_KEYS - b.keys()
        assert not missing, f"blob entry lacks {sorted(missing)}; {ctx}"
        assert b["compressor"] == img.compressor, ctx
        assert b["digester"] == img.digester, ctx
    assert info["inodes"] == img.info["inodes"], f"inode count differs from create's; {ctx}"
    return info


def unpack(img: Image, out_tar: Path, *, blob_file: Path | None = None,
           timeout=DEFAULT_TIMEOUT) -> Result:
    args = ["unpack", img.bootstrap, "--output", out_tar]
    if blob_file is not None:
        args += ["--blob", blob_file]
    else:
        args += ["--blob-dir", img.blob_dir]
    res = run_nydus(args, timeout=timeout, expect_rc=0)
    assert out_tar.is_file(), f"unpack wrote no tar\n{res.describe()}"
    return res


# --------------------------------------------------------------------------
# EROFS / kernel helpers
# --------------------------------------------------------------------------

@dataclass
class ErofsSuper:
    magic: int
    blkszbits: int
    root_nid: int
    inos: int
    blocks: int
    meta_blkaddr: int
    xattr_blkaddr: int
    feature_compat: int
    feature_incompat: int
    extra_devices: int
    devt_slotoff: int


def read_erofs_super(path) -> ErofsSuper:
    with open(path, "rb") as f:
        f.seek(EROFS_SB_OFFSET)
        raw = f.read(128)
    if len(raw) < 128:
        raise AssertionError(f"{path}: too short for an EROFS superblock ({len(raw)} bytes)")
    (magic, _csum, compat, blkszbits, _extslots, root_nid, inos, _bt, _btn, blocks,
     meta_blkaddr, xattr_blkaddr) = struct.unpack_from("<IIIBBHQQIIII", raw, 0)
    feature_incompat, _u1, extra_devices, devt_slotoff = struct.unpack_from("<IHHH", raw, 80)
    return ErofsSuper(magic, blkszbits, root_nid, inos, blocks, meta_blkaddr, xattr_blkaddr,
                      compat, feature_incompat, extra_devices, devt_slotoff)


@dataclass
class ErofsDevice:
    tag: str
    blocks: int
    mapped_blkaddr: int


def read_erofs_devices(path, sb: ErofsSuper) -> list:
    """The device table (struct erofs_deviceslot, 128 bytes each)."""
    out = []
    with open(path, "rb") as f:
        f.seek(sb.devt_slotoff * 128)
        for _ in range(sb.extra_devices):
            raw = f.read(128)
            tag = raw[:64].split(b"\0", 1)[0].decode("ascii", "replace")
            blocks, mapped = struct.unpack_from("<II", raw, 64)
            out.append(ErofsDevice(tag, blocks, mapped))
    return out


def have_loop() -> bool:
    return os.path.exists("/dev/loop-control")


def _loops_for(path) -> list:
    p = subprocess.run(["losetup", "-j", os.fspath(path)], capture_output=True, text=True)
    return [ln.split(":", 1)[0] for ln in p.stdout.splitlines() if ln.strip()]


@contextlib.contextmanager
def erofs_mount(disk, mnt):
    """mount -t erofs -o loop,ro DISK MNT; always unmounted and detached."""
    mnt = Path(mnt)
    mnt.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "erofs", "-o", "loop,ro", os.fspath(disk), os.fspath(mnt)],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        tail = "\n".join(ln for ln in dmesg[-30:] if "erofs" in ln.lower())
        for dev in _loops_for(disk):
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        pytest.fail(f"kernel refused to mount {disk}: {p.stderr.strip()}\n"
                    f"dmesg (erofs lines):\n{tail}", pytrace=False)
    try:
        yield mnt
    finally:
        for attempt in range(10):
            u = subprocess.run(["umount", os.fspath(mnt)], capture_output=True, text=True)
            if u.returncode == 0 or not os.path.ismount(mnt):
                break
            time.sleep(0.3)
        else:
            subprocess.run(["umount", "-l", os.fspath(mnt)], capture_output=True)
        for dev in _loops_for(disk):   # autoclear normally handles this
            subprocess.run(["losetup", "-d", dev], capture_output=True)


def dmesg_erofs_tail(n: int = 20) -> str:
    p = subprocess.run(["dmesg"], capture_output=True, text=True)
    return "\n".join([ln for ln in p.stdout.splitlines() if "erofs" in ln.lower()][-n:])
