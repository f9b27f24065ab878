"""Pebble on the public side validates through the VIP; acmelb issue runs on a backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from acmelb.lab import OTHER_THUMBPRINT, Lab

from .conftest import LabFactory

pytestmark = pytest.mark.lab


def issue_on(lab: Lab, role: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """``acmelb issue`` for the lab's name, run inside ``role`` with the standalone solver."""
    assert lab.ca_directory_url and lab.ca_bundle
    # The self-check is off: it would rightly refuse 198.18.0.0/15, which no public CA
    # can reach; here Pebble's own verdict is the point.
    return lab.run(
        role,
        [
            sys.executable,
            "-m",
            "acmelb",
            "issue",
            lab.scenario.name,
            "--directory",
            lab.ca_directory_url,
            "--ca-bundle",
            str(lab.ca_bundle),
            "--state-dir",
            str(state_dir),
            "--self-check",
            "off",
        ],
        timeout=60,
    )


@pytest.mark.parametrize(
    ("mode", "ipv6"),
    [
        ("haproxy-tcp", False),
        ("haproxy-tcp", True),  # Pebble asks AAAA first and dials the v6 VIP
        ("haproxy-http", False),
        ("dnat", False),
    ],
)
def test_issue_on_a_backend_through_the_lb(
    lab_scenario: LabFactory, tmp_path: Path, mode: str, ipv6: bool
) -> None:
    lab = lab_scenario(mode, backends=("none", "none"), ca=True, ipv6=ipv6)
    result = issue_on(lab, "b1", tmp_path)
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate(
        (tmp_path / "live" / lab.scenario.name / "cert.pem").read_bytes()
    )
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [lab.scenario.name]


def test_intercepting_lb_fails_validation_with_the_cas_words(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-http-intercept", backends=("none", "none"), ca=True)
    result = issue_on(lab, "b1", tmp_path)
    assert result.returncode == 1
    assert "validation failed" in result.stderr
    assert f"http://{lab.scenario.name}/.well-known/acme-challenge/" in result.stderr
    # Pebble's words: the key authorization it got carries the LB's account thumbprint.
    assert "did not match" in result.stderr and f'.{OTHER_THUMBPRINT}"' in result.stderr
    assert "(unauthorized)" in result.stderr
    assert not (tmp_path / "live" / lab.scenario.name).exists()
