#!/usr/bin/env python3
"""Benchmark runner: cold start of an image served by nydusd over the registry backend.

Uses the same tree as bench/run.py (the cached debootstrap rootfs plus the
deterministic 1 GiB random file), builds an lz4_block nydus image of it and
pushes its blob to Debian's docker-registry (filesystem storage).  Then, for
each network condition

    loopback   nydusd -> docker-registry on 127.0.0.1
    shaped     nydusd -> docker-registry in its own network namespace behind a
               veth pair; 20 ms delay and 100 Mbit/s each way (tc netem when
               the kernel has it, else tc tbf for the rate plus a userspace
               delay line for the latency, see bench/README.md)

it measures, with a fresh nydusd and a fresh empty blob cache every time:

    first read    nydusd exec -> mount ready -> first 4 KiB of a small file,
                  and the HTTP requests the registry saw in each phase
    working set   reading a fixed, seeded list of files totalling ~5 % of the
                  tree's bytes (start-up-like files first), from nydusd exec
    full blob     a plain HTTP GET (curl) of the whole blob over the same path

Prints a table, the first read in round trips, working set / full blob, and
PASS/FAIL lines for the targets; results go to WORK/registry-results.json.

Python 3 standard library only; needs root (FUSE, network namespaces, tc).
See bench/README.md.
"""

import argparse
import calendar
import hashlib
import http.client
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as common  # noqa: E402  (the build benchmark's helpers; its main() is not run)
import mount as mnt  # noqa: E402  (the FUSE benchmark's nydusd driver; its main() is not run)
from run import MIB, RANDOM_NAME, die, log, warn  # noqa: E402

REPO = common.REPO
DEFAULT_WORK = common.DEFAULT_WORK
DEFAULT_IMAGE_BIN = common.DEFAULT_BIN
DEFAULT_NYDUSD_BIN = mnt.DEFAULT_NYDUSD_BIN

IMAGE_REPO = "bench/rootfs"       # the registry repository the blob is pushed to
NETNS = "nydus-bench-reg"         # namespace holding the shaped registry
VETH_HOST, VETH_NS = "nbreg-h", "nbreg-n"
ADDR_HOST, ADDR_NS = "10.211.77.1", "10.211.77.2"
NS_PORT = 5000
FIRST_READ_BYTES = 4096
WS_FRACTION = 0.05
WS_SEED = 5
WS_MAX_FILE = 16 * MIB            # larger files are not picked for the random fill
# Start-up-like files read first (a shell, the loader, libc, coreutils, apt);
# symlinks are resolved inside the tree, missing ones skipped.
WS_STARTUP = [
    "usr/bin/bash", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/lib/x86_64-linux-gnu/libtinfo.so.6",
    "etc/ld.so.cache", "etc/nsswitch.conf", "etc/passwd", "etc/group", "etc/bash.bashrc",
    "usr/lib/x86_64-linux-gnu/libselinux.so.1", "usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "usr/lib/x86_64-linux-gnu/libacl.so.1", "usr/lib/x86_64-linux-gnu/libattr.so.1",
    "usr/bin/ls", "usr/bin/cat", "usr/bin/cp", "usr/bin/mv", "usr/bin/rm", "usr/bin/mkdir",
    "usr/bin/ln", "usr/bin/chmod", "usr/bin/env", "usr/bin/id", "usr/bin/date",
    "usr/bin/sed", "usr/bin/grep", "usr/bin/find", "usr/bin/tar", "usr/bin/gzip",
    "usr/lib/x86_64-linux-gnu/libz.so.1", "usr/lib/x86_64-linux-gnu/liblzma.so.5",
    "usr/lib/x86_64-linux-gnu/libzstd.so.1", "usr/lib/x86_64-linux-gnu/libbz2.so.1.0",
    "usr/lib/x86_64-linux-gnu/libstdc++.so.6", "usr/lib/x86_64-linux-gnu/libgcc_s.so.1",
    "usr/lib/x86_64-linux-gnu/libm.so.6", "usr/lib/x86_64-linux-gnu/libsystemd.so.0",
    "usr/lib/x86_64-linux-gnu/libapt-pkg.so.6.0", "usr/lib/x86_64-linux-gnu/libapt-private.so.0.0",
    "usr/bin/dpkg", "usr/bin/apt-get", "usr/bin/apt",
]

OP_TIMEOUT = 900.0
TARGET_FIRST_READ_REQUESTS = 2
TARGET_WS_OVER_FULL = 0.25
LOGPATH = None  # WORK/registry-commands.log, set in main()


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def logcmd(text):
    with open(LOGPATH, "a") as f:
        f.write(text + "\n")


def cmd(argv, check=True, ns=None):
    """Run a short setup command (ip, tc); logs it; returns (rc, stdout+stderr)."""
    if ns:
        argv = ["ip", "netns", "exec", ns] + argv
    logcmd("$ " + " ".join(argv))
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    out = r.stdout.decode(errors="replace")
    if out:
        logcmd(out.rstrip("\n"))
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (rc %d): %s" % (" ".join(argv), r.returncode, out.strip()))
    return r.returncode, out


def median(xs):
    return mnt.median([x for x in xs if x is not None])


fmt = mnt.fmt
ratio = mnt.ratio


def wait_port(host, port, proc, logfile, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited (%s) before listening on %s:%d; log %s"
                               % (proc.returncode, host, port, logfile))
        try:
            with socket.create_connection((host, port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %s:%d after %.0f s; log %s"
                       % (host, port, timeout, logfile))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# docker-registry: start, push, access log
# --------------------------------------------------------------------------

class Registry:
    """Debian's docker-registry (distribution 2.8) on host:port with filesystem
    storage in `root`, optionally inside a network namespace.  Killed by PID."""

    def __init__(self, root, host, port, confpath, logfile, netns=None):
        self.host, self.port, self.log = host, port, logfile
        with open(confpath, "w") as f:
            f.write("version: 0.1\nlog: {level: info}\n"
                    "storage: {filesystem: {rootdirectory: %s}}\n"
                    "http: {addr: '%s:%d'}\n" % (root, host, port))
        argv = [shutil.which("docker-registry"), "serve", confpath]
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv  # execs, so the PID is the registry's
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        logcmd("$ " + " ".join(argv) + " &")
        with open(logfile, "ab") as f:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        wait_port(host, port, self.proc, logfile)

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def push_blob(self, repo, path):
        """Monolithic upload (POST, then PUT ?digest=), streamed from the file."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(4 * MIB), b""):
                h.update(block)
        digest = "sha256:" + h.hexdigest()
        req = urllib.request.Request("%s/v2/%s/blobs/uploads/" % (self.url, repo),
                                     method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 202:
                raise RuntimeError("upload POST answered %d" % r.status)
            loc = urllib.parse.urljoin(self.url, r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            req = urllib.request.Request(
                "%s%sdigest=%s" % (loc, sep, urllib.parse.quote(digest)), method="PUT", data=f,
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(size)})
            with urllib.request.urlopen(req, timeout=600) as r:
                if r.status != 201:
                    raise RuntimeError("upload PUT answered %d" % r.status)
        return digest

    def requests(self):
        """[{start, end, method, uri, status, written}] from the access log.

        distribution logs a "response completed" line per request with a
        nanosecond completion time and the handler's duration, so each
        request's start time is known to well under a millisecond."""
        out = []
        try:
            with open(self.log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return out
        for line in lines:
            if 'msg="response completed' not in line:
                continue
            kv = dict((k, v.strip('"')) for k, v in KV_RE.findall(line))
            end = parse_rfc3339(kv.get("time", ""))
            dur = parse_go_duration(kv.get("http.response.duration", ""))
            if end is None or dur is None:
                continue
            out.append({"start": end - dur, "end": end,
                        "method": kv.get("http.request.method"),
                        "uri": kv.get("http.request.uri"),
                        "status": int(kv.get("http.response.status", "0") or 0),
                        "written": int(kv.get("http.response.written", "0") or 0)})
        return out


KV_RE = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
GO_DUR_RE = re.compile(r"([0-9.]+)(ns|us|µs|ms|s|m|h)")
GO_DUR_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
               "h": 3600.0}


def parse_go_duration(s):
    """Go's time.Duration text ("927.753µs", "1m2.5s") in seconds, or None."""
    parts = GO_DUR_RE.findall(s)
    if not parts or "".join(a + b for a, b in parts) != s:
        return None
    return sum(float(a) * GO_DUR_UNIT[b] for a, b in parts)


def parse_rfc3339(s):
    """'2026-11-27T04:38:10.023886961Z' -> epoch seconds (float), or None."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", s)
    if not m:
        return None
    y, mo, d, hh, mm, ss = (int(x) for x in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    return calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0)) + frac


def window(reqs, t0, t1):
    """Requests that started in [t0, t1): (count, bytes answered, [method uri status])."""
    sel = [r for r in reqs if t0 <= r["start"] < t1]
    return (len(sel), sum(r["written"] for r in sel),
            ["%s %s %d %d" % (r["method"], r["uri"], r["status"], r["written"]) for r in sel])


# --------------------------------------------------------------------------
# the shaped path: namespace, veth, qdiscs, delay line
# --------------------------------------------------------------------------

class DelayLine:
    """TCP forwarder 127.0.0.1:port -> target adding `one_way` seconds to each
    direction, for kernels without netem.  Bytes read at time t are written at
    t + one_way, in order.  A new connection's client bytes are additionally
    held until one round trip after the accept, standing in for the TCP
    handshake the client completed instantly with this local listener."""

    def __init__(self, target, one_way):
        self.target = target
        self.one_way = one_way
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._open, args=(c, time.monotonic()), daemon=True).start()

    def _open(self, c, t_accept):
        try:
            u = socket.create_connection(self.target, timeout=10)
            u.settimeout(None)
        except OSError:
            c.close()
            return
        for s in (c, u):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.lock:
            self.conns += [c, u]
        done = [0]
        self._pipe(c, u, t_accept + 2 * self.one_way, done)
        self._pipe(u, c, 0.0, done)

    def _pipe(self, src, dst, not_before, done):
        q = queue.Queue()

        def reader():
            while True:
                try:
                    data = src.recv(262144)
                except OSError:
                    data = b""
                q.put((max(time.monotonic(), not_before) + self.one_way, data))
                if not data:
                    return

        def writer():
            try:
                while True:
                    due, data = q.get()
                    pause = due - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        break
                    dst.sendall(data)
            except OSError:
                pass
            with self.lock:
                done[0] += 1
                if done[0] == 2:
                    for s in (src, dst):
                        s.close()

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    def stop(self):
        self.sock.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass


def netem_available():
    """True if this kernel has sch_netem (tried on a scratch veth pair)."""
    a, b = "nbreg-t0", "nbreg-t1"
    cmd(["ip", "link", "del", a], check=False)
    try:
        cmd(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        rc, _ = cmd(["tc", "qdisc", "add", "dev", a, "root", "netem", "delay", "1ms"],
                    check=False)
        return rc == 0
    finally:
        cmd(["ip", "link", "del", a], check=False)


class ShapedPath:
    """A network namespace reached over a veth pair, both ends shaped."""

    def __init__(self, delay_ms, rate_mbit, use_netem):
        self.delay_ms, self.rate_mbit, self.use_netem = delay_ms, rate_mbit, use_netem
        self.qdiscs = {}

    def setup(self):
        self.teardown()  # leftovers of an interrupted run
        cmd(["ip", "netns", "add", NETNS])
        cmd(["ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS])
        cmd(["ip", "link", "set", VETH_NS, "netns", NETNS])
        cmd(["ip", "addr", "add", ADDR_HOST + "/30", "dev", VETH_HOST])
        cmd(["ip", "link", "set", VETH_HOST, "up"])
        cmd(["ip", "addr", "add", ADDR_NS + "/30", "dev", VETH_NS], ns=NETNS)
        cmd(["ip", "link", "set", VETH_NS, "up"], ns=NETNS)
        cmd(["ip", "link", "set", "lo", "up"], ns=NETNS)
        rate = "%dmbit" % self.rate_mbit
        if self.use_netem:
            q = ["netem", "delay", "%dms" % self.delay_ms, "rate", rate]
        else:
            # The rate in the kernel; the delay comes from the DelayLine.
            q = ["tbf", "rate", rate, "burst", "64kb", "latency", "100ms"]
        for dev, ns in ((VETH_HOST, None), (VETH_NS, NETNS)):
            cmd(["tc", "qdisc", "add", "dev", dev, "root"] + q, ns=ns)
            self.qdiscs[dev] = cmd(["tc", "qdisc", "show", "dev", dev], ns=ns)[1].strip()

    def teardown(self):
        # Deleting one end of a veth pair deletes both; the namespace goes with its links.
        if os.path.exists("/sys/class/net/" + VETH_HOST):
            cmd(["ip", "link", "del", VETH_HOST], check=False)
        if os.path.exists("/run/netns/" + NETNS):
            cmd(["ip", "netns", "del", NETNS], check=False)


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def probe_rtt(host, port, n=7):
    """Median time of GET /v2/ on one keep-alive connection (first request excluded)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            conn.request("GET", "/v2/")
            r = conn.getresponse()
            r.read()
            if i:
                times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return median(times)


def full_fetch(url, blob_bytes):
    """curl GET of the whole blob; returns a result dict."""
    rc, wall, out, err = mnt.run_cmd(["curl", "-sS", "-o", "/dev/null", "-w",
                                      "%{http_code} %{size_download} %{time_total} "
                                      "%{time_starttransfer}", url])
    if rc != 0:
        return {"ok": False, "error": "curl rc %s: %s" % (rc, err.strip()[-300:])}
    code, size, total, ttfb = out.split()
    res = {"ok": code == "200" and int(size) == blob_bytes, "value": float(total),
           "bytes": int(size), "http_code": int(code), "ttfb_s": float(ttfb),
           "mib_s": int(size) / MIB / float(total) if float(total) else None}
    if not res["ok"]:
        res["error"] = "HTTP %s, %s bytes (blob has %d)" % (code, size, blob_bytes)
    return res


def resolve_in(tree, rel):
    """The tree-relative path of the regular file `rel` names, following symlinks
    inside the tree (absolute link targets are taken relative to the tree), or None."""
    for _ in range(40):
        p = os.path.join(tree, rel)
        try:
            st = os.lstat(p)
        except OSError:
            return None
        if stat.S_ISREG(st.st_mode):
            return rel
        if not stat.S_ISLNK(st.st_mode):
            return None
        t = os.readlink(p)
        rel = os.path.normpath(t.lstrip("/") if t.startswith("/")
                               else os.path.join(os.path.dirname(rel), t))
        if rel.startswith(".."):
            return None
    return None


def working_set(tree, file_bytes):
    """The fixed working set: start-up files, then a seeded random fill, each
    added until WS_FRACTION of the tree's regular-file bytes is reached (the
    last file may overshoot).  Returns ([(rel, size)], number of start-up files)."""
    target = WS_FRACTION * file_bytes
    chosen, seen, total = [], set(), 0

    def add(rel):
        nonlocal total
        ino = os.lstat(os.path.join(tree, rel))
        key = (ino.st_dev, ino.st_ino)
        if key in seen:
            return
        seen.add(key)
        chosen.append((rel, ino.st_size))
        total += ino.st_size

    for rel in WS_STARTUP:
        r = resolve_in(tree, rel)
        if r and total < target:
            add(r)
    n_startup = len(chosen)
    pool = []
    for dirpath, dirnames, names in os.walk(tree):
        dirnames.sort()
        for n in sorted(names):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, tree)
            if rel == RANDOM_NAME:
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= WS_MAX_FILE:
                pool.append(rel)
    random.Random(WS_SEED).shuffle(pool)
    for rel in pool:
        if total >= target:
            break
        add(rel)
    return chosen, n_startup


def sha_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


class Watchdog:
    """Kills the daemon if a read through its mount takes longer than `timeout`
    (that ends the FUSE connection, so the blocked read returns an error)."""

    def __init__(self, daemon, timeout):
        self.timer = threading.Timer(timeout, self._fire, args=(daemon,))
        self.fired = False
        self.timer.daemon = True
        self.timer.start()

    def _fire(self, daemon):
        self.fired = True
        if daemon.alive():
            os.kill(daemon.proc.pid, signal.SIGKILL)

    def cancel(self):
        self.timer.cancel()


def run_first_read(d, reg, rel, expect, settle):
    """Start d, read the first bytes of `rel`; phases timed, requests counted."""
    t_exec = time.time()
    d.start()
    t_ready = time.time()
    wd = Watchdog(d, OP_TIMEOUT)
    try:
        with open(os.path.join(d.mountpoint, rel), "rb") as f:
            data = f.read(FIRST_READ_BYTES)
    finally:
        wd.cancel()
    t_first = time.time()
    if data != expect:
        return {"ok": False, "error": "read %d bytes that differ from the source's first %d"
                % (len(data), len(expect))}
    time.sleep(settle)  # let the registry log its last line
    reqs = reg.requests()
    n_mount, b_mount, l_mount = window(reqs, t_exec, t_ready)
    n_read, b_read, l_read = window(reqs, t_ready, t_first)
    return {"ok": True, "ready_s": t_ready - t_exec, "first_s": t_first - t_ready,
            "value": t_first - t_exec, "mount_requests": n_mount, "mount_bytes": b_mount,
            "read_requests": n_read, "read_bytes": b_read,
            "requests": {"mount": l_mount, "first_read": l_read}}


def run_working_set(d, reg, files, settle):
    """Start d, read every file of the working set fully, in order, one thread."""
    t_exec = time.time()
    d.start()
    t_ready = time.time()
    nbytes = 0
    wd = Watchdog(d, OP_TIMEOUT)
    try:
        buf = bytearray(MIB)
        for rel, _ in files:
            fd = os.open(os.path.join(d.mountpoint, rel), os.O_RDONLY)
            try:
                while True:
                    n = os.readv(fd, [buf])
                    if n == 0:
                        break
                    nbytes += n
            finally:
                os.close(fd)
    finally:
        wd.cancel()
    t_done = time.time()
    time.sleep(settle)
    reqs = reg.requests()
    n_all, b_all, _ = window(reqs, t_exec, t_done)
    n_mount, _, _ = window(reqs, t_exec, t_ready)
    return {"ok": True, "ready_s": t_ready - t_exec, "read_s": t_done - t_ready,
            "value": t_done - t_exec, "bytes_read": nbytes, "requests": n_all,
            "mount_requests": n_mount, "fetched_bytes": b_all}


def verify_working_set(m, files, hashes):
    """sha256 of every working-set file through the mount (untimed)."""
    bad = [rel for rel, _ in files if sha_of(os.path.join(m, rel)) != hashes[rel]]
    return bad


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def print_table(results, conds):
    hdr = "%-34s" % "measurement" + "".join("%14s" % c for c in conds)
    log(hdr)
    log("-" * len(hdr))

    def row(label, get, spec):
        vals = []
        for c in conds:
            try:
                v = get(results[c])
            except (KeyError, TypeError):
                v = None
            vals.append(fmt(v, spec))
        log("%-34s" % label + "".join("%14s" % v for v in vals))

    row("RTT (GET /v2/ keep-alive) ms", lambda r: r["rtt_s"] * 1000, ".2f")
    row("full blob GET s", lambda r: r["full"]["value"], ".2f")
    row("full blob GET MiB/s", lambda r: r["full"]["mib_s"], ".1f")
    row("first read: exec -> ready s", lambda r: r["first"]["ready_s"], ".3f")
    row("  requests during mount", lambda r: r["first"]["mount_requests"], "d")
    row("first read: ready -> bytes s", lambda r: r["first"]["first_s"], ".3f")
    row("  same, in RTTs", lambda r: r["first"]["first_s"] / r["rtt_s"], ".1f")
    row("  requests before the bytes", lambda r: r["first"]["read_requests"], "d")
    row("  KiB fetched for them", lambda r: r["first"]["read_bytes"] / 1024, ".0f")
    row("first read: exec -> bytes s", lambda r: r["first"]["value"], ".3f")
    row("working set: exec -> done s", lambda r: r["ws"]["value"], ".2f")
    row("  ready -> done s", lambda r: r["ws"]["read_s"], ".2f")
    row("  requests", lambda r: r["ws"]["requests"], "d")
    row("  MiB fetched", lambda r: r["ws"]["fetched_bytes"] / MIB, ".1f")
    row("working set / full blob GET", lambda r: r["ws"]["value"] / r["full"]["value"], ".3f")


def evaluate_targets(results, conds, shaped):
    out = []

    def add(label, verdict, value, limit, detail):
        out.append({"target": label, "result": verdict, "value": value, "limit": limit})
        log("%s  %-52s %s" % (verdict, label, detail))

    for c in conds:
        label = "%s: first read <= %d requests after mount" % (c, TARGET_FIRST_READ_REQUESTS)
        f = (results.get(c) or {}).get("first")
        if not f:
            add(label, "FAIL", None, TARGET_FIRST_READ_REQUESTS, "n/a (not measured or failed)")
            continue
        worst = max(r["read_requests"] for r in results[c]["first_runs"] if r.get("ok"))
        add(label, "PASS" if worst <= TARGET_FIRST_READ_REQUESTS else "FAIL", worst,
            TARGET_FIRST_READ_REQUESTS,
            "%d request(s) (most over %d run(s)); %.3f s = %.1f RTTs after mount"
            % (worst, len(results[c]["first_runs"]), f["first_s"],
               f["first_s"] / results[c]["rtt_s"]))
    label = "%s: working set <= %.0f%% of full blob GET" % (shaped, TARGET_WS_OVER_FULL * 100)
    r = results.get(shaped) or {}
    if not (r.get("ws") and r.get("full") and r["full"].get("ok")):
        add(label, "FAIL", None, TARGET_WS_OVER_FULL, "n/a (not measured or failed)")
    else:
        x = r["ws"]["value"] / r["full"]["value"]
        add(label, "PASS" if x <= TARGET_WS_OVER_FULL else "FAIL", x, TARGET_WS_OVER_FULL,
            "%.1f%% (working set %.2f s from nydusd exec, full GET %.2f s)"
            % (x * 100, r["ws"]["value"], r["full"]["value"]))
    return out


def fmt_load(l):
    return "%.2f %.2f %.2f" % tuple(l) if l else "n/a"


# --------------------------------------------------------------------------

def main():
    global LOGPATH
    ap = argparse.ArgumentParser(
        description="Benchmark cold start of nydusd over the registry backend, on loopback "
                    "and over a shaped path (20 ms, 100 Mbit/s), against a full blob GET.")
    ap.add_argument("--work", default=DEFAULT_WORK,
                    help="work dir shared with bench/run.py: cached tree, WORK/registry/ "
                         "(image, registry data, caches, mountpoint, logs), "
                         "registry-results.json (default %(default)s)")
    ap.add_argument("--tree", help="benchmark this existing tree instead of the cached "
                    "debootstrap tree (used read-only)")
    ap.add_argument("--no-random-file", action="store_true",
                    help="leave the 1 GiB random file out of the debootstrap tree")
    ap.add_argument("--nydus-image", default=DEFAULT_IMAGE_BIN,
                    help="nydus-image binary (default %(default)s)")
    ap.add_argument("--nydusd", default=DEFAULT_NYDUSD_BIN,
                    help="nydusd binary (default %(default)s)")
    ap.add_argument("--file", default="usr/bin/bash",
                    help="tree-relative file whose first %d bytes are the first read "
                         "(default %%(default)s)" % FIRST_READ_BYTES)
    ap.add_argument("--conditions", default="loopback,shaped",
                    help="comma-separated subset of loopback,shaped (default %(default)s)")
    ap.add_argument("--delay-ms", type=int, default=20,
                    help="delay added to each direction of the shaped path "
                         "(default %(default)s)")
    ap.add_argument("--rate-mbit", type=int, default=100,
                    help="rate of each direction of the shaped path (default %(default)s)")
    ap.add_argument("--no-netem", action="store_true",
                    help="use tbf + the userspace delay line even if the kernel has netem")
    ap.add_argument("--repeat", type=int, default=3,
                    help="fresh-daemon runs of the first read and of the working set per "
                         "condition; the median is reported (default %(default)s)")
    ap.add_argument("--amplify-io", type=int, default=MIB,
                    help="nydusd's amplify_io (merged backend read size, default %(default)s)")
    ap.add_argument("--max-load", type=float, default=1.0,
                    help="wait before measuring until the 1-min load average is at most "
                         "this (default %(default)s)")
    ap.add_argument("--max-wait", type=float, default=600,
                    help="wait at most this many seconds for the load to drop, then "
                         "measure anyway (default %(default)s; 0 = do not wait)")
    ap.add_argument("--mirror", help="Debian mirror for debootstrap if the tree must be "
                    "built (default: this machine's apt source)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the image, the registry data and the last cache in WORK/registry")
    args = ap.parse_args()

    if os.geteuid() != 0:
        die("needs root (FUSE, network namespaces, tc)")
    if args.repeat < 1:
        die("--repeat must be >= 1")
    conds = [c.strip() for c in args.conditions.split(",") if c.strip()]
    for c in conds:
        if c not in ("loopback", "shaped"):
            die("--conditions: unknown condition %r (known: loopback, shaped)" % c)
    conds = [c for c in ("loopback", "shaped") if c in conds]
    if not conds:
        die("--conditions: nothing to run")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    image_bin = os.path.abspath(args.nydus_image)
    nydusd_bin = os.path.abspath(args.nydusd)
    LOGPATH = os.path.join(work, "registry-commands.log")
    mnt.LOGPATH = LOGPATH  # mount.py's run_cmd and Nydusd log there too
    open(LOGPATH, "w").close()

    load_start = common.loadavg()
    if load_start:
        log("load average at start: %.2f %.2f %.2f" % tuple(load_start))

    wanted = [("docker-registry", "docker-registry"), ("curl", "curl"), ("tc", "iproute2"),
              ("ip", "iproute2")]
    if not args.tree:
        wanted += [("debootstrap", "debootstrap"), ("openssl", "openssl")]
    missing = sorted({pkg for tool, pkg in wanted if not shutil.which(tool)})
    if missing:
        common.apt_install(missing)
    still = [tool for tool, _ in wanted if not shutil.which(tool)]
    if still:
        die("missing tools: %s" % ", ".join(still))
    for b, sub in ((image_bin, ["create"]), (nydusd_bin, [])):
        p = mnt.binary_problem(b, sub)
        if p:
            die(p)
    if not os.path.exists("/dev/fuse"):
        die("/dev/fuse is missing")

    if args.tree:
        tree = os.path.abspath(args.tree)
        if not os.path.isdir(tree):
            die("--tree %s is not a directory" % tree)
    else:
        tree = common.ensure_rootfs(work, args.mirror or common.apt_mirror())
        common.random_file(work, tree, not args.no_random_file)
    rel_first = resolve_in(tree, args.file.lstrip("/"))
    if rel_first is None:
        die("--file %s is not a regular file (or a symlink to one) in %s" % (args.file, tree))
    with open(os.path.join(tree, rel_first), "rb") as f:
        expect_first = f.read(FIRST_READ_BYTES)

    machine = common.machine_info()
    log("")
    log("machine: nproc %s, memory %s MiB, %s, %s, kernel %s"
        % (machine.get("nproc"), machine.get("mem_total_mib"), machine.get("cpu"),
           machine.get("os", "?"), machine.get("kernel")))
    stats = common.tree_stats(tree)
    has_big = os.path.isfile(os.path.join(tree, RANDOM_NAME))
    log("tree:    %s: %d entries, %.1f MiB in regular files (%s)"
        % (tree, stats["entries"], stats["file_bytes"] / MIB,
           "with the 1 GiB random file" if has_big else "no 1 GiB random file"))
    versions = {"nydus-image": common.first_line([image_bin, "--version"]),
                "nydusd": common.first_line([nydusd_bin, "--version"]),
                "docker-registry": common.dpkg_version("docker-registry"),
                "curl": common.first_line(["curl", "--version"]),
                "iproute2": common.first_line(["ip", "-V"])}
    for k, v in versions.items():
        if v:
            log("version: %-15s %s" % (k, v))

    rdir = os.path.join(work, "registry")
    img = os.path.join(rdir, "image")
    boot = os.path.join(img, "bootstrap")
    blobs = os.path.join(img, "blobs")
    data = os.path.join(rdir, "data")
    mp = os.path.join(rdir, "mnt")
    logdir = os.path.join(rdir, "logs")
    cfgpath = os.path.join(rdir, "nydusd.json")
    if mnt.mounts_at(mp):
        warn("%s is mounted (left over?); unmounting" % mp)
        mnt.umount_all(mp)
    shutil.rmtree(rdir, ignore_errors=True)
    for d in (blobs, data, mp, logdir):
        os.makedirs(d)

    # ---- image and working set (untimed setup) ----
    log("")
    image = {}
    rc, wall, _, err = mnt.run_cmd([image_bin, "create", tree, "-B", boot, "-D", blobs,
                                    "--compressor", "lz4_block"], capture=False)
    if rc != 0:
        die("nydus-image create failed (rc %s): %s" % (rc, err.strip()[-500:]))
    blob_names = sorted(os.listdir(blobs))
    if len(blob_names) != 1:
        die("expected one blob in %s, found %d" % (blobs, len(blob_names)))
    blob_path = os.path.join(blobs, blob_names[0])
    blob_bytes = os.path.getsize(blob_path)
    image.update(create_s=round(wall, 2), bootstrap_bytes=os.path.getsize(boot),
                 blob_bytes=blob_bytes)
    log("image:   nydus-image create --compressor lz4_block: %.1f s; bootstrap %.2f MiB, "
        "blob %.1f MiB" % (wall, image["bootstrap_bytes"] / MIB, blob_bytes / MIB))
    files, n_startup = working_set(tree, stats["file_bytes"])
    ws_bytes = sum(s for _, s in files)
    hashes = {rel: sha_of(os.path.join(tree, rel)) for rel, _ in files}
    log("working set: %d files, %.1f MiB = %.1f%% of the tree's file bytes (%d start-up "
        "files, then a seeded random fill, seed %d)"
        % (len(files), ws_bytes / MIB, 100.0 * ws_bytes / stats["file_bytes"],
           n_startup, WS_SEED))
    with open(os.path.join(rdir, "working-set.txt"), "w") as f:
        f.write("".join("%s\t%d\n" % (rel, s) for rel, s in files))

    ncache = [0]

    def fresh_config(endpoint):
        for old in os.listdir(rdir):
            if old.startswith("cache-"):
                shutil.rmtree(os.path.join(rdir, old), ignore_errors=True)
        ncache[0] += 1
        c = os.path.join(rdir, "cache-%d" % ncache[0])
        os.makedirs(c)
        backend = {"scheme": "http", "host": endpoint, "repo": IMAGE_REPO, "timeout": 30,
                   "connect_timeout": 10, "retry_limit": 2}
        cfg = {"device": {"backend": {"type": "registry", "config": backend},
                          "cache": {"type": "blobcache", "config": {"work_dir": c}}},
               "mode": "direct", "digest_validate": False, "enable_xattr": True,
               "amplify_io": args.amplify_io}
        with open(cfgpath, "w") as f:
            json.dump(cfg, f, indent=2)
        return cfg

    daemons = []

    def finish(d, cond, what):
        st = d.status()
        rec = {"condition": cond, "op": what, "log": d.logfile, "ready_s": d.ready_s,
               "vmhwm_kib": st.get("VmHWM"), "cpu_s": d.cpu()}
        d.stop()
        rec["exit_status"] = d.rc
        probs = d.problems()
        rec["log_problems"] = len(probs)
        rec["log_problem_lines"] = probs[:20]
        daemons.append(rec)
        return rec

    results = {}
    registries = []
    delay_line = None
    path = None
    current = None
    load_samples = []
    load0 = load1 = None
    use_netem = False
    shaping = None
    try:
        reg_lo = Registry(data, "127.0.0.1", free_port(), os.path.join(rdir, "registry-lo.yml"),
                          os.path.join(logdir, "registry-lo.log"))
        registries.append(reg_lo)
        t0 = time.time()
        digest = reg_lo.push_blob(IMAGE_REPO, blob_path)
        if digest.split(":", 1)[1] != blob_names[0]:
            die("the blob file is named %s but its sha256 is %s" % (blob_names[0], digest))
        log("registry: pushed %s (%.1f MiB) to docker-registry on %s in %.1f s"
            % (digest[:19], blob_bytes / MIB, reg_lo.url, time.time() - t0))
        blob_file = None
        for dirpath, _, names in os.walk(os.path.join(data, "docker", "registry", "v2", "blobs")):
            if "data" in names and os.path.basename(dirpath) == blob_names[0]:
                blob_file = os.path.join(dirpath, "data")
        endpoints = {"loopback": (reg_lo, "127.0.0.1", reg_lo.port)}

        if "shaped" in conds:
            use_netem = not args.no_netem and netem_available()
            path = ShapedPath(args.delay_ms, args.rate_mbit, use_netem)
            path.setup()
            reg_ns = Registry(data, ADDR_NS, NS_PORT, os.path.join(rdir, "registry-ns.yml"),
                              os.path.join(logdir, "registry-ns.log"), netns=NETNS)
            registries.append(reg_ns)
            if use_netem:
                endpoints["shaped"] = (reg_ns, ADDR_NS, NS_PORT)
                shaping = ("tc netem delay %dms rate %dmbit on both ends of a veth pair to "
                           "namespace %s" % (args.delay_ms, args.rate_mbit, NETNS))
            else:
                delay_line = DelayLine((ADDR_NS, NS_PORT), args.delay_ms / 1000.0)
                endpoints["shaped"] = (reg_ns, "127.0.0.1", delay_line.port)
                shaping = ("this kernel has no sch_netem: tc tbf rate %dmbit on both ends of "
                           "a veth pair to namespace %s, plus a userspace delay line on "
                           "127.0.0.1 adding %d ms each way"
                           % (args.rate_mbit, NETNS, args.delay_ms))
            log("shaped:  %s" % shaping)
            for dev, q in path.qdiscs.items():
                log("         %s: %s" % (dev, q))

        # The registry reads the blob from its page cache in every condition.
        if blob_file:
            with open(blob_file, "rb") as f:
                while f.read(8 * MIB):
                    pass

        log("")
        load_samples = mnt.wait_for_load(args.max_load, args.max_wait)
        load0 = common.loadavg()
        log("load average before measuring: %.2f %.2f %.2f" % tuple(load0))
        log("every nydusd run: a fresh daemon with a fresh empty cache dir, registry backend, "
            "amplify_io %d, no prefetch. Command output: %s" % (args.amplify_io, LOGPATH))

        for cond in conds:
            reg, host, port = endpoints[cond]
            endpoint = "%s:%d" % (host, port)
            res = results[cond] = {"endpoint": endpoint}
            log("")
            log("%s (nydusd -> %s, registry log %s):" % (cond, endpoint, reg.log))
            res["rtt_s"] = probe_rtt(host, port)
            log("  RTT (GET /v2/ on a keep-alive connection, median): %.2f ms"
                % (res["rtt_s"] * 1000))
            url = "http://%s/v2/%s/blobs/%s" % (endpoint, IMAGE_REPO, digest)
            res["full"] = full_fetch(url, blob_bytes)
            if res["full"]["ok"]:
                log("  full blob GET (curl): %.2f s, %.1f MiB/s, first byte after %.3f s"
                    % (res["full"]["value"], res["full"]["mib_s"], res["full"]["ttfb_s"]))
            else:
                log("  full blob GET (curl): FAILED: %s" % res["full"]["error"])

            for what in ("first", "ws"):
                runs = []
                for i in range(args.repeat):
                    fresh_config(endpoint)
                    d = mnt.Nydusd(nydusd_bin, cfgpath, boot, mp, os.path.join(
                        logdir, "nydusd-%d-%s-%s.log" % (len(daemons) + 1, cond, what)))
                    current = d
                    try:
                        if what == "first":
                            r = run_first_read(d, reg, rel_first, expect_first, 0.3)
                        else:
                            r = run_working_set(d, reg, files, 0.3)
                            if i == 0:
                                bad = verify_working_set(mp, files, hashes)
                                r["verified"] = not bad
                                if bad:
                                    r["ok"] = False
                                    r["error"] = "%d file(s) differ from the source, e.g. %s" \
                                        % (len(bad), bad[0])
                    except (OSError, RuntimeError) as e:
                        r = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                    if not d.alive() and r.get("ok"):
                        r = {"ok": False, "error": "nydusd died (status %s)%s"
                             % (d.proc.returncode, d.log_tail())}
                    r["daemon"] = finish(d, cond, what)
                    current = None
                    runs.append(r)
                    if not r["ok"]:
                        log("  %-11s run %d: FAILED: %s" % (what, i + 1, r["error"]))
                        break
                    if what == "first":
                        log("  first read  run %d: ready %.3f s (%d request(s), %.0f KiB), "
                            "then first %d bytes of /%s after %.3f s = %.1f RTTs "
                            "(%d request(s), %.0f KiB)"
                            % (i + 1, r["ready_s"], r["mount_requests"], r["mount_bytes"] / 1024,
                               FIRST_READ_BYTES, rel_first, r["first_s"],
                               r["first_s"] / res["rtt_s"], r["read_requests"],
                               r["read_bytes"] / 1024))
                    else:
                        log("  working set run %d: %.2f s from exec (ready %.3f s + reads %.2f s),"
                            " %d request(s), %.1f MiB fetched for %.1f MiB read%s"
                            % (i + 1, r["value"], r["ready_s"], r["read_s"], r["requests"],
                               r["fetched_bytes"] / MIB, r["bytes_read"] / MIB,
                               ", verified (sha256)" if r.get("verified") else ""))
                ok = [r for r in runs if r["ok"]]
                res[what + "_runs"] = runs
                if len(ok) == args.repeat:
                    mv = median([r["value"] for r in ok])
                    res[what] = next(r for r in ok if r["value"] == mv)
                else:
                    res[what] = None
            l = common.loadavg()
            if l:
                load_samples.append({"t": round(time.time()), "after": cond, "load": l})
        load1 = common.loadavg()
    except (OSError, RuntimeError) as e:  # setup of the registries or the shaped path
        die("%s: %s" % (type(e).__name__, e))
    finally:
        if current is not None:
            current.stop()
        if mnt.mounts_at(mp):
            mnt.umount_all(mp)
        if delay_line:
            delay_line.stop()
        for reg in reversed(registries):
            reg.stop()
        if path:
            path.teardown()
        if not args.keep:
            for name in os.listdir(rdir) if os.path.isdir(rdir) else []:
                if name.startswith("cache-") or name in ("image", "data"):
                    shutil.rmtree(os.path.join(rdir, name), ignore_errors=True)

    # ---- report ----
    log("")
    log("results (median of %d fresh-daemon run(s) each; 'requests' are the HTTP requests "
        "the registry logged in that phase):" % args.repeat)
    print_table(results, conds)
    probs = sum(r["log_problems"] for r in daemons)
    log("")
    if probs:
        log("nydusd logs: %d WARN/ERROR line(s), e.g.:" % probs)
        for line in [l for r in daemons for l in r["log_problem_lines"]][:8]:
            log("    %s" % line[:300])
    else:
        log("nydusd logs: no WARN/ERROR lines (%s)" % logdir)
    log("")
    log("targets:")
    targets = evaluate_targets(results, conds, "shaped" if "shaped" in conds else conds[-1])
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
           "settings": {"conditions": conds, "repeat": args.repeat, "file": rel_first,
                        "first_read_bytes": FIRST_READ_BYTES, "delay_ms": args.delay_ms,
                        "rate_mbit": args.rate_mbit, "netem": use_netem, "shaping": shaping,
                        "amplify_io": args.amplify_io,
                        "qdiscs": path.qdiscs if path else None,
                        "nydusd_config": json.load(open(cfgpath))
                        if os.path.exists(cfgpath) else None},
           "working_set": {"files": len(files), "startup_files": n_startup, "bytes": ws_bytes,
                           "seed": WS_SEED,
                           "fraction_of_tree": ws_bytes / stats["file_bytes"],
                           "list": os.path.join(rdir, "working-set.txt")},
           "results": results, "daemons": daemons, "targets": targets}
    rpath = os.path.join(work, "registry-results.json")
    with open(rpath, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    log("results written to %s" % rpath)
    fails = sum(1 for t in targets if t["result"] != "PASS")
    log("%d of %d targets passed" % (len(targets) - fails, len(targets)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
