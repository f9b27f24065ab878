"""The systemd notify protocol (sd_notify(3)), with the standard library only.

A unit of ``Type=notify`` learns from datagrams sent to ``$NOTIFY_SOCKET`` that the
service is ready (``READY=1``), reloading, stopping, and alive (``WATCHDOG=1``, at least
once per ``WatchdogSec``, which systemd passes as ``$WATCHDOG_USEC``). Without the
variable (started by hand, in tests, in the lab) every call does nothing, so no systemd
is needed at run time. The python-systemd bindings would need libsystemd; the protocol
is one datagram, and a send that fails must never stop the agent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    """Tells the service manager (if any) how the agent is doing."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls) -> Notifier:
        """The manager's socket and watchdog as systemd passes them; a watchdog meant
        for another process (``$WATCHDOG_PID``) is not ours to pet."""
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 else None
        if pid and pid != str(os.getpid()):
            watchdog = None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to pet the watchdog: half its period, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2e6

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False if there is no manager or it failed."""
        if self.address is None:
            return False
        # "@name" is a socket in the abstract namespace (a leading NUL byte)
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        payload = "\n".join(assignments).encode()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(payload, target)
            return True
        return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.watchdog_usec is not None and self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")
