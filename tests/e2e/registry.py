"""Helpers for the registry-backend tests: Debian's ``docker-registry``
(distribution 2.8) on 127.0.0.1 with no auth, htpasswd Basic auth, or
Bearer tokens from a small token server (``token_server.py``, stdlib +
``cryptography``); blob pushes through the OCI distribution API with
urllib (monolithic upload: POST, then PUT ?digest=); and a "staller" that
accepts connections and never answers.

Every process is started with its PID kept and killed by PID when the
fixture ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
USER, PASSWORD = "testuser", "testpass"
SERVICE = "test-registry"


def basic(user: str = USER, password: str = PASSWORD) -> str:
    """base64 of user:password, as the registry backend's ``auth`` holds it."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited ({proc.returncode}) before listening on {port}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s:\n"
                f"{log.read_text(errors='replace')[-3000:]}", pytrace=False)


class Proc:
    """A background server process, killed by PID on stop()."""

    def __init__(self, cmd: list, log: Path, env=None):
        self.log = log
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([c if isinstance(c, str) else os.fspath(c) if isinstance(c, os.PathLike) else str(c) for c in cmd], stdin=subprocess.DEVNULL,
                                         stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def registry_env() -> dict:
    """docker-registry's environment: its S3 driver fails on the
    AWS_CA_BUNDLE this machine's environment sets."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


class Registry:
    """docker-registry serving from ``root``; ``auth`` is None, "basic" or "token"."""

    def __init__(self, tmp: Path, auth: str | None = None):
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.fail("docker-registry not installed: run tools/deps.sh", pytrace=False)
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.token_port = None
        auth_yml = ""
        if auth == "basic":
            htpasswd = self.tmp / "htpasswd"
            with open(htpasswd, "w") as f:
                subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], stdout=f, check=True)
            auth_yml = f"auth: {{htpasswd: {{realm: basic-realm, path: {htpasswd}}}}}\n"
        elif auth == "token":
            key, cert = self.tmp / "key.pem", self.tmp / "cert.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                            key, "-out", cert, "-days", "2", "-subj", "/CN=issuer"],
                           check=True, capture_output=True)
            self.token_port = free_port()
            tlog = self.tmp / "token.log"
            self.procs.append(Proc([sys.executable, HERE / "token_server.py", self.token_port,
                                    key, cert], tlog))
            wait_port(self.token_port, self.procs[-1].proc, tlog)
            auth_yml = (f"auth: {{token: {{realm: http://127.0.0.1:{self.token_port}/token, "
                        f"service: {SERVICE}, issuer: test-issuer, rootcertbundle: {cert}}}}}\n")
        elif auth is not None:
            raise ValueError(auth)
        conf = self.tmp / "registry.yml"
        conf.write_text(f"version: 0.1\nlog: {{level: info}}\n"
                        f"{self._storage_yaml()}"
                        f"{self._http_yaml()}{auth_yml}")
        self.log = self.tmp / "registry.log"
        self.procs.append(Proc([binary, "serve", conf], self.log, env=registry_env()))
        wait_port(self.port, self.procs[-1].proc, self.log)

    def _http_yaml(self) -> str:
        """The registry's ``http:`` section (subclasses add TLS)."""
        return f"http: {{addr: {self.host}}}\n"

    def _storage_yaml(self) -> str:
        """The registry's ``storage:`` section (subclasses store elsewhere)."""
        return f"storage: {{filesystem: {{rootdirectory: {self.tmp / 'data'}}}}}\n"

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def kill_registry(self) -> None:
        """Stop the registry itself (not the token server)."""
        self.procs[-1].stop()

    def restart_registry(self) -> None:
        """Start the registry again after kill_registry(): same port, config and data."""
        self.procs[-1] = Proc([shutil.which("docker-registry"), "serve", self.tmp / "registry.yml"], self.log,
                              env=registry_env())
        wait_port(self.port, self.procs[-1].proc, self.log)

    # -- client side ------------------------------------------------------
    def _auth_header(self, repo: str) -> dict:
        if self.auth == "basic":
            return {"Authorization": "Basic " + basic()}
        if self.auth == "token":
            q = urllib.parse.urlencode({"service": SERVICE, "scope": f"repository:{repo}:pull,push"})
            req = urllib.request.Request(f"http://127.0.0.1:{self.token_port}/token?{q}",
                                         headers={"Authorization": "Basic " + basic()})
            with urllib.request.urlopen(req, timeout=10) as r:
                return {"Authorization": "Bearer " + json.load(r)["token"]}
        return {}

    def push_blob(self, repo: str, path: Path) -> str:
        """Monolithic upload of the file at ``path``; returns its digest."""
        data = Path(path).read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        hdr = self._auth_header(repo)
        base = f"http://{self.host}"
        req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST",
                                     headers=hdr, data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 202, r.status
            loc = urllib.parse.urljoin(base, r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        req = urllib.request.Request(f"{loc}{sep}digest={urllib.parse.quote(digest)}",
                                     method="PUT", data=data,
                                     headers=dict(hdr, **{"Content-Type": "application/octet-stream"}))
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 201, r.status
        return digest

    def blob_gets(self) -> list:
        """Lines of the registry log about blob GETs."""
        return [ln for ln in self.log.read_text(errors="replace").splitlines()
                if '"GET /v2/' in ln and "/blobs/" in ln]


class Staller:
    """Accepts TCP connections on 127.0.0.1 and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


class Forwarder:
    """A TCP forwarder 127.0.0.1:port -> 127.0.0.1:target that can be told to
    stall: in mode "stall", new connections are accepted and never answered,
    and open ones stop forwarding."""

    def __init__(self, target: int):
        self.target = target
        self.mode = "pass"
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.mode == "pass":
                try:
                    u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                except OSError:
                    c.close()
                    continue
                self.conns.append(u)
                threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
                threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                while self.mode != "pass":
                    time.sleep(0.05)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.mode = "pass"
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
