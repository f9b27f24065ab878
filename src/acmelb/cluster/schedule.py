"""When to renew: a renewal window per certificate, and each member's moment in it.

The window is where ACME Renewal Information (RFC 9773) would put it: a CA that
offers ARI returns ``suggestedWindow {start, end}`` and a client picks a
uniformly random moment in it. Pebble 2.4 and most CAs today have none, so
``default_window`` derives one from the certificate: it opens at
``renew_fraction`` of the lifetime (two thirds unless configured) and spans a
twentieth of the lifetime. Each member picks its own moment in the window
(stable per member, name and version), so the members of a fleet do not all
reach for the lock at the same instant; the first one there takes it and the
rest install what it issued.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RenewalWindow:
    start: float  # epoch seconds
    end: float

    def moment(self, member: str, name: str, version: int) -> float:
        """This member's renewal time in the window (stable, spread out)."""
        digest = hashlib.sha256(f"{member}\0{name}\0{version}".encode()).digest()
        spread = int.from_bytes(digest[:8], "big") / 2**64
        return self.start + spread * (self.end - self.start)


def default_window(not_before: float, not_after: float, renew_fraction: float) -> RenewalWindow:
    lifetime = max(1.0, not_after - not_before)
    start = not_before + renew_fraction * lifetime
    return RenewalWindow(start=start, end=min(not_after, start + lifetime / 20))
