"""IP-address certificates through a real load balancer (issue 21, RFC 8738): the lab's
IPv4 and IPv6 VIPs behind HAProxy in TCP mode, Pebble 2.10 validating HTTP-01 on the
address itself (no DNS), the standalone responder on b1, the strict self-check from the
public side; then ``acmelb diagnose`` on the same address agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from acmelb.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]


def issue_ip(lab: Lab, state: Path, address: str) -> tuple[int, str]:
    assert lab.ca_directory_url and lab.ca_bundle
    argv = [sys.executable, "-m", "acmelb", "issue", address, "--profile", "shortlived"]
    argv += ["--directory", lab.ca_directory_url, "--ca-bundle", str(lab.ca_bundle)]
    argv += ["--state-dir", str(state), "--here", "inside", "--outside", lab.vantage("pub")]
    argv += ["--assume-public", "198.18.0.0/15", "--assume-public", "2001:db8::/32"]
    argv += ["--timeout", "2"]
    proc = lab.run("b1", argv, timeout=150)
    return proc.returncode, proc.stderr


def serving(lab: Lab) -> subprocess.Popen[bytes]:
    """``acmelb serve`` on b1's port 80 with the lab's token and key authorization."""
    sc = lab.scenario
    argv = [sys.executable, "-m", "acmelb", "serve", f"--token={sc.token}"]
    argv += [f"--key={sc.key_authorization}", "--port", "80", "--quiet"]
    proc = subprocess.Popen([*lab.exec_prefix("b1"), *argv], stderr=subprocess.PIPE)
    assert proc.stderr is not None and b"listening" in proc.stderr.readline()
    return proc


def diagnose(lab: Lab, address: str) -> dict[str, Any]:
    sc = lab.scenario
    argv = [sys.executable, "-m", "acmelb", "diagnose", address, "--json", "--timeout", "2"]
    argv += [f"--token={sc.token}", f"--key={sc.key_authorization}"]
    argv += ["--assume-public", "198.18.0.0/15", "--assume-public", "2001:db8::/32"]
    argv += ["--inside", lab.vantage("b1")]
    proc = lab.run("pub", argv, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_ip_certificates_through_the_lb_for_ipv4_and_ipv6(
    lab_scenario: Any, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("none",), ca=True, ipv6=True)
    assert lab.vip6 is not None
    for address in (lab.vip, lab.vip6):
        code, stderr = issue_ip(lab, tmp_path, address)
        assert code == 0, stderr
        assert "self-check of" in stderr
        cert = x509.load_pem_x509_certificate(
            (tmp_path / "live" / address / "cert.pem").read_bytes()
        )
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [address]
        assert not san.get_values_for_type(x509.DNSName)
        assert not cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        # the same address diagnosed from outside: no DNS stage, the address probed
        responder = serving(lab)
        try:
            report = diagnose(lab, address)
        finally:
            responder.terminate()
            responder.wait(10)
        assert report["name"] == address
        assert not [f for f in report["findings"] if f["code"].startswith("dns-")]
        outside = {p["address"] for p in report["probes"] if p["vantage"].startswith("outside")}
        assert outside == {address}
        assert report["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "pass"}
        assert report["ok"], report["findings"]
