"""nydus-backend-proxy: serves a blob directory over HTTP on 127.0.0.1.

Range handling is checked byte for byte against the blob file with
http.client (whole blob, first and last byte, open-ended and suffix ranges,
ranges past the end -> 416 with ``Content-Range: bytes */size``), as are
404/400/405 answers and path traversal attempts; many parallel clients
through a small connection limit all get the right bytes; nydusd's registry
backend mounts an image through it (``scheme: http``) and the tree equals
the source; SIGTERM stops it promptly with status 0.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401
from registry import Proc, free_port, wait_port


def proxy_path() -> Path:
    return Path(os.environ.get("NYDUS_BACKEND_PROXY",
                               util.REPO / "target" / "release" / "nydus-backend-proxy"))


class Proxy:
    def __init__(self, blobsdir: Path, log: Path, *extra):
        binary = proxy_path()
        if not binary.is_file():
            pytest.fail(f"{binary} not found: run `cargo build --release`", pytrace=False)
        self.port = free_port()
        self.log = log
        self.p = Proc([binary, "--blobsdir", blobsdir, "--addr", f"127.0.0.1:{self.port}", *extra], log)
        wait_port(self.port, self.p.proc, log)

    def request(self, method: str, path: str, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def stop(self):
        self.p.stop()


@pytest.fixture(scope="module")
def image(src_small, tmp_path_factory):
    return util.create(src_small.path, tmp_path_factory.mktemp("proxy-img"))


@pytest.fixture
def proxy(image, tmp_path):
    p = Proxy(image.blob_dir, tmp_path / "proxy.log")
    yield p
    p.stop()


def test_ranges_match_the_file(image, proxy):
    blob_id = image.blob_ids[0]
    data = image.blob_path().read_bytes()
    n = len(data)
    path = f"/ns/repo/blobs/sha256:{blob_id}"

    st, h, body = proxy.request("HEAD", path)
    assert (st, int(h["content-length"]), body) == (200, n, b""), h
    assert h["accept-ranges"] == "bytes"
    st, h, body = proxy.request("GET", path)
    assert st == 200 and body == data and int(h["content-length"]) == n

    cases = {
        "bytes=0-0": (0, 0),
        f"bytes={n - 1}-{n - 1}": (n - 1, n - 1),      # the last byte
        f"bytes={n - 1}-": (n - 1, n - 1),
        f"bytes=100-{n + 1000}": (100, n - 1),         # end clamped
        "bytes=4096-8191": (4096, 8191),
        "bytes=-1": (n - 1, n - 1),                    # suffix
        "bytes=-4096": (n - 4096, n - 1),
        f"bytes=-{n + 5}": (0, n - 1),                 # suffix longer than the blob
        "bytes=0-": (0, n - 1),
    }
    for rng, (a, b) in cases.items():
        for method in ("GET", "HEAD"):
            st, h, body = proxy.request(method, path, {"Range": rng})
            assert st == 206, (rng, method, st)
            assert h["content-range"] == f"bytes {a}-{b}/{n}", (rng, h)
            assert int(h["content-length"]) == b - a + 1, (rng, h)
            assert body == (data[a:b + 1] if method == "GET" else b""), (rng, method)

    for rng in (f"bytes={n}-", f"bytes={n}-{n + 10}", f"bytes={n + 1}-", "bytes=-0"):
        st, h, _ = proxy.request("GET", path, {"Range": rng})
        assert st == 416 and h["content-range"] == f"bytes */{n}", (rng, st, h)

    # Headers that are not one byte range are ignored: the whole blob.
    for rng in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3"):
        st, _, body = proxy.request("GET", path, {"Range": rng})
        assert st == 200 and body == data, rng

    # The registry API layout serves the same bytes.
    st, h, body = proxy.request("GET", f"/v2/a/b/c/blobs/sha256:{blob_id}", {"Range": "bytes=10-19"})
    assert st == 206 and body == data[10:20]
    st, h, body = proxy.request("GET", "/v2/")
    assert st == 200


def test_errors_and_traversal(image, proxy, tmp_path):
    missing = "0" * 64
    assert proxy.request("GET", f"/ns/repo/blobs/sha256:{missing}")[0] == 404
    assert proxy.request("HEAD", f"/ns/repo/blobs/sha256:{missing}")[0] == 404
    for bad in ("sha256:abc", "sha512:" + "a" * 128, "sha256:" + "A" * 64, image.blob_ids[0],
                "sha256:..%2F..%2Fetc%2Fpasswd"):
        assert proxy.request("GET", f"/ns/repo/blobs/{bad}")[0] == 400, bad
    for path in ("/", "/ns/repo/manifests/latest", "/../../etc/passwd",
                 "/ns/repo/blobs/sha256:../../../etc/passwd", "/blobs/sha256:" + missing):
        st, _, body = proxy.request("GET", path)
        assert st in (400, 404), (path, st)
        assert b"root:" not in body
    st, h, _ = proxy.request("POST", f"/ns/repo/blobs/sha256:{image.blob_ids[0]}")
    assert st == 405 and "GET" in h["allow"]
    # A directory named like a blob is not a blob.
    os.mkdir(image.blob_dir / ("d" * 64))
    try:
        assert proxy.request("GET", f"/ns/repo/blobs/sha256:{'d' * 64}")[0] == 404
    finally:
        os.rmdir(image.blob_dir / ("d" * 64))


def test_parallel_clients_through_a_small_limit(image, tmp_path):
    p = Proxy(image.blob_dir, tmp_path / "proxy.log", "--max-connections", "3")
    try:
        data = image.blob_path().read_bytes()
        path = f"/r/blobs/sha256:{image.blob_ids[0]}"
        errors = []

        def worker(i):
            try:
                a = (i * 7919) % (len(data) - 70000)
                st, _, body = p.request("GET", path, {"Range": f"bytes={a}-{a + 65535}"})
                if st != 206 or body != data[a:a + 65536]:
                    errors.append((i, st, len(body)))
            except Exception as e:  # noqa: BLE001
                errors.append((i, repr(e)))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:5]
    finally:
        p.stop()


def test_mount_through_the_proxy(image, src_small, proxy, daemons, tmp_path):
    cfg = {
        "device": {
            "backend": {"type": "registry", "config": {
                "scheme": "http", "host": f"127.0.0.1:{proxy.port}", "repo": "any/repo",
                "timeout": 5, "retry_limit": 1}},
            "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(tmp_path / "cache")}},
        },
        "mode": "direct",
        "enable_xattr": True,
    }
    conf = write_config(tmp_path / "c.json", cfg)
    d = daemons.start(image.bootstrap, tmp_path / "mnt", config=conf)
    got = treecmp.load_dir(d.mountpoint, content=True)
    diffs = treecmp.compare(src_small.tree, got)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, got) + "\n" + d.describe()
    d.stop()
    d.assert_clean_log()
    ranged = [ln for ln in proxy.log.read_text().splitlines() if "status=206" in ln]
    assert ranged, "nydusd made no ranged reads through the proxy?"


def test_sigterm_stops_promptly(image, tmp_path):
    p = Proxy(image.blob_dir, tmp_path / "proxy.log")
    # An idle keep-alive connection must not hold the exit up.
    c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
    c.request("GET", "/v2/")
    c.getresponse().read()
    t0 = time.monotonic()
    p.p.proc.send_signal(signal.SIGTERM)
    rc = p.p.proc.wait(10)
    took = time.monotonic() - t0
    c.close()
    assert rc == 0 and took < 5, (rc, took, p.log.read_text())


def test_bad_blobsdir_is_a_clean_error(tmp_path):
    for d in (tmp_path / "missing", Path("/etc/hostname")):
        r = subprocess.run([proxy_path(), "--blobsdir", d, "--addr", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 1 and r.stderr.startswith("error: --blobsdir"), r.stderr
