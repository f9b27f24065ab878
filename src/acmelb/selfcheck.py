"""The LB-aware self-check that runs inside ``acmelb issue``.

After the solver presented every token and before any challenge is answered,
each pending challenge is diagnosed from the configured vantages with its
real token and key authorization (the same engine as ``acmelb diagnose``).

* ``strict``: any error or fatal finding stops the run; the challenges are
  not answered (the issuer then deactivates the pending authorizations), so
  the CA never counts a failed validation.
* ``tolerant``: errors that only concern the inside path (``nat-loopback``,
  ``proxy-protocol-required``, ``dns-split-horizon``) are accepted when the
  outside path passes (or, with no outside vantage, when the responder itself
  answers correctly); they are kept as warnings.
* ``off``: no self-check.

Findings that may only mean "not propagated yet" (a solver that syncs a
webroot or pushes to backends) are retried with backoff until
``total_timeout``; reachability findings are final after one round, so a
hairpin verdict comes after one connect timeout.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from acmelb.codes import Code
from acmelb.errors import AcmelbError, UsageError
from acmelb.solvers import PendingChallenge

if TYPE_CHECKING:
    from acmelb.diagnose import Report

MODES = ("strict", "tolerant", "off")
INSIDE_ONLY_CODES = frozenset({Code.NAT_LOOPBACK, Code.PROXY_PROTOCOL_REQUIRED,
                               Code.DNS_SPLIT_HORIZON})
# A token written a moment ago may not be visible yet on every backend.
PROPAGATION_CODES = frozenset({Code.CHALLENGE_NOT_FOUND, Code.WRONG_CONTENT,
                               Code.INCONSISTENT_BACKENDS, Code.HTTP_ERROR_STATUS})


class SelfCheckRefused(AcmelbError):
    """The self-check predicts a failed validation; nothing was answered."""

    def __init__(self, message: str, reports: Sequence[Report]) -> None:
        super().__init__(message)
        self.reports = list(reports)


@dataclass
class SelfCheckOptions:
    mode: str = "strict"
    here: str = "outside"
    inside: tuple[str, ...] = ()
    outside: tuple[str, ...] = ()
    resolve: dict[str, list[str]] = field(default_factory=dict)
    dns_server: tuple[str, int] | None = None
    timeout: float = 5.0  # per connection attempt
    total_timeout: float = 60.0  # propagation wait, all rounds together
    repeat: int = 3
    assume_public: tuple[str, ...] = ()  # CIDRs treated as public (labs, test networks)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"--self-check {self.mode!r}: choose strict, tolerant or off")
        if self.here not in ("inside", "outside"):
            raise UsageError(f"--here {self.here!r}: choose inside or outside")
        for cidr in self.assume_public:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise UsageError(f"--assume-public {cidr!r}: not a network") from None


def _failing_codes(report: Report) -> set[str]:
    return {f.code.value for f in report.findings if f.sev.failing}


def _responder_answers_directly(report: Report, key_authorization: str) -> bool:
    """Did some vantage, fetching its own local responder, get the exact key?"""
    for run in report.runs:
        for attempt in run.local_attempts:
            final = attempt.final
            if final.outcome == "response" and final.status == 200 and \
                    final.body == key_authorization:
                return True
    return False


def tolerable(report: Report, key_authorization: str) -> bool:
    """Tolerant mode: only inside-path errors, and the outside path (or responder) is fine."""
    failing = _failing_codes(report)
    if not failing or not failing <= {c.value for c in INSIDE_ONLY_CODES}:
        return not failing
    if any(run.role == "outside" for run in report.runs):
        return report.verdicts.get("acme-ca") == "pass"
    return _responder_answers_directly(report, key_authorization)


class SelfCheck:
    """Callable seam for ``Issuer``: raises SelfCheckRefused, keeps every report."""

    def __init__(self, options: SelfCheckOptions,
                 progress: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.progress = progress or (lambda _message: None)
        self.reports: list[Report] = []
        self.tolerated: list[Report] = []

    def _diagnose(self, challenge: PendingChallenge) -> Report:
        from acmelb.checks.base import Options
        from acmelb.diagnose import diagnose_challenge

        opts = self.options
        return diagnose_challenge(
            challenge.name, challenge.token, challenge.key_authorization,
            inside=opts.inside, outside=opts.outside, here=opts.here,
            options=Options(repeat=opts.repeat, timeout=opts.timeout,
                            dns_server=opts.dns_server, resolve=dict(opts.resolve),
                            assume_public=list(opts.assume_public)))

    def _settle(self, challenge: PendingChallenge) -> Report:
        deadline = time.monotonic() + self.options.total_timeout
        delay = 0.25
        while True:
            report = self._diagnose(challenge)
            failing = _failing_codes(report)
            if not failing or not failing <= {c.value for c in PROPAGATION_CODES}:
                return report
            if time.monotonic() + delay >= deadline:
                return report
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def __call__(self, challenges: Sequence[PendingChallenge]) -> None:
        if self.options.mode == "off":
            return
        refused: list[Report] = []
        for challenge in challenges:
            report = self._settle(challenge)
            self.reports.append(report)
            verdicts = ", ".join(f"{k} {v}" for k, v in report.verdicts.items())
            codes = ", ".join(sorted(_failing_codes(report))) or "no error"
            self.progress(f"self-check of {challenge.name}: {codes} ({verdicts})")
            if report.ok:
                continue
            if self.options.mode == "tolerant" and tolerable(report,
                                                              challenge.key_authorization):
                self.tolerated.append(report)
                continue
            refused.append(report)
        if refused:
            summary = "; ".join(
                f"{r.name}: {', '.join(sorted(_failing_codes(r)))}" for r in refused)
            raise SelfCheckRefused(
                f"self-check ({self.options.mode}) refused to answer the challenge, so the CA "
                f"counted no failed validation: {summary}", refused)


def compare_with_ca(reports: Sequence[Report],
                    failures: Sequence[tuple[str, str, str]]) -> list[str]:
    """Lines that put the CA's verdict next to what the self-check saw."""
    seen = {report.name: report for report in reports}
    lines = []
    for name, _url, detail in failures:
        report = seen.get(name)
        if report is None:
            continue
        codes = sorted(_failing_codes(report))
        saw = "no problem" if not codes else ", ".join(codes)
        lines.append(f"{name}: the CA said: {detail}")
        lines.append(f"{name}: the self-check saw: {saw} (acme-ca verdict: "
                     f"{report.verdicts.get('acme-ca', 'unknown')})")
        if report.verdicts.get("acme-ca") == "pass":
            lines.append(f"{name}: they disagree: the CA sees a different path than the "
                         "vantages used here (other DNS, another perspective, IPv6, or a "
                         "firewall that treats the CA's addresses differently); add an "
                         "--outside vantage that stands where the CA does")
    return lines
