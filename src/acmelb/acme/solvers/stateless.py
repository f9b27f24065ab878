"""The stateless solver: an ``acmelb serve --stateless`` (or an equivalent) already
answers every token with ``token.THUMBPRINT``; nothing to present per challenge."""

from __future__ import annotations

from collections.abc import Sequence

from acmelb.acme.solvers.base import PendingChallenge
from acmelb.errors import SolverError


class StatelessSolver:
    name = "stateless"

    def __init__(self, thumbprint: str) -> None:
        self.thumbprint = thumbprint

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:
            if challenge.key_authorization != f"{challenge.token}.{self.thumbprint}":
                raise SolverError(
                    "stateless solver: the key authorization does not use this account's thumbprint"
                )

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        return None

    def close(self) -> None:
        return None
