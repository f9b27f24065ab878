"""``acmelb lab``: build, inspect and remove load-balancer labs (root only)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acmelb.lab import Lab


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "lab",
        help="reproduce a load-balancer topology locally (network namespaces, root only)",
        description="Real load-balancer topologies in network namespaces: a public side "
        "(the internet, optionally with the Pebble test CA), an LB holding a VIP, and "
        "backends behind it. See docs/lab.md.",
    )
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION", parser_class=type(parser))
    _add_up(actions)
    _add_down(actions)
    _add_status_and_list(actions)
    _add_exec(actions)
    parser.set_defaults(run=lambda args: _usage(parser))


def _add_up(actions: Any) -> None:
    up = actions.add_parser(
        "up",
        help="build a lab and leave it running",
        description="Build a lab and leave it running until `acmelb lab down`. SCENARIO is "
        "a mode, optionally with the backends' behaviours: MODE[:BEHAVIOUR,BEHAVIOUR...], "
        "e.g. `dnat` or `haproxy-tcp-proxy:responder,not-found` (see `acmelb lab list`). "
        "`cluster` (or `cluster:N`) is the cluster-mode lab: N backends (default 3) free "
        "for agents behind a round-robin TCP HAProxy on 80 and 443, each with a TLS nginx, "
        "Pebble, DNS for every *.acmelb.test name, and 3 etcd members.",
    )
    up.add_argument("scenario", metavar="SCENARIO")
    up.add_argument(
        "--backends",
        type=int,
        metavar="N",
        help="number of backends of the cluster lab (1-10, default 3)",
    )
    up.add_argument(
        "--cert-validity",
        type=int,
        metavar="SECONDS",
        help="lifetime of the certificates Pebble issues (default: Pebble's, 5 years)",
    )
    up.add_argument(
        "--dns-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another name the lab DNS answers with the VIP; *.ZONE for every "
        "name below ZONE (repeatable)",
    )
    up.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="BEHAVIOUR",
        help="behaviour of the next backend (repeatable; default: two responders)",
    )
    up.add_argument(
        "--shortcut",
        action="append",
        default=[],
        metavar="BACKEND",
        help="give this backend (b1, b2...) kube-proxy's shortcut of VIP:80 to itself (repeatable)",
    )
    up.add_argument("--name", help="the DNS name served (default app.acmelb.test)")
    up.add_argument("--token", help="the challenge token the responders serve")
    up.add_argument("--thumbprint", help="the account thumbprint of the key authorization")
    up.add_argument("--ipv6", action="store_true", help="add IPv6 (2001:db8::/32) everywhere")
    up.add_argument(
        "--split-horizon",
        action="store_true",
        help="backends resolve the name to b1's address, the public side to the VIP",
    )
    up.add_argument(
        "--ca", action="store_true", help="run Pebble and its DNS server on the public side"
    )
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    up.set_defaults(run=run_up)


def _add_down(actions: Any) -> None:
    down = actions.add_parser(
        "down", help="remove labs", description="Stop a lab's processes and delete its namespaces."
    )
    down.add_argument("ids", nargs="*", metavar="ID", help="lab ids (see `acmelb lab status`)")
    down.add_argument(
        "--all",
        action="store_true",
        help="remove every acmelb lab: its recorded processes and alb<id>-* "
        "namespaces, nothing else",
    )
    down.set_defaults(run=run_down)


def _add_status_and_list(actions: Any) -> None:
    status = actions.add_parser("status", help="show the running labs")
    status.add_argument("ids", nargs="*", metavar="ID")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=run_status)

    listing = actions.add_parser("list", help="list the LB modes and backend behaviours")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=run_list)


def _add_exec(actions: Any) -> None:
    execute = actions.add_parser(
        "exec",
        help="run a command inside a lab namespace",
        description="Run CMD in a lab namespace. NS is a role (pub, lb, b1...) when one lab "
        "is up, ID:ROLE, or a full namespace name (alb1a2b-b1).",
    )
    execute.add_argument("namespace", metavar="NS")
    execute.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD")
    execute.set_defaults(run=run_exec)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_up(args: argparse.Namespace) -> int:
    from acmelb.lab import build
    from acmelb.lab.netns import require_root
    from acmelb.lab.scenarios import scenario_from_arguments

    require_root()
    scenario = scenario_from_arguments(
        args.scenario,
        cluster_size=args.backends,
        behaviours=args.backend,
        name=args.name,
        token=args.token,
        thumbprint=args.thumbprint,
        dns_names=args.dns_name,
        shortcut=tuple(args.shortcut),
        ipv6=args.ipv6,
        ca=args.ca,
        split_horizon=args.split_horizon,
        cert_validity=args.cert_validity,
    )
    started = time.monotonic()
    lab = build(scenario, detached=True)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps(lab.summary(), indent=2))
    else:
        print(_render(lab, f"up in {elapsed:.2f} s"))
    return 0


def _render(lab: Lab, note: str = "") -> str:
    """The lab as ``acmelb lab up`` (``note``: how long it took) and ``status`` show it."""
    info = lab.summary()
    lines = [
        f"lab {info['id']}: {info['mode']} - {info['mode_description']}"
        + (f" ({note})" if note else "")
    ]
    vip = info["vip"] + (f", {info['vip6']}" if info["vip6"] else "")
    lines.append(
        f"  name     {info['name']} -> VIP {vip}"
        + (
            f" (from the backends: {lab.backend_address(lab.backends[0])})"
            if info["split_horizon"]
            else ""
        )
    )
    lines.append(f"  url      {info['url']}")
    lines.append(f"  key      {info['key_authorization']}")
    lines.append(f"  outside  {info['outside']}")
    for backend in info["backends"]:
        shortcut = ", VIP shortcut" if backend["shortcut"] else ""
        lines.append(
            f"  {backend['role']:<8} {backend['inside']}  ({backend['address']}: "
            f"{backend['behaviour']}{shortcut})"
        )
    if info["ca"]:
        lines.append(
            f"  CA       {info['ca']['directory_url']} (--ca-bundle {info['ca']['ca_bundle']})"
        )
    if info["dns_names"]:
        lines.append(f"  DNS      {', '.join(info['dns_names'])} -> VIP")
    if info["cluster"]:
        lines += _cluster_lines(info["cluster"])
    down = [p for p in info["processes"] if not p["running"]]
    if down:
        lines.append("  stopped  " + ", ".join(f"{p['what']} in {p['role']}" for p in down))
    if note:
        lines += _try_lines(lab, info)
    return "\n".join(lines)


def _cluster_lines(cluster: dict[str, Any]) -> list[str]:
    """The cluster lab's part of ``_render``: etcd, 443, each backend's agent."""
    etcd = cluster["etcd"]
    lines = [
        f"  etcd     {','.join(etcd['endpoints']) or '(gone)'} "
        f"(lab {etcd['id']}, members running: "
        f"{sum(etcd['running'])}/{len(etcd['running'])})",
        "  443      VIP:443 -> every backend's nginx, serving its agent's live/*/",
    ]
    if cluster["cert_validity"]:
        lines.append(f"  validity {cluster['cert_validity']} s (Pebble)")
    for backend in cluster["backends"]:
        agent = "agent running" if backend["agent_running"] else "no agent"
        lines.append(
            f"  {backend['role']:<8} state {backend['agent_state_dir']}, "
            f"hook {backend['deploy_hook']} ({agent})"
        )
    return lines


def _try_lines(lab: Lab, info: dict[str, Any]) -> list[str]:
    """What to try next on a lab just built (a cluster lab: an agent and 443)."""
    scenario = lab.scenario
    first = lab.backends[0]
    if info["cluster"]:
        return [
            "try:",
            f"  acmelb lab exec {info['id']}:{first} -- acmelb agent --config agent.toml "
            "--store-key-file KEY   # deploy hook: the one above",
            f"  acmelb lab exec {info['id']}:pub -- openssl s_client -connect "
            f"{info['vip']}:443 -servername {scenario.name}",
            f"  acmelb lab down {info['id']}",
        ]
    return [
        "try:",
        f"  acmelb lab exec {info['id']}:pub -- curl -sS {info['url']}",
        f"  acmelb lab exec {info['id']}:{first} -- curl -sS -m 3 {info['url']}",
        f"  {info['outside']} acmelb diagnose {scenario.name} --token={scenario.token} "
        f"--key={scenario.key_authorization} --inside '{lab.vantage(first)}'",
        f"  acmelb lab down {info['id']}",
    ]


def run_down(args: argparse.Namespace) -> int:
    from acmelb.errors import UsageError
    from acmelb.lab import Lab
    from acmelb.lab.netns import require_root
    from acmelb.lab.topology import down_everything

    require_root()
    if args.all == bool(args.ids):
        raise UsageError("give lab ids or --all")
    if args.all:
        removed = down_everything()
    else:
        labs = [Lab.attach(lab_id) for lab_id in args.ids]
        for lab in labs:
            lab.down()
        removed = [lab.id for lab in labs]
    print(f"removed: {', '.join(removed)}" if removed else "no lab to remove")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from acmelb.lab import Lab, running_labs
    from acmelb.lab.netns import require_root

    require_root()
    labs = [Lab.attach(lab_id) for lab_id in args.ids] if args.ids else running_labs()
    if args.json:
        print(json.dumps([lab.summary() for lab in labs], indent=2))
        return 0
    if not labs:
        print("no lab is up (acmelb lab up SCENARIO)")
        return 0
    for lab in labs:
        owner = "detached" if lab.state.owner_pid is None else f"owned by pid {lab.state.owner_pid}"
        if lab.is_stale():
            owner += " (gone: stale, `acmelb lab down` it)"
        age = time.time() - lab.state.created
        print(_render(lab, ""))
        print(f"  state    {lab.state_dir}, {owner}, up {age:.0f} s")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from acmelb.lab import Behaviour, Mode

    if args.json:
        print(
            json.dumps(
                {
                    "modes": {m.value: m.description for m in Mode},
                    "behaviours": {b.value: b.description for b in Behaviour},
                },
                indent=2,
            )
        )
        return 0
    print("LB modes (acmelb lab up MODE[:BEHAVIOUR,...]):")
    for mode in Mode:
        print(f"  {mode.value:<24} {mode.description}")
    print(
        f"  {'cluster[:N]':<24} round-robin over N backends (default 3) free for agents, "
        "TCP 80 and 443, TLS nginx per backend, Pebble, DNS, 3 etcd members"
    )
    print("backend behaviours:")
    for behaviour in Behaviour:
        print(f"  {behaviour.value:<24} {behaviour.description}")
    return 0


def run_exec(args: argparse.Namespace) -> int:
    import subprocess

    from acmelb.errors import UsageError
    from acmelb.lab.netns import require_root
    from acmelb.lab.topology import lab_and_role

    require_root()
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("give a command after --, e.g. acmelb lab exec b1 -- curl -sS URL")
    lab, role = lab_and_role(args.namespace)
    try:
        return subprocess.run([*lab.exec_prefix(role), *command], check=False).returncode
    except KeyboardInterrupt:
        return 130
