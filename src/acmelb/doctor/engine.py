"""The steps every diagnosis is made of, shared by both drivers of the engine.

``acmelb.doctor.diagnose`` runs a diagnosis on threads (blocking probes);
``acmelb.doctor.fleet`` runs many in one event loop (asyncio probes). Both build the
target, normalise its name, ask each vantage the same probe request within the same
budget and read the results the same way: with these functions, so that a name
diagnosed alone and in a fleet gives the same report.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from acmelb.doctor.checks.base import DEADLINE_PER_DIAL, Context, Target, VantageRun
from acmelb.doctor.vantage import ProbeResult, Role, Vantage, VantageFailure
from acmelb.errors import InvalidNameError
from acmelb.names import looks_like_ip, normalize_identifier

__all__ = [
    "check_name",
    "make_target",
    "probe_budget",
    "probe_jobs",
    "probe_request",
    "skip_lookup",
    "vantage_run",
]


def make_target(
    name: str,
    token: str | None = None,
    key_authorization: str | None = None,
    thumbprint: str | None = None,
) -> Target:
    """Build a Target; with no token a random one (reachability and routing only).

    A thumbprint without a token checks a stateless responder: a random token
    must come back as ``token.thumbprint``.
    """
    random = token is None and thumbprint is None
    tok = token or secrets.token_urlsafe(32)
    key = key_authorization
    if key is None and thumbprint is not None:
        key = f"{tok}.{thumbprint}"
    return Target(name=name, token=tok, key_authorization=key, random_token=random)


def check_name(ctx: Context) -> None:
    """Normalise the target's name, or keep why it is invalid (the NAME stage reports it).
    A target that is an IP address (RFC 8738) is kept as ``ctx.address``: no DNS for it."""
    try:
        ctx.target.name = normalize_identifier(ctx.target.name)
    except InvalidNameError as exc:
        ctx.name_error = str(exc)
        return
    if looks_like_ip(ctx.target.name):
        ctx.address = ctx.target.name


def probe_request(ctx: Context, vantage: Vantage, addresses: list[str] | None) -> dict[str, Any]:
    return {
        "name": ctx.target.name,
        "url": ctx.target.url,
        "repeat": ctx.options.repeat,
        "addresses": addresses,
        "resolve": ctx.options.resolve if not vantage.remote else {},
        "proxy_protocol": "on-failure",
        "local_probe": vantage.role is Role.INSIDE,
        "options": probe_options(ctx.options.timeout),
    }


def probe_options(timeout: float) -> dict[str, Any]:
    """The probe's timing for a --timeout: each dial and TLS handshake at most
    ``timeout``, the whole attempt (every hop, read and fallback) at most 1.5 times it."""
    whole = DEADLINE_PER_DIAL * timeout
    return {
        "connect_timeout": timeout,
        "read_timeout": whole,
        "total_timeout": whole,
        "deadline": whole,
        "body_cap": 1024 * 1024,
    }


def probe_budget(ctx: Context) -> float:
    """How long a vantage's probe may take in all (its command included)."""
    return 20 + (ctx.options.repeat + 2) * 4 * 2 * ctx.options.timeout


def vantage_run(vantage: Vantage, result: ProbeResult | VantageFailure) -> VantageRun:
    """A vantage's probe result (or why it had none) as the checks read it."""
    if isinstance(result, VantageFailure):
        return VantageRun(
            vantage.label,
            vantage.role.value,
            vantage.remote,
            None,
            failure=result.reason,
            failure_details=result.details,
        )
    return VantageRun(vantage.label, vantage.role.value, vantage.remote, result)


def _local_addresses(ctx: Context) -> list[str] | None:
    """Addresses for this process's probes: --resolve first, else the target's own IP
    address, else the CA-like DNS lookup."""
    override = ctx.options.resolve.get(ctx.target.name)
    if override:
        return list(override)
    if ctx.address is not None:
        return [ctx.address]
    if ctx.dns is not None:
        return ctx.dns.addresses
    return None


def probe_jobs(ctx: Context, vantages: Sequence[Vantage]) -> list[tuple[Vantage, list[str] | None]]:
    """Each vantage with the addresses it probes (None: it resolves the name itself)."""
    local_addrs = _local_addresses(ctx)
    # this process standing inside resolves like the inside does (the system's
    # resolver), unless --resolve says otherwise; outside, like the CA
    return [(v, None if v.remote or v.role is Role.INSIDE else local_addrs) for v in vantages]


def skip_lookup(ctx: Context) -> bool:
    """No DNS lookup for an IP address (no A, AAAA, nor CAA, which is for DNS names),
    nor when --resolve alone decides the target's addresses."""
    if ctx.address is not None:
        return True
    return ctx.target.name in ctx.options.resolve and ctx.options.dns_server is None
