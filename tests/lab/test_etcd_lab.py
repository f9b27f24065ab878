"""The etcd lab: a real 3-member etcd 3.4 in namespaces, driven through the chosen client.

Clients run as their own process inside a client namespace (``ip netns exec``),
as an agent would: gRPC makes its own threads, so entering a namespace in one
thread of the test process (``netns.call_in``) would not hold for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from acmelb.lab import netns
from acmelb.lab.etcd import ETCD_BINARY, EtcdCluster, leftovers_of_this_process

from .conftest import LabFactory

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

CLIENT_TIMEOUT = 2.0

# One client operation with etcd-sdk-python (import name pyetcd): fail over across the
# endpoints (the library does not retry by itself), a deadline on every call.
CLIENT_SCRIPT = r"""
import json, sys, time
import pyetcd
args = json.loads(sys.argv[1])
eps = [pyetcd.Endpoint(url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]),
                       secure=False, time_retry=args["timeout"]) for url in args["endpoints"]]
start = time.monotonic()
client = pyetcd.MultiEndpointEtcd3Client(eps, timeout=args["timeout"], failover=True)
result = {"ok": False}
errors = []
for _ in eps:
    try:
        if args["op"] == "put":
            client.put(args["key"], args["value"])
            result = {"ok": True}
        else:
            value, _meta = client.get(args["key"])
            result = {"ok": True, "value": None if value is None else value.decode()}
        break
    except Exception as exc:
        errors.append(type(exc).__name__)
result["errors"] = errors
result["elapsed"] = time.monotonic() - start
print(json.dumps(result))
"""


def etcd_op(
    namespace: str, endpoints: list[str], op: str, key: str, value: str = ""
) -> dict[str, Any]:
    argv = [
        *netns.exec_prefix(namespace),
        sys.executable,
        "-c",
        CLIENT_SCRIPT,
        json.dumps(
            {
                "endpoints": endpoints,
                "op": op,
                "key": key,
                "value": value,
                "timeout": CLIENT_TIMEOUT,
            }
        ),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def eventually(operation: Callable[[], dict[str, Any]], timeout: float = 15.0) -> bool:
    """Retry a client operation as an agent does on its next pass, until it succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        if operation()["ok"]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(lab_available: None) -> Iterator[EtcdCluster]:
    if not os.access(ETCD_BINARY, os.X_OK):
        pytest.skip("etcd-server is not installed (./dev setup installs it)")
    started = time.monotonic()
    etcd = EtcdCluster.start(3)
    assert time.monotonic() - started < 10
    try:
        yield etcd
    finally:
        etcd.close()
        assert leftovers_of_this_process() == []


def test_three_members_are_healthy_and_a_client_namespace_puts_and_gets(
    cluster: EtcdCluster,
) -> None:
    assert cluster.healthy_members() == [0, 1, 2]
    assert cluster.endpoints == [
        "http://198.18.3.11:2379",
        "http://198.18.3.12:2379",
        "http://198.18.3.13:2379",
    ]
    client = cluster.client_namespace()
    assert cluster.attached_address(client) == "198.18.3.101"
    assert etcd_op(client, cluster.endpoints, "put", "/lab/k", "v1")["ok"]
    assert etcd_op(client, cluster.endpoints, "get", "/lab/k") == {
        "ok": True,
        "value": "v1",
        "errors": [],
        "elapsed": pytest.approx(0, abs=1.5),
    }


def test_quorum_one_member_lost_writes_go_on_two_lost_writes_fail_in_bounded_time(
    cluster: EtcdCluster,
) -> None:
    client = cluster.client_namespace()
    cluster.kill(0)
    assert cluster.pid(0) is None
    # The client may have picked the dead member first: it fails over within the same call;
    # if the dead member led, the others first elect a leader (slower on a loaded machine).
    assert eventually(lambda: etcd_op(client, cluster.endpoints, "put", "/lab/q", "one-down"))

    cluster.kill(1)
    result = etcd_op(client, cluster.endpoints, "put", "/lab/q", "no-quorum")
    assert not result["ok"]
    # At most one deadline per endpoint tried (dead ones fail at once): no hang.
    assert result["elapsed"] < 3 * CLIENT_TIMEOUT + 1

    cluster.restart(0)
    cluster.restart(1)
    cluster.wait_healthy(10)
    assert eventually(lambda: etcd_op(client, cluster.endpoints, "put", "/lab/q", "back"))
    assert etcd_op(client, cluster.endpoints, "get", "/lab/q")["value"] == "back"


def test_a_stopped_member_does_not_stop_the_cluster(cluster: EtcdCluster) -> None:
    client = cluster.client_namespace()
    cluster.stop_member(2)
    try:
        # Only the live members: a SIGSTOPped one accepts connections and answers nothing.
        assert eventually(
            lambda: etcd_op(client, cluster.endpoints[:2], "put", "/lab/s", "stopped")
        )
    finally:
        cluster.cont_member(2)
    cluster.wait_healthy(10)


def test_cut_and_heal_a_client_namespace(cluster: EtcdCluster) -> None:
    client = cluster.client_namespace()
    assert etcd_op(client, cluster.endpoints, "put", "/lab/c", "before")["ok"]
    cluster.cut(client)
    try:
        result = etcd_op(client, cluster.endpoints, "put", "/lab/c", "during")
        assert not result["ok"]
        assert result["elapsed"] < 3 * CLIENT_TIMEOUT + 1
    finally:
        cluster.heal(client)
    assert etcd_op(client, cluster.endpoints, "get", "/lab/c")["value"] == "before"


def test_a_lab_backend_attached_to_the_etcd_segment_reaches_the_members(
    cluster: EtcdCluster, lab_scenario: LabFactory
) -> None:
    lab = lab_scenario("dnat", backends=("responder",))
    b1 = lab.ns("b1")
    address = cluster.attach(b1)
    assert etcd_op(b1, cluster.endpoints, "put", "/lab/b1", address)["ok"]
    cluster.cut(b1, members=[0, 1, 2])
    try:
        assert not etcd_op(b1, cluster.endpoints[:1], "get", "/lab/b1")["ok"]
    finally:
        cluster.heal(b1)
    assert etcd_op(b1, cluster.endpoints, "get", "/lab/b1")["value"] == address
    # The backend's own network is untouched: its default route is still the LB's.
    routes = netns.run_in(b1, ["ip", "route"]).stdout
    assert "default via 198.18.1.1" in routes
    assert "198.18.3.0/24 dev etcd0" in routes
