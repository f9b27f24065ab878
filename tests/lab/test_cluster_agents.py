"""Cluster mode on the lab: agents in three backends behind a round-robin TCP HAProxy
(80 and 443), a 3-member etcd, Pebble on the public side (tests for issue 11)."""

from __future__ import annotations

import re
import signal
import sys
import time
from typing import Any

import pytest

from acmelb.lab import Lab, Scenario, build
from acmelb.lab.cluster import file_fingerprint
from tests.lab.cluster_agents import (
    NAME,
    etcd_values,
    fullchain,
    lock_holder,
    log,
    start,
    status,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]
ROLES = ("b1", "b2", "b3")
CONVERGE_BOUND = 30.0  # seconds from three agents started to three instances serving
# a resumed holder's renewal ends without a write: fenced off, or the store timed out
NOTHING_WRITTEN = (
    r"renewal of \S+ failed: (the lock .* is no longer ours|the store .* did not answer)"
)


def served_everywhere(lab: Lab) -> str | None:
    """The one fingerprint served on 443 through the VIP and by each backend, if so."""
    chain = fullchain(lab, "b1")
    if chain is None or any(fullchain(lab, r) != chain for r in ROLES):
        return None
    expected = file_fingerprint(lab.agent_state_dir("b1") / "live" / NAME / "fullchain.pem")
    seen = {lab.tls_fingerprint(r, NAME) for r in ROLES}
    seen |= {lab.tls_fingerprint("vip", NAME) for _ in ROLES}  # round robin: each backend
    return expected if seen == {expected} else None


def test_three_agents_at_once_one_order_same_certificate_everywhere() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        start(lab, ROLES)
        took = wait_for(
            lambda: served_everywhere(lab),
            CONVERGE_BOUND,
            "every instance serving the same certificate on 443",
        )
        print(f"\nthree agents: one certificate served everywhere after {took:.1f} s")
        assert lab.pebble_orders() == 1 and lab.pebble_issued() == 1
        # The CA's requests landed on more than one instance, and were answered there.
        answered = [r for r in ROLES if "-> 200 (key authorization)" in log(lab, r)]
        assert len(answered) >= 2, {r: log(lab, r)[-2000:] for r in ROLES}
        # One account for the cluster: one sealed account key, one Pebble account.
        values = etcd_values(lab)
        assert len([k for k in values if k.startswith("/acmelb/account/")]) == 1
        # No private key in clear anywhere in etcd.
        assert values and not any("PRIVATE KEY" in v for v in values.values())
        wait_for(lambda: status(lab)[1].get("converged"), 20, "cluster status converged")
        code, doc = status(lab)
        assert code == 0
        members = {m["member"]: m["installed"] for m in doc["members"]}  # type: ignore[union-attr]
        assert members == {r: {NAME: 1} for r in ROLES}
        # An agent with another store key: one line, exit 1, nothing written.
        other = lab.state_dir / "other.key"
        from acmelb.cluster.secrets import generate_key_file

        generate_key_file(other)
        before = etcd_values(lab)
        cfg = write_config(lab, "b3")
        proc = lab.run(
            "b3",
            [
                sys.executable,
                "-m",
                "acmelb",
                "agent",
                "--config",
                str(cfg),
                "--store-key-file",
                str(other),
            ],
            timeout=60,
        )
        assert proc.returncode == 1
        assert "wrong key file" in proc.stderr and proc.stderr.count("\n") == 1
        after = etcd_values(lab)
        assert {k: v for k, v in after.items() if not k.startswith("/acmelb/members/")} == {
            k: v for k, v in before.items() if not k.startswith("/acmelb/members/")
        }


def slow_first_outside(lab: Lab, seconds: float) -> str:
    """An outside vantage whose first probe (whoever runs it) waits ``seconds``: the lock
    holder sits in its self-check with its token published and not yet answered."""
    marker = lab.state_dir / "slowed-once"
    return (
        f"sh -c '[ -e {marker} ] || {{ touch {marker}; sleep {seconds}; }}; "
        f'exec "$@"\' sh {lab.vantage("pub")}'
    )


def holder_in_its_self_check(lab: Lab, seconds: float) -> str:
    """Start the agents; return the lock holder once its token is published, while its
    self-check holds it for ``seconds`` before it answers."""
    start(lab, ROLES, outside=slow_first_outside(lab, seconds))
    wait_for(
        lambda: any(k.startswith("/acmelb/tokens/") for k in etcd_values(lab)),
        30,
        "the holder's token published",
    )
    holder = lock_holder(lab)
    assert holder in ROLES
    return holder


def test_kill_9_of_the_holder_between_publish_and_answer() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        holder = holder_in_its_self_check(lab, 20)
        lab.signal_agent(holder, signal.SIGKILL)
        killed = time.monotonic()
        others = [r for r in ROLES if r != holder]
        wait_for(
            lambda: all(fullchain(lab, r) for r in others),
            4 + 25,
            "the others to finish the renewal (lease 4 s + margin)",
        )
        print(
            f"\nkill -9 of {holder}: certificate installed on the others "
            f"{time.monotonic() - killed:.1f} s later"
        )
        # The same order, resumed: no second order, one certificate.
        assert lab.pebble_issued() == 1
        assert lab.pebble_orders() == 1
        assert any("resuming the order" in log(lab, r) for r in others)


def out_of_rotation(lab: Lab, role: str, out: bool) -> None:
    rule = ["INPUT", "-p", "tcp", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset"]
    proc = lab.run(role, ["iptables", "-I" if out else "-D", *rule], timeout=20)
    assert proc.returncode == 0, proc.stderr


def test_a_holder_stopped_past_its_lease_is_fenced_off() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        holder = holder_in_its_self_check(lab, 12)
        lab.signal_agent(holder, signal.SIGSTOP)
        # The LB routes around the frozen instance, as its health check would: its port 80
        # answers with a reset, and HAProxy redispatches (a frozen process still accepts).
        out_of_rotation(lab, holder, True)
        others = [r for r in ROLES if r != holder]
        wait_for(
            lambda: all(fullchain(lab, r) for r in others),
            40,
            "a successor to finish while the holder is stopped",
        )
        out_of_rotation(lab, holder, False)
        lab.signal_agent(holder, signal.SIGCONT)
        # Its next write is refused by the fencing transaction; on a loaded machine its
        # first store request after the freeze may instead find its connections dead and
        # give up within the store timeout: either way it wrote nothing.
        wait_for(
            lambda: re.search(NOTHING_WRITTEN, log(lab, holder)),
            40,
            "the old holder's write refused (fencing) or not made (store timeout)",
        )
        wait_for(
            lambda: fullchain(lab, holder) == fullchain(lab, others[0]),
            20,
            "the old holder installing the successor's certificate",
        )
        assert lab.pebble_issued() == 1
        values = etcd_values(lab)
        assert f"/acmelb/certs/{NAME}/order" not in values  # nothing left half-written


def test_etcd_losses_and_a_partition(request: Any) -> None:
    """Renewals every ~10 s (15 s certificates): they go on with one etcd member down;
    without quorum the agents keep serving and issue nothing, and go on once it is back;
    an agent cut off from etcd keeps serving and converges after the cut heals."""
    with build(Scenario.cluster_preset(3, cert_validity=15)) as lab:
        start(lab, ROLES, check_interval=1.0, metrics=True)

        def version() -> int:
            code, doc = status(lab)
            certs = doc.get("certificates") or [{}]
            return int(certs[0].get("version") or 0) if code == 0 else -1  # type: ignore[index]

        wait_for(lambda: version() >= 1, 40, "the first version")
        lab.etcd.kill(0)
        v = version()
        wait_for(lambda: version() > v, 30, "a renewal with one etcd member down")

        lab.etcd.kill(1)  # two of three: no quorum
        time.sleep(2)
        orders = lab.pebble_orders()
        code, doc = status(lab)
        assert code == 1 and doc["quorum"] is False
        fingerprint = lab.tls_fingerprint("vip", NAME)
        assert fingerprint is not None  # still serving

        def store_down_in_metrics() -> bool:
            proc = lab.run("b1", ["curl", "-s", "http://127.0.0.1:9108/metrics"], timeout=20)
            return "acmelb_store_up 0.0" in proc.stdout

        # a store request gives up after its timeout on each endpoint: a few seconds
        wait_for(store_down_in_metrics, 30, "acmelb_store_up 0 in the metrics")
        time.sleep(12)  # past a renewal that would have been due
        assert lab.pebble_orders() == orders  # issued nothing without quorum
        lab.etcd.restart(0)
        lab.etcd.restart(1)
        v = max(version(), 0)
        wait_for(lambda: version() > v, 40, "renewals going on with quorum back")

        lab.etcd.cut(lab.ns("b2"))
        before = fullchain(lab, "b2")
        v = version()
        wait_for(lambda: version() > v, 40, "a renewal by the others during the cut")
        assert fullchain(lab, "b2") == before  # cut off: nothing new arrives
        assert lab.tls_fingerprint("b2", NAME) is not None  # but it keeps serving
        lab.etcd.heal(lab.ns("b2"))
        wait_for(lambda: status(lab)[1].get("converged"), 40, "b2 converging after the cut")
        assert "store unreachable" in log(lab, "b2") and "store reachable again" in log(lab, "b2")
