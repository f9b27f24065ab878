"""Differential testing against real servers (issue 23): hypothesis generates a server's
behaviour (redirect chains in several forms, the final status, body, framing, informational
responses, line endings), a real server on 127.x plays it, the real probe fetches it, and
``analyse`` judges it. The expected verdict comes from this file's own reading of the rule
table (docs/diagnose.md, B5-B24 and G1-G7), written from the behaviour, not from acmelb's code; the
report is held to the invariant: a failing CA verdict means ``ok`` false, an error finding
and a root cause; ``ok`` true means no failing verdict.

Bounded: ``EXAMPLES`` behaviours (about ten seconds). The seed is printed (shown with a
failure); ``ACMELB_DIFF_SEED=N`` replays one run, ``ACMELB_DIFF_EXAMPLES`` runs more.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from acmelb.doctor.checks.base import Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.findings import Severity
from tests.diagnose.record import run
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server

SEED = int(os.environ.get("ACMELB_DIFF_SEED") or random.SystemRandom().randrange(2**32))
EXAMPLES = int(os.environ.get("ACMELB_DIFF_EXAMPLES", "120"))
NAME = "app.example.com"
FIRST = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
# hosts a redirect may name: registered TLDs, an unregistered one, a trailing dot
HOSTS = ("app.example.com", "next.example.org", "cdn.example.net", "x.example.invalidtld")
# Go's unicode.IsSpace, spelled out again here (the oracle does not import acmelb's)
WHITE = "\t\n\v\f\r \x85\xa0\u2003\u3000"


@dataclass(frozen=True)
class Redirect:
    status: int
    host: str
    trailing_dot: bool
    port: int | None
    userinfo: bool

    def location(self, path: str) -> str:
        user = "user:pw@" if self.userinfo else ""
        port = f":{self.port}" if self.port else ""
        return f"http://{user}{self.host}{'.' if self.trailing_dot else ''}{port}{path}"


@dataclass(frozen=True)
class Final:
    status: int
    body: bytes
    framing: str  # length, chunked, close, bad-length, http10-chunked
    informational: int
    bare_lf: bool

    def wire(self) -> bytes:
        """The bytes the server sends."""
        crlf = "\n" if self.bare_lf else "\r\n"
        version = "HTTP/1.0" if self.framing == "http10-chunked" else "HTTP/1.1"
        head = "".join(f"HTTP/1.1 100 Continue{crlf}{crlf}" for _ in range(self.informational))
        head += f"{version} {self.status} X{crlf}Connection: close{crlf}"
        body = self.body
        if self.framing in ("chunked", "http10-chunked"):
            head += f"Transfer-Encoding: chunked{crlf}"
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
        elif self.framing == "length":
            head += f"Content-Length: {len(body)}{crlf}"
        elif self.framing == "bad-length":
            head += f"Content-Length: +{len(body)}{crlf}"
        return (head + crlf).encode() + body


# What a behaviour is drawn from, repeats as weights: hypothesis samples these, and
# benchmarks/differential_score.py draws from the same tables with ``random``.
REDIRECT_STATUSES = (301, 302, 307, 308) * 3 + (303,)
REDIRECT_HOSTS = HOSTS[:3] * 3 + HOSTS[3:]
TRAILING_DOTS = (False,) * 7 + (True,)
REDIRECT_PORTS = (None,) * 6 + (80, 8080)
MAX_REDIRECTS = 3
BODY_CHOICES = (
    KEYAUTH.encode(),
    KEYAUTH.encode(),
    KEYAUTH.encode(),
    (KEYAUTH + "\n").encode(),
    (KEYAUTH + "\u00a0").encode(),  # trimmed: Go's IsSpace
    KEYAUTH.encode() + b"\xa0",  # a raw byte: U+FFFD, not trimmed
    (" " + KEYAUTH).encode(),
    (KEYAUTH + " " * 50).encode(),  # 137 bytes: over the limit
    (KEYAUTH[:-1] + "A").encode(),
    b"<html><title>404 Not Found</title></html>",
    b"",
)
FINAL_STATUSES = (200, 200, 200, 404, 500)
FRAMINGS = ("length", "length", "chunked", "close", "bad-length", "http10-chunked")
INFORMATIONAL_HEADS = (0, 0, 1, 5, 6)


def redirects() -> st.SearchStrategy[Redirect]:
    return st.builds(
        Redirect,
        status=st.sampled_from(REDIRECT_STATUSES),
        host=st.sampled_from(REDIRECT_HOSTS),
        trailing_dot=st.sampled_from(TRAILING_DOTS),
        port=st.sampled_from(REDIRECT_PORTS),
        userinfo=st.booleans(),
    )


FINALS = st.builds(
    Final,
    status=st.sampled_from(FINAL_STATUSES),
    body=st.sampled_from(BODY_CHOICES),
    framing=st.sampled_from(FRAMINGS),
    informational=st.sampled_from(INFORMATIONAL_HEADS),
    bare_lf=st.booleans(),
)


def boulder_accepts(chain: tuple[Redirect, ...], final: Final) -> bool:
    """The rule table, applied to the behaviour itself."""
    for hop in chain:
        if hop.status not in (301, 302, 307, 308):  # B7
            return False
        if hop.port not in (None, 80, 443):  # B10
            return False
        if hop.trailing_dot or hop.host.endswith(".invalidtld"):  # B14
            return False
    if final.informational > 5 or final.framing == "bad-length":  # G5: a 6th 1xx, "+N"
        return False
    if final.status != 200:  # B18
        return False
    body = final.body
    if final.framing == "http10-chunked":  # G6: the framing is the body
        body = Final(200, body, "chunked", 0, False).wire().split(b"\r\n\r\n", 1)[1]
    if len(body) >= 128:  # B19
        return False
    return body.decode("utf-8", "replace").rstrip(WHITE) == KEYAUTH  # B21, B22, G7


class Stage:
    """One server for every example; each example sets what it answers, by path."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.server = Server(self.handle)

    def handle(self, conn: socket.socket, request: bytes) -> None:
        # not every request is HTTP (the probe also tries TLS and PROXY headers)
        path = request.split(b" ", 2)[1].decode("latin-1") if request.count(b" ") >= 2 else "/"
        with self.lock:
            answer = self.routes.get(path, b"HTTP/1.1 404 X\r\nContent-Length: 0\r\n\r\n")
        conn.sendall(answer)

    def play(self, chain: tuple[Redirect, ...], final: Final) -> None:
        routes, path = {}, FIRST
        for i, hop in enumerate(chain, 1):
            nxt = f"/hop{i}"
            head = f"HTTP/1.1 {hop.status} X\r\nLocation: {hop.location(nxt)}\r\n"
            routes[path] = (head + "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()
            path = nxt
        routes[path] = final.wire()
        with self.lock:
            self.routes = routes


@pytest.fixture(scope="module")
def stage() -> Iterator[Stage]:
    s = Stage()
    try:
        yield s
    finally:
        s.server.close()


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chain=st.lists(redirects(), max_size=MAX_REDIRECTS).map(tuple), final=FINALS)
def test_verdict_follows_the_rule_table_and_the_report_the_invariant(
    stage: Stage, chain: tuple[Redirect, ...], final: Final
) -> None:
    print(f"ACMELB_DIFF_SEED={SEED}")
    stage.play(chain, final)
    resolve = {host: [stage.server.address] for host in HOSTS}
    result = run([stage.server.address], repeat=1, resolve=resolve)
    report = analyse(
        Target(NAME, KEYAUTH_TOKEN, KEYAUTH),
        [VantageRun("outside:local", "outside", False, result)],
    )
    expected = "pass" if boulder_accepts(chain, final) else "fail"
    event(f"acme-ca {expected}")
    assert report.verdicts["acme-ca"] == expected, (chain, final, report.to_json()["findings"])
    if expected == "fail":
        assert not report.ok
        assert any(f.sev is Severity.ERROR for f in report.findings)
        assert report.root_cause is not None
    if report.ok:
        assert "fail" not in report.verdicts.values()
