"""Stage HTTP: what the CA would get, judged by Let's Encrypt's rules.

``le_failures`` evaluates every probe of the primary vantages (outside ones
when there are any) once; the checks below each report their own codes from
it: connection failures, status and content, redirects.
"""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import urlsplit

from acmelb.doctor.checks.base import (
    TLS_FAILED,
    Attempt,
    Context,
    Verdict,
    dedupe,
    describe,
    le_redirect_problem,
    le_verdict,
)
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding, Severity, remedy_tcp_passthrough
from acmelb.names import url_host

Failures = dict[Code, list[tuple[Attempt, Verdict]]]


def _ipv6_only_broken(attempts: list[Attempt], ctx: Context) -> bool:
    """IPv6 alone fails: every AAAA attempt fails and IPv4 passes, or the AAAA address
    cannot even be dialled while the A address answers. When IPv4 fails the same way
    (the same 404, wrong key, refused redirect or dead 443), the fault is not IPv6's."""
    v6 = [a for a in attempts if a.family == "ipv6"]
    v4 = [a for a in attempts if a.family == "ipv4"]
    if not (v6 and v4) or any(le_verdict(a, ctx.target, ctx.options).ok for a in v6):
        return False
    if any(le_verdict(a, ctx.target, ctx.options).ok for a in v4):
        return True
    return all(a.dial_error for a in v6) and any(not a.dial_error for a in v4)


def le_failures(ctx: Context) -> Failures:
    """Failing probes of the primary vantages, grouped by the code they point to (made
    once for the checks that read it; read, not changed)."""
    return ctx.derived("le_failures", _le_failures)


def _le_failures(ctx: Context) -> Failures:
    out: Failures = defaultdict(list)
    for run in ctx.primary:
        attempts = run.public_attempts
        skip_v6 = _ipv6_only_broken(attempts, ctx)
        for a in attempts:
            if skip_v6 and a.family == "ipv6":
                continue  # owned by ipv6-unreachable
            v = le_verdict(a, ctx.target, ctx.options)
            if not v.ok and v.code is not None:
                out[v.code].append((a, v))
    return dict(out)


def _vantages(items: list[tuple[Attempt, Verdict]]) -> list[str]:
    seen: list[str] = []
    for a, _v in items:
        if a.vantage not in seen:
            seen.append(a.vantage)
    return seen


def _evidence(items: list[tuple[Attempt, Verdict]], limit: int = 6) -> list[str]:
    lines: list[str] = []
    for a, v in items:
        line = describe(a)
        if v.detail and v.detail not in line and v.code not in _SELF_EXPLAINED:
            line += f" [{v.detail}]"
        lines.append(line)
    return dedupe(lines, limit)


def _share(items: list[tuple[Attempt, Verdict]], ctx: Context) -> str:
    total = sum(len(r.public_attempts) for r in ctx.primary)
    return f"{len(items)} of {total} probes"


def _where(ctx: Context) -> str:
    return "from outside" if ctx.outside else "from inside (no outside vantage was given)"


def _connection_texts(ctx: Context) -> dict[Code, tuple[str, str, str]]:
    where = _where(ctx)
    t = ctx.options.timeout
    return {
        Code.PORT_80_TIMEOUT: (
            f"port 80 times out {where}",
            f"Connecting to port 80 {where} gets no answer within {t:g} s ("
            "{share}). Packets are dropped on the way: a firewall, a cloud security "
            "group, or no listener for port 80 on the load balancer.",
            "Open TCP port 80 from anywhere (0.0.0.0/0 and ::/0) in the firewall and "
            "security group in front of the load balancer, and give the load balancer "
            "a listener on port 80 forwarding to the backends. Let's Encrypt validates "
            "from several networks and does not publish their addresses.",
        ),
        Code.PORT_80_REFUSED: (
            f"port 80 is refused {where}",
            "The address answers, but nothing listens on port 80 ({share}): a "
            "connection refused (TCP RST) came back.",
            "Add a port-80 listener on the load balancer (or the host the name points "
            "at) that forwards to the service answering /.well-known/acme-challenge/.",
        ),
        Code.EMPTY_REPLY: (
            "the connection closes without an HTTP response",
            "The connection is accepted, then closed or reset before any HTTP "
            "response ({share}). Typical causes: a backend expecting a PROXY protocol "
            "header or TLS, a load balancer with no healthy backend that drops the "
            "connection, or an IPS/WAF cutting the request.",
            "Check the load balancer's backend health and logs for this listener; if "
            "the backend requires PROXY protocol make the LB send it (HAProxy: "
            "`server ... send-proxy`, nginx: `proxy_protocol on;` in the stream block).",
        ),
        Code.READ_TIMEOUT: (
            "connected, but no HTTP response in time",
            "The TCP connection is accepted, then no complete HTTP response arrives "
            f"within {ctx.options.deadline:g} s ({{share}}): a hung backend, a listener that "
            "waits for a PROXY header or TLS, or an LB forwarding to a dead backend.",
            "Look at the backend behind port 80: is it up, and does it answer "
            "`curl -v http://NAME/.well-known/acme-challenge/x` locally? If it needs "
            "PROXY protocol, the LB must send it.",
        ),
        Code.MALFORMED_RESPONSE: (
            "the answer is not HTTP that Go's client reads",
            "Something answers, but Go's HTTP client, which the CA and cert-manager "
            "use, refuses the response ({share}): its head or its framing breaks "
            "HTTP/1.1 (two different Content-Lengths, a Content-Length that is not "
            "digits, a Transfer-Encoding other than chunked, a header line without a "
            "colon, an `HTTP/2` status line on an HTTP/1 connection), or the TLS "
            "handshake of an https hop fails. Browsers and curl are more lenient.",
            "Fix what writes that response (the evidence quotes Go's error): usually "
            "a custom or embedded HTTP server, a WAF, or a load balancer rule that "
            "answers on its own; test with a Go client (`cmctl` or the CA's staging "
            "environment), not with a browser.",
        ),
        Code.HTTP_ON_HTTPS_PORT: (
            "port 80 speaks TLS (plain HTTP reached an HTTPS listener)",
            "The CA sends plain HTTP to port 80, and what answers there expects TLS "
            "({share}). The load balancer forwards port 80 to the backend's HTTPS port, "
            "or the listener on 80 is configured for SSL.",
            "Forward port 80 to the backend's plain-HTTP port (e.g. 80 -> 80, not "
            "80 -> 443), or remove `ssl` from the port-80 listener (nginx: "
            "`listen 80;`, not `listen 80 ssl;`). Redirect to https from a plain-HTTP "
            "listener if you must: the CA follows redirects to port 443.",
        ),
    }


HTTPS_HOP_CODES = (Code.PORT_443_REFUSED, Code.PORT_443_TIMEOUT, Code.HTTPS_HOP_FAILED)


def _texts_for(
    code: Code, items: list[tuple[Attempt, Verdict]], ctx: Context
) -> tuple[str, str, str]:
    """The words for one connection code: a failing :443 hop has its own."""
    if code in HTTPS_HOP_CODES:
        return _https_hop_texts(code, items, ctx)
    return _connection_texts(ctx)[code]


def _https_hop_texts(
    code: Code, items: list[tuple[Attempt, Verdict]], ctx: Context
) -> tuple[str, str, str]:
    """Port 80 answered with a redirect to https; the :443 hop is what fails (Boulder
    follows redirects to 443)."""
    hosts = dedupe([urlsplit(a.final.url).netloc for a, _ in items], 3)
    share = _share(items, ctx)
    t = ctx.options.timeout
    remedy = (
        "Open and serve port 443 for " + ", ".join(hosts) + " (a TLS listener forwarding "
        "/.well-known/acme-challenge/ to the service answering it), or stop redirecting the "
        "challenge path to https: serve /.well-known/acme-challenge/ on plain HTTP."
    )
    if code is Code.PORT_443_REFUSED:
        return (
            "port 443 is refused after the redirect to https",
            "Port 80 redirects to https, and port 443 of the redirect target refuses the "
            f"connection ({share}): nothing listens on 443 there.",
            remedy,
        )
    if code is Code.PORT_443_TIMEOUT:
        return (
            "port 443 times out after the redirect to https",
            "Port 80 redirects to https, and connecting to port 443 of the redirect target "
            f"gets no answer within {t:g} s ({share}): a firewall or security group drops "
            "443, or the load balancer has no listener on it.",
            remedy,
        )
    if all(a.final.outcome in ("read-timeout", "total-timeout") for a, _ in items):
        return (
            "port 443 accepts, then no answer in time after the redirect to https",
            "Port 80 redirects to https, and port 443 of the redirect target accepts the "
            f"connection but the TLS handshake or the HTTP answer does not come within "
            f"{ctx.options.deadline:g} s ({share}): a listener waiting for a PROXY header, or a "
            "hung backend.",
            remedy,
        )
    if all((a.final.error or "").startswith(TLS_FAILED) for a, _ in items):
        return (
            "the TLS handshake on port 443 fails after the redirect to https",
            "Port 80 redirects to https, and the TLS handshake on port 443 of the redirect "
            f"target fails ({share}): plain HTTP served on 443 (`wrong version number`), "
            "or a server offering only TLS below 1.2 (`unsupported protocol`), which the "
            "CA's Go client refuses.",
            "Serve TLS 1.2 or later on port 443 with any certificate (the CA does not check "
            "it), or stop redirecting /.well-known/acme-challenge/ to https.",
        )
    return (
        "the https hop closes without an HTTP response",
        "Port 80 redirects to https, and the TLS connection to port 443 is closed without "
        f"an HTTP response ({share}): a TLS handshake the CA cannot complete (a version "
        "below TLS 1.2, no certificate for the name yet), or plain HTTP served on 443.",
        "Serve TLS 1.2 or later on port 443 with any certificate (the CA does not check "
        "it), or stop redirecting /.well-known/acme-challenge/ to https.",
    )


class Connection:
    """The TCP/HTTP exchange itself fails."""

    codes = (
        Code.PORT_80_TIMEOUT,
        Code.PORT_80_REFUSED,
        Code.EMPTY_REPLY,
        Code.READ_TIMEOUT,
        Code.HTTP_ON_HTTPS_PORT,
        Code.MALFORMED_RESPONSE,
        *HTTPS_HOP_CODES,
    )
    stage = Stage.HTTP
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        fails = le_failures(ctx)
        if not any(code in fails for code in self.codes):
            return []
        out: list[Finding] = []
        for code in self.codes:
            items = fails.get(code, [])
            if not items:
                continue
            title, expl, remedy = _texts_for(code, items, ctx)
            out.append(
                Finding(
                    code,
                    title,
                    expl.replace("{share}", _share(items, ctx)),
                    remedy,
                    vantages=_vantages(items),
                    evidence=_evidence(items),
                )
            )
        return out


class Content:
    """Status and body of the final response."""

    codes = (
        Code.CHALLENGE_NOT_FOUND,
        Code.HTTP_ERROR_STATUS,
        Code.WRONG_CONTENT,
        Code.BODY_TOO_LARGE,
    )
    stage = Stage.HTTP
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        fails = le_failures(ctx)
        out: list[Finding] = []
        for code in self.codes:
            items = fails.get(code, [])
            if not items:
                continue
            title, expl, remedy, severity = _content_texts(code, items, ctx)
            out.append(
                Finding(
                    code,
                    title,
                    expl,
                    remedy,
                    severity=severity,
                    vantages=_vantages(items),
                    evidence=_evidence(items),
                )
            )
        return out


# A finding's title, explanation, remedy and severity (None: the code's own).
_Texts = tuple[str, str, str, Severity | None]


def _content_texts(code: Code, items: list[tuple[Attempt, Verdict]], ctx: Context) -> _Texts:
    """The words of ``Content``'s finding ``code`` about the failing probes ``items``."""
    share = _share(items, ctx)
    if code is Code.CHALLENGE_NOT_FOUND:
        return _not_found_texts(ctx, share)
    if code is Code.HTTP_ERROR_STATUS:
        return _error_status_texts(items, share)
    if code is Code.WRONG_CONTENT:
        return _wrong_content_texts(ctx, share)
    return _too_large_texts(share)


def _not_found_texts(ctx: Context, share: str) -> _Texts:
    host, token = url_host(ctx.target.name), ctx.target.token
    return (
        "the challenge URL answers 404",
        f"GET {ctx.target.url} returns 404 ({share}): the request reaches a "
        "web server that does not have this token. Either the responder "
        "(cert-manager's solver, acmelb, the webroot) is not running or not "
        "routed for /.well-known/acme-challenge/, or the LB sends the request "
        "to a backend that lacks the token.",
        f"Route http://{host}/.well-known/acme-challenge/ to the responder "
        "on every backend. With cert-manager, check the solver Ingress "
        "(`kubectl get ingress -A | grep cm-acme-http-solver`) and its "
        "ingress class; with a webroot, that the file is at "
        f"WEBROOT/.well-known/acme-challenge/{token} on every backend.",
        None,
    )


def _error_status_texts(items: list[tuple[Attempt, Verdict]], share: str) -> _Texts:
    statuses = sorted({str(a.final.status) for a, _ in items})
    return (
        f"the challenge URL answers HTTP {', '.join(statuses)}",
        f"The CA needs status 200; it gets {', '.join(statuses)} ({share}). "
        "503/502 usually come from a load balancer with no healthy backend; "
        "401/403 from authentication or a WAF in front.",
        "Make /.well-known/acme-challenge/ reachable without "
        "authentication, exempt it from WAF rules and redirects to login "
        "pages, and check the LB's backend health checks for port 80.",
        None,
    )


def _wrong_content_texts(ctx: Context, share: str) -> _Texts:
    """A random token answered (a catch-all page: a warning), or the real token answered
    with something else than its key authorization."""
    remedy = (
        "Route /.well-known/acme-challenge/ to the ACME responder ahead "
        "of catch-all rules (SPA fallbacks, default backends, "
        "`try_files ... /index.html`)."
    )
    if ctx.target.random_token:
        return (
            "any challenge path answers 200",
            f"A random token got HTTP 200 with a body that is not a key "
            f"authorization ({share}): a catch-all page answers "
            "/.well-known/acme-challenge/. Unless the responder takes over "
            "that path while a challenge is pending, the CA will get this "
            "page instead of the key authorization.",
            remedy,
            Severity.WARNING,
        )
    return (
        "status 200, but the body is not the key authorization",
        f"The CA compares the body with {ctx.target.key_authorization!r} "
        f"and gets something else ({share}): a catch-all page, a "
        "default site or another token's file answers the path.",
        remedy,
        None,
    )


def _too_large_texts(share: str) -> _Texts:
    return (
        "the challenge response is too large",
        f"Let's Encrypt reads fewer than 128 bytes of the challenge body; "
        f"this answer is larger ({share}), so it is an error page or "
        "HTML rather than the key authorization.",
        "Serve the key authorization alone, as text/plain, with no "
        "wrapping page; route the path to the responder, not to a site.",
        None,
    )


class Redirects:
    codes = (
        Code.REDIRECT_BAD_STATUS,
        Code.REDIRECT_BAD_TARGET,
        Code.REDIRECT_LOOP,
        Code.REDIRECT_TOO_MANY,
        Code.REDIRECT_HTTPS,
    )
    stage = Stage.HTTP
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        fails = le_failures(ctx)
        out: list[Finding] = []
        texts = {
            Code.REDIRECT_BAD_STATUS: (
                "a redirect uses a status the CA does not follow",
                "Let's Encrypt follows only 301, 302, 307 and 308.",
                "Use 301 (or 308) for the http -> https redirect, and exempt "
                "/.well-known/acme-challenge/ from other redirects.",
            ),
            Code.REDIRECT_BAD_TARGET: (
                "a redirect points where the CA will not follow",
                "Let's Encrypt follows redirects only to http or https, only on ports 80 "
                "and 443, only to DNS names, and rejects hosts ending in '.well-known' "
                "(a Location built without the '/').",
                "Redirect to https://NAME/.well-known/acme-challenge/TOKEN on port 443 "
                "(or serve the challenge on port 80 directly). In nginx: "
                "`return 301 https://$host$request_uri;`",
            ),
            Code.REDIRECT_LOOP: (
                "the redirects loop",
                "Following the Location headers comes back to a URL already visited.",
                "Exempt /.well-known/acme-challenge/ from the redirect rules, or fix the "
                "rule pair that sends the request back and forth (often http<->https "
                "behind a TLS-terminating LB that does not set X-Forwarded-Proto).",
            ),
            Code.REDIRECT_TOO_MANY: (
                "more than 10 redirects",
                "Let's Encrypt stops after 10 redirects.",
                "Shorten the chain: one redirect to https is enough.",
            ),
        }
        for code, (title, expl, remedy) in texts.items():
            items = fails.get(code, [])
            if not items:
                continue
            ev = dedupe(
                [
                    f"{describe(a, a.redirects[0] if a.redirects else None)} [{v.detail}]"
                    for a, v in items
                ]
            )
            out.append(
                Finding(
                    code,
                    title,
                    f"{expl} {items[0][1].detail}.",
                    remedy,
                    vantages=_vantages(items),
                    evidence=ev[:6],
                )
            )
        https: list[tuple[Attempt, Verdict]] = []
        for run in ctx.primary:
            for a in run.public_attempts:
                red = le_redirect_problem(a, ctx.options)
                if red is not None and Code.REDIRECT_HTTPS in red.notes:
                    https.append((a, red))
        if https:
            ev = dedupe([describe(a) for a, _ in https], 3)
            out.append(
                Finding(
                    Code.REDIRECT_HTTPS,
                    "redirected to https",
                    "The challenge URL redirects to https on port 443. The CA follows it and "
                    "ignores certificate errors there, so this works, including for the "
                    "first certificate.",
                    "Nothing to do, as long as the https side serves the token too.",
                    vantages=_vantages(https),
                    evidence=ev,
                )
            )
        return out


class Ipv6:
    codes = (Code.IPV6_UNREACHABLE,)
    stage = Stage.HTTP
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        for run in ctx.primary:
            attempts = run.public_attempts
            if not _ipv6_only_broken(attempts, ctx):
                continue
            v6 = [a for a in attempts if a.family == "ipv6"]
            dial_only = all(a.dial_error for a in v6)
            ev = dedupe([describe(a) for a in v6], 3)
            ev += dedupe([describe(a) for a in attempts if a.family == "ipv4"], 2)
            out.append(
                Finding(
                    Code.IPV6_UNREACHABLE,
                    "the AAAA address fails while the A address works",
                    "Let's Encrypt tries the AAAA address first. "
                    + (
                        "It falls back to IPv4 only after a connection error, which is what "
                        "happens here, so validation may pass, slowly; other clients suffer."
                        if dial_only
                        else "Here the IPv6 side answers, but wrongly, so the CA does not "
                        "fall back to IPv4 and validation fails."
                    ),
                    "Fix IPv6 on the load balancer (listener, firewall, routing for the AAAA "
                    "address), or remove the AAAA record until it works.",
                    severity=Severity.WARNING if dial_only else Severity.ERROR,
                    vantages=[run.label],
                    evidence=ev,
                )
            )
        return out


def _backends(ctx: Context) -> list[str]:
    """Addresses at which inside vantages reached the backend itself (not loopback)."""
    out: list[str] = []
    for r in ctx.inside:
        for a in r.local_attempts:
            if (
                a.final.outcome == "response"
                and not a.address.startswith("127.")
                and a.address not in out
            ):
                out.append(a.address)
    return out


_SELF_EXPLAINED = (
    Code.THUMBPRINT_MISMATCH,
    Code.LB_INTERCEPTS_CHALLENGE,
    Code.WRONG_CONTENT,
    Code.CHALLENGE_NOT_FOUND,
    Code.HTTP_ERROR_STATUS,
    Code.PORT_80_TIMEOUT,
    Code.PORT_80_REFUSED,
    Code.EMPTY_REPLY,
    Code.READ_TIMEOUT,
)


class Interception:
    """A key authorization that is not ours: LB in HTTP mode, or another account's responder."""

    codes = (Code.LB_INTERCEPTS_CHALLENGE, Code.THUMBPRINT_MISMATCH)
    stage = Stage.HTTP
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        fails = le_failures(ctx)
        items = fails.get(Code.THUMBPRINT_MISMATCH, []) + fails.get(
            Code.LB_INTERCEPTS_CHALLENGE, []
        )
        if not items:
            return []
        seen_body = items[0][0].final.body.strip()
        backend = [a for r in ctx.inside for a in r.local_attempts if a.final.outcome == "response"]
        ev = _evidence(items, 4)
        ev += dedupe([describe(a) for a in backend], 2)
        key = ctx.target.key_authorization
        backend_ok = any(
            a.final.status == 200 and key is not None and a.final.body.rstrip() == key
            for a in backend
        )
        backend_same = any(
            a.final.status == 200 and a.final.body.strip() == seen_body for a in backend
        )
        intercept = (
            backend_ok
            or (bool(backend) and not backend_same)
            or (ctx.target.random_token and not backend_same)
        )
        if intercept:
            why = (
                "the backend itself answers with the right key authorization"
                if backend_ok
                else "the backend itself answers differently"
                if backend
                else "a random token gets a well-formed key authorization, so something "
                "answers every token"
            )
            return [
                Finding(
                    Code.LB_INTERCEPTS_CHALLENGE,
                    "the load balancer answers the challenge itself",
                    f"Through the load balancer the challenge gets {seen_body!r}, a well-formed "
                    f"key authorization that is not ours, while {why}. An LB in HTTP mode with "
                    "its own ACME/certificate feature (or a proxy with a stateless responder) "
                    "answers /.well-known/acme-challenge/ before the request reaches the backend.",
                    remedy_tcp_passthrough(items[0][0].address, _backends(ctx)),
                    vantages=_vantages(items),
                    evidence=ev,
                )
            ]
        if ctx.target.random_token:
            return []  # a stateless responder on the backend: cannot judge without our key
        hint = (
            ""
            if backend
            else " (no inside vantage could ask the backend directly: "
            "rerun with --inside 'ssh BACKEND' to tell this apart from an LB answering "
            "itself)"
        )
        return [
            Finding(
                Code.THUMBPRINT_MISMATCH,
                "the responder answers with another account's thumbprint",
                f"The answer {seen_body!r} has our token but the thumbprint "
                f"{seen_body.rpartition('.')[2]!r}, not ours ({ctx.target.thumbprint!r}). A "
                "stateless responder configured for another ACME account answers every token "
                f"as token.<its thumbprint>{hint}.",
                "Configure the stateless responder with this account's thumbprint (`acmelb "
                'account show` prints it; nginx: `return 200 "$1.THUMBPRINT";`), or '
                "issue with the account it is configured for.",
                vantages=_vantages(items),
                evidence=ev,
            )
        ]
