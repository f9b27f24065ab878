"""acmelb: ACME HTTP-01 certificates behind external load balancers.

The public API, imported lazily (PEP 562) so that ``acmelb --version`` and
other light commands do not pay for the ACME client stack::

    from acmelb import Issuer, IssueRequest, CAConfig, Store
    from acmelb import diagnose, make_target, build_vantages, ProbeSettings, explain

Everything else is internal and may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from acmelb.version import __version__

# public name -> module that defines it
_EXPORTS = {
    # issuance
    "CAConfig": "acmelb.acme.ca",
    "IssueRequest": "acmelb.acme.issuance",
    "IssueResult": "acmelb.acme.issuance",
    "IssuanceState": "acmelb.acme.issuance",
    "Issuer": "acmelb.acme.issuance",
    "Pipeline": "acmelb.acme.issuance",
    "Step": "acmelb.acme.issuance",
    "renew": "acmelb.acme.issuance",
    "revoke": "acmelb.acme.issuance",
    "RenewalConfig": "acmelb.acme.renewal",
    "SelfCheckOptions": "acmelb.acme.selfcheck",
    "SolverOptions": "acmelb.acme.solvers",
    "Store": "acmelb.acme.store",
    # diagnosis
    "Report": "acmelb.doctor.report",
    "Target": "acmelb.doctor.checks.base",
    "analyse": "acmelb.doctor.diagnose",
    "diagnose": "acmelb.doctor.diagnose",
    "make_target": "acmelb.doctor.engine",
    "ProbeSettings": "acmelb.doctor.vantage",
    "build_vantages": "acmelb.doctor.vantage",
    "Explanation": "acmelb.doctor.explain",
    "explain": "acmelb.doctor.explain",
    # findings and errors
    "Finding": "acmelb.doctor.findings",
    "Severity": "acmelb.doctor.findings",
    "Code": "acmelb.doctor.findings",
    "AcmelbError": "acmelb.errors",
    "UsageError": "acmelb.errors",
}

__all__ = [
    "AcmelbError",
    "CAConfig",
    "Code",
    "Explanation",
    "Finding",
    "IssuanceState",
    "IssueRequest",
    "IssueResult",
    "Issuer",
    "Pipeline",
    "ProbeSettings",
    "RenewalConfig",
    "Report",
    "SelfCheckOptions",
    "Severity",
    "SolverOptions",
    "Step",
    "Store",
    "Target",
    "UsageError",
    "__version__",
    "analyse",
    "build_vantages",
    "diagnose",
    "explain",
    "make_target",
    "renew",
    "revoke",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'acmelb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from acmelb.acme.ca import CAConfig
    from acmelb.acme.issuance import (
        IssuanceState,
        Issuer,
        IssueRequest,
        IssueResult,
        Pipeline,
        Step,
        renew,
        revoke,
    )
    from acmelb.acme.renewal import RenewalConfig
    from acmelb.acme.selfcheck import SelfCheckOptions
    from acmelb.acme.solvers import SolverOptions
    from acmelb.acme.store import Store
    from acmelb.doctor.checks.base import Target
    from acmelb.doctor.diagnose import analyse, diagnose
    from acmelb.doctor.engine import make_target
    from acmelb.doctor.explain import Explanation, explain
    from acmelb.doctor.findings import Code, Finding, Severity
    from acmelb.doctor.report import Report
    from acmelb.doctor.vantage import ProbeSettings, build_vantages
    from acmelb.errors import AcmelbError, UsageError
