"""Every benchmark script runs, with a tiny size: no timing is asserted here.

The figures come from running the scripts at full size (benchmarks/README.md). A
benchmark whose baseline tool cannot be had (certbot from PyPI, wrk, nginx) or that
needs what this machine refuses (port 80 on 127.x) is skipped, not failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _bench  # noqa: E402

from acmelb.lab.pebble import pebble_binary  # noqa: E402


@pytest.fixture(scope="session")
def certbot() -> Path:
    try:
        return _bench.certbot()  # installed once into benchmarks/.cache/ (PyPI)
    except _bench.Unavailable as exc:
        pytest.skip(str(exc))


def bench(script: str, *args: str, timeout: float = 240) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    if "  skipped: " in proc.stdout:
        pytest.skip(proc.stdout.split("  skipped: ", 1)[1].strip())
    assert "goal:" in proc.stdout, out[-3000:]
    return proc.stdout


def need_pebble() -> None:
    if pebble_binary() is None:
        pytest.skip("pebble is not installed")


def test_startup(certbot: Path) -> None:
    out = bench("bench_startup.py", "--runs", "1")
    assert "acmelb --version / certbot --version" in out


def test_single_issuance(certbot: Path) -> None:
    need_pebble()
    out = bench("bench_issue.py", "--runs", "1")
    assert "acmelb issue / certbot certonly" in out and "protocol floor" in out


def test_bulk_issuance(certbot: Path) -> None:
    need_pebble()
    out = bench(
        "bench_bulk.py", "--names", "3", "--runs", "1", "--certbot-runs", "1", "--concurrency", "3"
    )
    assert "acmelb / certbot" in out


def test_fleet_diagnosis() -> None:
    # a scale run of 250 names: more than fleet.PROCESS_THRESHOLD, so the worker processes
    # run too
    out = bench(
        "bench_diagnose.py", "--names", "80", "--runs", "1", "--responders", "2", "--scale", "250"
    )
    assert "speed-up" in out and "peak memory" in out and "CPU/name" in out
    assert "scale:" in out and "250 names" in out


def test_dns_lookups() -> None:
    out = bench("bench_dns.py", "--names", "40", "--runs", "1", "--server", "nsd")
    assert "lookup_async()" in out and "results: identical in every mode and run" in out


def test_responder() -> None:
    out = bench(
        "bench_responder.py",
        "--runs",
        "1",
        "--duration",
        "1",
        "--soak",
        "2000",
        "--connections",
        "8",
    )
    assert "acmelb serve requests/s / nginx requests/s" in out


@pytest.mark.lab
def test_cluster() -> None:
    # 2 agents and 2 certificates in the cluster lab (root, namespaces, etcd, Pebble)
    need_pebble()
    out = bench("bench_cluster.py", "--tiny", timeout=280)
    assert "time: cluster / baseline" in out and "etcd requests per certificate" in out


def test_renewal_drill() -> None:
    # 2 agents and 2 certificates: the drill, ARI polls, the uncoordinated way
    need_pebble()
    out = bench("bench_renewal.py", "--tiny", timeout=280)
    assert "ARI requests per certificate per interval" in out and "drill:" in out


def test_differential_score() -> None:
    # 20 behaviours of the differential test's generator, judged by this tree
    out = bench("differential_score.py", "--count", "20", "--seed", "3", timeout=120)
    assert "20 behaviours, seed 3" in out and "got 0 of 20" in out


def test_parse_wrk() -> None:
    import bench_responder

    sample = """Running 1s test @ http://127.0.0.1:1/x
  1 threads and 8 connections
  Latency Distribution
     50%  100.00us
     99%    1.50ms
  12345 requests in 1.00s, 2.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
Requests/sec:  12345.67
"""
    assert bench_responder.parse_wrk(sample) == (12345.67, 1.5, 12345, 2)
