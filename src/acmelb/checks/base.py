"""The model the checks read: target, probe attempts per vantage, and the CA's rules.

Probe results arrive as the probe's JSON (``acmelb.probe/v1``); this module
wraps them in typed views (``Hop``, ``Attempt``, ``VantageRun``) and holds the
two validators' rules (Let's Encrypt's and cert-manager's self-check) as pure
functions over those views, so that every check is testable on recorded
results alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from acmelb.codes import Stage
from acmelb.findings import KEYAUTH_RE, Code, Finding
from acmelb.resolution import DnsResult

if TYPE_CHECKING:
    from acmelb.kubeobjects import Solver

LE_REDIRECT_STATUSES = (301, 302, 307, 308)
LE_MAX_REDIRECTS = 10
LE_MAX_BODY = 128
DIAL_ERRORS = ("connect-timeout", "connect-refused", "connect-error")


@dataclass
class Target:
    """What is diagnosed: a name, the token and (when known) the key authorization."""

    name: str
    token: str
    key_authorization: str | None
    random_token: bool = False
    challenge: str | None = None  # "namespace/name" of a cert-manager Challenge
    reason: str | None = None  # its status.reason
    kube: Solver | None = None  # the Challenge and its objects (the KUBE stage reads them)

    @property
    def url(self) -> str:
        return f"http://{self.name}/.well-known/acme-challenge/{self.token}"

    @property
    def thumbprint(self) -> str | None:
        if self.key_authorization and "." in self.key_authorization:
            return self.key_authorization.split(".", 1)[1]
        return None


@dataclass
class Hop:
    raw: dict[str, Any]

    @property
    def outcome(self) -> str:
        return str(self.raw.get("outcome"))

    @property
    def status(self) -> int | None:
        s = self.raw.get("status")
        return int(s) if s is not None else None

    @property
    def body(self) -> str:
        return str(self.raw.get("body") or "")

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
    _memo: dict[str, tuple[Target | None, Verdict | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def address(self) -> str:
        return str(self.raw.get("address"))

    @property
    def number(self) -> int:
        return int(self.raw.get("attempt", 1))

    @property
    def target(self) -> str:
        return str(self.raw.get("target", "public"))

    @property
    def proxy(self) -> bool:
        return bool(self.raw.get("proxy_protocol"))

    @cached_property
    def final(self) -> Hop:
        return Hop(self.raw["final"])

    @cached_property
    def redirects(self) -> list[Hop]:
        return [Hop(h) for h in self.raw.get("redirects") or []]

    @property
    def family(self) -> str:
        return "ipv6" if ":" in self.address else "ipv4"

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


@dataclass
class Options:
    repeat: int = 3
    timeout: float = 5.0
    ca_identity: str = "letsencrypt.org"
    dns_server: tuple[str, int] | None = None
    resolve: dict[str, list[str]] = field(default_factory=dict)
    assume_public: list[str] = field(default_factory=list)  # CIDRs treated as public (labs)


@dataclass
class Context:
    target: Target
    options: Options
    cluster: bool = False  # the inside vantages look like Kubernetes (kubectl) or --challenges
    dns: DnsResult | None = None
    name_error: str | None = None
    runs: list[VantageRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

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
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(\[[^\]]*\]|[^/:?#]*)(?::(\d*))?", url)
    if not m:
        return "", "", None
    scheme = m.group(1).lower()
    host = m.group(2).strip("[]").lower()
    port = int(m.group(3)) if m.group(3) else (443 if scheme == "https" else 80)
    return scheme, host, port


def _memo(attempt: Attempt, key: str, target: Target | None) -> tuple[bool, Verdict | None]:
    hit = attempt._memo.get(key)
    if hit is not None and hit[0] is target:
        return True, hit[1]
    return False, None


def le_redirect_problem(attempt: Attempt) -> Verdict | None:
    """The first redirect in the chain Let's Encrypt would refuse, or None."""
    found, v = _memo(attempt, "redirect", None)
    if not found:
        v = _le_redirect_problem(attempt)
        attempt._memo["redirect"] = (None, v)
    return v


def _le_redirect_problem(attempt: Attempt) -> Verdict | None:
    seen = {attempt.final.url} if not attempt.redirects else {attempt.redirects[0].url}
    notes: list[Code] = []
    for i, hop in enumerate(attempt.redirects, start=1):
        target = str(hop.raw.get("redirect_to") or "")
        if hop.status not in LE_REDIRECT_STATUSES:
            return Verdict(
                False,
                Code.REDIRECT_BAD_STATUS,
                f"{hop.url} answered {hop.status} with Location {target}: "
                "a CA follows only 301, 302, 307 and 308",
            )
        if i > LE_MAX_REDIRECTS:
            return Verdict(
                False,
                Code.REDIRECT_TOO_MANY,
                f"more than {LE_MAX_REDIRECTS} redirects (at {hop.url})",
            )
        scheme, host, port = _port_of(target)
        if scheme not in ("http", "https"):
            return Verdict(
                False,
                Code.REDIRECT_BAD_TARGET,
                f"redirect to {target}: only http and https are followed",
            )
        if port not in (80, 443):
            return Verdict(
                False,
                Code.REDIRECT_BAD_TARGET,
                f"redirect to {target}: only ports 80 and 443 are followed",
            )
        if host.endswith(".well-known"):
            return Verdict(
                False,
                Code.REDIRECT_BAD_TARGET,
                f"redirect to {target}: host ends in '.well-known' (a missing '/')",
            )
        if re.match(r"^[0-9.]+$", host) or ":" in host:
            return Verdict(
                False,
                Code.REDIRECT_BAD_TARGET,
                f"redirect to {target}: a CA follows redirects to names, not IP addresses",
            )
        if target in seen:
            return Verdict(False, Code.REDIRECT_LOOP, f"redirect loop back to {target}")
        seen.add(target)
        if scheme == "https":
            notes.append(Code.REDIRECT_HTTPS)
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


OUTCOME_CODE = {
    "connect-timeout": Code.PORT_80_TIMEOUT,
    "connect-refused": Code.PORT_80_REFUSED,
    "connect-error": Code.PORT_80_TIMEOUT,
    "reset": Code.EMPTY_REPLY,
    "empty-reply": Code.EMPTY_REPLY,
    "bad-response": Code.EMPTY_REPLY,
    "read-timeout": Code.READ_TIMEOUT,
    "total-timeout": Code.READ_TIMEOUT,
    "tls-on-http-port": Code.HTTP_ON_HTTPS_PORT,
    "dns-error": Code.DNS_NO_ADDRESS,
}


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
    compared = body.rstrip(" \t\r\n") if trim else body
    shaped = KEYAUTH_RE.match(body.rstrip(" \t\r\n"))
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
    if body.rstrip(" \t\r\n") == target.key_authorization:
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


def le_verdict(attempt: Attempt, target: Target) -> Verdict:
    """Would Let's Encrypt's validator accept this attempt (one address, redirects included)?"""
    found, v = _memo(attempt, "le", target)
    if found and v is not None:
        return v
    v = _le_verdict(attempt, target)
    attempt._memo["le"] = (target, v)
    return v


def _le_verdict(attempt: Attempt, target: Target) -> Verdict:
    red = le_redirect_problem(attempt)
    if red is not None and not red.ok:
        return red
    notes = red.notes if red is not None else []
    final = attempt.final
    if final.outcome != "response":
        code = OUTCOME_CODE.get(final.outcome, Code.EMPTY_REPLY)
        return Verdict(False, code, final.error or final.outcome, notes)
    v = classify_response(final, target, trim=True, max_body=LE_MAX_BODY)
    v.notes = notes + v.notes
    return v


def cm_verdict(attempt: Attempt, target: Target) -> Verdict:
    """Would cert-manager's self-check accept this attempt (Go redirects, 1 MiB, no trim)?"""
    found, v = _memo(attempt, "cm", target)
    if found and v is not None:
        return v
    v = _cm_verdict(attempt, target)
    attempt._memo["cm"] = (target, v)
    return v


def _cm_verdict(attempt: Attempt, target: Target) -> Verdict:
    final = attempt.final
    if final.outcome == "redirect-error":
        return Verdict(False, Code.REDIRECT_TOO_MANY, final.error)
    if final.outcome != "response":
        return Verdict(
            False, OUTCOME_CODE.get(final.outcome, Code.EMPTY_REPLY), final.error or final.outcome
        )
    return classify_response(final, target, trim=False, max_body=None)


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
