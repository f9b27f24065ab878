"""IP-address certificates (RFC 8738): identifiers, CSR, and issuance against a real Pebble.

Pebble 2.10 takes ``ip`` identifiers and validates http-01 at http://IP:PORT/... (the IP
itself, dialled by its VA); no DNS and no CAA are involved for an address.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from acmelb.acme.issuance import generate_key, make_csr, normalize_names
from acmelb.acme.solvers import PendingChallenge
from acmelb.errors import InvalidNameError
from acmelb.names import (
    challenge_url,
    looks_like_ip,
    normalize_identifier,
    normalize_ip,
    normalize_name,
    url_host,
)
from tests.conftest import LocalCA, openssl_verify, run_acmelb

pytestmark = pytest.mark.timeout(120)

# -- names and addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        (" 198.51.100.7 ", "198.51.100.7"),
        ("::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
        # DNS names go through normalize_name unchanged
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_identifiers_normalize(raw: str, expected: str) -> None:
    assert normalize_identifier(raw) == expected
    assert normalize_identifier(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("1.2.3", "not a valid IPv4 (dotted-quad) address"),
        ("300.1.1.1", "not a valid IPv4 (dotted-quad) address"),
        ("01.2.3.4", "not a valid IPv4 (dotted-quad) address"),
        ("1.2.3.4.", "not a valid IPv4 (dotted-quad) address"),
        ("::1%eth0", "an IPv6 zone (%eth0) only means something on this host"),
        ("fe80::1%25eth0", "an IPv6 zone"),
        ("[::1]", "give the IPv6 address without brackets"),
        ("[2001:db8::1", "give the IPv6 address without brackets"),
        ("2001:db8::1::2", "not a valid IPv6 address"),
        ("1:2:3:4:5:6:7:8:9", "not a valid IPv6 address"),
        ("::ffff:192.0.2.1", "an IPv4-mapped IPv6 address; give the IPv4 address 192.0.2.1"),
        ("*.example.com", "wildcard names cannot be validated"),
        ("bad_label.example", "not a valid DNS name"),
        ("", "empty name"),
    ],
)
def test_bad_identifiers_raise_in_one_line(raw: str, message: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        normalize_identifier(raw)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_normalize_name_still_refuses_addresses() -> None:
    for raw in ("192.0.2.1", "2001:db8::1", "[2001:db8::1]"):
        with pytest.raises(InvalidNameError, match="an IP address is not a DNS name"):
            normalize_name(raw)
    with pytest.raises(InvalidNameError):
        normalize_ip("example.com")


def test_what_looks_like_an_address() -> None:
    for text in ("1.2.3", "::1", "[::1]", "a%b", "300.1.1.1", "1.2.3.4."):
        assert looks_like_ip(text), text
    for text in ("example.com", "1.example", "example.123", "x", "", "."):
        assert not looks_like_ip(text), text


def test_urls_bracket_ipv6() -> None:
    assert url_host("2001:db8::1") == "[2001:db8::1]"
    assert url_host("192.0.2.1") == "192.0.2.1"
    assert url_host("app.example.com") == "app.example.com"
    assert challenge_url("2001:db8::1", "T") == "http://[2001:db8::1]/.well-known/acme-challenge/T"
    assert challenge_url("192.0.2.1", "T") == "http://192.0.2.1/.well-known/acme-challenge/T"
    pending = PendingChallenge("2001:db8::1", "T", "T.K", "https://ca/authz", "https://ca/chall")
    assert pending.validation_url == "http://[2001:db8::1]/.well-known/acme-challenge/T"


def test_certificate_names_mix_addresses_and_names() -> None:
    names = normalize_names(["127.0.0.1", "App.Test", "2001:DB8::1", "2001:db8:0::1", "app.test"])
    assert names == ("127.0.0.1", "app.test", "2001:db8::1")
    with pytest.raises(InvalidNameError, match="zone"):
        normalize_names(["app.test", "::1%lo"])
    csr = x509.load_pem_x509_csr(make_csr(generate_key("ec256"), names))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["app.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("2001:db8::1"),
    ]


# -- issuance and renewal against Pebble ------------------------------------------------


def _issue(
    local_ca: LocalCA, state: Path, address: str, *names: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    # Pebble validates on a random high port: the self-check (port 80) is off here
    return run_acmelb(
        "issue",
        *names,
        *local_ca.ca_args(state),
        "--self-check",
        "off",
        "--solver",
        "standalone",
        "--http-port",
        str(local_ca.http_port),
        "--http-address",
        address,
        *extra,
    )


def _sans(path: Path) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        sorted(san.get_values_for_type(x509.DNSName)),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


def _common_names(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_ipv4_certificate_is_issued_and_renewed(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    issued = _issue(local_ca, state, "127.0.0.1", "127.0.0.1")
    assert issued.returncode == 0, issued.stderr
    assert "Certificate for 127.0.0.1 issued" in issued.stdout
    # Pebble offers Let's Encrypt's profiles: the IP was ordered outside shortlived
    warnings = [line for line in issued.stderr.splitlines() if "warning:" in line]
    assert warnings == [
        "acmelb: warning: 127.0.0.1: ordered in the CA's default profile; Let's Encrypt "
        "issues certificates for IP addresses only in the shortlived profile, which this CA "
        "offers (add --profile shortlived if the order is refused)"
    ]
    live = state / "live" / "127.0.0.1"
    cert = live / "cert.pem"
    assert _sans(cert) == ([], ["127.0.0.1"])
    assert _common_names(cert) == []  # RFC 8738: an address only in the SAN
    assert openssl_verify(local_ca.root_bundle, live).returncode == 0
    first = _serial(cert)

    renewed = run_acmelb("renew", "127.0.0.1", "--state-dir", str(state), "--force")
    assert renewed.returncode == 0, renewed.stderr
    assert "warning:" not in renewed.stderr  # the CA issued it so: said once, at issue
    assert renewed.stdout.startswith("127.0.0.1: renewed: renewed, valid until"), renewed.stdout
    assert os.readlink(cert) == "../../archive/127.0.0.1/cert2.pem"
    assert _serial(cert) != first
    assert _sans(cert) == ([], ["127.0.0.1"]) and _common_names(cert) == []

    listed = run_acmelb("certificates", "--state-dir", str(state), "--json")
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "127.0.0.1" and entry["names"] == ["127.0.0.1"]


def test_json_output_keeps_the_warnings_on_stderr(local_ca: LocalCA, tmp_path: Path) -> None:
    issued = _issue(local_ca, tmp_path / "state", "127.0.0.3", "127.0.0.3", extra=("--json",))
    assert issued.returncode == 0, issued.stderr
    assert json.loads(issued.stdout)["names"] == ["127.0.0.3"]
    assert (
        [line for line in issued.stderr.splitlines() if line.startswith("acmelb:")]
        == [line for line in issued.stderr.splitlines() if "warning: 127.0.0.3" in line]
        != []
    )


def test_name_and_address_in_one_shortlived_certificate(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    issued = _issue(
        local_ca,
        state,
        "127.0.0.1",
        "ipmix.test",
        "127.0.0.1",
        extra=("--profile", "shortlived", "--json"),
    )
    assert issued.returncode == 0, issued.stderr
    doc = json.loads(issued.stdout)
    assert doc["name"] == "ipmix.test" and doc["names"] == ["ipmix.test", "127.0.0.1"]
    assert "warning" not in issued.stderr
    cert = state / "live" / "ipmix.test" / "cert.pem"
    assert _sans(cert) == (["ipmix.test"], ["127.0.0.1"])


def _ipv6_loopback(port: int) -> str | None:
    """Why IPv6 loopback cannot carry the test (None: it can)."""
    if not socket.has_ipv6:
        return "this Python has no IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", port))
    except OSError as exc:
        return f"cannot listen on [::1]:{port}: {exc.strerror or exc}"
    return None


def test_ipv6_certificate_is_issued(local_ca: LocalCA, tmp_path: Path) -> None:
    why = _ipv6_loopback(local_ca.http_port)
    if why is not None:
        pytest.skip(f"IPv6 loopback unavailable: {why}")
    state = tmp_path / "state"
    # written long-hand: stored, ordered and validated as ::1 (Pebble dials [::1]:PORT)
    issued = _issue(local_ca, state, "::1", "0:0:0:0:0:0:0:1", extra=("--profile", "shortlived"))
    assert issued.returncode == 0, issued.stderr
    assert "Certificate for ::1 issued" in issued.stdout
    live = state / "live" / "::1"
    assert _sans(live / "cert.pem") == ([], ["::1"])
    assert _common_names(live / "cert.pem") == []
    assert openssl_verify(local_ca.root_bundle, live).returncode == 0
    renewed = run_acmelb("renew", "::1", "--state-dir", str(state), "--force")
    assert renewed.returncode == 0, renewed.stderr
    assert os.readlink(live / "cert.pem") == "../../archive/::1/cert2.pem"


def test_an_address_nobody_answers_for_fails_validation(local_ca: LocalCA, tmp_path: Path) -> None:
    """The CA dials the address itself: a responder on another address does not help."""
    state = tmp_path / "state"
    failed = _issue(local_ca, state, "127.0.0.1", "127.0.0.2")
    assert failed.returncode == 1, failed.stdout
    assert "http://127.0.0.2/.well-known/acme-challenge/" in failed.stderr
    assert not (state / "live" / "127.0.0.2").exists()
