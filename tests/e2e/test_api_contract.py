"""The API answers as api/openapi.yaml documents: every path and method is exercised,
each answer's status is one the file lists for it, and its JSON body validates against
the documented schema. Then hostile input: malformed JSON, unknown fields, wrong types,
missing query parameters, a 10 MB body, a half-sent request and 200 concurrent
connections get 4xx answers (or just their own connection closed) while the daemon keeps
serving reads through FUSE.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

import jsonschema
import pytest
import yaml

import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_api import Api, api_daemon, cfg, images  # noqa: F401  (images is a fixture)

SPEC = yaml.safe_load((util.REPO / "api" / "openapi.yaml").read_text())


def to_json_schema(node):
    """OpenAPI 3.0 schema -> JSON Schema: inline $refs, turn `nullable` into a null type."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return to_json_schema(target)
    out = {k: to_json_schema(v) for k, v in node.items() if k not in ("nullable", "description", "default")}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    return out


def documented(method: str, path: str) -> dict:
    op = SPEC["paths"][path][method.lower()]
    return {int(code): to_json_schema(resp) for code, resp in op["responses"].items()}


def check(api: Api, method: str, template: str, url: str, body=None, raw=None, expect=None):
    """Call, and check the answer against the spec; returns (status, body)."""
    st, v = api.call(method, url, body, raw=raw)
    responses = documented(method, template)
    assert st in responses, f"{method} {url} -> {st} (documented: {sorted(responses)}): {v}"
    if expect is not None:
        assert st in (expect if isinstance(expect, tuple) else (expect,)), f"{method} {url} -> {st}: {v}"
    resp = responses[st]
    content = resp.get("content", {})
    if "application/json" in content:
        assert not isinstance(v, str), f"{method} {url}: JSON documented, got text {v!r:.200}"
        jsonschema.validate(v, content["application/json"]["schema"])
    elif content:
        assert isinstance(v, str), f"{method} {url}: text documented, got {v!r:.200}"
    else:
        assert v is None, f"{method} {url}: no body documented, got {v!r:.200}"
    EXERCISED.add((method.lower(), template))
    return st, v


EXERCISED: set = set()


def test_every_documented_path_answers_as_documented(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    a, b = images["a"], images["b"]
    cache = tmp_path / "cache"
    mount_body = {"source": os.fspath(a.bootstrap), "fs_type": "rafs", "config": json.dumps(cfg(a, cache))}
    check(api, "POST", "/api/v1/mount", "/api/v1/mount?mountpoint=/a", mount_body, expect=204)
    check(api, "POST", "/api/v1/mount", "/api/v1/mount?mountpoint=/a", mount_body, expect=409)
    check(api, "PUT", "/api/v1/mount", "/api/v1/mount?mountpoint=/a", mount_body, expect=204)
    check(api, "PUT", "/api/v1/mount", "/api/v1/mount?mountpoint=/none", mount_body, expect=404)
    b_body = {"source": os.fspath(b.bootstrap), "config": json.dumps(cfg(b, cache))}
    check(api, "POST", "/api/v1/mount", "/api/v1/mount?mountpoint=/b", b_body, expect=204)
    check(api, "DELETE", "/api/v1/mount", "/api/v1/mount?mountpoint=/b", expect=204)
    check(api, "DELETE", "/api/v1/mount", "/api/v1/mount?mountpoint=/b", expect=404)
    check(api, "DELETE", "/api/v1/mount", "/api/v1/mount", expect=400)

    check(api, "GET", "/api/v1/daemon", "/api/v1/daemon", expect=200)
    check(api, "PUT", "/api/v1/daemon", "/api/v1/daemon", {"log_level": "info"}, expect=204)
    check(api, "PUT", "/api/v1/daemon", "/api/v1/daemon", {"log_level": "x"}, expect=400)
    check(api, "GET", "/api/v1/daemon/events", "/api/v1/daemon/events", expect=200)
    check(api, "GET", "/api/v1/daemon/backend", "/api/v1/daemon/backend?mountpoint=/a", expect=200)
    check(api, "GET", "/api/v1/daemon/backend", "/api/v1/daemon/backend?mountpoint=/zz", expect=404)
    check(api, "GET", "/api/v1/daemon/backend", "/api/v1/daemon/backend", expect=400)
    for p in ("/api/v1/metrics", "/api/v1/metrics/files", "/api/v1/metrics/pattern", "/api/v1/metrics/backend",
              "/api/v1/metrics/blobcache", "/api/v1/metrics/inflight"):
        check(api, "GET", p, p)
        check(api, "GET", p, p + "?id=/a")
    check(api, "GET", "/metrics", "/metrics")
    check(api, "GET", "/api/v1/config", "/api/v1/config", expect=200)
    check(api, "PUT", "/api/v1/config", "/api/v1/config", {"log_level": "info"}, expect=204)
    check(api, "GET", "/api/v2/daemon", "/api/v2/daemon", expect=200)
    check(api, "PUT", "/api/v2/daemon", "/api/v2/daemon", {"log_level": "info"}, expect=204)
    check(api, "GET", "/api/v2/blobs", "/api/v2/blobs", expect=200)
    check(api, "GET", "/api/v2/blobs", "/api/v2/blobs?id=/nope", expect=404)
    check(api, "PUT", "/api/v2/blobs", "/api/v2/blobs", {"type": "bootstrap", "id": "x"}, expect=501)
    check(api, "DELETE", "/api/v2/blobs", "/api/v2/blobs?blob_id=x", expect=501)
    check(api, "DELETE", "/api/v2/blobs", "/api/v2/blobs", expect=400)

    out = tmp_path / "built"
    (out / "blobs").mkdir(parents=True)
    req = {"source": os.fspath(a.src), "bootstrap": os.fspath(out / "boot"), "blob_dir": os.fspath(out / "blobs")}
    _, job = check(api, "POST", "/api/v1/build", "/api/v1/build", req, expect=202)
    check(api, "POST", "/api/v1/build", "/api/v1/build", dict(req, compressor="brotli"), expect=400)
    deadline = time.monotonic() + 30
    while True:
        _, st = check(api, "GET", "/api/v1/build/{id}", f"/api/v1/build/{job['id']}", expect=200)
        if st["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert st["state"] == "succeeded", st
    check(api, "GET", "/api/v1/build/{id}", "/api/v1/build/build-999999", expect=404)

    check(api, "PUT", "/api/v1/daemon/exit", "/api/v1/daemon/exit", expect=204)
    assert d.wait_exit(10) == 0, d.describe()
    documented_ops = {(m, p) for p, ops in SPEC["paths"].items() for m in ops}
    assert documented_ops - EXERCISED == set()


@pytest.fixture
def serving(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    a = images["a"]
    assert api.mount("/a", a.bootstrap, cfg(a, tmp_path / "cache"))[0] == 204
    return d, api, mp, a


def reads_ok(mp, a):
    assert (mp / "a" / "hello.txt").read_bytes() == a.files["hello.txt"]
    assert (mp / "a" / "big.bin").read_bytes() == a.files["big.bin"]


def test_bad_bodies_and_queries_are_4xx(serving):
    d, api, mp, a = serving
    good = {"source": os.fspath(a.bootstrap), "config": "{}"}
    cases = [
        ("PUT", "/api/v1/daemon", b"{not json", 400),
        ("PUT", "/api/v1/daemon", b'{"log_level": "info", "extra": 1}', 400),
        ("PUT", "/api/v1/daemon", b'{"log_level": 7}', 400),
        ("PUT", "/api/v1/daemon", b"", 400),
        ("POST", "/api/v1/mount?mountpoint=/x", json.dumps(dict(good, unknown=True)).encode(), 400),
        ("POST", "/api/v1/mount?mountpoint=/x", json.dumps(dict(good, prefetch_files="nope")).encode(), 400),
        ("POST", "/api/v1/mount?mountpoint=/x", b'["a list"]', 400),
        ("POST", "/api/v1/mount", json.dumps(good).encode(), 400),
        ("POST", "/api/v1/mount?mountpoint=relative", json.dumps(good).encode(), 400),
        ("POST", "/api/v1/mount?mountpoint=/x/../y", json.dumps(good).encode(), 400),
        ("POST", "/api/v1/mount?mountpoint=%ZZ", json.dumps(good).encode(), 400),
        ("GET", "/api/v1/daemon/backend", None, 400),
        ("POST", "/api/v1/build", b'{"source": 1}', 400),
        ("GET", "/api/v1/nothing", None, 404),
        ("DELETE", "/api/v1/daemon", None, 405),
        ("POST", "/metrics", b"{}", 405),
    ]
    for method, path, raw, want in cases:
        st, v = api.call(method, path, raw=raw)
        assert st == want, f"{method} {path} {raw!r:.60} -> {st} {v}"
        assert isinstance(v, dict) and set(v) == {"code", "message"} and v["message"], v
    # 10 MB with a Content-Length: refused before the body is read (the server may close
    # while the client is still sending).
    big = b"PUT /api/v1/daemon HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (10 << 20)
    out = raw_exchange(api.sock, big + b"x" * (10 << 20))
    assert out.startswith(b"HTTP/1.1 413"), out[:100]
    assert b'"code":"PayloadTooLarge"' in out
    reads_ok(mp, a)
    assert d.alive()


def raw_exchange(sock_path, data: bytes, timeout=10.0) -> bytes:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(os.fspath(sock_path))
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            out += piece
    except OSError:
        pass
    s.close()
    return out


def test_half_sent_streamed_and_garbage_requests(serving):
    d, api, mp, a = serving
    # A 10 MB body sent without a length (chunked): cut off with 413.
    chunk = b"x" * (1 << 20)
    stream = b"PUT /api/v1/daemon HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    stream += b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    assert raw_exchange(api.sock, stream).startswith(b"HTTP/1.1 413"), "streamed 10 MB body"
    # Not HTTP at all.
    out = raw_exchange(api.sock, b"\x00\x01garbage\r\n\r\n")
    assert out == b"" or re.match(rb"HTTP/1.1 4\d\d", out), out[:100]
    # Half-sent requests: other clients are served meanwhile, the daemon reads on.
    halves = []
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX)
        s.connect(os.fspath(api.sock))
        s.sendall(b"GET /api/v1/daemon HTTP/1.1\r\nHost: x\r\nContent-Le")
        halves.append(s)
    t = time.monotonic()
    assert api.ok("GET", "/api/v1/daemon")["state"] == "RUNNING"
    reads_ok(mp, a)
    assert time.monotonic() - t < 2.0
    # The server gives up on them after its header timeout.
    for s in halves:
        s.settimeout(15)
        try:
            data = s.recv(1024)
        except OSError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:80]
        s.close()


def test_200_concurrent_connections(serving):
    d, api, mp, a = serving
    statuses = []
    lock = threading.Lock()

    def one(i):
        st, _ = api.call("GET", "/api/v1/daemon" if i % 2 else "/api/v1/daemon/backend?mountpoint=/a")
        with lock:
            statuses.append(st)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    reader_ok = []
    r = threading.Thread(target=lambda: reader_ok.append(reads_ok(mp, a) is None))
    for t in threads:
        t.start()
    r.start()
    for t in threads + [r]:
        t.join(60)
    assert statuses.count(200) == 200, sorted(set(statuses))
    assert reader_ok == [True]
    assert d.alive()
