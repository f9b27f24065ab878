"""Real little servers on 127.x addresses for probe and diagnosis tests.

Each server listens on its own random 127.a.b.c address, port 80 (the port a
CA uses; we run as root), and behaves in one way: answer, redirect, close,
reset, hang, speak TLS, demand a PROXY v1 header.  Nothing here leaves the
loopback range.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[socket.socket, bytes], None]

KEYAUTH_TOKEN = "tok_" + "T" * 39  # 43 characters, like a real token
THUMB = "A" * 43
OTHER_THUMB = "B" * 43
KEYAUTH = f"{KEYAUTH_TOKEN}.{THUMB}"


def loop_address() -> str:
    """A random 127.x.y.z address (x in 100..199: away from what others use)."""
    return f"127.{random.randint(100, 199)}.{random.randint(0, 255)}.{random.randint(2, 250)}"


def http_response(
    status: int, body: bytes | str = b"", headers: dict[str, str] | None = None, reason: str = "X"
) -> bytes:
    if isinstance(body, str):
        body = body.encode()
    hdrs = {"Content-Length": str(len(body)), "Connection": "close"}
    hdrs.update(headers or {})
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    return head.encode() + b"\r\n" + body


def read_request(conn: socket.socket, timeout: float = 2.0) -> bytes:
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


class Server:
    """A threaded TCP server; ``handler(conn, request)`` decides what happens."""

    def __init__(
        self,
        handler: Handler,
        address: str | None = None,
        port: int = 80,
        backlog: int = 64,
        read_first: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address or loop_address()
        self.port = port
        self.handler = handler
        self.read_first = read_first
        self.tls = tls
        self.requests: list[bytes] = []
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.address, port))
        self.port = self.sock.getsockname()[1]  # port 0: the one the kernel chose
        self.sock.listen(backlog)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    return
            request = read_request(conn) if self.read_first else b""
            self.requests.append(request)
            self.handler(conn, request)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop = True
        # shutdown() wakes the thread blocked in accept(); closing alone would leave it
        # blocked on a file descriptor number that the next test's listening socket
        # reuses, and the old handler would then answer that test's connections.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self.sock.close()


# -- behaviours -------------------------------------------------------------------------


def answer(status: int, body: bytes | str = b"", headers: dict[str, str] | None = None) -> Handler:
    def h(conn: socket.socket, _req: bytes) -> None:
        conn.sendall(http_response(status, body, headers))

    return h


def by_path(routes: dict[str, bytes], default: bytes) -> Handler:
    def h(conn: socket.socket, req: bytes) -> None:
        path = req.split(b" ", 2)[1].decode() if req.count(b" ") >= 2 else "/"
        conn.sendall(routes.get(path, default))

    return h


def close_at_once(conn: socket.socket, _req: bytes) -> None:
    conn.close()


def reset(conn: socket.socket, _req: bytes) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def hang(seconds: float = 3.0) -> Handler:
    def h(conn: socket.socket, _req: bytes) -> None:
        time.sleep(seconds)

    return h


def chunked(body: bytes, headers: dict[str, str] | None = None) -> Handler:
    def h(conn: socket.socket, _req: bytes) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn.sendall(f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode())
        for i in range(0, len(body), 1000):
            part = body[i : i + 1000]
            conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    return h


def round_robin(handlers: list[Handler]) -> Handler:
    state = {"n": 0}
    lock = threading.Lock()

    def h(conn: socket.socket, req: bytes) -> None:
        with lock:
            i = state["n"] % len(handlers)
            state["n"] += 1
        handlers[i](conn, req)

    return h


def proxy_required(inner: Handler) -> Handler:
    """Like nginx `listen 80 proxy_protocol`: no PROXY v1 line first -> close."""

    def h(conn: socket.socket, req: bytes) -> None:
        if not req.startswith(b"PROXY TCP"):
            conn.close()
            return
        _line, _, rest = req.partition(b"\r\n")
        inner(conn, rest)

    return h


def tls_context(tmp: Path) -> ssl.SSLContext:
    """A server TLS context with a throw-away self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "probe.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


class FullBacklog:
    """An address whose port 80 drops SYNs: a listener with a full accept queue.

    Linux drops SYNs to a listener whose accept queue is full, so connecting
    there times out, reliably and without leaving the loopback.
    """

    def __init__(self) -> None:
        self.address = loop_address()
        self.sock = socket.socket()
        self.sock.bind((self.address, 80))
        self.sock.listen(0)
        self.fillers: list[socket.socket] = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect((self.address, 80))
            self.fillers.append(s)
        time.sleep(0.05)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()
