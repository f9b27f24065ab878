"""The acmelb exception tree.

Every error a user can cause or fix is an ``AcmelbError`` with a one-line
message; the CLI prints it and exits 2 (usage) or 1 (operation failed).
Anything else escaping the library is a bug (exit 3)::

    AcmelbError
    +-- UsageError              bad input: names, flags, files (exit 2)
    |   +-- InvalidNameError    a name HTTP-01 cannot validate
    +-- StateError              state dir unusable, lock held, storage damaged
    +-- CAError                 talking to the ACME server failed
    |   +-- CAUnreachableError  connect/DNS/TLS failure (hint in the message)
    |   +-- CAProblemError      the CA answered with an RFC 7807 problem
    |   +-- ValidationFailedError  an authorization became invalid
    +-- SolverError             a solver could not present or clean up
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
    """One or more authorizations failed; ``failures`` holds (name, url, detail)."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class SolverError(AcmelbError):
    pass


class LabError(AcmelbError):
    pass
