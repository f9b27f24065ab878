"""The asyncio driver of the probe's steps: many probes as coroutines in one event loop.

``acmelb.probe`` holds the HTTP-01 fetch rules once, as steps (generators that yield
the I/O they need); its blocking driver runs them on sockets, on this host or shipped
to a remote vantage. This driver runs the very same steps on non-blocking sockets
with ``loop.sock_*`` (TLS through an ``ssl`` memory BIO), so that a fleet diagnosis
needs no thread per probe and measures exactly as the remote vantages do.

Concurrency is bounded twice: ``Limits`` caps the open probe connections in total
and per destination address (one LB address serves most names of a fleet).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from acmelb import probe

__all__ = ["Limits", "run_request_async", "run_steps"]


@dataclass
class Limits:
    """Open probe connections: at most ``total`` in all, ``per_address`` to one address."""

    total: int = 256
    per_address: int = 64
    _all: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _by_address: dict[str, asyncio.Semaphore] = field(default_factory=dict, init=False)

    def total_slot(self) -> asyncio.Semaphore:
        if self._all is None:
            self._all = asyncio.Semaphore(self.total)
        return self._all

    def address_slot(self, address: str) -> asyncio.Semaphore:
        slot = self._by_address.get(address)
        if slot is None:
            slot = self._by_address[address] = asyncio.Semaphore(self.per_address)
        return slot


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _TLS:
    """TLS over a non-blocking socket through memory BIOs, read and written with the
    loop's socket calls. A close without close_notify reads as the end (as the blocking
    driver's ``suppress_ragged_eofs``)."""

    def __init__(self, sock: socket.socket, server_hostname: str | None) -> None:
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = _client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_hostname
        )

    async def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def _more(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()

    async def handshake(self) -> str | None:
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._more()
        await self._flush()
        return self.obj.version()

    async def recv(self) -> bytes:
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._more()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    async def send(self, data: bytes) -> None:
        self.obj.write(data)
        await self._flush()


class _AsyncIO:
    """Performs one chain's I/O: one connection at a time, like the blocking driver."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.sock: socket.socket | None = None
        self.tls: _TLS | None = None
        self.held: list[asyncio.Semaphore] = []

    async def perform(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        if kind == "recv":
            return await self._recv(op[1])
        if kind == "send":
            return await self._send(op[1])
        if kind == "connect":
            return await self._connect(op[1], op[2], op[3], op[4])
        if kind == "names":
            assert self.sock is not None
            return self.sock.getsockname(), self.sock.getpeername()
        if kind == "tls":
            return await self._start_tls(op[1], op[2])
        if kind == "close":
            return self.close()
        if kind == "getaddrinfo":
            loop = asyncio.get_running_loop()
            return await loop.getaddrinfo(op[1], 80, type=socket.SOCK_STREAM)
        if kind == "tls_probe":
            return await _tls_handshake_ok(op[1], op[2], op[3], op[4])
        if kind == "chains":
            return await run_chains(op[1], op[2], op[3], self.limits)
        raise ValueError(f"unknown probe operation {kind!r}")

    async def _connect(self, family: int, address: str, port: int, timeout: float) -> None:
        self.close()
        await self._hold(address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
        except TimeoutError:
            sock.close()
            raise TimeoutError("timed out") from None
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    async def _hold(self, address: str) -> None:
        # the address first: a busy LB address must not hold slots of the total
        for slot in (self.limits.address_slot(address), self.limits.total_slot()):
            await slot.acquire()
            self.held.append(slot)

    async def _start_tls(self, server_hostname: str | None, timeout: float) -> str | None:
        assert self.sock is not None
        self.tls = _TLS(self.sock, server_hostname)
        try:
            async with asyncio.timeout(timeout):
                return await self.tls.handshake()
        except TimeoutError:
            raise TimeoutError("timed out") from None

    async def _recv(self, timeout: float) -> bytes:
        assert self.sock is not None
        try:
            async with asyncio.timeout(timeout):
                if self.tls is not None:
                    return await self.tls.recv()
                return await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        except TimeoutError:
            raise TimeoutError("timed out") from None

    async def _send(self, data: bytes) -> None:
        assert self.sock is not None
        if self.tls is not None:
            await self.tls.send(data)
        else:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock, self.tls = None, None
        while self.held:
            self.held.pop().release()


async def _tls_handshake_ok(address: str, port: int, host: str, timeout: float) -> bool:
    """After a failed plain-HTTP exchange: does this port speak TLS?"""
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(
                address,
                port,
                ssl=_client_context(),
                server_hostname=None if probe._is_ip(host) else host,
            )
    except (OSError, ssl.SSLError, ValueError, TimeoutError):
        return False
    # The handshake was the question: drop the connection without TLS's closing
    # exchange, and let the loop finish with it (a transport still shutting down when
    # the loop closes is an error on uvloop)
    writer.transport.abort()
    await asyncio.sleep(0)
    return True


async def run_steps(steps: probe.Steps, limits: Limits) -> Any:
    """Drive steps to their result with the loop's non-blocking I/O."""
    io = _AsyncIO(limits)
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await io.perform(op)
            except Exception as exc:  # the steps decide what an I/O error means
                error = exc
    finally:
        io.close()


async def run_chains(
    url: str, opts: dict[str, Any], jobs: Sequence[tuple[str, int, str, bool]], limits: Limits
) -> list[dict[str, Any]]:
    """``chain_steps`` for every job at once; results in job order."""

    async def one(job: tuple[str, int, str, bool]) -> dict[str, Any]:
        try:
            chain: dict[str, Any] = await run_steps(
                probe.chain_steps(url, job[0], opts, job[3]), limits
            )
            return chain
        except Exception as exc:  # a probe bug must not lose the other results
            return probe.failed_chain(url, exc)

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def run_request_async(request: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """``probe.run_request`` in this loop: the same request, the same result."""
    result: dict[str, Any] = await run_steps(probe.request_steps(request), limits)
    return result
