"""``acmelb fix nat-loopback --apply``: any failure gives back a byte-identical ruleset.

Each test runs the real command in a network namespace of its own whose
firewall already holds an operator's rules in several tables (filter, nat,
mangle; IPv4 and IPv6; iptables-nft and a native nft table), then makes the
apply fail in a different way, and compares ``iptables-save``,
``ip6tables-save`` and ``nft list ruleset`` before and after.
(tests/fix/test_fix.py covers idempotence, undo and the basic verification
failure with iptables.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator

import pytest

from acmelb.fix import nat_loopback
from acmelb.lab import netns

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

OPERATOR_RULES = [
    [
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "198.18.0.10",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-m",
        "comment",
        "--comment",
        "operator: the LB's own DNAT",
        "-j",
        "DNAT",
        "--to-destination",
        "198.18.1.11:80",
    ],
    ["iptables", "-t", "nat", "-N", "OPERATOR-NAT"],
    ["iptables", "-t", "nat", "-A", "OPERATOR-NAT", "-s", "10.9.0.0/16", "-j", "RETURN"],
    ["iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "OPERATOR-NAT"],
    ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
    [
        "iptables",
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "MARK",
        "--set-mark",
        "7",
    ],
    [
        "ip6tables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-d",
        "2001:db8::10",
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "[2001:db8:1::11]:80",
    ],
    ["ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"],
]
OPERATOR_NFT = """table inet operator {
  set blocked {
    type ipv4_addr
    elements = { 192.0.2.1, 192.0.2.2 }
  }
  chain input {
    type filter hook input priority 10; policy accept;
    ip saddr @blocked counter drop comment "operator block list"
  }
}
"""


@pytest.fixture
def lb() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("iptables") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iptables and nft")
    name = f"alb{secrets.token_hex(2)}-rb"
    netns.add(name)
    try:
        netns.ip(["link", "set", "lo", "up"], namespace=name)
        for rule in OPERATOR_RULES:
            done = netns.run_in(name, rule)
            assert done.returncode == 0, (rule, done.stderr)
        done = netns.run_in(name, ["nft", "-f", "-"], input=OPERATOR_NFT)
        assert done.returncode == 0, done.stderr
        yield name
    finally:
        netns.delete(name)


def _rulesets(namespace: str) -> dict[str, str]:
    saved = {}
    for tool in ("iptables-save", "ip6tables-save"):
        proc = netns.run_in(namespace, [tool])
        assert proc.returncode == 0, proc.stderr
        saved[tool] = nat_loopback.normalize_iptables_save(proc.stdout)
    proc = netns.run_in(namespace, ["nft", "list", "ruleset"])
    assert proc.returncode == 0, proc.stderr
    # packet counters move by themselves (nothing is sent here, but be fair)
    saved["nft"] = proc.stdout
    return saved


def _fix(
    namespace: str,
    *args: str,
    vip: str = "198.18.0.10",
    backend: str = "198.18.1.11",
    subnet: str = "198.18.1.0/24",
) -> tuple[int, str]:
    proc = netns.run_in(
        namespace,
        [
            sys.executable,
            "-m",
            "acmelb",
            "fix",
            "nat-loopback",
            "--vip",
            vip,
            "--backend",
            backend,
            "--subnet",
            subnet,
            *args,
        ],
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr


def _assert_failed_and_identical(
    namespace: str,
    before: dict[str, str],
    code: int,
    err: str,
    message: str,
    views: tuple[str, ...],
) -> None:
    assert code == 1, err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err
    after = _rulesets(namespace)
    for view in views:
        assert after[view] == before[view], f"{view} differs after a failed apply"


ALL = ("iptables-save", "ip6tables-save", "nft")
IPTABLES = ("iptables-save", "ip6tables-save")
# With the iptables backend on an iptables-nft host, the rollback is judged in both views
# (iptables-save and nft list ruleset): nat_loopback reverses exactly the commands it ran and
# drops the empty base chains iptables-nft created for them.


@pytest.mark.parametrize("tool", ["iptables", "nft"])
def test_failed_verification_restores_every_table(lb: str, tool: str) -> None:
    before = _rulesets(lb)
    code, err = _fix(lb, "--backend-tool", tool, "--apply", "--verify-from", f"ip netns exec {lb}")
    _assert_failed_and_identical(lb, before, code, err, "previous ruleset was restored", ALL)


def test_vantage_dying_during_verification_restores(lb: str) -> None:
    before = _rulesets(lb)
    # The verifying vantage is killed a moment after it starts.
    code, err = _fix(lb, "--apply", "--verify-from", "timeout -s KILL 0.05")
    _assert_failed_and_identical(lb, before, code, err, "previous ruleset was restored", ALL)


def test_verifier_that_cannot_run_is_refused_before_touching_anything(lb: str) -> None:
    before = _rulesets(lb)
    code, err = _fix(lb, "--apply", "--verify-from", "/nonexistent/acmelb-vantage --")
    assert code == 2 and "not found" in err, err
    assert _rulesets(lb) == before


@pytest.mark.parametrize("views", [IPTABLES, ("nft",)], ids=["iptables-save", "nft"])
def test_ipv6_failed_verification_restores(lb: str, views: tuple[str, ...]) -> None:
    before = _rulesets(lb)
    code, err = _fix(
        lb,
        "--apply",
        "--verify-from",
        f"ip netns exec {lb}",
        vip="2001:db8::10",
        backend="2001:db8:1::11",
        subnet="2001:db8:1::/64",
    )
    _assert_failed_and_identical(lb, before, code, err, "previous ruleset was restored", views)


@pytest.mark.parametrize("views", [IPTABLES, ("nft",)], ids=["iptables-save", "nft"])
def test_apply_failing_half_way_restores_even_a_stale_chain(
    lb: str, views: tuple[str, ...]
) -> None:
    """A chain left by an earlier, interrupted acmelb (or a namesake) makes the apply
    fail after it has already added rules: what it added goes, what was there stays."""
    stale = [
        ["iptables", "-t", "nat", "-N", nat_loopback.POST_CHAIN],
        [
            "iptables",
            "-t",
            "nat",
            "-A",
            nat_loopback.POST_CHAIN,
            "-s",
            "10.7.0.0/16",
            "-j",
            "RETURN",
        ],
    ]
    for rule in stale:
        assert netns.run_in(lb, rule).returncode == 0
    before = _rulesets(lb)
    code, err = _fix(lb, "--apply")
    _assert_failed_and_identical(lb, before, code, err, "Chain already exists", views)
    assert f":{nat_loopback.POST_CHAIN} - [0:0]" in _rulesets(lb)["iptables-save"]
