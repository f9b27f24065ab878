"""Stage NAME: can HTTP-01 validate this name (or IP address) at all."""

from __future__ import annotations

from acmelb.doctor.checks.base import Context
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding
from acmelb.names import looks_like_ip


class InvalidName:
    codes = (Code.INVALID_NAME,)
    stage = Stage.NAME
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return ctx.name_error is not None

    def run(self, ctx: Context) -> list[Finding]:
        if looks_like_ip(ctx.target.name.strip()):
            return [_invalid_address(ctx)]
        return [
            Finding(
                Code.INVALID_NAME,
                "the name cannot be validated over HTTP-01",
                f"{ctx.name_error}. HTTP-01 proves control of a DNS name by fetching a URL "
                "on it; wildcards and IP addresses cannot be proved that way.",
                "Use the exact DNS name (e.g. www.example.com). For a wildcard certificate "
                "use the DNS-01 challenge instead.",
                evidence=[f"name: {ctx.target.name!r}"],
            )
        ]


def _invalid_address(ctx: Context) -> Finding:
    """A target written as an IP address that is not a usable one (RFC 8738 takes only
    an address as such: IPv4 dotted-quad, IPv6 without brackets or zone)."""
    return Finding(
        Code.INVALID_NAME,
        "the name cannot be validated over HTTP-01",
        f"{ctx.name_error}. HTTP-01 proves control of a DNS name, or of an IP address "
        "(RFC 8738), by fetching a URL on it; the address must be written as such.",
        "Give the address itself: IPv4 as four decimal numbers (e.g. 192.0.2.10), IPv6 "
        "without brackets or a %zone (e.g. 2001:db8::10); or use the DNS name.",
        evidence=[f"name: {ctx.target.name!r}"],
    )
