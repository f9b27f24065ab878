"""The checks: small units, each owning finding codes, run stage by stage.

``ALL_CHECKS`` is the registry; ``acmelb.diagnose`` runs them in ``Stage``
order and stops before the HTTP stage when the DNS stage found something
fatal.
"""

from __future__ import annotations

from acmelb.checks.answers import Connection, Content, Interception, Ipv6, Redirects
from acmelb.checks.base import Check, Context, Stage
from acmelb.checks.compare import (
    Consistency,
    InsideOnly,
    Middlebox,
    NatLoopback,
    ProxyProtocol,
    SplitHorizon,
    TrailingWhitespace,
    VantageHealth,
)
from acmelb.checks.dns import Caa, DnsAddresses, DnsReserved
from acmelb.checks.names import InvalidName
from acmelb.findings import Finding

ALL_CHECKS: tuple[Check, ...] = (
    InvalidName(),
    DnsAddresses(),
    DnsReserved(),
    Caa(),
    Connection(),
    Content(),
    Redirects(),
    Ipv6(),
    Interception(),
    VantageHealth(),
    ProxyProtocol(),
    NatLoopback(),
    SplitHorizon(),
    Consistency(),
    InsideOnly(),
    TrailingWhitespace(),
    Middlebox(),
)


def run_stage(ctx: Context, stage: Stage, checks: tuple[Check, ...] = ALL_CHECKS) -> list[Finding]:
    """Run the checks of one stage; their findings are added to ``ctx.findings`` and returned."""
    new: list[Finding] = []
    for check in checks:
        if check.stage is not stage or not check.applies(ctx):
            continue
        found = check.run(ctx)
        ctx.findings.extend(found)
        new.extend(found)
    return new


__all__ = ["ALL_CHECKS", "Check", "Context", "Stage", "run_stage"]
