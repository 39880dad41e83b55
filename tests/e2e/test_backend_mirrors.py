"""Registry mirrors and the HTTP (dfdaemon-style) proxy, against Debian's
docker-registry on 127.0.0.1.

The origin registry is reached through a counting ``FaultProxy`` (so the
tests can tell how many blob requests reached the origin); a live mirror
is a second ``FaultProxy`` in front of the same registry (same blobs,
counted separately). The forward proxy is ``ForwardProxy`` below: a small
HTTP forward proxy that takes absolute-form requests
(``GET http://host:port/path``), fetches them from ``host:port`` and counts
them; it answers ``GET /server/ping`` itself, as dfdaemon does.
"""

from __future__ import annotations

import http.client
import os
import socket
import socketserver
import threading
import time
import urllib.parse

import pytest

import util
from faultproxy import HOP_BY_HOP, FaultProxy
from nydusd import daemons, nydusd_bin, guarded  # noqa: F401
from registry import free_port
from test_backend_faults import assert_tree, mount, read_eio
from test_backend_registry import REPO, registries, small_file  # noqa: F401

# Chunk by chunk, so that every file read after a change reaches the backend.
TOP = {"amplify_io": 0}


class ForwardProxy:
    """An HTTP/1.1 forward proxy on 127.0.0.1 (one request per connection)."""

    def __init__(self):
        self.requests: list[str] = []  # absolute URLs of forwarded blob GETs
        self.pings = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                proxy._serve(self.rfile, self.connection)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def blob_requests(self) -> list[str]:
        with self.lock:
            return [u for u in self.requests if "/blobs/" in u]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, rfile, conn: socket.socket) -> None:
        line = rfile.readline(65537).decode("latin-1")
        if not line:
            return
        method, target, _ = line.split(" ", 2)
        headers = []
        while True:
            h = rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, v = h.decode("latin-1").split(":", 1)
            headers.append((k.strip(), v.strip()))
        if target == "/server/ping":
            with self.lock:
                self.pings += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        url = urllib.parse.urlsplit(target)
        if url.scheme != "http":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        with self.lock:
            self.requests.append(target)
        up = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
        path = url.path + (f"?{url.query}" if url.query else "")
        up.request(method, path, headers={k: v for k, v in headers if k.lower() not in HOP_BY_HOP})
        r = up.getresponse()
        body = r.read()
        up.close()
        head = f"HTTP/1.1 {r.status} {r.reason}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP)
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode("latin-1") + (b"" if method == "HEAD" else body))


@pytest.fixture
def setup(src_small, registries, tmp_path):
    """The small fixture's image in a registry; the origin seen through a
    counting proxy; a live mirror (another counting proxy) and a dead port."""
    reg = registries()
    img = util.create(src_small.path, tmp_path / "out", compressor="zstd")
    reg.push_blob(REPO, img.blob_path())
    origin, live = FaultProxy(reg.port), FaultProxy(reg.port)
    yield img, origin, live
    origin.stop()
    live.stop()


def mirror(host: str, **extra) -> dict:
    return {"host": f"http://{host}", "health_check_interval": 3600, **extra}


def test_dead_first_mirror_falls_back_to_the_live_one(src_small, setup, daemons, tmp_path):
    img, origin, live = setup
    dead = f"127.0.0.1:{free_port()}"
    mirrors = [mirror(dead, failure_limit=2), mirror(live.host, headers={"X-Test-Mirror": "1"})]
    d = mount(daemons, tmp_path, img, origin.host, top=TOP, mirrors=mirrors)
    assert_tree(d, src_small)
    assert any(e.startswith("pass 20") for e in live.blob_events()), live.blob_events()
    assert origin.blob_events() == [], origin.blob_events()
    assert d.alive(), d.describe()


def test_all_mirrors_dead_the_origin_serves(src_small, setup, daemons, tmp_path):
    img, origin, _ = setup
    mirrors = [mirror(f"127.0.0.1:{free_port()}"), mirror(f"127.0.0.1:{free_port()}", failure_limit=1)]
    t0 = time.monotonic()
    d = mount(daemons, tmp_path, img, origin.host, top=TOP, mirrors=mirrors)
    assert_tree(d, src_small)
    assert time.monotonic() - t0 < 30
    assert any(e.startswith("pass 20") for e in origin.blob_events()), origin.blob_events()


def test_mirror_answering_500_is_set_aside_after_failure_limit(src_small, setup, daemons, tmp_path):
    img, origin, broken = setup
    broken.inject(*["500"] * 1000)
    d = mount(daemons, tmp_path, img, origin.host, top=TOP, mirrors=[mirror(broken.host, failure_limit=3)])
    assert_tree(d, src_small)
    # Exactly failure_limit requests reached it; then it was skipped.
    assert broken.blob_events() == ["500"] * 3, broken.blob_events()
    assert len(origin.blob_events()) > 3, origin.blob_events()


def proxy_cfg(p: ForwardProxy, fallback: bool) -> dict:
    return {"url": p.url, "ping_url": f"{p.url}/server/ping", "check_interval": 1, "fallback": fallback}


def regular_files(src_root) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(src_root):
        for n in sorted(names):
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, src_root)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                out.append(rel)
    return out


def test_proxy_carries_reads_and_falls_back_when_killed(src_small, setup, daemons, tmp_path):
    img, origin, _ = setup
    fp = ForwardProxy()
    try:
        d = mount(daemons, tmp_path, img, origin.host, top=TOP, timeout=2, proxy=proxy_cfg(fp, True))
        rel = small_file(src_small.path)
        kind, val = guarded(lambda: (d.mountpoint / rel).read_bytes(), timeout=30)
        assert kind == "ok" and val == (src_small.path / rel).read_bytes(), f"{kind}\n{d.describe()}"
        through = fp.blob_requests()
        assert through, d.describe()
        # Every blob request that reached the origin came through the proxy,
        # for the origin's own URL.
        assert len(origin.blob_events()) == len(through), (origin.blob_events(), through)
        assert all(u.startswith(f"http://{origin.host}/v2/{REPO}/blobs/sha256:") for u in through), through
        assert fp.pings >= 1
    finally:
        fp.stop()
    n_proxy, n_origin = len(fp.blob_requests()), len(origin.blob_events())
    t0 = time.monotonic()
    assert_tree(d, src_small)
    took = time.monotonic() - t0
    print(f"whole tree read after the proxy died: {took:.2f}s")
    assert took < 20, f"reads after the proxy died took {took:.1f}s"
    assert len(fp.blob_requests()) == n_proxy
    assert len(origin.blob_events()) > n_origin, origin.blob_events()
    assert d.alive(), d.describe()


def test_proxy_without_fallback_gives_eio_when_killed(src_small, setup, daemons, tmp_path):
    img, origin, _ = setup
    fp = ForwardProxy()
    timeout, retries = 2, 1
    try:
        d = mount(daemons, tmp_path, img, origin.host, top=TOP, timeout=timeout, retry_limit=retries,
                  proxy=proxy_cfg(fp, False))
        files = regular_files(src_small.path)
        first = files[0]
        kind, val = guarded(lambda: (d.mountpoint / first).read_bytes(), timeout=30)
        assert kind == "ok" and val == (src_small.path / first).read_bytes(), f"{kind}\n{d.describe()}"
    finally:
        fp.stop()
    n_origin = len(origin.blob_events())
    # A file whose chunks were not fetched yet (not a duplicate of the first).
    want = (src_small.path / first).read_bytes()
    other = next(f for f in reversed(files) if (src_small.path / f).read_bytes() != want)
    read_eio(d, d.mountpoint / other, bound=3 * timeout * (retries + 1) + 10)
    assert len(origin.blob_events()) == n_origin, "a read went around the proxy without fallback"
