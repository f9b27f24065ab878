"""The checks: small units, each owning finding codes, and the runner that runs them.

``ALL_CHECKS`` is the doctor's own registry; a source of targets with facts of its own
(``acmelb.kube``: the objects around a cert-manager Challenge) registers the checks that
read them into ``DEFAULT_RUNNER`` (``Runner.register``) when it is imported, so the
doctor knows nothing of them. ``Runner`` runs the stages in ``Stage`` order
and stops after a stage that found something fatal; within a stage, checks run
in the order of their declared dependencies (``after``), ties in registry
order. An exception inside a check becomes a ``check-failed`` finding for that
name and the run goes on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence

from acmelb.doctor.checks.answers import Connection, Content, Interception, Ipv6, Redirects
from acmelb.doctor.checks.base import Check, Context
from acmelb.doctor.checks.compare import (
    Consistency,
    InsideOnly,
    Middlebox,
    NatLoopback,
    Perspectives,
    ProxyProtocol,
    SplitHorizon,
    TrailingWhitespace,
    VantageHealth,
)
from acmelb.doctor.checks.dns import Caa, DnsAddresses, DnsReserved
from acmelb.doctor.checks.names import InvalidName
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding, Severity

ALL_CHECKS: tuple[Check, ...] = (
    InvalidName(),
    DnsAddresses(),
    DnsReserved(),
    Caa(),
    Connection(),
    Content(),
    Redirects(),
    Ipv6(),
    Interception(),
    VantageHealth(),
    Perspectives(),
    ProxyProtocol(),
    NatLoopback(),
    SplitHorizon(),
    Consistency(),
    InsideOnly(),
    TrailingWhitespace(),
    Middlebox(),
)


def check_name(check: Check) -> str:
    return type(check).__name__


def ordered(checks: Sequence[Check]) -> tuple[Check, ...]:
    """Stages in order; within one, every check after the checks it names in ``after``.

    Ties keep the registry order, so the report's order is stable. A dependency
    that is not registered, sits in a later stage, or closes a cycle is an error
    in the registry: ``ValueError``.
    """
    by_type = {type(c): c for c in checks}
    for check in checks:
        for dep in check.after:
            if dep not in by_type:
                raise ValueError(
                    f"{check_name(check)} runs after {dep.__name__}, which is not registered"
                )
            if by_type[dep].stage > check.stage:
                raise ValueError(
                    f"{check_name(check)} runs after {dep.__name__}, which belongs to a later stage"
                )
    done: list[Check] = []
    waiting = sorted(checks, key=lambda c: c.stage)  # stable: registry order within a stage
    while waiting:
        ready = next((c for c in waiting if all(by_type[d] in done for d in c.after)), None)
        if ready is None:
            names = ", ".join(check_name(c) for c in waiting)
            raise ValueError(f"the checks' dependencies form a cycle among: {names}")
        done.append(ready)
        waiting.remove(ready)
    return tuple(done)


def _internal_finding(check: Check, exc: Exception) -> Finding:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    place = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    name = check_name(check)
    codes = ", ".join(code.value for code in check.codes)
    return Finding(
        Code.CHECK_FAILED,
        f"the check {name} failed (a bug in acmelb)",
        f"acmelb's check {name} raised an exception, so {codes} were not looked for on "
        "this name. The other checks, the probes and the verdicts are unaffected.",
        "Report it to acmelb with this finding's evidence; meanwhile read the verdicts "
        "and the probes.",
        evidence=[f"{type(exc).__name__}: {exc}{place}"],
    )


class Runner:
    """Runs the registered checks stage by stage, each isolated from the others' faults."""

    def __init__(self, checks: Sequence[Check] = ALL_CHECKS) -> None:
        self.registered: tuple[Check, ...] = tuple(checks)  # registry order
        self.checks = ordered(self.registered)
        self._by_stage = {stage: [c for c in self.checks if c.stage is stage] for stage in Stage}

    def register(self, checks: Sequence[Check]) -> None:
        """Add the checks of a source of facts (after the registry's own; a check of a class
        already registered is skipped, so registering twice changes nothing)."""
        known = {type(c) for c in self.registered}
        self.registered += tuple(c for c in checks if type(c) not in known)
        self.checks = ordered(self.registered)
        self._by_stage = {stage: [c for c in self.checks if c.stage is stage] for stage in Stage}

    def run_stage(self, ctx: Context, stage: Stage) -> list[Finding]:
        """Run one stage's checks; their findings are added to ``ctx.findings`` and returned."""
        new: list[Finding] = []
        for check in self._by_stage[stage]:
            try:
                found = check.run(ctx) if check.applies(ctx) else []
            except Exception as exc:  # a bug in one check must not end the diagnosis
                found = [_internal_finding(check, exc)]
            ctx.findings.extend(found)
            new.extend(found)
        return new

    def stages(self, ctx: Context) -> Iterator[Stage]:
        """The stages to run, in order: the caller prepares each (lookups, probes, awaited
        or not) and runs its checks; a fatal finding ends the run before the next."""
        for stage in Stage:
            if is_fatal(ctx):
                return
            yield stage

    def run(self, ctx: Context, prepare: Callable[[Context, Stage], None]) -> None:
        """Every stage in order, ``prepare(ctx, stage)`` first (lookups, probes)."""
        for stage in self.stages(ctx):
            prepare(ctx, stage)
            self.run_stage(ctx, stage)


def is_fatal(ctx: Context) -> bool:
    return any(f.sev is Severity.FATAL for f in ctx.findings)


# Ordered at import: a broken registry (cycle, unknown dependency) fails at once.
DEFAULT_RUNNER = Runner()


def run_stage(ctx: Context, stage: Stage) -> list[Finding]:
    """One stage of the default registry (tests and callers that stage by hand)."""
    return DEFAULT_RUNNER.run_stage(ctx, stage)


__all__ = [
    "ALL_CHECKS",
    "DEFAULT_RUNNER",
    "Check",
    "Context",
    "Runner",
    "Stage",
    "check_name",
    "is_fatal",
    "ordered",
    "run_stage",
]
