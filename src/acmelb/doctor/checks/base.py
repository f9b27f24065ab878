"""The model the checks read: target, probe attempts per vantage, and the CA's rules.

Probe results arrive as the probe's JSON (``acmelb.probe/v1``); this module
wraps them in typed views (``Hop``, ``Attempt``, ``VantageRun``) and holds the
two validators' rules (Let's Encrypt's and cert-manager's self-check) as pure
functions over those views, so that every check is testable on recorded
results alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote_to_bytes

from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import KEYAUTH_RE, Code, Finding
from acmelb.doctor.resolution import DnsResult
from acmelb.names import challenge_url

T = TypeVar("T")

# Let's Encrypt's rules, from Boulder's va/http.go (the conformance table in
# docs/diagnose.md gives the line of each).
LE_REDIRECT_STATUSES = (301, 302, 307, 308)
LE_MAX_REDIRECTS = 10  # maxRedirect; checked before counting, so 11 are followed
LE_MAX_BODY = 128  # maxResponseSize: a body of 128 bytes or more is refused
LE_MAX_REDIRECT_PATH = 2000  # maxPathSize, in bytes of the redirect target's path
GO_MAX_REQUESTS = 10  # Go's default CheckRedirect: the 10th redirect is refused
# Go's unicode.IsSpace, which Boulder trims from the right (strings.TrimRightFunc):
# the Unicode White_Space property. Python's str.isspace differs (it also counts
# U+001C..U+001F), so the set is spelled out.
GO_ASCII_SPACE = "\t\n\v\f\r "
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
DIAL_ERRORS = ("connect-timeout", "connect-refused", "connect-error")


@dataclass
class Target:
    """What is diagnosed: a name (or an IP address), the token and (when known) the key
    authorization."""

    name: str
    token: str
    key_authorization: str | None
    random_token: bool = False
    challenge: str | None = None  # "namespace/name" of a cert-manager Challenge
    reason: str | None = None  # its status.reason
    # What the target's source knows beyond the name, for the checks that source registered
    # (acmelb.kube: the Challenge and its objects, read in the KUBE stage); opaque here.
    facts: object | None = None

    @property
    def url(self) -> str:
        return challenge_url(self.name, self.token)

    @property
    def thumbprint(self) -> str | None:
        if self.key_authorization and "." in self.key_authorization:
            return self.key_authorization.split(".", 1)[1]
        return None


# Hop and Attempt are read-only views over a recorded probe result, which never changes:
# the fields the checks read many times a name are read from it once, when the view is
# made (a property each time, or cached_property's lock, cost a fleet 2-3% of its CPU).
def _view_field() -> Any:
    return field(init=False, repr=False, compare=False)


@dataclass
class Hop:
    raw: dict[str, Any]
    outcome: str = _view_field()
    status: int | None = _view_field()
    body: str = _view_field()

    def __post_init__(self) -> None:
        raw = self.raw
        self.outcome = str(raw.get("outcome"))
        status = raw.get("status")
        self.status = int(status) if status is not None else None
        self.body = str(raw.get("body") or "")

    @property
    def body_length(self) -> int:
        n = self.raw.get("body_length")
        return int(n) if n is not None else len(self.body.encode("utf-8"))

    @property
    def url(self) -> str:
        return str(self.raw.get("url") or "")

    @property
    def address(self) -> str | None:
        a = self.raw.get("address")
        return str(a) if a else None

    @property
    def error(self) -> str:
        return str(self.raw.get("error") or "")

    def header(self, name: str) -> str | None:
        for k, v in self.raw.get("headers") or []:
            if str(k).lower() == name.lower():
                return str(v)
        return None

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(str(k), str(v)) for k, v in self.raw.get("headers") or []]


@dataclass
class Attempt:
    vantage: str
    role: str  # inside | outside
    raw: dict[str, Any]
    # le_verdict / cm_verdict / le_redirect_problem, computed once per attempt and target
    # (the checks ask for them many times a name); not part of the attempt's value.
    _memo: dict[str, tuple[tuple[object, ...], Verdict | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    address: str = _view_field()
    number: int = _view_field()
    target: str = _view_field()  # public | local
    proxy: bool = _view_field()
    family: str = _view_field()  # ipv4 | ipv6

    def __post_init__(self) -> None:
        raw = self.raw
        self.address = str(raw.get("address"))
        self.number = int(raw.get("attempt", 1))
        self.target = str(raw.get("target", "public"))
        self.proxy = bool(raw.get("proxy_protocol"))
        self.family = "ipv6" if ":" in self.address else "ipv4"

    @cached_property
    def final(self) -> Hop:
        return Hop(self.raw["final"])

    @cached_property
    def redirects(self) -> list[Hop]:
        return [Hop(h) for h in self.raw.get("redirects") or []]

    @property
    def dial_error(self) -> bool:
        return not self.redirects and self.final.outcome in DIAL_ERRORS


@dataclass
class VantageRun:
    label: str
    role: str
    remote: bool
    result: dict[str, Any] | None
    failure: str | None = None
    failure_details: list[str] = field(default_factory=list)
    # the Attempt views, built once per result (the checks walk them many times a name)
    _views: tuple[object, list[Any], int, list[Attempt]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_views"] = None  # a cache: not sent to another process
        return state

    @property
    def usable(self) -> bool:
        return self.result is not None

    @property
    def runner(self) -> str | None:
        return None if self.result is None else str(self.result.get("runner"))

    @property
    def attempts(self) -> list[Attempt]:
        if self.result is None:
            return []
        raw = self.result.get("attempts") or []
        views = self._views
        if (
            views is not None
            and views[0] is self.result
            and views[1] is raw
            and views[2] == len(raw)
        ):
            return list(views[3])
        made = [Attempt(self.label, self.role, a) for a in raw]
        self._views = (self.result, raw, len(raw), made)
        return list(made)

    @property
    def public_attempts(self) -> list[Attempt]:
        """Probes of the name's addresses without a PROXY header (what a client sends)."""
        return [a for a in self.attempts if a.target == "public" and not a.proxy]

    @property
    def local_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts if a.target == "local"]

    @property
    def resolved(self) -> list[str]:
        if self.result is None:
            return []
        res = self.result.get("resolution") or {}
        return [str(x) for x in (res.get("aaaa") or []) + (res.get("a") or [])]

    @property
    def resolution_error(self) -> str | None:
        if self.result is None:
            return None
        err = (self.result.get("resolution") or {}).get("error")
        return str(err) if err else None


# Boulder dials each address for at most 10 s (va/va.go, singleDialTimeout) inside one
# deadline for the whole validation, every hop and read included, of about 15 s (the
# RPC's deadline less 200 ms, va/http.go). --timeout is the dial's share; the rest keeps
# that ratio, so the default 10 gives the CA's 15 s.
DEADLINE_PER_DIAL = 1.5


@dataclass
class Options:
    repeat: int = 3
    timeout: float = 10.0  # per dial; the whole validation gets DEADLINE_PER_DIAL times it
    ca_identity: str = "letsencrypt.org"
    dns_server: tuple[str, int] | None = None
    resolve: dict[str, list[str]] = field(default_factory=dict)
    # CIDRs, or DNS suffixes, treated as public (labs): addresses in them are not
    # reserved, names under them end in a registered TLD
    assume_public: list[str] = field(default_factory=list)

    @property
    def deadline(self) -> float:
        """The whole validation's deadline: every hop, read and fallback of an attempt."""
        return DEADLINE_PER_DIAL * self.timeout

    @cached_property
    def public_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(n, strict=False) for n in self.assume_public if _is_network(n)
        )

    @cached_property
    def public_suffixes(self) -> tuple[str, ...]:
        return tuple(n.lower().strip(".") for n in self.assume_public if not _is_network(n))


_DEFAULT_OPTIONS = Options()


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@dataclass
class Context:
    target: Target
    options: Options
    cluster: bool = False  # the inside vantages look like Kubernetes (kubectl) or --challenges
    dns: DnsResult | None = None
    name_error: str | None = None
    # the target's IP address when it is one (RFC 8738): no DNS, probed as it is
    address: str | None = None
    runs: list[VantageRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # what several checks derive from the same runs, made once: key -> (runs, value)
    _derived: dict[str, tuple[list[VantageRun], Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def derived(self, key: str, make: Callable[[Context], T]) -> T:
        """``make(self)``, remembered for these very runs (set once, after the probes)."""
        hit = self._derived.get(key)
        if hit is not None and hit[0] is self.runs:
            return cast(T, hit[1])
        value = make(self)
        self._derived[key] = (self.runs, value)
        return value

    @property
    def outside(self) -> list[VantageRun]:
        return [r for r in self.runs if r.role == "outside" and r.usable]

    @property
    def inside(self) -> list[VantageRun]:
        return [r for r in self.runs if r.role == "inside" and r.usable]

    @property
    def primary(self) -> list[VantageRun]:
        """The runs whose answers stand for 'what the CA sees': outside if any, else inside."""
        return self.outside or self.inside

    def has(self, code: Code) -> bool:
        return any(f.code is code for f in self.findings)


class Check(Protocol):
    """A check: the codes it owns, its stage, the checks of its stage whose findings it
    reads (``after``: they run first), when it applies, and what it finds."""

    @property
    def codes(self) -> tuple[Code, ...]: ...

    @property
    def stage(self) -> Stage: ...

    @property
    def after(self) -> tuple[type, ...]: ...

    def applies(self, ctx: Context) -> bool: ...

    def run(self, ctx: Context) -> list[Finding]: ...


# ---------------------------------------------------------------------------
# The validators' rules as pure functions.


@dataclass
class Verdict:
    ok: bool
    code: Code | None = None
    detail: str = ""
    notes: list[Code] = field(default_factory=list)


def _port_of(url: str) -> tuple[str, str, int | None]:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)", url)
    if not m:
        return "", "", None
    scheme = m.group(1).lower()
    # Go's URL.Hostname() drops the userinfo (up to the last '@'); Boulder never looks at it.
    authority = m.group(2).rpartition("@")[2]
    hm = re.match(r"(\[[^\]]*\]|[^:]*)(?::(\d*))?", authority)
    host = hm.group(1).strip("[]").lower() if hm else ""
    digits = hm.group(2) if hm else None
    port = int(digits) if digits else (443 if scheme == "https" else 80)
    return scheme, host, port


def hop_port(url: str) -> int | None:
    """The port a hop's URL dials (80/443 by scheme when none is given)."""
    return _port_of(url)[2]


def _memo(attempt: Attempt, key: str, *owners: object) -> tuple[bool, Verdict | None]:
    """The verdict remembered under ``key`` for these very objects (by identity)."""
    hit = attempt._memo.get(key)
    same = hit is not None and len(hit[0]) == len(owners)
    if same and hit is not None and all(a is b for a, b in zip(hit[0], owners, strict=True)):
        return True, hit[1]
    return False, None


def le_redirect_problem(attempt: Attempt, options: Options | None = None) -> Verdict | None:
    """The first redirect in the chain Let's Encrypt would refuse, or None (or an ok
    verdict carrying notes such as ``redirect-https``)."""
    policy = options or _DEFAULT_OPTIONS
    found, v = _memo(attempt, "redirect", policy)
    if not found:
        v = _le_redirect_problem(attempt, policy)
        attempt._memo["redirect"] = ((policy,), v)
    return v


def _le_redirect_problem(attempt: Attempt, options: Options) -> Verdict | None:
    first = attempt.redirects[0].url if attempt.redirects else attempt.final.url
    seen = {_loop_key(first)}
    notes: list[Code] = []
    for i, hop in enumerate(attempt.redirects, start=1):
        target = str(hop.raw.get("redirect_to") or "")
        refused = _le_refuses_redirect(i, hop, target, options)
        if refused is None and _loop_key(target) in seen:
            refused = Verdict(False, Code.REDIRECT_LOOP, f"redirect loop back to {target}")
        if refused is not None:
            return refused
        seen.add(_loop_key(target))
        if target.lower().startswith("https:"):
            notes.append(Code.REDIRECT_HTTPS)
    fallback = _le_no_fallback_after_redirect(attempt)
    if fallback is not None:
        return fallback
    final = attempt.final
    if final.outcome == "redirect-error" and "loop" in final.error:
        return Verdict(False, Code.REDIRECT_LOOP, final.error)
    if final.outcome == "redirect-error" and "redirects" in final.error:
        return Verdict(False, Code.REDIRECT_TOO_MANY, final.error)
    if final.outcome == "redirect-error":
        return Verdict(False, Code.REDIRECT_BAD_TARGET, final.error)
    if notes:
        return Verdict(True, None, "", notes)
    return None


def _le_refuses_redirect(i: int, hop: Hop, target: str, options: Options) -> Verdict | None:
    """Boulder's processRedirect on the ``i``-th redirect, in its order: count, TLS
    version, status, then the target (extractRequestTarget, path length)."""
    if i > LE_MAX_REDIRECTS + 1:
        return Verdict(
            False,
            Code.REDIRECT_TOO_MANY,
            f"redirect {i} (at {hop.url}): Let's Encrypt follows {LE_MAX_REDIRECTS + 1} "
            "redirects and refuses the next ('Too many redirects')",
        )
    if hop.raw.get("tls_version") in ("SSLv3", "TLSv1", "TLSv1.1"):
        return Verdict(
            False,
            Code.REDIRECT_BAD_TARGET,
            f"{hop.url} redirected over {hop.raw.get('tls_version')}: a CA refuses redirects "
            "from HTTPS servers without TLS 1.2 or better",
        )
    if hop.status not in LE_REDIRECT_STATUSES:
        return Verdict(
            False,
            Code.REDIRECT_BAD_STATUS,
            f"{hop.url} answered {hop.status} with Location {target}: "
            "a CA follows only 301, 302, 307 and 308",
        )
    why = le_redirect_target_problem(target, options)
    if why is not None:
        return Verdict(False, Code.REDIRECT_BAD_TARGET, f"redirect to {target}: {why}")
    return None


def le_redirect_target_problem(target: str, options: Options | None = None) -> str | None:
    """Why Let's Encrypt refuses to follow a redirect to ``target``, or None
    (Boulder's extractRequestTarget and the path-length rule)."""
    policy = options or _DEFAULT_OPTIONS
    scheme, host, port = _port_of(target)
    if scheme not in ("http", "https"):
        return "only http and https are followed"
    if port not in (80, 443):
        return "only ports 80 and 443 are followed"
    if not host:
        return "the target has no host"
    if host.endswith(".well-known"):
        return "host ends in '.well-known' (a missing '/' in the redirect)"
    ip_problem = _redirect_ip_problem(host, policy)
    if ip_problem:
        return ip_problem
    if ip_problem is None and host.endswith("."):
        # publicsuffix-go finds no rule for a name ending in a dot (its last label is empty)
        return (
            "the host ends in a dot: Boulder's IANA TLD lookup (iana.ExtractSuffix) finds "
            "no TLD in it"
        )
    if ip_problem is None and not _registered_tld(host, policy):
        return "the host does not end in an IANA-registered top-level domain"
    # Boulder measures req.URL.Path (the path after percent-decoding), for every target
    if len(unquote_to_bytes(_path_of(target))) > LE_MAX_REDIRECT_PATH:
        return f"the path is longer than {LE_MAX_REDIRECT_PATH} bytes (decoded)"
    return None


def _redirect_ip_problem(host: str, options: Options) -> str | None:
    """For an IP-address host: why it is refused, "" when it is followed; None for a name.
    Boulder follows redirects to public addresses (not to reserved ones, nor with a
    scope zone)."""
    bare, _, zone = host.partition("%")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if zone:
        return "an IPv6 address with a scope zone"
    from acmelb.doctor.resolution import reserved_reason

    public = any(address in net for net in options.public_networks)
    why = None if public else reserved_reason(str(address))
    if why:
        return f"{_go_ipv6(address) if address.version == 6 else address} is {why}"
    if address.version == 6 and bare != _go_ipv6(address):
        # Boulder's preresolved dialer is made for the canonical form (RFC 5952) and
        # refuses to dial the host as written ("preresolvedDialer mismatch").
        return (
            f"the IP literal [{bare}] is not written canonically ({_go_ipv6(address)}): "
            "Boulder's dialer refuses it (preresolvedDialer mismatch)"
        )
    return ""


def _go_ipv6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """netip.Addr.String() of an IPv6 address: RFC 5952, IPv4-mapped ones dotted."""
    mapped = getattr(address, "ipv4_mapped", None)
    return f"::ffff:{mapped}" if mapped is not None else str(address)


def _registered_tld(host: str, options: Options) -> bool:
    if any(host == s or host.endswith("." + s) for s in options.public_suffixes):
        return True
    return _icann_suffixes().publicsuffix(host) is not None


@cache
def _icann_suffixes() -> Any:
    # Boulder's iana.ExtractSuffix: the ICANN section of the Public Suffix List, no
    # default rule (an unknown TLD is refused).
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList(only_icann=True, accept_unknown=False)


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    cut = min((rest.find(c) for c in "/?#" if c in rest), default=len(rest))
    path = rest[cut:]
    return path.split("?", 1)[0].split("#", 1)[0]


def _loop_key(url: str) -> str:
    # Boulder lower-cases the redirect host before comparing URLs.
    scheme, sep, rest = url.partition("://")
    host, slash, tail = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{tail}"


def _le_no_fallback_after_redirect(attempt: Attempt) -> Verdict | None:
    """Boulder falls back from AAAA to A only for the first request: a redirect hop whose
    first address could not be dialled fails, however the second one answered."""
    later = [*attempt.redirects[1:], attempt.final] if attempt.redirects else []
    for hop in later:
        failed = hop.raw.get("fallback_from")
        if not failed:
            continue
        address = str(failed.get("address") or "")
        code = (
            Code.IPV6_UNREACHABLE
            if ":" in address
            else outcome_code(Hop({**failed, "url": hop.url}))
        )
        return Verdict(
            False,
            code,
            f"{hop.url}: {address} could not be dialled ({failed.get('error')}); a CA does "
            "not fall back to another address on a redirect hop",
        )
    return None


OUTCOME_CODE = {
    "connect-timeout": Code.PORT_80_TIMEOUT,
    "connect-refused": Code.PORT_80_REFUSED,
    "connect-error": Code.PORT_80_TIMEOUT,
    "reset": Code.EMPTY_REPLY,
    "empty-reply": Code.EMPTY_REPLY,
    "bad-response": Code.MALFORMED_RESPONSE,
    "read-timeout": Code.READ_TIMEOUT,
    "total-timeout": Code.READ_TIMEOUT,
    "tls-on-http-port": Code.HTTP_ON_HTTPS_PORT,
    "dns-error": Code.DNS_NO_ADDRESS,
}


# A failing https hop (a redirect to https: port 80 answered) has codes of its own.
HTTPS_HOP_CODE = {
    Code.PORT_80_REFUSED: Code.PORT_443_REFUSED,
    Code.PORT_80_TIMEOUT: Code.PORT_443_TIMEOUT,
    Code.EMPTY_REPLY: Code.HTTPS_HOP_FAILED,
    Code.READ_TIMEOUT: Code.HTTPS_HOP_FAILED,
}
TLS_FAILED = "TLS handshake failed"  # the probe's words (probe.py, _start_tls)


def outcome_code(hop: Hop) -> Code:
    """The code of a hop that got no HTTP response: by its outcome, and on an https hop
    after a redirect by what failed there."""
    code = OUTCOME_CODE.get(hop.outcome, Code.EMPTY_REPLY)
    if not hop.url.lower().startswith("https://"):
        return code
    if code is Code.MALFORMED_RESPONSE and hop.error.startswith(TLS_FAILED):
        return Code.HTTPS_HOP_FAILED
    return HTTPS_HOP_CODE.get(code, code)


def classify_response(hop: Hop, target: Target, trim: bool, max_body: int | None) -> Verdict:
    """Judge one final response against the key authorization."""
    status = hop.status
    if status != 200:
        if status == 404:
            if target.random_token:
                return Verdict(True, None, "404 for a random token, as a healthy responder answers")
            return Verdict(False, Code.CHALLENGE_NOT_FOUND, f"HTTP {status} for {hop.url}")
        if status == 400 and hop.raw.get("tls_listener"):
            return Verdict(
                False,
                Code.HTTP_ON_HTTPS_PORT,
                "HTTP 400: plain HTTP request was sent to HTTPS port",
            )
        return Verdict(False, Code.HTTP_ERROR_STATUS, f"HTTP {status} for {hop.url}")
    body = hop.body
    if max_body is not None and hop.body_length >= max_body:
        return Verdict(
            False,
            Code.BODY_TOO_LARGE,
            f"HTTP 200 with {hop.body_length} bytes of body (a CA reads fewer than {max_body})",
        )
    if hop.raw.get("body_truncated"):
        return Verdict(False, Code.BODY_TOO_LARGE, f"body larger than {hop.body_length} bytes")
    if hop.raw.get("body_incomplete"):
        return Verdict(
            False,
            Code.WRONG_CONTENT,
            f"the body could not be read whole ({hop.error}): a CA reports "
            "'Error reading HTTP response body'",
        )
    # Go decodes bytes that are not UTF-8 as U+FFFD, not a space: a raw 0xA0 or 0x85 after
    # the key is not trimmed (the body was read as latin-1 here).
    space = GO_ASCII_SPACE if hop.raw.get("body_not_utf8") else GO_SPACE
    compared = body.rstrip(space) if trim else body
    shaped = KEYAUTH_RE.match(body.rstrip(space))
    if target.random_token:
        if shaped and shaped.group(1) == target.token:
            return Verdict(
                False,
                Code.LB_INTERCEPTS_CHALLENGE,
                f"a key authorization for a random token: {body.strip()!r}",
            )
        return Verdict(False, Code.WRONG_CONTENT, f"HTTP 200 for a random token: {_short(body)}")
    if target.key_authorization is None:
        return Verdict(True)
    if compared == target.key_authorization:
        return Verdict(True)
    if body.rstrip(space) == target.key_authorization:
        return Verdict(
            False,
            Code.TRAILING_WHITESPACE,
            f"body {body!r} is the key authorization plus trailing whitespace",
        )
    if shaped and shaped.group(1) == target.token:
        return Verdict(
            False,
            Code.THUMBPRINT_MISMATCH,
            f"{shaped.group(0)!r}: our token with thumbprint {shaped.group(2)}, "
            f"expected {target.thumbprint}",
        )
    return Verdict(False, Code.WRONG_CONTENT, f"HTTP 200 with {_short(body)}")


def _short(body: str, limit: int = 80) -> str:
    if not body:
        return "an empty body"
    text = body if len(body) <= limit else body[:limit] + "..."
    return repr(text)


def le_verdict(attempt: Attempt, target: Target, options: Options | None = None) -> Verdict:
    """Would Let's Encrypt's validator accept this attempt (one address, redirects included)?"""
    policy = options or _DEFAULT_OPTIONS
    found, v = _memo(attempt, "le", target, policy)
    if found and v is not None:
        return v
    v = _le_verdict(attempt, target, policy)
    attempt._memo["le"] = ((target, policy), v)
    return v


def _le_verdict(attempt: Attempt, target: Target, options: Options) -> Verdict:
    red = le_redirect_problem(attempt, options)
    if red is not None and not red.ok:
        return red
    notes = red.notes if red is not None else []
    final = attempt.final
    if final.outcome != "response":
        return Verdict(False, outcome_code(final), final.error or final.outcome, notes)
    v = classify_response(final, target, trim=True, max_body=LE_MAX_BODY)
    v.notes = notes + v.notes
    return v


def cm_verdict(attempt: Attempt, target: Target) -> Verdict:
    """Would cert-manager's self-check accept this attempt (Go redirects, 1 MiB, no trim)?"""
    found, v = _memo(attempt, "cm", target)
    if found and v is not None:
        return v
    v = _cm_verdict(attempt, target)
    attempt._memo["cm"] = ((target,), v)
    return v


def _cm_verdict(attempt: Attempt, target: Target) -> Verdict:
    final = attempt.final
    if len(attempt.redirects) >= GO_MAX_REQUESTS:
        return Verdict(
            False,
            Code.REDIRECT_TOO_MANY,
            f"Go's client (cert-manager) stops after {GO_MAX_REQUESTS} requests: "
            f"{len(attempt.redirects)} redirects",
        )
    if final.outcome == "redirect-error":
        return Verdict(False, Code.REDIRECT_TOO_MANY, final.error)
    if final.outcome != "response":
        return Verdict(False, outcome_code(final), final.error or final.outcome)
    return classify_response(final, target, trim=False, max_body=None)


def ca_attempts(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The probes a CA's perspectives would make: each dials AAAA first, A after a dial error.

    Several perspectives, each with its own DNS answer order, together reach every
    address of the family they use, so every such address counts.
    """
    pub = [a for a in attempts if a.target == "public" and not a.proxy]
    v6 = [a for a in pub if a.family == "ipv6"]
    v4 = [a for a in pub if a.family == "ipv4"]
    if v6 and not v4:
        # An IPv6-only name: no A to fall back to, so a refusal or a timeout is final for
        # the CA; "network unreachable" may be this vantage's own lack of IPv6 (unknown).
        return [a for a in v6 if a.final.outcome != "connect-error"]
    if v6 and not any(a.dial_error for a in v6):
        return v6
    return [a for a in v6 if not a.dial_error] + v4


def max_remote_failures(remote: int) -> int:
    """How many remote perspectives may fail: the quorum table of the Baseline
    Requirements 3.2.2.9 (ballot SC-067), as Boulder's maxAllowedFailures has it."""
    if remote < 2:
        return 0
    if remote < 6:
        return 1
    return 2


def corroborated(primary_ok: bool, remote_ok: Sequence[bool]) -> bool:
    """Multi-perspective corroboration: the primary must succeed, and no more remote
    perspectives may fail than the quorum table allows."""
    failed = sum(1 for ok in remote_ok if not ok)
    return primary_ok and failed <= max_remote_failures(len(remote_ok))


def go_path(attempts: Sequence[Attempt], number: int) -> Attempt | None:
    """The attempt Go's dialer picks: addresses in order until one connects."""
    pub = [a for a in attempts if a.target == "public" and not a.proxy and a.number == number]
    for a in pub:
        if not a.dial_error:
            return a
    return pub[0] if pub else None


def describe(attempt: Attempt, hop: Hop | None = None) -> str:
    """One evidence line: ``ADDR:80 from VANTAGE: what happened``."""
    h = hop or attempt.final
    port = h.raw.get("port") or 80
    addr = h.address or attempt.address
    where = f"[{addr}]" if ":" in addr else addr
    extra = " (with PROXY v1 header)" if attempt.proxy else ""
    if attempt.target == "local":
        extra += " (the backend itself, Host: name)"
    if attempt.redirects and hop is None:
        chain = " -> ".join(f"{r.status} {r.raw.get('redirect_to')}" for r in attempt.redirects)
        extra += f" after redirects {chain}"
    prefix = f"{where}:{port} from {attempt.vantage}{extra}"
    if h.outcome == "response":
        server = h.header("Server")
        srv = f", Server: {server}" if server else ""
        return (
            f"{prefix}: HTTP {h.status} {h.raw.get('reason') or ''}".rstrip()
            + f", body {_short(h.body)} ({h.body_length} bytes){srv}"
        )
    return f"{prefix}: {h.error or h.outcome}"


def dedupe(lines: Sequence[str], limit: int = 6) -> list[str]:
    """Collapse repeated evidence lines ("... (3 times)") and cap the list."""
    counts: dict[str, int] = {}
    for line in lines:
        counts[line] = counts.get(line, 0) + 1
    out = [line if n == 1 else f"{line} ({n} times)" for line, n in counts.items()]
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more"]
    return out
