"""``acmelb revoke``: revoke a stored certificate."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.cli.common import add_state_dir, state_dir

REASONS = (
    "unspecified",
    "keycompromise",
    "affiliationchanged",
    "superseded",
    "cessationofoperation",
)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "revoke",
        help="revoke a stored certificate",
        description="Revoke the current certificate of NAME with the account that issued it.",
    )
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--reason", choices=REASONS, default="unspecified")
    add_state_dir(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.issuance import revoke
    from acmelb.acme.store import Store

    info = revoke(Store(state_dir(args)), args.name, reason=args.reason)
    print(f"Revoked the certificate for {', '.join(info.names)} (reason: {args.reason}).")
    return 0
