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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acmelb.acme.solvers import PendingChallenge, SolverOptions
from acmelb.doctor.codes import Code
from acmelb.doctor.vantage import ProbeSettings, Vantage, build_vantages
from acmelb.errors import AcmelbError, UsageError

if TYPE_CHECKING:
    from acmelb.doctor.diagnose import Report

MODES = ("strict", "tolerant", "off")
INSIDE_ONLY_CODES = frozenset(
    {Code.NAT_LOOPBACK, Code.PROXY_PROTOCOL_REQUIRED, Code.DNS_SPLIT_HORIZON}
)
# A token written a moment ago may not be visible yet on every backend.
PROPAGATION_CODES = frozenset(
    {
        Code.CHALLENGE_NOT_FOUND,
        Code.WRONG_CONTENT,
        Code.INCONSISTENT_BACKENDS,
        Code.HTTP_ERROR_STATUS,
    }
)


@dataclass(frozen=True)
class SelfCheckOptions:
    """How ``acmelb issue`` (and every renewal of its certificate) checks a challenge."""

    mode: str = "strict"
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    total_timeout: float = 60.0  # propagation wait, all rounds together

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"--self-check {self.mode!r}: choose strict, tolerant or off")
        if self.total_timeout < 0:
            raise UsageError("--self-check-timeout must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "total_timeout": self.total_timeout,
            "probe": self.probe.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SelfCheckOptions:
        return cls(
            mode=str(data.get("mode", "strict")),
            total_timeout=float(data.get("total_timeout", 60.0)),
            probe=ProbeSettings.from_json(data.get("probe", {})),
        )

    def skip_reason(self, solver: SolverOptions) -> str | None:
        """Why this self-check cannot judge the run (None: it can)."""
        if self.mode == "off":
            return "off"
        if (
            solver.kind == "standalone"
            and solver.http_port != 80
            and not (self.probe.inside or self.probe.outside)
        ):
            # A CA validates on port 80; a responder elsewhere means a test CA set up for it.
            return (
                f"self-check skipped: the responder listens on port {solver.http_port}, "
                "and a CA validating like Let's Encrypt fetches port 80 (pass "
                "--self-check off to silence this)"
            )
        return None


def make_self_check(
    options: SelfCheckOptions | None,
    solver: SolverOptions,
    progress: Callable[[str], None],
    *,
    more_vantages: Callable[[], Sequence[Vantage]] | None = None,
) -> SelfCheck | None:
    """The self-check of one run, or None when there is none (said through ``progress``)."""
    if options is None:
        return None
    reason = options.skip_reason(solver)
    if reason is None:
        return SelfCheck(options, progress, more_vantages=more_vantages)
    if reason != "off":
        progress(reason)
    return None


def _failing_codes(report: Report) -> set[str]:
    return {f.code.value for f in report.findings if f.sev.failing}


def _responder_answers_directly(report: Report, key_authorization: str) -> bool:
    """Did some vantage, fetching its own local responder, get the exact key?"""
    for run in report.runs:
        for attempt in run.local_attempts:
            final = attempt.final
            if (
                final.outcome == "response"
                and final.status == 200
                and final.body == key_authorization
            ):
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


class SelfCheckRefused(AcmelbError):
    """The self-check predicts a failed validation; nothing was answered. ``reports``
    holds the diagnoses that refused (a part of ``acmelb.errors``' tree, kept here
    because the ground floor names no type of the doctor's)."""

    def __init__(self, message: str, reports: Sequence[Report]) -> None:
        super().__init__(message)
        self.reports = list(reports)


class SelfCheck:
    """Callable seam for ``Issuer``: raises SelfCheckRefused, keeps every report."""

    def __init__(
        self,
        options: SelfCheckOptions,
        progress: Callable[[str], None] | None = None,
        *,
        more_vantages: Callable[[], Sequence[Vantage]] | None = None,
    ) -> None:
        self.options = options
        # vantages beyond the settings' own, asked afresh for each check (a cluster's
        # live members)
        self.more_vantages = more_vantages or (lambda: ())
        self.progress = progress or (lambda _message: None)
        self.reports: list[Report] = []
        self.tolerated: list[Report] = []

    def _diagnose(self, challenge: PendingChallenge) -> Report:
        from acmelb.doctor.diagnose import diagnose, make_target

        probe = self.options.probe
        target = make_target(challenge.name, challenge.token, challenge.key_authorization)
        vantages = [*build_vantages(probe), *self.more_vantages()]
        return diagnose(target, vantages, probe.options(), cluster=probe.cluster)

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

    def warnings(self) -> list[str]:
        """The errors that tolerant mode accepted, one line each."""
        return [
            f"{r.name}: {f.code.value}: {f.title}"
            for r in self.tolerated
            for f in r.findings
            if f.sev.failing
        ]

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
            if self.options.mode == "tolerant" and tolerable(report, challenge.key_authorization):
                self.tolerated.append(report)
                continue
            refused.append(report)
        if refused:
            summary = "; ".join(
                f"{r.name}: {', '.join(sorted(_failing_codes(r)))}" for r in refused
            )
            raise SelfCheckRefused(
                f"self-check ({self.options.mode}) refused to answer the challenge, so the CA "
                f"counted no failed validation: {summary}",
                refused,
            )


def compare_with_ca(
    reports: Sequence[Report], failures: Sequence[tuple[str, str, str]]
) -> list[str]:
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
        lines.append(
            f"{name}: the self-check saw: {saw} (acme-ca verdict: "
            f"{report.verdicts.get('acme-ca', 'unknown')})"
        )
        if report.verdicts.get("acme-ca") == "pass":
            lines.append(
                f"{name}: they disagree: the CA sees a different path than the "
                "vantages used here (other DNS, another perspective, IPv6, or a "
                "firewall that treats the CA's addresses differently); add an "
                "--outside vantage that stands where the CA does"
            )
    return lines
