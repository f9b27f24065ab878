"""Fixtures for the diagnosis tests: real servers on 127.x, cleaned up after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.diagnose.servers import FullBacklog, Handler, Server


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(handler: Handler, **kw: Any) -> Server:
        try:
            s = Server(handler, **kw)
        except PermissionError:
            pytest.skip(
                "a CA connects to port 80: these servers need root (or a low "
                "net.ipv4.ip_unprivileged_port_start)"
            )
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture
def blackhole() -> Iterator[FullBacklog]:
    try:
        fb = FullBacklog()
    except PermissionError:
        pytest.skip("binding port 80 needs root")
    yield fb
    fb.close()
