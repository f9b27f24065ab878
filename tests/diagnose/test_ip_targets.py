"""Targets that are IP addresses (RFC 8738 certificates): no DNS, the address probed itself.

The NAME stage accepts an address, the DNS stage asks nothing (no A, AAAA or CAA) and
judges the address as it judges the addresses a name resolves to (a reserved one is
``dns-reserved-address`` unless --assume-public covers it), and the HTTP stage fetches
http://IP/.well-known/acme-challenge/TOKEN (IPv6 bracketed) with the address as Host.
The end-to-end tests run real servers on 127.x (and ::1) port 80, and a DNS server that
counts the questions it gets.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from acmelb.acme.selfcheck import SelfCheck, SelfCheckOptions, SelfCheckRefused
from acmelb.acme.solvers import PendingChallenge
from acmelb.cli.main import main
from acmelb.doctor.checks.base import Context, Options, Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.engine import check_name, probe_jobs, skip_lookup
from acmelb.doctor.findings import Code
from acmelb.doctor.vantage import Local, ProbeSettings, Role
from tests.diagnose.dnsserver import DnsServer
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server, answer

SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)
REC = Path(__file__).with_name("recordings")
PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
Serve = Callable[..., Server]


def _outside(recording: str, address: str) -> VantageRun:
    """A recorded probe result, its address renamed to ``address``."""
    text = (REC / f"{recording}.json").read_text()
    old = json.loads(text)["attempts"][0]["address"]
    data = json.loads(text.replace(f'"{old}"', f'"{address}"'))
    return VantageRun("outside:local", "outside", False, data)


def _codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


# -- the stages, on recorded results (no network) -------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("198.51.100.7", "documentation, TEST-NET-2 (RFC 5737)"),
        ("10.0.0.8", "private-use (RFC 1918)"),
        ("127.0.0.1", "loopback (RFC 1122)"),
        ("2001:db8::7", "documentation (RFC 3849)"),
        ("::1", "loopback (RFC 4291)"),
    ],
)
def test_a_reserved_address_is_reported_as_for_a_name(address: str, why: str) -> None:
    r = analyse(Target(address, KEYAUTH_TOKEN, KEYAUTH), [_outside("ok", address)])
    assert _codes(r.to_json()) == ["dns-reserved-address"]
    [f] = r.findings
    assert f.title == f"{address} is a reserved address"
    assert f.evidence == [f"{address}: {why}"]
    assert r.verdicts["acme-ca"] == "fail"  # however well it answers


def test_assume_public_covers_an_address_target() -> None:
    options = Options(assume_public=["198.51.100.0/24"])
    r = analyse(
        Target("198.51.100.7", KEYAUTH_TOKEN, KEYAUTH), [_outside("ok", "198.51.100.7")], options
    )
    assert r.findings == [] and r.ok and r.verdicts["acme-ca"] == "pass"
    doc = r.to_json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["url"] == f"http://198.51.100.7{PATH}"


def test_an_ipv6_target_is_normalised_and_bracketed_in_its_url() -> None:
    options = Options(assume_public=["2001:db8::/32"])
    target = Target("2001:DB8:0:0::7", KEYAUTH_TOKEN, KEYAUTH)
    r = analyse(target, [_outside("not-found", "2001:db8::7")], options)
    doc = r.to_json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["name"] == "2001:db8::7" and doc["url"] == f"http://[2001:db8::7]{PATH}"
    assert _codes(doc)[0] == "challenge-not-found"
    f = r.findings[0]
    assert "Route http://[2001:db8::7]/.well-known/acme-challenge/" in f.remedy


def test_the_dns_stage_asks_nothing_and_probes_the_address() -> None:
    ctx = Context(
        Target("2001:DB8::7", KEYAUTH_TOKEN, KEYAUTH), Options(dns_server=("127.0.0.1", 53))
    )
    check_name(ctx)
    assert ctx.name_error is None and ctx.address == "2001:db8::7"
    assert skip_lookup(ctx)
    [(_vantage, addresses)] = probe_jobs(ctx, [Local(Role.OUTSIDE)])
    assert addresses == ["2001:db8::7"]
    named = Context(Target("app.example.com", KEYAUTH_TOKEN, KEYAUTH), Options())
    check_name(named)
    assert named.address is None and not skip_lookup(named)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("1.2.3", "not a valid IPv4 (dotted-quad) address"),
        ("300.1.1.1", "not a valid IPv4 (dotted-quad) address"),
        ("::1%eth0", "an IPv6 zone (%eth0)"),
        ("[::1]", "without brackets"),
    ],
)
def test_a_malformed_address_is_invalid_name_in_its_own_words(raw: str, said: str) -> None:
    r = analyse(Target(raw, KEYAUTH_TOKEN, KEYAUTH), [_outside("ok", "192.0.2.1")])
    [f] = r.findings
    assert f.code is Code.INVALID_NAME and r.runs == []
    assert said in f.explanation and "an IP address (RFC 8738)" in f.explanation
    assert "IPv4 as four decimal numbers" in f.remedy


def test_a_bad_dns_name_keeps_its_words() -> None:
    r = analyse(Target("*.example.com", KEYAUTH_TOKEN, None), [_outside("ok", "192.0.2.1")])
    [f] = r.findings
    assert f.code is Code.INVALID_NAME
    assert f.explanation.endswith("wildcards and IP addresses cannot be proved that way.")


# -- end to end: the command line against real servers ------------------------------------


@pytest.fixture
def dns() -> Any:
    server = DnsServer({"named.example.test": {"A": ["127.0.0.1"]}})
    yield server
    server.close()


def _diagnose(
    capsys: pytest.CaptureFixture[str], *targets: str, extra: tuple[str, ...] = ()
) -> tuple[int, list[dict[str, Any]]]:
    code = main(
        [
            "diagnose",
            *targets,
            "--token",
            KEYAUTH_TOKEN,
            "--key",
            KEYAUTH,
            "--timeout",
            "0.5",
            "--repeat",
            "2",
            "--json",
            *extra,
        ]
    )
    out = capsys.readouterr().out
    docs = (
        [json.loads(line) for line in out.splitlines()] if len(targets) > 1 else [json.loads(out)]
    )
    for doc in docs:
        jsonschema.validate(doc, SCHEMA)
    return code, docs


def test_a_good_answer_at_an_address_passes_without_dns(
    serve: Serve, dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = serve(answer(200, KEYAUTH))
    code, [doc] = _diagnose(
        capsys, good.address, extra=("--assume-public", "127.0.0.0/8", "--dns-server", dns.spec)
    )
    assert code == 0 and doc["ok"] and doc["findings"] == []
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "unknown"}
    assert doc["name"] == good.address and doc["url"] == f"http://{good.address}{PATH}"
    assert {p["address"] for p in doc["probes"]} == {good.address}
    assert good.requests and all(
        f"\r\nHost: {good.address}\r\n".encode() in r for r in good.requests
    )
    assert dns.queries == []  # no A, no AAAA, no CAA


def test_a_404_at_an_address_is_challenge_not_found(
    serve: Serve, dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = serve(answer(404, "nope"))
    code, [doc] = _diagnose(
        capsys, missing.address, extra=("--assume-public", "127.0.0.0/8", "--dns-server", dns.spec)
    )
    assert code == 1 and not doc["ok"]
    assert _codes(doc) == ["challenge-not-found"]
    assert doc["root_cause"]["code"] == "challenge-not-found"
    assert doc["verdicts"]["acme-ca"] == "fail"
    assert dns.queries == []


def test_an_address_outside_assume_public_is_reserved(
    serve: Serve, dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = serve(answer(200, KEYAUTH))
    code, [doc] = _diagnose(capsys, good.address, extra=("--dns-server", dns.spec))
    assert code == 1 and _codes(doc) == ["dns-reserved-address"]
    assert doc["findings"][0]["evidence"] == [f"{good.address}: loopback (RFC 1122)"]
    assert doc["verdicts"]["acme-ca"] == "fail"
    assert good.requests  # probed all the same, as a name resolving there is
    assert dns.queries == []


def test_only_the_name_is_looked_up_in_a_mixed_run(
    serve: Serve, dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = serve(answer(200, KEYAUTH))
    code, docs = _diagnose(
        capsys,
        good.address,
        "named.example.test",
        extra=("--assume-public", "127.0.0.0/8", "--dns-server", dns.spec),
    )
    by_name = {d["name"]: d for d in docs}
    assert by_name[good.address]["ok"]
    assert {name for name, _type in dns.queries} <= {"named.example.test", "example.test", "test"}
    assert {t for name, t in dns.queries if name == "named.example.test"} >= {"A", "AAAA"}
    assert code in (0, 1)


def _serve_v6(serve: Serve, handler: Any) -> Server:
    try:
        return serve(handler, address="::1")
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: cannot listen on [::1]:80 ({exc.strerror or exc})")


def test_an_ipv6_address_is_fetched_bracketed(
    serve: Serve, dns: DnsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = _serve_v6(serve, answer(200, KEYAUTH))
    code, [doc] = _diagnose(
        capsys, "0:0:0:0:0:0:0:1", extra=("--assume-public", "::1/128", "--dns-server", dns.spec)
    )
    assert code == 0 and doc["findings"] == [], doc["findings"]
    assert doc["name"] == "::1" and doc["url"] == f"http://[::1]{PATH}"
    assert {p["address"] for p in doc["probes"]} == {"::1"}
    assert all(b"\r\nHost: [::1]\r\n" in r for r in server.requests)
    assert dns.queries == []


def _pending(address: str) -> PendingChallenge:
    return PendingChallenge(
        address, KEYAUTH_TOKEN, KEYAUTH, "https://ca/authz/1", "https://ca/ch/1"
    )


def test_the_self_check_diagnoses_an_address(serve: Serve) -> None:
    """What `acmelb issue` runs before answering: the engine on the address itself."""
    good = serve(answer(200, KEYAUTH))
    missing = serve(answer(404, "nope"))
    probe = ProbeSettings(timeout=0.5, repeat=1, assume_public=("127.0.0.0/8",))
    check = SelfCheck(SelfCheckOptions(mode="strict", probe=probe, total_timeout=0))
    check([_pending(good.address)])
    assert [r.name for r in check.reports] == [good.address] and check.reports[0].ok
    with pytest.raises(SelfCheckRefused, match=f"{missing.address}: challenge-not-found"):
        check([_pending(missing.address)])
