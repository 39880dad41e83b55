#!/usr/bin/env python3
"""Benchmark: nydusd's control API under read load (issue 6).

On the bench tree (bench/run.py's cached rootfs; the 1 GiB random file is
left out of the working set), with an lz4_block image served by
target/release/nydusd with ``--apisock``:

1. 8 reader threads read the tree's files through FUSE in a loop. Before
   each read the file's pages are dropped (posix_fadvise DONTNEED), so every
   read is a FUSE request answered by the daemon from its warm blob cache.
2. While they run, 10,000 ``GET /api/v1/daemon`` and 10,000 ``GET /metrics``
   requests are timed one after another over the Unix socket: p50 / p99.
3. Read throughput over a fixed window, alternating runs without and with a
   scraper that fetches ``/metrics`` every ``--scrape-interval`` seconds
   (default 0.1 s, far more often than Prometheus would): the throughput
   loss must be at most 3 %.

Python 3 standard library only; needs root. Results go to
WORK/api-results.json. Exit status 0 when the targets pass, 1 when not.
"""

import argparse
import http.client
import json
import os
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mount as mb  # noqa: E402  (the mount benchmark's helpers)
from run import MIB, RANDOM_NAME, die, log  # noqa: E402

READERS = 8
REQUESTS = 10_000
MAX_LOSS = 0.03


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.path)
        self.sock = s


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError("GET %s: %d %s" % (path, r.status, body[:200]))
    return body


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


class Readers:
    """READERS threads reading `files` round robin, pages dropped before each read."""

    def __init__(self, files):
        self.files = files
        self.bytes = 0
        self.errors = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(READERS)]

    def run(self, k):
        i = k * len(self.files) // READERS
        buf = bytearray(1 << 20)
        while not self.stop.is_set():
            path = self.files[i % len(self.files)]
            i += 1
            n = 0
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    while True:
                        got = os.readv(fd, [buf])
                        if got <= 0:
                            break
                        n += got
                finally:
                    os.close(fd)
            except OSError:
                with self.lock:
                    self.errors += 1
            with self.lock:
                self.bytes += n

    def start(self):
        for t in self.threads:
            t.start()

    def measure(self, seconds):
        with self.lock:
            b0 = self.bytes
        t0 = time.perf_counter()
        time.sleep(seconds)
        with self.lock:
            b1 = self.bytes
        return (b1 - b0) / (time.perf_counter() - t0)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def latencies(sock, path, n):
    conn = UnixConn(sock)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        get(conn, path)
        out.append(time.perf_counter() - t0)
    conn.close()
    return out


def scraper(sock, interval, stop, count):
    conn = UnixConn(sock)
    while not stop.is_set():
        get(conn, "/metrics")
        count[0] += 1
        stop.wait(interval)
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=mb.DEFAULT_WORK)
    ap.add_argument("--nydus-image", default=mb.DEFAULT_IMAGE_BIN)
    ap.add_argument("--nydusd", default=mb.DEFAULT_NYDUSD_BIN)
    ap.add_argument("--requests", type=int, default=REQUESTS, help="API requests per path (default 10000)")
    ap.add_argument("--window", type=float, default=5.0, help="seconds per throughput sample (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="throughput samples per mode (default 3)")
    ap.add_argument("--scrape-interval", type=float, default=0.1)
    ap.add_argument("--max-load", type=float, default=1.0)
    ap.add_argument("--max-wait", type=float, default=600)
    args = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (FUSE mounts, drop_caches)")
    tree = os.path.join(args.work, "rootfs")
    if not os.path.isdir(tree):
        die("no bench tree at %s: run bench/run.py first" % tree)
    base = os.path.join(args.work, "api")
    os.makedirs(base, exist_ok=True)
    mb.LOGPATH = os.path.join(base, "commands.log")
    img = os.path.join(base, "image")
    mnt = os.path.join(base, "mnt")
    os.makedirs(mnt, exist_ok=True)
    mb.umount_all(mnt)
    if os.path.isdir(img):
        mb.run_cmd(["rm", "-rf", img])
    os.makedirs(os.path.join(img, "blobs"))
    rc, wall, _, err = mb.run_cmd([args.nydus_image, "create", tree, "-B", os.path.join(img, "bootstrap"),
                                   "-D", os.path.join(img, "blobs"), "--compressor", "lz4_block"])
    if rc != 0:
        die("nydus-image create failed: %s" % err[-2000:])
    cfg = {"device": {"backend": {"type": "localfs", "config": {"dir": os.path.join(img, "blobs")}},
                      "cache": {"type": "blobcache", "config": {"work_dir": os.path.join(base, "cache")}}},
           "mode": "direct", "iostats_files": False}
    cfgpath = os.path.join(base, "nydusd.json")
    with open(cfgpath, "w") as f:
        json.dump(cfg, f)
    mb.run_cmd(["rm", "-rf", os.path.join(base, "cache")])
    sock = os.path.join(base, "api.sock")
    d = mb.Nydusd(args.nydusd, cfgpath, os.path.join(img, "bootstrap"), mnt, os.path.join(base, "nydusd.log"),
                  extra=["--apisock", sock])
    load = mb.wait_for_load(args.max_load, args.max_wait)
    results = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_before": os.getloadavg()}
    try:
        d.start()
        files = []
        for dirpath, _, names in os.walk(mnt):
            for n in names:
                p = os.path.join(dirpath, n)
                if n != RANDOM_NAME and os.path.isfile(p) and not os.path.islink(p):
                    files.append(p)
        files.sort()
        log("%d files; warming the blob cache" % len(files))
        for p in files:
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
        readers = Readers(files)
        readers.start()
        time.sleep(1)
        lat = {}
        for path in ("/api/v1/daemon", "/metrics"):
            xs = latencies(sock, path, args.requests)
            lat[path] = {"p50_us": percentile(xs, 50) * 1e6, "p99_us": percentile(xs, 99) * 1e6,
                         "max_us": max(xs) * 1e6, "n": len(xs)}
            log("GET %-15s p50 %7.0f us  p99 %7.0f us  (%d requests, %d readers busy)"
                % (path, lat[path]["p50_us"], lat[path]["p99_us"], len(xs), READERS))
        without, with_scrape, scrapes = [], [], [0]
        for _ in range(args.rounds):
            without.append(readers.measure(args.window))
            stop = threading.Event()
            t = threading.Thread(target=scraper, args=(sock, args.scrape_interval, stop, scrapes), daemon=True)
            t.start()
            with_scrape.append(readers.measure(args.window))
            stop.set()
            t.join()
        readers.join()
        a, b = mb.median(without), mb.median(with_scrape)
        loss = 1 - b / a
        log("read throughput: %.0f MiB/s without scrapes, %.0f MiB/s with /metrics every %.2f s (%d scrapes): %+.1f %%"
            % (a / MIB, b / MIB, args.scrape_interval, scrapes[0], -loss * 100))
        ok = loss <= MAX_LOSS and readers.errors == 0 and d.alive()
        print("%s  read throughput with scrapes >= %.0f%% of without (%.1f%% lower)"
              % ("PASS" if loss <= MAX_LOSS else "FAIL", 100 * (1 - MAX_LOSS), loss * 100))
        if readers.errors:
            print("FAIL  %d read errors" % readers.errors)
        results.update({"latency": lat, "throughput_without_mib_s": [x / MIB for x in without],
                        "throughput_with_scrape_mib_s": [x / MIB for x in with_scrape],
                        "scrape_interval_s": args.scrape_interval, "scrapes": scrapes[0],
                        "loss": loss, "read_errors": readers.errors, "files": len(files),
                        "load_samples": load, "load_after": os.getloadavg(), "pass": ok})
    finally:
        d.stop()
    with open(os.path.join(args.work, "api-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0 if results.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
