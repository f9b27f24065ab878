#!/usr/bin/env python3
"""Benchmark 3: fleet diagnosis, ``acmelb diagnose --from-file`` vs a sequential curl loop.

N names (default 1,000) spread over responders on 127.0.10.1..127.0.10.K port 80
(nginx with one worker answering any token with TOKEN.THUMBPRINT like a stateless
responder; ``acmelb serve --stateless`` when nginx is missing), published by a DNS
server on 127.0.0.1 (``_dns.py``: one event loop, the zone indexed once).

* acmelb: ``acmelb diagnose --from-file NAMES --thumbprint X --assume-public
  127.0.0.0/8 --json`` in three variants: names given with ``--resolve`` and
  ``--repeat 1`` (the loop's work: one fetch per name, no DNS), the same with
  ``--repeat 3`` (the default probing), and ``--dns-server`` with ``--repeat 3``
  (A, AAAA and CAA lookups too). Every check runs; the JSON is then checked to be
  complete (one report per name, every probe answered, verdict pass).
* baseline: a shell loop running ``curl -s -o /dev/null --resolve NAME:80:ADDR URL``
  once per name, one after the other (one fetch per name, no DNS).

Peak memory: the larger of ru_maxrss and the peak of the summed PSS of acmelb and
its worker processes, sampled every 20 ms.

    .venv/bin/python benchmarks/bench_diagnose.py [--names 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

NGINX_CONF = """
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
    server {{
        {listen}
        location ~ "^/\\.well-known/acme-challenge/([A-Za-z0-9_-]+)$" {{
            default_type text/plain;
            return 200 "$1.{thumbprint}";
        }}
    }}
}}
"""


def start_responders(
    work: Path, addresses: list[str], thumbprint: str
) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if Path(nginx).exists():
        (work / "tmp").mkdir(exist_ok=True)
        listen = "\n        ".join(f"listen {a}:80;" for a in addresses)
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=work, listen=listen, thumbprint=thumbprint))
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(work)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        what = "nginx (1 worker)"
    else:
        cmd = [
            *b.ACMELB,
            "serve",
            "--stateless",
            f"--thumbprint={thumbprint}",
            "--port",
            "80",
            "--quiet",
        ]
        for a in addresses:
            cmd += ["--address", a]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        what = "acmelb serve --stateless (nginx not found)"
    try:
        for a in addresses:
            b.wait_port(a, 80)
    except BaseException:
        b.stop(proc)
        raise
    return proc, what


def check_reports(text: str, names: list[str], repeat: int) -> str | None:
    """None when the JSON holds a complete, passing report for every name."""
    try:
        docs = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    if not isinstance(docs, list) or len(docs) != len(names):
        return f"{len(docs) if isinstance(docs, list) else 'no'} reports for {len(names)} names"
    for doc, name in zip(docs, names, strict=True):
        if doc.get("name") != name:
            return f"report for {doc.get('name')} where {name} was expected"
        answered = [
            p
            for p in doc["probes"]
            if p["outcome"] == "response" and p["status"] == 200 and not p["proxy_protocol"]
        ]
        if len(answered) < repeat or doc["verdicts"].get("acme-ca") != "pass" or not doc["ok"]:
            return f"{name}: incomplete or failing report: {json.dumps(doc)[:400]}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=1000, help="names to diagnose (default 1000)")
    p.add_argument("--runs", type=int, default=3, help="measured rounds (default 3)")
    p.add_argument("--responders", type=int, default=10, help="responder addresses (10)")
    p.add_argument("--repeat", type=int, default=3, help="acmelb diagnose --repeat (3)")
    args = p.parse_args(argv)

    b.header(
        f"fleet diagnosis of {args.names} names: acmelb diagnose --from-file vs a "
        "sequential curl loop"
    )
    curl = b.tool("curl", "curl")
    addresses = [f"127.0.10.{i + 1}" for i in range(args.responders)]
    if not all(b.can_bind(a, 80) for a in addresses):
        raise b.Unavailable("port 80 on 127.0.10.x cannot be bound (run as root)")
    thumbprint = secrets.token_urlsafe(32)
    names = [f"n{i}.fleet.test" for i in range(args.names)]
    mapping = {n: addresses[i % len(addresses)] for i, n in enumerate(names)}
    with tempfile.TemporaryDirectory(prefix="acmelb-bench-fleet-") as tmp:
        work = Path(tmp)
        dns_port = b.free_port()
        zone = {"names": {n: {"A": [a]} for n, a in mapping.items()}}
        responders, what = start_responders(work, addresses, thumbprint)
        try:
            zone_file = work / "zone.json"
            zone_file.write_text(json.dumps(zone))
            dns = subprocess.Popen(
                [
                    b.PYTHON,
                    str(b.HERE / "_dns.py"),
                    "--listen",
                    f"127.0.0.1:{dns_port}",
                    "--zone",
                    str(zone_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
            assert dns.stdout is not None
            if dns.stdout.readline().strip() != b"ready":
                b.stop(dns)
                raise RuntimeError("the benchmark's DNS server did not start")
            try:
                names_file = work / "names.txt"
                names_file.write_text("".join(n + "\n" for n in names))
                pairs = work / "pairs.txt"
                pairs.write_text("".join(f"{n} {a}\n" for n, a in mapping.items()))
                token = secrets.token_urlsafe(32)
                loop = (
                    "while read n a; do " + curl + ' -s -o /dev/null --resolve "$n:80:$a" '
                    f'"http://$n/.well-known/acme-challenge/{token}" || exit 1; '
                    f"done < {pairs}"
                )
                base = [
                    *b.ACMELB,
                    "diagnose",
                    "--from-file",
                    str(names_file),
                    f"--thumbprint={thumbprint}",
                    "--assume-public",
                    "127.0.0.0/8",
                    "--timeout",
                    "2",
                    "--json",
                ]
                resolve = [f"--resolve={n}:{a}" for n, a in mapping.items()]
                variants = {
                    # the same work as the loop: one fetch per name, names given like curl's
                    "acmelb --resolve --repeat 1": ([*base, *resolve, "--repeat", "1"], 1),
                    # the default probing: 3 fetches per name
                    f"acmelb --resolve --repeat {args.repeat}": (
                        [*base, *resolve, "--repeat", str(args.repeat)],
                        args.repeat,
                    ),
                    # everything: A, AAAA and CAA lookups from the DNS server, 3 fetches
                    f"acmelb --dns-server --repeat {args.repeat}": (
                        [
                            *base,
                            "--dns-server",
                            f"127.0.0.1:{dns_port}",
                            "--repeat",
                            str(args.repeat),
                        ],
                        args.repeat,
                    ),
                }
                series = {k: b.Series(k, "s") for k in variants}
                memory = {k: b.Series(k, "MiB") for k in variants}
                s_curl = b.Series("curl loop (1 fetch/name)", "s")
                for i in range(args.runs + 1):  # round 0 warms up, not counted
                    c = b.run(["bash", "-c", loop], timeout=1200).check()
                    for label, (cmd, repeat) in variants.items():
                        r = b.run(cmd, timeout=600, sample_tree=True)
                        problem = (
                            check_reports(r.stdout, names, repeat)
                            if r.returncode == 0
                            else f"exit {r.returncode}: {r.stderr[-500:]}"
                        )
                        if problem:
                            raise RuntimeError(f"{label}: {problem}")
                        if i:
                            series[label].add(r.seconds)
                            memory[label].add(r.peak_mib)
                    if i:
                        s_curl.add(c.seconds)
                b.note(
                    f"responders: {what} on {len(addresses)} addresses; every report was "
                    "checked complete (one per name, every probe answered 200, acme-ca pass)"
                )
                print(f"  time for {args.names} names:")
                b.show(s_curl, *series.values())
                rate = b.Series("curl loop", "fetches/s")
                rate.values = [args.names / v for v in s_curl.values]
                print("  rate:")
                b.show(rate)
                print("  speed-up (curl loop time / acmelb time, pair by pair):")
                speed = {}
                for label, s in series.items():
                    speed[label] = b.ratios(s_curl, s)
                    speed[label].label = label
                b.show(*speed.values())
                print("  peak memory (ru_maxrss, or the sampled PSS sum with worker processes):")
                b.show(*memory.values())
                for label, sp in speed.items():
                    b.goal(f">= 10 x faster than the curl loop: {label}", sp.median >= 10)
                b.goal("peak memory <= 150 MiB", max(max(m.values) for m in memory.values()) <= 150)
            finally:
                b.stop(dns)
        finally:
            b.stop(responders)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except b.Unavailable as exc:
        print(f"  skipped: {exc}")
        sys.exit(0)
