"""nydusd over the registry backend, against Debian's docker-registry.

An image built by nydus-image has its blob pushed to a registry on
127.0.0.1 (no auth, htpasswd Basic auth, Bearer tokens from a test token
server), and nydusd mounts it with ``backend.type = "registry"``: the tree
must equal the source (treecmp). Failures must be clean: a registry that
dies or stalls gives EIO within timeout x (retry_limit + 1) plus slack,
never a hang; wrong or missing credentials give an error that says so,
without the secret.
"""

from __future__ import annotations

import errno
import json
import os
import time

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, guarded, write_config, READ_TIMEOUT  # noqa: F401
from registry import Forwarder, Registry, Staller, basic, PASSWORD

REPO = "test/nydus"


@pytest.fixture
def registries(tmp_path):
    started = []

    def make(auth=None):
        r = Registry(tmp_path / f"registry-{len(started)}", auth)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def staller():
    s = Staller()
    yield s
    s.stop()


def registry_v1(host, cache_dir, **extra) -> dict:
    cfg = {"scheme": "http", "host": host, "repo": REPO, "timeout": 5, "connect_timeout": 2,
           "retry_limit": 1}
    cfg.update(extra)
    return {
        "device": {
            "backend": {"type": "registry", "config": cfg},
            "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(cache_dir)}},
        },
        "mode": "direct",
        "enable_xattr": True,
    }


def registry_v2(host, cache_dir, **extra) -> str:
    lines = ["version = 2", "[backend]", 'type = "registry"', "[backend.registry]",
             'scheme = "http"', f'host = "{host}"', f'repo = "{REPO}"', "retry_limit = 1"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    lines += ["[cache]", 'type = "blobcache"', "[cache.filecache]",
              f"work_dir = {json.dumps(os.fspath(cache_dir))}", "[rafs]", 'mode = "direct"',
              "enable_xattr = true", ""]
    return "\n".join(lines)


def small_file(src_root) -> str:
    """A small regular file of the fixture (one chunk)."""
    for dirpath, _, names in os.walk(src_root):
        for n in sorted(names):
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p) and 100 < os.path.getsize(p) < 4096:
                return os.path.relpath(p, src_root)
    raise AssertionError("no small file in the fixture")


@pytest.mark.parametrize("auth,style", [(None, "v1"), ("basic", "v2"), ("token", "v1"),
                                        ("token-env", "v2")])
def test_mount_from_registry_matches_source(src_small, registries, daemons, tmp_path,
                                            monkeypatch, auth, style):
    reg = registries({"token-env": "token"}.get(auth, auth))
    img = util.create(src_small.path, tmp_path / "out")
    for blob_id in img.blob_ids:
        assert reg.push_blob(REPO, img.blob_dir / blob_id) == "sha256:" + blob_id
    extra = {}
    if auth in ("basic", "token"):
        extra["auth"] = basic()
    elif auth == "token-env":
        monkeypatch.setenv("IMAGE_PULL_AUTH", basic())
    cache = tmp_path / "cache"
    if style == "v1":
        conf = write_config(tmp_path / "c.json", registry_v1(reg.host, cache, **extra))
    else:
        conf = write_config(tmp_path / "c.toml", registry_v2(reg.host, cache, **extra))
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    mounted = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(src_small.tree, mounted)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, mounted) + "\n" + d.describe()
    gets = reg.blob_gets()
    assert gets, "nydusd read nothing from the registry?\n" + reg.log.read_text()[-3000:]
    if auth and auth.startswith("token"):
        issued = (reg.tmp / "token.log").read_text().count("issued ")
        # One for the push; nydusd's readers share one token (no refresh storm).
        assert issued <= 3, f"{issued} tokens issued"
    d.stop()
    d.assert_clean_log()
    assert PASSWORD not in d.log_text() and basic() not in d.log_text()


def _expect_eio(d, path, bound: float):
    t0 = time.monotonic()
    kind, val = guarded(lambda: open(path, "rb").read(), timeout=bound + 20,
                        what=f"read {path}")
    took = time.monotonic() - t0
    assert kind == "err" and val.errno == errno.EIO, \
        f"expected EIO, got {kind} {val!r}\n{d.describe()}"
    assert took <= bound, f"EIO after {took:.1f}s, more than {bound}s\n{d.describe()}"
    assert d.alive(), d.describe()
    return took


def test_dead_registry_gives_eio_quickly(src_small, registries, daemons, tmp_path):
    reg = registries()
    img = util.create(src_small.path, tmp_path / "out")
    reg.push_blob(REPO, img.blob_path())
    conf = write_config(tmp_path / "c.json", registry_v1(reg.host, tmp_path / "cache",
                                                         timeout=2, retry_limit=2))
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
    rel = small_file(src_small.path)
    reg.kill_registry()
    _expect_eio(d, d.mountpoint / rel, bound=15)
    assert "cannot connect" in d.log_text(), d.describe()


def test_stalled_registry_gives_eio_within_timeout(src_small, registries, daemons, tmp_path):
    reg = registries()
    img = util.create(src_small.path, tmp_path / "out")
    reg.push_blob(REPO, img.blob_path())
    fwd = Forwarder(reg.port)
    try:
        timeout, retries = 1, 1
        conf = write_config(tmp_path / "c.json",
                            registry_v1(f"127.0.0.1:{fwd.port}", tmp_path / "cache",
                                        timeout=timeout, retry_limit=retries))
        d = daemons.start(img.bootstrap, tmp_path / "mnt", config=conf)
        rel = small_file(src_small.path)
        fwd.mode = "stall"
        # The kernel may ask twice (readahead, then the read itself): a few
        # timeouts, never a hang.
        _expect_eio(d, d.mountpoint / rel, bound=3 * timeout * (retries + 1) + 8)
        assert "timed out" in d.log_text(), d.describe()
        # Once the registry answers again, the same read succeeds.
        fwd.mode = "pass"
        kind, val = guarded(lambda: (d.mountpoint / rel).read_bytes(), timeout=20)
        assert kind == "ok" and val == (src_small.path / rel).read_bytes(), d.describe()
    finally:
        fwd.stop()


def test_stalled_registry_at_mount_fails_in_bounded_time(src_small, staller, daemons, tmp_path):
    img = util.create(src_small.path, tmp_path / "out")
    conf = write_config(tmp_path / "c.json",
                        registry_v1(f"127.0.0.1:{staller.port}", tmp_path / "cache",
                                    timeout=1, retry_limit=1))
    rc, out, took = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                         "--bootstrap", img.bootstrap], tmp_path / "mnt",
                                        timeout=15)
    assert rc != 0 and "timed out" in out and img.blob_ids[0] in out, out
    assert took < 10, f"{took:.1f}s\n{out}"


@pytest.mark.parametrize("auth,given,says", [
    ("basic", "wrong", "rejected the credentials in `auth`"),
    ("basic", None, "requires credentials"),
    ("token", "wrong", "token server rejected the credentials"),
    ("token", None, "token server requires credentials"),
])
def test_bad_credentials_are_reported(src_small, registries, daemons, tmp_path, monkeypatch,
                                      auth, given, says):
    monkeypatch.delenv("IMAGE_PULL_AUTH", raising=False)
    reg = registries(auth)
    img = util.create(src_small.path, tmp_path / "out")
    reg.push_blob(REPO, img.blob_path())
    extra = {"auth": basic(password="secret-but-wrong")} if given else {}
    conf = write_config(tmp_path / "c.json", registry_v1(reg.host, tmp_path / "cache", **extra))
    rc, out, took = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                         "--bootstrap", img.bootstrap], tmp_path / "mnt")
    assert rc != 0 and says in out and img.blob_ids[0] in out, out
    assert "secret-but-wrong" not in out and basic(password="secret-but-wrong") not in out


def test_missing_blob_is_reported(src_small, registries, daemons, tmp_path):
    reg = registries()
    img = util.create(src_small.path, tmp_path / "out")
    conf = write_config(tmp_path / "c.json", registry_v1(reg.host, tmp_path / "cache"))
    rc, out, took = daemons.run_to_exit(["--config", conf, "--mountpoint", tmp_path / "mnt",
                                         "--bootstrap", img.bootstrap], tmp_path / "mnt")
    assert rc != 0 and f"blob {img.blob_ids[0]} not found" in out, out
