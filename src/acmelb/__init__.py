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

__version__ = "0.1.0"  # the one place; pyproject.toml reads it

# public name -> module that defines it
_EXPORTS = {
    # issuance
    "CAConfig": "acmelb.ca",
    "IssueRequest": "acmelb.issuance",
    "IssueResult": "acmelb.issuance",
    "IssuanceState": "acmelb.issuance",
    "Issuer": "acmelb.issuance",
    "Pipeline": "acmelb.issuance",
    "Step": "acmelb.issuance",
    "renew": "acmelb.issuance",
    "revoke": "acmelb.issuance",
    "RenewalConfig": "acmelb.renewal",
    "SelfCheckOptions": "acmelb.selfcheck",
    "SolverOptions": "acmelb.solvers",
    "Store": "acmelb.store",
    # diagnosis
    "Report": "acmelb.diagnose",
    "Target": "acmelb.checks.base",
    "analyse": "acmelb.diagnose",
    "diagnose": "acmelb.diagnose",
    "make_target": "acmelb.diagnose",
    "ProbeSettings": "acmelb.vantage",
    "build_vantages": "acmelb.vantage",
    "Explanation": "acmelb.explain",
    "explain": "acmelb.explain",
    # findings and errors
    "Finding": "acmelb.findings",
    "Severity": "acmelb.findings",
    "Code": "acmelb.findings",
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
    from acmelb.ca import CAConfig
    from acmelb.checks.base import Target
    from acmelb.diagnose import Report, analyse, diagnose, make_target
    from acmelb.errors import AcmelbError, UsageError
    from acmelb.explain import Explanation, explain
    from acmelb.findings import Code, Finding, Severity
    from acmelb.issuance import (
        IssuanceState,
        Issuer,
        IssueRequest,
        IssueResult,
        Pipeline,
        Step,
        renew,
        revoke,
    )
    from acmelb.renewal import RenewalConfig
    from acmelb.selfcheck import SelfCheckOptions
    from acmelb.solvers import SolverOptions
    from acmelb.store import Store
    from acmelb.vantage import ProbeSettings, build_vantages
