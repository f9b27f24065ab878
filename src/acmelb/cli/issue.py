"""``acmelb issue``: obtain a certificate over HTTP-01 and store it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from acmelb.cli.common import (
    add_ca_options,
    add_vantage_options,
    ca_config,
    print_json,
    probe_settings,
    progress_printer,
    read_input,
    state_dir,
)

if TYPE_CHECKING:
    from acmelb.acme.issuance import IssueRequest, IssueResult

SOLVERS = ("standalone", "stateless", "webroot", "hook", "serve")
KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "issue",
        help="obtain a certificate for one or more names over HTTP-01",
        description="Order a certificate for NAME... (one certificate, all names), prove "
        "control of each name over HTTP-01, and store it under STATE/live/FIRST-NAME/. "
        "A NAME may be an IP address (RFC 8738; Let's Encrypt: --profile shortlived).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="a DNS name or an IP address")
    parser.add_argument(
        "--from-file",
        metavar="FILE",
        help="issue many certificates in one run: one certificate per line, "
        "its names separated by spaces or commas ('-' = stdin; # comments)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="orders in flight at once with --from-file (default 8)",
    )
    add_ca_options(parser, directory_required=True)
    parser.add_argument(
        "--solver",
        choices=SOLVERS,
        default="standalone",
        help="how the token is served (default: standalone; serve: a running "
        "`acmelb serve --pending` with the same --state-dir answers)",
    )
    parser.add_argument(
        "--http-port", type=int, default=80, help="port of the standalone responder (default 80)"
    )
    parser.add_argument(
        "--http-address",
        action="append",
        default=[],
        metavar="ADDR",
        help="address of the standalone responder (repeatable; default all)",
    )
    parser.add_argument("--webroot", help="web root for --solver webroot")
    parser.add_argument(
        "--hook",
        metavar="CMD",
        help="command for --solver hook (env: ACMELB_ACTION, ACMELB_DOMAIN, "
        "ACMELB_TOKEN, ACMELB_KEY_AUTHORIZATION, and certbot's names)",
    )
    parser.add_argument("--key-type", choices=KEY_TYPES, default="ec256")
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="the CA's certificate profile (Let's Encrypt: classic, tlsserver, shortlived; "
        "`acmelb account profiles` lists them); kept for renewals",
    )
    parser.add_argument(
        "--reuse-key", action="store_true", help="keep the existing private key of this certificate"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    check = parser.add_argument_group(
        "self-check",
        "diagnose each challenge through the load balancer before answering it "
        "(the same engine and vantage options as `acmelb diagnose`)",
    )
    check.add_argument(
        "--self-check",
        choices=("strict", "tolerant", "off"),
        default="strict",
        help="strict: refuse on any error (default); tolerant: accept "
        "inside-only errors when the outside path passes; off",
    )
    add_vantage_options(check)
    check.add_argument(
        "--self-check-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for a token to propagate (default 60)",
    )
    parser.set_defaults(run=run)


def _self_check_options(args: argparse.Namespace) -> Any:
    from acmelb.acme.selfcheck import SelfCheckOptions

    if args.self_check == "off":
        return None
    return SelfCheckOptions(
        mode=args.self_check, probe=probe_settings(args), total_timeout=args.self_check_timeout
    )


def _show_refusal(args: argparse.Namespace, refused: Any, deactivated: Any) -> None:
    import dataclasses
    import sys

    from acmelb.cli.render import render

    if args.json:
        print_json(
            {
                "ok": False,
                "error": str(refused),
                "deactivated": [dataclasses.asdict(d) for d in deactivated],
                "self_check": [r.to_json() for r in refused.reports],
            }
        )
        return
    print(f"acmelb: {refused}", file=sys.stderr)
    for report in refused.reports:
        print(file=sys.stderr)
        render(report, sys.stderr, colour=sys.stderr.isatty())


def _read_certificate_list(path: str) -> list[tuple[str, ...]]:
    from acmelb.errors import UsageError

    text = read_input(path, "--from-file")
    from acmelb.acme.issuance import normalize_names

    groups = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if line:
            try:
                groups.append(normalize_names(line.split()))
            except UsageError as exc:
                raise UsageError(f"--from-file {path} line {number}: {exc}") from exc
    if not groups:
        raise UsageError(f"--from-file {path}: no names in it")
    return groups


def _issue_many(args: argparse.Namespace, issuer: Any, requests: list[Any]) -> int:
    import sys
    import threading

    from acmelb.errors import AcmelbError

    total, done, failed = len(requests), 0, 0
    lock = threading.Lock()
    bar = sys.stderr.isatty() and not args.json

    def on_done(request: Any, outcome: Any) -> None:
        nonlocal done, failed
        with lock:
            done += 1
            failed += isinstance(outcome, AcmelbError)
            if bar:
                print(
                    f"\racmelb: {done}/{total} done, {failed} failed",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

    outcomes = issuer.issue_many(requests, concurrency=args.concurrency, on_done=on_done)
    if bar:
        print(file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for request, outcome in zip(requests, outcomes, strict=True):
        if isinstance(outcome, AcmelbError):
            rows.append({"names": list(request.names), "ok": False, "error": str(outcome)})
        else:
            rows.append(
                {
                    "names": list(outcome.names),
                    "ok": True,
                    "not_after": outcome.not_after.isoformat(),
                    "fullchain": str(outcome.fullchain),
                    "privkey": str(outcome.privkey),
                }
            )
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            what = (
                f"issued, valid until {row['not_after'][:16].replace('T', ' ')} UTC"
                if row["ok"]
                else f"failed: {row['error']}"
            )
            print(f"{' '.join(row['names'])}: {what}")
        print(f"{total - failed} of {total} certificates issued.")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.issuance import Issuer
    from acmelb.acme.selfcheck import SelfCheckRefused
    from acmelb.acme.store import Store
    from acmelb.errors import ValidationFailedError

    _check_flags(args)
    show = progress_printer(args)
    requests = _requests(args)
    if args.from_file:
        return _issue_many(args, Issuer(Store(state_dir(args))), requests)
    issuer = Issuer(Store(state_dir(args)), progress=show)
    try:
        result = issuer.issue(requests[0])
    except SelfCheckRefused as refused:
        _show_refusal(args, refused, issuer.deactivated)
        return 1
    except ValidationFailedError as failed:
        for line in failed.notes:
            show(line)
        raise
    for line in result.warnings:
        show(f"warning (tolerated by --self-check tolerant): {line}")
    _show_result(args, result)
    return 0


def _check_flags(args: argparse.Namespace) -> None:
    from acmelb.errors import UsageError

    if not 0 < args.http_port < 65536:
        raise UsageError(f"--http-port {args.http_port}: not a TCP port")
    if bool(args.names) == bool(args.from_file):
        raise UsageError("give NAME... for one certificate, or --from-file FILE for many")
    if not 1 <= args.concurrency <= 256:
        raise UsageError("--concurrency must be between 1 and 256")


def _requests(args: argparse.Namespace) -> list[IssueRequest]:
    """One request per certificate: NAME... on the command line, or each line of the file."""
    from acmelb.acme.issuance import IssueRequest
    from acmelb.acme.solvers import SolverOptions

    groups = [tuple(args.names)] if args.names else _read_certificate_list(args.from_file)
    solver = SolverOptions(
        kind=args.solver,
        http_port=args.http_port,
        addresses=tuple(args.http_address),
        webroot=args.webroot,
        hook=args.hook,
        state_dir=str(state_dir(args).resolve()) if args.solver == "serve" else None,
    )
    return [
        IssueRequest(
            names=names,
            ca=ca_config(args),
            solver=solver,
            key_type=args.key_type,
            reuse_key=args.reuse_key,
            self_check=_self_check_options(args),
            profile=args.profile,
        )
        for names in groups
    ]


def _show_result(args: argparse.Namespace, result: IssueResult) -> None:
    if args.json:
        doc: dict[str, Any] = {
            "name": result.name,
            "names": list(result.names),
            "version": result.version,
            "not_after": result.not_after.isoformat(),
            "live_dir": str(result.live_dir),
            "fullchain": str(result.fullchain),
            "privkey": str(result.privkey),
            "warnings": list(result.warnings),
        }
        if result.self_check:
            doc["self_check"] = [r.to_json() for r in result.self_check]
        print_json(doc)
    else:
        print(
            f"Certificate for {', '.join(result.names)} issued, valid until "
            f"{result.not_after:%Y-%m-%d %H:%M} UTC.\n"
            f"  fullchain: {result.fullchain}\n  privkey:   {result.privkey}"
        )
