"""The report of one diagnosis: its findings, the two verdicts, the probes, the root cause.

``report_of`` turns a finished ``Context`` into a ``Report``: the verdicts from every
finding as found (would a CA validating like Let's Encrypt accept it, ``acme-ca``; would
cert-manager's self-check pass from the inside vantages), then the findings with the
consequences of the root cause folded. ``to_json`` is the ``acmelb.diagnosis/v1``
document (``acmelb/schemas/diagnosis-v1.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from acmelb.doctor.checks.base import (
    Attempt,
    Context,
    Target,
    VantageRun,
    Verdict,
    ca_attempts,
    cm_verdict,
    corroborated,
    describe,
    go_path,
    le_verdict,
)
from acmelb.doctor.findings import Code, Finding, Severity, sort_findings
from acmelb.doctor.rootcause import RootCause, attribute, explains

SCHEMA = "acmelb.diagnosis/v1"
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"

__all__ = [
    "FAIL",
    "PASS",
    "SCHEMA",
    "UNKNOWN",
    "Report",
    "ca_failure",
    "probes_json",
    "report_of",
    "verdicts",
]


@dataclass
class Report:
    target: Target
    findings: list[Finding]
    verdicts: dict[str, str]
    runs: list[VantageRun] = field(default_factory=list)
    root_cause: RootCause | None = None
    # to_json() made ahead of time by a fleet worker process (see prepare_json)
    _doc: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def ok(self) -> bool:
        return not any(f.sev.failing for f in self.findings)

    def prepare_json(self) -> None:
        """Build the JSON document now (a worker process does, in parallel); the next
        ``to_json()`` hands it over instead of building it in the parent."""
        self._doc = self._build_json()

    def to_json(self) -> dict[str, Any]:
        doc, self._doc = self._doc, None
        return doc if doc is not None else self._build_json()

    def _build_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.target.name,
            "url": self.target.url,
            "ok": self.ok,
            "root_cause": self.root_cause.to_json() if self.root_cause else None,
            "verdicts": dict(self.verdicts),
            "findings": [f.to_json() for f in self.findings],
            "probes": probes_json(self.runs),
            "token": self.target.token,
            "random_token": self.target.random_token,
        }
        if self.target.challenge:
            data["challenge"] = {"name": self.target.challenge, "reason": self.target.reason}
        return data


def probes_json(runs: Sequence[VantageRun]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for run in runs:
        for a in run.attempts:
            f = a.final
            out.append(
                {
                    "vantage": run.label,
                    "address": a.address,
                    "attempt": a.number,
                    "target": a.target,
                    "proxy_protocol": a.proxy,
                    "outcome": f.outcome,
                    "status": f.status,
                    "error": f.error or None,
                    "body_prefix": f.body[:200] if f.outcome == "response" else None,
                    "body_length": f.raw.get("body_length"),
                    "elapsed_ms": int(f.raw.get("elapsed_ms") or 0),
                    "server": f.header("Server"),
                    "redirects": [
                        {"url": h.url, "status": h.status, "location": h.raw.get("redirect_to")}
                        for h in a.redirects
                    ],
                    "runner": run.runner,
                }
            )
    return out


def verdicts(ctx: Context) -> dict[str, str]:
    name_fatal = ctx.name_error is not None
    fatal = any(f.sev is Severity.FATAL for f in ctx.findings)
    return {
        "acme-ca": FAIL if fatal else _verdict(ctx, ctx.outside, ca=True),
        # a fatal DNS finding stopped the probes: the inside was never asked
        "cert-manager-self-check": FAIL
        if name_fatal
        else (UNKNOWN if fatal else _verdict(ctx, ctx.inside, ca=False)),
    }


def _verdict(ctx: Context, runs: list[VantageRun], ca: bool) -> str:
    if not runs:
        return UNKNOWN
    if ca and any(f.code is Code.DNS_RESERVED_ADDRESS and f.sev.failing for f in ctx.findings):
        return FAIL
    states = [_run_verdict(ctx, run, ca) for run in runs]
    if ca and len(states) > 1:
        return _quorum(states)
    if FAIL in states:
        return FAIL
    return UNKNOWN if UNKNOWN in states else PASS


def _quorum(states: list[str]) -> str:
    """Several outside vantages are the CA's perspectives: the first is the primary."""
    remote = [s != FAIL for s in states[1:]]
    if not corroborated(states[0] != FAIL, remote):
        return FAIL
    return UNKNOWN if UNKNOWN in states else PASS


def _run_verdict(ctx: Context, run: VantageRun, ca: bool) -> str:
    """One vantage's verdict: every attempt the validator would make must pass."""
    if not run.public_attempts:
        return FAIL  # resolved to nothing there
    judged = _judged(ctx, run, ca)
    results = [v.ok for _, v in judged if v is not None]
    if results and not all(results):
        return FAIL
    unknown = any(v is None for _, v in judged)
    return UNKNOWN if unknown or not results else PASS


def _judged(ctx: Context, run: VantageRun, ca: bool) -> list[tuple[Attempt, Verdict | None]]:
    """The attempts the validator would make, each with its verdict (None: unknown)."""
    if ca:
        chosen: list[Attempt] = ca_attempts(run.attempts)
    else:
        numbers = sorted({a.number for a in run.public_attempts})
        chosen = [a for a in (go_path(run.attempts, n) for n in numbers) if a is not None]
    out: list[tuple[Attempt, Verdict | None]] = []
    for a in chosen:
        v = le_verdict(a, ctx.target, ctx.options) if ca else cm_verdict(a, ctx.target)
        if ctx.target.key_authorization is None and v.ok:
            out.append((a, None))  # reachable, but content cannot be judged without the key
        elif (
            ctx.target.random_token
            and v.code is Code.LB_INTERCEPTS_CHALLENGE
            and not ctx.has(Code.LB_INTERCEPTS_CHALLENGE)
        ):
            out.append((a, None))  # the backend's own stateless responder: needs our thumbprint
        elif ctx.target.random_token and v.code is Code.WRONG_CONTENT:
            # a catch-all page for a random token: the real token may be routed to the
            # responder while a challenge is pending (the check says so, a warning)
            out.append((a, None))
        else:
            out.append((a, v))
    return out


def ca_failure(ctx: Context) -> tuple[VantageRun, Attempt, Verdict] | None:
    """The first attempt that fails the CA's verdict: the primary perspective's first,
    else a remote one's (None when no attempt fails: DNS, a fatal finding)."""
    for run in ctx.outside:
        for a, v in _judged(ctx, run, ca=True):
            if v is not None and not v.ok and v.code is not None:
                return run, a, v
    return None


def _failure_code(findings: list[Finding], failure: tuple[VantageRun, Attempt, Verdict]) -> Code:
    """The code the failing attempt stands for: an AAAA attempt of a name whose IPv6
    alone fails (``ipv6-unreachable`` found) fails because of that, whatever it got."""
    _, attempt, verdict = failure
    assert verdict.code is not None
    ipv6_alone = any(f.code is Code.IPV6_UNREACHABLE for f in findings)
    return Code.IPV6_UNREACHABLE if attempt.family == "ipv6" and ipv6_alone else verdict.code


def _explained(
    findings: list[Finding], failure: tuple[VantageRun, Attempt, Verdict]
) -> list[Finding]:
    """The findings with one, at error level, that accounts for the CA's failing attempt:
    a check's finding that explains it, raised to an error if it was not one (an AAAA dead
    only on a redirect hop is final for the CA), else a finding made from the attempt."""
    run, attempt, verdict = failure
    code = _failure_code(findings, failure)
    if any(f.sev.failing and explains(f.code, code) for f in findings):
        return findings
    line = f"the CA's verdict fails on this attempt: {describe(attempt)}"
    for i, f in enumerate(findings):
        if explains(f.code, code):
            raised = replace(f, severity=Severity.ERROR, evidence=[*f.evidence, line])
            return [*findings[:i], raised, *findings[i + 1 :]]
    info = code.info
    # on a redirect hop the failing URL is not the challenge's: name it
    where = f" on the redirect to {attempt.final.url}" if attempt.redirects else ""
    made = Finding(
        code,
        f"the CA's validation fails{where}: {info.title}",
        f"{info.explanation[:1].upper()}{info.explanation[1:]}. No check explained this "
        "attempt on its own; the CA's rules fail it.",
        f"{info.remedy[:1].upper()}{info.remedy[1:]}.",
        severity=Severity.ERROR,
        vantages=[run.label],
        evidence=[e for e in (verdict.detail, describe(attempt)) if e],
    )
    return [*findings, made]


def report_of(ctx: Context, judged: dict[str, str] | None = None) -> Report:
    """The verdicts from every finding as found (unless given), then the findings with
    the consequences of the root cause folded. A failing ``acme-ca`` verdict always has
    an error finding and a root cause that explain its failing attempt (issue 23)."""
    judged = judged if judged is not None else verdicts(ctx)
    findings = sort_findings(ctx.findings)
    failure = ca_failure(ctx) if judged.get("acme-ca") == FAIL else None
    if failure is not None:
        findings = sort_findings(_explained(findings, failure))
    must = _failure_code(findings, failure) if failure is not None else None
    folded, cause = attribute(findings, must, failing=judged.get("acme-ca") == FAIL)
    return Report(
        target=ctx.target,
        findings=sort_findings(folded),
        verdicts=judged,
        runs=ctx.runs,
        root_cause=cause,
    )
