"""What every lab records of itself: its processes and its state file.

The load-balancer lab (``topology``) and the etcd lab (``etcd``) both start
processes through ``ip netns exec`` in a new session and write them, PID and
start time, into a ``state.json`` of their own; any process can then find
them again and stop exactly those (a recycled PID has another start time).
This module is the ground floor of the lab package: it imports no other lab
module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class ProcessRecord:
    """A process the lab started: enough to find it again, and to not kill a stranger."""

    role: str
    what: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str

    def is_running(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def stop_processes(
    records: Sequence[ProcessRecord], popens: Mapping[int, subprocess.Popen[bytes]]
) -> None:
    """SIGTERM the recorded processes that are still ours, then SIGKILL after 2 s.

    ``popens``: the ones this process started itself (by PID), reaped on the way.
    """
    running = [record for record in records if record.is_running()]
    for record in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGTERM)
            os.kill(record.pid, signal.SIGCONT)  # a stopped process handles SIGTERM only then
    deadline = time.monotonic() + 2.0
    while running and time.monotonic() < deadline:
        for record in running:
            if record.pid in popens:
                popens[record.pid].poll()  # reap our own children
        running = [record for record in running if record.is_running()]
        if running:
            time.sleep(0.01)
    for record in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
    for popen in popens.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(2)


def load_state_fields(path: Path) -> dict[str, Any]:
    """The fields of the state dataclass saved in ``path``, its ``processes`` as records."""
    data: dict[str, Any] = json.loads(path.read_text())
    data["processes"] = [ProcessRecord(**record) for record in data.get("processes", [])]
    return data


def save_state(state: Any, path: Path) -> None:
    """Write the state dataclass ``state`` to ``path`` as JSON, atomically (then renamed)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)
