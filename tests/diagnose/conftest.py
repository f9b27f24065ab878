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
        s = Server(handler, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


@pytest.fixture
def blackhole() -> Iterator[FullBacklog]:
    fb = FullBacklog()
    yield fb
    fb.close()
