#!/usr/bin/env python3
"""Benchmark 6: a fleet behind one LB, `acmelb agent` on etcd vs an independent issue per instance.

For each fleet size (``--agents 3,10``) a cluster lab is built (N backends behind a
round-robin TCP HAProxy on VIP:80 and VIP:443, a TLS nginx per backend, Pebble
with ``PEBBLE_VA_NOSLEEP=1``, a 3-member etcd, the lab DNS answering every
``*.acmelb.test`` name with the VIP), and ``--certs`` certificates
``c01.acmelb.test`` ... are obtained on every backend twice, one after the other:

* **cluster**: one ``acmelb agent`` per backend, all started at once on an empty
  store (``check_interval = 1``, ``lease_ttl`` default 10, the lab's deploy hook
  reloading the backend's nginx, ``[self_check] mode`` from ``--self-check``),
  every certificate declared in every agent's file;
* **baseline**, "a certbot on every node": every backend runs its own
  ``acmelb issue --from-file NAMES --solver stateless --self-check off
  --concurrency C`` (C = ``--baseline-concurrency``, default 1: one order in
  flight per instance, as in the cluster, where each agent orders one
  certificate at a time), after ``acmelb serve --stateless --thumbprint T`` on
  port 80 of every backend. Behind a round robin a standalone responder cannot
  work (the CA's request lands on another instance), so the instances share one
  account key (copied), which is what a stateless setup needs; each instance
  still orders every certificate itself: N orders per certificate, N keys.

Measured per run: the time from starting the first process until every backend
has every certificate in its ``live/`` (the agents: polled every 0.1 s on the
files; the baseline: the last ``acmelb issue`` exits), Pebble's new orders and
issued certificates (its log), the HTTP requests Pebble handled (its log:
``-> calling handler()``, directory, nonces, JWS posts), and the etcd requests:
``grpc_server_msg_received_total`` from every member's ``/metrics`` (etcd 3.4,
go-grpc-prometheus), summed over methods and members, before and after: every
request message a client sent (a unary call is one; a lease keep-alive or a
watch creation is one message on its stream). The benchmark reads nothing from
etcd during the measured window. After it, ``--idle`` seconds more give the
fleet's steady-state request rate, then ``acmelb cluster status --json`` and
the files are checked: every agent holds the same certificate and key for every
name, version 1, one order and one issued certificate per name; the baseline's
backends hold N different certificates per name.

Pebble 2.4 can deadlock under concurrent orders: a run without progress for
20 s (or over its budget) while Pebble's directory answers and its nonce
endpoint hangs is a hung Pebble; the benchmark says so, tears the lab down,
builds a fresh one and repeats the run (at most three times).

    .venv/bin/python benchmarks/bench_cluster.py [--agents 3,10] [--certs 50] [--runs 1]

Needs root (network namespaces), haproxy, nginx, pebble, etcd (./dev setup).
``--tiny`` is the size tests/test_benchmarks.py runs (2 agents, 2 certificates).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

if TYPE_CHECKING:
    from acmelb.lab import Lab

TOOLS = ("ip", "iptables-restore", "haproxy", "nginx", "curl", "openssl", "pebble", "etcd")
METRIC = re.compile(r"^grpc_server_msg_received_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
SENT = "etcd_network_client_grpc_sent_bytes_total "
BYTES = "bytes sent"  # the key of etcd's answer bytes in etcd_requests()
LABEL = re.compile(r'(\w+)="([^"]*)"')
PEBBLE_REQUEST = " -> calling handler()"
# --profile-store: the agent runs through this wrapper, which counts every EtcdKV call by
# method and by the agent function that made it, and writes the counts to
# $ACMELB_BENCH_KVCOUNT every 0.2 s (read before and after each measured window).
KV_COUNTER = r"""
import collections, json, os, runpy, sys, threading, time
from acmelb.cluster import kv
counts = collections.Counter()
def counted(name, original):
    def wrapper(self, *args, **kwargs):
        frame, site = sys._getframe(1), "?"
        while frame is not None:
            path = frame.f_code.co_filename
            if not path.endswith(("cluster/kv.py", "cluster/store.py")):
                site = os.path.basename(path)[:-3] + "." + frame.f_code.co_name
                break
            frame = frame.f_back
        counts[name + " <- " + site] += 1
        return original(self, *args, **kwargs)
    return wrapper
for name in ("get", "get_prefix", "revision", "put", "create", "delete", "fenced", "grant",
             "refresh", "revoke", "watch_prefix"):
    setattr(kv.EtcdKV, name, counted(name, getattr(kv.EtcdKV, name)))
out = os.environ["ACMELB_BENCH_KVCOUNT"]
def dump():
    while True:
        time.sleep(0.2)
        with open(out + ".tmp", "w") as f:
            json.dump(dict(counts), f)
        os.replace(out + ".tmp", out)
threading.Thread(target=dump, daemon=True).start()
sys.argv = ["acmelb", *sys.argv[1:]]
runpy.run_module("acmelb", run_name="__main__")
"""


class PebbleHung(Exception):
    """The lab's Pebble deadlocked during a run: rebuild the lab and repeat it."""


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the cluster lab needs root (network namespaces)"
    missing = [t for t in TOOLS if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        return f"the cluster lab needs {', '.join(missing)} (./dev setup installs them)"
    return None


# -- what the CA and etcd counted ---------------------------------------------------------


def etcd_requests(lab: Lab) -> Counter[str]:
    """Request messages received so far by every etcd member, per gRPC method, and the
    bytes they sent to clients (``BYTES``)."""
    from acmelb.lab import netns

    counts: Counter[str] = Counter()
    etcd = lab.etcd
    for index in range(etcd.size):
        proc = netns.run_in(
            etcd.namespace(index),
            ["curl", "-s", "--max-time", "5", "http://127.0.0.1:2379/metrics"],
            timeout=10,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"etcd member {index + 1}: no /metrics ({proc.stderr.strip()})")
        for line in proc.stdout.splitlines():
            if line.startswith(SENT):
                counts[BYTES] += int(float(line[len(SENT) :]))
            match = METRIC.match(line)
            if match:
                labels = dict(LABEL.findall(match["labels"]))
                counts[labels.get("grpc_method", "?")] += int(float(match["value"]))
    return counts


def requests(counts: Counter[str]) -> int:
    return sum(v for k, v in counts.items() if k != BYTES)


@dataclass
class CACounts:
    orders: int
    issued: int
    requests: int


def ca_counts(lab: Lab) -> CACounts:
    counts = lab.pebble_counts()
    text = lab.pebble_log.read_text(errors="replace")
    return CACounts(counts.orders, counts.issued, text.count(PEBBLE_REQUEST))


def delta(after: CACounts, before: CACounts) -> CACounts:
    return CACounts(
        after.orders - before.orders, after.issued - before.issued, after.requests - before.requests
    )


def hung(lab: Lab) -> bool:
    ca = lab.ca
    return ca is not None and ca.is_hung()


# -- one run ------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    ca: CACounts
    etcd: Counter[str] = field(default_factory=Counter)
    idle_seconds: float = 0.0
    idle: Counter[str] = field(default_factory=Counter)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before, after
    calls: Counter[str] = field(default_factory=Counter)  # --profile-store: convergence
    idle_calls: Counter[str] = field(default_factory=Counter)  # and at rest


def store_calls(directory: Path) -> Counter[str]:
    """--profile-store: EtcdKV calls of every agent so far, by method and call site."""
    total: Counter[str] = Counter()
    for path in directory.glob("b*"):
        if not path.name.endswith(".tmp"):
            with contextlib.suppress(OSError, ValueError):
                total.update(json.loads(path.read_text()))
    return total


def store_url(lab: Lab) -> str:
    return "etcd://" + ",".join(e.split("//", 1)[1] for e in lab.etcd_endpoints)


def agent_config(
    lab: Lab, role: str, names: list[str], key_file: Path, self_check: str, deploy_hook: bool
) -> Path:
    state = lab.agent_state_dir(role)
    hook = lab.deploy_hook(role)
    if self_check == "off":
        check = 'mode = "off"\n'
    else:  # strict: the public namespace as the outside vantage, every member inside
        check = (
            f'mode = "strict"\noutside = [{json.dumps(lab.vantage("pub"))}]\n'
            'assume_public = ["198.18.0.0/15"]\ntimeout = 2\n'
        )
    hook_line = f'deploy_hook = "{hook}"\n' if deploy_hook else ""
    certs = "".join(f'[[certificate]]\nnames = ["{n}"]\n{hook_line}' for n in names)
    text = (
        f'member = "{role}"\nstate_dir = "{state}"\nstore = "{store_url(lab)}"\n'
        f'store_key_file = "{key_file}"\ncheck_interval = 1\n'
        f'[ca]\ndirectory = "{lab.ca_directory_url}"\n'
        f'ca_bundle = "{lab.ca_bundle}"\n'
        f"[self_check]\n{check}{certs}"
    )
    path = state / "agent.toml"
    path.write_text(text)
    return path


def installed(lab: Lab, role: str, name: str, root: Path | None = None) -> Path:
    base = root / role if root is not None else lab.agent_state_dir(role)
    return base / "live" / name / "fullchain.pem"


def watch_progress(
    count: Callable[[], int],
    total: int,
    budget: float,
    lab: Lab,
    what: str,
    done: Callable[[], bool] | None = None,
) -> float:
    """Poll ``count()`` every 0.1 s until it reaches ``total``; returns the time taken.

    PebbleHung when there is no progress for 20 s (or the budget is spent) and Pebble is
    hung; RuntimeError on a plain overrun.
    """
    start = time.perf_counter()
    last, last_change = -1, start
    while True:
        now = time.perf_counter()
        n = count()
        if n >= total and (done is None or done()):
            return now - start
        if n != last:
            last, last_change = n, now
        if now - last_change > 20 or now - start > budget:
            if hung(lab):
                raise PebbleHung(f"hung during {what} ({n}/{total} installed)")
            if now - start > budget:
                raise RuntimeError(f"{what}: {n}/{total} installed after {budget:.0f} s")
            last_change = now  # slow, not hung: keep waiting within the budget
        time.sleep(0.1)


def stop_agents(lab: Lab, roles: list[str]) -> None:
    for role in roles:
        if lab.agent_alive(role):
            lab.signal_agent(role, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for role in roles:
        while lab.agent_alive(role) and time.monotonic() < deadline:
            time.sleep(0.05)
        if lab.agent_alive(role):
            lab.signal_agent(role, signal.SIGKILL)


def cluster_run(lab: Lab, names: list[str], args: argparse.Namespace) -> Outcome:
    from acmelb.cluster.secrets import generate_key_file

    roles = list(lab.backends)
    key_file = lab.state_dir / "store.key"
    generate_key_file(key_file)
    configs = {
        r: agent_config(lab, r, names, key_file, args.self_check, args.deploy_hook == "on")
        for r in roles
    }
    etcd0, ca0, load0 = etcd_requests(lab), ca_counts(lab), os.getloadavg()[0]
    start = time.perf_counter()
    profile = lab.state_dir / "kvcount"
    profile.mkdir(exist_ok=True)
    for role in roles:
        command = [sys.executable, "-c", KV_COUNTER] if args.profile_store else b.ACMELB
        lab.start_agent(
            role,
            [*command, "agent", "--config", str(configs[role])],
            env={"ACMELB_BENCH_KVCOUNT": str(profile / role)},
        )
    files = [installed(lab, r, n) for r in roles for n in names]

    def count() -> int:
        return sum(1 for f in files if f.exists())

    def all_alive() -> bool:
        dead = [r for r in roles if not lab.agent_alive(r)]
        if dead:
            tail = lab.agent_log(dead[0]).read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the agent in {dead[0]} exited: {tail}")
        return True

    try:
        budget = 60 + 3.0 * len(names)
        watch_progress(
            lambda: all_alive() and count(), len(files), budget, lab, f"{len(roles)} agents"
        )
        seconds = time.perf_counter() - start
        etcd1, ca1, load1 = etcd_requests(lab), ca_counts(lab), os.getloadavg()[0]
        calls1 = store_calls(profile)
        time.sleep(args.idle)
        etcd2 = etcd_requests(lab)
        out = Outcome(
            seconds, delta(ca1, ca0), etcd1 - etcd0, args.idle, etcd2 - etcd1, (load0, load1)
        )
        out.calls, out.idle_calls = calls1, store_calls(profile) - calls1
        check_cluster(lab, roles, names, out, serving=args.deploy_hook == "on")
        return out
    finally:
        stop_agents(lab, roles)


def check_cluster(
    lab: Lab, roles: list[str], names: list[str], out: Outcome, *, serving: bool
) -> None:
    """Every agent: the same certificate and key for every name; one order and one
    certificate per name; the store says version 1 everywhere."""
    for name in names:
        chains = {installed(lab, r, name).read_bytes() for r in roles}
        keys = {(installed(lab, r, name).parent / "privkey.pem").read_bytes() for r in roles}
        if len(chains) != 1 or len(keys) != 1:
            raise RuntimeError(
                f"{name}: {len(chains)} certificates and {len(keys)} keys "
                f"over {len(roles)} agents, not one"
            )
    if out.ca.issued != len(names):
        b.note(f"PROBLEM: {out.ca.issued} certificates issued for {len(names)} names")
    # The member records follow within a heartbeat (lease_ttl / 3).
    deadline = time.monotonic() + 30
    while True:
        proc = lab.run(
            roles[0],
            [*b.ACMELB, "cluster", "status", "--store", store_url(lab), "--json"],
            timeout=60,
        )
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
        versions = {c["name"]: c.get("version") for c in doc.get("certificates", [])}
        members = {m.get("member"): m.get("installed") for m in doc.get("members", [])}
        want = {n: 1 for n in names}
        if versions == want and members == {r: want for r in roles}:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"cluster status: versions {versions}, installed {members}; "
                "not version 1 of every name on every member"
            )
        time.sleep(1)
    # What the TLS servers serve (the deploy hook made them): the first and the last name,
    # through the VIP and on b1.
    from acmelb.lab.cluster import file_fingerprint

    for name in {names[0], names[-1]} if serving else ():
        expected = file_fingerprint(installed(lab, roles[0], name))
        deadline = time.monotonic() + 10
        while True:
            seen = {lab.tls_fingerprint("vip", name), lab.tls_fingerprint(roles[0], name)}
            if seen == {expected}:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: served {seen}, installed {expected}")
            time.sleep(0.2)


def baseline_run(lab: Lab, names: list[str], args: argparse.Namespace) -> Outcome:
    from acmelb.lab import netns

    roles = list(lab.backends)
    root = lab.state_dir / "baseline"
    ca_args = ["--directory", str(lab.ca_directory_url), "--ca-bundle", str(lab.ca_bundle)]
    shutil.rmtree(root, ignore_errors=True)
    account = root / "account"
    proc = lab.run(
        roles[0],
        [*b.ACMELB, "account", "register", *ca_args, "--state-dir", str(account), "--json"],
        timeout=60,
    )
    if proc.returncode != 0:
        if hung(lab):
            raise PebbleHung("hung during the baseline's account registration")
        raise RuntimeError(f"acmelb account register: {proc.stderr.strip()[-500:]}")
    thumbprint = json.loads(proc.stdout)["thumbprint"]
    for role in roles:
        shutil.copytree(account / "accounts", root / role / "accounts")
    names_file = root / "names.txt"
    names_file.write_text("".join(f"{n}\n" for n in names))
    servers = [
        lab.start_process(
            r,
            "baseline-serve",
            [
                *b.ACMELB,
                "serve",
                "--stateless",
                "--thumbprint",
                thumbprint,
                "--quiet",
                "--address",
                "0.0.0.0",
                "--port",
                "80",
            ],
        )
        for r in roles
    ]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        deadline = time.monotonic() + 15
        for role, record in zip(roles, servers, strict=True):
            if not netns.wait_listening(lab.ns(role), {80}, deadline, record.is_running):
                raise RuntimeError(f"acmelb serve in {role} did not listen on 80")
        ca0, load0 = ca_counts(lab), os.getloadavg()[0]
        start = time.perf_counter()
        for role in roles:
            log = (root / f"{role}-issue.log").open("wb")
            procs[role] = subprocess.Popen(
                [
                    *lab.exec_prefix(role),
                    *b.ACMELB,
                    "issue",
                    "--from-file",
                    str(names_file),
                    "--solver",
                    "stateless",
                    "--self-check",
                    "off",
                    "--concurrency",
                    str(args.baseline_concurrency),
                    *ca_args,
                    "--state-dir",
                    str(root / role),
                ]
                if args.deploy_hook == "off"
                else [
                    *lab.exec_prefix(role),
                    "sh",
                    "-c",
                    '"$@" && exec "$ACMELB_BENCH_HOOK"',
                    "sh",
                    *b.ACMELB,
                    "issue",
                    "--from-file",
                    str(names_file),
                    "--solver",
                    "stateless",
                    "--self-check",
                    "off",
                    "--concurrency",
                    str(args.baseline_concurrency),
                    *ca_args,
                    "--state-dir",
                    str(root / role),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ACMELB_BENCH_HOOK": lab.deploy_hook(role)},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            log.close()
        files = [installed(lab, r, n, root) for r in roles for n in names]
        budget = 60 + 3.0 * len(names) * args.baseline_concurrency

        def finished() -> bool:
            for role, p in procs.items():
                if p.poll() not in (None, 0):
                    tail = (root / f"{role}-issue.log").read_text(errors="replace")[-1500:]
                    if hung(lab):
                        raise PebbleHung(f"hung during the baseline in {role}")
                    raise RuntimeError(f"acmelb issue in {role} exited {p.returncode}: {tail}")
            return all(p.poll() == 0 for p in procs.values())

        watch_progress(
            lambda: sum(1 for f in files if f.exists()),
            len(files),
            budget,
            lab,
            f"the baseline ({len(roles)} x acmelb issue)",
            done=finished,
        )
        seconds = time.perf_counter() - start
        out = Outcome(seconds, delta(ca_counts(lab), ca0), load=(load0, os.getloadavg()[0]))
        for name in names:
            keys = {
                (installed(lab, r, name, root).parent / "privkey.pem").read_bytes() for r in roles
            }
            if len(keys) != len(roles):
                raise RuntimeError(
                    f"baseline: {name} has {len(keys)} keys over {len(roles)} backends"
                )
        return out
    finally:
        for p in procs.values():
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)  # its own session: only what it started
                p.wait()
        for record in servers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
        popens = getattr(lab, "_popens", {})
        for record in servers:
            popen = popens.get(record.pid)
            if popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(5)


def one_round(
    agents: int, names: list[str], args: argparse.Namespace
) -> tuple[Outcome, Outcome, int]:
    """Build a lab, run the cluster then the baseline; a hung Pebble means a fresh lab."""
    from acmelb.lab import Scenario, build

    restarts = 0
    while True:
        lab = build(Scenario.cluster_preset(agents, dns_names=("*.acmelb.test",)))
        try:
            check_dns(lab, names)
            cluster = cluster_run(lab, names, args)
            baseline = baseline_run(lab, names, args)
            return cluster, baseline, restarts
        except PebbleHung as exc:
            restarts += 1
            print(
                f"  !! Pebble {exc}: a fresh lab, the run again (restart #{restarts})", flush=True
            )
            if restarts >= 3:
                raise RuntimeError("Pebble kept hanging") from exc
        finally:
            if args.logs:
                keep = Path(args.logs) / f"{agents}-agents-{time.strftime('%H%M%S')}"
                keep.mkdir(parents=True, exist_ok=True)
                for log in [
                    *lab.state_dir.glob("*.log"),
                    lab.pebble_log,
                    *(lab.state_dir / "baseline").glob("*.log"),
                ]:
                    with contextlib.suppress(OSError):
                        shutil.copy(log, keep / log.name)
            lab.down()


def check_dns(lab: Lab, names: list[str]) -> None:
    """The lab DNS answers the benchmark's names with the VIP (what Pebble resolves)."""
    host, port = lab.dns_server.split(":")
    code = (
        "import dns.resolver as r, sys\nres = r.Resolver(configure=False)\n"
        f"res.nameservers = [{host!r}]\nres.port = {port}\n"
        "print(' '.join(sorted({a.to_text() for n in sys.argv[1:] "
        "for a in res.resolve(n, 'A')})))"
    )
    proc = lab.run("pub", [sys.executable, "-c", code, names[0], names[-1]], timeout=30)
    if proc.stdout.strip() != lab.vip:
        raise RuntimeError(
            f"the lab DNS answers {names[0]} with {proc.stdout.strip()!r} "
            f"{proc.stderr.strip()[-300:]}, not the VIP {lab.vip}"
        )


# -- the report ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", default="3,10", help="fleet sizes, comma-separated (default 3,10)")
    p.add_argument("--certs", type=int, default=50, help="certificates (default 50)")
    p.add_argument("--runs", type=int, default=1, help="runs per fleet size, a fresh lab each")
    p.add_argument(
        "--self-check",
        choices=("off", "strict"),
        default="off",
        help="the agents' [self_check] mode (default off)",
    )
    p.add_argument(
        "--baseline-concurrency",
        type=int,
        default=1,
        help="acmelb issue --concurrency on each backend (default 1)",
    )
    p.add_argument(
        "--idle",
        type=float,
        default=10.0,
        help="seconds of steady state measured after convergence (default 10)",
    )
    p.add_argument(
        "--deploy-hook",
        choices=("on", "off"),
        default="on",
        help="on (default): the lab's deploy hook (rewrite the backend's nginx sites, "
        "nginx -t, reload) runs after each install on the agents, and once per "
        "backend after its acmelb issue run in the baseline",
    )
    p.add_argument(
        "--profile-store",
        action="store_true",
        help="count the agents' store calls by call site (a wrapper around EtcdKV)",
    )
    p.add_argument(
        "--logs", metavar="DIR", help="copy the agents', Pebble's and the baseline's logs to DIR"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="2 agents, 2 certificates, 2 s idle (tests/test_benchmarks.py)",
    )
    args = p.parse_args(argv)
    if args.tiny:
        args.agents, args.certs, args.runs, args.idle = "2", 2, 1, 2.0
    sizes = [int(x) for x in args.agents.split(",") if x.strip()]
    names = [f"c{i:02d}.acmelb.test" for i in range(1, args.certs + 1)]

    b.header(
        f"cluster: {args.certs} certificates on fleets of {args.agents} instances, "
        f"acmelb agent on etcd (self-check {args.self_check}) vs acmelb issue on every "
        f"instance (--concurrency {args.baseline_concurrency}), deploy hook "
        f"{args.deploy_hook}"
    )
    reason = unavailable()
    if reason:
        print(f"  skipped: {reason}", flush=True)
        return 0
    print(
        f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    all_met = True
    for n in sizes:
        b.header(f"{n} instances, {args.certs} certificates")
        t_c = b.Series("cluster: all installed everywhere", "s")
        t_b = b.Series("baseline: all installed everywhere", "s")
        o_c = b.Series("cluster: orders per certificate", "")
        o_b = b.Series("baseline: orders per certificate", "")
        q_c = b.Series("cluster: CA requests per certificate", "")
        q_b = b.Series("baseline: CA requests per certificate", "")
        e_c = b.Series("cluster: etcd requests per certificate", "")
        e_i = b.Series("cluster: etcd requests/s at rest, fleet", "/s")
        kb_c = b.Series("cluster: etcd answer KiB per certificate", "KiB")
        kb_i = b.Series("cluster: etcd answer KiB/s at rest, fleet", "KiB/s")
        r_t = b.Series("time: cluster / baseline", "x")
        r_o = b.Series("orders: cluster / baseline", "x")
        r_q = b.Series("CA requests: cluster / baseline", "x")
        methods: Counter[str] = Counter()
        idle_methods: Counter[str] = Counter()
        calls: Counter[str] = Counter()
        idle_calls: Counter[str] = Counter()
        restarts = 0
        for _ in range(args.runs):
            cluster, baseline, r = one_round(n, names, args)
            restarts += r
            certs = len(names)
            t_c.add(cluster.seconds)
            t_b.add(baseline.seconds)
            o_c.add(cluster.ca.orders / certs)
            o_b.add(baseline.ca.orders / certs)
            q_c.add(cluster.ca.requests / certs)
            q_b.add(baseline.ca.requests / certs)
            e_c.add(requests(cluster.etcd) / certs)
            e_i.add(requests(cluster.idle) / cluster.idle_seconds)
            kb_c.add(cluster.etcd[BYTES] / 1024 / certs)
            kb_i.add(cluster.idle[BYTES] / 1024 / cluster.idle_seconds)
            r_t.add(cluster.seconds / baseline.seconds)
            r_o.add(cluster.ca.orders / max(baseline.ca.orders, 1))
            r_q.add(cluster.ca.requests / max(baseline.ca.requests, 1))
            methods.update(cluster.etcd)
            idle_methods.update(cluster.idle)
            calls.update(cluster.calls)
            idle_calls.update(cluster.idle_calls)
            print(
                f"  run: cluster {cluster.seconds:.2f} s, {cluster.ca.orders} orders, "
                f"{cluster.ca.issued} issued, {requests(cluster.etcd)} etcd requests "
                f"(load {cluster.load[0]:.2f} -> {cluster.load[1]:.2f}); baseline "
                f"{baseline.seconds:.2f} s, {baseline.ca.orders} orders, "
                f"{baseline.ca.issued} issued (load {baseline.load[0]:.2f} -> "
                f"{baseline.load[1]:.2f})",
                flush=True,
            )
        b.show(t_c, t_b, o_c, o_b, q_c, q_b, e_c, e_i, kb_c, kb_i, r_t, r_o, r_q)
        runs = args.runs
        top = ", ".join(
            f"{m} {v / runs / len(names):.1f}" for m, v in methods.most_common(9) if m != BYTES
        )
        print(f"  etcd requests per certificate by method (convergence): {top}", flush=True)
        idle = ", ".join(
            f"{m} {v / runs / args.idle:.1f}" for m, v in idle_methods.most_common(9) if m != BYTES
        )
        print(f"  etcd requests/s by method at rest ({args.idle:.0f} s, fleet): {idle}", flush=True)
        if args.profile_store:
            print("  store calls per certificate by call site (convergence):", flush=True)
            for site, v in calls.most_common(14):
                print(f"    {v / runs / len(names):8.2f}  {site}", flush=True)
            print(f"  store calls/s by call site at rest ({args.idle:.0f} s, fleet):", flush=True)
            for site, v in idle_calls.most_common(10):
                print(f"    {v / runs / args.idle:8.2f}  {site}", flush=True)
        met = o_c.values and max(o_c.values) == 1.0
        all_met = all_met and bool(met)
        b.goal(f"{n} instances: cluster orders per certificate = 1.00", bool(met))
        if restarts:
            b.note(
                f"Pebble hung and the lab was rebuilt {restarts} time(s); the runs it "
                "spoiled were repeated"
            )
    print(f"  load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
