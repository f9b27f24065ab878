"""Differential test against real local servers: hypothesis makes up a target's
behaviour (a redirect chain, the final status, the body and its framing), real servers
on 127.x addresses play it, the real probe fetches it, and acmelb's verdict
(``le_verdict``) is compared with a model of Boulder's rules written here from the
spec alone (va/http.go, as in the conformance table of docs/diagnose.md), not from
the recorded chain.

Bounded: ``ACMELB_DIFF_EXAMPLES`` examples (default 40) and a seed printed on every
run (``ACMELB_DIFF_SEED`` replays one). Only 127.0.0.0/8 is dialled.
"""

from __future__ import annotations

import gzip
import os
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from acmelb.doctor import probe
from acmelb.doctor.checks.base import Attempt, Options, Target, le_verdict
from acmelb.doctor.findings import Code
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server, loop_address

SEED = int(os.environ.get("ACMELB_DIFF_SEED") or random.randrange(2**32))
EXAMPLES = int(os.environ.get("ACMELB_DIFF_EXAMPLES") or 40)
print(f"\ndifferential test: seed {SEED} (ACMELB_DIFF_SEED={SEED} replays it)")

NAME = "app.example.com"
PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
TARGET = Target(NAME, KEYAUTH_TOKEN, KEYAUTH)
OPTS = {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.5}
# Go's unicode.IsSpace, restated from its documentation (Latin-1 spaces, then the
# Unicode White_Space property)
SPACES = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501


@dataclass(frozen=True)
class Behaviour:
    redirects: tuple[int, ...]  # the status of each redirect, in order
    status: int
    tail: str  # after the key authorization
    gzip: bool
    framing: str  # how the final head frames the body (see _FRAMINGS)
    pad: int  # extra bytes of padding before the tail


_behaviour = st.builds(
    Behaviour,
    redirects=st.lists(st.sampled_from([301, 302, 303, 307, 308]), max_size=3).map(tuple),
    status=st.sampled_from([200, 200, 200, 404, 500]),
    tail=st.sampled_from(["", "\n", "\r\n", " \t", "\u00a0", "\u2003", "\x1c", "x", "\u200b"]),
    gzip=st.booleans(),
    framing=st.sampled_from(
        [
            "length",
            "length",
            "chunked",
            "same-length-twice",
            "two-lengths",
            "plus-length",
            "bare-lf",
            "100-continue",
            "te-identity",
        ]
    ),
    pad=st.sampled_from([0, 0, 30, 41, 60]),
)


def boulder_model(b: Behaviour) -> tuple[bool, set[Code]]:
    """Boulder's verdict from the behaviour alone, and the codes a failure may carry."""
    if any(s not in (301, 302, 307, 308) for s in b.redirects):
        return False, {Code.REDIRECT_BAD_STATUS}  # B7
    if b.framing in ("two-lengths", "plus-length", "te-identity"):
        return False, {Code.MALFORMED_RESPONSE}  # G5: Go's ReadResponse refuses the head
    if b.status != 200:
        return False, {Code.CHALLENGE_NOT_FOUND, Code.HTTP_ERROR_STATUS}  # B18
    body = _body(b).encode()
    if len(body) >= 128:
        return False, {Code.BODY_TOO_LARGE}  # B19, on the decoded body (B2)
    if _body(b).rstrip(SPACES) == KEYAUTH:  # B21, B22
        return True, set()
    return False, {Code.WRONG_CONTENT, Code.TRAILING_WHITESPACE, Code.THUMBPRINT_MISMATCH}


def _body(b: Behaviour) -> str:
    return KEYAUTH + " " * b.pad + b.tail if b.pad else KEYAUTH + b.tail


def _final_response(b: Behaviour) -> bytes:
    payload = _body(b).encode()
    headers = ["Connection: close"]
    if b.gzip:
        payload = gzip.compress(payload)
        headers.append("Content-Encoding: gzip")
    n = len(payload)
    framed = payload
    if b.framing == "chunked":
        framed = b"%x\r\n" % n + payload + b"\r\n0\r\n\r\n"
        headers.append("Transfer-Encoding: chunked")
    elif b.framing == "same-length-twice":
        headers += [f"Content-Length: {n}", f"Content-Length: {n}"]
    elif b.framing == "two-lengths":
        headers += [f"Content-Length: {n}", f"Content-Length: {n + 1}"]
    elif b.framing == "plus-length":
        headers.append(f"Content-Length: +{n}")
    elif b.framing == "te-identity":
        headers.append("Transfer-Encoding: identity")
    else:
        headers.append(f"Content-Length: {n}")
    eol = "\n" if b.framing == "bare-lf" else "\r\n"
    head = f"HTTP/1.1 {b.status} X{eol}" + "".join(h + eol for h in headers) + eol
    if b.framing == "100-continue":
        head = "HTTP/1.1 100 Continue\r\n\r\n" + head
    return head.encode() + framed


def _redirect(status: int, location: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nLocation: {location}\r\nContent-Length: 0\r\n"
    return (head + "Connection: close\r\n\r\n").encode()


def _sender(data: bytes) -> Any:
    def h(conn: Any, _req: bytes) -> None:
        conn.sendall(data)

    return h


def _play(b: Behaviour) -> Attempt:
    """Servers for the chain (hop i at its own address, named hop{i}.example.com), then
    the probe's fetch from the first."""
    addresses = [loop_address() for _ in range(len(b.redirects) + 1)]
    resolve = {NAME: [addresses[0]]}
    responses: list[bytes] = []
    for i, status in enumerate(b.redirects):
        name = f"hop{i + 1}.example.com"
        resolve[name] = [addresses[i + 1]]
        responses.append(_redirect(status, f"http://{name}/step{i + 1}"))
    responses.append(_final_response(b))
    servers: list[Server] = []
    try:
        for address, data in zip(addresses, responses, strict=True):
            try:
                servers.append(Server(_sender(data), address=address))
            except PermissionError:
                pytest.skip("port 80 needs root (or a low ip_unprivileged_port_start)")
        opts: dict[str, Any] = {**OPTS, "resolve_map": resolve}
        chain = probe.fetch_chain(f"http://{NAME}{PATH}", addresses[0], opts)
    finally:
        for s in servers:
            s.close()
    return Attempt("outside", "outside", {"address": addresses[0], "attempt": 1, **chain})


@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=_behaviour)
def test_verdict_agrees_with_boulders_rules_on_real_servers(b: Behaviour) -> None:
    expected_ok, codes = boulder_model(b)
    attempt = _play(b)
    v = le_verdict(attempt, TARGET, Options())
    note(f"behaviour {b}; verdict {v}")
    assert v.ok is expected_ok, (b, v)
    if not expected_ok:
        assert v.code in codes, (b, v)
