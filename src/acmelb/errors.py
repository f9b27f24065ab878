"""The acmelb exception tree.

Every error a user can cause or fix is an ``AcmelbError`` with a one-line
message; the CLI prints it and exits 2 (usage) or 1 (operation failed).
Anything else escaping the library is a bug (exit 3). Errors raised while
handling another keep it as ``__cause__`` (``raise ... from exc``), which
``acmelb --debug`` shows::

    AcmelbError
    +-- UsageError              bad input: names, flags, files, configuration (exit 2)
    |   +-- InvalidNameError    a name HTTP-01 cannot validate
    +-- StateError              state dir unusable, lock held, storage damaged
    |   +-- StoreUnavailable    the cluster store (etcd) cannot be reached or has no quorum
    |   +-- LockLost            this instance no longer holds a certificate's lock (fencing)
    |   +-- SecretKeyError      the store key file is missing, wrong or cannot decrypt
    +-- CAError                 talking to the ACME server failed
    |   +-- CAUnreachableError  connect/DNS/TLS failure (hint in the message)
    |   +-- CAProblemError      the CA answered with an RFC 7807 problem
    |   +-- ValidationFailedError  an authorization became invalid
    +-- SelfCheckRefused        the self-check predicts a failed validation; nothing answered
    |                           (defined beside the self-check, acmelb.acme.selfcheck: it
    |                           carries the diagnoses, a type of the doctor's)
    +-- SolverError             a solver could not present or clean up
    +-- FixError                applying or verifying a fix failed (the ruleset was restored)
    +-- LabError                the local lab could not be built or driven
"""

from __future__ import annotations


class AcmelbError(Exception):
    """Base of every error acmelb raises on purpose."""

    exit_code = 1


class UsageError(AcmelbError):
    exit_code = 2


class InvalidNameError(UsageError):
    pass


class StateError(AcmelbError):
    pass


class StoreUnavailable(StateError):
    pass


class LockLost(StateError):
    pass


class SecretKeyError(StateError):
    pass


class CAError(AcmelbError):
    pass


class CAUnreachableError(CAError):
    pass


class CAProblemError(CAError):
    """The CA returned a problem document; ``problem_type`` keeps its type URN."""

    def __init__(self, message: str, problem_type: str | None = None) -> None:
        super().__init__(message)
        self.problem_type = problem_type


class ValidationFailedError(CAError):
    """One or more authorizations failed; ``failures`` holds (name, url, detail).

    ``notes`` puts the CA's verdict next to what the self-check saw, when one ran.
    """

    def __init__(self, message: str, failures: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures
        self.notes: list[str] = []


class SolverError(AcmelbError):
    pass


class FixError(AcmelbError):
    """Applying or verifying a fix failed (the ruleset was restored)."""


class LabError(AcmelbError):
    pass
