#!/usr/bin/env python3
"""Behaviour check for refactorings on the lab: every scenario diagnosed by two trees.

For each lab scenario (every LB mode with a responder behind it, every backend behaviour
behind a TCP pass-through, and the IPv6, split-horizon, shortcut and perspective
variants) one lab is built, then ``acmelb diagnose`` runs in its public namespace with
the package of each tree (``PYTHONPATH=TREE/src``), the same flags, alternately, twice each
over the same lab: the JSON reports, timings stripped, must be equal. A scenario where the
same tree's two reports differ is the lab's own doing, not the code's (HAProxy marking a
dead backend down between two runs): it is reported as unstable, and it counts as equal
when one report of each tree is the same. Needs root.

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python benchmarks/compare_lab_reports.py --before /tmp/before [--after .]

Exit 0 when every scenario's reports are equal, 1 with the differences printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

sys.path.insert(0, str(b.REPO / "src"))

from acmelb.lab import Behaviour, Lab, Mode, Scenario, build

TIMINGS = {"elapsed_ms"}


def scenarios() -> list[tuple[str, Scenario]]:
    out = [(f"mode {mode.value}", Scenario(mode)) for mode in Mode if mode is not Mode.ROUND_ROBIN]
    out.append(("mode round-robin", Scenario(Mode.ROUND_ROBIN)))
    out += [
        (f"b1 {behaviour.value}", Scenario(Mode.HAPROXY_TCP, (behaviour, Behaviour.RESPONDER)))
        for behaviour in Behaviour
        if behaviour is not Behaviour.RESPONDER
    ]
    out += [
        ("ipv6", Scenario(Mode.HAPROXY_TCP, ipv6=True)),
        ("split horizon", Scenario(Mode.DNAT, split_horizon=True)),
        ("shortcut b1", Scenario(Mode.HAPROXY_TCP_PROXY, shortcut=("b1",))),
        ("3 perspectives, p2 blocked", Scenario(Mode.HAPROXY_TCP, perspectives=3, blocked=("p2",))),
    ]
    return out


def diagnose(lab: Lab, tree: Path) -> dict[str, Any]:
    sc = lab.scenario
    argv = [
        sys.executable,
        "-m",
        "acmelb",
        "diagnose",
        sc.name,
        "--json",
        "--timeout",
        "1",
        "--repeat",
        "2",
        "--resolve",
        f"{sc.name}:{lab.vip}",
        "--assume-public",
        "198.18.0.0/15",
        "--assume-public",
        "test",
        f"--token={sc.token}",
        f"--key={sc.key_authorization}",
        "--inside",
        lab.vantage("b1"),
    ]
    if sc.ipv6 and lab.vip6:
        argv += ["--resolve", f"{sc.name}:{lab.vip6}"]
    for role in sc.perspective_roles:
        argv += ["--outside", lab.vantage(role)]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    proc = subprocess.run(
        [*lab.exec_prefix("pub"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if not proc.stdout.strip():
        raise SystemExit(f"{tree}: no report: {proc.stderr.strip()}")
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=b.REPO)
    args = parser.parse_args()
    different = 0
    for label, scenario in scenarios():
        with build(scenario) as lab:
            runs: dict[str, list[Any]] = {"before": [], "after": []}
            for _round in range(2):
                runs["before"].append(strip(diagnose(lab, args.before.resolve())))
                runs["after"].append(strip(diagnose(lab, args.after.resolve())))
        before, after = runs["before"], runs["after"]
        codes = ", ".join(f["code"] for f in after[0]["findings"]) or "none"
        stable = before[0] == before[1] and after[0] == after[1]
        # when the lab changed between runs, some report of each tree must match
        same = before[0] == after[0] if stable else any(r in after for r in before)
        different += not same
        verdict = ("equal" if same else "DIFFERENT") + ("" if stable else " (lab unstable)")
        print(f"{label:34} {verdict}  ({codes})", flush=True)
        if not same:
            print(json.dumps({"before": before[0], "after": after[0]}, indent=1)[:4000])
    print("all scenarios equal" if not different else f"{different} scenario(s) differ")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
