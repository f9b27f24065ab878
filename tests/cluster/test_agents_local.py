"""Several agents in one process on a real etcd and Pebble (loopback): one order per
certificate, one shared account, tokens answered by whichever agent Pebble reaches, a
holder that dies mid-order resumed by another, renewals at two thirds of the lifetime.

Pebble reaches only 127.0.0.1 (its DNS answers every name with it): the agent bound there
answers tokens that another agent published, through the watch-fed copy."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from acmelb.acme.issuance import IssuanceState, Pipeline, Step, generate_key
from acmelb.cluster.agent import Agent, ClusterSolver
from acmelb.cluster.config import AgentConfig
from acmelb.cluster.events import AgentLog
from acmelb.cluster.secrets import SecretBox, generate_key_file
from acmelb.cluster.status import cluster_status
from acmelb.cluster.store import PendingOrder
from acmelb.lab.pebble import count_log
from tests.cluster.conftest import LocalEtcd
from tests.cluster.test_agent_local import agent_config
from tests.conftest import LocalCA, _start_local_ca

pytestmark = pytest.mark.timeout(180)


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def collected(member: str, lines: list[str]) -> AgentLog:
    """The member's events, their messages appended to ``lines``."""
    logger = logging.getLogger(f"acmelb.agent.test.{member}.{id(lines)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(_Collect(lines))
    return AgentLog(member, logger)


def wait_for(condition: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


class Fleet:
    def __init__(self, etcd: LocalEtcd, ca: LocalCA, root: Path) -> None:
        self.etcd, self.ca, self.root = etcd, ca, root
        self.key = root / "store.key"
        generate_key_file(self.key)
        self.agents: list[Agent] = []
        self.logs: dict[str, list[str]] = {}

    def config(self, index: int) -> AgentConfig:
        member = f"a{index}"
        config = agent_config(self.etcd, self.ca, self.root / member, member)
        return dataclasses.replace(config, http_addresses=(f"127.0.0.{index}",))

    def agent(self, index: int) -> Agent:
        config = self.config(index)
        lines = self.logs.setdefault(config.member, [])
        agent = Agent(config, SecretBox.from_file(self.key), log=collected(config.member, lines))
        self.agents.append(agent)
        return agent

    def fullchain(self, index: int) -> bytes | None:
        path = self.root / f"a{index}" / "live" / "one.test" / "fullchain.pem"
        return path.read_bytes() if path.exists() else None

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()


@pytest.fixture
def fleet(local_etcd: LocalEtcd, local_ca: LocalCA, tmp_path: Path) -> Iterator[Fleet]:
    group = Fleet(local_etcd, local_ca, tmp_path)
    try:
        yield group
    finally:
        group.stop()


def test_three_agents_at_once_make_one_order(fleet: Fleet, local_ca: LocalCA) -> None:
    before = count_log(local_ca.pebble.log_path)
    agents = [fleet.agent(i) for i in (1, 2, 3)]
    for agent in agents:
        agent.start()
    wait_for(lambda: all(fleet.fullchain(i) for i in (1, 2, 3)))
    assert fleet.fullchain(1) == fleet.fullchain(2) == fleet.fullchain(3)
    after = count_log(local_ca.pebble.log_path)
    assert (after.orders - before.orders, after.issued - before.issued) == (1, 1)
    wait_for(lambda: cluster_status(fleet.etcd.store()).converged)
    status = cluster_status(fleet.etcd.store())
    assert {m.member for m in status.members} == {"a1", "a2", "a3"}
    # Pebble fetched the token from a1 (127.0.0.1) whoever held the lock
    assert any("key authorization" in line for line in fleet.logs["a1"])


def test_a_holder_that_died_mid_order_is_resumed(fleet: Fleet, local_ca: LocalCA) -> None:
    """The holder ordered and published its token, then vanished (its lease runs out):
    the next agent resumes that same order — no second order."""
    before = count_log(local_ca.pebble.log_path)
    dead = fleet.agent(2)
    dead.store.verify_key()
    spec = dead.config.certificates[0]
    dead.store.declare(spec)
    fence = dead.store.try_lock(spec.name, "a2", dead.kv.grant(dead.config.lease_ttl))
    assert fence is not None
    order = PendingOrder(IssuanceState(names=spec.names), generate_key("ec256"), "a2", time.time())
    pipeline = Pipeline(
        dead._ca_client(),
        ClusterSolver(dead.store, fence, dead.tokens),
        save=lambda *_: None,
        on_step=lambda s: dead.store.save_order(
            fence, spec.name, dataclasses.replace(order, state=s)
        ),
    )
    state = pipeline.advance(order.state, order.privkey_pem)  # ordered
    dead.store.save_order(fence, spec.name, dataclasses.replace(order, state=state))
    state = pipeline.advance(state, order.privkey_pem)  # token published, not answered
    assert state.step is Step.SELF_CHECK and dead.store.tokens()
    order_url = state.order_url
    # ... and the process is gone: nothing refreshes its lease.
    successor = fleet.agent(1)
    successor.start()
    wait_for(lambda: fleet.fullchain(1) is not None)
    after = count_log(local_ca.pebble.log_path)
    assert (after.orders - before.orders, after.issued - before.issued) == (1, 1)
    assert any(f"resuming the order {order_url} left by a2" in line for line in fleet.logs["a1"])


def test_renewal_at_two_thirds_of_the_lifetime(local_etcd: LocalEtcd, tmp_path: Path) -> None:
    (tmp_path / "pebble").mkdir()
    ca = _start_local_ca(tmp_path / "pebble", certificate_validity=15)
    fleet = Fleet(local_etcd, ca, tmp_path)
    try:
        for agent in (fleet.agent(1), fleet.agent(2)):
            agent.start()
        wait_for(lambda: all(fleet.fullchain(i) for i in (1, 2)))
        first = fleet.fullchain(1)
        # due at 2/3 of 15 s (+ up to 1/20 of jitter): version 2 everywhere within ~15 s
        wait_for(
            lambda: fleet.fullchain(1) != first and fleet.fullchain(2) == fleet.fullchain(1),
            timeout=30,
        )
        counts = count_log(ca.pebble.log_path)
        assert counts.issued == counts.orders  # one order per version, none wasted
        status = cluster_status(local_etcd.store())
        assert status.certificates[0].version is not None
        assert status.certificates[0].version >= 2
    finally:
        fleet.stop()
        ca.pebble.stop()
        ca.dns.stop()
