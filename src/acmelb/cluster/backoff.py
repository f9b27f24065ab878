"""Back-off after a failed attempt, shared by the whole cluster through the store.

A broken load balancer must cost the CA account one attempt, then fewer and fewer:
Let's Encrypt allows 5 failed validations per account, identifier and hour, 300 new
orders per account per 3 hours, and pauses an identifier after a long run of failures
until a person unpauses it. Its integration guide asks clients to retry after 1 min,
10 min, 100 min, then daily; that is ``RETRY_SCHEDULE``. The lock holder that failed
records the back-off in etcd (fenced, like every write it makes), so that every member,
and an agent restarted meanwhile, waits it out. Only an operator's ``acmelb cluster
renew --now`` or a changed configuration (``config_digest``) cuts it short; a stored
version clears it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from acmelb.acme.selfcheck import SelfCheckRefused
from acmelb.errors import (
    AcmelbError,
    CAProblemError,
    CAUnreachableError,
    LockLost,
    ValidationFailedError,
)

# seconds after the 1st, 2nd, 3rd and every later consecutive failure
RETRY_SCHEDULE: tuple[float, ...] = (60.0, 600.0, 6000.0, 86400.0)
JITTER = 0.1  # each wait is drawn from [delay * 0.9, delay * 1.1]


@dataclass(frozen=True)
class Backoff:
    """Consecutive failed attempts of one certificate and when the next may start."""

    failures: int
    next_attempt: float  # epoch seconds
    last_error: str
    kind: str  # see failure_kind
    at: float  # when the last attempt failed
    member: str  # which member it was
    config_digest: str  # the configuration the attempt ran with

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Backoff:
        return cls(
            failures=int(data["failures"]),
            next_attempt=float(data["next_attempt"]),
            last_error=str(data["last_error"]),
            kind=str(data["kind"]),
            at=float(data["at"]),
            member=str(data["member"]),
            config_digest=str(data["config_digest"]),
        )

    def holds(self, now: float, config_digest: str, requested_at: float | None) -> bool:
        """True while the next attempt must wait: not yet time, the same configuration,
        and no operator's request (``cluster renew --now``) since the failure."""
        if config_digest != self.config_digest:
            return False
        if requested_at is not None and requested_at > self.at:
            return False
        return now < self.next_attempt


def failure_kind(exc: BaseException) -> str:
    """What went wrong, in the words of the failure table in docs/cluster.md."""
    if isinstance(exc, CAUnreachableError):
        return "ca-unreachable"
    if isinstance(exc, ValidationFailedError):
        return "validation-failed"
    if isinstance(exc, SelfCheckRefused):
        return "self-check-refused"
    if isinstance(exc, CAProblemError):
        return "ca-error"
    if isinstance(exc, LockLost):
        return "lock-lost"
    return "error" if isinstance(exc, AcmelbError) else "internal"


def delay_after(
    failures: int,
    schedule: Sequence[float] = RETRY_SCHEDULE,
    rng: random.Random | None = None,
) -> float:
    """The wait after ``failures`` consecutive failures (1 = the first), jittered so that
    certificates that failed together do not all come back in the same second."""
    base = schedule[min(failures, len(schedule)) - 1]
    return base * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def after_failure(
    previous: Backoff | None,
    exc: BaseException,
    *,
    now: float,
    member: str,
    config_digest: str,
    schedule: Sequence[float] = RETRY_SCHEDULE,
) -> Backoff:
    """The back-off once this attempt failed: one more failure than before, unless the
    configuration changed since (a new configuration starts the schedule again)."""
    count = 1
    if previous is not None and previous.config_digest == config_digest:
        count = previous.failures + 1
    return Backoff(
        failures=count,
        next_attempt=now + delay_after(count, schedule),
        last_error=str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
        kind=failure_kind(exc),
        at=now,
        member=member,
        config_digest=config_digest,
    )


def config_digest(*parts: Any) -> str:
    """A short digest of what an attempt depends on (the certificate's declaration, the
    CA, the self-check settings): when it changes, the back-off no longer applies."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
