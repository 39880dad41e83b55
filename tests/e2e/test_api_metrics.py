"""Metrics through the API: upstream's JSON shapes per mount, Prometheus text on the
socket and on TCP (--metrics-addr) that a real parser accepts, and counters that move by
exactly the bytes read through FUSE.
"""

from __future__ import annotations

import http.client
import json
import os
import socket

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from nydusd import daemons, nydusd_bin  # noqa: F401  (pytest fixtures)
from test_api import Api, api_daemon, cfg, images, wait_socket  # noqa: F401  (images is a fixture)
from test_nydusctl import ctl


def sample(text: str, name: str, **labels) -> float:
    total = 0.0
    found = False
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    assert found, f"no sample {name} {labels}"
    return total


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def test_counters_follow_reads(daemons, tmp_path, images):
    port = free_port()
    d, api, mp = api_daemon(daemons, tmp_path, extra=["--metrics-addr", f"127.0.0.1:{port}"])
    a, b = images["a"], images["b"]
    conf = cfg(a, tmp_path / "cache")
    conf["iostats_files"] = True
    assert api.mount("/a", a.bootstrap, conf)[0] == 204
    assert api.mount("/b", b.bootstrap, cfg(b, tmp_path / "cache"))[0] == 204

    st, text = api.call("GET", "/metrics")
    assert st == 200 and text.rstrip().endswith("# EOF")
    before = sample(text, "nydusd_fs_read_bytes_total", mountpoint="/a")
    g0 = api.ok("GET", "/api/v1/metrics?id=/a")
    drop_caches()
    data = (mp / "a" / "big.bin").read_bytes()
    assert data == a.files["big.bin"]

    st, text = api.call("GET", "/metrics")
    after = sample(text, "nydusd_fs_read_bytes_total", mountpoint="/a")
    assert after - before == len(data)
    assert sample(text, "nydusd_fs_read_bytes_total", mountpoint="/b") == 0
    served = sample(text, "nydusd_cache_hits_total", mountpoint="/a") + \
        sample(text, "nydusd_cache_misses_total", mountpoint="/a")
    assert served >= len(data) // 0x10000
    assert sample(text, "nydusd_backend_read_bytes_total", mountpoint="/a") > 0

    g1 = api.ok("GET", "/api/v1/metrics?id=/a")
    assert g1["data_read"] - g0["data_read"] == len(data)
    assert g1["files_account_enabled"] is True
    files = api.ok("GET", "/api/v1/metrics/files?id=/a")
    assert "/big.bin" in json.dumps(files)
    cache = api.ok("GET", "/api/v1/metrics/blobcache?id=/a")
    assert cache["backend_bytes"] > 0 and cache["hits"] + cache["misses"] > 0
    backend = api.ok("GET", "/api/v1/metrics/backend?id=/a")
    assert isinstance(backend, dict) and backend
    assert isinstance(api.ok("GET", "/api/v1/metrics/inflight?id=/a"), (list, dict))
    api.ok("GET", "/api/v1/metrics/pattern?id=/a")
    both = api.ok("GET", "/api/v1/metrics")
    assert set(both) == {"/a", "/b"}
    st, e = api.call("GET", "/api/v1/metrics?id=/zz")
    assert st == 404

    # The same text over TCP, and nothing else there.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    tcp = r.read().decode()
    assert r.status == 200 and sample(tcp, "nydusd_fs_read_bytes_total", mountpoint="/a") == after
    c.request("GET", "/api/v1/daemon")
    r = c.getresponse()
    r.read()
    assert r.status == 404

    out, _ = ctl(api.sock, "metrics", "-m", "/a")
    assert "data_read" in out
    out, _ = ctl(api.sock, "metrics", "cache", "-m", "/a")
    assert "misses" in out
    raw, _ = ctl(api.sock, "--raw", "metrics", "backend", "-m", "/a")
    assert json.loads(raw) == api.ok("GET", "/api/v1/metrics/backend?id=/a")
    _, err = ctl(api.sock, "metrics", "bogus", rc=1)
    assert "unknown metrics" in err
