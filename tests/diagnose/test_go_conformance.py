"""Conformance with Boulder and Go's HTTP client beyond the first table (issue 23): redirect
targets as Go's URL parser and Boulder's dialer read them, and responses as Go's transport
reads them. Real servers on 127.x (and ::1), the real probe, Boulder's rules on the
recorded chain. The rule ids (B11..., G1...) are those of docs/diagnose.md's conformance
tables.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from acmelb.doctor.checks.base import Options
from acmelb.doctor.findings import Code
from tests.diagnose.servers import KEYAUTH, Server, answer, by_path, http_response
from tests.diagnose.test_boulder_conformance import fetch, redirecting, verdicts

Serve = Callable[..., Server]
NEXT = "next.example.com"


def raw(data: bytes) -> Callable[[socket.socket, bytes], None]:
    """A server that sends exactly ``data`` and closes."""

    def send(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(data)

    return send


def keyauth_with_head(head: str, body: bytes = KEYAUTH.encode()) -> bytes:
    return head.encode("latin-1") + body


# -- B11, B13, B14, B15: redirect targets -------------------------------------------------


def test_b11_userinfo_in_a_redirect_target_is_ignored(serve: Serve) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting(f"http://user:secret@{NEXT}/ok"))
    le, cm = verdicts(fetch(first.address, {NEXT: [final.address]}))
    assert le.ok and cm.ok, le


def test_b14_a_trailing_dot_host_is_refused_by_boulder_not_by_go(serve: Serve) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting(f"http://{NEXT}./ok"))
    le, cm = verdicts(fetch(first.address, {NEXT: [final.address]}))
    assert not le.ok and le.code is Code.REDIRECT_BAD_TARGET and "ends in a dot" in le.detail
    assert cm.ok


@pytest.mark.parametrize(("literal", "le_ok"), [("::1", True), ("0::1", False), ("0:0::1", False)])
def test_b13_an_ipv6_literal_must_be_written_canonically(
    serve: Serve, literal: str, le_ok: bool
) -> None:
    try:
        final = serve(answer(200, KEYAUTH), address="::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    first = serve(redirecting(f"http://[{literal}]/ok"))
    attempt = fetch(first.address)
    assert attempt.final.status == 200 and final.requests  # Go's client gets the answer
    le, _ = verdicts(attempt, Options(assume_public=["::1/128"]))  # ::1 plays a public one
    assert le.ok is le_ok, le
    if not le_ok:
        assert "preresolvedDialer mismatch" in le.detail


def test_b15_the_path_limit_counts_decoded_bytes_ip_targets_included(serve: Serve) -> None:
    encoded = "/" + "%70" * 700  # 2101 bytes as sent, 701 decoded: followed
    final = serve(by_path({encoded: http_response(200, KEYAUTH)}, http_response(404)))
    first = serve(redirecting(f"http://{NEXT}{encoded}"))
    le, _ = verdicts(fetch(first.address, {NEXT: [final.address]}))
    assert le.ok, le
    long = "/" + "p" * 2000  # to a public IP address: the limit applies all the same
    final = serve(by_path({long: http_response(200, KEYAUTH)}, http_response(404)))
    first = serve(redirecting(f"http://{final.address}{long}"))
    le, _ = verdicts(fetch(first.address), Options(assume_public=["127.0.0.0/8"]))
    assert not le.ok and le.code is Code.REDIRECT_BAD_TARGET and "2000" in le.detail


# -- G1-G7: responses as Go's transport reads them ----------------------------------------

OK_HEAD = f"HTTP/1.1 200 OK\r\nContent-Length: {len(KEYAUTH)}\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("informational", "le_ok"),
    [
        ("HTTP/1.1 100 Continue\r\n\r\n", True),
        ("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n", True),
        ("HTTP/1.1 100 Continue\r\n\r\n" * 5, True),
        ("HTTP/1.1 100 Continue\r\n\r\n" * 6, False),  # net/http: too many 1xx
    ],
)
def test_g1_informational_responses_are_skipped(
    serve: Serve, informational: str, le_ok: bool
) -> None:
    s = serve(raw(keyauth_with_head(informational + OK_HEAD)))
    le, cm = verdicts(fetch(s.address))
    assert le.ok is le_ok and cm.ok is le_ok, le
    if not le_ok:
        assert le.code is Code.MALFORMED_RESPONSE and "1xx" in le.detail


def test_g2_bare_lf_line_endings_and_g3_heads_over_64_kib_are_read(serve: Serve) -> None:
    s = serve(raw(keyauth_with_head(OK_HEAD.replace("\r\n", "\n"))))
    assert verdicts(fetch(s.address))[0].ok
    big = OK_HEAD.replace("\r\n\r\n", "\r\nX-Padding: " + "x" * 100_000 + "\r\n\r\n")
    s = serve(raw(keyauth_with_head(big)))
    assert verdicts(fetch(s.address))[0].ok


N = len(KEYAUTH)


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (f"HTTP/1.1 200 OK\r\nContent-Length: {N}\r\nContent-Length: {N + 1}\r\n\r\n", "multiple"),
        (f"HTTP/1.1 200 OK\r\nContent-Length: {N}, {N}\r\n\r\n", "bad Content-Length"),
        (f"HTTP/1.1 200 OK\r\nContent-Length: +{N}\r\n\r\n", "bad Content-Length"),
        (f"HTTP/1.1 200 OK\r\nContent-Length: {N}\r\nno colon here\r\n\r\n", "MIME header"),
        (f"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: {N}\r\n\r\n", "MIME header"),
        (f"HTTP/2 200\r\nContent-Length: {N}\r\n\r\n", "HTTP version"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", "transfer encoding"),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer encoding"),
    ],
)
def test_g5_heads_go_refuses_are_malformed_responses(serve: Serve, head: str, why: str) -> None:
    s = serve(raw(keyauth_with_head(head)))
    le, cm = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.MALFORMED_RESPONSE and why in le.detail, le
    assert not cm.ok


def test_g4_the_same_content_length_twice_is_accepted(serve: Serve) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {N}\r\nContent-Length: {N}\r\n\r\n"
    s = serve(raw(keyauth_with_head(head)))
    assert verdicts(fetch(s.address))[0].ok


def test_g6_transfer_encoding_under_http_1_0_is_ignored(serve: Serve) -> None:
    chunked = f"{N:x}\r\n{KEYAUTH}\r\n0\r\n\r\n".encode()
    s = serve(
        raw(keyauth_with_head("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked))
    )
    attempt = fetch(s.address)
    assert attempt.final.raw["body"].startswith(f"{N:x}\r\n")  # the framing is the body
    le, _ = verdicts(attempt)
    assert not le.ok and le.code is Code.WRONG_CONTENT
    s = serve(
        raw(keyauth_with_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunked))
    )
    assert verdicts(fetch(s.address))[0].ok


@pytest.mark.parametrize("tail", [b"\xa0", b"\x85"])
def test_g7_a_raw_non_utf8_byte_after_the_key_is_not_trimmed(serve: Serve, tail: bytes) -> None:
    body = KEYAUTH.encode() + tail
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"
    s = serve(raw(keyauth_with_head(head, body)))
    le, _ = verdicts(fetch(s.address))
    assert not le.ok, le  # Go reads U+FFFD there, which is not white space
    encoded = KEYAUTH.encode() + tail.decode("latin-1").encode("utf-8")  # U+00A0 as UTF-8
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(encoded)}\r\n\r\n"
    s = serve(raw(keyauth_with_head(head, encoded)))
    assert verdicts(fetch(s.address))[0].ok
