#!/usr/bin/env python3
"""Benchmark 5: the challenge responder, ``acmelb serve`` vs nginx serving the same token.

Both on 127.0.0.1 (own ports), measured by ``wrk`` with keep-alive and with
``Connection: close`` (validators do not keep connections): requests/s and p99
latency, rounds interleaved, the ratio acmelb/nginx pair by pair. Then a soak of
``--soak`` requests (default 1,000,000, alternating keep-alive and close) on each, with
the server's resident memory (its processes' VmRSS) before and after.

Fairness on this 2-core machine: nginx runs one worker (``worker_processes 1``), as
acmelb serve is one event loop; with ``taskset`` present the server is pinned to CPU 0
and wrk (one thread) to CPU 1.

    .venv/bin/python benchmarks/bench_responder.py [--runs 3] [--duration 5] [--soak 1000000]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

NGINX_CONF = """
{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        location /.well-known/acme-challenge/ {{ default_type text/plain; }}
    }}
}}
"""

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> tuple[float, float, int, int]:
    """(requests/s, p99 in ms, requests, socket errors + non-2xx) from wrk --latency."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    p99 = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, p99, total, errors + (int(bad.group(1)) if bad else 0)


def server_rss_mib(proc: subprocess.Popen[bytes]) -> float:
    return sum(b.rss_kib(pid) for pid in [proc.pid, *b.children(proc.pid)]) / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="rounds per mode (default 3)")
    p.add_argument("--duration", type=float, default=5, help="seconds per wrk run (5)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (64)")
    p.add_argument("--soak", type=int, default=1_000_000, help="requests in the soak")
    args = p.parse_args(argv)

    b.header("responder: acmelb serve vs nginx (1 worker) under wrk")
    wrk = b.tool("wrk", "wrk")
    nginx = b.tool("nginx", "nginx-light")
    pin_server: list[str] = []
    pin_client: list[str] = []
    if shutil.which("taskset"):
        pin_server, pin_client = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    token = secrets.token_urlsafe(32)
    key = f"{token}.{secrets.token_urlsafe(32)}"
    with tempfile.TemporaryDirectory(prefix="acmelb-bench-responder-") as tmp:
        work = Path(tmp)
        (work / "tmp").mkdir()
        challenge_dir = work / "www" / ".well-known" / "acme-challenge"
        challenge_dir.mkdir(parents=True)
        (challenge_dir / token).write_text(key)
        n_port, a_port = b.free_port(), b.free_port()
        conf = work / "nginx.conf"
        # the workers must read the token in this private temporary directory
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(NGINX_CONF.format(dir=work, port=n_port, user=user))
        servers = {
            "nginx": subprocess.Popen(
                [*pin_server, nginx, "-c", str(conf), "-p", str(work)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            "acmelb serve": subprocess.Popen(
                [
                    *pin_server,
                    *b.ACMELB,
                    "serve",
                    "--address",
                    "127.0.0.1",
                    "--port",
                    str(a_port),
                    f"--token={token}",
                    f"--key={key}",
                    "--quiet",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        }
        ports = {"nginx": n_port, "acmelb serve": a_port}
        try:
            for name, port in ports.items():
                b.wait_port("127.0.0.1", port)
                got = b.run(
                    ["curl", "-s", f"http://127.0.0.1:{port}/.well-known/acme-challenge/{token}"],
                    timeout=10,
                ).stdout
                if got != key:
                    raise RuntimeError(f"{name} answered {got[:80]!r}, not the key")

            def bench(name: str, close: bool, seconds: float) -> tuple[float, float, int]:
                url = f"http://127.0.0.1:{ports[name]}/.well-known/acme-challenge/{token}"
                cmd = [
                    *pin_client,
                    wrk,
                    "-t1",
                    f"-c{args.connections}",
                    f"-d{seconds:g}s",
                    "--latency",
                    url,
                ]
                if close:
                    cmd[-1:-1] = ["-H", "Connection: close"]
                out = b.run(cmd, timeout=seconds + 60).check().stdout
                rps, p99, total, errors = parse_wrk(out)
                if errors > total * 0.01:
                    raise RuntimeError(f"{name}: {errors} errors in {total} requests:\n{out}")
                return rps, p99, total

            for name in servers:  # warm-up, not counted
                bench(name, False, 1)
                bench(name, True, 1)
            rss_before = {name: server_rss_mib(proc) for name, proc in servers.items()}
            served = dict.fromkeys(servers, 0)
            for mode, close in (("keep-alive", False), ("Connection: close", True)):
                rps = {n: b.Series(f"{n} requests/s", "/s") for n in servers}
                p99 = {n: b.Series(f"{n} p99", "ms") for n in servers}
                for _ in range(args.runs):
                    for name in servers:
                        r, lat, total = bench(name, close, args.duration)
                        rps[name].add(r)
                        p99[name].add(lat)
                        served[name] += total
                print(f"  -- {mode}")
                ratio = b.ratios(rps["acmelb serve"], rps["nginx"])
                lat_ratio = b.ratios(p99["acmelb serve"], p99["nginx"])
                lat_ratio.label = "acmelb serve p99 / nginx p99"
                b.show(*rps.values(), *p99.values(), ratio, lat_ratio)
                b.goal(f">= 0.6 x nginx requests/s with {mode}", ratio.median >= 0.6)
            print(
                f"  -- memory (VmRSS) over a soak of {args.soak:,} requests per server "
                "(alternating keep-alive and close)"
            )
            for name, proc in servers.items():
                chunk = 0
                while served[name] < args.soak and chunk < 200:
                    served[name] += bench(name, chunk % 2 == 1, args.duration)[2]
                    chunk += 1
                after = server_rss_mib(proc)
                growth = after - rss_before[name]
                print(
                    f"  {name}: {rss_before[name]:.1f} MiB after warm-up, {after:.1f} MiB "
                    f"after {served[name]:,} requests ({growth:+.1f} MiB)",
                    flush=True,
                )
                if name == "acmelb serve":
                    b.goal("acmelb serve memory flat (growth < 5 MiB)", growth < 5)
        finally:
            for proc in servers.values():
                b.stop(proc)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except b.Unavailable as exc:
        print(f"  skipped: {exc}")
        sys.exit(0)
