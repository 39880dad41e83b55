"""The Prometheus exposition of nydusd (`daemon/src/prometheus.rs`) parses
with the reference Python parsers, and carries the values the renderer was
fed.

The Rust unit test `write_sample_for_the_format_check` renders metrics with
known traffic (3 getattr, 1 failed lookup, 2 backend reads of which 1 failed,
cache hits 1 / misses 2 / entries 3) for two mounts, one with a mountpoint
that needs escaping, into target/metrics-sample.prom (tools/test.sh runs
cargo test first). This test parses that file, rerunning the Rust test when
the file is missing or older than the renderer."""

from __future__ import annotations

import math
import subprocess

import pytest

from util import REPO

prometheus_client = pytest.importorskip("prometheus_client", reason="tools/deps.sh installs prometheus-client")
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus  # noqa: E402

SAMPLE = REPO / "target" / "metrics-sample.prom"
WEIRD = '/sub/"b"'


@pytest.fixture(scope="module")
def text() -> str:
    src = REPO / "daemon" / "src" / "prometheus.rs"
    if SAMPLE.exists() and SAMPLE.stat().st_mtime >= src.stat().st_mtime:
        return SAMPLE.read_text()  # written by this run's `cargo test`
    r = subprocess.run(
        ["cargo", "test", "--release", "--locked", "-p", "nydus-daemon", "--bin", "nydusd", "--",
         "--exact", "prometheus::tests::write_sample_for_the_format_check"],
        cwd=REPO, timeout=600, capture_output=True, text=True,
    )
    assert r.returncode == 0, f"rendering the sample failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return SAMPLE.read_text()


def samples(families, name: str, **labels) -> list[float]:
    return [
        s.value
        for f in families
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def one(families, name: str, **labels) -> float:
    got = samples(families, name, **labels)
    assert len(got) == 1, f"{name} {labels}: {got}"
    return got[0]


@pytest.mark.parametrize("parser", [parse_openmetrics, parse_prometheus], ids=["openmetrics", "prometheus"])
def test_exposition_parses_and_carries_the_values(text, parser):
    families = list(parser(text))
    names = {f.name for f in families}
    for want in ("nydusd_fs_ops", "nydusd_fs_op_errors", "nydusd_fs_op_duration_seconds", "nydusd_fs_read_bytes",
                 "nydusd_fs_read_size_bytes", "nydusd_fs_inflight_requests", "nydusd_backend_reads",
                 "nydusd_backend_read_bytes", "nydusd_backend_read_errors", "nydusd_backend_read_duration_seconds",
                 "nydusd_cache_hits", "nydusd_cache_misses", "nydusd_cache_prefetch_bytes", "nydusd_cache_entries",
                 "nydusd_cache_evictions"):
        assert want in names, f"{want} missing from {sorted(names)}"
    for f in families:
        for s in f.samples:
            assert "mountpoint" in s.labels, s

    a = {"mountpoint": "/mnt/a"}
    assert one(families, "nydusd_fs_ops_total", op="getattr", **a) == 3
    assert one(families, "nydusd_fs_op_errors_total", op="getattr", **a) == 0
    assert one(families, "nydusd_fs_ops_total", op="lookup", **a) == 1
    assert one(families, "nydusd_fs_op_errors_total", op="lookup", **a) == 1
    assert one(families, "nydusd_backend_reads_total", **a) == 2
    assert one(families, "nydusd_backend_read_errors_total", **a) == 1
    assert one(families, "nydusd_backend_read_bytes_total", **a) == 4096
    assert one(families, "nydusd_cache_hits_total", **a) == 1
    assert one(families, "nydusd_cache_misses_total", **a) == 2
    assert one(families, "nydusd_cache_entries", **a) == 3
    # The second mount's awkward name survives escaping, and it has no backend series.
    assert one(families, "nydusd_cache_hits_total", mountpoint=WEIRD) == 1
    assert samples(families, "nydusd_backend_reads_total", mountpoint=WEIRD) == []


def test_histograms_are_cumulative_and_complete(text):
    families = list(parse_openmetrics(text))
    hists = [f for f in families if f.type == "histogram"]
    assert hists
    for f in hists:
        series: dict[tuple, list] = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, []).append(s)
        for key, ss in series.items():
            buckets = [(float(s.labels["le"]), s.value) for s in ss if s.name.endswith("_bucket")]
            count = next(s.value for s in ss if s.name.endswith("_count"))
            assert buckets == sorted(buckets), (f.name, key)
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{f.name} {key}: buckets not cumulative"
            assert buckets[-1][0] == math.inf and buckets[-1][1] == count, (f.name, key)
    lat = [s for f in hists if f.name == "nydusd_backend_read_duration_seconds" for s in f.samples
           if s.name.endswith("_bucket") and s.labels["mountpoint"] == "/mnt/a"]
    le = {s.labels["le"]: s.value for s in lat}
    # One read took 3 ms, the other 30 ms.
    assert (le["0.001"], le["0.005"], le["0.05"], le["+Inf"]) == (0, 1, 2, 2)
