"""Showing reports: diagnosis reports (the human text, the JSON documents, progress on a
terminal) and the cluster's status.

The library never prints; these functions write to the stream they are given
(the CLI passes stdout/stderr), so ``acmelb diagnose`` and ``acmelb issue``
show reports the same way.
"""

from __future__ import annotations

import datetime
import enum
import io
import json
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from acmelb.cluster.status import CertificateStatus, ClusterStatus
    from acmelb.cluster.store import HookRun, MemberRecord
    from acmelb.doctor.diagnose import Report

__all__ = [
    "Output",
    "Progress",
    "Rendered",
    "Stream",
    "attach_explain",
    "json_line",
    "render",
    "render_cluster_status",
    "text_block",
    "write_infos",
    "write_json",
    "write_text",
]


def write_infos(lines: Sequence[str], out: TextIO) -> None:
    for line in lines:
        print(f"info: {line}", file=out)


def write_json(reports: Sequence[Report], out: TextIO, *, array: bool) -> None:
    """One report indented, or (``array``, or not exactly one) an array, one per line."""
    docs = [r.to_json() for r in reports]
    for doc, r in zip(docs, reports, strict=True):
        attach_explain(doc, r)
    if len(docs) == 1 and not array:
        json.dump(docs[0], out, indent=2)
    else:
        # compact lines go through the C encoder (indent= falls back to pure Python, which
        # costs a fleet run more than its probes)
        out.write("[\n" + ",\n".join(json.dumps(d) for d in docs) + "\n]" if docs else "[]")
    out.write("\n")


class Output(enum.Enum):
    """How a diagnose run prints its reports."""

    OBJECT = "object"  # --json, one target: the report, indented
    ARRAY = "array"  # --json for --challenges/--kube, or --json-array: one array, in order
    LINES = "lines"  # --json, several names: JSON Lines, each report as it finishes
    TEXT = "text"  # the human reports, each as it finishes

    @classmethod
    def choose(cls, *, json: bool, array: bool, targets: int, cluster_list: bool) -> Output:
        """The contract's forms: one object for one name, the array for a cluster's
        Challenges (and on request); a fleet streams JSON Lines."""
        if not json:
            return cls.TEXT
        if array or cluster_list:
            return cls.ARRAY
        return cls.OBJECT if targets == 1 else cls.LINES

    @property
    def streams(self) -> bool:
        return self in (Output.LINES, Output.TEXT)


@dataclass(frozen=True)
class Rendered:
    """A report as the output prints it, made where the report was made (a fleet's
    worker process): whether it passed, and its text. Only this crosses to the process
    that writes, and only this waits there for the reports before it."""

    ok: bool
    text: str


def json_line(report: Report) -> Rendered:
    """The report as a line of JSON Lines (its Challenge's message explained with it)."""
    doc = report.to_json()
    attach_explain(doc, report)
    return Rendered(report.ok, json.dumps(doc) + "\n")


def text_block(colour: bool) -> Callable[[Report], Rendered]:
    """The human report, as ``render`` writes it."""

    def block(report: Report) -> Rendered:
        out = io.StringIO()
        render(report, out, colour)
        return Rendered(report.ok, out.getvalue())

    return block


class Stream:
    """Writes each rendered report as soon as it may (JSON Lines: as it arrives; the
    human reports: in the order given, each once those before it are out) and keeps no
    more; remembers whether every report passed."""

    def __init__(self, out: TextIO, *, lines: bool, colour: bool = False) -> None:
        self.out, self.lines, self.colour = out, lines, colour
        self.ok = True
        self.count = 0
        self._waiting: dict[int, Rendered] = {}  # text: finished before an earlier name

    def render(self, report: Report) -> Rendered:
        """What this stream writes for ``report`` (a function to run where it is made)."""
        return json_line(report) if self.lines else text_block(self.colour)(report)

    def __call__(self, index: int, rendered: Rendered) -> None:
        self.ok = self.ok and rendered.ok
        if self.lines:
            self._write(rendered)
            return
        self._waiting[index] = rendered
        while self.count in self._waiting:
            self._write(self._waiting.pop(self.count))

    def _write(self, rendered: Rendered) -> None:
        if self.count and not self.lines:
            self.out.write("\n")
        self.out.write(rendered.text)
        self.out.flush()  # a pipe reader (or an interrupted run) has every finished name
        self.count += 1


def write_text(reports: Sequence[Report], out: TextIO, colour: bool = False) -> None:
    """Every report rendered, a blank line between two."""
    for i, r in enumerate(reports):
        if i:
            print(file=out)
        render(r, out, colour)


class Progress:
    """``acmelb: diagnosed 340/1000, 12 failing`` on one terminal line, redrawn at most
    ten times a second; only for a terminal (the caller decides) and gone at the end."""

    def __init__(self, total: int, out: TextIO) -> None:
        import time

        self._clock = time.monotonic
        self.total, self.out = total, out
        self.done = self.failing = 0
        self._drawn = 0.0

    def update(self, report: Report | Rendered) -> None:
        self.done += 1
        self.failing += not report.ok
        now = self._clock()
        if now - self._drawn >= 0.1 or self.done == self.total:
            self._drawn = now
            self.out.write(
                f"\racmelb: diagnosed {self.done}/{self.total}, {self.failing} failing\033[K"
            )
            self.out.flush()

    def close(self) -> None:
        if self._drawn:
            self.out.write("\r\033[K")
            self.out.flush()


def attach_explain(doc: dict[str, Any], report: Report) -> None:
    """A Challenge's own failure message, explained, next to its report."""
    if report.target.reason:
        from acmelb.doctor.explain import explain

        e = explain(report.target.reason)
        doc["challenge"]["explain"] = {
            "source": e.source,
            "candidates": e.candidates,
            "reasoning": e.reasoning,
        }


_COLOURS = {
    "fatal": "1;31",
    "error": "31",
    "warning": "33",
    "info": "36",
    "pass": "32",
    "fail": "31",
    "unknown": "33",
}


def _first_line(report: Report) -> str:
    """The name and its root cause: what to fix first."""
    if report.root_cause is not None:
        return f"{report.name}: {report.root_cause.line}"
    if any(v == "fail" for v in report.verdicts.values()):
        return f"{report.name}: a verdict fails, but no finding names why"
    return f"{report.name}: no problem found"


def render(report: Report, out: TextIO, colour: bool = False) -> None:
    """The human report: verdicts, then findings grouped by severity, evidence indented."""

    def c(text: str, key: str) -> str:
        return f"\033[{_COLOURS[key]}m{text}\033[0m" if colour else text

    t = report.target
    print(c(_first_line(report), "info") if colour else _first_line(report), file=out)
    print(f"  url: {t.url}", file=out)
    if t.challenge:
        print(f"  challenge {t.challenge}", file=out)
        if t.reason:
            from acmelb.doctor.explain import explain

            e = explain(t.reason)
            print(f"  cert-manager says: {t.reason}", file=out)
            if e.candidates:
                print(f"  that message points to: {', '.join(e.candidates)}", file=out)
    if t.random_token:
        print(
            "  (random token: reachability and routing checked, not content; pass --token "
            "and --key to check the answer)",
            file=out,
        )
    v = report.verdicts
    print(
        "  verdicts: " + ", ".join(f"{k} {c(val.upper(), val)}" for k, val in v.items()), file=out
    )
    vantages = sorted({r.label + ("" if r.usable else " (unusable)") for r in report.runs})
    if vantages:
        print(f"  vantages: {', '.join(vantages)}", file=out)
    if report.runs and not any(r.role == "inside" for r in report.runs):
        print(
            "  (no inside vantage: add --inside 'ssh NODE' to check what cert-manager's "
            "self-check sees: NAT loopback, PROXY protocol, split horizon)",
            file=out,
        )
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
    print(
        "  "
        + (c("OK", "pass") if report.ok else c("FAILED", "fail"))
        + f": {sum(f.sev.failing for f in report.findings)} error(s)",
        file=out,
    )


# -- the cluster's status ------------------------------------------------------------


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return f"{datetime.datetime.fromtimestamp(epoch, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _ago(epoch: float) -> str:
    seconds = max(0.0, time.time() - epoch)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def render_cluster_status(status: ClusterStatus, out: TextIO) -> None:
    print("store:", file=out)
    for endpoint, health in status.store.items():
        print(f"  {endpoint}  {health}", file=out)
    if not status.quorum:
        print(f"  NO QUORUM: {status.error}", file=out)
        return
    print(f"members ({len(status.members)} live):", file=out)
    for m in status.members:
        installed = ", ".join(f"{n} v{v}" for n, v in sorted(m.installed.items())) or "nothing"
        print(
            f"  {m.member}  last seen {_ago(m.last_seen)}  installed: {installed}  "
            f"health: {_member_health(m)}",
            file=out,
        )
    print(f"certificates ({len(status.certificates)}):", file=out)
    for c in status.certificates:
        _render_certificate(status, c, out)
    print(_summary_line(status), file=out)


def _member_health(m: MemberRecord) -> str:
    problems = [f"{n}: {p}" for n, p in m.problems.items()]
    problems += [
        f"UNHEALTHY: deploy hook for {n} v{run.version} {_hook_said(run)}"
        for n, run in sorted(m.failed_hooks.items())
    ]
    if not m.store_ok:
        problems.append("store unreachable")
    return "; ".join(problems) or "ok"


def _hook_said(run: HookRun) -> str:
    what = "did not finish" if run.exit_status is None else f"exited {run.exit_status}"
    last = run.output.splitlines()[-1] if run.output else ""
    return f"{what} {_ago(run.at)}" + (f": {last}" if last else "")


def _render_certificate(status: ClusterStatus, c: CertificateStatus, out: TextIO) -> None:
    version = f"v{c.version}" if c.version is not None else "not issued yet"
    print(f"  {c.name} ({', '.join(c.names)})  {version}  not after {_when(c.not_after)}", file=out)
    if c.renewal_window:
        print(
            f"    renewal window {_when(c.renewal_window[0])} .. {_when(c.renewal_window[1])}",
            file=out,
        )
    if c.ari:
        a = c.ari
        source = "the CA's ARI" if a["source"] == "ari" else "the lifetime (no ARI)"
        said = f"; explanation: {a['explanation_url']}" if a.get("explanation_url") else ""
        print(
            f"    window from {source}: {_when(a['window']['start'])} .. "
            f"{_when(a['window']['end'])}; renews after {_when(a['moment'])}; next ARI poll "
            f"{_when(a['next_poll'])}{said}",
            file=out,
        )
    if c.lock_holder:
        print(f"    lock held by {c.lock_holder}", file=out)
    if c.pending_order:
        o = c.pending_order
        print(
            f"    pending order {o['order_url']} at step {o['step']}, started by "
            f"{o['started_by']} {_ago(o['started_at'])}",
            file=out,
        )
    if c.backoff:
        b = c.backoff
        print(
            f"    backing off after {b['failures']} failed attempt(s) ({b['kind']}); next "
            f"attempt {_when(b['next_attempt'])}; last error ({b['member']}, "
            f"{_ago(b['at'])}): {b['last_error']}",
            file=out,
        )
    if c.renewal_requested:
        r = c.renewal_requested
        past = " past any back-off" if r.get("now") else ""
        print(f"    renewal requested{past} by {r.get('by', '?')} {_ago(r['at'])}", file=out)
    behind = [m for m in status.members if m.installed.get(c.name) != c.version]
    if c.version is not None and behind:
        print(f"    not yet installed on: {', '.join(m.member for m in behind)}", file=out)
    for member, why in sorted(c.stragglers.items()):
        print(f"    STRAGGLER {member}: {why}", file=out)


def _summary_line(status: ClusterStatus) -> str:
    if not status.healthy:
        late = sorted({member for c in status.certificates for member in c.stragglers})
        return f"UNHEALTHY: stragglers: {', '.join(late)} (see above)"
    if status.converged:
        return "converged: every member serves every current version"
    if status.quorum and not status.certificates:
        return "not converged yet: no certificate declared (agents declare theirs on start)"
    if status.quorum and not status.members:
        return "not converged yet: no member alive"
    return "not converged yet"
