"""DNS as the CA sees it, against a DNS server the test runs on 127.x; CAA (RFC 8659/8657)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from acmelb.doctor.checks.base import Options
from acmelb.doctor.diagnose import diagnose, diagnose_challenge, make_target
from acmelb.doctor.resolution import (
    caa_permits,
    from_destination,
    lookup,
    parse_dns_server,
    reserved_reason,
)
from acmelb.doctor.vantage import Local, ProbeSettings, Role
from acmelb.errors import UsageError
from tests.diagnose.dnsserver import DnsServer
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, THUMB, Server, answer


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    d = DnsServer(
        {
            "www.shop.test": {"A": ["198.51.100.7"], "AAAA": ["2001:db8::7"]},
            "shop.test": {"CAA": [(0, "issue", "pki.goog"), (0, "issuewild", "letsencrypt.org")]},
            "deep.a.b.ok.test": {"A": ["198.51.100.8"]},
            "ok.test": {"CAA": [(0, "issue", "letsencrypt.org")]},
            "broken.test": {"rcode": "SERVFAIL"},
            "refused.test": {"rcode": "REFUSED"},
            "crit.test": {"A": ["198.51.100.9"], "CAA": [(128, "tbs", "x")]},
        }
    )
    yield d
    d.close()


def server(d: DnsServer) -> tuple[str, int]:
    return d.address, d.port


def test_addresses_and_caa_walk_to_the_parent(dns: DnsServer) -> None:
    r = lookup("www.shop.test", server(dns), timeout=1)
    assert r.a.addresses == ["198.51.100.7"] and r.aaaa.addresses == ["2001:db8::7"]
    assert r.addresses == ["2001:db8::7", "198.51.100.7"]  # AAAA first, as the CA dials
    assert r.caa is not None and r.caa.owner == "shop.test"
    ok, why = caa_permits(r.caa, "letsencrypt.org")
    assert not ok and "pki.goog" in why
    assert caa_permits(r.caa, "letsencrypt.org", wildcard=True)[0]  # issuewild applies there
    deep = lookup("deep.a.b.ok.test", server(dns), timeout=1)
    assert deep.caa is not None and deep.caa.owner == "ok.test"
    assert caa_permits(deep.caa, "letsencrypt.org")[0]
    assert ("deep.a.b.ok.test", "CAA") in dns.queries and ("b.ok.test", "CAA") in dns.queries


def test_failures_are_data_not_exceptions(dns: DnsServer) -> None:
    assert lookup("gone.test", server(dns), timeout=1).a.status == "nxdomain"
    assert lookup("broken.test", server(dns), timeout=1).a.status == "servfail"
    assert lookup("refused.test", server(dns), timeout=1).a.status == "refused"
    assert lookup("ok.test", server(dns), timeout=1).a.status == "nodata"


def test_critical_unknown_caa_tag_forbids(dns: DnsServer) -> None:
    r = lookup("crit.test", server(dns), timeout=1)
    assert r.caa is not None and not caa_permits(r.caa, "letsencrypt.org")[0]


def test_dns_timeout_is_lookup_failed() -> None:
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        r = lookup("x.test", ("127.0.0.1", silent.getsockname()[1]), timeout=0.3, caa=False)
        assert r.a.status == "timeout"
    finally:
        silent.close()


def test_diagnose_end_to_end_caa_and_servfail(dns: DnsServer) -> None:
    opts = Options(dns_server=server(dns), timeout=0.5, repeat=1)
    report = diagnose(make_target("www.shop.test"), [Local(Role.OUTSIDE)], opts)
    assert [f.code.value for f in report.findings] == ["caa-forbids", "dns-reserved-address"]
    assert report.runs == []  # fatal DNS finding: no probe sent
    report = diagnose(make_target("broken.test"), [Local(Role.OUTSIDE)], opts)
    assert [f.code.value for f in report.findings] == ["dns-lookup-failed"]


def test_diagnose_challenge_for_issuance() -> None:
    s = Server(answer(200, KEYAUTH))
    try:
        report = diagnose_challenge(
            "app.example.com",
            KEYAUTH_TOKEN,
            KEYAUTH,
            ProbeSettings(resolve=(("app.example.com", s.address),), timeout=0.5, repeat=2),
        )
    finally:
        s.close()
    assert report.ok and report.verdicts["acme-ca"] == "pass"
    assert len(s.requests) == 2


def test_thumbprint_alone_checks_a_stateless_responder() -> None:
    t = make_target("app.example.com", thumbprint=THUMB)
    assert not t.random_token and t.key_authorization == f"{t.token}.{THUMB}"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.53", ("127.0.0.53", 53)),
        ("127.0.0.53:5353", ("127.0.0.53", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_dns_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_dns_server(text) == expected


@pytest.mark.parametrize("text", ["dns.google", "1.2.3.4:x", "[::1", "1.2.3.4:70000"])
def test_parse_dns_server_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_dns_server(text)


@pytest.mark.parametrize(
    "addr,reason",
    [
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "carrier-grade"),
        ("fd00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.10", "benchmark"),
        # Boulder's IANA registries have blocks Python's is_private lacks, and 240/4 is
        # not RFC 1918
        ("240.0.0.1", "reserved for future use (RFC 1112)"),
        ("192.0.0.9", "Port Control Protocol anycast (RFC 7723)"),
        ("192.31.196.1", "AS112-v4 (RFC 7535)"),
        ("192.52.193.1", "AMT (RFC 7450)"),
        ("192.88.99.1", "6to4 relay anycast (RFC 7526)"),
        ("192.175.48.1", "AS112 service (RFC 7534)"),
        ("2002::1", "6to4 (RFC 3056)"),
        ("3fff::1", "documentation (RFC 9637)"),
        ("2620:4f:8000::1", "AS112 service (RFC 7534)"),
    ],
)
def test_reserved_ranges(addr: str, reason: str) -> None:
    found = reserved_reason(addr)
    assert found is not None and reason in found


def test_public_address_is_not_reserved() -> None:
    assert reserved_reason("8.8.8.8") is None and reserved_reason("2606:4700::1111") is None
    # multicast is in no IANA special-purpose registry: Boulder dials it (and fails)
    assert reserved_reason("224.0.0.1") is None


@pytest.mark.parametrize(
    ("source", "destination", "expected"),
    [
        (("127.0.0.1", 53), ("127.0.0.1", 53), True),
        (("::1", 5353, 0, 0), ("0:0::1", 5353, 0, 0), True),  # the same address, written apart
        (("fe80::1%eth0", 53, 0, 2), ("fe80::1", 53, 0, 2), True),
        (("127.0.0.2", 53), ("127.0.0.1", 53), False),  # another host
        (("127.0.0.1", 5300), ("127.0.0.1", 53), False),  # another port
        (("not-an-address", 53), ("127.0.0.1", 53), False),
    ],
)
def test_only_the_server_asked_may_answer(
    source: tuple[object, ...], destination: tuple[object, ...], expected: bool
) -> None:
    assert from_destination(source, destination) is expected
