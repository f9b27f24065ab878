"""The challenge responder, over real sockets on the loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmelb.acme.responder import (
    ExactTokens,
    PendingDirectory,
    RequestLog,
    Responder,
    ResponderThread,
    Stateless,
)

THUMB = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
TOKEN = "tok_en-1"


@pytest.fixture
def exact() -> Iterator[tuple[int, list[RequestLog]]]:
    logs: list[RequestLog] = []
    source = ExactTokens([(TOKEN, f"{TOKEN}.{THUMB}")])
    with ResponderThread(
        Responder(source, addresses=["127.0.0.1"], port=0, log=logs.append)
    ) as thread:
        yield thread.responder.bound[0][1], logs


@pytest.fixture
def stateless() -> Iterator[int]:
    with ResponderThread(
        Responder(Stateless(THUMB), addresses=["127.0.0.1", "::1"], port=0)
    ) as thread:
        yield thread.responder.bound[0][1]


def raw(port: int, payload: bytes, host: str = "127.0.0.1", wait: float = 2.0) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(wait)
        sock.connect((host, port))
        sock.sendall(payload)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes, dict[str, str]]:
    url_host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{url_host}:{port}{path}", timeout=3) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_exact_token_answers_key_without_newline(exact: tuple[int, list[RequestLog]]) -> None:
    port, logs = exact
    status, body, headers = get(port, f"/.well-known/acme-challenge/{TOKEN}")
    assert (status, body) == (200, f"{TOKEN}.{THUMB}".encode())
    assert headers["Content-Type"].startswith("text/plain")
    assert logs[-1].status == 200 and logs[-1].answer == "key authorization"
    assert logs[-1].host == f"127.0.0.1:{port}" and logs[-1].user_agent.startswith("Python")


def test_unknown_token_and_other_paths_are_404(exact: tuple[int, list[RequestLog]]) -> None:
    port, _ = exact
    assert get(port, "/.well-known/acme-challenge/other")[0] == 404
    assert get(port, "/")[0] == 404
    assert get(port, f"/.well-known/acme-challenge/{TOKEN}/")[0] == 404
    assert get(port, f"/.well-known/acme-challenge/../acme-challenge/{TOKEN}")[0] == 404
    assert get(port, "/.well-known/acme-challenge/%2e%2e%2fetc%2fpasswd")[0] == 404


def test_head_and_methods(exact: tuple[int, list[RequestLog]]) -> None:
    port, _ = exact
    head = raw(
        port,
        f"HEAD /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert f"Content-Length: {len(TOKEN) + 1 + len(THUMB)}".encode() in head
    post = raw(port, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert post.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in post


def test_malformed_requests_are_refused(exact: tuple[int, list[RequestLog]]) -> None:
    port, _ = exact
    assert raw(port, b"GET /\r\n\r\n").startswith(b"HTTP/1.1 400")  # HTTP/0.9
    assert raw(port, b"GET / HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.1 505")
    assert raw(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400")
    huge = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"
    assert raw(port, huge).startswith(b"HTTP/1.1 431")
    body = raw(port, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert body.startswith(b"HTTP/1.1 400")


def test_pipelined_keep_alive_requests(exact: tuple[int, list[RequestLog]]) -> None:
    port, _ = exact
    one = f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    last = b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    answer = raw(port, one * 3 + last)
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert answer.count(b"HTTP/1.1 404") == 1


def test_slow_client_is_dropped(
    exact: tuple[int, list[RequestLog]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = exact
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and never finish
        start = time.monotonic()
        data = sock.recv(1000)
        assert data.startswith(b"HTTP/1.1 408")
        assert sock.recv(1000) == b""
        assert 8 < time.monotonic() - start < 13


def test_stateless_answers_any_valid_token_on_both_families(stateless: int) -> None:
    for host in ("127.0.0.1", "::1"):
        status, body, _ = get(stateless, "/.well-known/acme-challenge/AnyToken_123-x", host)
        assert (status, body) == (200, f"AnyToken_123-x.{THUMB}".encode())
    for bad in ("bad.token", "a%20b", "", "x" * 300):
        assert get(stateless, f"/.well-known/acme-challenge/{bad}")[0] == 404


def test_serve_command_runs_and_refuses_bad_input() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "acmelb", "serve", *args],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )

    assert "needs --thumbprint" in run("--stateless").stderr
    assert "must be 'abc.THUMBPRINT'" in run("--token", "abc", "--key", "wrong").stderr
    assert "one --key for each --token" in run("--token", "abc").stderr
    bad = run("--stateless", "--thumbprint", "not a thumbprint!")
    assert bad.returncode == 2 and "base64url" in bad.stderr
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = run(
            "--stateless",
            "--thumbprint",
            THUMB,
            "--address",
            "127.0.0.1",
            "--port",
            str(blocker.getsockname()[1]),
        )
    assert busy.returncode == 2 and "cannot listen on 127.0.0.1" in busy.stderr
    assert "Traceback" not in busy.stderr


def test_pending_directory_answers_only_well_formed_tokens(tmp_path: Path) -> None:
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / "tok1").write_text("tok1.thumb")
    (pending / "bad").write_text("not a key authorization")
    (tmp_path / "secret").write_text("secret.thumb")
    source = PendingDirectory(pending)
    assert source.answer("tok1") == "tok1.thumb"
    assert source.answer("bad") is None  # a file that is not TOKEN.THUMBPRINT
    assert source.answer("missing") is None
    assert source.answer("../secret") is None and source.answer("..") is None
    with ResponderThread(Responder(source, addresses=["127.0.0.1"], port=0)) as thread:
        port = thread.responder.bound[0][1]
        assert get(port, "/.well-known/acme-challenge/tok1")[:2] == (200, b"tok1.thumb")
        assert get(port, "/.well-known/acme-challenge/..%2fsecret")[0] == 404
