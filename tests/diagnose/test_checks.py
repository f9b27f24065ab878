"""Every finding code, on recorded probe results (tests/diagnose/recordings, see record.py).

No network here: ``analyse`` runs every stage on the recordings and a DNS
result, exactly as ``diagnose`` does after probing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import acmelb.kube.plan  # noqa: F401 - registers the KUBE stage's checks
from acmelb.doctor.checks import DEFAULT_RUNNER
from acmelb.doctor.checks.answers import Content
from acmelb.doctor.checks.base import (
    Attempt,
    Context,
    Options,
    Target,
    VantageRun,
    le_verdict,
    outcome_code,
)
from acmelb.doctor.diagnose import Report, analyse
from acmelb.doctor.findings import Code, Finding, Severity
from acmelb.doctor.resolution import CaaRecord, CaaResult, DnsResult, RRsetResult
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN

# the doctor's checks and those acmelb.kube registers (importing acmelb.kube.plan)
ALL_CHECKS = DEFAULT_RUNNER.registered

REC = Path(__file__).with_name("recordings")


@pytest.fixture(autouse=True)
def checks_raise_only_their_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every scenario here also proves that each check raises only the codes it declares."""
    for check in ALL_CHECKS:

        def run(ctx: Context, check: Any = check, real: Any = check.run) -> list[Finding]:
            found: list[Finding] = real(ctx)
            undeclared = {f.code for f in found} - set(check.codes)
            assert not undeclared, f"{type(check).__name__} raised undeclared {undeclared}"
            return found

        monkeypatch.setattr(check, "run", run)


NAME = "app.example.com"
PUBLIC = "203.0.113.10"  # what the recordings' addresses are renamed to, when combined
DOC = Options(assume_public=["203.0.113.0/24"])  # documentation range stands in for public


def recording(name: str, address: str | None = None, source: str | None = None) -> dict[str, Any]:
    """A recorded probe result; ``address`` renames its (first) probed address."""
    text = (REC / f"{name}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    if address is not None:
        old = data["attempts"][0]["address"]
        data = json.loads(text.replace(f'"{old}"', f'"{address}"'))
    if source is not None:  # a remote vantage resolves by itself (getaddrinfo)
        data["resolution"]["source"] = source
    return data


def outside(name: str, address: str | None = None) -> VantageRun:
    return VantageRun("outside:local", "outside", False, recording(name, address))


def inside(
    name: str, address: str | None = None, label: str = "inside:ssh node1", source: str = "system"
) -> VantageRun:
    return VantageRun(label, "inside", True, recording(name, address, source))


def target(random: bool = False) -> Target:
    if random:
        return Target(NAME, KEYAUTH_TOKEN, None, random_token=True)
    return Target(NAME, KEYAUTH_TOKEN, KEYAUTH)


def codes(report: Report) -> set[str]:
    return {f.code.value for f in report.findings}


def finding(report: Report, code: Code) -> Any:
    found = [f for f in report.findings if f.code is code]
    assert found, f"{code.value} not in {codes(report)}"
    return found[0]


# -- healthy -----------------------------------------------------------------------------


def test_healthy_answer_has_no_finding_and_both_verdicts_pass() -> None:
    r = analyse(target(), [outside("ok"), inside("ok", source="given")])
    assert r.findings == [] and r.ok
    assert r.verdicts == {"acme-ca": "pass", "cert-manager-self-check": "pass"}
    doc = r.to_json()
    assert doc["schema"] == "acmelb.diagnosis/v1" and len(doc["probes"]) == 4


def test_no_inside_vantage_means_self_check_unknown() -> None:
    r = analyse(target(), [outside("ok")])
    assert r.verdicts["cert-manager-self-check"] == "unknown"


def test_random_token_404_is_healthy_but_content_unknown() -> None:
    r = analyse(target(random=True), [outside("not-found")])
    assert r.ok and r.verdicts["acme-ca"] == "unknown"


# -- NAME and DNS stage ---------------------------------------------------------------------


def _dns(
    a: list[str] | None = None,
    aaaa: list[str] | None = None,
    a_status: str = "ok",
    aaaa_status: str = "ok",
    caa: CaaResult | None = None,
) -> DnsResult:
    return DnsResult(
        NAME,
        "127.0.0.1:53",
        RRsetResult(
            "A",
            a or [],
            a_status,
            None if a_status == "ok" else f"{a_status.upper()} looking up A for {NAME}",
        ),
        RRsetResult("AAAA", aaaa or [], aaaa_status, None),
        caa or CaaResult(None),
    )


def test_invalid_name_is_fatal_and_stops_before_probes() -> None:
    r = analyse(Target("*.example.com", "t", None), [outside("ok")])
    f = finding(r, Code.INVALID_NAME)
    assert f.sev is Severity.FATAL and r.runs == [] and r.verdicts["acme-ca"] == "fail"


def test_invalid_name_stops_the_dns_stage_too() -> None:
    # analyse stages like diagnose: no DNS finding after a fatal name finding
    r = analyse(
        Target("*.example.com", "t", None),
        [outside("ok")],
        dns=_dns(a_status="nxdomain", aaaa_status="nxdomain"),
    )
    assert codes(r) == {"invalid-name"}


def test_a_broken_check_becomes_check_failed_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    content = next(c for c in ALL_CHECKS if isinstance(c, Content))

    def broken(ctx: Context) -> list[Finding]:
        raise KeyError("status")

    monkeypatch.setattr(content, "run", broken)
    r = analyse(target(), [outside("not-found"), inside("refused")])
    f = finding(r, Code.CHECK_FAILED)
    assert f.sev is Severity.WARNING and "Content" in f.title
    assert f.evidence[0].startswith("KeyError: 'status' at test_checks.py:")
    assert "challenge-not-found" in f.explanation
    # the other checks ran, and the verdicts do not depend on the broken one
    assert "nat-loopback" in codes(r) or "port-80-refused" in codes(r)
    assert r.verdicts["acme-ca"] == "fail"


def test_dns_no_address_stops_http_stage() -> None:
    r = analyse(
        target(), [outside("refused")], dns=_dns(a_status="nxdomain", aaaa_status="nxdomain")
    )
    assert codes(r) == {"dns-no-address"} and r.runs == []
    assert "NXDOMAIN" in finding(r, Code.DNS_NO_ADDRESS).title


def test_dns_lookup_failed() -> None:
    r = analyse(target(), [outside("ok")], dns=_dns(a_status="servfail", aaaa_status="servfail"))
    assert codes(r) == {"dns-lookup-failed"}
    assert finding(r, Code.DNS_LOOKUP_FAILED).sev is Severity.FATAL


def test_dns_lookup_partially_failed_is_a_warning() -> None:
    r = analyse(
        target(), [outside("ok", PUBLIC)], dns=_dns(a=[PUBLIC], aaaa_status="servfail"), options=DOC
    )
    assert finding(r, Code.DNS_LOOKUP_FAILED).sev is Severity.WARNING


def test_dns_reserved_address() -> None:
    r = analyse(target(), [outside("ok", "10.1.2.3")], dns=_dns(a=["10.1.2.3"]))
    f = finding(r, Code.DNS_RESERVED_ADDRESS)
    assert "10.1.2.3: private" in f.evidence[0] and r.verdicts["acme-ca"] == "fail"
    lab = analyse(
        target(),
        [outside("ok", "198.18.0.10")],
        dns=_dns(a=["198.18.0.10"]),
        options=Options(assume_public=["198.18.0.0/15"]),
    )
    assert lab.ok


def test_caa_forbids_and_allows() -> None:
    caa = CaaResult("example.com", [CaaRecord(0, "issue", "pki.goog", "example.com")])
    r = analyse(target(), [outside("ok", PUBLIC)], dns=_dns(a=[PUBLIC], caa=caa), options=DOC)
    f = finding(r, Code.CAA_FORBIDS)
    assert f.sev is Severity.FATAL and 'issue "letsencrypt.org"' in f.remedy
    ok = CaaResult(
        "example.com",
        [CaaRecord(0, "issue", "letsencrypt.org; validationmethods=http-01", "example.com")],
    )
    assert analyse(target(), [outside("ok", PUBLIC)], dns=_dns(a=[PUBLIC], caa=ok), options=DOC).ok
    only_dns01 = CaaResult(
        "example.com",
        [CaaRecord(0, "issue", "letsencrypt.org; validationmethods=dns-01", "example.com")],
    )
    r = analyse(
        target(), [outside("ok", PUBLIC)], dns=_dns(a=[PUBLIC], caa=only_dns01), options=DOC
    )
    assert "caa-forbids" in codes(r)


def test_dns_split_horizon() -> None:
    r = analyse(
        target(),
        [outside("ok", PUBLIC), inside("ok", "10.0.0.5")],
        dns=_dns(a=[PUBLIC]),
        options=DOC,
    )
    f = finding(r, Code.DNS_SPLIT_HORIZON)
    assert f.sev is Severity.WARNING and "10.0.0.5" in f.explanation


# -- connection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rec,code",
    [
        ("timeout", Code.PORT_80_TIMEOUT),
        ("refused", Code.PORT_80_REFUSED),
        ("empty-reply", Code.EMPTY_REPLY),
        ("reset", Code.EMPTY_REPLY),
        ("read-timeout", Code.READ_TIMEOUT),
        ("tls-on-http-port", Code.HTTP_ON_HTTPS_PORT),
        ("nginx-400-https", Code.HTTP_ON_HTTPS_PORT),
        ("malformed-content-length", Code.MALFORMED_RESPONSE),
    ],
)
def test_connection_failures_from_outside(rec: str, code: Code) -> None:
    r = analyse(target(), [outside(rec)])
    f = finding(r, code)
    assert f.sev is Severity.ERROR and f.vantages == ["outside:local"]
    assert f.evidence and r.verdicts["acme-ca"] == "fail" and not r.ok
    if code is Code.MALFORMED_RESPONSE:  # the evidence quotes Go's error
        assert "bad Content-Length" in f.evidence[0]


def test_ipv6_unreachable_dial_error_is_a_warning() -> None:
    r = analyse(target(), [outside("ipv6-refused")])
    f = finding(r, Code.IPV6_UNREACHABLE)
    assert f.sev is Severity.WARNING and "[::1]:80" in f.evidence[0]
    assert "port-80-refused" not in codes(r)
    assert r.verdicts["acme-ca"] == "pass"  # the CA falls back after a dial error


def test_ipv6_answering_wrongly_is_an_error() -> None:
    data = recording("ipv6-refused")
    v4 = data["attempts"][1]
    bad = recording("not-found")["attempts"][0]
    bad = json.loads(json.dumps(bad).replace(bad["address"], "::1"))
    data["attempts"] = [bad, v4]
    r = analyse(target(), [VantageRun("outside:local", "outside", False, data)])
    f = finding(r, Code.IPV6_UNREACHABLE)
    assert f.sev is Severity.ERROR and r.verdicts["acme-ca"] == "fail"


# -- status and content ------------------------------------------------------------------------


def test_challenge_not_found() -> None:
    r = analyse(target(), [outside("not-found")])
    assert finding(r, Code.CHALLENGE_NOT_FOUND).sev is Severity.ERROR


def test_http_error_status_and_haproxy_fingerprint() -> None:
    r = analyse(target(), [outside("haproxy-503")])
    assert "503" in finding(r, Code.HTTP_ERROR_STATUS).title
    assert "HAProxy" in finding(r, Code.MIDDLEBOX_FINGERPRINT).title


def test_middlebox_fingerprint_cloudflare() -> None:
    r = analyse(target(), [outside("cloudflare-403")])
    f = finding(r, Code.MIDDLEBOX_FINGERPRINT)
    assert "Cloudflare" in f.title and f.sev is Severity.WARNING


@pytest.mark.parametrize("rec", ["small-wrong", "empty-body"])
def test_wrong_content(rec: str) -> None:
    r = analyse(target(), [outside(rec)])
    assert codes(r) == {"wrong-content"}


def test_random_token_catch_all_page_is_a_warning() -> None:
    r = analyse(target(random=True), [outside("small-wrong")])
    assert finding(r, Code.WRONG_CONTENT).sev is Severity.WARNING and r.ok


def test_body_too_large() -> None:
    r = analyse(target(), [outside("html-page")])
    f = finding(r, Code.BODY_TOO_LARGE)
    assert "bytes" in f.evidence[0]


def test_trailing_whitespace_ca_passes_self_check_fails() -> None:
    r = analyse(target(), [outside("trailing-newline"), inside("trailing-newline", source="given")])
    f = finding(r, Code.TRAILING_WHITESPACE)
    assert f.sev is Severity.WARNING and r.ok
    assert r.verdicts == {"acme-ca": "pass", "cert-manager-self-check": "fail"}


def test_inconsistent_backends() -> None:
    r = analyse(target(), [outside("round-robin")])
    f = finding(r, Code.INCONSISTENT_BACKENDS)
    assert any("HTTP 404" in e for e in f.evidence) and any("HTTP 200" in e for e in f.evidence)
    assert r.verdicts["acme-ca"] == "fail"


# -- redirects ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rec,code",
    [
        ("redirect-303", Code.REDIRECT_BAD_STATUS),
        ("redirect-port", Code.REDIRECT_BAD_TARGET),
        ("redirect-well-known", Code.REDIRECT_BAD_TARGET),
        ("redirect-ip", Code.REDIRECT_BAD_TARGET),
        ("redirect-loop", Code.REDIRECT_LOOP),
        ("redirect-too-many", Code.REDIRECT_TOO_MANY),
    ],
)
def test_redirects_the_ca_refuses(rec: str, code: Code) -> None:
    r = analyse(target(), [outside(rec)])
    assert finding(r, code).sev is Severity.ERROR
    assert r.verdicts["acme-ca"] == "fail"


def test_redirect_303_passes_cert_manager_but_not_the_ca() -> None:
    r = analyse(target(), [outside("redirect-303"), inside("redirect-303", source="given")])
    assert r.verdicts == {"acme-ca": "fail", "cert-manager-self-check": "pass"}


def test_redirect_https_is_info_and_passes() -> None:
    r = analyse(target(), [outside("redirect-https")])
    assert codes(r) == {"redirect-https"} and r.ok and r.verdicts["acme-ca"] == "pass"
    assert finding(r, Code.REDIRECT_HTTPS).sev is Severity.INFO


def test_plain_redirect_to_port_80_is_fine() -> None:
    r = analyse(target(), [outside("redirect-ok")])
    assert r.findings == [] and r.verdicts["acme-ca"] == "pass"


# -- comparisons across vantages ----------------------------------------------------------


def test_nat_loopback_names_the_addresses() -> None:
    r = analyse(
        target(),
        [outside("ok", PUBLIC), inside("timeout", PUBLIC, source="given")],
        dns=_dns(a=[PUBLIC]),
        options=DOC,
    )
    f = finding(r, Code.NAT_LOOPBACK)
    assert f.vantages == ["inside:ssh node1"] and f"-d {PUBLIC}" in f.remedy
    assert r.verdicts == {"acme-ca": "pass", "cert-manager-self-check": "fail"}
    assert "port-80-timeout" not in codes(r)


def test_nat_loopback_in_a_cluster_offers_coredns_and_cert_manager_settings() -> None:
    r = analyse(
        target(), [outside("ok", PUBLIC), inside("refused", PUBLIC, source="given")], cluster=True
    )
    remedy = finding(r, Code.NAT_LOOPBACK).remedy
    assert "rewrite name" in remedy and "waitInsteadOfSelfCheck" in remedy
    assert "--acme-http01-solver-nameservers" in remedy


def test_proxy_protocol_required_inside_only() -> None:
    r = analyse(target(), [outside("ok", PUBLIC), inside("proxy-required", PUBLIC, source="given")])
    f = finding(r, Code.PROXY_PROTOCOL_REQUIRED)
    assert "ipMode: Proxy" in f.remedy and "do-loadbalancer-hostname" in f.remedy
    assert any("PROXY v1" in e for e in f.evidence)
    assert "nat-loopback" not in codes(r)


def test_proxy_protocol_required_on_the_ca_path() -> None:
    r = analyse(target(), [outside("proxy-required")])
    assert "send-proxy" in finding(r, Code.PROXY_PROTOCOL_REQUIRED).remedy
    assert "empty-reply" in codes(r)


def test_lb_intercepts_when_the_backend_answers_correctly() -> None:
    r = analyse(
        target(),
        [
            outside("other-thumbprint", PUBLIC),
            inside("inside-lb-other-backend-ok", PUBLIC, source="given"),
        ],
    )
    f = finding(r, Code.LB_INTERCEPTS_CHALLENGE)
    assert "mode tcp" in f.remedy and "thumbprint-mismatch" not in codes(r)


def test_thumbprint_mismatch_when_the_backend_itself_answers_so() -> None:
    r = analyse(
        target(),
        [
            outside("other-thumbprint", PUBLIC),
            inside("inside-lb-other-backend-other", PUBLIC, source="given"),
        ],
    )
    assert "lb-intercepts-challenge" not in codes(r)
    f = finding(r, Code.THUMBPRINT_MISMATCH)
    assert "B" * 43 in f.explanation


def test_thumbprint_mismatch_without_backend_evidence_says_how_to_tell() -> None:
    r = analyse(target(), [outside("other-thumbprint")])
    assert "--inside" in finding(r, Code.THUMBPRINT_MISMATCH).explanation


def test_any_token_answered_means_lb_intercepts() -> None:
    r = analyse(target(random=True), [outside("other-thumbprint")])
    assert codes(r) == {"lb-intercepts-challenge"} and r.verdicts["acme-ca"] == "fail"


def test_inside_only_failure_is_reported_from_inside() -> None:
    r = analyse(target(), [outside("ok", PUBLIC), inside("not-found", PUBLIC, source="given")])
    f = finding(r, Code.CHALLENGE_NOT_FOUND)
    assert f.vantages == ["inside:ssh node1"] and "inside" in f.title


def test_two_a_records_one_wrong_fails_the_ca_verdict() -> None:
    """Several perspectives reach every A address: one bad backend address fails validation."""
    good = recording("ok", PUBLIC)
    bad = recording("not-found", "203.0.113.11")
    good["attempts"] += bad["attempts"]
    good["resolution"]["a"] = [PUBLIC, "203.0.113.11"]
    r = analyse(target(), [VantageRun("outside:local", "outside", False, good)])
    assert "challenge-not-found" in codes(r) and r.verdicts["acme-ca"] == "fail"


def test_dns_fatal_leaves_the_self_check_unknown() -> None:
    r = analyse(
        target(),
        [outside("ok"), inside("ok", source="given")],
        dns=_dns(a_status="nxdomain", aaaa_status="nxdomain"),
    )
    assert r.verdicts == {"acme-ca": "fail", "cert-manager-self-check": "unknown"}


def test_vantage_unusable() -> None:
    broken = VantageRun(
        "inside:ssh node9",
        "inside",
        True,
        None,
        failure="neither python3 nor curl could run a probe there",
        failure_details=["`ssh node9 python3 -` exited 127: not found"],
    )
    r = analyse(target(), [outside("ok"), broken])
    f = finding(r, Code.VANTAGE_UNUSABLE)
    assert f.sev is Severity.WARNING and r.ok and f.evidence
    assert r.verdicts["cert-manager-self-check"] == "unknown"


def test_every_code_is_covered_here() -> None:
    """Each Code is named by at least one test in this module, or (the KUBE stage's codes,
    raised from a cluster's objects) in tests/kube or test_gateway.py, or
    (perspective-blocked, which needs several outside vantages) in test_rootcause.py, or
    (tls-alpn-terminated, which only explain names) in test_explain.py."""
    here = Path(__file__)
    text = "".join(
        p.read_text()
        for p in (
            here,
            here.parents[1] / "kube/test_kube.py",
            here.with_name("test_gateway.py"),
            here.with_name("test_rootcause.py"),
            here.with_name("test_explain.py"),
        )
    )
    missing = [c for c in Code if f"Code.{c.name}" not in text and f'"{c.value}"' not in text]
    assert missing == []


def test_ipv6_dead_only_on_a_redirect_hop_is_an_error_and_the_root_cause() -> None:
    """Boulder falls back from AAAA to A only on the first request: a redirect target
    whose AAAA cannot be dialled fails validation, however its A answers (issue 23)."""
    data = recording("redirect-ok")
    for a in data["attempts"]:
        if a["redirects"]:
            a["final"]["fallback_from"] = {
                "address": "2001:db8::20",
                "outcome": "connect-refused",
                "error": "connection refused",
            }
    r = analyse(target(), [VantageRun("outside:local", "outside", False, data)])
    assert r.verdicts["acme-ca"] == "fail" and not r.ok
    f = finding(r, Code.IPV6_UNREACHABLE)
    assert f.sev is Severity.ERROR and any("could not be dialled" in e for e in f.evidence)
    assert r.root_cause is not None and r.root_cause.code is Code.IPV6_UNREACHABLE


def test_ipv6_only_name_refused_fails_the_ca() -> None:
    """An IPv6-only name whose port 80 refuses: no A to fall back to, the CA fails (was
    `unknown`); a local "network unreachable" stays unknown (this vantage may lack IPv6)."""
    data = recording("ipv6-refused")
    data["attempts"] = [a for a in data["attempts"] if ":" in a["address"]]
    data["resolution"]["a"] = []
    r = analyse(target(), [VantageRun("outside:local", "outside", False, data)])
    assert r.verdicts["acme-ca"] == "fail" and not r.ok
    assert r.root_cause is not None and r.root_cause.code is Code.PORT_80_REFUSED
    for a in data["attempts"]:
        a["final"]["outcome"], a["final"]["error"] = "connect-error", "Network is unreachable"
    r = analyse(target(), [VantageRun("outside:local", "outside", False, data)])
    assert r.verdicts["acme-ca"] == "unknown"


@pytest.mark.parametrize(
    ("outcome", "error", "code"),
    [
        ("connect-refused", "connection refused", Code.PORT_443_REFUSED),
        ("connect-timeout", "connect timed out after 10.0 s", Code.PORT_443_TIMEOUT),
        ("connect-error", "network unreachable", Code.PORT_443_TIMEOUT),
        ("empty-reply", "closed without any response", Code.HTTPS_HOP_FAILED),
        ("read-timeout", "connected, no response for 15.0 s", Code.HTTPS_HOP_FAILED),
        ("bad-response", "TLS handshake failed: wrong version number", Code.HTTPS_HOP_FAILED),
        ("bad-response", "net/http: malformed HTTP response", Code.MALFORMED_RESPONSE),
    ],
)
def test_a_failing_https_hop_has_codes_of_its_own(outcome: str, error: str, code: Code) -> None:
    """Port 80 answered with a redirect to https (the CA follows it): what fails on the
    :443 hop is named as such, not as port 80 (issue 23)."""
    https = f"https://app.example.com/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
    hop = {
        "url": https.replace("https", "http", 1),
        "status": 301,
        "outcome": "response",
        "location": https,
        "redirect_to": https,
    }
    final = {"url": https, "address": "192.0.2.7", "outcome": outcome, "error": error}
    attempt = Attempt("outside", "outside", {"address": "192.0.2.7", "attempt": 1,
                                            "redirects": [hop], "final": final})  # fmt: skip
    assert outcome_code(attempt.final) is code
    verdict = le_verdict(attempt, Target("app.example.com", KEYAUTH_TOKEN, KEYAUTH))
    assert verdict.ok is False and verdict.code is code
    same_on_80 = Attempt("outside", "outside", {"address": "192.0.2.7", "attempt": 1,
                         "redirects": [], "final": {**final, "url": hop["url"]}})  # fmt: skip
    assert outcome_code(same_on_80.final) not in (
        Code.PORT_443_REFUSED,
        Code.PORT_443_TIMEOUT,
        Code.HTTPS_HOP_FAILED,
    )
