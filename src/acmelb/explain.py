"""``explain(text) -> Explanation``: read an HTTP-01 error message without the network.

Recognises cert-manager's self-check errors (every format it has used, with
or without the "Waiting for HTTP-01 challenge propagation:" prefix of a
Challenge's ``status.reason``), Let's Encrypt/Boulder and Pebble validation
errors, and certbot and lego output wrapping them.  Pulls out the URL, name,
token, expected and received values, names the candidate finding codes and
the ``acmelb diagnose`` command line that settles between them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from acmelb.findings import KEYAUTH_RE, Code

SCHEMA = "acmelb.explain/v1"

__all__ = ["SCHEMA", "Explanation", "explain"]


@dataclass
class Explanation:
    source: str
    url: str | None = None
    name: str | None = None
    token: str | None = None
    expected: str | None = None
    received: str | None = None
    candidates: list[str] = field(default_factory=list)
    reasoning: str = ""
    next: str | None = None
    address: str | None = None

    @property
    def recognised(self) -> bool:
        return self.source != "unknown" and bool(self.candidates)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "source": self.source,
            "url": self.url,
            "name": self.name,
            "token": self.token,
            "expected": self.expected,
            "received": self.received,
            "candidates": list(self.candidates),
            "reasoning": self.reasoning,
            "next": self.next,
        }


# -- source detection -----------------------------------------------------------------

_SOURCES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("certbot", re.compile(r"certbot|Certbot failed to authenticate|^\s*Type:\s+\w+", re.I | re.M)),
    ("lego", re.compile(r"\blego\b|acme: error: \d{3} :: urn:|\[INFO\] \[[^\]]+\] acme:", re.I)),
    (
        "cert-manager",
        re.compile(
            r"self check|Waiting for HTTP-01 challenge propagation|did not get expected response "
            r"when querying endpoint|wrong status code '\d+', expected '200'|cert-manager",
            re.I,
        ),
    ),
    (
        "acme-ca",
        re.compile(
            r"Invalid response from|Fetching https?://|Timeout during connect|"
            r"Timeout after connect|"
            r"key authorization file from the server did not match|Non-200 status code from HTTP|"
            r"DNS problem:|CAA record for|no valid A records found|No valid IP addresses found|"
            r"Too many redirects|Invalid port in redirect target|Invalid host in redirect target|"
            r"Error getting validation data|urn:ietf:params:acme:error|Connection refused|"
            r"Connection reset by peer|Policy forbids issuing",
            re.I,
        ),
    ),
)


# -- causes: (pattern, candidates, reasoning); first match wins ---------------------------

_TIMEOUT_CM = (
    "cert-manager's self-check runs from inside the cluster and timed out. The classic cause "
    "is a load balancer without NAT loopback: outside clients reach it, inside ones do not. "
    "The same symptom comes from port 80 closed to everyone (then the CA fails too), from a "
    "backend behind a PROXY-protocol LB reached directly through kube-proxy's shortcut, or "
    "from inside DNS pointing elsewhere. A probe from outside AND from inside tells them "
    "apart: outside OK + inside timeout = nat-loopback; both time out = port-80-timeout; "
    "inside works only with a PROXY header = proxy-protocol-required; different addresses = "
    "dns-split-horizon."
)

# candidates None: the body was wrong; ``_content`` reads what came back
Rule = tuple[re.Pattern[str], tuple[Code, ...] | None, str, tuple[str, ...]]


def _r(
    pattern: str, candidates: tuple[Code, ...] | None, why: str, sources: tuple[str, ...] = ()
) -> Rule:
    return (re.compile(pattern, re.I | re.S), candidates, why, sources)


_RULES: tuple[Rule, ...] = (
    _r(
        r"CAA record for .* prevents issuance|CAA records? .*forbid",
        (Code.CAA_FORBIDS,),
        "The CA found CAA records on the name or a parent that do not list it.",
    ),
    _r(
        r"(SERVFAIL|REFUSED|timeout|time out).{0,40}looking up CAA",
        (Code.DNS_LOOKUP_FAILED, Code.CAA_FORBIDS),
        "The CAA lookup itself failed; the CA refuses to issue until it "
        "answers. A diagnosis shows whether the lookup fails or the records forbid the CA.",
    ),
    _r(
        r"NXDOMAIN looking up|no such host|No valid IP addresses found|no valid A records found"
        r"|NXDOMAIN",
        (Code.DNS_NO_ADDRESS, Code.DNS_RESERVED_ADDRESS, Code.DNS_SPLIT_HORIZON),
        "The name did not resolve to a usable address. NXDOMAIN or no records means "
        "dns-no-address; 'no valid IP addresses' can also mean only reserved (private) "
        "addresses; when only cert-manager fails, the cluster's DNS answers differently "
        "(dns-split-horizon).",
    ),
    _r(
        r"DNS problem: (SERVFAIL|query timed out|networking error|REFUSED)|"
        r"(SERVFAIL|REFUSED) looking up",
        (Code.DNS_LOOKUP_FAILED,),
        "The DNS lookup failed (SERVFAIL, REFUSED or a timeout), not 'no such name'.",
    ),
    _r(
        r"Policy forbids issuing|rejectedIdentifier|Invalid identifiers? requested",
        (Code.INVALID_NAME,),
        "The CA rejected the name itself before any validation.",
    ),
    _r(
        r"Too many redirects|stopped after 10 redirects",
        (Code.REDIRECT_TOO_MANY, Code.REDIRECT_LOOP),
        "The redirect chain exceeded 10 hops, usually a loop "
        "(http<->https behind a TLS-terminating LB).",
    ),
    _r(
        r"redirect loop|already visited",
        (Code.REDIRECT_LOOP,),
        "A redirect came back to a URL already visited.",
    ),
    _r(
        r"Invalid port in redirect target|Invalid host in redirect target|Invalid protocol "
        r"scheme in redirect target|Only domain names are supported",
        (Code.REDIRECT_BAD_TARGET,),
        "The CA refused a redirect target: a port other than 80/443, an IP address, a host "
        "ending in .well-known, or a scheme other than http/https.",
    ),
    _r(
        r"redirect.*(303|300|304)|unsupported redirect",
        (Code.REDIRECT_BAD_STATUS,),
        "A redirect used a status the CA does not follow (only 301/302/307/308).",
    ),
    _r(
        r"plain HTTP request was sent to HTTPS port|malformed HTTP (status code|response) "
        r"\"\\x15|HTTP/0\.9|speaking HTTPS|first record does not look like",
        (Code.HTTP_ON_HTTPS_PORT,),
        "The port-80 request reached a TLS listener.",
    ),
    _r(
        r"did not match this challenge|did not get expected response|expected \".*\" but got"
        r"|\" != \"",
        None,
        "",
    ),
    _r(
        r"Invalid response from [^\s]+:\s*404|wrong status code '404'|Non-200 status code from "
        r"HTTP: 404|\b404\b.{0,40}(Not Found)?",
        (Code.CHALLENGE_NOT_FOUND, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON),
        "The request reached a web server that does not have the token (404). If some "
        "requests succeed, some backends behind the LB lack it (inconsistent-backends); if "
        "only cert-manager sees 404, the inside DNS/ingress path goes elsewhere.",
    ),
    _r(
        r"wrong status code '(\d+)'|Invalid response from [^\s]+:\s*(\d{3})\b|Non-200 status "
        r"code from HTTP: (\d{3})|Invalid response from .*\"<",
        (Code.HTTP_ERROR_STATUS, Code.MIDDLEBOX_FINGERPRINT, Code.WRONG_CONTENT),
        "A status other than 200 came back: 503/502 from an LB with no healthy backend, "
        "401/403 from authentication or a WAF. The response headers name the device "
        "(middlebox-fingerprint).",
    ),
    _r(
        r"Timeout after connect|awaiting headers.*(after|connect)|read: connection timed out",
        (Code.READ_TIMEOUT, Code.PROXY_PROTOCOL_REQUIRED, Code.EMPTY_REPLY),
        "The connection was accepted but no HTTP answer arrived in time: a hung backend, or "
        "a listener waiting for a PROXY header.",
    ),
    _r(
        r"context deadline exceeded|Client\.Timeout exceeded|i/o timeout|dial tcp [^:]+:\d+: "
        r"connect: connection timed out",
        (
            Code.NAT_LOOPBACK,
            Code.PORT_80_TIMEOUT,
            Code.PROXY_PROTOCOL_REQUIRED,
            Code.DNS_SPLIT_HORIZON,
        ),
        _TIMEOUT_CM,
        ("cert-manager",),
    ),
    _r(
        r"Timeout during connect|context deadline exceeded|i/o timeout|connection timed out|"
        r"Timeout",
        (Code.PORT_80_TIMEOUT, Code.IPV6_UNREACHABLE, Code.NAT_LOOPBACK),
        "The CA could not open a TCP connection to port 80: a firewall or security group "
        "drops it, or the LB has no port-80 listener. If the address in the message is IPv6 "
        "while IPv4 works, it is ipv6-unreachable.",
    ),
    _r(
        r"connection refused",
        (Code.NAT_LOOPBACK, Code.PORT_80_REFUSED),
        "Connection refused from inside: the public address does not hairpin (some routers "
        "answer RST) or nothing listens on port 80.",
        ("cert-manager",),
    ),
    _r(
        r"connection refused",
        (Code.PORT_80_REFUSED,),
        "Something answers at the address, but nothing listens on port 80.",
    ),
    _r(
        r"\bEOF\b|connection reset|reset by peer|empty reply|Connection closed|"
        r"server closed|unexpected EOF",
        (Code.PROXY_PROTOCOL_REQUIRED, Code.EMPTY_REPLY, Code.NAT_LOOPBACK),
        "The TCP connection was accepted, then closed without an HTTP response. From inside "
        "a cluster that is typically a backend expecting PROXY protocol reached without the "
        "LB (kube-proxy shortcut); otherwise an LB dropping the connection (no healthy "
        "backend) or a WAF.",
        ("cert-manager",),
    ),
    _r(
        r"\bEOF\b|connection reset|reset by peer|empty reply|Connection closed",
        (Code.EMPTY_REPLY, Code.PROXY_PROTOCOL_REQUIRED),
        "The connection was accepted, then closed or reset without an HTTP response: an LB "
        "with no healthy backend, a backend expecting PROXY protocol or TLS, or a WAF.",
    ),
    _r(
        r"Error getting validation data|Connection|Fetching http",
        (Code.PORT_80_TIMEOUT, Code.PORT_80_REFUSED, Code.EMPTY_REPLY),
        "The CA could not fetch the challenge; the message does not say which way it failed.",
    ),
    _r(
        r"unauthorized|self check",
        (Code.CHALLENGE_NOT_FOUND, Code.WRONG_CONTENT),
        "The validation failed; the message carries no detail that narrows it down.",
    ),
)

_URL_RE = re.compile(r"https?://[^\s'\"\\,)\]]+")
_TOKEN_RE = re.compile(r"/\.well-known/acme-challenge/([A-Za-z0-9_-]+)")
_EXPECTED = (
    re.compile(r"[Ee]xpected \"([^\"]*)\" \(got \"(.*?)\"\)", re.S),
    re.compile(r"expected \"([^\"]*)\" but got: (.*)$", re.S),
    re.compile(r"expected '([^']*)' but got: (.*)$", re.S),
    re.compile(r"did not match this challenge \"([^\"]*)\" != \"(.*?)\"", re.S),
)
_ADDR_RE = re.compile(
    r"\[([0-9a-fA-F:.]+)\]|dial tcp (\[?[0-9a-fA-F:.]+\]?):\d+|"
    r"(?:^|\s)((?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}|\d+\.\d+\.\d+\.\d+): "
    r"(?:Fetching|Invalid response)"
)
_DOMAIN_RE = re.compile(r"(?:Domain|Identifier|for):?\s+([a-z0-9*][a-z0-9.-]*\.[a-z]{2,})", re.I)


_CM_WRAPS_CA = re.compile(
    r"(Error accepting authorization|Accepting challenge authorization failed|"
    r"acme: authorization error for)",
    re.I,
)


def _source(text: str) -> str:
    for name, pat in _SOURCES:
        if pat.search(text):
            return name
    return "unknown"


def _content(exp: Explanation) -> tuple[list[Code], str]:
    expected, received = exp.expected, exp.received
    if received is None:
        return [Code.WRONG_CONTENT, Code.THUMBPRINT_MISMATCH, Code.LB_INTERCEPTS_CHALLENGE], (
            "The body came back with something else than the key authorization; the message "
            "does not say what."
        )
    got = received
    if expected is not None and got.strip(" \t\r\n") == expected:
        # The validator said "mismatch" yet the visible text is equal: only whitespace
        # differs (the message itself lost it when it was printed or pasted).
        return [Code.TRAILING_WHITESPACE], (
            "The body is the key authorization plus trailing whitespace: Let's Encrypt trims "
            "it and passes, cert-manager's self-check compares exactly and fails."
        )
    m = KEYAUTH_RE.match(got.strip())
    if m and expected is not None and "." in expected:
        token, thumb = expected.split(".", 1)
        if m.group(1) == token and m.group(2) != thumb:
            return [Code.THUMBPRINT_MISMATCH, Code.LB_INTERCEPTS_CHALLENGE], (
                f"The answer has our token but thumbprint {m.group(2)} instead of {thumb}: "
                "a well-formed key authorization of another ACME account. Either a stateless "
                "responder behind the LB is configured for another account "
                "(thumbprint-mismatch), or an LB in HTTP mode answers challenges itself "
                "(lb-intercepts-challenge). Asking the backend directly from inside tells "
                "them apart."
            )
        if m.group(1) != token:
            return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS, Code.LB_INTERCEPTS_CHALLENGE], (
                "The answer is a key authorization for another token: a stale file or cache, "
                "or a backend serving an older challenge."
            )
    if "<" in got and ">" in got:
        return [Code.WRONG_CONTENT, Code.BODY_TOO_LARGE, Code.MIDDLEBOX_FINGERPRINT], (
            "An HTML page came back instead of the key authorization: a catch-all route, a "
            "default site or an error page of a device in the path."
        )
    if not got.strip():
        return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS], "The body came back empty."
    return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON], (
        f"The body {got[:60]!r} is not the key authorization: something other than the "
        "responder answers the path, or only some backends have the token."
    )


# Codes only an inside vantage can tell apart: the suggested command adds one.
_INSIDE_CODES = (
    Code.NAT_LOOPBACK,
    Code.PROXY_PROTOCOL_REQUIRED,
    Code.DNS_SPLIT_HORIZON,
    Code.LB_INTERCEPTS_CHALLENGE,
    Code.THUMBPRINT_MISMATCH,
    Code.TRAILING_WHITESPACE,
)


def _next_command(exp: Explanation) -> str:
    parts = ["acmelb", "diagnose", exp.name or "NAME"]
    if exp.token:
        parts += ["--token", exp.token]
        if exp.expected and exp.expected.startswith(exp.token + "."):
            parts += ["--key", exp.expected]
    cmd = shlex.join(parts)
    if {code.value for code in _INSIDE_CODES} & set(exp.candidates):
        if exp.source == "cert-manager":
            cmd += " --inside 'kubectl exec -n NAMESPACE POD --'"
        else:
            cmd += " --inside 'ssh BACKEND'"
    return cmd


def explain(text: str) -> Explanation:
    """Explain one error message; ``recognised`` is False when nothing matched."""
    raw = text.strip()
    exp = Explanation(source=_source(raw))
    # cert-manager's Challenge reason when the *CA* rejected the authorization: the cause
    # is on the CA's path (outside), not the self-check's (inside).
    context = exp.source
    if _CM_WRAPS_CA.search(raw):
        exp.source, context = "cert-manager", "acme-ca"
    urls = _URL_RE.findall(raw)
    challenge_urls = [u for u in urls if "/.well-known/acme-challenge/" in u]
    if challenge_urls or urls:
        exp.url = (challenge_urls or urls)[0].rstrip(".:;'\"")
        host = re.sub(r"^https?://", "", exp.url).split("/", 1)[0]
        exp.name = re.sub(r":\d+$", "", host.split("@")[-1]).strip("[]").lower() or None
    tok = _TOKEN_RE.search(raw)
    if tok:
        exp.token = tok.group(1)
    if exp.name is None:
        dm = _DOMAIN_RE.search(raw)
        if dm:
            exp.name = dm.group(1).lower()
    for pat in _EXPECTED:
        em = pat.search(raw)
        if em:
            exp.expected = em.group(1)
            received = em.group(2)
            # copied from JSON or Go %q output: a literal \n at the end is a newline
            while received.endswith(("\\n", "\\r", "\\t")):
                received = received[:-2] + {"n": "\n", "r": "\r", "t": "\t"}[received[-1]]
            exp.received = received
            break
    if exp.token is None and exp.expected and KEYAUTH_RE.match(exp.expected):
        exp.token = exp.expected.split(".", 1)[0]
    status = re.search(
        r"wrong status code '(\d+)'|Invalid response from \S+:\s*(\d{3})\b|"
        r"Non-200 status code from HTTP: (\d{3})",
        raw,
    )
    if status and exp.received is None:
        exp.received = "HTTP " + next(g for g in status.groups() if g)
    am = _ADDR_RE.search(raw)
    if am:
        exp.address = (am.group(1) or am.group(2) or am.group(3) or "").strip("[]") or None
    for pattern, candidates, why, sources in _RULES:
        if sources and context not in sources:
            continue
        if not pattern.search(raw):
            continue
        if candidates is None:
            cands, why = _content(exp)
        else:
            cands = list(candidates)
        if exp.address and ":" in exp.address and Code.PORT_80_TIMEOUT in cands:
            cands.insert(0, Code.IPV6_UNREACHABLE)
            cands = list(dict.fromkeys(cands))
            why += f" The address {exp.address} is IPv6: check the AAAA path first."
        exp.candidates = [code.value for code in cands]
        exp.reasoning = why
        break
    if exp.source == "unknown" and exp.candidates:
        exp.source = "acme-ca"
    if not exp.candidates:
        exp.source = "unknown"
        exp.reasoning = (
            "No known HTTP-01 error format matched. Paste the full message "
            "(cert-manager Challenge status.reason, the CA's problem detail, or "
            "certbot/lego output)."
        )
    exp.next = _next_command(exp) if exp.candidates else None
    return exp
