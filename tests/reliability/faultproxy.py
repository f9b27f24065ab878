"""A fault-injecting HTTPS proxy in front of a real Pebble, for the reliability tests.

It terminates TLS with its own throw-away CA (``ca_bundle``: the file to give
acmelb as ``--ca-bundle``), forwards every request to Pebble over TLS, and
keeps the client's ``Host`` header, so the URLs Pebble writes into its answers
(and checks in every JWS) point back at the proxy. Between the two it applies
``Fault`` rules, matched in order by method and path:

* ``status``: answer with ``status`` (and ``Retry-After``) without asking Pebble;
  a 429 carries an ACME ``rateLimited`` problem, 500 ``serverInternal``, other
  codes an HTML page like a load balancer's;
* ``delay``: wait ``seconds``, then forward;
* ``drop-before``: close the connection without forwarding (the CA saw nothing);
* ``drop-after``: forward, then close without answering (the CA acted, the
  client never heard);
* ``truncate``: forward, then send half of Pebble's answer and close.

Each rule fires ``times`` times (None: for ever). Every request is recorded in
``log`` with its time, so tests can check what was retried and how long the
client waited. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Fault:
    action: str  # status | delay | drop-before | drop-after | truncate
    path: str = ".*"  # regular expression, searched in the request path
    method: str | None = None
    times: int | None = 1
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.path, path) is not None


@dataclass
class Seen:
    at: float  # time.monotonic()
    method: str
    path: str
    action: str  # "forward" or the fault's action
    status: int | None  # what the client got (None: nothing)


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    upstream_bundle: Path
    workdir: Path
    faults: list[Fault] = field(default_factory=list)
    log: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ca_bundle, cert, key = _tls_material(self.workdir)
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self._upstream_ctx = ssl.create_default_context(cafile=str(self.upstream_bundle))
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set_faults(self, *faults: Fault) -> None:
        with self._lock:
            self.faults = list(faults)
            self.log.clear()

    def pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.fired += 1
                    return fault
        return None

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.log.append(seen)

    def seen(self, path: str, method: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.log
                if re.search(path, s.path) and (method is None or s.method == method)
            ]


_PROBLEMS = {429: "rateLimited", 500: "serverInternal"}


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _any(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = proxy.pick(self.command, self.path)
        action = fault.action if fault else "forward"
        if fault is not None and fault.action == "status":
            self._fake(fault)
            proxy.record(Seen(time.monotonic(), self.command, self.path, action, fault.status))
            return
        if fault is not None and fault.action == "drop-before":
            proxy.record(Seen(time.monotonic(), self.command, self.path, action, None))
            self._drop()
            return
        if fault is not None and fault.action == "delay":
            time.sleep(fault.seconds)
        status, headers, answer = self._forward(body)
        if fault is not None and fault.action == "drop-after":
            proxy.record(Seen(time.monotonic(), self.command, self.path, action, None))
            self._drop()
            return
        proxy.record(Seen(time.monotonic(), self.command, self.path, action, status))
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if fault is not None and fault.action == "truncate":
            self.wfile.write(answer[: len(answer) // 2])
            self.wfile.flush()
            self._drop()
            return
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_POST = do_HEAD = _any

    _upstream: http.client.HTTPSConnection | None = None

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        # One upstream connection per client connection, like a real reverse proxy.
        proxy = self.owner
        if self._upstream is None:
            self._upstream = http.client.HTTPSConnection(
                proxy.upstream_host, proxy.upstream_port, context=proxy._upstream_ctx, timeout=60
            )
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("connection", "content-length")
        }
        try:
            self._upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = self._upstream.getresponse()
            data = response.read()
        except BaseException:
            self._upstream.close()
            self._upstream = None
            raise
        return response.status, response.getheaders(), data

    def finish(self) -> None:
        super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def _fake(self, fault: Fault) -> None:
        code = _PROBLEMS.get(fault.status)
        if code is not None:
            payload = (
                f'{{"type": "urn:ietf:params:acme:error:{code}", '
                f'"detail": "injected by the fault proxy", "status": {fault.status}}}'
            ).encode()
            ctype = "application/problem+json"
        else:
            payload = b"<html><body><h1>503 Service Unavailable</h1></body></html>\n"
            ctype = "text/html"
        self.send_response(fault.status)
        self.send_header("Content-Type", ctype)
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            # RST rather than FIN: the harshest way a connection breaks.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.connection.close()
        except OSError:
            pass


def _tls_material(workdir: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmelb fault proxy CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    workdir.mkdir(parents=True, exist_ok=True)
    paths = workdir / "proxy-ca.pem", workdir / "proxy-cert.pem", workdir / "proxy-key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
