"""``acmelb diagnose``: why HTTP-01 validation fails, seen from several vantages."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from acmelb.commands._common import add_vantage_options, probe_settings, read_input

if TYPE_CHECKING:
    from acmelb.k8s import Challenge

HELP = "find out why HTTP-01 validation fails (and how to fix it)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diagnose",
        help=HELP,
        description=(
            "Probe http://NAME/.well-known/acme-challenge/TOKEN the way a CA validates, from "
            "this host and from the vantages given, and name what is wrong and the fix."
        ),
        epilog="Exit status: 0 no error, 1 error or fatal finding, 2 bad usage, 3 internal.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="DNS name(s) to diagnose")
    p.add_argument("--from-file", metavar="FILE", help="names, one per line ('-' = stdin)")
    p.add_argument("--token", help="the challenge token (default: a random one)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key", metavar="KEY_AUTHORIZATION", help="the expected body")
    key.add_argument(
        "--thumbprint",
        metavar="ACCOUNT_THUMBPRINT",
        help="the account key thumbprint (key = token.thumbprint); without "
        "--token, checks a stateless responder with a random token",
    )
    p.add_argument(
        "--challenges",
        metavar="FILE",
        help="`kubectl get challenges -A -o json` output ('-' = stdin)",
    )
    add_vantage_options(p, fleet=True)
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="names diagnosed at once with several names (default 64; raise it "
        "for a fleet where many names time out)",
    )
    p.add_argument("--json", action="store_true", help="print the acmelb.diagnosis/v1 JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb import report
    from acmelb.diagnose import DEFAULT_WORKERS, diagnose_many, names_from_text, plan
    from acmelb.errors import UsageError
    from acmelb.vantage import build_vantages

    settings = probe_settings(args)
    if args.concurrency is not None and not 1 <= args.concurrency <= 1024:
        raise UsageError("--concurrency must be between 1 and 1024")
    vantages = build_vantages(settings)
    if args.from_file == "-" and args.challenges == "-":
        raise UsageError("--from-file and --challenges cannot both read standard input")
    names = list(args.names)
    if args.from_file:
        names += names_from_text(read_input(args.from_file, "--from-file"))
    todo = plan(
        settings,
        names,
        token=args.token,
        key=args.key,
        thumbprint=args.thumbprint,
        challenges=_challenges(args.challenges) if args.challenges else None,
    )
    report.write_infos(todo.infos, sys.stderr if args.json else sys.stdout)
    progress = (
        report.Progress(len(todo.targets), sys.stderr)
        if (len(todo.targets) > 1 and not args.json and sys.stderr.isatty())
        else None
    )
    reports = diagnose_many(
        todo.targets,
        vantages,
        settings.options(),
        cluster=todo.cluster,
        workers=args.concurrency or DEFAULT_WORKERS,
        on_done=progress.update if progress else None,
    )
    if progress is not None:
        progress.close()
    if args.json:
        report.write_json(reports, sys.stdout, array=bool(args.challenges))
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        report.write_text(reports, sys.stdout, colour)
    return 0 if all(r.ok for r in reports) else 1


def _challenges(path: str) -> list[Challenge]:
    from acmelb.k8s import parse_challenges

    return parse_challenges(read_input(path, "--challenges"), path)
