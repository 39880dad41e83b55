"""The http-proxy backend: nydusd reads blobs from a plain HTTP server with
``Range``, over TCP (``addr = "http://127.0.0.1:PORT"``) and over a Unix
socket (``addr = "/path/to.sock"``), with a ``path`` prefix.

The server is a small Range-capable HTTP/1.1 server in this file (206 for
a range, 416 past the end, 404 for unknown blobs) serving the blob
directory nydus-image wrote; every request is logged so that the tests can
check nydusd asked for ranges, not whole blobs.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socketserver
import threading

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401

PREFIX = "/ns/repo/blobs"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):  # Unix sockets have no client address
        return "local"

    def log_message(self, fmt, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool):
        srv = self.server
        srv.requests.append((self.command, self.path, self.headers.get("Range")))
        name = self.path[len(PREFIX) + 1:] if self.path.startswith(PREFIX + "/") else None
        blob = os.path.join(srv.blob_dir, name) if name and "/" not in name else None
        if blob is None or not os.path.isfile(blob):
            return self._reply(404, {}, b"")
        size = os.path.getsize(blob)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if not m:
            with open(blob, "rb") as f:
                return self._reply(200, {}, b"" if head else f.read())
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        if start >= size:
            return self._reply(416, {"Content-Range": f"bytes */{size}"}, b"")
        with open(blob, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        srv.bytes_sent += len(data)
        self._reply(206, {"Content-Range": f"bytes {start}-{end}/{size}"}, b"" if head else data)

    def _reply(self, code, headers, body):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class TcpServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def blob_server(tmp_path):
    started = []

    def start(kind: str, blob_dir):
        if kind == "tcp":
            srv = TcpServer(("127.0.0.1", 0), RangeHandler)
            addr = f"http://127.0.0.1:{srv.server_address[1]}"
        else:
            sock = tmp_path / "blobs.sock"
            srv = UnixServer(os.fspath(sock), RangeHandler)
            addr = os.fspath(sock)
        srv.blob_dir = os.fspath(blob_dir)
        srv.requests = []
        srv.bytes_sent = 0
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv, addr

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def proxy_config(addr, cache_dir, style, path):
    backend = {"addr": addr, "path": PREFIX, "timeout": 5, "retry_limit": 1}
    if style == "v1":
        return write_config(path.with_suffix(".json"), {
            "device": {"backend": {"type": "http-proxy", "config": backend},
                       "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(cache_dir)}}},
            "mode": "direct", "enable_xattr": True})
    lines = ["version = 2", "[backend]", 'type = "http-proxy"', '[backend."http-proxy"]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in backend.items()]
    lines += ["[cache]", 'type = "blobcache"', "[cache.filecache]",
              f"work_dir = {json.dumps(os.fspath(cache_dir))}", "[rafs]", 'mode = "direct"',
              "enable_xattr = true", ""]
    return write_config(path.with_suffix(".toml"), "\n".join(lines))


@pytest.mark.parametrize("kind,style", [("tcp", "v1"), ("unix", "v2")])
def test_mount_through_http_proxy(src_small, blob_server, daemons, tmp_path, kind, style):
    img = util.create(src_small.path, tmp_path / "out")
    srv, addr = blob_server(kind, img.blob_dir)
    conf = proxy_config(addr, tmp_path / "cache", style, tmp_path / "c")
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    got = treecmp.load_dir(d.mountpoint, content=True)
    want = treecmp.load_dir(src_small.path, content=True)
    diffs = treecmp.compare(want, got)
    assert not diffs, treecmp.format_diffs(diffs, want, got) + "\n" + d.describe()
    d.stop()
    d.assert_clean_log()
    gets = [r for r in srv.requests if r[0] == "GET"]
    assert gets and all(r[1] == f"{PREFIX}/{img.blob_ids[0]}" for r in gets), srv.requests[:5]
    # Every read is ranged: nydusd never asks for a whole blob at once.
    assert all(r[2] and r[2].startswith("bytes=") for r in gets), srv.requests[:5]
    assert srv.bytes_sent >= os.path.getsize(img.blob_path()) // 2


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_missing_blob_and_dead_server(src_small, blob_server, daemons, tmp_path, kind):
    img = util.create(src_small.path, tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    srv, addr = blob_server(kind, empty)
    conf = proxy_config(addr, tmp_path / "cache", "v1", tmp_path / "c")
    rc, out, _ = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                      "--bootstrap", img.bootstrap], tmp_path / "mnt", timeout=20)
    assert rc != 0 and "not found" in out and img.blob_ids[0] in out, out

    srv.shutdown()
    srv.server_close()
    if kind == "unix":
        os.unlink(addr)
    rc, out, _ = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt2",
                                      "--bootstrap", img.bootstrap], tmp_path / "mnt2", timeout=20)
    assert rc != 0 and "cannot connect" in out and img.blob_ids[0] in out, out
