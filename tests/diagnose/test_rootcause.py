"""One root cause per report, and the CA's perspectives (quorum of ballot SC-067).

Unit tests on synthetic findings and on recorded probe results; the lab tests
(tests/lab/test_diagnose_lab.py, tests/lab/test_perspectives_lab.py) check the
same on real topologies.
"""

from __future__ import annotations

import io

import pytest

from acmelb.cli.render import render
from acmelb.doctor.checks.base import VantageRun, corroborated, max_remote_failures
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.findings import Code, Finding, Severity
from acmelb.doctor.rootcause import attribute
from tests.diagnose.test_checks import outside, recording, target


def found(code: Code, severity: Severity | None = None) -> Finding:
    return Finding(code, f"title of {code.value}", "", "", severity=severity)


# -- attribute(): which finding leads, what is folded ---------------------------------


@pytest.mark.parametrize(
    ("given", "root", "folded"),
    [
        ([Code.PORT_80_TIMEOUT, Code.IPV6_UNREACHABLE], Code.IPV6_UNREACHABLE,
         [Code.PORT_80_TIMEOUT]),
        ([Code.REDIRECT_TOO_MANY, Code.REDIRECT_LOOP], Code.REDIRECT_LOOP,
         [Code.REDIRECT_TOO_MANY]),
        ([Code.CHALLENGE_NOT_FOUND, Code.DNS_SPLIT_HORIZON], Code.DNS_SPLIT_HORIZON,
         [Code.CHALLENGE_NOT_FOUND]),
        ([Code.THUMBPRINT_MISMATCH, Code.LB_INTERCEPTS_CHALLENGE, Code.INCONSISTENT_BACKENDS],
         Code.LB_INTERCEPTS_CHALLENGE, [Code.THUMBPRINT_MISMATCH, Code.INCONSISTENT_BACKENDS]),
        ([Code.EMPTY_REPLY, Code.PROXY_PROTOCOL_REQUIRED], Code.PROXY_PROTOCOL_REQUIRED,
         [Code.EMPTY_REPLY]),
        ([Code.PORT_80_TIMEOUT, Code.NAT_LOOPBACK], Code.NAT_LOOPBACK, [Code.PORT_80_TIMEOUT]),
        ([Code.CHALLENGE_NOT_FOUND, Code.SOLVER_NOT_PRESENTED], Code.SOLVER_NOT_PRESENTED,
         [Code.CHALLENGE_NOT_FOUND]),
        # unrelated problems: the more specific leads, the other stays as it is
        ([Code.BODY_TOO_LARGE, Code.PORT_80_REFUSED], Code.PORT_80_REFUSED, []),
    ],
)  # fmt: skip
def test_the_cause_leads_and_its_consequences_are_folded(
    given: list[Code], root: Code, folded: list[Code]
) -> None:
    findings, cause = attribute([found(c) for c in given])
    assert cause is not None and cause.code is root
    assert set(cause.consequences) == set(folded)
    for f in findings:
        if f.code in folded:
            assert f.sev is Severity.INFO and root.value in f.title
        elif f.code is not root:
            assert f.sev is f.code.default_severity


def test_the_root_takes_the_worst_severity_of_what_it_explains() -> None:
    # split horizon is a warning on its own; the 404 it causes fails the self-check
    findings, cause = attribute([found(Code.DNS_SPLIT_HORIZON), found(Code.CHALLENGE_NOT_FOUND)])
    assert cause is not None and cause.severity is Severity.ERROR
    assert any(f.sev.failing for f in findings)  # so `ok` and the exit status stay


def test_perspective_blocked_keeps_its_own_severity() -> None:
    # the quorum holds: the blocked perspective's timeout must not fail the report
    blocked = found(Code.PERSPECTIVE_BLOCKED, Severity.WARNING)
    findings, cause = attribute([found(Code.PORT_80_TIMEOUT), blocked])
    assert cause is not None and cause.code is Code.PERSPECTIVE_BLOCKED
    assert cause.severity is Severity.WARNING
    assert not any(f.sev.failing for f in findings)


@pytest.mark.parametrize("given", [[], [Code.REDIRECT_HTTPS]])
def test_no_root_cause_without_a_problem(given: list[Code]) -> None:
    assert attribute([found(c) for c in given])[1] is None


# -- on recorded probe results: exactly one root cause, in JSON and first line ---------


@pytest.mark.parametrize(
    ("rec", "root"),
    [
        ("timeout", "port-80-timeout"),
        ("proxy-required", "proxy-protocol-required"),
        ("round-robin", "inconsistent-backends"),
        ("haproxy-503", "http-error-status"),
        ("not-found", "challenge-not-found"),
        ("ipv6-refused", "ipv6-unreachable"),
        ("redirect-loop", "redirect-loop"),
        ("trailing-newline", "trailing-whitespace"),
        ("ok", None),
    ],
)
def test_reports_name_one_root_cause(rec: str, root: str | None) -> None:
    report = analyse(target(), [outside(rec)])
    doc = report.to_json()
    assert (doc["root_cause"] or {}).get("code") == root
    leading = [f for f in doc["findings"] if f["code"] == root]
    assert len(leading) == (1 if root else 0)
    out = io.StringIO()
    render(report, out)
    first = out.getvalue().splitlines()[0]
    assert first.startswith(f"app.example.com: {'root cause: ' + root if root else 'no problem'}")


# -- perspectives ------------------------------------------------------------------------


@pytest.mark.parametrize(("remote", "allowed"), [(0, 0), (1, 0), (2, 1), (5, 1), (6, 2), (12, 2)])
def test_quorum_table(remote: int, allowed: int) -> None:
    assert max_remote_failures(remote) == allowed


def test_the_primary_must_pass() -> None:
    assert not corroborated(False, [True] * 6)
    assert corroborated(True, [True, True, False])
    assert not corroborated(True, [True, False, False])


def perspectives(*recs: str) -> list[VantageRun]:
    labels = ["outside:local"] + [f"outside:ssh probe{i}" for i in range(1, len(recs))]
    return [
        VantageRun(label, "outside", i > 0, recording(rec))
        for i, (label, rec) in enumerate(zip(labels, recs, strict=True))
    ]


@pytest.mark.parametrize(
    ("recs", "verdict", "severity"),
    [
        (("ok", "ok", "ok", "timeout"), "pass", Severity.WARNING),  # 1 of 3 remote: allowed
        (("ok", "ok", "timeout", "timeout"), "fail", Severity.ERROR),  # 2 of 3: too many
        (("timeout", "ok", "ok", "ok"), "fail", Severity.ERROR),  # the primary is blocked
        (("ok", "timeout"), "fail", Severity.ERROR),  # one remote: none may fail
        (("ok", "refused", "ok", "ok", "ok", "ok", "timeout"), "pass", Severity.WARNING),  # 2 of 6
    ],
)
def test_blocked_perspectives(recs: tuple[str, ...], verdict: str, severity: Severity) -> None:
    report = analyse(target(), perspectives(*recs))
    assert report.verdicts["acme-ca"] == verdict
    assert report.root_cause is not None
    assert report.root_cause.code is Code.PERSPECTIVE_BLOCKED
    blocked = next(f for f in report.findings if f.code is Code.PERSPECTIVE_BLOCKED)
    assert blocked.sev is severity
    failing = [label for label, rec in zip(perspectives(*recs), recs, strict=True) if rec != "ok"]
    assert blocked.vantages == [run.label for run in failing]
    assert report.ok is (verdict == "pass")
    assert all(not f.sev.failing for f in report.findings if f is not blocked) or verdict == "fail"


def test_every_perspective_failing_alike_is_not_a_perspective_problem() -> None:
    report = analyse(target(), perspectives("timeout", "timeout", "timeout"))
    assert report.verdicts["acme-ca"] == "fail"
    assert report.root_cause is not None and report.root_cause.code is Code.PORT_80_TIMEOUT
