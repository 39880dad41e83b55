#!/usr/bin/env python3
"""Benchmark runner: reading an image through nydusd (FUSE) vs the kernel.

Uses the same tree as bench/run.py (the cached debootstrap rootfs plus the
deterministic 1 GiB random file), builds an lz4_block nydus image of it and
exports that image as a raw EROFS disk, then measures, in one run, for

    native   the source directory itself
    erofs    the exported disk, mounted by the kernel (mount -t erofs -o loop,ro)
    nydusd   the image served by target/release/nydusd over FUSE
             (localfs backend, blobcache, fresh empty cache and a fresh
             daemon for every cold run)

these operations, cold (after sync + drop_caches) and warm (repeated after
the cold run; for nydusd once the daemon has been idle for 1.5 s, so the
background work the cold run started, page-cache pushes and passthrough
copies, is done). With --passthrough, nydusd runs with `"passthrough": true`.
With --io-uring the kernel's FUSE over io_uring switch (the fuse module's
enable_uring) is on for the run and nydusd serves requests over io_uring;
without it the switch is off for the run (both restore it afterwards).
With --cold-runs N the three kinds take turns N times (native, erofs, nydusd,
native, ...) and the median cold run is reported, so a change of the shared
disk's speed during the run weighs on all of them:

    find     find M | wc -l
    stat     os.lstat of every entry, from a precomputed path list (paths
             relative to the root's parent, so mountpoint depth is no factor)
    readall  tar -C M -cf - . | wc -c
    dd       dd if=M/bench-random-1g.bin of=/dev/null bs=1M
    fio      4 KiB random reads at queue depth 1 (psync) on the 1 GiB file

plus the daemon's start-up time (exec to mount ready) and peak RSS, and a
correctness check (tests/e2e/treecmp.py: source vs each mount).  Prints a table
with ratios to native and PASS/FAIL lines for the targets; results go to
WORK/mount-results.json.

Python 3 standard library only; needs root.  See bench/README.md.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as common  # noqa: E402  (the build benchmark's helpers; its main() is not run)
from run import MIB, RANDOM_NAME, RANDOM_SIZE, die, log, warn  # noqa: E402

REPO = common.REPO
DEFAULT_WORK = common.DEFAULT_WORK
DEFAULT_IMAGE_BIN = common.DEFAULT_BIN
DEFAULT_NYDUSD_BIN = os.path.join(REPO, "target", "release", "nydusd")
TREECMP = os.path.join(REPO, "tests", "e2e", "treecmp.py")

KINDS = ("native", "erofs", "nydusd")
OPS = ("find", "stat", "readall", "dd", "fio")
FSTYPE = "fuse.rafs"

READY_TIMEOUT = 60.0     # nydusd start -> mount ready
STOP_TIMEOUT = 10.0      # SIGTERM -> exit, then SIGKILL
OP_TIMEOUT = 900.0       # any one measured command
TREECMP_TIMEOUT = 1800.0

# op -> (label, unit, higher_is_better)
OP_INFO = {
    "find": ("find M | wc -l", "s", False),
    "stat": ("lstat every entry", "s", False),
    "readall": ("tar -cf - . | wc -c", "s", False),
    "dd": ("dd 1 GiB bs=1M", "MiB/s", True),
    "fio": ("fio 4k randread QD1", "IOPS", True),
}

# (label, op, phase, limit, kind of check)
#   "time": nydusd time / native time <= limit
#   "tput": nydusd throughput / native throughput >= limit
TARGETS = [
    ("find cold <= 1.2x native", "find", "cold", 1.2, "time"),
    ("stat walk warm <= 1.2x native", "stat", "warm", 1.2, "time"),
    ("read-all warm <= 1.2x native", "readall", "warm", 1.2, "time"),
    ("read-all cold <= 1.0x native", "readall", "cold", 1.0, "time"),
    ("1 GiB read warm >= 0.8x native MiB/s", "dd", "warm", 0.8, "tput"),
    ("1 GiB read cold >= 0.6x native MiB/s", "dd", "cold", 0.6, "tput"),
]
RSS_LIMIT_MIB = 40.0

# The stat walk runs in a child python so a hung FUSE request cannot wedge the
# runner; it times only the lstat loop (not interpreter start-up or list loading).
STAT_WALK = r"""
import os, sys, time
rel = [r for r in open(sys.argv[2], 'rb').read().split(b'\0') if r]
# Walk from the root's parent: every kind's paths have the same number of
# components, however deep its mountpoint is.
parent, root = os.path.split(os.path.abspath(os.fsencode(sys.argv[1])))
os.chdir(parent)
paths = [root if r == b'.' else root + b'/' + r for r in rel]
err = 0
t0 = time.perf_counter()
for p in paths:
    try:
        os.lstat(p)
    except OSError:
        err += 1
t = time.perf_counter() - t0
print('%.6f %d %d' % (t, len(paths), err))
"""

PROBLEM_RE = re.compile(r"^\S+\s+(WARN|ERROR)\b|^error:|panicked at")

LOGPATH = None  # WORK/mount-commands.log, set in main()


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def logcmd(text):
    with open(LOGPATH, "a") as f:
        f.write(text + "\n")


def run_cmd(argv, timeout=OP_TIMEOUT, capture=True):
    """Run argv (own process group, killed whole on timeout).

    Returns (rc, wall seconds, stdout text, stderr text); stderr is also appended
    to the commands log.  rc is None on timeout.
    """
    logcmd("$ " + " ".join(shlex.quote(a) for a in argv))
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out, err = b"", b"(stuck after SIGKILL)"
        rc = None
    wall = time.perf_counter() - t0
    out = (out or b"").decode(errors="replace")
    err = (err or b"").decode(errors="replace")
    if err:
        with open(LOGPATH, "a") as f:
            f.write(err if err.endswith("\n") else err + "\n")
    return rc, wall, out, err


def sh(cmd, timeout=OP_TIMEOUT):
    return run_cmd(["bash", "-c", "set -o pipefail; " + cmd], timeout=timeout)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"
SETTLE_QUIET = 1.5   # s without CPU use: passthrough copies start after 1 s of quiet
SETTLE_MAX = 60.0


def settle(d):
    """Wait until daemon `d` has used no CPU for SETTLE_QUIET seconds (at most
    SETTLE_MAX); returns the seconds waited."""
    t0 = time.monotonic()
    last, since = d.cpu(), time.monotonic()
    while time.monotonic() - t0 < SETTLE_MAX:
        time.sleep(0.1)
        now = d.cpu()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= SETTLE_QUIET:
            break
    return time.monotonic() - t0


def median(xs):
    xs = sorted(xs)
    return xs[(len(xs) - 1) // 2] if xs else None


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt(v, spec, na="-"):
    return na if v is None else format(v, spec)


def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_at(mp):
    """[(fstype, source)] of the mounts on mp, oldest first."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        try:
            sep = parts.index("-")
        except ValueError:
            continue
        if _unescape(parts[4]) == mp:
            out.append((parts[sep + 1], parts[sep + 2]))
    return out


def umount_all(mp, lazy=True):
    for _ in range(8):
        if not mounts_at(mp):
            return True
        subprocess.run(["umount"] + (["-l"] if lazy else []) + [mp],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return not mounts_at(mp)


def proc_status(pid):
    """{'VmHWM': kib, 'VmRSS': kib, 'Threads': n} of a live process."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "Threads"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def proc_cpu(pid):
    """user+system CPU seconds of a live process (all its threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------
# nydusd
# --------------------------------------------------------------------------

class Nydusd:
    """One nydusd process serving the image on a mountpoint."""

    def __init__(self, binary, config, bootstrap, mountpoint, logfile, extra=()):
        self.binary = binary
        self.extra = list(extra)
        self.config = config
        self.bootstrap = bootstrap
        self.mountpoint = mountpoint
        self.logfile = logfile
        self.proc = None
        self.ready_s = None
        self.rc = None

    @property
    def argv(self):
        return [self.binary, "--config", self.config, "--mountpoint", self.mountpoint,
                "--bootstrap", self.bootstrap, "--log-file", self.logfile] + self.extra

    def ready(self):
        if not any(t == FSTYPE for t, _ in mounts_at(self.mountpoint)):
            return False
        try:
            return os.stat(self.mountpoint).st_dev != \
                os.stat(os.path.dirname(self.mountpoint)).st_dev
        except OSError:
            return False

    def start(self):
        """Exec the daemon and wait for its mount; sets ready_s (exec -> ready)."""
        if mounts_at(self.mountpoint):
            umount_all(self.mountpoint)
        logcmd("$ " + " ".join(shlex.quote(a) for a in self.argv) + " &")
        errf = open(self.logfile + ".stderr", "ab")
        t0 = time.perf_counter()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=errf,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            errf.close()
        deadline = t0 + READY_TIMEOUT
        while True:
            if self.ready():
                self.ready_s = time.perf_counter() - t0
                return self.ready_s
            if self.proc.poll() is not None:
                raise RuntimeError("nydusd exited with status %d before mounting %s; log: %s%s"
                                   % (self.proc.returncode, self.mountpoint, self.logfile,
                                      self.log_tail()))
            if time.perf_counter() > deadline:
                raise RuntimeError("nydusd did not mount %s within %.0f s; log: %s%s"
                                   % (self.mountpoint, READY_TIMEOUT, self.logfile,
                                      self.log_tail()))
            time.sleep(0.001)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        return proc_status(self.proc.pid) if self.alive() else {}

    def cpu(self):
        return proc_cpu(self.proc.pid) if self.alive() else None

    def log_text(self):
        text = ""
        for p in (self.logfile, self.logfile + ".stderr"):
            try:
                with open(p, errors="replace") as f:
                    text += f.read()
            except OSError:
                pass
        return text

    def log_tail(self, n=5):
        lines = self.log_text().strip().splitlines()
        return ("\n    " + "\n    ".join(lines[-n:])) if lines else ""

    def problems(self):
        return [l for l in self.log_text().splitlines() if PROBLEM_RE.search(l)]

    def stop(self):
        """SIGTERM (SIGKILL after STOP_TIMEOUT); then make sure nothing is left mounted."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, signal.SIGTERM)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    warn("nydusd %d did not exit within %.0f s of SIGTERM; killing it"
                         % (self.proc.pid, STOP_TIMEOUT))
                    try:
                        os.kill(self.proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    self.proc.wait()
            self.rc = self.proc.returncode
        try:  # keep the logs dir tidy: the daemon logs to --log-file
            if os.path.getsize(self.logfile + ".stderr") == 0:
                os.unlink(self.logfile + ".stderr")
        except OSError:
            pass
        if mounts_at(self.mountpoint):
            warn("%s still mounted after nydusd exited; unmounting lazily" % self.mountpoint)
            umount_all(self.mountpoint)


# --------------------------------------------------------------------------
# the operations
# --------------------------------------------------------------------------

def op_find(m, ctx):
    rc, wall, out, err = sh("find %s | wc -l" % shlex.quote(m))
    if rc != 0:
        return {"ok": False, "error": "rc %s: %s" % (rc, err.strip()[-300:])}
    n = int(out.strip() or 0)
    res = {"ok": True, "value": wall, "wall_s": wall, "entries": n}
    if n != ctx["entries"]:
        res["warning"] = "find listed %d entries, the source has %d" % (n, ctx["entries"])
    return res


def op_stat(m, ctx):
    rc, wall, out, err = run_cmd([sys.executable, "-c", STAT_WALK, m, ctx["pathlist"]])
    if rc != 0:
        return {"ok": False, "error": "rc %s: %s" % (rc, err.strip()[-300:])}
    t, n, nerr = out.split()
    res = {"ok": True, "value": float(t), "wall_s": float(t), "entries": int(n),
           "errors": int(nerr), "process_wall_s": wall}
    if int(nerr):
        res["warning"] = "%s of %s lstat calls failed" % (nerr, n)
    return res


def op_readall(m, ctx):
    # GNU tar does not read file data when writing straight to /dev/null: pipe it.
    rc, wall, out, err = sh("tar -C %s -cf - . | wc -c" % shlex.quote(m))
    if rc != 0:
        return {"ok": False, "error": "rc %s: %s" % (rc, err.strip()[-300:])}
    return {"ok": True, "value": wall, "wall_s": wall, "tar_bytes": int(out.strip() or 0),
            "mib_s": ctx["file_bytes"] / MIB / wall if wall else None}


def op_dd(m, ctx):
    f = os.path.join(m, RANDOM_NAME)
    rc, wall, out, err = run_cmd(["dd", "if=" + f, "of=/dev/null", "bs=1M"])
    if rc != 0:
        return {"ok": False, "error": "rc %s: %s" % (rc, err.strip()[-300:])}
    mo = re.search(r"^(\d+) bytes", err, re.M)
    nbytes = int(mo.group(1)) if mo else None
    res = {"ok": True, "value": RANDOM_SIZE / MIB / wall, "wall_s": wall, "bytes": nbytes}
    if nbytes != RANDOM_SIZE:
        res["warning"] = "dd copied %s bytes, expected %d" % (nbytes, RANDOM_SIZE)
    return res


def op_fio(m, ctx):
    f = os.path.join(m, RANDOM_NAME)
    # --invalidate=0: fio would otherwise drop the file's page cache before the
    # job (POSIX_FADV_DONTNEED), which would make every "warm" run cold.
    argv = ["fio", "--name=r", "--filename=" + f, "--rw=randread", "--bs=4k", "--iodepth=1",
            "--ioengine=psync", "--runtime=%d" % ctx["fio_runtime"], "--time_based",
            "--readonly", "--invalidate=0", "--output-format=json"]
    rc, wall, out, err = run_cmd(argv, timeout=ctx["fio_runtime"] + OP_TIMEOUT)
    if rc != 0:
        return {"ok": False, "error": "rc %s: %s" % (rc, err.strip()[-300:])}
    try:
        doc = json.loads(out[out.index("{"):])
        rd = doc["jobs"][0]["read"]
        clat = rd.get("clat_ns") or {}
        pct = clat.get("percentile") or {}
        p99 = pct.get("99.000000")
    except (ValueError, KeyError, IndexError) as e:
        return {"ok": False, "error": "cannot parse fio output: %s" % e}
    if doc["jobs"][0].get("error"):
        return {"ok": False, "error": "fio job error %s" % doc["jobs"][0]["error"]}
    return {"ok": True, "value": rd["iops"], "wall_s": wall, "iops": rd["iops"],
            "mib_s": rd["bw_bytes"] / MIB, "ios": rd["total_ios"],
            "lat_mean_us": clat.get("mean", 0) / 1000.0,
            "lat_p99_us": p99 / 1000.0 if p99 is not None else None}


OP_FUNCS = {"find": op_find, "stat": op_stat, "readall": op_readall, "dd": op_dd,
            "fio": op_fio}


def describe_run(op, r):
    if not r.get("ok"):
        return "FAILED: %s" % r.get("error")
    if op == "fio":
        s = "%.0f IOPS, mean %.1f us, p99 %s us" % (r["iops"], r["lat_mean_us"],
                                                    fmt(r.get("lat_p99_us"), ".1f"))
    elif op == "dd":
        s = "%.0f MiB/s (%.2f s)" % (r["value"], r["wall_s"])
    elif op == "readall":
        s = "%.3f s (%.0f MiB/s)" % (r["value"], r["mib_s"] or 0)
    else:
        s = "%.4f s" % r["value"]
    if r.get("daemon_cpu_s") is not None:
        s += ", daemon cpu %.2f s" % r["daemon_cpu_s"]
    if r.get("warning"):
        s += "  [warning: %s]" % r["warning"]
    return s


# --------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------

def ensure_tools(need_debootstrap, need_openssl, need_fio):
    wanted = [("tar", "tar"), ("find", "findutils"), ("dd", "coreutils"),
              ("mount", "mount"), ("losetup", "mount")]
    if need_fio:
        wanted.append(("fio", "fio"))
    if need_debootstrap:
        wanted.append(("debootstrap", "debootstrap"))
    if need_openssl:
        wanted.append(("openssl", "openssl"))
    missing = sorted({pkg for tool, pkg in wanted if not shutil.which(tool)})
    if missing:
        common.apt_install(missing)
    still = [tool for tool, _ in wanted if not shutil.which(tool)]
    if still:
        die("missing tools: %s" % ", ".join(still))


def binary_problem(path, sub):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return "binary not found: %s (cargo build --release)" % path
    r = subprocess.run([path] + sub + ["--help"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        return "'%s %s --help' failed (rc=%d)" % (path, " ".join(sub), r.returncode)
    return None


def write_pathlist(tree, path):
    """NUL-separated relative paths of every entry (root as '.'), from the source."""
    rels = [b"."]
    root = os.fsencode(tree)
    stack = [b""]
    while stack:
        d = stack.pop()
        full = root + (b"/" + d if d else b"")
        for n in sorted(os.listdir(full)):
            rel = d + b"/" + n if d else n
            rels.append(rel)
            if stat.S_ISDIR(os.lstat(root + b"/" + rel).st_mode):
                stack.append(rel)
    with open(path, "wb") as f:
        f.write(b"\0".join(rels) + b"\0")
    return len(rels)


def wait_for_load(max_load, max_wait):
    """Poll until the 1-min load is <= max_load (at most max_wait s). Returns samples."""
    samples = []
    l = common.loadavg()
    if l is None:
        return samples
    samples.append({"t": 0, "load": l})
    log("load average: %.2f %.2f %.2f" % tuple(l))
    if l[0] <= max_load:
        return samples
    log("waiting up to %.0f s for the 1-min load to drop to %.2f ..." % (max_wait, max_load))
    t0 = time.time()
    last_print = t0
    while l[0] > max_load and time.time() - t0 < max_wait:
        time.sleep(10)
        l = common.loadavg()
        samples.append({"t": round(time.time() - t0), "load": l})
        if time.time() - last_print >= 60 or l[0] <= max_load:
            log("  after %3.0f s: load average %.2f %.2f %.2f"
                % ((time.time() - t0,) + tuple(l)))
            last_print = time.time()
    if l[0] > max_load:
        warn("1-min load is still %.2f after waiting %.0f s; measuring anyway (figures "
             "will be inflated and noisy)" % (l[0], time.time() - t0))
    return samples


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def summary_value(results, kind, op, phase):
    s = results.get(kind, {}).get(op, {}).get(phase)
    return s.get("value") if s else None


def print_table(results, ops, phases):
    hdr = ("%-22s %-5s %-6s %11s %11s %11s  %9s %9s"
           % ("measurement", "phase", "unit", "native", "erofs", "nydusd",
              "erofs x", "nydusd x"))
    log(hdr)
    log("-" * len(hdr))
    for op in ops:
        label, unit, _ = OP_INFO[op]
        for phase in phases:
            v = {k: summary_value(results, k, op, phase) for k in KINDS}
            spec = ".4f" if unit == "s" else ".0f"
            log("%-22s %-5s %-6s %11s %11s %11s  %9s %9s"
                % (label, phase, unit, fmt(v["native"], spec), fmt(v["erofs"], spec),
                   fmt(v["nydusd"], spec), fmt(ratio(v["erofs"], v["native"]), ".2f"),
                   fmt(ratio(v["nydusd"], v["native"]), ".2f")))
            if op == "fio":
                lat = {}
                for k in KINDS:
                    s = results.get(k, {}).get(op, {}).get(phase)
                    lat[k] = s.get("lat_mean_us") if s else None
                log("%-22s %-5s %-6s %11s %11s %11s  %9s %9s"
                    % ("  mean latency", phase, "us", fmt(lat["native"], ".1f"),
                       fmt(lat["erofs"], ".1f"), fmt(lat["nydusd"], ".1f"),
                       fmt(ratio(lat["erofs"], lat["native"]), ".2f"),
                       fmt(ratio(lat["nydusd"], lat["native"]), ".2f")))


def evaluate_targets(results, ops, rss, correctness):
    out = []

    def add(label, verdict, value, limit, detail, note=""):
        out.append({"target": label, "result": verdict, "value": value, "limit": limit,
                    "note": note})
        log("%s  %-40s %s" % (verdict, label, detail))

    for label, op, phase, limit, check in TARGETS:
        if op not in ops:
            add(label, "FAIL", None, limit, "n/a (not measured)", "op not run")
            continue
        nat = summary_value(results, "native", op, phase)
        nyd = summary_value(results, "nydusd", op, phase)
        r = ratio(nyd, nat)
        if r is None:
            add(label, "FAIL", None, limit, "n/a (a run failed)", "a run failed")
            continue
        ok = r <= limit if check == "time" else r >= limit
        unit = OP_INFO[op][1]
        spec = ".4f" if unit == "s" else ".0f"
        add(label, "PASS" if ok else "FAIL", r, limit,
            "%.2fx (limit %s%.2fx; nydusd %s vs native %s %s)"
            % (r, "<= " if check == "time" else ">= ", limit, format(nyd, spec),
               format(nat, spec), unit))
    label = "nydusd peak RSS <= %.0f MiB" % RSS_LIMIT_MIB
    if rss is None:
        add(label, "FAIL", None, RSS_LIMIT_MIB, "n/a (read-all not measured or failed)")
    else:
        add(label, "PASS" if rss <= RSS_LIMIT_MIB else "FAIL", rss, RSS_LIMIT_MIB,
            "%.1f MiB VmHWM after reading the whole tree (limit %.0f)" % (rss, RSS_LIMIT_MIB))
    for kind in ("nydusd", "erofs"):
        label = "%s tree identical to source" % kind
        c = correctness.get(kind)
        if c is None:
            add(label, "FAIL", None, None, "n/a (not checked)")
        else:
            add(label, "PASS" if c["ok"] else "FAIL", c["ok"], None, c["summary"])
    return out


# --------------------------------------------------------------------------

def main():
    global LOGPATH
    ap = argparse.ArgumentParser(
        description="Benchmark reading an image through nydusd (FUSE) against the native "
                    "directory and a kernel EROFS mount.")
    ap.add_argument("--work", default=DEFAULT_WORK,
                    help="work dir shared with bench/run.py: cached tree, WORK/mount/ "
                         "(image, disk, caches, mountpoints, logs), mount-results.json "
                         "(default %(default)s)")
    ap.add_argument("--tree", help="benchmark this existing tree instead of the cached "
                    "debootstrap tree (read-only; dd and fio need %s in it)" % RANDOM_NAME)
    ap.add_argument("--nydus-image", default=DEFAULT_IMAGE_BIN,
                    help="nydus-image binary (default %(default)s)")
    ap.add_argument("--nydusd", default=DEFAULT_NYDUSD_BIN,
                    help="nydusd binary (default %(default)s)")
    ap.add_argument("--ops", default=",".join(OPS),
                    help="comma-separated operations to run (default %(default)s)")
    ap.add_argument("--warm-runs", type=int, default=3,
                    help="warm runs after each cold run; the median is reported "
                         "(default %(default)s)")
    ap.add_argument("--cold-runs", type=int, default=1,
                    help="cold runs per operation and mount, each with a fresh daemon and cache; "
                         "the median is reported (default %(default)s)")
    ap.add_argument("--passthrough", action="store_true",
                    help="run nydusd with FUSE passthrough for large cached files "
                         "(`\"passthrough\": true`; off by default, as in nydusd)")
    ap.add_argument("--io-uring", action="store_true",
                    help="turn the kernel's FUSE over io_uring on for the run "
                         "(/sys/module/fuse/parameters/enable_uring; restored after), so "
                         "nydusd serves requests over io_uring; off for the run otherwise")
    ap.add_argument("--fio-runtime", type=int, default=10,
                    help="seconds per fio run (default %(default)s)")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait before measuring until the 1-min load average is at most "
                         "this (default %(default)s)")
    ap.add_argument("--max-wait", type=float, default=600,
                    help="wait at most this many seconds for the load to drop, then "
                         "measure anyway (default %(default)s; 0 = do not wait)")
    ap.add_argument("--threads", type=int,
                    help="nydusd FUSE worker threads (--thread-num; default: nydusd's)")
    ap.add_argument("--mirror", help="Debian mirror for debootstrap if the tree must be "
                    "built (default: this machine's apt source)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the image, the EROFS disk and the last cache in WORK/mount")
    args = ap.parse_args()

    if os.geteuid() != 0:
        die("needs root (drop_caches, mount, FUSE)")
    if args.warm_runs < 1:
        die("--warm-runs must be >= 1")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    for o in ops:
        if o not in OPS:
            die("--ops: unknown operation %r (known: %s)" % (o, ", ".join(OPS)))
    ops = [o for o in OPS if o in ops]

    # SIGTERM/SIGHUP -> SystemExit, so every finally block (daemons, mounts) runs.
    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    image_bin = os.path.abspath(args.nydus_image)
    nydusd_bin = os.path.abspath(args.nydusd)
    LOGPATH = os.path.join(work, "mount-commands.log")
    open(LOGPATH, "w").close()

    load_start = common.loadavg()
    if load_start:
        log("load average at start: %.2f %.2f %.2f" % tuple(load_start))

    ensure_tools(need_debootstrap=not args.tree, need_openssl=not args.tree,
                 need_fio="fio" in ops)
    for b, sub in ((image_bin, ["create"]), (nydusd_bin, [])):
        p = binary_problem(b, sub)
        if p:
            die(p)
    if not os.path.exists("/dev/fuse"):
        die("/dev/fuse is missing")
    uring_before = None
    if os.path.exists(ENABLE_URING):
        with open(ENABLE_URING) as f:
            uring_before = f.read().strip()
    elif args.io_uring:
        die("--io-uring: %s is missing (a kernel without CONFIG_FUSE_IO_URING)" % ENABLE_URING)
    with open("/proc/filesystems") as f:
        if not re.search(r"\berofs\b", f.read()):
            subprocess.run(["modprobe", "erofs"], stderr=subprocess.DEVNULL)

    if args.tree:
        tree = os.path.abspath(args.tree)
        if not os.path.isdir(tree):
            die("--tree %s is not a directory" % tree)
    else:
        tree = common.ensure_rootfs(work, args.mirror or common.apt_mirror())
        common.random_file(work, tree, True)
    has_big = os.path.isfile(os.path.join(tree, RANDOM_NAME)) and \
        os.path.getsize(os.path.join(tree, RANDOM_NAME)) == RANDOM_SIZE
    if not has_big and any(o in ops for o in ("dd", "fio")):
        warn("%s (1 GiB) is not in the tree: dd and fio are skipped" % RANDOM_NAME)
        ops = [o for o in ops if o not in ("dd", "fio")]

    machine = common.machine_info()
    log("")
    log("machine: nproc %s, memory %s MiB, %s, %s, kernel %s"
        % (machine.get("nproc"), machine.get("mem_total_mib"), machine.get("cpu"),
           machine.get("os", "?"), machine.get("kernel")))
    stats = common.tree_stats(tree)
    log("tree:    %s: %d entries (%d files, %d dirs, %d symlinks, %d other), "
        "%.1f MiB in regular files"
        % (tree, stats["entries"], stats["files"], stats["dirs"], stats["symlinks"],
           stats["other"], stats["file_bytes"] / MIB))
    versions = {"nydus-image": common.first_line([image_bin, "--version"]),
                "nydusd": common.first_line([nydusd_bin, "--version"]),
                "fio": common.first_line(["fio", "--version"]) if "fio" in ops else "",
                "tar": common.first_line(["tar", "--version"])}
    for k, v in versions.items():
        if v:
            log("version: %-11s %s" % (k, v))

    mdir = os.path.join(work, "mount")
    img = os.path.join(mdir, "image")
    boot = os.path.join(img, "bootstrap")
    blobs = os.path.join(img, "blobs")
    disk = os.path.join(img, "erofs.disk")
    mnt_erofs = os.path.join(mdir, "mnt-erofs")
    mnt_nydusd = os.path.join(mdir, "mnt-nydusd")
    logdir = os.path.join(mdir, "logs")
    pathlist = os.path.join(mdir, "paths.bin")
    cfgpath = os.path.join(mdir, "nydusd.json")
    for mp in (mnt_erofs, mnt_nydusd):  # leftovers of an interrupted run
        if mounts_at(mp):
            warn("%s is mounted (left over?); unmounting" % mp)
            umount_all(mp)
    shutil.rmtree(mdir, ignore_errors=True)
    for d in (blobs, mnt_erofs, mnt_nydusd, logdir):
        os.makedirs(d)

    # ---- image, disk, path list (untimed setup) ----
    log("")
    image = {}
    rc, wall, _, err = run_cmd([image_bin, "create", tree, "-B", boot, "-D", blobs,
                                "--compressor", "lz4_block"], capture=False)
    if rc != 0:
        die("nydus-image create failed (rc %s): %s" % (rc, err.strip()[-500:]))
    blob_bytes = sum(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs))
    image.update(create_s=round(wall, 2), bootstrap_bytes=os.path.getsize(boot),
                 blob_bytes=blob_bytes, blobs=len(os.listdir(blobs)))
    log("image:   nydus-image create --compressor lz4_block: %.1f s; bootstrap %.2f MiB, "
        "%d blob(s) %.1f MiB" % (wall, image["bootstrap_bytes"] / MIB, image["blobs"],
                                  blob_bytes / MIB))
    rc, wall, _, err = run_cmd([image_bin, "export", "--block", "-B", boot, "-D", blobs,
                                "-O", disk], capture=False)
    if rc != 0:
        die("nydus-image export failed (rc %s): %s" % (rc, err.strip()[-500:]))
    image.update(export_s=round(wall, 2), disk_bytes=os.path.getsize(disk))
    log("disk:    nydus-image export --block: %.1f s; %.1f MiB"
        % (wall, image["disk_bytes"] / MIB))
    nentries = write_pathlist(tree, pathlist)
    if nentries != stats["entries"]:
        warn("path list has %d entries, tree_stats counted %d" % (nentries, stats["entries"]))

    ncache = [0]

    def fresh_cache():
        # a new empty cache dir per daemon; the previous one is deleted (untimed)
        for old in os.listdir(mdir):
            if old.startswith("cache-"):
                shutil.rmtree(os.path.join(mdir, old), ignore_errors=True)
        ncache[0] += 1
        c = os.path.join(mdir, "cache-%d" % ncache[0])
        os.makedirs(c)
        cfg = {"device": {"backend": {"type": "localfs", "config": {"dir": blobs}},
                          "cache": {"type": "blobcache", "config": {"work_dir": c}}},
               "mode": "direct", "digest_validate": False, "enable_xattr": True,
               "amplify_io": 1048576, "passthrough": args.passthrough}
        with open(cfgpath, "w") as f:
            json.dump(cfg, f, indent=2)
        return c

    def new_daemon(tag):
        n = len(daemons) + 1
        extra = ["--thread-num", str(args.threads)] if args.threads else []
        return Nydusd(nydusd_bin, cfgpath, boot, mnt_nydusd,
                      os.path.join(logdir, "nydusd-%d-%s.log" % (n, tag)), extra)

    ctx = {"entries": stats["entries"], "file_bytes": stats["file_bytes"],
           "pathlist": pathlist, "fio_runtime": args.fio_runtime}
    results = {k: {} for k in KINDS}
    daemons = []          # records of every daemon started
    load_samples = []
    correctness = {}
    current = None        # the running Nydusd
    erofs_mounted = False
    rss_after_readall = None
    t_begin = time.time()
    if uring_before is not None:
        with open(ENABLE_URING, "w") as f:
            f.write("Y" if args.io_uring else "N")
        log("FUSE over io_uring: %s for this run (was %s)" % ("on" if args.io_uring else "off",
                                                             uring_before))
    try:
        # ---- kernel EROFS mount (stays mounted; cold = drop_caches) ----
        rc, _, _, err = run_cmd(["mount", "-t", "erofs", "-o", "loop,ro", disk, mnt_erofs])
        if rc != 0:
            die("mount -t erofs failed (rc %s): %s" % (rc, err.strip()))
        erofs_mounted = True

        # ---- wait for a quiet machine ----
        log("")
        load_samples = wait_for_load(args.max_load, args.max_wait)
        load0 = common.loadavg()
        log("load average before measuring: %.2f %.2f %.2f" % tuple(load0))
        log("cold = sync + echo 3 > /proc/sys/vm/drop_caches before the run (nydusd: also a "
            "fresh daemon with a fresh empty cache dir); warm = %d run(s) right after, "
            "median reported. Command output: %s" % (args.warm_runs, LOGPATH))

        def finish_daemon(d, op):
            nonlocal current
            rec = {"op": op, "log": d.logfile, "ready_s": d.ready_s}
            st = d.status()
            rec["vmhwm_kib"] = st.get("VmHWM")
            rec["vmrss_kib"] = st.get("VmRSS")
            rec["threads"] = st.get("Threads")
            rec["cpu_s"] = d.cpu()
            d.stop()
            rec["io_uring"] = "serving FUSE requests over io_uring" in d.log_text()
            current = None
            rec["exit_status"] = d.rc
            probs = d.problems()
            rec["log_problems"] = len(probs)
            rec["log_problem_lines"] = probs[:20]
            daemons.append(rec)
            return rec

        for op in ops:
            label = OP_INFO[op][0]
            log("")
            log("%s (%s):" % (op, label))
            # The kinds take turns within each repetition (native, erofs,
            # nydusd, native, ...), so a drift of the shared disk's speed
            # during the run weighs on every kind alike.
            per = {k: {"cold_runs": [], "first_runs": [], "first_rec": None, "done": False}
                   for k in KINDS}
            for rep in range(args.cold_runs):
                for kind in KINDS:
                    st = per[kind]
                    if st["done"]:
                        continue
                    m = {"native": tree, "erofs": mnt_erofs, "nydusd": mnt_nydusd}[kind]
                    warm_n = args.warm_runs if rep == 0 else 0
                    runs = []
                    d = None
                    if kind == "nydusd":
                        fresh_cache()
                        d = new_daemon(op)
                        drop_caches()
                        current = d
                        try:
                            d.start()
                        except RuntimeError as e:
                            r = {"ok": False, "error": str(e)}
                            log("  %-7s cold : FAILED: %s" % (kind, e))
                            st["cold_runs"].append(r)
                            if rep == 0:
                                st["first_runs"] = [r]
                            finish_daemon(d, op)
                            st["done"] = True
                            continue
                        log("  %-7s daemon ready %.3f s after exec" % (kind, d.ready_s))
                    for i in range(1 + warm_n):
                        phase = "cold" if i == 0 else "warm"
                        if phase == "cold":
                            drop_caches()
                        elif i == 1 and d is not None:
                            # Warm means what the cold run left cached, so let the
                            # daemon finish the background work it started (page-cache
                            # pushes, passthrough copies) first.
                            waited = settle(d)
                            log("  %-7s settled: idle after %.1f s" % (kind, waited))
                        cpu0 = d.cpu() if d else None
                        try:
                            r = OP_FUNCS[op](m, ctx)
                        except Exception as e:  # keep going whatever one run does
                            r = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                        if d is not None:
                            cpu1 = d.cpu()
                            if cpu0 is not None and cpu1 is not None:
                                r["daemon_cpu_s"] = round(cpu1 - cpu0, 3)
                            if not d.alive():
                                r["ok"] = False
                                r["error"] = "nydusd died (status %s)%s" % (
                                    d.proc.returncode, d.log_tail())
                        r["phase"] = phase
                        runs.append(r)
                        log("  %-7s %-5s: %s" % (kind, phase if i < 2 else "", describe_run(op, r)))
                        if not r["ok"]:
                            break
                    # Keep this repetition's cold sample, and the warm runs
                    # and daemon record of the first.
                    if runs:
                        st["cold_runs"].append(runs[0])
                    rec = finish_daemon(d, op) if d is not None else None
                    if rep == 0:
                        st["first_runs"], st["first_rec"] = runs, rec
                    if not runs or not runs[0]["ok"]:
                        st["done"] = True
            for kind in KINDS:
                cold_runs = per[kind]["cold_runs"]
                first_runs, first_rec = per[kind]["first_runs"], per[kind]["first_rec"]
                runs, rec = first_runs, first_rec
                cold_ok = [r for r in cold_runs if r["ok"]]
                cold = None
                if cold_ok and len(cold_ok) == len(cold_runs):
                    mv = median([r["value"] for r in cold_ok])
                    cold = next(r for r in cold_ok if r["value"] == mv)
                warm_ok = [r for r in runs[1:] if r["ok"]]
                warm = None
                if len(warm_ok) == args.warm_runs:
                    mv = median([r["value"] for r in warm_ok])
                    warm = next(r for r in warm_ok if r["value"] == mv)
                results[kind][op] = {"cold": cold, "warm": warm, "runs": runs, "cold_runs": cold_runs}
                if args.cold_runs > 1 and cold is not None:
                    log("  %-7s cold median of %d: %s" % (kind, len(cold_runs), describe_run(op, cold)))
                if rec is not None:
                    results[kind][op]["daemon"] = rec
                    if op == "readall" and rec["vmhwm_kib"] and cold and warm:
                        rss_after_readall = rec["vmhwm_kib"] / 1024.0
                    log("  %-7s daemon: peak RSS (VmHWM) %.1f MiB, cpu %s s, %d thread(s), "
                        "exit status %s, %d WARN/ERROR log line(s)"
                        % (kind, (rec["vmhwm_kib"] or 0) / 1024.0, fmt(rec["cpu_s"], ".2f"),
                           rec["threads"] or 0, rec["exit_status"], rec["log_problems"]))
            l = common.loadavg()
            if l:
                load_samples.append({"t": round(time.time() - t_begin), "after": op,
                                     "load": l})
        load1 = common.loadavg()

        # ---- correctness: source vs each mount, fresh daemon and cache ----
        log("")
        log("correctness (python3 tests/e2e/treecmp.py SRC M; reads every file):")
        fresh_cache()
        d = new_daemon("treecmp")
        current = d
        drop_caches()
        try:
            d.start()
            targets = [("nydusd", mnt_nydusd), ("erofs", mnt_erofs)]
        except RuntimeError as e:
            correctness["nydusd"] = {"ok": False, "summary": "daemon did not start: %s" % e}
            targets = [("erofs", mnt_erofs)]
        for kind, m in targets:
            rc, wall, out, err = run_cmd([sys.executable, TREECMP, tree, m],
                                         timeout=TREECMP_TIMEOUT)
            text = (out + err).strip()
            first = text.splitlines()[0] if text else ""
            summ = first if rc == 0 else "rc %s: %s" % (rc, " | ".join(text.splitlines()[:8]))
            correctness[kind] = {"ok": rc == 0, "rc": rc, "summary": summ[:600],
                                 "output": text[:20000], "wall_s": round(wall, 1)}
            log("  %-7s %s (%.0f s)" % (kind, summ[:600], wall))
        if d.proc is not None:
            finish_daemon(d, "treecmp")
    finally:
        if uring_before is not None:
            with open(ENABLE_URING, "w") as f:
                f.write(uring_before)
        if current is not None:
            current.stop()
        if erofs_mounted:
            rc = subprocess.run(["umount", mnt_erofs], stderr=subprocess.DEVNULL).returncode
            if rc != 0:
                umount_all(mnt_erofs)
        if mounts_at(mnt_nydusd):
            umount_all(mnt_nydusd)
        if not args.keep:
            for name in os.listdir(mdir) if os.path.isdir(mdir) else []:
                if name.startswith("cache-") or name == "image":
                    shutil.rmtree(os.path.join(mdir, name), ignore_errors=True)

    # ---- report ----
    phases = ("cold", "warm")
    log("")
    log("results (s = wall time, lower is better; MiB/s and IOPS: higher is better; "
        "'x' = that column / native):")
    print_table(results, ops, phases)
    readies = [r["ready_s"] for r in daemons if r.get("ready_s") is not None]
    hwms = [r["vmhwm_kib"] / 1024.0 for r in daemons if r.get("vmhwm_kib")]
    log("")
    if readies:
        log("nydusd start (exec -> mount ready, page cache dropped before exec): median "
            "%.3f s, min %.3f s, max %.3f s over %d start(s)"
            % (median(readies), min(readies), max(readies), len(readies)))
    if hwms:
        log("nydusd peak RSS (VmHWM): %s after read-all; max %.1f MiB over all daemons"
            % (fmt(rss_after_readall, ".1f", "n/a") + " MiB", max(hwms)))
    if daemons:
        log("nydusd served FUSE requests over io_uring: %d of %d daemon(s)"
            % (sum(1 for r in daemons if r.get("io_uring")), len(daemons)))
    probs = sum(r["log_problems"] for r in daemons)
    if probs:
        log("nydusd logs: %d WARN/ERROR line(s), e.g.:" % probs)
        shown = 0
        for r in daemons:
            for line in r["log_problem_lines"]:
                if shown < 8:
                    log("    %s" % line[:300])
                    shown += 1
    else:
        log("nydusd logs: no WARN/ERROR lines (%s)" % logdir)
    bad_exit = [r for r in daemons if r.get("exit_status") not in (0, None)]
    if bad_exit:
        log("nydusd: %d daemon(s) exited non-zero after SIGTERM: %s"
            % (len(bad_exit), ", ".join("%s=%s" % (r["op"], r["exit_status"])
                                        for r in bad_exit)))
    log("")
    log("targets:")
    targets = evaluate_targets(results, ops, rss_after_readall, correctness)
    log("")
    log("load average: at start %s; before measuring %s; after measuring %s"
        % (fmt_load(load_start), fmt_load(load0), fmt_load(load1)))

    doc = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
           "load": {"at_start": load_start, "before_measuring": load0,
                    "after_measuring": load1, "samples": load_samples,
                    "max_load": args.max_load},
           "tree": dict(stats, path=tree, random_file=has_big),
           "versions": versions, "binaries": {"nydus-image": image_bin, "nydusd": nydusd_bin},
           "image": image,
           "settings": {"ops": ops, "warm_runs": args.warm_runs, "cold_runs": args.cold_runs,
                        "fio_runtime_s": args.fio_runtime, "threads": args.threads,
                        "fuse_io_uring": bool(args.io_uring),
                        "nydusd_config": json.load(open(cfgpath))
                        if os.path.exists(cfgpath) else None},
           "results": results, "daemons": daemons,
           "nydusd_ready_s": {"median": median(readies), "min": min(readies or [0]),
                              "max": max(readies or [0]), "all": readies},
           "nydusd_peak_rss_mib_after_readall": rss_after_readall,
           "correctness": correctness, "targets": targets}
    rpath = os.path.join(work, "mount-results.json")
    with open(rpath, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    log("results written to %s" % rpath)
    fails = sum(1 for t in targets if t["result"] != "PASS")
    log("%d of %d targets passed" % (len(targets) - fails, len(targets)))
    return 1 if fails else 0


def fmt_load(l):
    return "%.2f %.2f %.2f" % tuple(l) if l else "n/a"


if __name__ == "__main__":
    sys.exit(main())
