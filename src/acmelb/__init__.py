"""acmelb: ACME HTTP-01 certificates behind external load balancers.

The public API is re-exported lazily so that ``acmelb --version`` and other
light commands do not pay for importing the ACME client stack.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
