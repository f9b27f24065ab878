"""The built-in HTTP-01 challenge responder (asyncio, no framework).

It answers exactly ``GET|HEAD /.well-known/acme-challenge/<token>`` with the
key authorization as ``text/plain`` and no trailing newline, an explicit 404
for anything else under that path or elsewhere, 405 for other methods and 400
for malformed requests. Requests are parsed with hard limits and timeouts so
that slow or hostile clients cannot pin it or grow its memory.

Two answer sources:

* ``ExactTokens``: a mutable token -> key authorization map (``--token/--key``
  or the pending tokens of running issuances);
* ``Stateless``: any base64url token answers ``token.THUMBPRINT`` (RFC 8555
  §8.1 key authorization with a fixed account thumbprint).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# RFC 8555 §8.3: a token is base64url without padding; Let's Encrypt uses 43 chars.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")

MAX_HEAD_BYTES = 16 * 1024  # request line + headers
REQUEST_TIMEOUT = 10.0  # seconds allowed to send one complete request head
IDLE_TIMEOUT = 5.0  # keep-alive idle time between requests
LISTEN_BACKLOG = 4096  # Pebble's VA opens 3 connections per challenge at once


class AnswerSource(Protocol):
    def answer(self, token: str) -> str | None:
        """The key authorization for ``token``, or None for 404."""


class ExactTokens:
    """Answers only the tokens it holds; safe to change while serving."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._tokens: dict[str, str] = dict(pairs)

    def add(self, token: str, key_authorization: str) -> None:
        self._tokens[token] = key_authorization

    def remove(self, token: str) -> None:
        self._tokens.pop(token, None)

    def answer(self, token: str) -> str | None:
        return self._tokens.get(token)

    def tokens(self) -> set[str]:
        return set(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)


class PendingDirectory:
    """The pending tokens of running issuances: one file per token in a directory.

    ``acmelb issue --solver serve`` writes ``STATE/pending/<token>`` and removes it
    when done; a long-running ``acmelb serve --pending`` answers from there. The
    token is matched against TOKEN_PATTERN before it becomes a file name, so
    no request can name a path outside the directory.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def answer(self, token: str) -> str | None:
        if not TOKEN_PATTERN.fullmatch(token):
            return None
        try:
            with open(os.path.join(self.directory, token), encoding="ascii") as handle:
                key_authorization = handle.read(512)
        except (OSError, UnicodeDecodeError):
            return None
        return key_authorization if key_authorization.startswith(token + ".") else None


class Stateless:
    """Any well-formed token answers ``token.thumbprint``."""

    def __init__(self, thumbprint: str) -> None:
        if not TOKEN_PATTERN.fullmatch(thumbprint):
            raise ValueError("a thumbprint is base64url text (43 characters for SHA-256)")
        self.thumbprint = thumbprint

    def answer(self, token: str) -> str | None:
        return f"{token}.{self.thumbprint}"


class TokensThenStateless:
    """The exact tokens first; any other token as ``token.thumbprint`` once the account's
    thumbprint is known (a cluster agent cut off from its store still answers for its
    account: a key authorization is public, and valid only with the account key)."""

    def __init__(self, tokens: ExactTokens) -> None:
        self.tokens = tokens
        self.stateless: Stateless | None = None

    def answer(self, token: str) -> str | None:
        exact = self.tokens.answer(token)
        if exact is not None or self.stateless is None:
            return exact
        return self.stateless.answer(token)


@dataclass(frozen=True)
class RequestLog:
    """One line of the request log; the CLI decides how to show it."""

    client: str
    method: str
    target: str
    host: str
    user_agent: str
    status: int
    answer: str  # "key authorization", "unknown token", ...


LogSink = Callable[[RequestLog], None]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


def _response(status: int, body: bytes, *, head_only: bool, close: bool, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Server: acmelb\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{extra}"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def _printable(raw: bytes, limit: int = 200) -> str:
    """Log-safe text: hostile input must not inject newlines or control bytes."""
    text = raw[:limit].decode("latin-1")
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)


class _Request(NamedTuple):
    """A parsed request head: the raw method and target, their log-safe text, and the
    log-safe Host and User-Agent; ``close``: no keep-alive after the answer."""

    method_raw: bytes
    target_raw: bytes
    method: str
    target: str
    host: str
    agent: str
    close: bool


class _ChallengeProtocol(asyncio.Protocol):
    """One connection: parse request heads one at a time, keep-alive aware."""

    def __init__(self, source: AnswerSource, log: LogSink | None) -> None:
        self._source = source
        self._log = log
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0  # loop time when the connection times out
        # Flow control: a client that sends requests but does not read the answers
        # must not make us buffer them without bound; stop reading until it does.
        self._paused = False

    # -- connection lifecycle -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._arm(REQUEST_TIMEOUT)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def _arm(self, seconds: float) -> None:
        # One timer per connection, moved lazily: a request only sets the deadline, and
        # the timer, when it fires early, sleeps again until the deadline (no cancel and
        # new timer per request).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        if self._timer is not None and deadline < self._deadline:
            self._timer.cancel()  # a shorter limit than the one armed: re-arm now
            self._timer = None
        self._deadline = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._on_timeout)

    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()
            self._process()

    def _on_timeout(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._deadline:  # the deadline moved since: wait until it
            self._timer = loop.call_at(self._deadline, self._on_timeout)
            return
        if self._paused:
            self._transport.abort()  # it does not read: nothing more to flush to it
            return
        if self._buffer:
            self._transport.write(_response(408, b"request timeout\n", head_only=False, close=True))
        self._transport.close()

    # -- parsing --------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._process()

    def _process(self) -> None:
        while self._transport is not None and not self._paused:
            end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._reject(431, "request head too large")
                return
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            self._handle(head)
            if self._transport is not None and not self._transport.is_closing():
                self._arm(REQUEST_TIMEOUT if self._buffer else IDLE_TIMEOUT)

    def _reject(self, status: int, why: str, method: str = "?", target: str = "?") -> None:
        assert self._transport is not None
        self._emit(method, target, "", "", status, why)
        self._transport.write(_response(status, why.encode() + b"\n", head_only=False, close=True))
        self._transport.close()
        self._buffer.clear()

    def _handle(self, head: bytes) -> None:
        """Answer the request whose head (up to the blank line) is ``head``."""
        request = self._parse(head)
        if request is not None:
            self._answer(request)

    def _parse(self, head: bytes) -> _Request | None:
        """The request of ``head``; None if it was rejected (malformed, unsupported)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            # HTTP/0.9 ("GET /path") and garbage alike: there is no safe answer.
            self._reject(400, "malformed request line", target=_printable(lines[0]))
            return None
        method_raw, target_raw, version = parts
        method, target = _printable(method_raw, 16), _printable(target_raw)
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            self._reject(
                505 if version.startswith(b"HTTP/") else 400,
                "unsupported HTTP version",
                method,
                target,
            )
            return None
        headers = self._headers(lines[1:], method, target)
        if headers is None:
            return None
        if b"content-length" in headers or b"transfer-encoding" in headers:
            # GET/HEAD carry no body here; refusing avoids request smuggling games.
            self._reject(400, "request bodies are not accepted", method, target)
            return None
        connection = headers.get(b"connection", b"").lower()
        return _Request(
            method_raw,
            target_raw,
            method,
            target,
            host=_printable(headers.get(b"host", b""), 100),
            agent=_printable(headers.get(b"user-agent", b""), 100),
            close=connection == b"close"
            or (version == b"HTTP/1.0" and connection != b"keep-alive"),
        )

    def _headers(self, lines: list[bytes], method: str, target: str) -> dict[bytes, bytes] | None:
        """The header fields by lower-case name; None if a malformed one was rejected."""
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                self._reject(400, "malformed header", method, target)
                return None
            headers[name.lower()] = value.strip()
        return headers

    def _answer(self, request: _Request) -> None:
        """405 for methods other than GET and HEAD; the key authorization of a known
        token; 404 for an unknown token or any other path."""
        if request.method_raw not in (b"GET", b"HEAD"):
            self._send(
                405,
                b"method not allowed\n",
                request.method,
                request.target,
                request.host,
                request.agent,
                "method not allowed",
                close=True,
                extra="Allow: GET, HEAD\r\n",
            )
            return
        path = request.target_raw.split(b"?", 1)[0]
        token = ""
        if path.startswith(CHALLENGE_PREFIX.encode()):
            token = path[len(CHALLENGE_PREFIX) :].decode("latin-1")
        if token and TOKEN_PATTERN.fullmatch(token):
            key_authorization = self._source.answer(token)
            if key_authorization is not None:
                status, body, answer = 200, key_authorization.encode("ascii"), "key authorization"
            else:
                status, body, answer = 404, b"unknown token\n", "unknown token"
        else:
            status, body, answer = 404, b"not found\n", "not a challenge path"
        self._send(
            status,
            body,
            request.method,
            request.target,
            request.host,
            request.agent,
            answer,
            close=request.close,
            head_only=request.method_raw == b"HEAD",
        )

    def _send(
        self,
        status: int,
        body: bytes,
        method: str,
        target: str,
        host: str,
        agent: str,
        answer: str,
        *,
        close: bool,
        head_only: bool = False,
        extra: str = "",
    ) -> None:
        assert self._transport is not None
        # Log first: whoever reads the answer may then rely on the log line existing.
        self._emit(method, target, host, agent, status, answer)
        self._transport.write(
            _response(status, body, head_only=head_only, close=close, extra=extra)
        )
        if close:
            self._transport.close()
            self._buffer.clear()

    def _emit(
        self, method: str, target: str, host: str, agent: str, status: int, answer: str
    ) -> None:
        if self._log is not None:
            self._log(RequestLog(self._peer(), method, target, host, agent, status, answer))

    def _peer(self) -> str:
        """The client as ``ADDR:PORT`` (``[ADDR]:PORT``), asked for only when logging."""
        peer = self._transport.get_extra_info("peername") if self._transport else None
        if not peer:
            return "?"
        return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


def _listen_sockets(addresses: Sequence[str], port: int) -> list[socket.socket]:
    """Bind every address; an empty list means all IPv4 and (if present) all IPv6."""
    wanted = list(addresses) or ["0.0.0.0", "::"]
    sockets: list[socket.socket] = []
    try:
        for address in wanted:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((address.strip("[]"), port))
            except OSError as exc:
                sock.close()
                if not addresses and family == socket.AF_INET6:
                    continue  # no IPv6 on this host: serving IPv4 alone is fine by default
                raise OSError(
                    exc.errno, f"cannot listen on {address} port {port}: {exc.strerror}"
                ) from exc
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            sockets.append(sock)
            port = port or sock.getsockname()[1]  # port 0: same ephemeral port everywhere
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Responder:
    """Serve challenges on an event loop; use ``serve_forever`` or ``ResponderThread``."""

    def __init__(
        self,
        source: AnswerSource,
        *,
        addresses: Sequence[str] = (),
        port: int = 80,
        log: LogSink | None = None,
    ) -> None:
        self.source = source
        self.addresses = tuple(addresses)
        self.port = port
        self.log = log
        self._servers: list[asyncio.Server] = []
        self.bound: list[tuple[str, int]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in _listen_sockets(self.addresses, self.port):
            server = await loop.create_server(
                lambda: _ChallengeProtocol(self.source, self.log), sock=sock
            )
            self._servers.append(server)
            host, port = sock.getsockname()[:2]
            self.bound.append((host, port))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()


class ResponderThread:
    """Run a Responder in a background thread (the standalone solver's server)."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="acmelb-responder", daemon=True
        )

    def __enter__(self) -> ResponderThread:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.responder.start(), self._loop)
        try:
            future.result(timeout=10)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.responder.close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
