#!/usr/bin/env python3
"""Benchmark 3: fleet diagnosis, ``acmelb diagnose --from-file`` vs a sequential curl loop.

N names (default 1,000) spread over responders on 127.0.10.1..127.0.10.K port 80
(nginx with one worker answering any token with TOKEN.THUMBPRINT like a stateless
responder; ``acmelb serve --stateless`` when nginx is missing), published by a real
DNS server on 127.0.0.1 (NSD, ``_nsd.py``; the Python ``_dns.py`` without it).

* acmelb: ``acmelb diagnose --from-file NAMES --thumbprint X --assume-public
  127.0.0.0/8 --json`` (JSON Lines, one report a line as each name finishes) in
  three variants: names given with ``--resolve`` and ``--repeat 1`` (the loop's
  work: one fetch per name, no DNS), the same with ``--repeat 3`` (the default
  probing), and ``--dns-server`` with ``--repeat 3`` (A, AAAA and CAA lookups too).
  Every check runs; the output is then checked complete (one report per name, every
  probe answered, verdict pass). Time, names per second, CPU per name (user +
  system of acmelb and anything it started), peak memory.
* baseline: a shell loop running ``curl -s -o /dev/null --resolve NAME:80:ADDR URL``
  once per name, one after the other (one fetch per name, no DNS), in the same rounds.
* scale: the ``--dns-server`` variant once on ``--scale`` names (10,000): peak
  memory, and time per name against the 1,000-name runs (linear growth).

Peak memory: the larger of ru_maxrss and the peak of the summed PSS of acmelb and
any process it starts, sampled every 20 ms.

    .venv/bin/python benchmarks/bench_diagnose.py [--names 1000] [--runs 3] [--scale 10000]
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
import _nsd
from compare_reports import parse_reports

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
    """None when the JSON Lines (or, from the engine before, the array) hold a complete,
    passing report for every name."""
    try:
        docs = {doc["name"]: doc for doc in parse_reports(text)}
    except (ValueError, KeyError, TypeError) as exc:
        return f"not JSON reports: {exc}"
    if len(docs) != len(names) or set(docs) != set(names):
        return f"{len(docs)} reports for {len(names)} names"
    for name in names:
        doc = docs[name]
        answered = [
            p
            for p in doc["probes"]
            if p["outcome"] == "response" and p["status"] == 200 and not p["proxy_protocol"]
        ]
        if len(answered) < repeat or doc["verdicts"].get("acme-ca") != "pass" or not doc["ok"]:
            return f"{name}: incomplete or failing report: {json.dumps(doc)[:400]}"
    return None


def start_dns(
    work: Path, port: int, mapping: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """NSD serving the names (a real DNS server, in C: its CPU does not eat the cores the
    fleet runs on); the Python server of ``_dns.py`` when NSD is not installed."""
    if _nsd.nsd_path() is not None:
        names = {n: {"A": [a]} for n, a in mapping.items()}
        return _nsd.start_nsd(work / "nsd", port, "fleet.test", names), "NSD"
    zone_file = work / "zone.json"
    zone_file.write_text(json.dumps({"names": {n: {"A": [a]} for n, a in mapping.items()}}))
    dns = subprocess.Popen(
        [b.PYTHON, str(b.HERE / "_dns.py"), "--listen", f"127.0.0.1:{port}", "--zone",
         str(zone_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert dns.stdout is not None
    if dns.stdout.readline().strip() != b"ready":
        b.stop(dns)
        raise RuntimeError("the benchmark's DNS server did not start")
    return dns, "_dns.py (Python; NSD not installed)"


def acmelb_variants(
    names_file: Path, thumbprint: str, mapping: dict[str, str], dns_port: int, repeat: int
) -> dict[str, tuple[list[str], int]]:
    base = [
        *b.ACMELB, "diagnose", "--from-file", str(names_file), f"--thumbprint={thumbprint}",
        "--assume-public", "127.0.0.0/8", "--timeout", "2", "--json",
    ]  # fmt: skip
    resolve = [f"--resolve={n}:{a}" for n, a in mapping.items()]
    dns = ["--dns-server", f"127.0.0.1:{dns_port}"]
    return {
        # the same work as the loop: one fetch per name, names given like curl's
        "acmelb --resolve --repeat 1": ([*base, *resolve, "--repeat", "1"], 1),
        # the default probing: 3 fetches per name
        f"acmelb --resolve --repeat {repeat}": ([*base, *resolve, "--repeat", str(repeat)], repeat),
        # everything: A, AAAA and CAA lookups from the DNS server, 3 fetches
        f"acmelb --dns-server --repeat {repeat}": ([*base, *dns, "--repeat", str(repeat)], repeat),
    }


def fleet_names(count: int, addresses: list[str]) -> dict[str, str]:
    return {f"n{i}.fleet.test": addresses[i % len(addresses)] for i in range(count)}


def run_checked(label: str, cmd: list[str], names: list[str], repeat: int) -> b.Run:
    r = b.run(cmd, timeout=1200, sample_tree=True)
    problem = (
        check_reports(r.stdout, names, repeat)
        if r.returncode == 0
        else f"exit {r.returncode}: {r.stderr[-500:]}"
    )
    if problem:
        raise RuntimeError(f"{label}: {problem}")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=1000, help="names to diagnose (default 1000)")
    p.add_argument("--runs", type=int, default=3, help="measured rounds (default 3)")
    p.add_argument("--responders", type=int, default=10, help="responder addresses (10)")
    p.add_argument("--repeat", type=int, default=3, help="acmelb diagnose --repeat (3)")
    p.add_argument(
        "--scale", type=int, default=10000, help="names of the scale run (10000; 0: none)"
    )
    p.add_argument(
        "--before",
        type=Path,
        help="a tree of an earlier acmelb (a git worktree): its --dns-server variant runs "
        "in the same rounds, for the engine's own speed-up",
    )
    args = p.parse_args(argv)

    b.header(
        f"fleet diagnosis of {args.names} names: acmelb diagnose --from-file vs a "
        "sequential curl loop"
    )
    curl = b.tool("curl", "curl")
    addresses = [f"127.0.10.{i + 1}" for i in range(args.responders)]
    if not all(b.can_bind(a, 80) for a in addresses):
        raise b.Unavailable("port 80 on 127.0.10.x cannot be bound (run as root)")
    # as an installed package is (pip compiles it): no run compiles acmelb's modules again,
    # which this machine's PYTHONDONTWRITEBYTECODE=1 would make every run do
    subprocess.run([b.PYTHON, "-m", "compileall", "-q", str(b.REPO / "src" / "acmelb")], check=True)
    thumbprint = secrets.token_urlsafe(32)
    mapping = fleet_names(max(args.names, args.scale), addresses)
    every = list(mapping)
    names = every[: args.names]
    with tempfile.TemporaryDirectory(prefix="acmelb-bench-fleet-") as tmp:
        work = Path(tmp)
        responders, what = start_responders(work, addresses, thumbprint)
        try:
            dns_port = b.free_port()
            dns, dns_what = start_dns(work, dns_port, mapping)
            try:
                measure(
                    args, work, curl, thumbprint, mapping, names, every, dns_port, what, dns_what
                )
            finally:
                b.stop(dns)
        finally:
            b.stop(responders)
    return 0


def measure(
    args: argparse.Namespace,
    work: Path,
    curl: str,
    thumbprint: str,
    mapping: dict[str, str],
    names: list[str],
    every: list[str],
    dns_port: int,
    what: str,
    dns_what: str,
) -> None:
    names_file = work / "names.txt"
    names_file.write_text("".join(n + "\n" for n in names))
    pairs = work / "pairs.txt"
    pairs.write_text("".join(f"{n} {mapping[n]}\n" for n in names))
    token = secrets.token_urlsafe(32)
    loop = (
        "while read n a; do " + curl + ' -s -o /dev/null --resolve "$n:80:$a" '
        f'"http://$n/.well-known/acme-challenge/{token}" || exit 1; '
        f"done < {pairs}"
    )
    variants = acmelb_variants(
        names_file, thumbprint, {n: mapping[n] for n in names}, dns_port, args.repeat
    )
    if args.before is not None:
        label, (cmd, repeat) = list(variants.items())[-1]
        src = args.before.resolve() / "src"
        subprocess.run([b.PYTHON, "-m", "compileall", "-q", str(src / "acmelb")], check=True)
        before = ["env", f"PYTHONPATH={src}", b.PYTHON, "-m", "acmelb", *cmd[len(b.ACMELB) :]]
        variants[f"before ({args.before.name}): {label}"] = (before, repeat)
    series = {k: b.Series(k, "s") for k in variants}
    cpu = {k: b.Series(k, "ms CPU/name") for k in variants}
    memory = {k: b.Series(k, "MiB") for k in variants}
    s_curl = b.Series("curl loop (1 fetch/name)", "s")
    for i in range(args.runs + 1):  # round 0 warms up, not counted
        c = b.run(["bash", "-c", loop], timeout=1200).check()
        for label, (cmd, repeat) in variants.items():
            r = run_checked(label, cmd, names, repeat)
            if i:
                series[label].add(r.seconds)
                cpu[label].add(1000 * r.cpu_seconds / len(names))
                memory[label].add(r.peak_mib)
        if i:
            s_curl.add(c.seconds)
    b.note(
        f"responders: {what} on {len({mapping[n] for n in names})} addresses; DNS: {dns_what}; "
        "every report was checked complete (one per name, every probe answered 200, "
        "acme-ca pass)"
    )
    print(f"  time for {args.names} names:")
    b.show(s_curl, *series.values())
    print("  names per second:")
    rates = [b.Series("curl loop", "names/s", [len(names) / v for v in s_curl.values])]
    rates += [b.Series(k, "names/s", [len(names) / v for v in s.values]) for k, s in series.items()]
    b.show(*rates)
    print("  CPU seconds per name (acmelb, user + system):")
    b.show(*cpu.values())
    print("  speed-up (curl loop time / acmelb time, pair by pair):")
    speed = {}
    for label, s in series.items():
        speed[label] = b.ratios(s_curl, s)
        speed[label].label = label
    b.show(*speed.values())
    print("  peak memory (ru_maxrss, or the sampled PSS sum of the process tree):")
    b.show(*memory.values())
    for label, sp in speed.items():
        if not label.startswith("before"):
            b.goal(f">= 10 x faster than the curl loop: {label}", sp.median >= 10)
    if args.scale:
        scale(args, work, thumbprint, mapping, every[: args.scale], dns_port, series)


def scale(
    args: argparse.Namespace,
    work: Path,
    thumbprint: str,
    mapping: dict[str, str],
    names: list[str],
    dns_port: int,
    small: dict[str, b.Series],
) -> None:
    """The full variant on ``--scale`` names, once: memory, and time per name against the
    small run's (linear growth: the same time per name)."""
    names_file = work / "scale-names.txt"
    names_file.write_text("".join(n + "\n" for n in names))
    variants = acmelb_variants(names_file, thumbprint, mapping, dns_port, args.repeat)
    label, (cmd, repeat) = list(variants.items())[-1]
    r = run_checked(label, cmd, names, repeat)
    per_name_small = small[label].median / args.names
    per_name_large = r.seconds / len(names)
    print(f"  scale: {label}, {len(names)} names, one run:")
    print(
        f"    {r.seconds:.2f} s, {len(names) / r.seconds:.0f} names/s, "
        f"{1000 * r.cpu_seconds / len(names):.2f} ms CPU/name, peak {r.peak_mib:.1f} MiB"
    )
    growth = per_name_large / per_name_small
    print(
        f"    time per name {1000 * per_name_large:.3f} ms against {1000 * per_name_small:.3f} ms "
        f"at {args.names} names: {growth:.2f}x"
    )
    b.goal(f"peak memory <= 150 MiB at {len(names)} names", r.peak_mib <= 150)
    b.goal("time grows linearly (time per name within 1.5x)", growth <= 1.5)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except b.Unavailable as exc:
        print(f"  skipped: {exc}")
        sys.exit(0)
