"""Network-namespace primitives: create, enter, list, delete, and the processes inside.

Namespaces are named ``alb<4 hex>-<role>`` (at most 15 characters), so a lab's
namespaces are found by prefix and never collide with anything else on the
host. Commands run in a namespace through ``ip netns exec``, which also
bind-mounts ``/etc/netns/<ns>/hosts`` over ``/etc/hosts``: the per-vantage
name resolution of the lab.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from acmelb.errors import LabError

NETNS_RUN_DIR = Path("/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")
LAB_NAMESPACE = re.compile(r"^alb[0-9a-f]{4}-[a-z0-9]{1,8}$")
_CLONE_NEWNET = 0x40000000

T = TypeVar("T")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables): run it with sudo")
    if shutil.which("ip") is None:
        raise LabError("the lab needs iproute2's `ip` (Debian: apt-get install iproute2)")


def exec_prefix(namespace: str) -> list[str]:
    return ["ip", "netns", "exec", namespace]


def ip(args: Sequence[str], *, namespace: str | None = None, batch: str | None = None) -> None:
    """Run ``ip`` (``-n NS`` when given; ``-batch -`` fed from ``batch``); raise LabError."""
    argv = ["ip"]
    if namespace:
        argv += ["-n", namespace]
    if batch is not None:
        argv += ["-batch", "-"]
    argv += list(args)
    proc = subprocess.run(argv, input=batch, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LabError(f"{' '.join(argv)}: {message[-1] if message else 'failed'}")


def run_in(
    namespace: str, argv: Sequence[str], *, input: str | None = None, timeout: float | None = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``namespace`` and return its result (never raises on exit code)."""
    return subprocess.run(
        [*exec_prefix(namespace), *argv],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def call_in(namespace: str, function: Callable[[], T]) -> T:
    """Call ``function`` in a thread that has entered ``namespace``'s network stack.

    setns(2) changes only the calling thread, so a throw-away thread does the
    work: sockets it opens and ``/proc/sys/net`` and ``/proc/thread-self/net``
    it reads belong to the namespace, at no process-start cost.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_call() -> None:
        try:
            fd = os.open(NETNS_RUN_DIR / namespace, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise LabError(f"cannot enter namespace {namespace}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            outcome.append(function())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=enter_and_call, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def set_sysctls(namespace: str, values: dict[str, str]) -> None:
    """Write ``net.*`` sysctls of ``namespace``; keys missing from the kernel are skipped."""

    def write() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            if path.exists():
                path.write_text(value)

    call_in(namespace, write)


def listening_ports(namespace: str) -> set[int]:
    """TCP ports with a listening socket (IPv4 or IPv6) in ``namespace``."""

    def read() -> set[int]:
        ports: set[int] = set()
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/thread-self/net/{table}").read_text().splitlines()[1:]:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports

    return call_in(namespace, read)


def existing() -> list[str]:
    """All namespaces that ``ip netns`` knows, by name."""
    with contextlib.suppress(FileNotFoundError):
        return sorted(entry.name for entry in NETNS_RUN_DIR.iterdir())
    return []


def lab_namespaces(prefix: str = "alb") -> list[str]:
    """Namespaces that look like the lab's (``alb<4 hex>-<role>``), filtered by ``prefix``."""
    return [name for name in existing() if LAB_NAMESPACE.match(name) and name.startswith(prefix)]


def pids_in(namespace: str) -> list[int]:
    """Processes whose network namespace is ``namespace``."""
    proc = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
    )
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def add(namespace: str) -> None:
    if len(namespace) > 15:
        raise LabError(f"namespace name {namespace!r} is longer than 15 characters")
    ip(["netns", "add", namespace])


def delete(namespace: str) -> None:
    """Kill what still runs inside, then delete the namespace and its /etc/netns files."""
    for pid in pids_in(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if (NETNS_RUN_DIR / namespace).exists():
        with contextlib.suppress(LabError):
            ip(["netns", "delete", namespace])
    shutil.rmtree(NETNS_ETC_DIR / namespace, ignore_errors=True)


def write_etc(namespace: str, filename: str, text: str) -> None:
    """A file that ``ip netns exec`` mounts over ``/etc/<filename>`` in ``namespace``."""
    directory = NETNS_ETC_DIR / namespace
    directory.mkdir(parents=True, exist_ok=True)
    (directory / filename).write_text(text)


def wait_listening(
    namespace: str, ports: set[int], deadline: float, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Wait until every port in ``ports`` listens in ``namespace``; False on timeout/death."""
    while True:
        if ports <= listening_ports(namespace):
            return True
        if time.monotonic() >= deadline or not alive():
            return False
        time.sleep(0.005)
