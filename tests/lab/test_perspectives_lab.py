"""The CA's network perspectives on a real topology: several public-side namespaces
(pub, the primary, and p1..pN, remote ones) and an LB whose port 80 drops some of them,
as a source allowlist or geo-blocking would. The acme-ca verdict follows the quorum of
ballot SC-067, and perspective-blocked names the blocked ones as the one root cause."""

from __future__ import annotations

import pytest

from acmelb.lab import Lab

from .conftest import LabFactory
from .test_diagnose_lab import diagnose, finding, root

pytestmark = pytest.mark.lab


def outside_vantages(lab: Lab, count: int) -> list[str]:
    argv: list[str] = []
    for index in range(1, count + 1):
        argv += ["--outside", lab.vantage(f"p{index}")]
    return argv


@pytest.mark.parametrize(
    ("blocked", "verdict", "severity"),
    [
        (("p3",), "pass", "warning"),  # 1 of 3 remote perspectives fails: the quorum holds
        (("p2", "p3"), "fail", "error"),  # 2 of 3: it does not
        (("pub",), "fail", "error"),  # the primary is blocked: it must succeed
    ],
)
def test_blocked_perspectives_and_the_quorum(
    lab_scenario: LabFactory, blocked: tuple[str, ...], verdict: str, severity: str
) -> None:
    lab = lab_scenario("haproxy-tcp", perspectives=3, blocked=blocked)
    rc, doc = diagnose(lab, *outside_vantages(lab, 3), inside=(), repeat=1)
    assert doc["verdicts"]["acme-ca"] == verdict
    assert rc == (0 if verdict == "pass" else 1)
    assert root(doc) == "perspective-blocked"
    f = finding(doc, "perspective-blocked")
    assert f["severity"] == severity
    labels = {"pub": "outside:local"} | {
        f"p{i}": f"outside:{lab.vantage(f'p{i}')}" for i in range(1, 4)
    }
    assert f["vantages"] == [labels[role] for role in ("pub", "p1", "p2", "p3") if role in blocked]
    # the blocked perspectives' timeouts are its consequences, not causes of their own
    for other in doc["findings"]:
        if other["code"] != "perspective-blocked":
            assert other["severity"] == "info", other


def test_every_perspective_passing_is_healthy(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", perspectives=2)
    rc, doc = diagnose(lab, *outside_vantages(lab, 2), inside=(), repeat=1)
    assert rc == 0 and doc["findings"] == [] and root(doc) is None
    assert doc["verdicts"]["acme-ca"] == "pass"
    vantages = {p["vantage"] for p in doc["probes"]}
    assert vantages == {"outside:local", *(f"outside:{lab.vantage(f'p{i}')}" for i in (1, 2))}
