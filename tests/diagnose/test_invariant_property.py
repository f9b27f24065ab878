"""The verdict, the findings, the root cause and the exit code hold to each other, on
probe results hypothesis makes up in the shape the probe records (probe v1, as in
tests/diagnose/recordings): addresses of both families, repeats, redirect chains with
dial errors on later hops, every outcome, right and wrong bodies, several perspectives.

A report whose ``acme-ca`` verdict fails is not ok (exit 1), has an error (or fatal)
finding, and its root cause explains the failing attempt of that verdict; an ok report
has no failing ``acme-ca`` verdict. No network: ``analyse`` reads the made-up results.

Bounded: a fixed number of examples (``ACMELB_PROPERTY_EXAMPLES``, default 300) and a
seed printed on every run (``ACMELB_PROPERTY_SEED`` replays one).
"""

from __future__ import annotations

import io
import os
import random
from typing import Any

from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from acmelb.cli.render import Stream
from acmelb.doctor.checks.base import Options, Target, VantageRun, ca_attempts, le_verdict
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.findings import Code, Severity
from acmelb.doctor.report import FAIL
from acmelb.doctor.rootcause import explains
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, OTHER_THUMB

SEED = int(os.environ.get("ACMELB_PROPERTY_SEED") or random.randrange(2**32))
EXAMPLES = int(os.environ.get("ACMELB_PROPERTY_EXAMPLES") or 300)
print(f"\ninvariant property test: seed {SEED} (ACMELB_PROPERTY_SEED={SEED} replays it)")

NAME = "app.example.com"
PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
URL = f"http://{NAME}{PATH}"
V4, V6 = "203.0.113.10", "2001:db8::10"
OPTIONS = Options(assume_public=["203.0.113.0/24", "2001:db8::/32", "example.com"])

_ERRORS = {
    "connect-timeout": "timed out",
    "connect-refused": "connection refused",
    "connect-error": "no route to host",
    "reset": "connection reset by peer",
    "empty-reply": "empty reply",
    "bad-response": "malformed status line",
    "read-timeout": "read timed out",
}
_BODIES = [KEYAUTH, KEYAUTH + "\n", f"{KEYAUTH_TOKEN}.{OTHER_THUMB}", "", "<html>Not Found</html>"]
_LOCATIONS = [
    URL,
    f"https://{NAME}{PATH}",
    f"http://other.example.com{PATH}",
    f"http://{NAME}:8080{PATH}",
    f"http://203.0.113.20{PATH}",
    f"http://{NAME}/elsewhere",
]


def _hop(url: str, address: str, outcome: str, status: int | None, body: str) -> dict[str, Any]:
    answered = outcome == "response"
    return {
        "url": url,
        "address": address,
        "port": 443 if url.startswith("https") else 80,
        "family": "ipv6" if ":" in address else "ipv4",
        "proxy_protocol": False,
        "outcome": outcome,
        "error": None if answered else _ERRORS[outcome],
        "status": status if answered else None,
        "reason": "X" if answered else None,
        "headers": [["Content-Length", str(len(body))]] if answered else [],
        "body": body if answered else None,
        "body_length": len(body) if answered else None,
        "body_truncated": False,
        "connect_ms": 0,
        "elapsed_ms": 0,
    }


@st.composite
def _final(draw: st.DrawFn, url: str, address: str) -> dict[str, Any]:
    outcome = draw(st.sampled_from(["response", "response", "response", *_ERRORS]))
    status = draw(st.sampled_from([200, 200, 404, 403, 500, 503]))
    return _hop(url, address, outcome, status, draw(st.sampled_from(_BODIES)))


@st.composite
def _attempt(draw: st.DrawFn, address: str, number: int) -> dict[str, Any]:
    redirects: list[dict[str, Any]] = []
    url = URL
    for i in range(draw(st.integers(0, 2))):
        to = draw(st.sampled_from(_LOCATIONS))
        hop = _hop(url, address, "response", draw(st.sampled_from([301, 302, 303, 307, 308])), "")
        hop["redirect_to"] = to
        if i and draw(st.booleans()):  # a later hop's first address could not be dialled
            failed = draw(st.sampled_from(["2001:db8::20", "203.0.113.21"]))
            outcome = draw(st.sampled_from(["connect-refused", "connect-timeout"]))
            hop["fallback_from"] = {"address": failed, "outcome": outcome, "error": "x"}
        redirects.append(hop)
        url = to
    final = draw(_final(url, address))
    if redirects and draw(st.booleans()):
        failed = draw(st.sampled_from(["2001:db8::20", "203.0.113.21"]))
        final["fallback_from"] = {"address": failed, "outcome": "connect-refused", "error": "x"}
    return {
        "address": address,
        "attempt": number,
        "target": "public",
        "proxy_protocol": False,
        "final": final,
        "redirects": redirects,
    }


@st.composite
def _result(draw: st.DrawFn) -> dict[str, Any]:
    families = draw(st.sampled_from([[V4], [V6], [V6, V4]]))
    attempts = [
        draw(_attempt(address, n))
        for n in range(1, draw(st.integers(1, 2)) + 1)
        for address in families
    ]
    return {
        "schema": "acmelb.probe/v1",
        "runner": "python",
        "name": NAME,
        "url": URL,
        "resolution": {
            "name": NAME,
            "source": "given",
            "aaaa": [a for a in families if ":" in a],
            "a": [a for a in families if ":" not in a],
            "error": None,
        },
        "attempts": attempts,
        "elapsed_ms": 0,
    }


def _failing_codes(runs: list[VantageRun], target: Target, ipv6_alone: bool) -> list[Any]:
    """The code of each failing attempt the CA's perspectives would make (an AAAA
    attempt of a name whose IPv6 alone fails stands for ipv6-unreachable)."""
    return [
        Code.IPV6_UNREACHABLE if ipv6_alone and a.family == "ipv6" else v.code
        for run in runs
        for a in ca_attempts(run.attempts)
        if not (v := le_verdict(a, target, OPTIONS)).ok
    ]


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(results=st.lists(_result(), min_size=1, max_size=3), random_token=st.booleans())
def test_verdict_findings_root_cause_and_exit_agree(
    results: list[dict[str, Any]], random_token: bool
) -> None:
    target = (
        Target(NAME, KEYAUTH_TOKEN, None, random_token=True)
        if random_token
        else Target(NAME, KEYAUTH_TOKEN, KEYAUTH)
    )
    runs = [
        VantageRun("outside:local" if i == 0 else f"outside:remote{i}", "outside", i > 0, r)
        for i, r in enumerate(results)
    ]
    report = analyse(target, runs, OPTIONS)
    stream = Stream(io.StringIO(), lines=True)
    stream(0, stream.render(report))
    exit_code = 0 if stream.ok else 1
    doc = report.to_json()
    found = [(f.code.value, f.sev.value) for f in report.findings]
    note(f"verdicts {report.verdicts}; findings {found}")
    note(f"root cause {doc['root_cause']}")
    assert doc["ok"] is report.ok and exit_code == (0 if report.ok else 1)
    if report.verdicts["acme-ca"] != FAIL:
        return
    assert not report.ok and exit_code == 1
    assert any(f.sev in (Severity.ERROR, Severity.FATAL) for f in report.findings)
    cause = report.root_cause
    assert cause is not None and cause.severity.failing
    ipv6_alone = any(f.code is Code.IPV6_UNREACHABLE for f in report.findings)
    failing = [c for c in _failing_codes(runs, target, ipv6_alone) if c is not None]
    if failing:
        assert any(cause.code is c or explains(cause.code, c) for c in failing), (cause, failing)
