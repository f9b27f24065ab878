"""The probe against real servers on 127.x: every outcome, redirects, PROXY, TLS, body cap."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acmelb.doctor import probe
from acmelb.doctor.vantage import probe_source
from tests.diagnose.servers import (
    KEYAUTH,
    FullBacklog,
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

OPTS = {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.5}
Serve = Callable[..., Server]


def chain(url: str, address: str, **kw: Any) -> dict[str, Any]:
    return probe.fetch_chain(url, address, {**OPTS, **kw.pop("opts", {})}, **kw)


def test_200_records_request_shape_and_body(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH, {"Server": "unit"}))
    out = chain("http://app.test/.well-known/acme-challenge/x", s.address)
    hop = out["final"]
    assert hop["outcome"] == "response" and hop["status"] == 200
    assert hop["body"] == KEYAUTH and hop["body_length"] == len(KEYAUTH)
    assert ["Server", "unit"] in hop["headers"]
    req = s.requests[0].decode()
    assert req.startswith("GET /.well-known/acme-challenge/x HTTP/1.1\r\n")
    assert "\r\nHost: app.test\r\n" in req and "\r\nAccept: */*\r\n" in req
    assert "acmelb" in req.split("User-Agent: ", 1)[1].split("\r\n", 1)[0]


def test_404_and_trailing_newline_kept_verbatim(serve: Serve) -> None:
    s = serve(by_path({"/a": http_response(200, KEYAUTH + "\n")}, http_response(404, "nope")))
    assert chain("http://app.test/a", s.address)["final"]["body"] == KEYAUTH + "\n"
    assert chain("http://app.test/b", s.address)["final"]["status"] == 404


def test_refused(serve: Serve) -> None:
    hop = chain("http://app.test/", loop_address())["final"]
    assert hop["outcome"] == "connect-refused"


def test_connect_timeout(blackhole: FullBacklog) -> None:
    hop = chain("http://app.test/", blackhole.address)["final"]
    assert hop["outcome"] == "connect-timeout"
    assert 400 <= hop["elapsed_ms"] < 1400


def test_empty_reply_reset_and_read_timeout_told_apart(serve: Serve) -> None:
    closed = serve(close_at_once)
    rst = serve(reset)
    slow = serve(hang(2.0))
    assert chain("http://app.test/", closed.address)["final"]["outcome"] == "empty-reply"
    assert chain("http://app.test/", rst.address)["final"]["outcome"] == "reset"
    hop = chain("http://app.test/", slow.address)["final"]
    assert hop["outcome"] == "read-timeout"
    assert hop["connect_ms"] is not None


def test_total_timeout_on_a_dripping_server(serve: Serve) -> None:
    def drip(conn: Any, _req: bytes) -> None:
        import time

        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(10):
            conn.sendall(b"X-Drip: 1\r\n")
            time.sleep(0.3)

    s = serve(drip)
    hop = chain("http://app.test/", s.address)["final"]
    assert hop["outcome"] == "total-timeout"


def test_tls_listener_on_http_port(serve: Serve, tmp_path: Path) -> None:
    s = serve(answer(200, "secure"), tls=tls_context(tmp_path), read_first=True)
    hop = chain("http://app.test/", s.address)["final"]
    assert hop["outcome"] == "tls-on-http-port", hop


def test_nginx_style_400_is_marked(serve: Serve) -> None:
    body = "<html><center>The plain HTTP request was sent to HTTPS port</center></html>"
    s = serve(answer(400, body))
    hop = chain("http://app.test/", s.address)["final"]
    assert hop["status"] == 400 and hop["tls_listener"] is True


def test_proxy_header_sent_only_when_asked(serve: Serve) -> None:
    s = serve(proxy_required(answer(200, KEYAUTH)))
    assert chain("http://app.test/", s.address)["final"]["outcome"] == "empty-reply"
    ok = chain("http://app.test/", s.address, proxy_protocol=True)["final"]
    assert ok["status"] == 200 and ok["proxy_protocol"] is True
    # (other connections, e.g. the TLS check after the empty reply, may be recorded too)
    proxied = [r for r in s.requests if r.startswith(b"PROXY")]
    line = proxied[0].split(b"\r\n", 1)[0].decode()
    assert line.startswith("PROXY TCP4 127.") and line.endswith(" 80")


def test_body_cap_and_chunked(serve: Serve) -> None:
    big = serve(answer(200, b"x" * 5000))
    hop = chain("http://app.test/", big.address, opts={"body_cap": 1000})["final"]
    assert hop["body_truncated"] is True and hop["body_length"] == 1000
    ch = serve(chunked(b"y" * 2500))
    hop = chain("http://app.test/", ch.address)["final"]
    assert hop["body_length"] == 2500 and not hop["body_truncated"]


def test_redirects_followed_hop_by_hop_with_own_resolution(serve: Serve, tmp_path: Path) -> None:
    final = serve(answer(200, KEYAUTH))
    tls_final = serve(answer(200, KEYAUTH), port=443, tls=tls_context(tmp_path))
    first = serve(
        by_path(
            {
                "/a": http_response(301, "", {"Location": "http://two.test/b"}),
                "/s": http_response(302, "", {"Location": "https://three.test/c"}),
                "/loop": http_response(302, "", {"Location": "/loop2"}),
                "/loop2": http_response(302, "", {"Location": "/loop"}),
                "/rel": http_response(307, "", {"Location": "x"}),
                "/ftp": http_response(301, "", {"Location": "ftp://two.test/"}),
            },
            http_response(200, KEYAUTH),
        )
    )
    resolve_map = {
        "two.test": [final.address],
        "three.test": [tls_final.address],
        "app.test": [first.address],
    }
    out = chain("http://app.test/a", first.address, opts={"resolve_map": resolve_map})
    assert [h["status"] for h in out["redirects"]] == [301]
    assert out["redirects"][0]["redirect_to"] == "http://two.test/b"
    assert out["final"]["address"] == final.address and out["final"]["status"] == 200
    out = chain("http://app.test/s", first.address, opts={"resolve_map": resolve_map})
    assert out["final"]["url"] == "https://three.test/c" and out["final"]["status"] == 200
    out = chain("http://app.test/loop", first.address, opts={"resolve_map": resolve_map})
    assert out["final"]["outcome"] == "redirect-error" and "loop" in out["final"]["error"]
    out = chain("http://app.test/rel", first.address, opts={"resolve_map": resolve_map})
    assert out["redirects"][0]["redirect_to"] == "http://app.test/x"
    out = chain("http://app.test/ftp", first.address, opts={"resolve_map": resolve_map})
    assert out["final"]["outcome"] == "redirect-error" and "scheme" in out["final"]["error"]


def test_too_many_redirects(serve: Serve) -> None:
    routes = {f"/{i}": http_response(302, "", {"Location": f"/{i + 1}"}) for i in range(20)}
    s = serve(by_path(routes, http_response(200, "end")))
    out = chain("http://app.test/0", s.address, opts={"resolve_map": {"app.test": [s.address]}})
    assert out["final"]["outcome"] == "redirect-error"
    # Boulder follows 11 and refuses the 12th: the probe records the 12th
    assert len(out["redirects"]) == 12


def test_run_request_repeats_and_retries_with_proxy(serve: Serve) -> None:
    s = serve(proxy_required(answer(200, KEYAUTH)))
    result = probe.run_request(
        {
            "name": "app.test",
            "url": "http://app.test/x",
            "repeat": 2,
            "resolve": {"app.test": [s.address]},
            "options": OPTS,
        }
    )
    outcomes = [
        (a["attempt"], a["proxy_protocol"], a["final"]["outcome"]) for a in result["attempts"]
    ]
    assert outcomes == [(1, False, "empty-reply"), (2, False, "empty-reply"), (1, True, "response")]
    assert result["resolution"]["a"] == [s.address]


def test_shipped_over_stdin_like_a_remote_vantage(serve: Serve) -> None:
    """`python3 - --request-b64 B64` with the source on stdin prints the same JSON."""
    s = serve(answer(200, KEYAUTH))
    req = {
        "name": "app.test",
        "url": "http://app.test/x",
        "repeat": 1,
        "resolve": {"app.test": [s.address]},
        "options": OPTS,
    }
    b64 = base64.b64encode(json.dumps(req).encode()).decode()
    proc = subprocess.run(
        [sys.executable, "-", "--request-b64", b64],
        input=probe_source().encode(),
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == probe.PROBE_SCHEMA
    assert data["attempts"][0]["final"]["body"] == KEYAUTH


def test_probe_source_is_stdlib_only() -> None:
    import ast

    tree = ast.parse(probe_source())
    modules = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    modules |= {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


@pytest.mark.parametrize(
    "url,location,expected",
    [
        ("http://a.test/x/y", "/z", "http://a.test/z"),
        ("http://a.test/x/y", "z", "http://a.test/x/z"),
        ("http://a.test:8080/x", "//b.test/q", "http://b.test/q"),
        ("https://a.test/x", "/z", "https://a.test/z"),
    ],
)
def test_join_url(url: str, location: str, expected: str) -> None:
    assert probe.join_url(url, location) == expected


def free_port6() -> int:
    import socket

    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port: int = s.getsockname()[1]
        return port


def test_ipv6_and_proxy_tcp6(serve: Serve) -> None:
    port = free_port6()
    s = serve(proxy_required(answer(200, KEYAUTH)), address="::1", port=port)
    hop = chain(f"http://app.test:{port}/", "::1", proxy_protocol=True)["final"]
    assert hop["status"] == 200 and hop["family"] == "ipv6"
    line = next(r for r in s.requests if r.startswith(b"PROXY")).split(b"\r\n", 1)[0]
    assert line.startswith(b"PROXY TCP6 ::1 ::1 ")
    assert f"Host: app.test:{port}" in s.requests[-1].decode(errors="replace")


def test_redirect_target_dials_aaaa_first_then_a_after_a_dial_error(serve: Serve) -> None:
    port = free_port6()  # nothing listens on [::1]:port
    final = serve(answer(200, KEYAUTH), port=port)
    first = serve(answer(302, "", {"Location": f"http://two.test:{port}/x"}))
    out = chain(
        "http://app.test/",
        first.address,
        opts={"resolve_map": {"two.test": ["::1", final.address]}},
    )
    assert out["final"]["address"] == final.address and out["final"]["status"] == 200
