"""Stage NAME: can HTTP-01 validate this name at all."""

from __future__ import annotations

from acmelb.doctor.checks.base import Context
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding


class InvalidName:
    codes = (Code.INVALID_NAME,)
    stage = Stage.NAME
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return ctx.name_error is not None

    def run(self, ctx: Context) -> list[Finding]:
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
