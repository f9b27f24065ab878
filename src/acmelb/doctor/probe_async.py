"""The asyncio driver of the probe's steps: many probes as coroutines in one event loop.

``acmelb.doctor.probe`` holds the HTTP-01 fetch rules once, as steps (generators that yield
the I/O they need); its blocking driver runs them on sockets, on this host or shipped
to a remote vantage. This driver runs the very same steps on the loop's own
connections (``create_connection`` with a small protocol that keeps what arrives for
the steps' next read; TLS through an ``ssl`` memory BIO), so that a fleet diagnosis
needs no thread per probe and measures exactly as the remote vantages do. (The
loop's ``sock_*`` calls cost a fleet about 7% more CPU: uvloop's ``sock_connect`` asks
its thread pool's ``getaddrinfo`` even for an IP address, and every wait re-registers
the socket with epoll.)

Concurrency is bounded twice: ``Limits`` caps the open probe connections in total
and per destination address (one LB address serves most names of a fleet).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from acmelb.doctor import probe

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


class _Connection(asyncio.Protocol):
    """One probe connection as a protocol of the loop's own transport (in C on uvloop):
    received bytes wait here for the steps' next ``recv``, which arms a timer only when
    nothing has arrived yet. At most ``_HIGH_WATER`` bytes are held before reading
    pauses, so a server that sends without end fills nothing but the steps' limits."""

    _HIGH_WATER = 256 * 1024

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ended = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self._HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def eof_received(self) -> bool:
        self.ended = True
        self._wake()
        return False  # the transport closes: the steps read no more after the end

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if exc is not None and self.error is None:
            self.error = _plain_error(exc)
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def recv(self, timeout: float | None) -> bytes:
        """The bytes received since the last call (b"" at the end), or the connection's
        error, or TimeoutError after ``timeout`` seconds without a byte."""
        if not self.buffer and not self.ended:
            await self._wait(timeout)
        if self.buffer:
            data = bytes(self.buffer)
            self.buffer.clear()
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            return data
        if self.error is not None:
            raise self.error
        return b""

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def send(self, data: bytes) -> None:
        """Queue ``data`` (the kernel takes a request at once). After the server's end
        the bytes go nowhere, as a blocking send to a half-closed socket succeeds; the
        next ``recv`` says what came back."""
        if self.error is not None:
            raise self.error
        if self.ended or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("timed out"))


def _plain_error(exc: BaseException) -> BaseException:
    """An OSError as a blocking socket raises it (the loops reword the text: "Connect
    call failed (...)"), so that both drivers record the same error."""
    if isinstance(exc, OSError) and exc.errno:
        return type(exc)(exc.errno, os.strerror(exc.errno))
    return exc


class _TLS:
    """TLS over a probe connection through memory BIOs. A close without close_notify
    reads as the end (as the blocking driver's ``suppress_ragged_eofs``)."""

    def __init__(self, conn: _Connection, server_hostname: str | None) -> None:
        self.conn = conn
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = _client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_hostname
        )

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.conn.send(data)

    async def _more(self) -> None:
        data = await self.conn.recv(None)  # the caller's timeout bounds the wait
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
                self._flush()
                await self._more()
        self._flush()
        return self.obj.version()

    async def recv(self) -> bytes:
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._flush()
                await self._more()
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""

    def send(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()


class _AsyncIO:
    """Performs one chain's I/O: one connection at a time, like the blocking driver."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.conn: _Connection | None = None
        self.tls: _TLS | None = None
        self.held: list[asyncio.Semaphore] = []

    async def perform(self, op: tuple[Any, ...]) -> Any:
        kind = op[0]
        if kind == "recv":
            return await self._recv(op[1])
        if kind == "send":
            return self._send(op[1])
        if kind == "connect":
            return await self._connect(op[1], op[2], op[3], op[4])
        if kind == "names":
            transport = self._connection().transport
            assert transport is not None
            return transport.get_extra_info("sockname"), transport.get_extra_info("peername")
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

    def _connection(self) -> _Connection:
        assert self.conn is not None
        return self.conn

    async def _connect(self, family: int, address: str, port: int, timeout: float) -> None:
        self.close()
        await self._hold(address)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _transport, self.conn = await loop.create_connection(
                    _Connection, address, port, family=family
                )
        except TimeoutError:
            raise TimeoutError("timed out") from None
        except OSError as exc:
            raise _plain_error(exc) from None

    async def _hold(self, address: str) -> None:
        # the address first: a busy LB address must not hold slots of the total
        for slot in (self.limits.address_slot(address), self.limits.total_slot()):
            await slot.acquire()
            self.held.append(slot)

    async def _start_tls(self, server_hostname: str | None, timeout: float) -> str | None:
        self.tls = _TLS(self._connection(), server_hostname)
        try:
            async with asyncio.timeout(timeout):
                return await self.tls.handshake()
        except TimeoutError:
            raise TimeoutError("timed out") from None

    async def _recv(self, timeout: float) -> bytes:
        if self.tls is None:
            return await self._connection().recv(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self.tls.recv()
        except TimeoutError:
            raise TimeoutError("timed out") from None

    def _send(self, data: bytes) -> None:
        if self.tls is not None:
            self.tls.send(data)
        else:
            self._connection().send(data)

    def close(self) -> None:
        if self.conn is not None:
            if self.conn.transport is not None:
                self.conn.transport.abort()  # as a socket's close: at once, nothing flushed
            self.conn, self.tls = None, None
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

    if len(jobs) <= 1:  # nothing to run at the same time: no task
        return [await one(job) for job in jobs]
    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def run_request_async(request: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """``probe.run_request`` in this loop: the same request, the same result."""
    result: dict[str, Any] = await run_steps(probe.request_steps(request), limits)
    return result
