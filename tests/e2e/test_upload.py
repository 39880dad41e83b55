"""nydus-image create --backend-type registry|localfs: the blob is uploaded
after the build, skipped when the backend has it, and the image mounts from
there with nydusd.

The registry is Debian's docker-registry on 127.0.0.1 (no auth, htpasswd
Basic auth, Bearer tokens from the test token server). A small image goes
up in one PUT, one with a blob over 8 MiB in PATCH chunks. Failures (dead
registry, wrong password, bad settings) are clean errors that name the
backend and the blob, never print the secret, and keep the local outputs.
"""

from __future__ import annotations

import json
import os
import re

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401
from registry import PASSWORD, basic
from test_backend_registry import registries, registry_v1  # noqa: F401  (pytest fixture)

REPO = "test/upload"


def reg_config(reg, auth=None, **extra) -> str:
    cfg = {"scheme": "http", "host": reg.host, "repo": REPO, "timeout": 10, "retry_limit": 1}
    if auth:
        cfg["auth"] = auth
    cfg.update(extra)
    return json.dumps(cfg)


def requests(reg, method: str) -> int:
    """Blob API requests of ``method`` the registry accepted (401s, the
    first leg of every authenticated exchange, left out)."""
    pat = re.compile(rf'"{method} /v2/{re.escape(REPO)}/blobs/\S* HTTP/1.1" (\d+)')
    return sum(1 for m in pat.finditer(reg.log.read_text(errors="replace")) if m.group(1) != "401")


def create_upload(src, out, backend: str, config: str, *, blob_dir=True, extra=(), expect_rc=0):
    out.mkdir(parents=True, exist_ok=True)
    args = ["create", src, "-B", out / "bootstrap", "-J", out / "create.json",
            "--backend-type", backend, "--backend-config", config, *extra]
    if blob_dir:
        (out / "blobs").mkdir(exist_ok=True)
        args += ["-D", out / "blobs"]
    return util.run_nydus(args, expect_rc=expect_rc)


def mount_and_compare(daemons, bootstrap, conf, mnt, src):
    d = daemons.start(bootstrap, mnt, config=conf)
    want = treecmp.load_dir(src, content=True)
    got = treecmp.load_dir(d.mountpoint, content=True)
    diffs = treecmp.compare(want, got)
    assert not diffs, treecmp.format_diffs(diffs, want, got) + "\n" + d.describe()
    d.stop()
    d.assert_clean_log()


@pytest.mark.parametrize("auth,source", [(None, "mini"), ("basic", "small"), ("token", "mini"),
                                         ("token", "small")])
def test_push_to_registry_then_mount(src_mini, src_small, registries, daemons, tmp_path, auth,
                                     source):
    """mini: a small blob, one PUT; small: an 18 MiB blob, PATCH chunks."""
    src = src_mini.path if source == "mini" else src_small.path
    reg = registries(auth)
    cred = basic() if auth else None
    res = create_upload(src, tmp_path / "out", "registry", reg_config(reg, cred))
    info = json.loads((tmp_path / "out" / "create.json").read_text())
    (blob_id,) = info["blobs"]
    size = info["blob_sizes"][0]
    assert "blob uploaded" in res.stderr, res.describe()
    assert (tmp_path / "out" / "blobs" / blob_id).is_file(), "the local blob must stay"
    assert PASSWORD not in res.stderr and basic() not in res.stderr
    patches = requests(reg, "PATCH")
    if source == "small":
        assert size > 8 << 20, size
        assert patches == (size + (8 << 20) - 1) // (8 << 20), reg.log.read_text()[-3000:]
    else:
        assert size <= 8 << 20 and patches == 0, (size, patches)
    assert requests(reg, "PUT") == 1

    # Building again: the registry has the blob, nothing is sent.
    res = create_upload(src, tmp_path / "out2", "registry", reg_config(reg, cred))
    assert "already has the blob" in res.stderr, res.describe()
    assert requests(reg, "PUT") == 1 and requests(reg, "POST") == 1
    assert requests(reg, "HEAD") >= 2

    cfg = registry_v1(reg.host, tmp_path / "cache", **({"auth": cred} if cred else {}))
    cfg["device"]["backend"]["config"]["repo"] = REPO
    conf = write_config(tmp_path / "c.json", cfg)
    mount_and_compare(daemons, tmp_path / "out" / "bootstrap", conf, tmp_path / "mnt", src)


def test_localfs_upload_without_blob_output(src_small, daemons, tmp_path):
    """Upstream's form: -B only, the blob goes to the localfs dir."""
    store = tmp_path / "store"
    store.mkdir()
    out = tmp_path / "out"
    cfg = json.dumps({"dir": os.fspath(store)})
    res = create_upload(src_small.path, out, "localfs", cfg, blob_dir=False)
    info = json.loads((out / "create.json").read_text())
    (blob_id,) = info["blobs"]
    assert sorted(os.listdir(store)) == [blob_id], res.describe()
    assert util.sha256_file(store / blob_id) == blob_id
    assert os.stat(store / blob_id).st_mode & 0o777 == 0o644
    # The temporary blob directory is gone; only our outputs remain.
    assert sorted(os.listdir(out)) == ["bootstrap", "create.json"], os.listdir(out)

    res = create_upload(src_small.path, tmp_path / "out2", "localfs", cfg, blob_dir=False)
    assert "already has the blob" in res.stderr, res.describe()

    conf = write_config(tmp_path / "c.json", {
        "device": {"backend": {"type": "localfs", "config": {"dir": os.fspath(store)}},
                   "cache": {"type": "blobcache", "config": {"work_dir": os.fspath(tmp_path / "cache")}}},
        "mode": "direct", "enable_xattr": True})
    mount_and_compare(daemons, out / "bootstrap", conf, tmp_path / "mnt", src_small.path)


def test_dead_registry_is_a_clean_error_and_keeps_outputs(src_small, tmp_path):
    port = util_free_port()
    cfg = json.dumps({"scheme": "http", "host": f"127.0.0.1:{port}", "repo": REPO,
                      "auth": basic(password="not-shown"), "connect_timeout": 1})
    out = tmp_path / "out"
    res = create_upload(src_small.path, out, "registry", cfg, blob_dir=False, expect_rc=1)
    info = json.loads((out / "create.json").read_text())
    (blob_id,) = info["blobs"]
    util.assert_clean_error(res, mentions=[blob_id, "registry backend"], cause="cannot connect")
    assert (out / "bootstrap").is_file()
    kept = [p for p in out.iterdir() if p.name.startswith(".nydus-blobs-")]
    assert len(kept) == 1 and (kept[0] / blob_id).is_file(), list(out.iterdir())
    assert os.fspath(kept[0]) in res.stderr
    assert "not-shown" not in res.stderr and basic(password="not-shown") not in res.stderr


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_wrong_password_is_reported(src_small, registries, tmp_path, auth):
    reg = registries(auth)
    wrong = basic(password="wrong-secret")
    res = create_upload(src_small.path, tmp_path / "out", "registry", reg_config(reg, wrong),
                        expect_rc=1)
    util.assert_clean_error(res, mentions=["registry backend"], cause="rejected the credentials")
    assert "wrong-secret" not in res.stderr and wrong not in res.stderr
    assert requests(reg, "PUT") == 0


@pytest.mark.parametrize("args,cause", [
    (["--backend-type", "registry", "--backend-config", "{not json"], "not valid JSON"),
    (["--backend-type", "registry", "--backend-config", '{"host": "h"}'], "repo"),
    (["--backend-type", "registry"], "needs the backend's settings"),
    (["--backend-type", "localfs", "--backend-config", '{"dir": "/nonexistent/x"}'],
     "/nonexistent/x"),
    (["--backend-type", "registry", "--blob-id", "custom",
      "--backend-config", '{"host": "127.0.0.1:1", "repo": "a/b"}'], "not a sha256 digest"),
    (["--backend-type", "localfs", "--backend-config-file", "/nonexistent/cfg.json"],
     "cannot read --backend-config-file"),
])
def test_bad_upload_settings_fail_before_building(src_mini, tmp_path, args, cause):
    out = tmp_path / "out"
    out.mkdir()
    res = util.run_nydus(["create", src_mini.path, "-B", out / "bootstrap", *args])
    if "--blob-id" in args:
        # The id is checked when the upload starts, after the build.
        util.assert_clean_error(res, cause=cause)
        return
    util.assert_clean_error(res, cause=cause, absent=[out / "bootstrap"])
    assert os.listdir(out) == []


def util_free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
