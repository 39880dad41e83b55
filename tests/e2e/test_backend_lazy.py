"""Lazy loading over the registry backend, and registries that redirect.

* A 220 MB image is mounted from docker-registry through a counting proxy:
  reading one small file fetches at most 2 MiB plus one merge window, and
  ``find`` + ``stat`` of the whole tree fetches no blob data at all, as
  counted both by the proxy and by nydusd's backend metrics (API socket).
* docker-registry with S3 storage (moto) answers blob GETs with 307
  redirects to the object store, as ECR or Docker Hub's CDN do: nydusd
  follows them, never sends the registry's credentials there, and the
  mounted tree equals the source.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import treecmp
import util
from faultproxy import FaultProxy
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401
from registry import Proc, Registry, basic, free_port, wait_port
from test_api import Api, wait_socket
from test_backend_registry import REPO, registries, registry_v1  # noqa: F401

MIB = 1 << 20
AMPLIFY = 1 * MIB


@pytest.fixture(scope="module")
def src_lazy(tmp_path_factory):
    """220 MB of incompressible files plus a few small ones."""
    root = tmp_path_factory.mktemp("lazy") / "src"
    for d in range(11):
        sub = root / f"dir{d:02d}"
        sub.mkdir(parents=True)
        for i in range(5):
            (sub / f"big{i}.bin").write_bytes(os.urandom(4 * MIB))
        for i in range(20):
            (sub / f"small{i}.txt").write_bytes(os.urandom(300 + 97 * i))
    return root


def test_one_small_file_fetches_little_and_metadata_fetches_nothing(src_lazy, registries,
                                                                    daemons, tmp_path):
    reg = registries()
    img = util.create(src_lazy, tmp_path / "out", compressor="none")
    blob = img.blob_path()
    assert blob.stat().st_size >= 200 * MIB
    reg.push_blob(REPO, blob)
    proxy = FaultProxy(reg.port)
    try:
        cfg = {**registry_v1(proxy.host, tmp_path / "cache"), "amplify_io": AMPLIFY}
        sock = tmp_path / "api.sock"
        d = daemons.start(img.bootstrap, tmp_path / "mnt", config=write_config(tmp_path / "c.json", cfg),
                          extra=["--apisock", sock])
        wait_socket(sock, d)
        api = Api(sock)

        def backend_bytes():  # as nydusd's own backend metrics count them
            return api.ok("GET", "/api/v1/metrics/backend?id=/")["read_amount_total"]

        at_mount = proxy.blob_bytes  # the blob's chunk table
        nydusd_at_mount = backend_bytes()
        assert at_mount < MIB, f"the mount fetched {at_mount} bytes"
        # Metadata only: no blob data.
        entries = 0
        for dirpath, dirnames, names in os.walk(d.mountpoint):
            for n in dirnames + names:
                os.lstat(os.path.join(dirpath, n))
                entries += 1
        assert entries == 11 * 26
        assert proxy.blob_bytes == at_mount, \
            f"find + stat fetched {proxy.blob_bytes - at_mount} blob bytes"
        assert backend_bytes() == nydusd_at_mount, "nydusd's metrics count backend reads for find + stat"
        # One small file: its chunk, plus at most one merge window.
        rel = "dir05/small7.txt"
        assert (d.mountpoint / rel).read_bytes() == (src_lazy / rel).read_bytes()
        fetched = proxy.blob_bytes - at_mount
        assert 0 < fetched <= 2 * MIB + AMPLIFY, f"reading one small file fetched {fetched} bytes"
        by_nydusd = backend_bytes() - nydusd_at_mount
        assert 0 < by_nydusd <= 2 * MIB + AMPLIFY, f"nydusd's metrics: one small file fetched {by_nydusd} bytes"
        d.stop()
    finally:
        proxy.stop()


class S3Registry(Registry):
    """docker-registry keeping its blobs in moto (S3), answering blob GETs with 307."""

    def __init__(self, tmp: Path, s3_port: int, auth: str | None = None):
        self.s3_port = s3_port
        super().__init__(tmp, auth)

    def _storage_yaml(self) -> str:
        return (f"storage: {{s3: {{region: us-east-1, regionendpoint: http://127.0.0.1:{self.s3_port}, "
                f"bucket: registry, accesskey: testing, secretkey: testing, secure: false, "
                f"v4auth: true, rootdirectory: /reg}}, redirect: {{disable: false}}}}\n")


@pytest.fixture
def moto_open(tmp_path):
    """moto_server without signature checks (docker-registry's S3 driver is the
    client), behind a proxy that records the Authorization headers it is sent."""
    binary = shutil.which("moto_server")
    if binary is None:
        pytest.fail("moto_server not installed: run tools/deps.sh", pytrace=False)
    port = free_port()
    log = tmp_path / "moto.log"
    p = Proc([binary, "-H", "127.0.0.1", "-p", str(port)], log,
             env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"})
    wait_port(port, p.proc, log, timeout=30)
    req = urllib.request.Request(f"http://127.0.0.1:{port}/registry", method="PUT", data=b"")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, r.status
    proxy = FaultProxy(port)
    yield proxy, log
    proxy.stop()
    p.stop()


@pytest.mark.parametrize("auth", [None, "basic"])
def test_registry_redirecting_to_s3(src_small, moto_open, daemons, tmp_path, auth):
    s3, s3_log = moto_open
    reg = S3Registry(tmp_path / "registry", s3.port, auth)
    try:
        img = util.create(src_small.path, tmp_path / "out")
        reg.push_blob(REPO, img.blob_path())
        extra = {"auth": basic()} if auth else {}
        cfg = registry_v1(reg.host, tmp_path / "cache", **extra)
        d = daemons.start(img.bootstrap, tmp_path / "mnt", config=write_config(tmp_path / "c.json", cfg))
        mounted = treecmp.load_dir(d.mountpoint)
        diffs = treecmp.compare(src_small.tree, mounted)
        assert not diffs, treecmp.format_diffs(diffs, src_small.tree, mounted) + "\n" + d.describe()
        log = reg.log.read_text(errors="replace")
        assert " 307 " in log or "status=307" in log, "the registry never redirected:\n" + log[-3000:]
        s3_gets = [ln for ln in s3_log.read_text(errors="replace").splitlines()
                   if '"GET /registry/reg/docker/registry/v2/blobs/' in ln]
        assert s3_gets, "no blob GET reached the object store:\n" + s3_log.read_text()[-3000:]
        # The registry's credentials never went to the object store.
        leaked = [a for a in s3.auth_seen if not a.startswith("AWS4-HMAC-SHA256")]
        assert not leaked, f"credentials sent to the redirect target: {leaked}"
        d.stop()
        d.assert_clean_log()
    finally:
        reg.stop()
