"""nydusctl against a live nydusd: each command's human output and --raw JSON, errors
with their exit status, and a build through the daemon that yields the same bootstrap
and blob as `nydus-image create --repeatable`.
"""

from __future__ import annotations

import json
import os
import subprocess

import util
from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_api import api_daemon, cfg, images  # noqa: F401  (images is a fixture)

NYDUSCTL = util.REPO / "target" / "release" / "nydusctl"


def ctl(sock, *args, rc=0):
    p = subprocess.run([os.fspath(NYDUSCTL), "--sock", os.fspath(sock), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == rc, f"nydusctl {args} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout, p.stderr


def test_commands(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    a = images["a"]
    conf = tmp_path / "a.json"
    conf.write_text(json.dumps(cfg(a, tmp_path / "cache")))
    out, _ = ctl(api.sock, "mount", "-s", a.bootstrap, "-c", conf, "-m", "/img")
    assert f"mounted {a.bootstrap} at /img" in out
    assert (mp / "img" / "hello.txt").read_bytes() == a.files["hello.txt"]
    _, err = ctl(api.sock, "mount", "-s", a.bootstrap, "-c", conf, "-m", "/img", rc=1)
    assert "HTTP 409" in err and "already mounted" in err

    out, _ = ctl(api.sock, "info")
    assert "RUNNING" in out and "MOUNTPOINT" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("/img"))
    assert "rafs" in row and "localfs" in row and os.fspath(a.bootstrap) in row
    raw, _ = ctl(api.sock, "--raw", "info")
    assert json.loads(raw)["mounts"][0]["mountpoint"] == "/img"

    out, _ = ctl(api.sock, "set", "log-level", "debug")
    assert "log level set to debug" in out
    assert json.loads(ctl(api.sock, "--raw", "info")[0])["state"] == "RUNNING"
    assert "API request" in d.log_text()
    _, err = ctl(api.sock, "set", "log-level", "chatty", rc=1)
    assert "invalid log level" in err
    _, err = ctl(api.sock, "set", "colour", "blue", rc=1)
    assert "unknown setting" in err

    a2 = images["a2"]
    conf2 = tmp_path / "a2.json"
    conf2.write_text(json.dumps(cfg(a2, tmp_path / "cache")))
    out, _ = ctl(api.sock, "mount", "--replace", "-s", a2.bootstrap, "-c", conf2, "-m", "/img")
    assert (mp / "img" / "hello.txt").read_bytes() == a2.files["hello.txt"]

    out, _ = ctl(api.sock, "umount", "-m", "/img")
    assert "unmounted /img" in out
    assert not (mp / "img").exists()
    _, err = ctl(api.sock, "umount", "-m", "/img", rc=1)
    assert "HTTP 404" in err

    out, _ = ctl(api.sock, "exit")
    assert "exiting" in out
    assert d.wait_exit(10) == 0
    _, err = ctl(api.sock, "info", rc=1)
    assert "is nydusd running with --apisock" in err


def test_build_matches_the_cli(daemons, tmp_path, images):
    d, api, mp = api_daemon(daemons, tmp_path)
    a = images["a"]
    ref = util.create(a.src, tmp_path / "cli", chunk_size=0x100000, repeatable=True)
    out_dir = tmp_path / "api"
    (out_dir / "blobs").mkdir(parents=True)
    boot = out_dir / "bootstrap"
    out, _ = ctl(api.sock, "build", a.src, "-B", boot, "-D", out_dir / "blobs", "-c", "zstd", "-S", "0x100000")
    assert "succeeded" in out and ref.blob_ids[0] in out
    assert boot.read_bytes() == ref.bootstrap.read_bytes()
    assert (out_dir / "blobs" / ref.blob_ids[0]).read_bytes() == ref.blob_path(0).read_bytes()

    raw, _ = ctl(api.sock, "--raw", "build", a.src, "-B", out_dir / "b2", "-D", out_dir / "blobs")
    v = json.loads(raw)
    assert v["state"] == "succeeded" and v["result"]["blobs"] == ref.blob_ids
    assert v["progress"]["files"] == len(a.files) and v["progress"]["bytes"] > 0

    out, err = ctl(api.sock, "build", tmp_path / "no-such-dir", "-B", out_dir / "b3", "-D", out_dir / "blobs", rc=1)
    assert "failed" in out and "no-such-dir" in err
    assert not (out_dir / "b3").exists()
