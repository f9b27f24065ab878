"""Conformance with Let's Encrypt's validator (Boulder, va/http.go), rule by rule.

Each test serves a real answer on a 127.x address, runs the real probe through
it and judges the recorded chain with ``le_verdict`` (Boulder's rules) and, where
the two differ, ``cm_verdict`` (Go's client, as cert-manager's self-check uses
it). The rule ids (B1...) are those of the conformance table in docs/diagnose.md,
which gives the Boulder source line of each.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acmelb.doctor import probe
from acmelb.doctor.checks.base import (
    Attempt,
    Options,
    Target,
    Verdict,
    ca_attempts,
    cm_verdict,
    le_redirect_target_problem,
    le_verdict,
)
from acmelb.doctor.engine import probe_options
from acmelb.doctor.findings import Code
from tests.diagnose.servers import (
    KEYAUTH,
    KEYAUTH_TOKEN,
    Server,
    answer,
    by_path,
    hang,
    http_response,
    loop_address,
    tls_context,
)

Serve = Callable[..., Server]
NAME = "app.example.com"
PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
URL = f"http://{NAME}{PATH}"
TARGET = Target(NAME, KEYAUTH_TOKEN, KEYAUTH)
OPTS = {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.5}


def fetch(address: str, resolve: dict[str, list[str]] | None = None, url: str = URL) -> Attempt:
    """The probe's chain for ``url`` dialled at ``address``, as the checks see it."""
    opts: dict[str, Any] = {**OPTS, "resolve_map": {NAME: [address], **(resolve or {})}}
    chain = probe.fetch_chain(url, address, opts)
    return Attempt("outside", "outside", {"address": address, "attempt": 1, **chain})


def verdicts(attempt: Attempt, options: Options | None = None) -> tuple[Verdict, Verdict]:
    return le_verdict(attempt, TARGET, options), cm_verdict(attempt, TARGET)


def redirecting(location: str, status: int = 302) -> Callable[[Any, bytes], None]:
    routes = {PATH: http_response(status, "", {"Location": location})}
    return by_path(routes, http_response(200, KEYAUTH))


# -- B1, B2: the request and its content encoding ---------------------------------------


def test_b1_request_headers(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    le, _ = verdicts(fetch(s.address))
    assert le.ok
    head = s.requests[0].decode("latin-1").split("\r\n")
    assert head[0] == f"GET {PATH} HTTP/1.1"
    lines = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in head[1:] if ln}
    assert lines["host"] == NAME
    assert lines["accept"] == "*/*"
    assert lines["accept-encoding"] == "gzip"  # Go's transport asks for it
    assert lines["user-agent"]


def test_b2_gzip_body_is_decoded(serve: Serve) -> None:
    s = serve(answer(200, gzip.compress(KEYAUTH.encode()), {"Content-Encoding": "gzip"}))
    attempt = fetch(s.address)
    assert attempt.final.raw["content_encoding"] == "gzip"
    le, cm = verdicts(attempt)
    assert le.ok and cm.ok


def test_b2_gzip_limit_applies_to_the_decoded_body(serve: Serve) -> None:
    body = gzip.compress((KEYAUTH + " " * 200).encode())
    assert len(body) < 128  # small on the wire, 287 bytes decoded
    s = serve(answer(200, body, {"Content-Encoding": "gzip"}))
    le, _ = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.BODY_TOO_LARGE


# -- B3, B4: addresses and fallback ----------------------------------------------------


def _attempt(address: str, outcome: str, status: int | None = None) -> Attempt:
    final = probe.new_hop(URL, address=address, outcome=outcome, status=status, body=KEYAUTH)
    return Attempt("outside", "outside", {"address": address, "final": final, "redirects": []})


def test_b3_ipv6_first_ipv4_only_after_a_dial_error() -> None:
    v6_refused = _attempt("2001:db8::1", "connect-refused")
    v6_answers = _attempt("2001:db8::1", "response", 404)
    v4 = _attempt("192.0.2.1", "response", 200)
    assert ca_attempts([v6_refused, v4]) == [v4]
    # a v6 address that answers (even wrongly) is the one judged: no fallback
    assert ca_attempts([v6_answers, v4]) == [v6_answers]


def test_b4_no_fallback_on_a_redirect_hop(serve: Serve) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting("http://next.example.com/ok"))
    # next.example.com: AAAA ::1 where nothing listens on port 80, A the server
    attempt = fetch(first.address, {"next.example.com": ["::1", final.address]})
    assert attempt.final.raw["fallback_from"]["address"] == "::1"
    le, cm = verdicts(attempt)
    assert cm.ok  # Go's dialer tries the next address
    assert not le.ok and le.code is Code.IPV6_UNREACHABLE


# -- B5..B17: redirects -----------------------------------------------------------------


@pytest.mark.parametrize(("status", "followed"), [(301, True), (302, True), (307, True),
                                                  (308, True), (303, False)])  # fmt: skip
def test_b7_redirect_statuses(serve: Serve, status: int, followed: bool) -> None:
    final = serve(by_path({"/ok": http_response(200, KEYAUTH)}, http_response(404)))
    first = serve(redirecting("http://next.example.com/ok", status))
    le, cm = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert cm.ok  # Go follows 303 too
    assert le.ok is followed
    if not followed:
        assert le.code is Code.REDIRECT_BAD_STATUS


def _chain_of(serve: Serve, redirects: int) -> Attempt:
    routes = {f"/{i}": http_response(302, "", {"Location": f"/{i + 1}"}) for i in range(30)}
    routes[f"/{redirects}"] = http_response(200, KEYAUTH)
    s = serve(by_path(routes, http_response(404)))
    return fetch(s.address, url=f"http://{NAME}/0")


@pytest.mark.parametrize(("redirects", "le_ok", "cm_ok"),
                         [(9, True, True), (10, True, False), (11, True, False),
                          (12, False, False)])  # fmt: skip
def test_b5_redirect_count(serve: Serve, redirects: int, le_ok: bool, cm_ok: bool) -> None:
    le, cm = verdicts(_chain_of(serve, redirects))
    assert le.ok is le_ok, le
    assert cm.ok is cm_ok, cm
    if not le_ok:
        assert le.code is Code.REDIRECT_TOO_MANY
    if not cm_ok:
        assert cm.code is Code.REDIRECT_TOO_MANY


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("ftp://next.example.com/ok", "only http and https"),  # B9 scheme
        ("http://next.example.com:8080/ok", "only ports 80 and 443"),  # B10 port
        ("http://app.example.com.well-known/acme-challenge/x", ".well-known"),  # B12
        ("http://next.example.invalidtld/ok", "IANA-registered"),  # B14
        ("http://next.example.com/" + "p" * 2000, "longer than 2000"),  # B15
    ],
)
def test_b9_b10_b12_b14_b15_refused_redirect_targets(serve: Serve, location: str, why: str) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting(location))
    resolve = {"next.example.com": [final.address], "next.example.invalidtld": [final.address]}
    le, _ = verdicts(fetch(first.address, resolve))
    assert not le.ok and le.code is Code.REDIRECT_BAD_TARGET
    assert why in le.detail


def test_b11_empty_host_is_refused() -> None:
    assert le_redirect_target_problem("http:///ok") == "the target has no host"


def test_b15_path_of_2000_bytes_is_followed(serve: Serve) -> None:
    path = "/" + "p" * 1999
    final = serve(by_path({path: http_response(200, KEYAUTH)}, http_response(404)))
    first = serve(redirecting("http://next.example.com" + path))
    le, _ = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert le.ok, le


def test_b10_b23_https_on_443_is_followed_without_checking_the_certificate(
    serve: Serve, tmp_path: Path
) -> None:
    address = loop_address()
    serve(answer(200, KEYAUTH), address=address, port=443, tls=tls_context(tmp_path))
    first = serve(redirecting("https://next.example.com/ok", 301))
    attempt = fetch(first.address, {"next.example.com": [address]})
    assert attempt.final.raw["tls_version"] in ("TLSv1.2", "TLSv1.3")
    le, cm = verdicts(attempt)
    assert le.ok and Code.REDIRECT_HTTPS in le.notes
    assert cm.ok


def test_b13_public_ip_targets_are_followed_reserved_ones_refused(serve: Serve) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting(f"http://{final.address}/ok"))
    attempt = fetch(first.address)
    lab = Options(assume_public=["127.0.0.0/8"])  # here 127/8 stands for the internet
    assert verdicts(attempt, lab)[0].ok
    le = verdicts(attempt)[0]
    assert not le.ok and le.code is Code.REDIRECT_BAD_TARGET and "loopback" in le.detail


def test_b13_ipv6_scope_zone_is_refused() -> None:
    assert le_redirect_target_problem("http://[fe80::1%25eth0]/ok") is not None


def test_b14_lab_suffixes_count_as_registered() -> None:
    assert le_redirect_target_problem("http://app.acmelb.test/x") is not None
    lab = Options(assume_public=["test"])
    assert le_redirect_target_problem("http://app.acmelb.test/x", lab) is None


def test_b8_b17_redirect_loop_compares_hosts_case_insensitively(serve: Serve) -> None:
    s = serve(redirecting(f"http://APP.Example.COM{PATH}"))
    le, _ = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.REDIRECT_LOOP


def test_b16_query_is_kept_on_redirect(serve: Serve) -> None:
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting("http://next.example.com/ok?x=1"))
    le, _ = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert le.ok
    assert final.requests[0].startswith(b"GET /ok?x=1 HTTP/1.1")


def test_b6_tls_below_1_2_on_a_redirecting_hop_is_refused() -> None:
    # OpenSSL on Debian 12 will not speak TLS 1.0/1.1 at all, so the rule is judged on
    # a recorded hop.
    hop = probe.new_hop(
        "https://app.example.com/x",
        address="192.0.2.1",
        outcome="response",
        status=301,
        tls_version="TLSv1.1",
        headers=[["Location", "https://app.example.com/y"]],
        redirect_to="https://app.example.com/y",
    )
    final = probe.new_hop("https://app.example.com/y", outcome="response", status=200, body=KEYAUTH)
    attempt = Attempt("o", "outside", {"address": "192.0.2.1", "final": final, "redirects": [hop]})
    le = le_verdict(attempt, TARGET)
    assert not le.ok and "TLS 1.2" in le.detail


# -- B18..B22: the response ------------------------------------------------------------


def test_b18_status_other_than_200_fails(serve: Serve) -> None:
    s = serve(answer(201, KEYAUTH))
    le, cm = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.HTTP_ERROR_STATUS
    assert not cm.ok


def test_b18_redirect_without_location_is_a_non_200_answer(serve: Serve) -> None:
    s = serve(answer(302, ""))
    le, cm = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.HTTP_ERROR_STATUS
    assert not cm.ok and cm.code is Code.HTTP_ERROR_STATUS


@pytest.mark.parametrize(("padding", "le_ok"), [(127 - len(KEYAUTH), True),
                                                (128 - len(KEYAUTH), False)])  # fmt: skip
def test_b19_body_limit_is_fewer_than_128_bytes(serve: Serve, padding: int, le_ok: bool) -> None:
    s = serve(answer(200, KEYAUTH + " " * padding))
    le, cm = verdicts(fetch(s.address))
    assert le.ok is le_ok
    if not le_ok:
        assert le.code is Code.BODY_TOO_LARGE
    assert not cm.ok and cm.code is Code.TRAILING_WHITESPACE  # no trimming in Go's compare


@pytest.mark.parametrize("tail", ["\n", "\r\n", "\t", "\v", "\f", " ", "\u0085", "\u00a0",
                                  "\u2003", "\u3000"])  # fmt: skip
def test_b21_trailing_white_space_by_gos_definition_is_trimmed(serve: Serve, tail: str) -> None:
    s = serve(answer(200, (KEYAUTH + tail).encode("utf-8")))
    le, cm = verdicts(fetch(s.address))
    assert le.ok, le
    assert not cm.ok and cm.code is Code.TRAILING_WHITESPACE


@pytest.mark.parametrize("body", [" " + KEYAUTH, KEYAUTH + "\x1c", KEYAUTH + "\u200b"])
def test_b21_b22_other_white_space_is_not_trimmed(serve: Serve, body: str) -> None:
    # leading space; U+001C (Python's isspace says yes, Go's unicode.IsSpace no); U+200B
    s = serve(answer(200, body.encode("utf-8")))
    le, _ = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.WRONG_CONTENT


def test_b20_body_shorter_than_its_content_length_fails(serve: Serve) -> None:
    def short(conn: Any, _req: bytes) -> None:
        conn.sendall(http_response(200, KEYAUTH, {"Content-Length": "100"}))

    s = serve(short)
    attempt = fetch(s.address)
    assert attempt.final.raw["body_incomplete"]
    le, cm = verdicts(attempt)
    assert not le.ok and le.code is Code.WRONG_CONTENT and "unexpected EOF" in le.detail
    assert not cm.ok


# -- B3 (issue 23): IPv6 is blamed only when IPv6 alone fails -----------------------------


def _both_families(v6_answer: Attempt, v4_answer: Attempt) -> Any:
    """One outside run with the AAAA attempt (a real chain, its address renamed to an
    IPv6 one: only 127/8 is dialled here) and the A attempt."""
    import json

    from acmelb.doctor.checks.base import VantageRun

    v6 = json.loads(json.dumps(v6_answer.raw).replace(v6_answer.address, "2001:db8::10"))
    result = {
        "schema": "acmelb.probe/v1",
        "name": NAME,
        "url": URL,
        "resolution": {"name": NAME, "source": "given", "aaaa": ["2001:db8::10"],
                       "a": [v4_answer.address], "error": None},
        "attempts": [v6, v4_answer.raw],
    }  # fmt: skip
    return VantageRun("outside:local", "outside", False, result)


@pytest.mark.parametrize(("v6_status", "v4_status", "blamed"), [(404, 404, False),
                                                               (404, 200, True)])  # fmt: skip
def test_b3_ipv6_is_blamed_only_when_ipv4_passes(
    serve: Serve, v6_status: int, v4_status: int, blamed: bool
) -> None:
    from acmelb.doctor.diagnose import analyse

    v6 = fetch(serve(answer(v6_status, KEYAUTH if v6_status == 200 else "nope")).address)
    v4 = fetch(serve(answer(v4_status, KEYAUTH if v4_status == 200 else "nope")).address)
    lab = Options(assume_public=["127.0.0.0/8", "2001:db8::/32"])
    report = analyse(TARGET, [_both_families(v6, v4)], lab)
    assert report.verdicts["acme-ca"] == "fail" and report.root_cause is not None
    codes = {f.code for f in report.findings}
    assert (Code.IPV6_UNREACHABLE in codes) is blamed
    assert report.root_cause.code is (Code.IPV6_UNREACHABLE if blamed else Code.CHALLENGE_NOT_FOUND)


# -- B13 (issue 23): Boulder's reserved blocks are IANA's special-purpose registries -------


@pytest.mark.parametrize(("address", "why"), [
    ("240.0.0.1", "reserved for future use (RFC 1112)"),
    ("10.0.0.1", "private-use (RFC 1918)"),
    ("192.0.0.9", "Port Control Protocol anycast"),
    ("192.31.196.1", "AS112-v4"),
    ("192.52.193.1", "AMT"),
    ("192.88.99.1", "6to4 relay"),
    ("192.175.48.1", "AS112"),
    ("[2002::1]", "6to4"),
    ("[3fff::1]", "documentation (RFC 9637)"),
    ("[2620:4f:8000::1]", "AS112"),
])  # fmt: skip
def test_b13_reserved_blocks_and_their_names(address: str, why: str) -> None:
    problem = le_redirect_target_problem(f"http://{address}/ok")
    assert problem is not None and why in problem
    if not why.startswith("private-use"):
        assert "RFC 1918" not in problem  # 240.0.0.0/4 was called private


def test_b13_a_public_address_is_not_reserved() -> None:
    assert le_redirect_target_problem("http://8.8.8.8/ok") is None


# -- PROXY protocol (issue 23): a PROXY-prefixed request must really be rescued -------------


@pytest.mark.parametrize(("with_header", "named"), [(answer(200, KEYAUTH), True),
                                                    (answer(404, "nope"), False)])  # fmt: skip
def test_proxy_protocol_required_only_when_the_header_rescues(
    serve: Serve, with_header: Any, named: bool
) -> None:
    """A listener that closes requests without a PROXY line (nginx `listen 80
    proxy_protocol`): the probe retries with the header. Only an answer the CA could use
    (not a 404: the path lacks the token either way) names proxy-protocol-required."""
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse
    from tests.diagnose.servers import proxy_required

    s = serve(proxy_required(with_header))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [s.address], "resolve": {},
        "proxy_protocol": "on-failure", "options": OPTS,
    })  # fmt: skip
    assert any(a["proxy_protocol"] for a in result["attempts"])  # the probe retried
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    codes = {f.code for f in report.findings}
    assert (Code.PROXY_PROTOCOL_REQUIRED in codes) is named
    assert report.verdicts["acme-ca"] == "fail" and report.root_cause is not None
    assert report.root_cause.code is (Code.PROXY_PROTOCOL_REQUIRED if named else Code.EMPTY_REPLY)


# -- a refused :443 hop is named as port 443 (issue 23) ---------------------------------------


def test_refused_443_hop_after_https_redirect_says_port_443(serve: Serve) -> None:
    """Port 80 redirects to https (Boulder follows it, B10); nothing listens on 443 of the
    redirect target: port-443-refused, not port-80-refused."""
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse

    dead = loop_address()  # nothing listens on its port 443: refused
    first = serve(redirecting("https://next.example.com/ok", 301))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [first.address],
        "resolve": {"next.example.com": [dead]}, "options": OPTS,
    })  # fmt: skip
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    assert report.verdicts["acme-ca"] == "fail"
    found = {f.code: f for f in report.findings}
    assert Code.PORT_443_REFUSED in found and Code.PORT_80_REFUSED not in found, found
    assert "port 443" in found[Code.PORT_443_REFUSED].title
    assert "port 80" not in found[Code.PORT_443_REFUSED].title
    assert report.root_cause is not None and report.root_cause.code is Code.PORT_443_REFUSED


# -- B25: one deadline for the whole validation ----------------------------------------------

DIAL = 1.0  # --timeout, scaled down: the deadline is 1.5 s (15 s at the default 10)


def _late(seconds: float, then: bytes) -> Callable[[Any, bytes], None]:
    def h(conn: Any, req: bytes) -> None:
        hang(seconds)(conn, req)
        conn.sendall(then)

    return h


def _timed(address: str, url: str = URL) -> Attempt:
    opts: dict[str, Any] = {**probe_options(DIAL), "resolve_map": {NAME: [address]}}
    chain = probe.fetch_chain(url, address, opts)
    return Attempt("outside", "outside", {"address": address, "attempt": 1, **chain})


def test_b25_an_answer_after_the_dials_share_passes_as_at_the_ca(serve: Serve) -> None:
    # 1.2 s: past --timeout (the old read bound, a read-timeout), inside the deadline
    s = serve(_late(1.2, http_response(200, KEYAUTH)))
    attempt = _timed(s.address)
    assert attempt.final.outcome == "response" and le_verdict(attempt, TARGET).ok is True


def test_b25_silence_until_the_deadline_is_a_read_timeout(serve: Serve) -> None:
    s = serve(hang(2.5))
    attempt = _timed(s.address)
    assert attempt.final.outcome == "read-timeout", attempt.final
    assert 1.4 <= attempt.final.raw["elapsed_ms"] / 1000 < 2.2
    assert le_verdict(attempt, TARGET).ok is False


def test_b25_the_deadline_covers_every_hop(serve: Serve) -> None:
    # each hop alone is in time (0.8 s), the two together are not: Boulder's one context
    routes = {
        PATH: http_response(302, "", {"Location": "/next"}),
        "/next": http_response(200, KEYAUTH),
    }

    def slow_hops(conn: Any, req: bytes) -> None:
        hang(0.8)(conn, req)
        by_path(routes, http_response(404, ""))(conn, req)

    s = serve(slow_hops)
    attempt = _timed(s.address)
    assert len(attempt.redirects) == 1
    assert attempt.final.outcome in ("read-timeout", "total-timeout"), attempt.final
    assert le_verdict(attempt, TARGET).ok is False


def test_b25_the_default_timeout_is_the_cas() -> None:
    # Boulder: each dial 10 s (va/va.go singleDialTimeout), the whole validation ~15 s
    assert Options().timeout == 10.0
    assert probe_options(Options().timeout)["deadline"] == 15.0
    assert probe_options(Options().timeout)["connect_timeout"] == 10.0


# -- redirect targets as Boulder parses them (issue 23) ---------------------------------------


def test_b11_userinfo_in_location_is_ignored(serve: Serve) -> None:
    """Go's URL.Hostname() drops `user:pass@`; Boulder follows to the host after it."""
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting("http://user:secret@next.example.com/ok"))
    le, _ = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert le.ok, le


def test_b14_trailing_dot_host_is_refused(serve: Serve) -> None:
    """publicsuffix-go has no rule for `next.example.com.` (empty last label)."""
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting("http://next.example.com./ok"))
    le, _ = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert not le.ok and le.code is Code.REDIRECT_BAD_TARGET
    assert "IANA TLD lookup" in le.detail


def test_b15_path_limit_counts_decoded_bytes(serve: Serve) -> None:
    """maxPathSize applies to req.URL.Path, after percent-decoding: 2100 bytes as
    written, 700 decoded, is followed."""
    final = serve(answer(200, KEYAUTH))
    first = serve(redirecting("http://next.example.com/" + "%70" * 700))
    le, _ = verdicts(fetch(first.address, {"next.example.com": [final.address]}))
    assert le.ok, le
    assert le_redirect_target_problem("http://next.example.com/" + "%70" * 2001) is not None


@pytest.mark.parametrize(("host", "followed"), [("[2001:db8::1]", True),
                                                ("[2001:db8:0::1]", False),
                                                ("[2001:0db8::1]", False),
                                                ("[2001:DB8::1]", True)])  # fmt: skip
def test_b13_ipv6_literal_must_be_canonical(host: str, followed: bool) -> None:
    """Boulder's preresolved dialer is built for netip's canonical form and refuses to
    dial the host as written ("preresolvedDialer mismatch"); the host is lower-cased
    first (B8). Judged on the rule (dialling 2001:db8:: is off limits here)."""
    doc = Options(assume_public=["2001:db8::/32"])  # the documentation block stands for public
    why = le_redirect_target_problem(f"http://{host}/ok", doc)
    assert (why is None) is followed, why
    assert le_redirect_target_problem("http://[0::1]/ok") is not None  # reserved as well


# -- G: Go's HTTP client reads the response head (Boulder's and cert-manager's) -------------

_KA = KEYAUTH.encode()


def _raw(data: bytes) -> Callable[[Any, bytes], None]:
    def h(conn: Any, _req: bytes) -> None:
        conn.sendall(data)  # whatever came (the probe may try TLS after a bad response)

    return h


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 87\r\n\r\n",  # G1
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",  # G1
        b"HTTP/1.1 200 OK\nContent-Length: 87\n\n",  # G2 bare LF
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\nContent-Length: 87\r\n\r\n",  # G3
        b"HTTP/1.1 200 OK\r\nContent-Length: 87\r\nContent-Length: 87\r\n\r\n",  # G4 same twice
    ],
)
def test_g_heads_go_reads(serve: Serve, head: bytes) -> None:
    s = serve(_raw(head + _KA))
    le, cm = verdicts(fetch(s.address))
    assert le.ok, le
    assert cm.ok, cm


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 87\r\nContent-Length: 88\r\n\r\n", "multiple"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 87, 87\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +87\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 87\r\n\r\n", "MIME header"),
        (b"HTTP/2 200 OK\r\nContent-Length: 87\r\n\r\n", "HTTP version"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", "transfer encoding"),
    ],
)
def test_g5_malformed_heads_go_refuses(serve: Serve, head: bytes, why: str) -> None:
    """Python would read these; Go's ReadResponse refuses them (no response at all)."""
    s = serve(_raw(head + _KA))
    attempt = fetch(s.address)
    assert attempt.final.outcome == "bad-response" and why in attempt.final.error
    le, cm = verdicts(attempt)
    assert not le.ok and not cm.ok


def test_g6_chunked_under_http_1_0_is_not_decoded(serve: Serve) -> None:
    """Go ignores Transfer-Encoding on an HTTP/1.0 response: the chunk framing is body."""
    chunked = b"%x\r\n" % len(_KA) + _KA + b"\r\n0\r\n\r\n"
    s = serve(_raw(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked))
    le, _ = verdicts(fetch(s.address))
    assert not le.ok and le.code is Code.WRONG_CONTENT, le
    s = serve(_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked))
    assert verdicts(fetch(s.address))[0].ok


@pytest.mark.parametrize(("tail", "ok"), [(b"\xa0", False), (b"\x85", False),
                                          ("\u00a0".encode(), True)])  # fmt: skip
def test_b21_raw_latin1_space_bytes_are_not_trimmed(serve: Serve, tail: bytes, ok: bool) -> None:
    """Go decodes a raw 0xA0/0x85 (not UTF-8) as U+FFFD, not a space: no trim; the UTF-8
    encoded U+00A0 is a space and is trimmed."""
    s = serve(_raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + _KA + tail))
    le, _ = verdicts(fetch(s.address))
    assert le.ok is ok, le


def test_g5_a_head_go_refuses_is_named_as_such(serve: Serve) -> None:
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse

    s = serve(_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 87\r\nContent-Length: 88\r\n\r\n" + _KA))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [s.address], "options": OPTS,
    })  # fmt: skip
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    assert report.verdicts["acme-ca"] == "fail" and not report.ok
    assert report.root_cause is not None and "Go" in report.root_cause.title


def test_b10_plain_http_on_443_after_https_redirect_is_a_tls_failure(serve: Serve) -> None:
    """The https hop reaches a plain-HTTP listener on 443: the TLS handshake fails. The
    finding says so (port 443, TLS), not "closes without a response" with PROXY advice."""
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse

    address = loop_address()
    # no TLS on 443: a plain-HTTP server answering at once (the handshake reads HTTP)
    serve(answer(200, KEYAUTH), address=address, port=443, read_first=False)
    first = serve(redirecting("https://next.example.com/ok", 301))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [first.address],
        "resolve": {"next.example.com": [address]}, "options": OPTS,
    })  # fmt: skip
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    assert report.verdicts["acme-ca"] == "fail" and not report.ok
    assert report.root_cause is not None
    assert "TLS handshake on port 443" in report.root_cause.title
    assert report.root_cause.code is Code.HTTPS_HOP_FAILED
    f = next(f for f in report.findings if f.code is report.root_cause.code)
    assert "PROXY" not in f.explanation


def test_redirect_to_a_name_without_address_fails_with_a_finding_naming_it(serve: Serve) -> None:
    """A redirect to a name that does not resolve (NXDOMAIN or no address): the CA
    fails; the report is not ok and its root cause names the redirect target (issue 23:
    it had a failing verdict and no finding)."""
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse

    first = serve(redirecting("http://nx.example.com/ok"))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [first.address],
        "resolve": {"nx.example.com": []}, "options": OPTS,
    })  # fmt: skip
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    assert report.verdicts["acme-ca"] == "fail" and not report.ok
    assert report.root_cause is not None and report.root_cause.code is Code.DNS_NO_ADDRESS
    assert "nx.example.com" in report.root_cause.title


def test_hung_443_hop_after_https_redirect_says_port_443(serve: Serve) -> None:
    from acmelb.doctor.checks.base import VantageRun
    from acmelb.doctor.diagnose import analyse
    from tests.diagnose.servers import hang

    address = loop_address()
    serve(hang(2.0), address=address, port=443, read_first=False)  # accepts, says nothing
    first = serve(redirecting("https://next.example.com/ok", 301))
    result = probe.run_request({
        "name": NAME, "url": URL, "repeat": 1, "addresses": [first.address],
        "resolve": {"next.example.com": [address]}, "options": OPTS,
    })  # fmt: skip
    lab = Options(assume_public=["127.0.0.0/8"])
    report = analyse(TARGET, [VantageRun("outside:local", "outside", False, result)], lab)
    assert report.verdicts["acme-ca"] == "fail" and report.root_cause is not None
    assert report.root_cause.code is Code.HTTPS_HOP_FAILED
    assert "port 443" in report.root_cause.title
