"""``acmelb diagnose``: why HTTP-01 validation fails, seen from several vantages."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from acmelb.cli.common import add_vantage_options, probe_settings, read_input
from acmelb.kube.challenges import KUBECTL_COMMAND

if TYPE_CHECKING:
    from acmelb.doctor.diagnose import Report
    from acmelb.kube.challenges import Challenge
    from acmelb.kube.objects import Cluster

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
    objects = p.add_mutually_exclusive_group()
    objects.add_argument(
        "--challenges",
        metavar="FILE",
        help="`kubectl get challenges -A -o json` output ('-' = stdin)",
    )
    objects.add_argument(
        "--kube",
        metavar="FILE",
        help=f"`{KUBECTL_COMMAND}` output ('-' = stdin): each pending HTTP-01 Challenge with "
        "its solver, Ingress class, controller, load balancer Service and events; the "
        "controller pod becomes the inside vantage (kubectl exec) and the LB address the "
        "address probed, unless --inside/--resolve say otherwise",
    )
    p.add_argument(
        "--no-probe",
        action="store_true",
        help="with --kube or --challenges: report what the objects say, send no packet",
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
    p.add_argument(
        "--json",
        action="store_true",
        help="print the acmelb.diagnosis/v1 JSON: one report for one name; for several, "
        "JSON Lines (one report a line, as each name finishes); an array for "
        "--challenges/--kube",
    )
    p.add_argument(
        "--json-array",
        action="store_true",
        help="with --json and several names: one JSON array, in the order given, printed at "
        "the end (every report is kept until then)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.cli import render as report
    from acmelb.doctor.diagnose import (
        DEFAULT_WORKERS,
        diagnose_many,
        names_from_text,
        plan,
        read_objects,
    )
    from acmelb.doctor.fleet import diagnose_stream
    from acmelb.doctor.vantage import build_vantages
    from acmelb.errors import UsageError

    settings = probe_settings(args)
    if args.concurrency is not None and not 1 <= args.concurrency <= 1024:
        raise UsageError("--concurrency must be between 1 and 1024")
    if args.from_file == "-" and "-" in (args.challenges, args.kube):
        raise UsageError("--from-file and --challenges/--kube cannot both read standard input")
    if args.no_probe and not (args.kube or args.challenges):
        raise UsageError("--no-probe goes with --kube or --challenges")
    if args.json_array and not args.json:
        raise UsageError("--json-array goes with --json")
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
        cluster=_cluster(args.kube) if args.kube else None,
    )
    info_out = sys.stderr if args.json else sys.stdout
    if args.no_probe:
        report.write_infos(todo.infos, info_out)
        return _write(args, [read_objects(t) for t in todo.targets])
    if args.kube:
        from acmelb.kube.objects import kube_settings

        settings, derived = kube_settings(settings, [t.kube for t in todo.targets if t.kube])
        todo.infos += [*derived.infos, f"to rerun by hand: {derived.command(args.kube)}"]
    vantages = build_vantages(settings)
    report.write_infos(todo.infos, info_out)
    output = report.Output.choose(
        json=args.json,
        array=args.json_array,
        targets=len(todo.targets),
        cluster_list=bool(args.challenges or args.kube),
    )
    concurrency = args.concurrency or DEFAULT_WORKERS
    progress = (
        report.Progress(len(todo.targets), sys.stderr)
        if len(todo.targets) > 1 and _progress_fits(output)
        else None
    )
    if output.streams:
        stream = report.Stream(sys.stdout, lines=output is report.Output.LINES, colour=_colour())

        def on_report(index: int, done: report.Rendered) -> None:
            stream(index, done)
            if progress is not None:
                progress.update(done)

        diagnose_stream(
            todo.targets,
            vantages,
            settings.options(),
            cluster=todo.cluster,
            concurrency=concurrency,
            on_report=on_report,
            render=stream.render,
        )
        if progress is not None:
            progress.close()
        return 0 if stream.ok else 1
    reports = diagnose_many(
        todo.targets,
        vantages,
        settings.options(),
        cluster=todo.cluster,
        workers=concurrency,
        on_done=progress.update if progress else None,
    )
    if progress is not None:
        progress.close()
    return _write(args, reports)


def _progress_fits(output: object) -> bool:
    """A progress line on stderr only for a terminal, and never between reports that are
    printed to the same terminal."""
    from acmelb.cli.render import Output

    return sys.stderr.isatty() and (output is not Output.TEXT or not sys.stdout.isatty())


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _write(args: argparse.Namespace, reports: list[Report]) -> int:
    from acmelb.cli import render as report

    if args.json:
        report.write_json(reports, sys.stdout, array=bool(args.challenges or args.kube))
    else:
        report.write_text(reports, sys.stdout, _colour())
    return 0 if all(r.ok for r in reports) else 1


def _challenges(path: str) -> list[Challenge]:
    from acmelb.kube.challenges import parse_challenges

    return parse_challenges(read_input(path, "--challenges"), path)


def _cluster(path: str) -> Cluster:
    from acmelb.kube.objects import parse_cluster

    return parse_cluster(read_input(path, "--kube"), path)
