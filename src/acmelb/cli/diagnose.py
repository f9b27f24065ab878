"""``acmelb diagnose``: why HTTP-01 validation fails, seen from several vantages."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from acmelb.cli.common import add_vantage_options, probe_settings, read_input
from acmelb.kube.challenges import KUBECTL_COMMAND

if TYPE_CHECKING:
    from collections.abc import Sequence

    from acmelb.cli.render import Output, Progress
    from acmelb.doctor.checks.base import Options
    from acmelb.doctor.diagnose import Plan
    from acmelb.doctor.report import Report
    from acmelb.doctor.vantage import ProbeSettings, Vantage
    from acmelb.kube.challenges import Challenge
    from acmelb.kube.objects import Cluster

HELP = "find out why HTTP-01 validation fails (and how to fix it)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diagnose",
        help=HELP,
        description=(
            "Probe http://NAME/.well-known/acme-challenge/TOKEN the way a CA validates, from "
            "this host and from the vantages given, and name what is wrong and the fix. A "
            "NAME may be an IP address (an IP-address certificate): no DNS, the address "
            "probed as it is (http://[IPv6]/...)."
        ),
        epilog="Exit status: 0 no error, 1 error or fatal finding, 2 bad usage, 3 internal.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="DNS name(s) or IP address(es) to diagnose"
    )
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
        help=f"`{KUBECTL_COMMAND}` output ('-' = stdin; a kind the cluster does not serve "
        "makes kubectl fail: drop it from the list, other kinds in the file are skipped): "
        "each pending HTTP-01 Challenge with its solver, Ingress class and controller or "
        "HTTPRoute, Gateway and listener, load balancer Service and events; the controller "
        "or Gateway pod becomes the inside vantage (kubectl exec) and the LB or Gateway "
        "address the address probed, unless --inside/--resolve say otherwise",
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
    from acmelb.cli import render
    from acmelb.doctor.vantage import build_vantages

    settings = probe_settings(args)
    _check_flags(args)
    todo, settings = _plan(args, settings)
    info_out = sys.stderr if args.json else sys.stdout
    if args.no_probe:
        from acmelb.kube.plan import read_objects

        render.write_infos(todo.infos, info_out)
        return _write(args, [read_objects(t) for t in todo.targets])
    vantages = build_vantages(settings)
    render.write_infos(todo.infos, info_out)
    output = render.Output.choose(
        json=args.json,
        array=args.json_array,
        targets=len(todo.targets),
        cluster_list=bool(args.challenges or args.kube),
    )
    diagnose = _stream if output.streams else _collect
    return diagnose(args, todo, vantages, settings.options(), output)


def _check_flags(args: argparse.Namespace) -> None:
    from acmelb.errors import UsageError

    if args.concurrency is not None and not 1 <= args.concurrency <= 1024:
        raise UsageError("--concurrency must be between 1 and 1024")
    if args.from_file == "-" and "-" in (args.challenges, args.kube):
        raise UsageError("--from-file and --challenges/--kube cannot both read standard input")
    if args.no_probe and not (args.kube or args.challenges):
        raise UsageError("--no-probe goes with --kube or --challenges")
    if args.json_array and not args.json:
        raise UsageError("--json-array goes with --json")


def _plan(args: argparse.Namespace, settings: ProbeSettings) -> tuple[Plan, ProbeSettings]:
    """The targets (from names, or from a cluster's objects) and the settings to probe with
    (a cluster's objects add the inside vantage and the LB's address)."""
    from acmelb.doctor.diagnose import names_from_text, plan

    names = list(args.names)
    if args.from_file:
        names += names_from_text(read_input(args.from_file, "--from-file"))
    if not (args.challenges or args.kube):
        return plan(
            settings, names, token=args.token, key=args.key, thumbprint=args.thumbprint
        ), settings
    from acmelb.kube import plan as kube

    todo = kube.plan(
        names,
        token=args.token,
        key=args.key,
        thumbprint=args.thumbprint,
        challenges=_challenges(args.challenges) if args.challenges else None,
        cluster=_cluster(args.kube) if args.kube else None,
    )
    if args.kube and not args.no_probe:
        settings, derived = kube.probe_settings(settings, todo.targets, args.kube)
        todo.infos += derived
    return todo, settings


def _progress(args: argparse.Namespace, todo: Plan, output: Output) -> Progress | None:
    from acmelb.cli.render import Progress

    if len(todo.targets) > 1 and _progress_fits(output):
        return Progress(len(todo.targets), sys.stderr)
    return None


def _stream(
    args: argparse.Namespace,
    todo: Plan,
    vantages: Sequence[Vantage],
    options: Options,
    output: Output,
) -> int:
    """Each report printed as it is done (text, or JSON lines)."""
    from acmelb.cli import render
    from acmelb.doctor.diagnose import DEFAULT_WORKERS
    from acmelb.doctor.fleet import diagnose_stream

    progress = _progress(args, todo, output)
    stream = render.Stream(sys.stdout, lines=output is render.Output.LINES, colour=_colour())

    def on_report(index: int, done: render.Rendered) -> None:
        stream(index, done)
        if progress is not None:
            progress.update(done)

    diagnose_stream(
        todo.targets,
        vantages,
        options,
        cluster=todo.cluster,
        concurrency=args.concurrency or DEFAULT_WORKERS,
        on_report=on_report,
        render=stream.render,
    )
    if progress is not None:
        progress.close()
    return 0 if stream.ok else 1


def _collect(
    args: argparse.Namespace,
    todo: Plan,
    vantages: Sequence[Vantage],
    options: Options,
    output: Output,
) -> int:
    """Every report kept, then printed together (a JSON array, in the order given)."""
    from acmelb.doctor.diagnose import DEFAULT_WORKERS, diagnose_many

    progress = _progress(args, todo, output)
    reports = diagnose_many(
        todo.targets,
        vantages,
        options,
        cluster=todo.cluster,
        workers=args.concurrency or DEFAULT_WORKERS,
        on_done=progress.update if progress else None,
    )
    if progress is not None:
        progress.close()
    return _write(args, reports)


def _progress_fits(output: Output) -> bool:
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
