"""The notify protocol and the log formats, piece by piece (the whole agent under systemd's
eyes is tests/cluster/test_agent_operations.py)."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from acmelb.cli.logs import HumanFormatter, JournalFormatter, JsonFormatter
from acmelb.cluster.events import AgentLog
from acmelb.cluster.sdnotify import Notifier


def record_of(emit: str, **fields: object) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logger = logging.getLogger(f"acmelb.agent.test-formats.{emit}")
    logger.propagate = False
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    getattr(AgentLog("m1", logger), emit)("renewal-failed", "renewal of a.test failed: x", **fields)
    return captured[0]


def test_json_lines_carry_the_documented_fields() -> None:
    line = JsonFormatter().format(record_of("error", certificate="a.test", reason="x"))
    event = json.loads(line)
    assert event["level"] == "error" and event["member"] == "m1"
    assert event["certificate"] == "a.test" and event["event"] == "renewal-failed"
    assert event["reason"] == "x" and event["time"].endswith("Z")
    assert "\n" not in line


def test_a_record_of_another_library_is_an_event_too() -> None:
    record = logging.LogRecord("grpc", logging.WARNING, __file__, 1, "slow\nthing", None, None)
    event = json.loads(JsonFormatter().format(record))
    assert event["event"] == "log" and event["logger"] == "grpc" and event["level"] == "warning"
    assert HumanFormatter().format(record).endswith("WARNING grpc: slow thing")  # one line


def test_human_and_journal_lines() -> None:
    record = record_of("warning", certificate="a.test")
    assert " WARNING acmelb agent[m1]: renewal of a.test failed: x" in HumanFormatter().format(
        record
    )
    assert JournalFormatter().format(record) == "<4>acmelb agent[m1]: renewal of a.test failed: x"


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_datagrams_reach_the_socket(tmp_path: Path, abstract: bool) -> None:
    name = f"@acmelb-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:] if abstract else name)
        sock.settimeout(2)
        notifier = Notifier(name, watchdog_usec=2_000_000)
        assert notifier.ready("serving") and notifier.watchdog() and notifier.stopping()
        got = [sock.recv(1024).decode() for _ in range(3)]
    assert got[0].startswith("READY=1\nSTATUS=serving\nMAINPID=")
    assert got[1:] == ["WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]
    assert notifier.watchdog_interval == 1.0


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier.from_environment()
    assert not notifier.enabled and not notifier.ready("x") and not notifier.watchdog()
    # a watchdog meant for another process is not ours to pet
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.from_environment().watchdog_interval is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.watchdog_interval == 0.5
    assert not notifier.watchdog()  # the socket is not there: never an exception
