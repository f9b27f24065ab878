"""``acmelb issue``: obtain a certificate over HTTP-01 and store it."""

from __future__ import annotations

import argparse
from typing import Any

from acmelb.commands._common import (
    add_ca_options,
    ca_config,
    print_json,
    progress_printer,
    state_dir,
)

SOLVERS = ("standalone", "stateless", "webroot", "hook")
KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "issue", help="obtain a certificate for one or more names over HTTP-01",
        description="Order a certificate for NAME... (one certificate, all names), prove "
        "control of each name over HTTP-01, and store it under STATE/live/FIRST-NAME/.")
    parser.add_argument("names", nargs="+", metavar="NAME")
    add_ca_options(parser, directory_required=True)
    parser.add_argument("--solver", choices=SOLVERS, default="standalone",
                        help="how the token is served (default: standalone)")
    parser.add_argument("--http-port", type=int, default=80,
                        help="port of the standalone responder (default 80)")
    parser.add_argument("--http-address", action="append", default=[], metavar="ADDR",
                        help="address of the standalone responder (repeatable; default all)")
    parser.add_argument("--webroot", help="web root for --solver webroot")
    parser.add_argument("--hook", metavar="CMD",
                        help="command for --solver hook (env: ACMELB_ACTION, ACMELB_DOMAIN, "
                        "ACMELB_TOKEN, ACMELB_KEY_AUTHORIZATION, and certbot's names)")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec256")
    parser.add_argument("--reuse-key", action="store_true",
                        help="keep the existing private key of this certificate")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.errors import UsageError
    from acmelb.issuance import Issuer, IssueRequest
    from acmelb.solvers import SolverOptions
    from acmelb.store import Store

    if not 0 < args.http_port < 65536:
        raise UsageError(f"--http-port {args.http_port}: not a TCP port")
    request = IssueRequest(
        names=tuple(args.names), ca=ca_config(args),
        solver=SolverOptions(kind=args.solver, http_port=args.http_port,
                             addresses=tuple(args.http_address), webroot=args.webroot,
                             hook=args.hook),
        key_type=args.key_type, reuse_key=args.reuse_key)
    issuer = Issuer(Store(state_dir(args)), progress=progress_printer(args))
    result = issuer.issue(request)
    if args.json:
        print_json({"name": result.name, "names": list(result.names),
                    "version": result.version, "not_after": result.not_after.isoformat(),
                    "live_dir": str(result.live_dir), "fullchain": str(result.fullchain),
                    "privkey": str(result.privkey)})
    else:
        print(f"Certificate for {', '.join(result.names)} issued, valid until "
              f"{result.not_after:%Y-%m-%d %H:%M} UTC.\n"
              f"  fullchain: {result.fullchain}\n  privkey:   {result.privkey}")
    return 0
