"""acmelb fix nat-loopback on the dnat lab: the inside fetch works afterwards (issue 5)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from acmelb.fix.nat_loopback import normalize_iptables_save
from acmelb.lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


def fix(lab: Lab, *args: str) -> Any:
    return lab.run(
        "lb",
        [
            sys.executable,
            "-m",
            "acmelb",
            "fix",
            "nat-loopback",
            "--vip",
            lab.vip,
            "--subnet",
            "198.18.1.0/24",
            *args,
        ],
        timeout=60,
    )


def ruleset(lab: Lab) -> str:
    return normalize_iptables_save(lab.run("lb", ["iptables-save"]).stdout)


def test_apply_verify_idempotent_undo(lab_scenario: Any) -> None:
    lab = lab_scenario("dnat", backends=("responder", "responder"))
    assert lab.fetch("b1").outcome == "timeout"  # the hairpin failure, before
    before = ruleset(lab)
    backend = lab.backend_address("b1")
    applied = fix(lab, "--backend", backend, "--apply", "--verify-from", lab.vantage("b1"))
    assert applied.returncode == 0, applied.stderr
    assert "HTTP 404" in applied.stdout  # the path works: the responder answers a probe path
    inside = lab.fetch("b1")
    assert inside.status == 200 and inside.text == lab.scenario.key_authorization
    peer = lab.fetch("b2")  # a peer on the same segment hairpins too
    assert peer.status == 200
    after = ruleset(lab)
    again = fix(lab, "--backend", backend, "--apply")
    assert again.returncode == 0 and again.stdout.startswith("Already in place")
    assert ruleset(lab) == after
    undone = fix(lab, "--backend", backend, "--undo")
    assert undone.returncode == 0
    assert ruleset(lab) == before
    assert lab.fetch("b1").outcome == "timeout"


def test_failed_verification_rolls_back(lab_scenario: Any) -> None:
    lab = lab_scenario("dnat", backends=("responder", "responder"))
    before = ruleset(lab)
    # Nothing listens on port 81: the fetch through the VIP cannot succeed.
    failed = fix(
        lab,
        "--backend",
        f"{lab.backend_address('b1')}:81",
        "--apply",
        "--verify-from",
        lab.vantage("b1"),
    )
    assert failed.returncode == 1
    assert "previous ruleset was restored" in failed.stderr
    assert ruleset(lab) == before
