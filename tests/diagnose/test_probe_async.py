"""The asyncio driver measures exactly as the blocking one: the same probe request
against the same real server gives the same result, timings apart.

Both drivers run the one set of steps in ``acmelb.doctor.probe``; these tests hold them to
it on every outcome the probe knows (answers, redirects over http and https, dial
errors, resets, silence, PROXY retries, framing, TLS on the HTTP port).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from acmelb.doctor import probe, probe_async
from tests.diagnose.servers import (
    KEYAUTH,
    Server,
    answer,
    by_path,
    chunked,
    close_at_once,
    hang,
    http_response,
    loop_address,
    proxy_required,
    reset,
    tls_context,
)

Serve = Callable[..., Server]
PATH = "/.well-known/acme-challenge/tok"
TIMING = ("elapsed_ms", "connect_ms")


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (0 if k in TIMING else untimed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def both(address: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    request = {
        "name": "app.example.com",
        "url": f"http://app.example.com{PATH}",
        "repeat": 2,
        "resolve": {"app.example.com": [address], **extra.pop("resolve", {})},
        "options": {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.5},
        **extra,
    }
    blocking = probe.run_request(request)
    driven = asyncio.run(probe_async.run_request_async(request, probe_async.Limits(8, 4)))
    # the fleet engine runs on uvloop when it is installed: the same results there
    on_uvloop = uvloop.run(probe_async.run_request_async(request, probe_async.Limits(8, 4)))
    assert untimed(on_uvloop) == untimed(driven)
    return untimed(blocking), untimed(driven)


def redirect(location: str) -> Callable[[socket.socket, bytes], None]:
    return by_path({PATH: http_response(302, "", {"Location": location})}, http_response(404))


def short_body(conn: socket.socket, _req: bytes) -> None:
    conn.sendall(http_response(200, KEYAUTH, {"Content-Length": "100"}))


@pytest.mark.parametrize(
    "handler",
    [
        answer(200, KEYAUTH),
        answer(404, "<html>not found</html>"),
        answer(200, "x" * 5000),
        answer(200, gzip.compress(KEYAUTH.encode()), {"Content-Encoding": "gzip"}),
        chunked(KEYAUTH.encode() * 30),
        short_body,
        close_at_once,
        reset,
        hang(2.0),
        proxy_required(answer(200, KEYAUTH)),
        redirect(PATH),  # a loop
        redirect("ftp://app.example.com/x"),
        redirect("/elsewhere"),
    ],
    ids=[
        "200", "404", "large", "gzip", "chunked", "short", "close", "reset", "silence",
        "proxy", "loop", "bad-scheme", "relative",
    ],
)  # fmt: skip
def test_same_result_as_the_blocking_driver(serve: Serve, handler: Any) -> None:
    s = serve(handler)
    blocking, driven = both(s.address)
    assert driven == blocking


def test_refused_and_unresolvable(serve: Serve) -> None:
    blocking, driven = both(loop_address())  # nothing listens there
    assert driven == blocking
    assert driven["attempts"][0]["final"]["outcome"] == "connect-refused"
    blocking, driven = both("127.0.0.1", resolve={"app.example.com": []})
    assert driven == blocking


def test_redirect_to_https_and_to_a_dead_aaaa(serve: Serve, tmp_path: Path) -> None:
    address = loop_address()
    serve(answer(200, KEYAUTH), address=address, port=443, tls=tls_context(tmp_path))
    s = serve(redirect("https://next.example.com/ok"))
    blocking, driven = both(s.address, resolve={"next.example.com": [address]})
    assert driven == blocking
    assert driven["attempts"][0]["final"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
    final = serve(answer(200, KEYAUTH))
    s = serve(redirect("http://next.example.com/ok"))
    blocking, driven = both(s.address, resolve={"next.example.com": ["::1", final.address]})
    assert driven == blocking
    assert driven["attempts"][0]["final"]["fallback_from"]["address"] == "::1"


def test_tls_listener_on_the_http_port(serve: Serve, tmp_path: Path) -> None:
    s = serve(answer(200, "secure"), tls=tls_context(tmp_path))
    blocking, driven = both(s.address)
    assert driven == blocking
    assert driven["attempts"][0]["final"]["outcome"] == "tls-on-http-port"


def test_limits_bound_open_connections(serve: Serve) -> None:
    """Eight requests of four probes each through a limit of two per address."""
    open_now, most = [0], [0]
    counted = threading.Lock()  # the server's threads: an unlocked += may lose a count

    def counting(conn: socket.socket, req: bytes) -> None:
        # counted while it hangs; the answer comes after, since once it is sent the client
        # may free its slot and connect again before this thread's bookkeeping runs
        with counted:
            open_now[0] += 1
            most[0] = max(most[0], open_now[0])
        try:
            hang(0.05)(conn, req)
        finally:
            with counted:
                open_now[0] -= 1
        answer(200, KEYAUTH)(conn, req)

    s = serve(counting)
    limits = probe_async.Limits(total=16, per_address=2)
    request = {
        "name": "app.example.com",
        "url": f"http://app.example.com{PATH}",
        "repeat": 4,
        "resolve": {"app.example.com": [s.address]},
        "options": {"connect_timeout": 2, "read_timeout": 2, "total_timeout": 4},
    }

    async def run() -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(probe_async.run_request_async(request, limits) for _ in range(8))
            )
        )

    results = asyncio.run(run())
    attempts = [a for r in results for a in r["attempts"]]
    assert all((a.get("final") or {}).get("status") == 200 for a in attempts), attempts[:2]
    assert most[0] <= 2, most
