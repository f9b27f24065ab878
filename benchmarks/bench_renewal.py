#!/usr/bin/env python3
"""Benchmark 8: renewal drills for a cluster, against the same work without coordination.

One cluster lab (``--agents`` backends behind a round-robin TCP HAProxy, a TLS nginx per
backend whose deploy hook reloads it, a 3-member etcd, Pebble 2.10 with 10-day
certificates), ``--certs`` certificates declared in every agent (``check_interval = 1``,
``ari_poll_max`` = ``--poll`` seconds standing in for the CA's Retry-After). Measured in
the same run:

* **ordering**: from the agents' start until every member has installed every first
  version (one order per certificate for the cluster);
* **ARI requests per certificate per interval**: the cluster's polls over ``--idle``
  seconds (its agents' logs), against the uncoordinated way, one ``acmelb renew`` per
  member: each member's process asks the CA for each certificate's window once an
  interval (run inside each backend on that member's copies, counting the requests);
* **the drill**: the CA moves every window into the past (Pebble's
  ``/set-renewal-info/``); the time until every member has installed every replacement,
  the orders per certificate it took (Pebble's log) and how many named the certificate
  they replace; the ratio drill time / ordering time (goal: at most 1.5).

    .venv/bin/python benchmarks/bench_renewal.py [--agents 10] [--certs 20] [--poll 5]

Needs root (network namespaces), haproxy, nginx, Pebble 2.10, etcd (./dev setup).
``--tiny`` is the size tests/test_benchmarks.py runs (2 agents, 2 certificates).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

sys.path.insert(0, str(b.REPO / "src"))
sys.path.insert(0, str(b.REPO))

from tests.lab.cluster_agents import start, status

from acmelb.lab import Lab, Scenario, build

UNCOORDINATED = """
import sys, time
from pathlib import Path
from josepy.jwk import JWK
from acmelb.acme.ca import CAClient, CAConfig, new_account_key
from acmelb.acme.issuance import renewal_timing
from acmelb.acme.store import Store
directory, bundle, state, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
client = CAClient(CAConfig(directory, Path(bundle)), new_account_key())
asked = 0
fetch = client.renewal_info
def counted(cert_id):
    global asked
    asked += 1
    return fetch(cert_id)
client.renewal_info = counted
store = Store(Path(state))
for name in names:  # one `acmelb renew` run: each certificate's window, asked afresh
    path = store.lineage(name).renewal_path.with_name(f"{name}.ari.json")
    path.unlink(missing_ok=True)  # as if its Retry-After had passed
    renewal_timing(store, name, client)
print(asked)
"""


def roles(agents: int) -> tuple[str, ...]:
    return tuple(f"b{i}" for i in range(1, agents + 1))


def all_at(lab: Lab, version: int) -> bool:
    code, doc = status(lab)
    certs = doc.get("certificates") or []
    return (
        code == 0 and bool(doc.get("converged")) and all(c["version"] == version for c in certs)  # type: ignore[union-attr]
    )


def wait(condition: object, timeout: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def polls(lab: Lab, agents: int) -> int:
    return sum(
        len(re.findall(r": ARI poll: window", lab.agent_log(r).read_text(errors="replace")))
        for r in roles(agents)
    )


def uncoordinated(lab: Lab, agents: int, names: list[str]) -> int:
    """ARI requests when each member renews on its own: one run per member."""
    asked = 0
    for role in roles(agents):
        ca = [lab.ca_directory_url or "", str(lab.ca_bundle)]
        argv = [sys.executable, "-c", UNCOORDINATED, *ca, str(lab.agent_state_dir(role)), *names]
        proc = lab.run(role, argv, timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"{role}: {proc.stderr.strip()}")
        asked += int(proc.stdout.strip())
    return asked


def drill(lab: Lab, names: list[str]) -> None:
    assert lab.ca is not None
    now = datetime.datetime.now(datetime.UTC)
    for name in names:
        pem = (lab.agent_state_dir("b1") / "live" / name / "cert.pem").read_bytes()
        lab.ca.set_renewal_info(
            pem, now - datetime.timedelta(hours=2), now - datetime.timedelta(hours=1)
        )


def run(agents: int, certs: int, poll: float, idle: float) -> dict[str, float]:
    names = [f"r{i:02d}.acmelb.test" for i in range(1, certs + 1)]
    with build(Scenario.cluster_preset(agents, cert_validity=10 * 86400)) as lab:
        start(lab, roles(agents), names=names, check_interval=1.0, extra=f"ari_poll_max = {poll:g}")
        ordering = wait(lambda: all_at(lab, 1), 600)
        time.sleep(poll)  # every certificate's first poll
        before = polls(lab, agents)
        time.sleep(idle)
        cluster_polls = (polls(lab, agents) - before) / certs / (idle / poll)
        alone = uncoordinated(lab, agents, names) / certs
        orders = lab.pebble_orders()
        drill(lab, names)
        drilled = wait(lambda: all_at(lab, 2), 600)
        replaced = len(re.findall(r"is a replacement of", lab.pebble_log.read_text()))
        return {
            "ordering_s": ordering,
            "drill_s": drilled,
            "ratio": drilled / ordering,
            "cluster_polls": cluster_polls,
            "uncoordinated_polls": alone,
            "orders_per_certificate": (lab.pebble_orders() - orders) / certs,
            "replacements": replaced / certs,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=10)
    p.add_argument("--certs", type=int, default=20)
    p.add_argument("--poll", type=float, default=5.0, help="ari_poll_max (seconds)")
    p.add_argument("--idle", type=float, default=30.0, help="seconds of polls counted")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    if args.tiny:
        args.agents, args.certs, args.idle = 2, 2, 10.0
    b.header(f"renewal drill: {args.agents} members x {args.certs} certificates")
    figures = run(args.agents, args.certs, args.poll, args.idle)
    print(
        f"ordering: every member has every first version after {figures['ordering_s']:.1f} s\n"
        f"ARI requests per certificate per interval: cluster {figures['cluster_polls']:.2f}, "
        f"one `acmelb renew` per member {figures['uncoordinated_polls']:.2f} "
        f"(goal: 1 against {args.agents})\n"
        f"drill: every member has every replacement after {figures['drill_s']:.1f} s "
        f"= {figures['ratio']:.2f}x the ordering time (goal <= 1.5); "
        f"{figures['orders_per_certificate']:.2f} orders per certificate, "
        f"{figures['replacements']:.2f} naming the certificate they replace"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
