"""``acmelb renew``: renew stored certificates that are due."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.cli.common import add_state_dir, print_json, progress_printer, state_dir


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "renew",
        help="renew certificates that expire soon",
        description="Renew NAME, or every stored certificate with --all, when it is due, "
        "with the settings it was issued with (profile and self-check included). Due: past "
        "a random moment chosen once in the CA's ARI window (RFC 9773; asked again after "
        "its Retry-After), or without ARI in the window when a third of the lifetime is "
        "left (half under 10 days); the renewal order names the certificate it replaces. "
        "Run it from a timer twice a day or more.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", metavar="NAME")
    target.add_argument("--all", action="store_true", help="every stored certificate")
    parser.add_argument(
        "--days",
        type=float,
        default=None,
        help="override: renew when fewer days than this are left (no ARI, no replaces)",
    )
    parser.add_argument("--force", action="store_true", help="renew even if not due")
    parser.add_argument(
        "--deploy-hook",
        metavar="CMD",
        help="run after each renewal (env: RENEWED_LINEAGE, RENEWED_DOMAINS)",
    )
    parser.add_argument("--json", action="store_true")
    add_state_dir(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.issuance import renew
    from acmelb.acme.store import Store

    outcomes = renew(
        Store(state_dir(args)),
        None if args.all else [args.name],
        days=args.days,
        deploy_hook=args.deploy_hook,
        force=args.force,
        progress=progress_printer(args),
    )
    if args.json:
        print_json([{"name": o.name, "action": o.action, "detail": o.detail} for o in outcomes])
    else:
        if not outcomes:
            print("No certificates stored.")
        for outcome in outcomes:
            print(f"{outcome.name}: {outcome.action}: {outcome.detail}")
    return 1 if any(o.action == "failed" for o in outcomes) else 0
