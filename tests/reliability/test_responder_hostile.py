"""The responder faces the internet: hostile requests, slowloris, floods and load.

Everything runs against the real ``acmelb serve`` (a child process, so its
memory can be measured in /proc) or the in-process responder, over real
sockets on 127.0.0.1. tests/core/test_responder.py covers the basic refusals;
this file adds the attacks.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acmelb.acme.responder import (
    TOKEN_PATTERN,
    RequestLog,
    Responder,
    ResponderThread,
    Stateless,
)
from tests.conftest import free_port

THUMB = "Abcdefghijklmnopqrstuvwxyz0123456789_-ABCDE"
TOKEN = "Tok_en-43" + "x" * 34
PREFIX = "/.well-known/acme-challenge/"
MiB = 1024 * 1024


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1)) * 1024


def _serve(tmp_path: Path, *args: str) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acmelb",
                "serve",
                "--address",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 10
        while "listening" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "acmelb serve did not start"
            time.sleep(0.05)
        yield Served(proc, port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def stateless_server(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--stateless", "--thumbprint", THUMB)


@pytest.fixture
def exact_server(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--token", TOKEN, "--key", f"{TOKEN}.{THUMB}")


def raw(port: int, payload: bytes, wait: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1))


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


def get(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


# -- hostile single requests -------------------------------------------------------------

TRAVERSALS = [
    b"/.well-known/acme-challenge/../../../../etc/passwd",
    b"/.well-known/acme-challenge/..%2f..%2f..%2fetc%2fpasswd",
    b"/.well-known/acme-challenge/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/.well-known/acme-challenge/%2E%2E/%2E%2E/etc/passwd",
    b"/.well-known/acme-challenge/..%252f..%252fetc%252fpasswd",
    b"/.well-known/acme-challenge/%c0%ae%c0%ae/etc/passwd",
    b"/.well-known/acme-challenge/..\\..\\etc\\passwd",
    b"/.well-known/acme-challenge/..",
    b"/.well-known/acme-challenge/.",
    b"/.well-known/acme-challenge/",
    b"/.well-known/acme-challenge",
    b"/.well-known/acme-challenge/tok/../tok",
    b"//.well-known/acme-challenge/tok",
    b"/./.well-known/acme-challenge/tok",
    b"/.well-known/./acme-challenge/tok",
    b"/.WELL-KNOWN/ACME-CHALLENGE/tok",
    b"/.well-known/acme-challenge/tok%00",
    b"/.well-known/acme-challenge/tok%0d%0aSet-Cookie:%20x=1",
    b"/.well-known/acme-challenge/tok.extra",
    b"/.well-known/acme-challenge/t%6fk",
    b"/.well-known/acme-challenge/tok;jsessionid=1",
    b"/.well-known/acme-challenge/tok#frag",
    b"/.well-known/acme-challenge/tok+plus",
    b"/.well-known/acme-challenge/tok=",
    b"/.well-known/acme-challenge/" + "é".encode(),
    b"/.well-known/acme-challenge/" + b"A" * 257,
    b"http://evil.test/.well-known/acme-challenge/tok",
    b"*",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=lambda p: p.decode("latin-1")[:60])
def test_traversal_and_non_token_paths_are_404_and_echo_nothing(
    stateless_server: Served, exact_server: Served, path: bytes
) -> None:
    for server in (stateless_server, exact_server):
        answer = raw(server.port, get(path))
        assert status_of(answer) in (400, 404), answer[:200]
        body = body_of(answer)
        assert THUMB.encode() not in body and b"passwd" not in body
        assert b"root:" not in answer and b"Set-Cookie" not in answer


def test_query_string_is_never_echoed(stateless_server: Served) -> None:
    answer = raw(stateless_server.port, get(PREFIX.encode() + b"tok?<script>alert(1)</script>"))
    assert status_of(answer) == 200
    assert body_of(answer) == f"tok.{THUMB}".encode()


MALFORMED = [
    (b"GET /.well-known/acme-challenge/tok\r\n\r\n", 400),  # HTTP/0.9
    (b"GET /.well-known/acme-challenge/tok\r\n", None),  # HTTP/0.9, no blank line: timeout
    (b"\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),  # an HTTP/2 preface
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: empty\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 17000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 3000 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: \x00\x01\x1b[31m\r\n\r\n", 404),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, None),  # TLS hello
    (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"CONNECT a.test:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"DELETE /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\n\r\n", 405),
]


@pytest.mark.parametrize(
    ("payload", "expected"),
    MALFORMED,
    ids=lambda v: repr(v)[:50] if isinstance(v, bytes) else str(v),
)
def test_malformed_requests_get_a_clean_refusal(payload: bytes, expected: int | None) -> None:
    logs: list[RequestLog] = []
    with ResponderThread(
        Responder(Stateless(THUMB), addresses=["127.0.0.1"], port=0, log=logs.append)
    ) as thread:
        port = thread.responder.bound[0][1]
        answer = raw(port, payload, wait=1.0)
        if expected is None:
            assert answer == b"" or status_of(answer) in (400, 408, 431), answer[:100]
        else:
            assert status_of(answer) == expected, answer[:200]
            assert THUMB.encode() not in answer  # never the key authorization
            if expected == 405:
                assert b"Allow: GET, HEAD\r\n" in answer
        for entry in logs:  # nothing a log reader could be fooled by
            for text in (entry.method, entry.target, entry.host, entry.user_agent):
                assert all(32 <= ord(ch) < 127 for ch in text), entry
        # and it still answers properly afterwards
        ok = raw(port, get(PREFIX.encode() + b"tok"))
        assert status_of(ok) == 200 and body_of(ok) == f"tok.{THUMB}".encode()


def test_pipelined_requests_answer_in_order_and_stop_at_a_bad_one(exact_server: Served) -> None:
    good = f"GET {PREFIX}{TOKEN} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    miss = f"HEAD {PREFIX}nope HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    bad = b"GET /x HTTP/1.1\r\nbroken header\r\n\r\n"
    answer = raw(exact_server.port, (good + miss) * 50 + bad + good * 5)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 404] * 50 + [400]  # nothing after the bad one is served
    assert answer.count(f"{TOKEN}.{THUMB}".encode()) == 50


# -- property: stateless mode echoes only valid tokens -----------------------------------

_segment = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80
) | st.from_regex(r"[A-Za-z0-9_-]{1,80}", fullmatch=True)


@pytest.fixture(scope="module")
def stateless_thread() -> Iterator[int]:
    with ResponderThread(Responder(Stateless(THUMB), addresses=["127.0.0.1"], port=0)) as thread:
        yield thread.responder.bound[0][1]


@given(token=_segment, head=st.booleans())
@settings(max_examples=300, deadline=None)
def test_stateless_echoes_only_valid_base64url_tokens(
    stateless_thread: int, token: str, head: bool
) -> None:
    method = b"HEAD" if head else b"GET"
    target = PREFIX.encode() + token.encode()
    answer = raw(
        stateless_thread,
        method + b" " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    status = status_of(answer)
    path = token.split("?", 1)[0]
    if TOKEN_PATTERN.fullmatch(path):
        assert status == 200
        expected = f"{path}.{THUMB}".encode()
        assert body_of(answer) == (b"" if head else expected)
        assert f"Content-Length: {len(expected)}\r\n".encode() in answer
    else:
        assert status in (400, 404)
        assert THUMB.encode() not in answer
        if len(path) >= 4:
            assert path.encode() not in body_of(answer)


# -- flooding: memory stays bounded --------------------------------------------------------


def test_unread_pipelined_answers_do_not_grow_memory(exact_server: Served) -> None:
    """Clients that pipeline requests and never read make a server buffer its answers
    (~4 bytes out per byte in): 5 such clients sending 5.7 MB each must not take the
    ~110 MB of answers in memory."""
    ok = raw(exact_server.port, get(f"{PREFIX}{TOKEN}".encode()))
    assert status_of(ok) == 200
    before = peak = exact_server.rss()
    one = f"GET {PREFIX}{TOKEN} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    clients, sent = [], 0
    try:
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", exact_server.port))
            sock.settimeout(1)
            clients.append(sock)
            with contextlib.suppress(OSError):  # a server that stops reading: fine
                for _ in range(100):
                    sock.sendall(one * 1000)
                    sent += len(one) * 1000
                    peak = max(peak, exact_server.rss())
        time.sleep(0.5)
        peak = max(peak, exact_server.rss())
        ok = raw(exact_server.port, get(f"{PREFIX}{TOKEN}".encode()))
        assert status_of(ok) == 200  # others are still served
    finally:
        for sock in clients:
            sock.close()
    time.sleep(0.5)
    after = exact_server.rss()
    print(
        f"\nunread pipeline flood: {sent / MiB:.1f} MiB sent; rss before "
        f"{before / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, after {after / MiB:.1f} MiB"
    )
    assert peak - before < 20 * MiB, (before, peak)


# -- slowloris while wrk runs ---------------------------------------------------------------

SLOW_CONNECTIONS = 600
WRK_SECONDS = 8


def _slowloris(port: int, stop: threading.Event, sockets: list[socket.socket]) -> None:
    for _ in range(SLOW_CONNECTIONS):
        with contextlib.suppress(OSError):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
            sockets.append(sock)
    rounds = 0
    while not stop.is_set() and rounds < 100:
        rounds += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.send(b"X-a: b\r\n")  # one header line at a time, never finishing
        stop.wait(1.0)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_slowloris_and_garbage_while_wrk_runs(stateless_server: Served) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    port = stateless_server.port
    url = f"http://127.0.0.1:{port}{PREFIX}{TOKEN}"
    warm = subprocess.run(
        ["wrk", "-t1", "-c4", "-d1s", url], capture_output=True, text=True, check=True
    )
    assert "requests in" in warm.stdout
    before = stateless_server.rss()
    stop = threading.Event()
    slow: list[socket.socket] = []
    loris = threading.Thread(target=_slowloris, args=(port, stop, slow))
    loris.start()
    garbage = [threading.Thread(target=raw, args=(port, b"\x00" * MiB, 2.0)) for _ in range(20)]
    for thread in garbage:
        thread.start()
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c50", f"-d{WRK_SECONDS}s", "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    latencies, peak = [], before
    try:
        deadline = time.monotonic() + WRK_SECONDS - 1
        while time.monotonic() < deadline:
            start = time.monotonic()
            answer = raw(port, get(f"{PREFIX}probe".encode()), wait=5.0)
            latencies.append(time.monotonic() - start)
            assert status_of(answer) == 200 and body_of(answer) == f"probe.{THUMB}".encode()
            peak = max(peak, stateless_server.rss())
            time.sleep(0.2)
        out, _ = wrk.communicate(timeout=WRK_SECONDS + 30)
    finally:
        stop.set()
        loris.join(10)
        for thread in garbage:
            thread.join(10)
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    # The server hangs up on the slow clients itself (408 after 10 s), at most ~12 s in.
    closed = 0
    for sock in slow:
        with contextlib.suppress(OSError):
            sock.settimeout(15)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            closed += data.startswith(b"HTTP/1.1 408") or data == b""
        sock.close()
    after = stateless_server.rss()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    summary = {
        "slow_connections": len(slow),
        "wrk_requests_per_sec": rate,
        "wrk_p99": p99.group(1) if p99 else None,
        "wrk_non_2xx": int(errors.group(1)) if errors else 0,
        "probe_max_seconds": round(max(latencies), 3),
        "rss_before_mib": round(before / MiB, 1),
        "rss_peak_mib": round(peak / MiB, 1),
        "rss_after_mib": round(after / MiB, 1),
        "slow_closed_by_server": closed,
    }
    print(f"\nslowloris+wrk: {json.dumps(summary)}")
    assert len(slow) >= SLOW_CONNECTIONS * 0.9
    assert errors is None, out
    assert rate > 200, out
    assert max(latencies) < 1.0, latencies
    assert closed == len(slow)
    assert peak - before < 20 * MiB and after - before < 20 * MiB, summary
