"""Bad input: damaged bootstraps and blobs, bad source trees, bad output
locations.  Every failure must be clean: non-zero exit, an `error:` line on
stderr naming the path (or blob) and the cause, no panic, no hang, and no
partial output files or temp files left behind.

Unreadable source file: root bypasses permission bits (chmod 000 does not
stop it) and LD_PRELOAD tricks are off-limits, so the test bind-mounts a
sysfs attribute whose read() always fails with EINVAL
(/sys/class/net/lo/speed) over a file of the source tree.  It is skipped
(with the reason) if that file is readable or the bind mount fails.  An
untraversable directory cannot be made as root without such tricks, so it
is not tested.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import util
from util import COMPRESSORS

FUZZ_CASES = int(os.environ.get("NYDUS_E2E_FUZZ", "2000"))
FUZZ_BATCHES = 8
FUZZ_TIMEOUT = 30          # seconds per command on a ~30 KiB bootstrap
FUZZ_MEM_GIB = 8           # RLIMIT_AS: an allocation bomb aborts instead of OOMing the box


@pytest.fixture(scope="module")
def mini_img(nydus, src_mini, tmp_path_factory) -> util.Image:
    return util.create(src_mini.path, tmp_path_factory.mktemp("mini-img"), compressor="zstd",
                       digester="blake3", chunk_size=0x1000)


def _reader_commands(boot: Path, blob_dir: Path, out: Path) -> dict:
    """Every subcommand that reads a bootstrap -> (argv, outputs it may create)."""
    return {
        "check": (["check", boot], []),
        "check -D": (["check", boot, "-D", blob_dir], []),
        "stat": (["stat", "-B", boot], []),
        "inspect": (["inspect", boot, "-R", "stats"], []),
        "unpack": (["unpack", boot, "--blob-dir", blob_dir, "--output", out / "out.tar"],
                   [out / "out.tar"]),
        "export": (["export", "--block", "-B", boot, "-D", blob_dir, "-O", out / "disk.img"],
                   [out / "disk.img"]),
    }


def _expect_all_fail_cleanly(boot: Path, blob_dir: Path, out: Path, *, cause=None,
                             commands=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = []
    for name, (argv, outputs) in _reader_commands(boot, blob_dir, out).items():
        if commands and name not in commands:
            continue
        before = util.listing(out)
        res = util.run_nydus(argv, timeout=60)
        problems = util.clean_error_problems(res, mentions=[boot], cause=cause, absent=outputs,
                                             dirs_before={out: before})
        if problems:
            report.append(f"[{name}] " + "; ".join(problems) + "\n" + res.describe(1500))
    assert not report, "\n\n".join(report)


# --------------------------------------------------------------------------
# damaged bootstraps
# --------------------------------------------------------------------------

TRUNCATIONS = ["0", "1", "512", "1024", "1100", "1152", "4095", "4096", "half", "-4096", "-1"]


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_truncated_bootstrap(nydus, tmp_path, mini_img, where):
    data = mini_img.bootstrap.read_bytes()
    n = len(data) // 2 if where == "half" else int(where)
    if n < 0:
        n += len(data)
    if not 0 <= n < len(data):
        pytest.skip(f"bootstrap is only {len(data)} bytes")
    bad = tmp_path / f"truncated-{n}.boot"
    bad.write_bytes(data[:n])
    _expect_all_fail_cleanly(bad, mini_img.blob_dir, tmp_path / "out")


@pytest.mark.parametrize("magic", [b"\0\0\0\0", b"RAFS", b"\xe0\xf5\xe1\xe2", b"\xe2\xe1\xf5\xe1"],
                         ids=["zero", "RAFS", "byteswapped", "one-bit-off"])
def test_wrong_magic(nydus, tmp_path, mini_img, magic):
    data = bytearray(mini_img.bootstrap.read_bytes())
    data[util.EROFS_SB_OFFSET:util.EROFS_SB_OFFSET + 4] = magic
    bad = tmp_path / "wrong-magic.boot"
    bad.write_bytes(bytes(data))
    _expect_all_fail_cleanly(bad, mini_img.blob_dir, tmp_path / "out",
                             cause=r"magic|superblock|not an? |invalid|unsupported|bootstrap")


@pytest.mark.parametrize("kind", ["empty", "random", "zeros", "directory", "missing"])
def test_not_a_bootstrap(nydus, tmp_path, mini_img, kind):
    bad = tmp_path / f"not-a-bootstrap-{kind}"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "random":
        bad.write_bytes(random.Random(1).randbytes(65536))
    elif kind == "zeros":
        bad.write_bytes(bytes(65536))
    elif kind == "directory":
        bad.mkdir()
    _expect_all_fail_cleanly(bad, mini_img.blob_dir, tmp_path / "out")


def _interesting_offsets(data: bytes) -> list:
    """Offsets of non-zero bytes (and a few bytes around them), from the
    superblock on: most of a small bootstrap is zero padding, where flips are
    mostly harmless."""
    out = set()
    for i in range(util.EROFS_SB_OFFSET, len(data)):
        if data[i]:
            out.update(range(max(util.EROFS_SB_OFFSET, i - 4), min(len(data), i + 5)))
    return sorted(out) or list(range(len(data)))


def _mutate(data: bytes, seed: int, hot: list) -> tuple[bytes, str]:
    rng = random.Random(seed)
    buf = bytearray(data)
    kind = seed % 5
    if kind == 0:                                   # one bit anywhere
        pos = rng.randrange(len(buf))
        buf[pos] ^= 1 << rng.randrange(8)
        desc = f"bit flip at {pos:#x}"
    elif kind == 1:                                 # a few bits in live metadata
        poss = [rng.choice(hot) for _ in range(rng.randint(1, 6))]
        for pos in poss:
            buf[pos] ^= 1 << rng.randrange(8)
        desc = "bit flips at " + ",".join(f"{p:#x}" for p in poss)
    elif kind == 2:                                 # a 32-bit "size/count/offset bomb"
        pos = min(rng.choice(hot) & ~3, len(buf) - 4)
        val = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00010000, 0x0FFFFFFF,
                          0xFFFF, rng.getrandbits(32)])
        buf[pos:pos + 4] = val.to_bytes(4, "little")
        desc = f"u32 {val:#x} at {pos:#x}"
    elif kind == 3:                                 # zero a word (counts, sizes -> 0)
        pos = min(rng.choice(hot) & ~1, len(buf) - 2)
        width = rng.choice([2, 4, 8])
        buf[pos:pos + width] = bytes(width)
        desc = f"zeroed {width} bytes at {pos:#x}"
    else:                                           # the superblock area, heavily
        end = min(len(buf), util.EROFS_SB_OFFSET + 256)
        poss = [rng.randrange(util.EROFS_SB_OFFSET, end) for _ in range(rng.randint(1, 3))]
        for pos in poss:
            buf[pos] = rng.randrange(256)
        desc = "superblock bytes at " + ",".join(f"{p:#x}" for p in poss)
    return bytes(buf), desc


@pytest.mark.parametrize("batch", range(FUZZ_BATCHES))
def test_bitflip_bootstrap_never_crashes(nydus, tmp_path, mini_img, batch):
    """Randomly damaged bootstraps: `check -D`, `unpack` and `export` may
    succeed or fail, but never panic, crash, hang, fail without an `error:`
    line, or leave a partial output behind.  (The damaged images are never
    mounted: that would fuzz the kernel.)"""
    data = mini_img.bootstrap.read_bytes()
    hot = _interesting_offsets(data)
    seeds = list(range(batch, FUZZ_CASES, FUZZ_BATCHES))

    def one(seed: int) -> list:
        mutated, desc = _mutate(data, seed, hot)
        boot = tmp_path / f"fuzz-{seed}.boot"
        boot.write_bytes(mutated)
        out = tmp_path / f"fuzz-{seed}.tar"
        disk = tmp_path / f"fuzz-{seed}.disk"
        found = []
        for argv, outputs in (
                (["check", boot, "-D", mini_img.blob_dir], []),
                (["unpack", boot, "--blob-dir", mini_img.blob_dir, "--output", out], [out]),
                (["export", "--block", "-B", boot, "-D", mini_img.blob_dir, "-O", disk],
                 [disk])):
            res = util.run_nydus(argv, timeout=FUZZ_TIMEOUT, mem_limit_gib=FUZZ_MEM_GIB,
                                 raise_on_crash=False)
            if res.rc == 0:
                problems = []
                if outputs and not outputs[0].is_file():
                    problems.append(f"{argv[0]} succeeded but wrote no output")
                elif outputs == [out]:
                    try:
                        with tarfile.open(out) as tf:
                            tf.getmembers()
                    except Exception as e:  # noqa: BLE001
                        problems.append(f"unpack succeeded but the tar is unreadable: {e}")
            else:
                problems = util.clean_error_problems(res, absent=outputs)
            if problems:
                found.append(f"seed {seed} ({desc}) [{argv[0]}]: " + "; ".join(problems)
                             + "\n" + res.describe(800))
        out.unlink(missing_ok=True)
        disk.unlink(missing_ok=True)
        if not found:
            boot.unlink()
        return found

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = [f for r in ex.map(one, seeds) for f in r]
    assert not results, f"{len(results)} bad outcome(s) out of {3 * len(seeds)} runs:\n\n" + \
        "\n\n".join(results[:15])


# --------------------------------------------------------------------------
# damaged / missing blobs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_corrupted_blob_chunk(nydus, tmp_path, src_mini, compressor):
    img = util.create(src_mini.path, tmp_path / "img", compressor=compressor,
                      digester="sha256", chunk_size=0x1000)
    blob = img.blob_path(0)
    blob_id = img.blob_ids[0]
    data = bytearray(blob.read_bytes())
    # data/multi is random, so its chunks are stored verbatim even when
    # "compressed" (raw zstd block / lz4 literals / stored uncompressed).
    content = (src_mini.path / "data/multi").read_bytes()
    needle = content[0x1800:0x1840]          # middle of the second 4 KiB chunk
    pos = data.find(needle)
    assert pos >= 0 and data.find(needle, pos + 1) < 0, \
        "could not locate the chunk data of data/multi in the blob"
    data[pos + 10] ^= 0x01
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()

    # Metadata-only check does not read blobs: still fine.
    util.run_nydus(["check", img.bootstrap], expect_rc=0)

    cause = r"chunk|digest|checksum|corrupt|mismatch|decompress"
    for argv, outputs in (
            (["check", img.bootstrap, "-D", img.blob_dir], []),
            (["unpack", img.bootstrap, "--blob-dir", img.blob_dir, "--output", out / "o.tar"],
             [out / "o.tar"]),
            (["unpack", img.bootstrap, "--blob", blob, "--output", out / "o2.tar"],
             [out / "o2.tar"]),
            (["export", "--block", "-B", img.bootstrap, "-D", img.blob_dir, "-O",
              out / "disk"], [out / "disk"])):
        res = util.run_nydus(argv)
        util.assert_clean_error(res, mentions=[blob_id], cause=cause, absent=outputs,
                                dirs_before={out: set()})


def test_missing_blob(nydus, tmp_path, mini_img):
    empty = tmp_path / "no-blobs"
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    blob_id = mini_img.blob_ids[0]
    cases = [
        (["check", mini_img.bootstrap, "-D", empty], [blob_id], []),
        (["unpack", mini_img.bootstrap, "--blob-dir", empty, "--output", out / "a.tar"],
         [blob_id], [out / "a.tar"]),
        (["unpack", mini_img.bootstrap, "--blob", tmp_path / "nonexistent.blob", "--output",
          out / "b.tar"], ["nonexistent.blob"], [out / "b.tar"]),
        (["export", "--block", "-B", mini_img.bootstrap, "-D", empty, "-O", out / "disk"],
         [blob_id], [out / "disk"]),
    ]
    for argv, mentions, outputs in cases:
        res = util.run_nydus(argv)
        util.assert_clean_error(res, mentions=mentions, absent=outputs, dirs_before={out: set()})


@pytest.mark.parametrize("how", ["half", "minus-one", "empty", "other-image"])
def test_damaged_blob_file(nydus, tmp_path, mini_img, src_small, how):
    blob_id = mini_img.blob_ids[0]
    bdir = tmp_path / "blobs"
    bdir.mkdir()
    data = mini_img.blob_path(0).read_bytes()
    if how == "half":
        data = data[:len(data) // 2]
    elif how == "minus-one":
        data = data[:-1]
    elif how == "empty":
        data = b""
    else:   # a real blob of another image, under this image's blob id
        other = util.create(src_small.path, tmp_path / "other", chunk_size=0x1000,
                            compressor="zstd", digester="blake3")
        data = other.blob_path(0).read_bytes()
    (bdir / blob_id).write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    for argv, outputs in (
            (["check", mini_img.bootstrap, "-D", bdir], []),
            (["unpack", mini_img.bootstrap, "--blob-dir", bdir, "--output", out / "o.tar"],
             [out / "o.tar"])):
        res = util.run_nydus(argv)
        util.assert_clean_error(res, mentions=[blob_id], absent=outputs,
                                dirs_before={out: set()})


# --------------------------------------------------------------------------
# create: bad sources and output locations
# --------------------------------------------------------------------------

def _create_argv(src, out: Path, boot_name="boot", blob_dir=None, blob_file=None):
    argv = ["create", src, "-B", out / boot_name, "-J", out / "create.json",
            "--chunk-size", "0x1000"]
    if blob_file is not None:
        argv += ["-b", blob_file]
    else:
        argv += ["-D", blob_dir if blob_dir is not None else out / "blobs"]
    return argv


def _expect_create_fails(argv, out: Path, *, mentions, extra_absent=(), cause=None,
                         timeout=120):
    watched = {d: util.listing(d) for d in (out, out / "blobs") if d.exists()}
    res = util.run_nydus(argv, timeout=timeout)
    util.assert_clean_error(res, mentions=mentions, cause=cause,
                            absent=[out / "boot", out / "create.json", *extra_absent],
                            dirs_before=watched)
    return res


def _out(tmp_path) -> Path:
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    return out


def test_create_source_missing(nydus, tmp_path):
    out = _out(tmp_path)
    missing = tmp_path / "no-such-source"
    _expect_create_fails(_create_argv(missing, out), out, mentions=[missing],
                         cause=r"no such file|not found|does not exist")


def test_create_source_is_a_file(nydus, tmp_path):
    out = _out(tmp_path)
    f = tmp_path / "plain-file-source"
    f.write_bytes(b"not a directory")
    _expect_create_fails(_create_argv(f, out), out, mentions=[f], cause=r"director")


def test_create_bootstrap_dir_missing(nydus, tmp_path, src_mini):
    out = _out(tmp_path)
    boot = out / "missing-dir" / "the-bootstrap-file"
    argv = _create_argv(src_mini.path, out, boot_name="missing-dir/the-bootstrap-file")
    # Naming the missing directory (rather than the file) is fine.
    _expect_create_fails(argv, out, mentions=[boot.parent], extra_absent=[boot.parent])


def test_create_blob_file_dir_missing(nydus, tmp_path, src_mini):
    out = _out(tmp_path)
    blob = tmp_path / "missing-dir" / "blob.data"
    _expect_create_fails(_create_argv(src_mini.path, out, blob_file=blob), out,
                         mentions=[blob.parent], extra_absent=[blob.parent])


def test_create_blob_dir_missing(nydus, tmp_path, src_mini):
    """-D DIR that does not exist: creating it is acceptable, a clean error
    is too (the contract does not say)."""
    out = _out(tmp_path)
    bdir = tmp_path / "missing-blob-dir"
    res = util.run_nydus(_create_argv(src_mini.path, out, blob_dir=bdir))
    if res.rc == 0:
        assert (out / "boot").is_file() and bdir.is_dir() and len(util.listing(bdir)) == 1, \
            res.describe()
    else:
        util.assert_clean_error(res, mentions=[bdir], absent=[out / "boot", bdir],
                                dirs_before={out: {"blobs"}})


def test_create_unreadable_file(nydus, tmp_path):
    failing = "/sys/class/net/lo/speed"
    try:
        with open(failing, "rb") as f:
            f.read()
        pytest.skip(f"{failing} is readable here; no way to make an unreadable file as root")
    except FileNotFoundError:
        pytest.skip(f"{failing} missing")
    except OSError:
        pass
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "ok").write_bytes(os.urandom(100000))
    victim = src / "sub" / "unreadable-file"
    victim.write_bytes(b"placeholder")
    m = subprocess.run(["mount", "--bind", failing, str(victim)], capture_output=True, text=True)
    if m.returncode != 0:
        pytest.skip(f"bind mount of {failing} failed: {m.stderr.strip()}")
    try:
        out = _out(tmp_path)
        _expect_create_fails(_create_argv(src, out), out, mentions=[victim])
    finally:
        subprocess.run(["umount", str(victim)], capture_output=True)


def _churn_tree(root: Path, seed: int, files=1200, size=24 * 1024) -> list:
    rng = random.Random(seed)
    paths = []
    for i in range(files):
        p = root / f"d{i % 24:02d}" / f"f{i:05d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(size))
        paths.append(p)
    return paths


@pytest.mark.parametrize("action", ["delete-files", "delete-dirs", "truncate", "append"])
def test_create_with_tree_changing_underneath(nydus, tmp_path, action):
    """A background thread mutates the source while `create` runs.  Success
    (with a self-consistent image) or a clean error are both fine; a crash,
    a hang or partial outputs are not."""
    outcomes = []
    for rnd, delay in enumerate([0.0, 0.02, 0.1, 0.3]):
        src = tmp_path / f"src{rnd}"
        paths = _churn_tree(src, seed=rnd)
        out = tmp_path / f"out{rnd}"
        (out / "blobs").mkdir(parents=True)
        rng = random.Random(rnd)
        rng.shuffle(paths)
        stop = threading.Event()

        def mutate():
            time.sleep(delay)
            if action == "delete-dirs":
                for d in sorted({p.parent for p in paths}):
                    if stop.is_set():
                        return
                    shutil.rmtree(d, ignore_errors=True)
                    time.sleep(0.005)
                return
            for p in paths:
                if stop.is_set():
                    return
                try:
                    if action == "delete-files":
                        p.unlink()
                    elif action == "truncate":
                        os.truncate(p, rng.randrange(0, 24 * 1024))
                    else:
                        with open(p, "ab") as f:
                            f.write(b"more data" * 1000)
                except FileNotFoundError:
                    pass

        t = threading.Thread(target=mutate)
        t.start()
        try:
            res = util.run_nydus(_create_argv(src, out), timeout=120)
        finally:
            stop.set()
            t.join()
        if res.rc == 0:
            # Whatever was captured must be internally consistent.
            util.run_nydus(["check", out / "boot", "-D", out / "blobs"], expect_rc=0)
            util.run_nydus(["unpack", out / "boot", "--blob-dir", out / "blobs", "--output",
                            out / "u.tar"], expect_rc=0)
            outcomes.append(f"round {rnd}: success")
        else:
            util.assert_clean_error(res, absent=[out / "boot", out / "create.json"],
                                    dirs_before={out / "blobs": set()})
            outcomes.append(f"round {rnd}: clean error: {res.error_lines[0][:150]}")
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    print("\n".join(outcomes))


# --------------------------------------------------------------------------
# bad output locations for unpack / export
# --------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["missing-dir", "is-a-directory"])
@pytest.mark.parametrize("cmd", ["unpack", "export"])
def test_output_path_unwritable(nydus, tmp_path, mini_img, cmd, where):
    if where == "missing-dir":
        dest = tmp_path / "missing-dir" / "output.file"
        mention = dest.parent
    else:
        dest = tmp_path / "output.file"
        dest.mkdir()
        mention = dest
    if cmd == "unpack":
        argv = ["unpack", mini_img.bootstrap, "--blob-dir", mini_img.blob_dir, "--output", dest]
    else:
        argv = ["export", "--block", "-B", mini_img.bootstrap, "-D", mini_img.blob_dir,
                "-O", dest]
    before = util.listing(tmp_path)
    res = util.run_nydus(argv)
    util.assert_clean_error(res, mentions=[mention], dirs_before={tmp_path: before})
    if where == "is-a-directory":
        assert util.listing(dest) == set(), "files left inside the directory"


def test_create_path_longer_than_path_max(nydus, tmp_path):
    """A tree deeper than PATH_MAX (built with *at() calls): success or a
    clean error are both fine, a crash is not."""
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(24):                      # 24 * 205 bytes > 4096
            name = f"d{i:02d}_" + "x" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        f = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(f, b"deep data")
        os.close(f)
    finally:
        os.close(fd)
    out = _out(tmp_path)
    res = util.run_nydus(_create_argv(src, out))
    if res.rc == 0:
        util.run_nydus(["check", out / "boot", "-D", out / "blobs"], expect_rc=0)
    else:
        util.assert_clean_error(res, absent=[out / "boot", out / "create.json"],
                                dirs_before={out / "blobs": set()})


def test_create_bootstrap_path_is_a_directory(nydus, tmp_path, src_mini):
    out = _out(tmp_path)
    (out / "boot").mkdir()
    res = util.run_nydus(_create_argv(src_mini.path, out))
    util.assert_clean_error(res, mentions=[out / "boot"], dirs_before={
        out: {"blobs", "boot"}, out / "blobs": set(), out / "boot": set()})


def test_parallel_builds_share_a_blob_dir(nydus, tmp_path, src_small):
    """Two concurrent builds of the same tree into one -D directory: both
    succeed, the blob is whole (its name is its sha256) and no temp files
    remain."""
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    results = {}

    def build(i):
        results[i] = util.run_nydus(
            ["create", src_small.path, "-B", tmp_path / f"boot{i}", "-D", blobs,
             "--chunk-size", "0x1000", "-J", tmp_path / f"c{i}.json"], raise_on_crash=False)

    threads = [threading.Thread(target=build, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, res in results.items():
        assert res.rc == 0 and not util.crash_reason(res), res.describe()
    names = util.listing(blobs)
    assert len(names) == 1, f"blob dir holds {sorted(names)}"
    (blob_id,) = names
    assert util.sha256_file(blobs / blob_id) == blob_id
    for i in range(3):
        util.run_nydus(["check", tmp_path / f"boot{i}", "-D", blobs], expect_rc=0)


def test_error_messages_do_not_repeat_the_cause(nydus, tmp_path, mini_img):
    """The one-line error should say each thing once ("...: No such file or
    directory (os error 2)" and not that twice)."""
    cases = [
        ["create", tmp_path / "missing-src", "-B", tmp_path / "b", "-D", tmp_path],
        ["unpack", tmp_path / "missing.boot", "--blob-dir", tmp_path, "--output",
         tmp_path / "o.tar"],
        ["unpack", mini_img.bootstrap, "--blob-dir", mini_img.blob_dir, "--output",
         tmp_path / "missing-dir" / "o.tar"],
        ["check", tmp_path / "missing.boot"],
    ]
    report = []
    for argv in cases:
        res = util.run_nydus(argv)
        util.assert_clean_error(res)
        line = res.error_lines[0]
        for cause in set(re.findall(r"[A-Za-z ,']+ \(os error \d+\)", line)):
            if line.count(cause.strip()) > 1:
                report.append(f"{line}\n    repeats {cause.strip()!r}")
        if ".nydus-tmp" in line:
            report.append(f"{line}\n    exposes an internal temp file name")
    assert not report, "\n".join(report)


@pytest.mark.parametrize("where", ["missing-dir", "is-a-directory"])
def test_create_report_path_unwritable(nydus, tmp_path, src_mini, where):
    """-J that cannot be written: the run fails, so the bootstrap and the
    blob must not be left behind either."""
    out = _out(tmp_path)
    if where == "missing-dir":
        report = tmp_path / "missing-dir" / "report.json"
    else:
        report = out / "report.json"
        report.mkdir()
    argv = ["create", src_mini.path, "-B", out / "boot", "-D", out / "blobs", "-J", report]
    before = util.listing(out)
    res = util.run_nydus(argv)
    util.assert_clean_error(res, mentions=[report if where != "missing-dir" else report.parent],
                            absent=[out / "boot"],
                            dirs_before={out: before, out / "blobs": set()})
