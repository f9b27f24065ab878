"""One root cause per report: which finding to fix first, and which ones follow from it.

The checks each see one symptom, so a single fault often shows as several
findings: a dead AAAA record as ``ipv6-unreachable`` and ``port-80-timeout``, a
redirect loop as ``redirect-loop`` and ``redirect-too-many``. ``attribute`` names
one of them the root cause, lowers the findings that are its consequences to
``info`` (their evidence stays, marked as a consequence), and gives the root the
worst severity among them, so ``ok`` and the exit status do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from acmelb.doctor.codes import Code, Severity
from acmelb.doctor.findings import Finding

__all__ = ["CONSEQUENCES", "RootCause", "attribute", "explains"]

_UNREACHABLE = (
    Code.PORT_80_TIMEOUT,
    Code.PORT_80_REFUSED,
    Code.READ_TIMEOUT,
    Code.EMPTY_REPLY,
    Code.PORT_443_REFUSED,
    Code.PORT_443_TIMEOUT,
    Code.HTTPS_HOP_FAILED,
)
_WRONG_ANSWER = (
    Code.CHALLENGE_NOT_FOUND,
    Code.HTTP_ERROR_STATUS,
    Code.WRONG_CONTENT,
    Code.THUMBPRINT_MISMATCH,
)

# cause -> the findings it produces by itself. A finding listed here is folded only when
# its cause was found too.
CONSEQUENCES: dict[Code, tuple[Code, ...]] = {
    # what the Kubernetes objects show explains what the probes then meet
    Code.LB_PROXY_SHORTCUT: (
        Code.PROXY_PROTOCOL_REQUIRED,
        *_UNREACHABLE,
        Code.HTTP_ERROR_STATUS,
        Code.NAT_LOOPBACK,
    ),
    Code.INGRESS_CLASS_UNSERVED: (*_WRONG_ANSWER, *_UNREACHABLE, Code.SOLVER_NOT_PRESENTED),
    Code.INGRESS_REDIRECTS_SOLVER: (
        Code.REDIRECT_BAD_TARGET,
        Code.REDIRECT_BAD_STATUS,
        Code.REDIRECT_LOOP,
        Code.REDIRECT_TOO_MANY,
        *_UNREACHABLE,
        *_WRONG_ANSWER,
    ),
    Code.TRAFFIC_POLICY_LOCAL: (*_UNREACHABLE, Code.INCONSISTENT_BACKENDS),
    # the Gateway API: support off explains a solver never presented; a route not attached
    # explains the redirect or the 404 that then answers on its listener
    Code.GATEWAY_API_DISABLED: (
        Code.SOLVER_NOT_PRESENTED,
        Code.SOLVER_ROUTE_NOT_ACCEPTED,
        *_WRONG_ANSWER,
        *_UNREACHABLE,
    ),
    Code.LISTENER_NOT_PROGRAMMED: (Code.SOLVER_ROUTE_NOT_ACCEPTED, *_WRONG_ANSWER, *_UNREACHABLE),
    Code.SOLVER_ROUTE_NOT_ACCEPTED: (
        Code.GATEWAY_REDIRECTS_SOLVER,
        Code.REDIRECT_BAD_TARGET,
        Code.REDIRECT_BAD_STATUS,
        Code.REDIRECT_LOOP,
        Code.REDIRECT_TOO_MANY,
        *_WRONG_ANSWER,
        *_UNREACHABLE,
    ),
    Code.GATEWAY_REDIRECTS_SOLVER: (
        Code.REDIRECT_BAD_TARGET,
        Code.REDIRECT_BAD_STATUS,
        Code.REDIRECT_LOOP,
        Code.REDIRECT_TOO_MANY,
        *_UNREACHABLE,
        *_WRONG_ANSWER,
    ),
    Code.SOLVER_NOT_PRESENTED: (*_WRONG_ANSWER, *_UNREACHABLE, Code.INCONSISTENT_BACKENDS),
    Code.DNS_RESERVED_ADDRESS: _UNREACHABLE,
    Code.DNS_SPLIT_HORIZON: (
        *_WRONG_ANSWER,
        *_UNREACHABLE,
        Code.INCONSISTENT_BACKENDS,
        Code.NAT_LOOPBACK,
    ),
    Code.IPV6_UNREACHABLE: _UNREACHABLE,
    Code.PERSPECTIVE_BLOCKED: _UNREACHABLE,
    Code.LB_INTERCEPTS_CHALLENGE: (
        *_WRONG_ANSWER,
        Code.INCONSISTENT_BACKENDS,
        Code.MIDDLEBOX_FINGERPRINT,
    ),
    Code.PROXY_PROTOCOL_REQUIRED: (*_UNREACHABLE, Code.HTTP_ERROR_STATUS, Code.NAT_LOOPBACK),
    Code.NAT_LOOPBACK: _UNREACHABLE,
    Code.HTTP_ON_HTTPS_PORT: (Code.EMPTY_REPLY, Code.READ_TIMEOUT, Code.HTTP_ERROR_STATUS),
    Code.REDIRECT_LOOP: (Code.REDIRECT_TOO_MANY,),
    Code.INCONSISTENT_BACKENDS: _WRONG_ANSWER,
    Code.BODY_TOO_LARGE: (Code.WRONG_CONTENT,),
}

# A root whose check already weighed its consequences keeps its own severity:
# perspective-blocked is a warning while the quorum holds, however its blocked
# perspectives' timeouts look on their own.
_OWN_SEVERITY = frozenset({Code.PERSPECTIVE_BLOCKED})

# Among findings that explain one another not at all, the more specific cause leads.
_PRIORITY: tuple[Code, ...] = (
    Code.INVALID_NAME,
    Code.DNS_NO_ADDRESS,
    Code.DNS_LOOKUP_FAILED,
    Code.CAA_FORBIDS,
    Code.GATEWAY_API_DISABLED,
    Code.SOLVER_NOT_PRESENTED,
    Code.LISTENER_NOT_PROGRAMMED,
    Code.SOLVER_ROUTE_NOT_ACCEPTED,
    Code.INGRESS_CLASS_UNSERVED,
    Code.LB_PROXY_SHORTCUT,
    Code.GATEWAY_REDIRECTS_SOLVER,
    Code.INGRESS_REDIRECTS_SOLVER,
    Code.TRAFFIC_POLICY_LOCAL,
    Code.DNS_RESERVED_ADDRESS,
    Code.DNS_SPLIT_HORIZON,
    Code.PERSPECTIVE_BLOCKED,
    Code.IPV6_UNREACHABLE,
    Code.LB_INTERCEPTS_CHALLENGE,
    Code.PROXY_PROTOCOL_REQUIRED,
    Code.NAT_LOOPBACK,
    Code.HTTP_ON_HTTPS_PORT,
    Code.REDIRECT_LOOP,
    Code.REDIRECT_BAD_STATUS,
    Code.REDIRECT_BAD_TARGET,
    Code.REDIRECT_TOO_MANY,
    Code.INCONSISTENT_BACKENDS,
    Code.MIDDLEBOX_FINGERPRINT,
    Code.THUMBPRINT_MISMATCH,
    Code.PORT_80_REFUSED,
    Code.PORT_80_TIMEOUT,
    Code.READ_TIMEOUT,
    Code.EMPTY_REPLY,
    Code.PORT_443_REFUSED,
    Code.PORT_443_TIMEOUT,
    Code.HTTPS_HOP_FAILED,
    Code.MALFORMED_RESPONSE,
    Code.BODY_TOO_LARGE,
    Code.TRAILING_WHITESPACE,
    Code.CHALLENGE_NOT_FOUND,
    Code.HTTP_ERROR_STATUS,
    Code.WRONG_CONTENT,
)


@dataclass(frozen=True)
class RootCause:
    """The finding to fix first, and the codes that are its consequences."""

    code: Code
    title: str
    severity: Severity
    consequences: tuple[Code, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "title": self.title,
            "severity": self.severity.value,
            "consequences": [c.value for c in self.consequences],
        }

    @property
    def line(self) -> str:
        """The first line of the human report."""
        also = (
            f" (also seen, as its consequence: {', '.join(c.value for c in self.consequences)})"
            if self.consequences
            else ""
        )
        return f"root cause: {self.code.value}: {self.title}{also}"


def attribute(
    findings: Sequence[Finding], must_explain: Code | None = None, failing: bool = False
) -> tuple[list[Finding], RootCause | None]:
    """The findings with consequences folded, and the root cause (None when nothing
    at warning level or above was found). ``must_explain``: the code of the attempt that
    fails the CA's verdict, which the root cause must account for; ``failing``: that
    verdict fails, so the root cause is at least an error."""
    problems = [f for f in findings if f.sev.rank <= Severity.WARNING.rank]
    root = _pick_root(problems, must_explain)
    if root is None:
        return list(findings), None
    follows = _closure(root.code)
    folded = [f for f in problems if f.code in follows and f is not root]
    severity = (
        root.sev
        if root.code in _OWN_SEVERITY
        else min((f.sev for f in [root, *folded]), key=lambda s: s.rank)
    )
    if failing and not severity.failing:
        severity = Severity.ERROR  # the CA fails: what explains it is not a warning
    out: list[Finding] = []
    for f in findings:
        if f is root:
            out.append(replace(f, severity=severity))
        elif any(f is g for g in folded):
            out.append(_as_consequence(f, root.code))
        else:
            out.append(f)
    codes = tuple(dict.fromkeys(f.code for f in folded))
    return out, RootCause(root.code, root.title, severity, codes)


def explains(cause: Code, code: Code) -> bool:
    """Whether a finding ``cause`` accounts for a failure shown as ``code`` (itself, or one
    of its consequences, however indirect)."""
    return cause is code or code in _closure(cause)


def _closure(cause: Code) -> set[Code]:
    """Everything ``cause`` leads to, through the consequences of its consequences."""
    found: set[Code] = set()
    todo = list(CONSEQUENCES.get(cause, ()))
    while todo:
        code = todo.pop()
        if code not in found and code is not cause:
            found.add(code)
            todo.extend(CONSEQUENCES.get(code, ()))
    return found


def _pick_root(problems: Sequence[Finding], must_explain: Code | None) -> Finding | None:
    present = {f.code for f in problems}
    explained = {c for cause in present for c in CONSEQUENCES.get(cause, ()) if c != cause}
    candidates = [f for f in problems if f.code not in explained] or list(problems)
    if not candidates:
        return None
    # the CA fails on one attempt: the root cause is one that accounts for it
    accounting = [f for f in candidates if must_explain and explains(f.code, must_explain)]
    fatal = [f for f in candidates if f.sev is Severity.FATAL]
    return min(fatal or accounting or candidates, key=_rank)


def _rank(f: Finding) -> tuple[int, int]:
    order = _PRIORITY.index(f.code) if f.code in _PRIORITY else len(_PRIORITY)
    return f.sev.rank, order


def _as_consequence(f: Finding, cause: Code) -> Finding:
    return replace(
        f,
        severity=Severity.INFO,
        title=f"{f.title} (a consequence of {cause.value})",
    )
