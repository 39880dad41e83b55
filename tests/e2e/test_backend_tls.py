"""The registry backend over HTTPS (docker-registry with TLS on 127.0.0.1).

The blob is pushed to a plain registry, and a second registry serves the
same storage over TLS with a self-signed certificate: nydusd trusts it
through ``ca_cert_files`` or ``skip_verify``, and refuses it, saying why,
with neither.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import treecmp
import util
from nydusd import daemons, nydusd_bin, write_config  # noqa: F401
from registry import Registry
from test_backend_registry import REPO, registries, registry_v1  # noqa: F401


class TlsRegistry(Registry):
    """docker-registry over HTTPS, serving the storage of another registry."""

    def __init__(self, tmp: Path, data: Path, cert: Path, key: Path):
        self.data, self.cert, self.key = data, cert, key
        super().__init__(tmp)

    def _http_yaml(self) -> str:
        return f"http: {{addr: {self.host}, tls: {{certificate: {self.cert}, key: {self.key}}}}}\n"

    def _storage_yaml(self) -> str:
        return f"storage: {{filesystem: {{rootdirectory: {self.data}}}}}\n"


@pytest.fixture
def tls_image(src_small, registries, tmp_path):
    plain = registries()
    img = util.create(src_small.path, tmp_path / "out")
    plain.push_blob(REPO, img.blob_path())
    # A test CA, and a server certificate for 127.0.0.1 signed by it (rustls
    # refuses a self-signed CA certificate used as the server's own).
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "key.pem", "srv.csr", "cert.pem"))
    ext = tmp_path / "srv.ext"
    ext.write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
    for cmd in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
                 "-subj", "/CN=nydus test CA"],
                ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
                ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                 "-days", "2", "-extfile", ext]):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    reg = TlsRegistry(tmp_path / "tls", plain.tmp / "data", cert, key)
    yield img, reg, ca
    reg.stop()


@pytest.mark.parametrize("trust", ["ca_cert_files", "skip_verify"])
def test_https_registry_mounts(src_small, tls_image, daemons, tmp_path, trust):
    img, reg, cert = tls_image
    extra = {"ca_cert_files": [str(cert)]} if trust == "ca_cert_files" else {"skip_verify": True}
    cfg = registry_v1(reg.host, tmp_path / "cache", scheme="https", **extra)
    d = daemons.start(img.bootstrap, tmp_path / "mnt", config=write_config(tmp_path / "c.json", cfg))
    mounted = treecmp.load_dir(d.mountpoint)
    diffs = treecmp.compare(src_small.tree, mounted)
    assert not diffs, treecmp.format_diffs(diffs, src_small.tree, mounted) + "\n" + d.describe()
    assert reg.blob_gets(), "no blob GET reached the TLS registry"
    d.stop()


def test_untrusted_certificate_is_refused_clearly(tls_image, daemons, tmp_path):
    img, reg, _ = tls_image
    cfg = registry_v1(reg.host, tmp_path / "cache", scheme="https", retry_limit=0)
    rc, out, took = daemons.run_to_exit(["--config", write_config(tmp_path / "c.json", cfg), "--mountpoint",
                                         tmp_path / "mnt", "--bootstrap", img.bootstrap], tmp_path / "mnt")
    assert rc != 0 and "certificate" in out and "ca_cert_files" in out, out
