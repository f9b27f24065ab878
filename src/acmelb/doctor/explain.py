"""``explain(text) -> Explanation``: read an HTTP-01 error message without the network.

Recognises cert-manager's self-check errors (every format it has used, with
or without the "Waiting for HTTP-01 challenge propagation:" prefix of a
Challenge's ``status.reason``) and its presenting failures, Let's
Encrypt/Boulder and Pebble validation errors, and the certbot, lego, Traefik
and Caddy output wrapping them.  Pulls out the URL, name, token, expected and
received values, then reads them: the body against the key authorization,
the URL actually fetched (scheme, port, host), the address dialled, status
words and quoted page titles.  Names the candidate finding codes and the
``acmelb diagnose`` command line that settles between them.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from acmelb.doctor.atoms import TITLE_STATUS, Atoms, atoms, unescaped
from acmelb.doctor.findings import KEYAUTH_RE, Code

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
    fetched: str | None = None
    status: int | None = None
    title: str | None = None
    evidence: list[str] = field(default_factory=list)
    # what the message says happened, whatever its format (not in the JSON)
    atoms: Atoms = field(default_factory=Atoms, repr=False, compare=False)

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
            "address": self.address,
            "fetched": self.fetched,
            "status": self.status,
            "evidence": list(self.evidence),
        }


# -- source detection -----------------------------------------------------------------

_SOURCES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "certbot",
        re.compile(
            r"certbot|Certbot failed to authenticate|^\s*Type:\s+\w+|Failed authorization "
            r"procedure|The following errors were reported by the server",
            re.I | re.M,
        ),
    ),
    # Traefik embeds lego: its log lines carry lego's text, so it is tried first
    ("traefik", re.compile(r"traefik|Unable to obtain ACME certificate|legolog|\.acme\b", re.I)),
    (
        "lego",
        re.compile(
            r"\blego\b|acme: error: \d{3} :: urn:|acme: Error \d{3} - urn:|"
            r"\[INFO\] \[[^\]]+\] acme:",
            re.I,
        ),
    ),
    (
        "caddy",
        re.compile(
            r"caddy|certmagic|tls\.(obtain|issuance)|\"challenge failed\"|"
            r"no information found to solve challenge",
            re.I,
        ),
    ),
    ("autocert", re.compile(r"acme/autocert:")),
    (
        "cert-manager",
        re.compile(
            r"self check|Waiting for HTTP-01 challenge propagation|did not get expected response "
            r"when querying endpoint|wrong status code '\d+'|cert-manager|presented key \(|"
            r"Error presenting challenge|PresentError|acme-http-solver|reachabil\w* test failed|"
            r"error waiting for key to be available|re-queuing item due to error processing|"
            r"logger=\"cert-manager",
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
        r"scheme in redirect target|Only domain names are supported|Invalid (empty )?hostname "
        r"in redirect target|Redirect target too long",
        (Code.REDIRECT_BAD_TARGET,),
        "The CA refused a redirect target: a port other than 80/443, an IP address, a host "
        "ending in .well-known, or a scheme other than http/https.",
    ),
    _r(
        r"redirect.*(303|300|304)|unsupported redirect|disallowed redirect status",
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
        r"|\" != \"|presented key \(|with the wrong (?:data|content|body)",
        None,
        "",
    ),
    _r(
        r"wrong status code '404'",
        (
            Code.CHALLENGE_NOT_FOUND,
            Code.SOLVER_NOT_PRESENTED,
            Code.INCONSISTENT_BACKENDS,
            Code.DNS_SPLIT_HORIZON,
        ),
        "cert-manager's self-check reached a web server that has no route for the token "
        "(404). Most often the solver Ingress is not served at all: its ingress class is not "
        "the controller's (nginx vs public on MicroK8s, a copied class name), or another "
        "Ingress or Gateway takes the host. Otherwise only some backends behind the LB have "
        "the route, or the inside DNS leads to another ingress.",
        ("cert-manager",),
    ),
    _r(
        r"Invalid response from [^\s]+(?: \[[^\]]*\])?:\s*404|wrong status code '404'|"
        r"Non-200 status code from HTTP: 404|\b404\b.{0,40}(Not Found)?",
        (Code.CHALLENGE_NOT_FOUND, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON),
        "The request reached a web server that does not have the token (404). If some "
        "requests succeed, some backends behind the LB lack it (inconsistent-backends); if "
        "only cert-manager sees 404, the inside DNS/ingress path goes elsewhere.",
    ),
    _r(
        r"wrong status code '(\d+)'|Invalid response from [^\s]+(?: \[[^\]]*\])?:\s*(\d{3})\b|"
        r"Non-200 status code from HTTP: (\d{3})|Invalid response from .*\"<",
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
        r"connection refused|no route to host|network is unreachable",
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
        r"Could not connect to|no route to host|network is unreachable",
        (Code.PORT_80_TIMEOUT, Code.PORT_80_REFUSED, Code.IPV6_UNREACHABLE),
        "The CA could not open a connection to port 80 (an older Boulder wording that does "
        "not say whether it timed out or was refused).",
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
        r"failed to perform self check GET request",
        (Code.NAT_LOOPBACK, Code.PROXY_PROTOCOL_REQUIRED, Code.DNS_SPLIT_HORIZON),
        "cert-manager's self-check GET request itself failed (no HTTP answer; the message "
        "was cut before saying how). From inside a cluster that is the public address not "
        "reachable from inside (no NAT loopback), a listener expecting PROXY protocol "
        "reached around the LB, or inside DNS answering differently.",
        ("cert-manager",),
    ),
    _r(
        r"self check failed for domain|error waiting for key to be available",
        (
            Code.NAT_LOOPBACK,
            Code.PROXY_PROTOCOL_REQUIRED,
            Code.DNS_SPLIT_HORIZON,
            Code.CHALLENGE_NOT_FOUND,
        ),
        "cert-manager before v0.7 printed only that its self-check failed, not how (it logged "
        "the detail at a higher verbosity). From inside a cluster the usual causes are the "
        "public address not reachable from inside (no NAT loopback), a backend that expects "
        "PROXY protocol reached around the LB, or inside DNS answering differently.",
        ("cert-manager",),
    ),
    _r(
        r"unauthorized|self check",
        (Code.CHALLENGE_NOT_FOUND, Code.WRONG_CONTENT),
        "The validation failed; the message carries no detail that narrows it down.",
    ),
)

# "]" ends a URL in prose, except the one closing an IPv6 literal host (RFC 3986 3.2.2)
_URL_RE = re.compile(r"https?://(?:\[[0-9A-Fa-f:.]+\])?[^\s'\"\\,)\]]*")
_TOKEN_RE = re.compile(r"/\.well-known/acme-challenge/([A-Za-z0-9_-]+)")
_EXPECTED = (
    re.compile(r"[Ee]xpected \"([^\"]*)\" \(got \"(.*?)\"\)", re.S),
    re.compile(r"expected \"([^\"]*)\" but got:\s?(.*)$", re.S),
    re.compile(r"expected '([^']*)' but got:\s?(.*)$", re.S),
    re.compile(r"did not match this challenge \"([^\"]*)\" != \"(.*?)\"", re.S),
    re.compile(r"did not match this challenge \[([^\]]*)\] != \[(.*?)\]", re.S),
    re.compile(r"[Ee]xpected \"([^\"]*)\"\s*\n\s*[Gg]ot \"(.*?)\"", re.S),
)
# cert-manager v0.5-v0.6 printed the received body first
_PRESENTED = re.compile(r"presented key \((.*?)\) did not match expected \(([^)]*)\)", re.S)
_ADDR_RE = re.compile(
    r"dial tcp (\[?[0-9a-fA-F:.]+\]?):\d+|->(\[?[0-9a-fA-F:.]+\]?):\d+|"
    r"(?:Used|addressUsed\"?):\s*\"?([0-9a-fA-F:.]+)|\[([0-9a-fA-F:.]*[.:][0-9a-fA-F:.]*)\]|"
    r"(?:^|[\s:\"])((?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}|\d+\.\d+\.\d+\.\d+): "
    r"(?:Fetching|Invalid response|During)"
)
_DOMAIN_RE = re.compile(r"(?:Domain|Identifier|for):?\s+([a-z0-9*][a-z0-9.-]*\.[a-z]{2,})", re.I)
_LOOKUP_RE = re.compile(r"lookup (\S+?) on (\S+?):53")
# the URL actually fetched: Go's url.Error names the last hop, Boulder names its record
# (certbot wraps the detail, so "Fetching" may end its line)
_FETCHED_RE = re.compile(
    r"Get \"?(https?://[^\s\"']+)\"?:|Fetching\s+(https?://\S+?):(?:\s|$)|"
    r"Invalid response from (https?://[^\s\"']+?)(?: \[[^\]]*\])?:\s"
)
_TITLE_RE = re.compile(r"<title>\s*(.*?)\s*</title>|<h1>\s*(.*?)\s*</h1>", re.I | re.S)
_STATUS_RE = re.compile(
    r"wrong status code '(\d+)'|Invalid response from \S+?(?: \[[^\]]*\])?:\s*(\d{3})\b|"
    r"Non-200 status code from HTTP: (\d{3})"
)
# "... (truncated)" as printed; "(truncated)" alone as quoted in docs and threads
_TRUNCATED_RE = re.compile(r"\s*(?:\.\.\.)?\s*\(truncated\)\s*$")
# cert-manager prints at most the first 24 bytes of a wrong body, trimmed, then "... (truncated)"
# (pkg/issuer/acme/http/http.go, testReachability)
_CM_PREFIX = 24
# documentation ranges stand for public addresses in examples and redacted reports
_DOC_NETS = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_PRESENTING = re.compile(
    r"Error presenting challenge|PresentError|admission webhook .{0,80}denied the request|"
    r"cannot be used with\s+pathType|exceeded quota|error ensuring http01 challenge|"
    r"ingress\.networking\.k8s\.io \\?\"[^\"\\]+\\?\" not found|"
    r"services \\?\"cm-acme-http-solver|gateway api is not enabled",
    re.I,
)
_CONNECTION = re.compile(
    r"timeout|timed out|deadline exceeded|refused|reset|EOF|unreachable|no route|"
    r"Could not connect|Error getting validation data|tls:|TLS handshake|certificate|"
    r"HTTP response to HTTPS client|does not look like a TLS",
    re.I,
)
_TLS_HOP = re.compile(
    r"tls:|TLS handshake|x509|HTTP response to HTTPS client|does not look like a TLS", re.I
)


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


def _address_kind(address: str) -> str | None:
    """loopback / private / public, documentation ranges counted as public."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if any(ip in net for net in _DOC_NETS):
        return "public"
    if ip.is_loopback:
        return "loopback"
    if ip.is_private or ip.is_link_local or ip.is_reserved or ip in _CGNAT:
        return "private"
    return "public"


_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _keyauth_shape(got: str, expected: str | None) -> str:
    """What the received body is, measured against the expected key authorization."""
    body = got.strip(" \t\r\n")
    token, _, thumb = (expected or "").partition(".")
    m = KEYAUTH_RE.match(body)
    if m and token and m.group(1) == token and m.group(2) != thumb:
        return "other-thumbprint"
    if _our_token_other_suffix(body, token, thumb):
        return "other-thumbprint"
    if m and token and m.group(1) != token:
        return "other-token"
    cut = _TRUNCATED_RE.search(got)
    if cut:
        return _prefix_shape(got[: cut.start()], expected or "")
    if "<" in got and ">" in got:
        return "html"
    if not body:
        return "empty"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", body):
        return "opaque"
    return "text"


def _our_token_other_suffix(body: str, token: str, thumb: str) -> bool:
    """Our token, a dot, then something else: another account's key authorization even
    when the values are redacted or shortened (``lm1~~~~jA3I.nx~~~_nL0``)."""
    head, dot, tail = body.partition(".")
    if not (dot and tail and token) or tail == thumb or " " in body:
        return False
    mask = re.compile(r"[~*…x]{2,}|\.\.\.")
    if mask.search(head):  # a redacted token: its visible ends must be ours
        ends = [part for part in mask.split(head) if part]
        return bool(ends) and token.startswith(ends[0]) and token.endswith(ends[-1])
    return head == token


def _prefix_shape(prefix: str, expected: str) -> str:
    """A cert-manager cut body: its first 24 bytes, trimmed (the rest is not printed)."""
    if prefix.lstrip().startswith("<"):
        return "html"
    if expected and prefix and expected.startswith(prefix):
        return "our-token-prefix"
    if re.fullmatch(rf"[A-Za-z0-9_-]{{{_CM_PREFIX}}}", prefix):
        return "other-token"
    if re.fullmatch(r"[A-Za-z0-9_.-]+", prefix):
        return "opaque"
    return "text"


_LB_VS_ACCOUNT = (
    "What tells the two apart is where the answer comes from: asked directly from inside "
    "(the backend itself, around the LB), a correct answer means the LB answers challenges "
    "itself in HTTP mode (lb-intercepts-challenge: switch port 80 to TCP pass-through); the "
    "same wrong thumbprint from the backend means a responder configured for another ACME "
    "account (thumbprint-mismatch)."
)


def _content(exp: Explanation) -> tuple[list[Code], str]:
    expected, received = exp.expected, exp.received
    if received is None:
        return [Code.WRONG_CONTENT, Code.LB_INTERCEPTS_CHALLENGE, Code.THUMBPRINT_MISMATCH], (
            "The body came back with something else than the key authorization; the message "
            "does not say what. " + _LB_VS_ACCOUNT
        )
    if expected is not None and received.strip(" \t\r\n") == expected:
        # The validator said "mismatch" yet the visible text is equal: only whitespace
        # differs (the message itself lost it when it was printed or pasted).
        return [Code.TRAILING_WHITESPACE], (
            "The body is the key authorization plus trailing whitespace: Let's Encrypt trims "
            "it and passes, cert-manager's self-check compares exactly and fails."
        )
    shape = _keyauth_shape(received, expected)
    exp.evidence.append(f"received body: {shape}")
    return _BY_SHAPE[shape](exp)


def _other_thumbprint(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.LB_INTERCEPTS_CHALLENGE, Code.THUMBPRINT_MISMATCH], (
        "The answer is a well-formed key authorization for our token with another "
        "thumbprint: something knows the token but signs it for another ACME account. That "
        "is the signature of a load balancer in HTTP mode answering challenges for its own "
        "certificates, or of a stateless responder set up for another account. " + _LB_VS_ACCOUNT
    )


def _our_token_prefix(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.LB_INTERCEPTS_CHALLENGE, Code.THUMBPRINT_MISMATCH, Code.TRAILING_WHITESPACE], (
        "cert-manager printed only the first 24 bytes of the body, and they are the start of "
        "our own token: the body is longer than 24 bytes and begins like our key "
        "authorization, so it is most likely a key authorization for this token with another "
        "thumbprint (an LB in HTTP mode answering for itself, or a responder for another "
        "account), or ours plus trailing whitespace (Let's Encrypt would pass that). "
        + _LB_VS_ACCOUNT
    )


def _other_token(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS, Code.LB_INTERCEPTS_CHALLENGE], (
        "The answer looks like a key authorization for another token: a stale file or cache, "
        "a backend serving an older challenge, or a device answering every token."
    )


def _html(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.WRONG_CONTENT, Code.DNS_SPLIT_HORIZON, Code.MIDDLEBOX_FINGERPRINT], (
        "An HTML page came back with status 200 instead of the key authorization: a "
        "catch-all route (the application's own Ingress or site takes the path), a default "
        "site of another server the name resolves to, or a page of a device in the path."
    )


def _empty(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS], (
        "The body came back empty with status 200: a route or backend that answers without "
        "the token, or only some backends have it."
    )


def _opaque(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.WRONG_CONTENT, Code.LB_INTERCEPTS_CHALLENGE, Code.INCONSISTENT_BACKENDS], (
        f"The body {exp.received!r} is a single word, not our key authorization (or the values "
        "were redacted). Behind a load balancer the usual culprit is the LB answering the "
        "challenge path itself in HTTP mode; otherwise another backend or route answers. "
        "What tells them apart: ask the backend directly from inside; if it answers "
        "correctly, the LB intercepts (switch it to TCP pass-through)."
    )


def _text(exp: Explanation) -> tuple[list[Code], str]:
    return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON], (
        f"The body {(exp.received or '')[:60]!r} is not the key authorization: something "
        "other than the responder answers the path (the application's catch-all route), or "
        "only some backends have the token."
    )


_BY_SHAPE = {
    "other-thumbprint": _other_thumbprint,
    "our-token-prefix": _our_token_prefix,
    "other-token": _other_token,
    "html": _html,
    "empty": _empty,
    "opaque": _opaque,
    "text": _text,
}


# -- readings: what the values in the message say, tried before the message-shape table ------

Reading = tuple[list[Code], str] | None


def _presenting(exp: Explanation, raw: str) -> Reading:
    if not _PRESENTING.search(raw):
        return None
    exp.source = "cert-manager"  # only cert-manager presents solvers as cluster objects
    why = (
        "This is not a validation failure: cert-manager could not present the solver (its "
        "Ingress, Service or Pod was rejected or never created), so neither the CA nor the "
        "self-check can reach it. Read the Challenge's events."
    )
    if re.search(r"pathType\s+Exact", raw, re.I):
        why += (
            " Here ingress-nginx's admission webhook rejects the solver Ingress: with "
            "strict path validation (strict-validate-path-type) it refuses the solver's "
            "path for pathType Exact, which cert-manager 1.18 made the solver's type. Turn "
            "off the ACMEHTTP01IngressPathTypeExact feature gate of cert-manager, or "
            "strict-validate-path-type in ingress-nginx."
        )
    if re.search(r"gateway api is not enabled", raw, re.I):
        # cert-manager runs without --enable-gateway-api: no solver HTTPRoute is created
        return [Code.GATEWAY_API_DISABLED, Code.SOLVER_NOT_PRESENTED], why + (
            " Here cert-manager's Gateway API support is off (--enable-gateway-api, Helm "
            "config.enableGatewayAPI=true), so the gatewayHTTPRoute solver creates no "
            "HTTPRoute; it reads the Gateway API CRDs once, at start."
        )
    return [Code.SOLVER_NOT_PRESENTED], why


def _https_hop(exp: Explanation, raw: str) -> Reading:
    # The request starts on http://; an https:// URL in the error is a redirect target,
    # so the connect or TLS error happened on that hop, not on port 80.
    if not exp.fetched or not exp.fetched.startswith("https://"):
        return None
    if exp.status is not None or not _CONNECTION.search(raw):
        return None
    port = _url_port(exp.fetched)
    exp.evidence.append(f"fetched {exp.fetched}: a redirect to https on port {port}")
    if _TLS_HOP.search(raw):
        return [Code.REDIRECT_HTTPS, Code.HTTPS_HOP_FAILED, Code.HTTP_ON_HTTPS_PORT], (
            f"Port 80 answered with a redirect to {exp.fetched}, and the TLS exchange on that "
            "hop failed (certificate errors alone are ignored by the CA, a TLS alert, a "
            "plain-HTTP listener on 443 or a missing SNI route is not). Exempt "
            "/.well-known/acme-challenge/ from the https redirect, or fix the 443 listener."
        )
    if exp.source == "cert-manager" and not _CM_WRAPS_CA.search(raw):
        # the self-check was sent to https: by the solver's own Ingress, or the whole host
        return [Code.REDIRECT_HTTPS, Code.INGRESS_REDIRECTS_SOLVER, Code.NAT_LOOPBACK], (
            f"cert-manager's self-check asked for http:// and was sent to {exp.fetched}, "
            f"where connecting to port {port} failed: the error is on the https hop, not on "
            "port 80. A redirect on the solver's Ingress (or the controller's whole entry "
            "point) catches the challenge path; exempt /.well-known/acme-challenge/ from it, "
            "or make port 443 reachable from inside the way 80 is."
        )
    on_443 = Code.PORT_443_REFUSED if "refused" in exp.atoms.net else Code.PORT_443_TIMEOUT
    return [Code.REDIRECT_HTTPS, on_443, Code.NAT_LOOPBACK], (
        f"Port 80 answered with a redirect to {exp.fetched}, and connecting to port {port} "
        "failed: the error is on the https hop (443 closed, not forwarded, or not reachable "
        "from this vantage), not on port 80. Exempt /.well-known/acme-challenge/ from the "
        "redirect, or open 443 the same way as 80."
    )


def _glued_target(exp: Explanation, raw: str) -> Reading:
    # The CA builds "http://NAME/.well-known/..."; a host ending in ".well-known" can only
    # come from a redirect target that lost the "/" between host and path.
    host = _url_host(exp.fetched or exp.url or "").lower()
    if not host.endswith(".well-known"):
        return None
    exp.evidence.append(f"fetched host {host!r}: the path glued onto the host")
    exp.name = host.removesuffix(".well-known")
    tok = re.search(r"\.well-known/acme-challenge/([A-Za-z0-9_-]+)", exp.fetched or exp.url or "")
    exp.token = tok.group(1) if tok else exp.token
    return [Code.REDIRECT_BAD_TARGET, Code.REDIRECT_HTTPS], (
        f"The CA fetched from the host {host!r}: a redirect (usually http to https) built "
        "its target as host + path without the slash between them, so the target names a "
        "host that does not exist. Fix the redirect rule (keep the leading '/' of the "
        "request URI) or exempt /.well-known/acme-challenge/ from it."
    )


def _redirect_target(exp: Explanation, raw: str) -> Reading:
    if not exp.fetched or not exp.url or exp.fetched == exp.url:
        return None
    host = _url_host(exp.fetched)
    port = _url_port(exp.fetched)
    if port in (80, 443) and _address_kind(host) is None:
        return None
    exp.evidence.append(f"redirected to {exp.fetched}")
    return [Code.REDIRECT_BAD_TARGET], (
        f"The challenge was redirected to {exp.fetched}: Let's Encrypt follows redirects only "
        "to ports 80 and 443 of a DNS name (never to an IP address or another port)."
    )


def _quoted_status(exp: Explanation, raw: str) -> Reading:
    # A quoted error page (older Boulder printed the body, not the status): its title says it.
    if exp.status != 404 or not exp.title:
        return None
    return [Code.CHALLENGE_NOT_FOUND, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON], (
        f"The quoted page is titled {exp.title!r}: the server the CA reached has no file for "
        "the token (404), it is not a wrong body. The path is routed to a web root or "
        "backend that does not hold the token, or the name resolves to another server."
    )


def _dialled(exp: Explanation, raw: str) -> Reading:
    kind = _address_kind(exp.address or "")
    if kind not in ("loopback", "private") or not _CONNECTION.search(raw):
        return None
    exp.evidence.append(f"dialled {exp.address}: a {kind} address")
    if exp.source == "cert-manager" and _inside(exp, raw):
        return [Code.DNS_SPLIT_HORIZON, Code.NAT_LOOPBACK, Code.PORT_80_TIMEOUT], (
            f"The self-check dialled {exp.address}, a {kind} address: inside the cluster the "
            "name resolves to an internal address (split-horizon DNS, a CoreDNS rewrite, "
            "/etc/hosts), and nothing serves the challenge there. Compare what the inside "
            "and outside resolve."
        )
    return [Code.DNS_RESERVED_ADDRESS, Code.DNS_SPLIT_HORIZON], (
        f"The validator dialled {exp.address}, a {kind} address: the name's public DNS "
        "points at an address no CA can reach."
    )


def _inside(exp: Explanation, raw: str) -> bool:
    return not _CM_WRAPS_CA.search(raw)


def _cluster_dns(exp: Explanation, raw: str) -> Reading:
    lookup = _LOOKUP_RE.search(raw)
    if not lookup or exp.source != "cert-manager":
        return None
    exp.evidence.append(f"resolved {lookup.group(1)} with {lookup.group(2)} (the cluster's DNS)")
    return [Code.DNS_SPLIT_HORIZON, Code.DNS_NO_ADDRESS, Code.DNS_LOOKUP_FAILED], (
        f"The self-check could not resolve {lookup.group(1)} with the cluster's resolver "
        f"{lookup.group(2)}: the inside DNS answers differently from the public one (a private "
        "zone for the same domain, a search-path or ndots effect, or an upstream that does "
        "not know the name). Point cert-manager's self-check at public resolvers "
        "(--acme-http01-solver-nameservers) or fix the cluster DNS."
    )


# -- atom readings: what the message says happened, tried before the message-shape table --


def _tls_alpn(exp: Explanation, raw: str) -> Reading:
    a = exp.atoms
    alert = bool(a.net) and a.net[0] == "tls" and exp.url is None
    if not (a.tls_alpn or a.no_viable or alert):
        return None
    if a.no_viable:
        exp.evidence.append("Go autocert: no viable challenge type")
        return [Code.TLS_ALPN_TERMINATED, Code.PORT_80_REFUSED, Code.PORT_80_TIMEOUT], (
            "Go's autocert solves TLS-ALPN-01 (and HTTP-01 only with its handler mounted "
            "on port 80); 'no viable challenge type' means no challenge it offered could "
            "be satisfied: the CA's TLS handshake on 443 ends at a CDN or proxy that "
            "terminates TLS (Cloudflare's proxy, an HTTPS load balancer), or ports 443/80 "
            "do not reach the program (published on other ports). Pass 443 through as TCP, "
            "or serve autocert's HTTP handler on port 80."
        )
    exp.evidence.append("TLS-ALPN-01: the CA's TLS handshake on port 443")
    return [Code.TLS_ALPN_TERMINATED, Code.HTTP_ON_HTTPS_PORT, Code.PORT_80_TIMEOUT], (
        "This is TLS-ALPN-01, not HTTP-01: the CA opens TLS on port 443 asking for the ALPN "
        "protocol acme-tls/1, and whatever answered did not speak it. A CDN, load balancer "
        "or proxy that terminates TLS in front of the ACME client (Cloudflare's orange "
        "cloud, an HTTPS listener, a TLS router that does not pass acme-tls/1 through) "
        "answers the handshake itself. Pass port 443 through as TCP to the client, or "
        "switch it to HTTP-01 (port 80) or DNS-01."
    )


def _proxy_header(exp: Explanation, raw: str) -> Reading:
    if not exp.atoms.proxy_header:
        return None
    exp.evidence.append("the listener expected a PROXY protocol header")
    return [Code.PROXY_PROTOCOL_REQUIRED, Code.LB_PROXY_SHORTCUT, Code.NAT_LOOPBACK], (
        "The listener is set to read a PROXY protocol header first (nginx's 'broken header "
        "... while reading PROXY protocol') and got a plain HTTP request: a client that "
        "does not come through the PROXY-sending load balancer (cert-manager's self-check "
        "taking kube-proxy's shortcut to the LB address, or a port whose LB listener does "
        "not add the header). Send every port's traffic through the LB with PROXY, or let "
        "the LB keep its hostname so in-cluster traffic goes out and back."
    )


def _gateway_route(exp: Explanation, raw: str) -> Reading:
    # Gateway API conditions and fields quoted: the solver's route is not attached
    reasons = exp.atoms.kube_reasons
    if not reasons or _PRESENTING.search(raw):
        return None
    exp.evidence.append(f"Gateway API: {', '.join(reasons)}")
    return _gateway_codes(reasons, raw), (
        "The message is about the solver's route on a Gateway: an HTTPRoute not accepted "
        "(NoReadyListeners, NotAllowedByListeners: no HTTP listener on port 80 it may "
        "attach to, allowedRoutes from another namespace, a listener not Programmed for "
        "lack of its TLS secret), rejected by the API, or attached to the wrong listener "
        "(no sectionName). Until it is attached to the port-80 listener, the challenge path "
        "answers 404 or nothing. Read the HTTPRoute's and the Gateway's status conditions."
    )


def _gateway_codes(reasons: Sequence[str], raw: str) -> list[Code]:
    """Which Gateway API failure the quoted conditions point to first: a listener not
    programmed (its certificate reference), a route the API server rejected (never
    presented), else a route its parent did not accept."""
    if any(
        r in ("InvalidCertificateRef", "ListenersNotReady") or "Programmed" in r for r in reasons
    ) or re.search(r"certificate ref", raw, re.I):
        return [
            Code.LISTENER_NOT_PROGRAMMED,
            Code.SOLVER_ROUTE_NOT_ACCEPTED,
            Code.CHALLENGE_NOT_FOUND,
        ]
    if "is invalid" in reasons:
        return [Code.SOLVER_NOT_PRESENTED, Code.SOLVER_ROUTE_NOT_ACCEPTED, Code.CHALLENGE_NOT_FOUND]
    return [Code.SOLVER_ROUTE_NOT_ACCEPTED, Code.CHALLENGE_NOT_FOUND, Code.SOLVER_NOT_PRESENTED]


def _bad_request(exp: Explanation, raw: str) -> Reading:
    statuses = [exp.status, *exp.atoms.statuses]
    if 400 not in statuses or re.search(r"plain HTTP request was sent", raw, re.I):
        return None
    exp.evidence.append("status 400 for a plain GET")
    return [Code.PROXY_PROTOCOL_REQUIRED, Code.HTTP_ON_HTTPS_PORT, Code.HTTP_ERROR_STATUS], (
        "A plain GET without body or cookies got 400 Bad Request: the listener did not read "
        "what arrived as the protocol it expects. On port 80 behind a load balancer that is "
        "a listener waiting for a PROXY protocol header (enabled on the LB or the proxy, "
        "not on the path this request took), or a TLS listener; otherwise a WAF or the "
        "application rejecting the request."
    )


def _secondary(exp: Explanation, found: tuple[list[Code], str]) -> tuple[list[Code], str]:
    cands, why = found
    exp.evidence.append("during secondary validation: the primary perspective passed")
    cands = list(dict.fromkeys([Code.PERSPECTIVE_BLOCKED, *cands]))
    return cands, (
        "'During secondary validation' means the CA's primary perspective passed and one "
        "of its remote perspectives failed: something admits only some of the CA's sources "
        "(a firewall or geo-block, a CDN that cannot reach the origin from everywhere, rate "
        "limits). " + why
    )


def _from_atoms(exp: Explanation) -> Reading:
    """Candidates from the atoms alone, for a message in a format no rule knows."""
    a = exp.atoms
    if a.empty and exp.status is None:
        return None
    exp.evidence.append("read from the message's atoms (an unknown format)")
    status = exp.status or (a.statuses[0] if a.statuses else None)
    if status is not None:
        return _by_status(status)
    if a.net:
        return _BY_NET.get(a.net[0], _BY_NET["timeout"])
    if a.kube_reasons:
        return [Code.SOLVER_NOT_PRESENTED, Code.CHALLENGE_NOT_FOUND], "A Gateway route problem."
    if a.unknown_token:
        return [Code.CHALLENGE_NOT_FOUND, Code.INCONSISTENT_BACKENDS, Code.WRONG_CONTENT], (
            "The ACME client's own responder got a request for a token it has no pending "
            "challenge for: another instance (a replica without shared storage) started this "
            "challenge, the request came after the challenge ended, or it was a scanner. The "
            "CA then gets a 404 from this instance."
        )
    return [Code.PORT_80_TIMEOUT, Code.CHALLENGE_NOT_FOUND, Code.DNS_SPLIT_HORIZON], (
        "The message names an address but not what happened there."
    )


def _by_status(status: int) -> tuple[list[Code], str]:
    if status == 404:
        return [Code.CHALLENGE_NOT_FOUND, Code.INCONSISTENT_BACKENDS, Code.DNS_SPLIT_HORIZON], (
            "The challenge path answered 404: what answers does not hold the token."
        )
    if status == 444:
        return [Code.EMPTY_REPLY, Code.MIDDLEBOX_FINGERPRINT], (
            "nginx's 444 closes the connection without an answer: a deny rule (bot blocker, "
            "geo or IP filter) drops the validation request."
        )
    if status == 200:
        return [Code.WRONG_CONTENT, Code.INCONSISTENT_BACKENDS], (
            "Status 200, but not with the key authorization."
        )
    return [Code.HTTP_ERROR_STATUS, Code.MIDDLEBOX_FINGERPRINT, Code.WRONG_CONTENT], (
        f"The challenge path answered {status}: an LB or CDN with no reachable backend "
        "(502/503/52x), authentication or a WAF (401/403)."
    )


_BY_NET: dict[str, tuple[list[Code], str]] = {
    "refused": ([Code.PORT_80_REFUSED, Code.NAT_LOOPBACK], "The connection was refused."),
    "timeout": (
        [Code.PORT_80_TIMEOUT, Code.IPV6_UNREACHABLE, Code.NAT_LOOPBACK],
        "The connection timed out.",
    ),
    "read-timeout": ([Code.READ_TIMEOUT, Code.PROXY_PROTOCOL_REQUIRED], "No answer in time."),
    "reset": ([Code.EMPTY_REPLY, Code.PROXY_PROTOCOL_REQUIRED], "The connection was reset."),
    "eof": ([Code.EMPTY_REPLY, Code.PROXY_PROTOCOL_REQUIRED], "Closed without an answer."),
    "tls": ([Code.HTTP_ON_HTTPS_PORT, Code.TLS_ALPN_TERMINATED], "A TLS exchange failed."),
    "unreachable": ([Code.PORT_80_TIMEOUT, Code.IPV6_UNREACHABLE], "No route to the address."),
    "nxdomain": ([Code.DNS_NO_ADDRESS, Code.DNS_SPLIT_HORIZON], "The name does not resolve."),
    "servfail": ([Code.DNS_LOOKUP_FAILED], "The DNS lookup failed."),
    "validation-data": (
        [Code.EMPTY_REPLY, Code.PORT_80_TIMEOUT, Code.PORT_80_REFUSED],
        "The CA could not fetch the challenge.",
    ),
}


_ATOM_READINGS = (_tls_alpn, _proxy_header, _gateway_route, _bad_request)

_READINGS = (
    _presenting,
    _tls_alpn,
    _proxy_header,
    _gateway_route,
    _bad_request,
    _glued_target,
    _https_hop,
    _redirect_target,
    _quoted_status,
    _dialled,
    _cluster_dns,
)


def _url_host(url: str) -> str:
    netloc = re.sub(r"^https?://", "", url).split("/", 1)[0].split("@")[-1]
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def _url_port(url: str) -> int:
    netloc = re.sub(r"^https?://", "", url).split("/", 1)[0]
    m = re.search(r":(\d+)$", netloc)
    if m:
        return int(m.group(1))
    return 443 if url.startswith("https://") else 80


_WRONG_ANSWERS = (Code.CHALLENGE_NOT_FOUND, Code.HTTP_ERROR_STATUS, Code.WRONG_CONTENT)

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
    if exp.candidates[0] == Code.SOLVER_NOT_PRESENTED.value:
        # nothing to probe yet: the Challenges and their events say what was rejected
        return "kubectl get challenges -A -o json | acmelb diagnose --challenges -"
    parts = ["acmelb", "diagnose", exp.name or "NAME"]
    if exp.token:
        parts += [f"--token={exp.token}"]  # a base64url value may start with "-"
        if exp.expected and exp.expected.startswith(exp.token + "."):
            parts += [f"--key={exp.expected}"]
    cmd = shlex.join(parts)
    if {code.value for code in _INSIDE_CODES} & set(exp.candidates):
        if exp.source == "cert-manager":
            cmd += " --inside 'kubectl exec -n NAMESPACE POD --'"
        else:
            cmd += " --inside 'ssh BACKEND'"
    return cmd


def _read_values(exp: Explanation, raw: str) -> None:
    """Fill the URL, name, token, expected/received, fetched URL, status, title, address."""
    urls = _URL_RE.findall(raw)
    challenge_urls = [u for u in urls if "/.well-known/acme-challenge/" in u]
    if challenge_urls or urls:
        exp.url = (challenge_urls or urls)[0].rstrip(".:;'\"")
        exp.name = _url_host(exp.url).strip("[]").lower() or None
    tok = _TOKEN_RE.search(raw)
    if tok:
        exp.token = tok.group(1)
    if exp.name is None:
        dm = _DOMAIN_RE.search(raw)
        if dm:
            exp.name = dm.group(1).lower()
    _read_expected(exp, raw)
    if exp.token is None and exp.expected and KEYAUTH_RE.match(exp.expected):
        exp.token = exp.expected.split(".", 1)[0]
    plain = unescaped(raw)  # klog and JSON lines escape the quotes around Go's URL
    fetched = [next(g for g in m.groups() if g) for m in _FETCHED_RE.finditer(plain)]
    if fetched:
        exp.fetched = fetched[-1].rstrip(".:;'\"")
    _read_status(exp, raw)
    am = _ADDR_RE.search(raw)
    if am:
        exp.address = next((g for g in am.groups() if g), "").strip("[]") or None


def _read_expected(exp: Explanation, raw: str) -> None:
    pm = _PRESENTED.search(raw)
    if pm:
        exp.expected, exp.received = pm.group(2), pm.group(1)
        return
    for pat in _EXPECTED:
        em = pat.search(raw)
        if em:
            exp.expected = em.group(1)
            received = em.group(2)
            # copied from JSON or Go %q output: a literal \n at the end is a newline
            while received.endswith(("\\n", "\\r", "\\t")):
                received = received[:-2] + {"n": "\n", "r": "\r", "t": "\t"}[received[-1]]
            exp.received = received
            return


def _read_status(exp: Explanation, raw: str) -> None:
    status = _STATUS_RE.search(raw)
    if status:
        exp.status = int(next(g for g in status.groups() if g))
    title = _TITLE_RE.search(unescaped(raw))
    if title:
        exp.title = next(g for g in title.groups() if g is not None)
        exp.evidence.append(f"quoted page title: {exp.title!r}")
        words = re.match(r"(\d{3})\b", exp.title)
        if words and exp.status is None:
            exp.status = int(words.group(1))
        if exp.status is None:  # "Not Found" is a 404 whatever scheme it came over
            exp.status = TITLE_STATUS.get(exp.title.lower().strip(" ."))
    if exp.status is not None and exp.received is None:
        exp.received = f"HTTP {exp.status}"


def _match_table(exp: Explanation, raw: str, context: str) -> Reading:
    for pattern, candidates, why, sources in _RULES:
        if sources and context not in sources:
            continue
        if not pattern.search(raw):
            continue
        if candidates is None:
            return _content(exp)
        return list(candidates), why
    return None


def _ipv6_first(exp: Explanation, cands: list[Code], why: str) -> tuple[list[Code], str]:
    # a connection failure on an IPv6 address: the AAAA path is the first suspect
    if exp.atoms.ipv6_only_fails:
        exp.evidence.append("over IPv6 the connection fails, over IPv4 it answers")
        cands = list(dict.fromkeys([Code.IPV6_UNREACHABLE, *cands]))
        return cands, "IPv6 fails where IPv4 answers: the AAAA path is broken. " + why
    if not exp.address or ":" not in exp.address:
        return cands, why
    if cands and cands[0] in _WRONG_ANSWERS and Code.IPV6_UNREACHABLE not in cands:
        # an AAAA record pointing elsewhere than the A record answers wrongly
        cands = [cands[0], Code.IPV6_UNREACHABLE, *cands[1:]]
        return cands, why + (
            f" The CA used the IPv6 address {exp.address}: if the AAAA record points "
            "elsewhere than the A record (a registrar's default, an old server), that is "
            "what answered."
        )
    if not {Code.PORT_80_TIMEOUT, Code.PORT_80_REFUSED, Code.NAT_LOOPBACK} & set(cands):
        return cands, why
    exp.evidence.append(f"dialled {exp.address}: IPv6")
    cands = list(dict.fromkeys([Code.IPV6_UNREACHABLE, *cands]))
    return cands, why + f" The address {exp.address} is IPv6: check the AAAA path first."


# Nothing is looked up for an IP identifier (RFC 8738): no A/AAAA records, no CAA.
_NAME_ONLY_CODES = (
    Code.DNS_SPLIT_HORIZON,
    Code.DNS_NO_ADDRESS,
    Code.DNS_LOOKUP_FAILED,
    Code.IPV6_UNREACHABLE,
    Code.CAA_FORBIDS,
)


def _ip_identifier(exp: Explanation, cands: list[Code], why: str) -> tuple[list[Code], str]:
    """The identifier is an address: the CA connects to it as given, so the causes that
    live in DNS (an AAAA record beside a working A record among them) do not apply."""
    kept = [code for code in cands if code not in _NAME_ONLY_CODES]
    if not kept:
        return cands, why
    exp.evidence.append(f"the identifier is the IP address {exp.name}: no DNS involved")
    return kept, why


def _is_ip_literal(text: str | None) -> bool:
    try:
        ipaddress.ip_address(text or "")
    except ValueError:
        return False
    return True


def _read(exp: Explanation, raw: str) -> Reading:
    """The first reading that applies; a message whose format nothing knows but whose
    atoms a reading understood is of source ``other``."""
    for reading in _READINGS:
        found = reading(exp, raw)
        if found:
            if exp.source == "unknown" and reading in _ATOM_READINGS:
                exp.source = "other"
            return found
    return None


def explain(text: str) -> Explanation:
    """Explain one error message; ``recognised`` is False when nothing matched."""
    raw = text.strip()
    exp = Explanation(source=_source(raw))
    # cert-manager's Challenge reason when the *CA* rejected the authorization: the cause
    # is on the CA's path (outside), not the self-check's (inside).
    context = exp.source
    if _CM_WRAPS_CA.search(raw) and exp.source in ("cert-manager", "acme-ca", "unknown"):
        exp.source, context = "cert-manager", "acme-ca"
    if exp.source in ("traefik", "caddy"):
        context = "lego" if exp.source == "traefik" else "acme-ca"
    exp.atoms = atoms(raw)
    _read_values(exp, raw)
    found = _read(exp, raw) or _match_table(exp, raw, context)
    if found is None and exp.source == "unknown":
        found = _from_atoms(exp)
        exp.source = "other" if found else exp.source
    found = found or _from_atoms(exp)
    if found and exp.atoms.secondary:
        found = _secondary(exp, found)
    if found:
        ip_identifier = _is_ip_literal(exp.name)
        cands, why = (_ip_identifier if ip_identifier else _ipv6_first)(exp, *found)
        exp.candidates = [code.value for code in cands]
        exp.reasoning = why
    if exp.source == "unknown" and exp.candidates:
        exp.source = "acme-ca"
    if not exp.candidates:
        exp.source = "unknown"
        exp.reasoning = (
            "No known HTTP-01 error format matched. Paste the full message "
            "(cert-manager Challenge status.reason or event, the CA's problem detail, or "
            "certbot/lego/Traefik/Caddy output)."
        )
    exp.next = _next_command(exp) if exp.candidates else None
    return exp
