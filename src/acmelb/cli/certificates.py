"""``acmelb certificates``: list stored certificates."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.cli.common import add_state_dir, print_json, state_dir


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "certificates", help="list stored certificates with expiry and paths"
    )
    parser.add_argument("--json", action="store_true")
    add_state_dir(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.issuance import inspect_certificates
    from acmelb.acme.store import Store

    store = Store(state_dir(args))
    infos = inspect_certificates(store)
    if args.json:
        print_json(
            [
                {
                    "name": i.name,
                    "names": list(i.names),
                    "not_after": i.not_after.isoformat() if i.not_after else None,
                    "days_left": round(i.days_left, 2) if i.days_left is not None else None,
                    "fullchain": str(i.live_dir / "fullchain.pem"),
                    "privkey": str(i.live_dir / "privkey.pem"),
                    "problem": i.problem,
                }
                for i in infos
            ]
        )
        return 0
    if not infos:
        print(f"No certificates in {store.root}.")
        return 0
    for info in infos:
        print(f"{info.name}")
        print(f"  names:     {' '.join(info.names)}")
        if info.problem:
            print(f"  problem:   {info.problem}")
        else:
            assert info.not_after is not None and info.days_left is not None
            print(f"  expires:   {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left:.0f} days)")
        print(f"  fullchain: {info.live_dir / 'fullchain.pem'}")
        print(f"  privkey:   {info.live_dir / 'privkey.pem'}")
    return 0
