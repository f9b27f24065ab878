"""``acmelb diagnose``: why HTTP-01 validation fails, seen from several vantages."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from typing import TYPE_CHECKING, Any, TextIO

from acmelb.commands._common import read_input

if TYPE_CHECKING:
    from acmelb.diagnose import Report

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
    key.add_argument("--thumbprint", metavar="ACCOUNT_THUMBPRINT",
                     help="the account key thumbprint (key = token.thumbprint); without "
                     "--token, checks a stateless responder with a random token")
    p.add_argument("--challenges", metavar="FILE",
                   help="`kubectl get challenges -A -o json` output ('-' = stdin)")
    p.add_argument("--inside", action="append", default=[], metavar="CMD",
                   help="a vantage behind the LB, as a command prefix ('ssh node1')")
    p.add_argument("--outside", action="append", default=[], metavar="CMD",
                   help="a vantage on the public side, as a command prefix")
    p.add_argument("--here", default="outside", choices=("inside", "outside"),
                   help="where this process stands (default: outside)")
    p.add_argument("--resolve", action="append", default=[], metavar="NAME:ADDRESS",
                   help="like curl --resolve, for this process's probes")
    p.add_argument("--dns-server", metavar="ADDRESS[:PORT]", help="DNS server to ask")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="probes per address (default 3)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per connection attempt (default 5)")
    p.add_argument("--ca-identity", default="letsencrypt.org", metavar="DOMAIN",
                   help="the CA's CAA identity (default letsencrypt.org)")
    p.add_argument("--assume-public", action="append", default=[], metavar="CIDR",
                   help="treat addresses in CIDR as public (labs, test networks)")
    p.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="names diagnosed at once with several names (default 64; raise it "
                   "for a fleet where many names time out)")
    p.add_argument("--json", action="store_true", help="print the acmelb.diagnosis/v1 JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.diagnose import DEFAULT_WORKERS, Target, diagnose_many, make_target
    from acmelb.errors import UsageError
    from acmelb.vantage import ProbeSettings, build_vantages

    settings = ProbeSettings.from_cli(
        here=args.here, inside=args.inside, outside=args.outside, resolve=args.resolve,
        dns_server=args.dns_server, timeout=args.timeout, repeat=args.repeat,
        assume_public=args.assume_public, ca_identity=args.ca_identity)
    if args.concurrency is not None and not 1 <= args.concurrency <= 1024:
        raise UsageError("--concurrency must be between 1 and 1024")
    options = settings.options()
    vantages = build_vantages(settings)

    names = list(args.names)
    if args.from_file == "-" and args.challenges == "-":
        raise UsageError("--from-file and --challenges cannot both read standard input")
    if args.from_file:
        names += [ln.strip() for ln in read_input(args.from_file, "--from-file").splitlines()
                  if ln.strip() and not ln.lstrip().startswith("#")]
    infos: list[str] = []
    targets: list[Target] = []
    cluster = settings.cluster
    if args.challenges:
        from acmelb.k8s import parse_challenges

        cluster = True
        if args.token or args.key or args.thumbprint:
            raise UsageError("--challenges brings its own tokens; drop --token/--key/--thumbprint")
        challenges = parse_challenges(read_input(args.challenges, "--challenges"), args.challenges)
        wanted = {n.lower().rstrip(".") for n in names}
        for ch in challenges:
            if wanted and ch.dns_name.lower() not in wanted:
                continue
            if not ch.http01:
                infos.append(f"skipping {ch.ref} ({ch.dns_name}): {ch.type} challenge, "
                             "not HTTP-01")
                continue
            if not ch.pending:
                infos.append(f"skipping {ch.ref} ({ch.dns_name}): state {ch.state}")
                continue
            t = make_target(ch.dns_name, ch.token, ch.key)
            t.challenge, t.reason = ch.ref, ch.reason
            targets.append(t)
        if not targets:
            infos.append("no pending HTTP-01 challenge in the list")
    else:
        if not names:
            raise UsageError("give a NAME, --from-file or --challenges")
        if args.key and not args.token:
            raise UsageError("--key needs --token")
        if args.key and args.token and not args.key.startswith(args.token + "."):
            raise UsageError("--key must be TOKEN.THUMBPRINT for the --token given")
        targets = [make_target(n, args.token, args.key, args.thumbprint) for n in names]

    info_out = sys.stderr if args.json else sys.stdout
    for line in infos:
        print(f"info: {line}", file=info_out)
    progress = Progress(len(targets), sys.stderr) if (
        len(targets) > 1 and not args.json and sys.stderr.isatty()) else None
    reports = diagnose_many(targets, vantages, options, cluster=cluster,
                            workers=args.concurrency or DEFAULT_WORKERS,
                            on_done=progress.update if progress else None)
    if progress is not None:
        progress.close()
    if args.json:
        docs = [r.to_json() for r in reports]
        for doc, r in zip(docs, reports, strict=True):
            _attach_explain(doc, r)
        if len(docs) == 1 and not args.challenges:
            # one name: the report, indented
            json.dump(docs[0], sys.stdout, indent=2)
        else:
            # several (or none left to diagnose): an array, one report per line; compact
            # lines go through the C encoder (indent= falls back to pure Python, which
            # costs a fleet run more than its probes)
            sys.stdout.write("[\n" + ",\n".join(json.dumps(d) for d in docs) + "\n]"
                             if docs else "[]")
        sys.stdout.write("\n")
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        for i, r in enumerate(reports):
            if i:
                print()
            render(r, sys.stdout, colour)
    return 0 if all(r.ok for r in reports) else 1


class Progress:
    """``acmelb: diagnosed 340/1000, 12 failing`` on one terminal line, redrawn at most
    ten times a second; only for a terminal (the caller decides) and gone at the end."""

    def __init__(self, total: int, out: TextIO) -> None:
        import time

        self._clock = time.monotonic
        self.total, self.out = total, out
        self.done = self.failing = 0
        self._drawn = 0.0

    def update(self, report: Report) -> None:
        self.done += 1
        self.failing += not report.ok
        now = self._clock()
        if now - self._drawn >= 0.1 or self.done == self.total:
            self._drawn = now
            self.out.write(f"\racmelb: diagnosed {self.done}/{self.total}, "
                           f"{self.failing} failing\033[K")
            self.out.flush()

    def close(self) -> None:
        if self._drawn:
            self.out.write("\r\033[K")
            self.out.flush()


def _attach_explain(doc: dict[str, Any], report: Report) -> None:
    if report.target.reason:
        from acmelb.explain import explain

        e = explain(report.target.reason)
        doc["challenge"]["explain"] = {"source": e.source, "candidates": e.candidates,
                                       "reasoning": e.reasoning}


_COLOURS = {"fatal": "1;31", "error": "31", "warning": "33", "info": "36", "pass": "32",
            "fail": "31", "unknown": "33"}


def render(report: Report, out: TextIO, colour: bool = False) -> None:
    """The human report: verdicts, then findings grouped by severity, evidence indented."""

    def c(text: str, key: str) -> str:
        return f"\033[{_COLOURS[key]}m{text}\033[0m" if colour else text

    t = report.target
    head = f"{t.name}  {t.url}"
    print(c(head, "info") if colour else head, file=out)
    if t.challenge:
        print(f"  challenge {t.challenge}", file=out)
        if t.reason:
            from acmelb.explain import explain

            e = explain(t.reason)
            print(f"  cert-manager says: {t.reason}", file=out)
            if e.candidates:
                print(f"  that message points to: {', '.join(e.candidates)}", file=out)
    if t.random_token:
        print("  (random token: reachability and routing checked, not content; pass --token "
              "and --key to check the answer)", file=out)
    v = report.verdicts
    print("  verdicts: " + ", ".join(f"{k} {c(val.upper(), val)}" for k, val in v.items()),
          file=out)
    vantages = sorted({r.label + ("" if r.usable else " (unusable)") for r in report.runs})
    if vantages:
        print(f"  vantages: {', '.join(vantages)}", file=out)
    if report.runs and not any(r.role == "inside" for r in report.runs):
        print("  (no inside vantage: add --inside 'ssh NODE' to check what cert-manager's "
              "self-check sees: NAT loopback, PROXY protocol, split horizon)", file=out)
    if not report.findings:
        print("  " + c("OK", "pass") + ": no problem found", file=out)
        return
    for sev in ("fatal", "error", "warning", "info"):
        group = [f for f in report.findings if f.sev.value == sev]
        if not group:
            continue
        print(file=out)
        print("  " + c(f"{sev.upper()} ({len(group)})", sev), file=out)
        for f in group:
            print(f"    {c(f.code.value, sev)}: {f.title}", file=out)
            for line in textwrap.wrap(f.explanation, 88):
                print(f"      {line}", file=out)
            if f.vantages:
                print(f"      seen from: {', '.join(f.vantages)}", file=out)
            if f.evidence:
                print("      evidence:", file=out)
                for line in f.evidence:
                    print(f"        {line}", file=out)
            if f.remedy:
                print("      fix:", file=out)
                for line in f.remedy.splitlines():
                    print(f"        {line}", file=out)
    print(file=out)
    print("  " + (c("OK", "pass") if report.ok else c("FAILED", "fail"))
          + f": {sum(f.sev.failing for f in report.findings)} error(s)", file=out)
