"""``acmelb fix``: print (and for NAT loopback, apply) the fix for a diagnosed problem."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.kube.challenges import KUBECTL_COMMAND


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "fix", help="print or apply the fix for a load-balancer problem"
    )
    kinds = parser.add_subparsers(dest="kind", metavar="FIX", required=True)

    loop = kinds.add_parser(
        "nat-loopback",
        help="NAT loopback (hairpin) rules for a DNAT load balancer",
        description="Print the rules that let hosts behind the LB reach its VIP. With --apply, "
        "add them here (run it on the LB), verify through the VIP from --verify-from, and "
        "restore the exact previous ruleset if verification fails. --undo removes exactly "
        "what acmelb added.",
    )
    loop.add_argument("--vip", required=True, help="the public address the LB answers on")
    loop.add_argument("--port", type=int, default=80)
    loop.add_argument(
        "--backend",
        action="append",
        default=[],
        required=True,
        metavar="IP[:PORT]",
        help="a backend behind the LB (repeatable)",
    )
    loop.add_argument(
        "--subnet",
        required=True,
        metavar="CIDR",
        help="the inside network whose hosts call the VIP",
    )
    loop.add_argument("--backend-tool", choices=("iptables", "nft"), default="iptables")
    mode = loop.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="apply the rules here")
    mode.add_argument("--undo", action="store_true", help="remove the rules acmelb added")
    loop.add_argument(
        "--verify-from",
        metavar="CMD",
        help="command prefix of an inside host to fetch through the VIP from, "
        "e.g. 'ssh node1' or 'ip netns exec node1'",
    )
    loop.set_defaults(run=run_nat_loopback)

    lb = kinds.add_parser("lb-tcp", help="TCP pass-through configuration for HAProxy or nginx")
    which = lb.add_mutually_exclusive_group(required=True)
    which.add_argument("--haproxy", action="store_true")
    which.add_argument("--nginx", action="store_true")
    lb.add_argument("--vip", required=True)
    lb.add_argument("--backend", action="append", default=[], required=True, metavar="IP[:PORT]")
    lb.set_defaults(run=run_lb_tcp)

    k8s = kinds.add_parser(
        "k8s",
        help="Kubernetes-side fix for hairpin or PROXY protocol, or for the objects of a file",
        description="With --kube, read the same file as `acmelb diagnose --kube` and print the "
        "exact change for each problem its objects show (kubectl lines in comments, whole "
        "objects to apply); with --case, print the generic fix.",
    )
    source = k8s.add_mutually_exclusive_group(required=True)
    source.add_argument("--case", choices=("hairpin", "proxy-protocol"))
    source.add_argument(
        "--kube",
        metavar="FILE",
        help=f"`{KUBECTL_COMMAND}` output ('-' = stdin); a kind the cluster does not serve "
        "makes kubectl fail: drop it from the list",
    )
    k8s.add_argument(
        "--provider", choices=("digitalocean", "hetzner", "scaleway", "generic"), default="generic"
    )
    k8s.add_argument("--name", default="www.example.com", help="the public name")
    k8s.add_argument("--service", default="ingress-nginx-controller")
    k8s.add_argument("--namespace", default="ingress-nginx")
    k8s.set_defaults(run=run_k8s)


def run_nat_loopback(args: argparse.Namespace) -> int:
    from acmelb.errors import UsageError
    from acmelb.fix import nat_loopback
    from acmelb.fix.verify import vip_fetch_verifier

    plan = nat_loopback.parse_plan(
        args.vip, args.port, args.backend, args.subnet, args.backend_tool
    )
    if args.verify_from and not args.apply:
        raise UsageError("--verify-from goes with --apply")
    if args.undo:
        removed = nat_loopback.undo(plan)
        print(
            "Removed acmelb's NAT loopback rules."
            if removed
            else "No acmelb NAT loopback rules were in place."
        )
        return 0
    if not args.apply:
        print(nat_loopback.render(plan), end="")
        return 0
    verifier = (
        vip_fetch_verifier(args.verify_from, plan.vip, plan.port) if args.verify_from else None
    )
    outcome = nat_loopback.apply_and_verify(plan, verifier)
    print(
        ("Added" if outcome.changed else "Already in place:")
        + f" NAT loopback for {plan.subnet} -> {plan.vip}:{plan.port}"
        f" ({plan.tool}); {outcome.detail}."
    )
    return 0


def run_lb_tcp(args: argparse.Namespace) -> int:
    from acmelb.fix import lb_config

    vip, backends = lb_config.parse_backends(args.vip, args.backend)
    if args.haproxy:
        print(lb_config.haproxy_config(vip, backends), end="")
    else:
        print(lb_config.nginx_stream_config(vip, backends), end="")
    return 0


def run_k8s(args: argparse.Namespace) -> int:
    from acmelb.kube import patches
    from acmelb.names import normalize_name

    if args.kube:
        from acmelb.cli.common import read_input
        from acmelb.fix import kube
        from acmelb.kube.objects import parse_cluster

        cluster = parse_cluster(read_input(args.kube, "--kube"), args.kube)
        print(kube.render(cluster), end="")
        return 0

    print(
        patches.render(
            args.case, args.provider, normalize_name(args.name), args.service, args.namespace
        ),
        end="",
    )
    return 0
