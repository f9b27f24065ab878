"""The agent as systemd runs it (issue 24), on a real etcd and Pebble over loopback.

``acmelb agent --log-format json`` under a real notify socket (a datagram socket this
test binds, passed as ``$NOTIFY_SOCKET``, with a 0.4 s watchdog): READY=1 only once port
80 answers; WATCHDOG=1 keeps coming; an issuance, a failing certificate added by a
reload (SIGHUP), a broken file refused by the next reload, and STOPPING=1 on SIGTERM.
A client polls the responder all along and never sees it fail; every line the agent
writes is a JSON object with the documented fields.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acmelb.cluster.secrets import generate_key_file
from tests.cluster.conftest import LocalEtcd
from tests.conftest import LocalCA

pytestmark = pytest.mark.timeout(240)
FIELDS = {"time", "level", "member", "certificate", "event", "message"}


def config_text(etcd: LocalEtcd, ca: LocalCA, state: Path, certificates: str) -> str:
    return f"""member = "ops1"
state_dir = "{state}"
store = "{etcd.url}"
http_port = {ca.http_port}
http_addresses = ["127.0.0.1"]
lease_ttl = 3
check_interval = 1
retry_schedule = [30]
[ca]
directory = "{ca.directory_url}"
ca_bundle = "{ca.ca_bundle}"
[self_check]
mode = "off"
{certificates}"""


ONE = '[[certificate]]\nnames = ["ops-one.test"]\n'
# added by the reload: one that issues, one that fails (a profile the CA does not offer)
MORE = (
    '[[certificate]]\nnames = ["ops-two.test"]\n'
    '[[certificate]]\nnames = ["ops-bad.test"]\nprofile = "no-such-profile"\n'
)


class NotifySocket:
    """What a service manager receives: each datagram with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.on_ready: Callable[[], object] | None = None
        self.ready_saw: list[object] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.receive, daemon=True)
        self.thread.start()

    def receive(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            if fields.get("READY") == "1" and self.on_ready is not None:
                self.ready_saw.append(self.on_ready())  # what port 80 does at that moment
            self.messages.append((time.monotonic(), fields))

    def count(self, key: str) -> int:
        return sum(1 for _, fields in self.messages if key in fields)

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)
        self.sock.close()


def challenge_status(port: int) -> object:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/.well-known/acme-challenge/x", timeout=2)
    except urllib.error.HTTPError as answer:
        return answer.code
    except OSError as exc:
        return type(exc).__name__
    return 200


class Poller:
    """A client asking port 80 every 20 ms: every request must get an HTTP answer."""

    def __init__(self, port: int) -> None:
        self.port, self.answers, self.failures = port, 0, list[object]()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        while not self.done.wait(0.02):
            got = challenge_status(self.port)
            if isinstance(got, int):  # 404, or 200 once it answers the account statelessly
                self.answers += 1
            else:
                self.failures.append(got)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_agent_under_systemd_notify_json_logs_and_reload(
    local_etcd: LocalEtcd, local_ca: LocalCA, tmp_path: Path, notify: NotifySocket
) -> None:
    key, config, state = tmp_path / "store.key", tmp_path / "agent.toml", tmp_path / "state"
    generate_key_file(key)
    config.write_text(config_text(local_etcd, local_ca, state, ONE))
    notify.on_ready = lambda: challenge_status(local_ca.http_port)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    argv = [sys.executable, "-m", "acmelb", "agent", "--config", str(config)]
    agent = subprocess.Popen(
        [*argv, "--store-key-file", str(key), "--log-format", "json"],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(agent.stderr or []), daemon=True)
    reader.start()
    poller: Poller | None = None
    try:
        wait_until(lambda: notify.count("READY"), 30, "READY=1")
        poller = Poller(local_ca.http_port)
        live = state / "live"
        wait_until(lambda: (live / "ops-one.test" / "fullchain.pem").exists(), 60, "issuance")
        config.write_text(config_text(local_etcd, local_ca, state, ONE + MORE))
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: (live / "ops-two.test" / "fullchain.pem").exists(), 60, "the added")
        wait_until(lambda: any('"renewal-failed"' in line for line in lines), 30, "a failure")
        config.write_text("member = [broken\n")
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: any('"reload-refused"' in line for line in lines), 10, "refusal")
        time.sleep(1.0)  # the old configuration keeps working (polled meanwhile)
        assert agent.poll() is None
        poller.stop()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if poller is not None:
            poller.stop()
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        reader.join(5)
    # systemd's view: ready only once port 80 answered, alive throughout, then stopping
    assert notify.ready_saw[0] == 404, notify.ready_saw
    assert notify.count("READY") >= 3  # at start, and after each of the two reloads
    assert notify.count("RELOADING") == 2 and notify.count("STOPPING") == 1
    assert notify.count("WATCHDOG") >= 10, notify.messages
    # the responder answered every request during the reloads
    assert poller.answers > 50 and not poller.failures, poller.failures[:5]
    # every line is an event with the documented fields; failures name what and why
    logged = events(lines)
    assert logged and all(set(event) >= FIELDS for event in logged), lines[:3]
    by_name = {event["event"]: event for event in logged}
    assert {"started", "declared", "stored", "installed", "reloaded", "stopped"} <= set(by_name)
    failed = by_name["renewal-failed"]
    assert failed["level"] == "error" and failed["certificate"] == "ops-bad.test"
    assert "no-such-profile" in failed["reason"]
    assert by_name["reloaded"]["added"] == ["ops-bad.test", "ops-two.test"]
    assert (
        by_name["reload-refused"]["level"] == "error"
        and "agent.toml" in by_name["reload-refused"]["reason"]
    )
    assert not any("Traceback" in line for line in lines)


def test_an_agent_started_while_its_store_is_away_joins_when_it_answers(
    local_etcd: LocalEtcd, local_ca: LocalCA, tmp_path: Path
) -> None:
    """Started with etcd frozen (SIGSTOP: every request times out), the agent serves port
    80 and is READY; when etcd answers again it proves the key, declares its certificate
    and installs it, without a restart."""
    from acmelb.cluster.agent import Agent
    from acmelb.cluster.secrets import SecretBox
    from tests.cluster.test_agent_local import agent_config

    key = tmp_path / "store.key"
    generate_key_file(key)
    config = agent_config(local_etcd, local_ca, tmp_path / "late", "late1", ("late.test",))
    local_etcd.process.send_signal(signal.SIGSTOP)
    agent = Agent(config, SecretBox.from_file(key))
    try:
        agent.start()
        assert not agent.joined and not agent.state.store_ok
        assert challenge_status(local_ca.http_port) == 404  # port 80 answers meanwhile
        local_etcd.process.send_signal(signal.SIGCONT)
        wait_until(lambda: agent.joined, 30, "the late join")
        live = tmp_path / "late" / "live" / "late.test" / "fullchain.pem"
        wait_until(live.exists, 60, "the certificate installed after the join")
    finally:
        local_etcd.process.send_signal(signal.SIGCONT)
        agent.stop()
