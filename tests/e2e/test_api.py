"""The control API over a real Unix socket, with a real FUSE mount: images mounted
at sub-paths, read, swapped under an open file, unmounted; daemon info, log level,
exit; the socket's life cycle; secrets never echoed.

Helpers here (``Api``, ``api_daemon``) are shared with test_api_contract.py and
test_nydusctl.py.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

import util
from nydusd import daemons, nydusd_bin, v1_config, fuse_mounts_at  # noqa: F401  (pytest fixtures)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30.0):
        super().__init__("localhost", timeout=timeout)
        self.path = os.fspath(path)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


class Api:
    """A client of one daemon's API socket."""

    def __init__(self, sock):
        self.sock = Path(sock)

    def call(self, method, path, body=None, *, raw: bytes | None = None, headers=None):
        """(status, parsed JSON or text or None)."""
        c = UnixHTTPConnection(self.sock)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        ctype = r.getheader("Content-Type") or ""
        if text and "json" in ctype:
            return r.status, json.loads(text)
        return r.status, (text or None)

    def ok(self, method, path, body=None, expect=(200, 204)):
        st, v = self.call(method, path, body)
        assert st in (expect if isinstance(expect, tuple) else (expect,)), f"{method} {path} -> {st} {v}"
        return v

    def mount(self, mp, bootstrap, config: dict | str, method="POST", prefetch=None):
        body = {"source": os.fspath(bootstrap), "fs_type": "rafs",
                "config": config if isinstance(config, str) else json.dumps(config)}
        if prefetch is not None:
            body["prefetch_files"] = prefetch
        return self.call(method, f"/api/v1/mount?mountpoint={mp}", body)


def wait_socket(sock: Path, d, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(os.fspath(sock))
                s.close()
                return
            except OSError:
                pass
        if not d.alive():
            pytest.fail(f"nydusd exited before serving its API\n{d.describe()}", pytrace=False)
        time.sleep(0.02)
    pytest.fail(f"API socket {sock} not up after {timeout}s\n{d.describe()}", pytrace=False)


def api_daemon(daemons, tmp: Path, extra=()):
    """nydusd with an empty root and an API socket; returns (daemon, Api, mountpoint)."""
    mp = tmp / "mnt"
    sock = tmp / "api.sock"
    d = daemons.make(["--mountpoint", mp, "--apisock", sock, *extra], mp).start()
    d.wait_mounted()
    wait_socket(sock, d)
    return d, Api(sock), d.mountpoint


def tree(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three small images sharing one blob dir: a, b, and a2 (a new version of a)."""
    base = tmp_path_factory.mktemp("api-images")
    big = os.urandom(3 << 20)
    srcs = {
        "a": {"hello.txt": b"image a\n", "big.bin": big, "only_in_a": b"a", "d/x": b"deep a"},
        "b": {"hello.txt": b"image b\n", "b.bin": os.urandom(100_000)},
        "a2": {"hello.txt": b"image a, version 2\n", "big.bin": big[::-1], "d/x": b"deep a2"},
    }
    out = {}
    for name, files in srcs.items():
        src = tree(base / "src" / name, files)
        out[name] = util.create(src, base / "out" / name, chunk_size=0x10000)
        out[name].files = files
    return out


def cfg(img, cache: Path) -> dict:
    """Config of ``img``: its own blob dir, and a cache dir per blob dir under ``cache``
    (one cache directory serves one backend)."""
    c = cache / img.out.name
    c.mkdir(parents=True, exist_ok=True)
    return v1_config(img.blob_dir, c)


def test_two_images_remount_umount_exit(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    a, b, a2 = images["a"], images["b"], images["a2"]
    st, _ = api.mount("/a", a.bootstrap, cfg(a, cache))
    assert st == 204, _
    st, _ = api.mount("/sub/b", b.bootstrap, cfg(b, cache))
    assert st == 204, _
    assert sorted(os.listdir(mp)) == ["a", "sub"]
    for img, root in ((a, mp / "a"), (b, mp / "sub" / "b")):
        for rel, data in img.files.items():
            assert (root / rel).read_bytes() == data, rel

    info = api.ok("GET", "/api/v1/daemon")
    assert info["state"] == "RUNNING"
    assert set(info["backend_collection"]) == {"/a", "/sub/b"}
    assert info["backend_collection"]["/a"]["backend_type"] == "localfs"
    assert info["version"]["package_ver"]
    v2 = api.ok("GET", "/api/v2/daemon")
    assert {m["mountpoint"] for m in v2["mounts"]} == {"/a", "/sub/b"}
    backend = api.ok("GET", "/api/v1/daemon/backend?mountpoint=/a")
    assert backend["backend_config"]["dir"] == os.fspath(a.blob_dir)
    blobs = api.ok("GET", "/api/v2/blobs")
    assert {x["blob_id"] for x in blobs} == set(a.blob_ids) | set(b.blob_ids)

    # Swap /a's image while a reader holds an old file open.
    old = open(mp / "a" / "big.bin", "rb")
    head = old.read(4096)
    assert head == a.files["big.bin"][:4096]
    st, body = api.mount("/a", a2.bootstrap, cfg(a2, cache), method="PUT")
    assert st == 204, body
    # The reader keeps reading the old file's bytes, never the new file's.
    rest = old.read()
    assert head + rest == a.files["big.bin"]
    old.close()
    # New opens see the new image; names only in the old image are gone.
    assert (mp / "a" / "hello.txt").read_bytes() == a2.files["hello.txt"]
    assert (mp / "a" / "big.bin").read_bytes() == a2.files["big.bin"]
    assert (mp / "a" / "d" / "x").read_bytes() == b"deep a2"
    assert not (mp / "a" / "only_in_a").exists()
    # The other image was not disturbed.
    assert (mp / "sub" / "b" / "hello.txt").read_bytes() == b"image b\n"

    assert api.ok("DELETE", "/api/v1/mount?mountpoint=/sub/b") is None
    assert not (mp / "sub" / "b").exists()
    assert (mp / "a" / "hello.txt").read_bytes() == a2.files["hello.txt"]
    st, e = api.call("DELETE", "/api/v1/mount?mountpoint=/sub/b")
    assert st == 404 and e["code"] == "NotFound"

    assert api.ok("PUT", "/api/v1/daemon/exit") is None
    assert d.wait_exit(10) == 0, d.describe()
    assert not api.sock.exists(), "API socket left behind"
    assert not fuse_mounts_at(mp)
    d.assert_clean_log(allow=[r"nothing is mounted at /sub/b"])


def test_root_image_from_the_command_line_can_be_swapped(daemons, tmp_path, images):
    a, a2 = images["a"], images["a2"]
    cache = tmp_path / "cache"
    cache.mkdir()
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps(cfg(a, cache)))
    sock = tmp_path / "api.sock"
    d = daemons.start(a.bootstrap, tmp_path / "mnt", config=conf, extra=["--apisock", sock])
    wait_socket(sock, d)
    api, mp = Api(sock), d.mountpoint
    assert (mp / "only_in_a").exists()
    old = open(mp / "hello.txt", "rb")
    st, body = api.mount("/", a2.bootstrap, cfg(a2, cache), method="PUT")
    assert st == 204, body
    assert old.read() == a.files["hello.txt"]
    old.close()
    assert (mp / "hello.txt").read_bytes() == a2.files["hello.txt"]
    assert not (mp / "only_in_a").exists()
    assert api.ok("GET", "/api/v2/daemon")["mounts"][0]["source"] == os.fspath(a2.bootstrap)


def test_mount_errors_leave_the_daemon_serving(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    a = images["a"]
    assert api.mount("/a", a.bootstrap, cfg(a, cache))[0] == 204
    st, e = api.mount("/a", a.bootstrap, cfg(a, cache))
    assert st == 409 and "already mounted" in e["message"]
    st, e = api.mount("/x", tmp_path / "missing", cfg(a, cache))
    assert st == 400 and "cannot read bootstrap" in e["message"]
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(8192))
    st, e = api.mount("/x", garbage, cfg(a, cache))
    assert st == 400 and "invalid bootstrap" in e["message"]
    st, e = api.mount("/x", a.bootstrap, "{not a config")
    assert st == 400 and e["code"] == "BadRequest"
    other = tmp_path / "other-blobs"
    other.mkdir()
    st, e = api.mount("/x", a.bootstrap, v1_config(other, cache / a.out.name))
    assert st == 409 and "work_dir" in e["message"]
    st, e = api.mount("/nothere", a.bootstrap, cfg(a, cache), method="PUT")
    assert st == 404
    st, e = api.call("POST", "/api/v1/mount?mountpoint=/y", {"source": "/b", "fs_type": "ext4", "config": "{}"})
    assert st == 400
    assert not (mp / "x").exists() and not (mp / "y").exists()
    assert (mp / "a" / "hello.txt").read_bytes() == a.files["hello.txt"]
    ev = api.ok("GET", "/api/v1/daemon/events")
    assert ev["total_errors"] >= 5 and any("already mounted" in x for x in ev["errors"])
    assert d.alive()


def test_log_level_changes_at_run_time(daemons, tmp_path):
    d, api, _ = api_daemon(daemons, tmp_path)
    api.ok("GET", "/api/v1/daemon")
    assert "API request" not in d.log_text()
    assert api.ok("PUT", "/api/v1/daemon", {"log_level": "debug"}) is None
    api.ok("GET", "/api/v1/daemon")
    assert "API request" in d.log_text()
    assert api.ok("GET", "/api/v1/config")["log_level"] == "debug"
    st, e = api.call("PUT", "/api/v1/daemon", {"log_level": "loud"})
    assert st == 400 and "invalid log level" in e["message"]
    assert api.ok("PUT", "/api/v1/config", {"log_level": "info"}) is None
    assert api.ok("GET", "/api/v1/config")["log_level"] == "info"


def test_socket_stale_replaced_live_refused(daemons, tmp_path):
    sock = tmp_path / "api.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.fspath(sock))
    s.close()  # a socket file nobody listens on, as a crashed daemon leaves
    d, api, _ = api_daemon(daemons, tmp_path)
    assert api.ok("GET", "/api/v1/daemon")["state"] == "RUNNING"
    assert (sock.stat().st_mode & 0o777) == 0o600
    rc, out, _ = daemons.run_to_exit(["--mountpoint", tmp_path / "mnt2", "--apisock", sock], tmp_path / "mnt2")
    assert rc != 0 and "another nydusd is using" in out, out
    assert api.ok("GET", "/api/v1/daemon")["state"] == "RUNNING"


SECRET_AUTH = "dXNlcjpzM2NyZXQtcGFzc3dvcmQ="
SECRET_KEY = "AKIAS3CRETKEYVALUE0"


def test_secrets_never_echoed(daemons, tmp_path, images):
    d, api, _ = api_daemon(daemons, tmp_path, extra=["--log-level", "debug"])
    a = images["a"]
    cache = tmp_path / "cache"
    cache.mkdir()
    reg = {"device": {"backend": {"type": "registry", "config": {
        "scheme": "http", "host": "127.0.0.1:1", "repo": "x/y", "auth": SECRET_AUTH,
        "registry_token": SECRET_KEY, "timeout": 1, "connect_timeout": 1, "retry_limit": 0}},
        "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(cache)}}}}
    st, body = api.mount("/r", a.bootstrap, reg)
    texts = [json.dumps(body)]
    if st == 204:
        texts.append(json.dumps(api.ok("GET", "/api/v1/daemon")))
        texts.append(json.dumps(api.ok("GET", "/api/v1/config")))
        texts.append(json.dumps(api.ok("GET", "/api/v1/daemon/backend?mountpoint=/r")))
    texts.append(json.dumps(api.ok("GET", "/api/v1/daemon/events")))
    texts.append(d.log_text())
    for t in texts:
        assert SECRET_AUTH not in t and SECRET_KEY not in t, t[:2000]


def _build(api, body, timeout=60.0):
    """POST /api/v1/build and wait for the job's end; returns its last status."""
    st, v = api.call("POST", "/api/v1/build", body)
    assert st == 202, f"{st} {v}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.ok("GET", f"/api/v1/build/{v['id']}")
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"build {v['id']} did not end in {timeout}s")


def test_build_api_tar_source_and_chunk_dict(daemons, tmp_path, images):
    """A tar layer through the API equals the CLI's build; a chunk dict is honoured."""
    d, api, _ = api_daemon(daemons, tmp_path)
    a = images["a"]
    layer = tmp_path / "a.tar"
    subprocess.run(["tar", "-cf", layer, "-C", a.src, "."], check=True)
    ref = util.create(layer, tmp_path / "cli", chunk_size=0x10000, extra=["--type", "tar-rafs"])
    out = tmp_path / "api"
    (out / "blobs").mkdir(parents=True)
    job = _build(api, {"source": str(layer), "source_type": "tar-rafs", "bootstrap": str(out / "boot"),
                       "blob_dir": str(out / "blobs"), "chunk_size": "0x10000"})
    assert job["state"] == "succeeded", job
    assert (out / "boot").read_bytes() == ref.bootstrap.read_bytes()
    # Image a as the dictionary of a rebuild of a: no chunk is stored again.
    (out / "blobs2").mkdir()
    job = _build(api, {"source": str(a.src), "bootstrap": str(out / "again"), "blob_dir": str(out / "blobs2"),
                       "chunk_size": "0x10000", "chunk_dict": f"bootstrap={a.bootstrap}"})
    assert job["state"] == "succeeded", job
    stored = sum(p.stat().st_size for p in (out / "blobs2").iterdir())
    assert stored < 64 << 10, f"{stored} bytes stored although every chunk is in the dictionary"
    st, v = api.call("POST", "/api/v1/build", {"source": str(a.src), "source_type": "squashfs",
                                                "bootstrap": str(out / "x"), "blob_dir": str(out / "blobs")})
    assert st == 400 and "squashfs" in v["message"], f"{st} {v}"
    d.stop()
