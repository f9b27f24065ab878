"""Evidence atoms in an error message: what it says happened, whatever wraps it.

``atoms(text)`` reads a pasted message the way a person skims it: the HTTP statuses
of the site (not the ACME problem's own status), quoted page titles, the network
errors Go, curl and the CAs print (a refusal is not a timeout), DNS errors, the
addresses dialled and their family, Kubernetes kinds and Gateway API condition
reasons, the wrapping product's format (klog, Caddy's JSON lines, Go autocert, curl,
nginx's logs, Traefik), and the few phrases that name a cause by themselves (a
listener waiting for a PROXY header, TLS-ALPN-01, a secondary perspective). ``explain``
ranks causes from them, so a message in a format it has never seen still gets
candidates when it carries any of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Atoms", "atoms", "unescaped"]


@dataclass
class Atoms:
    statuses: list[int] = field(default_factory=list)
    net: list[str] = field(default_factory=list)  # refused, timeout, read-timeout, ...
    addresses: list[str] = field(default_factory=list)
    kube_kinds: list[str] = field(default_factory=list)
    kube_reasons: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    proxy_header: bool = False  # a PROXY-protocol listener got a plain request
    tls_alpn: bool = False  # TLS-ALPN-01 (acme-tls/1) is in play
    secondary: bool = False  # "During secondary validation": the primary passed
    no_viable: bool = False  # Go autocert found no challenge it could satisfy
    unknown_token: bool = False  # the ACME responder got a request for no pending token
    ipv6_only_fails: bool = False  # over IPv6 the connection fails, over IPv4 it answers

    @property
    def empty(self) -> bool:
        return not (
            self.statuses
            or self.net
            or self.addresses
            or self.kube_reasons
            or self.proxy_header
            or self.tls_alpn
            or self.secondary
            or self.no_viable
            or self.unknown_token
        )

    @property
    def families(self) -> set[str]:
        return {"ipv6" if ":" in a else "ipv4" for a in self.addresses}


def unescaped(text: str) -> str:
    """JSON, klog and Go %q escapes undone (a message pasted from a log line)."""
    for escaped, plain in (
        ("\\\\", "\\"),
        ("\\u003c", "<"),
        ("\\u003e", ">"),
        ("\\u0026", "&"),
        ('\\"', '"'),
        ("\\r", "\r"),
        ("\\n", "\n"),
        ("\\t", "\t"),
    ):
        text = text.replace(escaped, plain)
    return text


# the site's status, never the ACME problem's ("HTTP 403 urn:...", "acme: error: 403 ::")
_STATUS = (
    re.compile(r"wrong status code '(\d{3})'"),
    re.compile(r"Invalid response from \S+?(?: \[[^\]]*\])?:\s*(\d{3})\b"),
    re.compile(r"Non-200 status code from HTTP: (\d{3})"),
    re.compile(r"^\s*HTTP/\d(?:\.\d)?\s+(\d{3})\b", re.M),
    re.compile(r"\"(?:GET|HEAD) /\S* HTTP/\d\.\d\" (\d{3}) "),  # an access log line
    re.compile(
        r"\b(\d{3}) (?:Bad Gateway|Not Found|Forbidden|Service (?:Temporarily )?Unavailable|"
        r"Bad Request|Gateway Time-?out|Internal Server Error|Unauthorized|Origin Down)\b"
    ),
)
# a quoted error page names its status in its title, whatever the scheme it came over
TITLE_STATUS = {
    "bad request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not found": 404,
    "internal server error": 500,
    "bad gateway": 502,
    "service unavailable": 503,
    "service temporarily unavailable": 503,
    "gateway time-out": 504,
    "gateway timeout": 504,
}
# an ACME API exchange printed by the client: its status lines are not the site's
_API_LINES = re.compile(r"Replay-Nonce|Boulder-Requester|application/problem\+json", re.I)

# (kind, phrase): the last one printed is the innermost error of a Go chain
_NET = (
    ("refused", r"connection refused|ECONNREFUSED"),
    ("read-timeout", r"Timeout after connect|awaiting headers|read: connection timed out"),
    (
        "timeout",
        r"i/o timeout|Timeout during connect|context deadline exceeded|Connection timed out|"
        r"connect: connection timed out|timed out",
    ),
    ("reset", r"connection reset|reset by peer"),
    ("eof", r"\bEOF\b|Empty reply from server|empty reply"),
    (
        "tls",
        r"remote error: tls|tls: [a-z]|TLS handshake|x509:|does not look like a TLS|"
        r"HTTP response to HTTPS client",
    ),
    ("unreachable", r"no route to host|network is unreachable"),
    ("nxdomain", r"NXDOMAIN|no such host"),
    ("servfail", r"SERVFAIL|server misbehaving"),
    ("validation-data", r"Error getting validation data"),
)
_NET_RE = tuple((kind, re.compile(p, re.I)) for kind, p in _NET)

_V4 = r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
_V6 = r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|:?[0-9A-Fa-f]{1,4})(?![0-9A-Fa-f:])"
# where a message names the address it dialled (never "client:" of a server's log)
_DIALLED = re.compile(
    rf"(?:dial tcp |addressUsed\"?:\s*\"?|\[|^|\s|\"|detail\":\")({_V4}|{_V6})\]?"
    rf"(?::\d+)?(?=:\s*(?:Fetching|Invalid response|Timeout|During)|\]|:\d+: )",
    re.M,
)
_KINDS = re.compile(
    r"\b(HTTPRoute|GRPCRoute|ListenerSet|GatewayClass|Gateway|IngressClass|Ingress|"
    r"Service|Challenge)\b"
)
_REASONS = re.compile(
    r"\b(NoReadyListeners|NotAllowedByListeners|NoMatchingListenerHostname|NoMatchingParent|"
    r"InvalidCertificateRef|RefNotPermitted|ListenersNotReady|UnsupportedValue|"
    r"sectionName|parentRefs?|is invalid|Programmed\W{1,6}False|Accepted\W{1,6}False)"
)
_FORMATS = (
    ("klog", r"^[IWEF]\d{4} \d\d:\d\d:\d\d|logger=\"cert-manager|\"msg\"=|re-queuing item"),
    ("caddy", r"\"logger\":\"(?:tls|http)\.|tls\.obtain|\"msg\":\"challenge failed\""),
    ("autocert", r"acme/autocert:"),
    ("curl", r"^curl |curl: \(\d+\)"),
    ("nginx", r"\[error\] \d+#\d+: \*\d+"),
    ("access-log", r"\"(?:GET|HEAD) /\S* HTTP/\d\.\d\" \d{3} "),
    ("traefik", r"providerName=|routerName=|\bERR "),
    ("certbot", r"Certbot failed to authenticate|^\s*Detail: "),
)
_FORMATS_RE = tuple((name, re.compile(p, re.I | re.M)) for name, p in _FORMATS)
_PROXY_HEADER = re.compile(r"while reading PROXY protocol|broken header:", re.I)
_TLS_ALPN = re.compile(r"acme-tls/1|tls-alpn-01|TLS-ALPN", re.I)
_SECONDARY = re.compile(r"During secondary validation", re.I)
_NO_VIABLE = re.compile(r"no viable challenge type found|no supported challenge type", re.I)
_UNKNOWN_TOKEN = re.compile(
    r"no information found to solve challenge|Cannot retrieve the ACME challenge", re.I
)
_CURL_CMD = re.compile(r"^\s*curl\s.*$", re.M)


def atoms(text: str) -> Atoms:
    """The evidence atoms of one message (``text`` as pasted)."""
    plain = unescaped(text)
    found = Atoms(
        statuses=_statuses(plain),
        net=_net(plain),
        addresses=list(dict.fromkeys(m.group(1) for m in _DIALLED.finditer(plain))),
        kube_kinds=list(dict.fromkeys(_KINDS.findall(plain))),
        kube_reasons=list(dict.fromkeys(_REASONS.findall(plain))),
        formats=[name for name, pat in _FORMATS_RE if pat.search(plain)],
        proxy_header=bool(_PROXY_HEADER.search(plain)),
        tls_alpn=bool(_TLS_ALPN.search(plain)),
        secondary=bool(_SECONDARY.search(plain)),
        no_viable=bool(_NO_VIABLE.search(plain)),
        unknown_token=bool(_UNKNOWN_TOKEN.search(plain)),
    )
    found.ipv6_only_fails = _ipv6_only_fails(plain)
    return found


def _statuses(text: str) -> list[int]:
    out: list[int] = []
    for pat in _STATUS:
        for m in pat.finditer(text):
            if _API_LINES.search(text[m.start() : m.start() + 400]):
                continue  # the client's exchange with the CA, not the site
            out.append(int(m.group(1)))
    for m in re.finditer(r"<title>\s*(.*?)\s*</title>", text, re.I | re.S):
        title = m.group(1).lower()
        words = re.match(r"(\d{3})\b", title)
        code = int(words.group(1)) if words else TITLE_STATUS.get(title.strip(" .")) or 0
        if code:
            out.append(code)
    return list(dict.fromkeys(s for s in out if 100 <= s <= 599))


def _net(text: str) -> list[str]:
    """The network error kinds named, the innermost (last printed) first."""
    hits: list[tuple[int, str]] = []
    for kind, pat in _NET_RE:
        for m in pat.finditer(text):
            hits.append((m.start(), kind))
    ordered = [kind for _, kind in sorted(hits, reverse=True)]
    return list(dict.fromkeys(ordered))


def _ipv6_only_fails(text: str) -> bool:
    """Two curl runs: over IPv6 (-6) the connection fails, over IPv4 (-4) a status comes."""
    cmds = list(_CURL_CMD.finditer(text))
    v6_failed = v4_answered = False
    for i, cmd in enumerate(cmds):
        end = cmds[i + 1].start() if i + 1 < len(cmds) else len(text)
        out = text[cmd.end() : end]
        flags = " ".join(w for w in cmd.group(0).split() if w.startswith("-") and w != "-")
        if re.search(r"-\w*6", flags) and _net(out):
            v6_failed = True
        if re.search(r"-\w*4", flags) and _statuses(out):
            v4_answered = True
    return v6_failed and v4_answered
