"""Issuance through real load balancers with the LB-aware self-check (issue 5)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from acmelb.lab import Lab
from acmelb.lab.scenarios import ADDRESSES

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]
CONNECT_TIMEOUT = 2.0


def issue(lab: Lab, state: Path, *extra: str) -> tuple[int, dict[str, Any], str, float]:
    assert lab.ca_directory_url and lab.ca_bundle
    argv = [
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
        str(state),
        "--here",
        "inside",
        "--outside",
        lab.vantage("pub"),
        "--assume-public",
        "198.18.0.0/15",
        "--timeout",
        str(CONNECT_TIMEOUT),
        "--json",
        *extra,
    ]
    started = time.monotonic()
    proc = lab.run("b1", argv, timeout=150)
    elapsed = time.monotonic() - started
    doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, doc, proc.stderr, elapsed


def failing_codes(doc: dict[str, Any]) -> set[str]:
    return {
        f["code"]
        for report in doc.get("self_check", [])
        for f in report["findings"]
        if f["severity"] in ("error", "fatal")
    }


def test_strict_refuses_hairpin_after_one_connect_timeout(
    lab_scenario: Any, tmp_path: Path
) -> None:
    lab = lab_scenario("dnat", backends=("none",), ca=True)
    code, doc, stderr, elapsed = issue(lab, tmp_path)
    assert code == 1, stderr
    assert failing_codes(doc) == {"nat-loopback"}
    [report] = doc["self_check"]
    assert report["schema"] == "acmelb.diagnosis/v1"
    assert report["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}
    # The CA's own answer: the authorization is deactivated, its challenge never answered.
    [deactivated] = doc["deactivated"]
    assert deactivated["status"] == "deactivated"
    assert deactivated["challenge_status"] == "pending"
    assert not (tmp_path / "live").exists() or not any((tmp_path / "live").iterdir())
    # One connect timeout, not one per repeat (plus process start and the CA round trips).
    assert elapsed < 2 * CONNECT_TIMEOUT + 4, elapsed


def test_tolerant_issues_through_hairpin_with_a_warning(lab_scenario: Any, tmp_path: Path) -> None:
    lab = lab_scenario("dnat", backends=("none",), ca=True)
    code, doc, stderr, _ = issue(lab, tmp_path, "--self-check", "tolerant")
    assert code == 0, stderr
    assert (tmp_path / "live" / lab.scenario.name / "fullchain.pem").exists()
    assert any("nat-loopback" in warning for warning in doc["warnings"])


@pytest.mark.parametrize("mode", ["strict", "tolerant"])
def test_intercepting_lb_is_refused_in_both_modes(
    lab_scenario: Any, tmp_path: Path, mode: str
) -> None:
    lab = lab_scenario("haproxy-http-intercept", backends=("none",), ca=True)
    code, doc, stderr, _ = issue(lab, tmp_path, "--self-check", mode)
    assert code == 1, stderr
    assert "lb-intercepts-challenge" in failing_codes(doc)
    [deactivated] = doc["deactivated"]
    assert deactivated["challenge_status"] == "pending"  # the CA never saw it answered
    assert not (tmp_path / "live" / lab.scenario.name).exists()


@pytest.mark.parametrize("mode", ["haproxy-tcp", "dnat-loopback"])
def test_strict_issues_through_working_lbs(lab_scenario: Any, tmp_path: Path, mode: str) -> None:
    lab = lab_scenario(mode, backends=("none",), ca=True)
    code, doc, stderr, _ = issue(lab, tmp_path)
    assert code == 0, stderr
    assert failing_codes(doc) == set()
    assert [r["verdicts"]["acme-ca"] for r in doc["self_check"]] == ["pass"]
    assert Path(doc["fullchain"]).read_bytes().count(b"BEGIN CERTIFICATE") >= 2


def test_without_self_check_the_ca_rejects_the_intercepted_answer(
    lab_scenario: Any, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-http-intercept", backends=("none",), ca=True)
    code, _doc, stderr, _ = issue(lab, tmp_path, "--self-check", "off")
    assert code == 1
    # Pebble's own words, with the URL it fetched.
    assert "the CA fetched http://app.acmelb.test/.well-known/acme-challenge/" in stderr
    assert "did not match this challenge" in stderr
    assert "Traceback" not in stderr


def test_renew_self_checks_as_the_original_issue_did(lab_scenario: Any, tmp_path: Path) -> None:
    """The self-check settings live in the renewal configuration: a renewal through DNAT
    whose NAT loopback was removed since is refused in strict mode, the old certificate kept."""
    lab = lab_scenario("dnat", backends=("none",), ca=True)
    fix = [
        sys.executable,
        "-m",
        "acmelb",
        "fix",
        "nat-loopback",
        "--vip",
        lab.vip,
        "--backend",
        lab.backend_address("b1"),
        "--subnet",
        ADDRESSES.backend_subnet,
    ]
    applied = lab.run("lb", [*fix, "--apply"], timeout=60)
    assert applied.returncode == 0, applied.stderr
    code, _doc, stderr, _ = issue(lab, tmp_path)  # strict, hairpin working: issued
    assert code == 0, stderr
    live = tmp_path / "live" / lab.scenario.name / "cert.pem"
    first = live.read_bytes()
    renewal = json.loads((tmp_path / "renewal" / f"{lab.scenario.name}.json").read_text())
    assert renewal["self_check"]["mode"] == "strict"
    assert renewal["self_check"]["probe"]["outside"] == [lab.vantage("pub")]

    undone = lab.run("lb", [*fix, "--undo"], timeout=60)
    assert undone.returncode == 0, undone.stderr
    renew = lab.run(
        "b1",
        [
            sys.executable,
            "-m",
            "acmelb",
            "renew",
            lab.scenario.name,
            "--force",
            "--state-dir",
            str(tmp_path),
        ],
        timeout=150,
    )
    assert renew.returncode == 1, renew.stdout + renew.stderr
    assert "nat-loopback" in renew.stdout
    assert "self-check (strict) refused" in renew.stdout
    assert live.read_bytes() == first  # the old certificate stays live
