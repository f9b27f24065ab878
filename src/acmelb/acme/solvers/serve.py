"""The serve solver: a long-running ``acmelb serve --pending`` on this host answers.

Each challenge is written to ``STATE/pending/<token>`` (the key authorization
is public by design, so 0644) and removed at cleanup. This suits a host where
port 80 belongs to a permanent ``acmelb serve`` rather than to each run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from acmelb.acme.solvers.base import PendingChallenge, remove_token_files, write_token_files
from acmelb.errors import SolverError


def pending_dir(state_dir: Path) -> Path:
    return state_dir / "pending"


class ServeSolver:
    name = "serve"

    def __init__(self, state_dir: Path) -> None:
        self.directory = pending_dir(state_dir)

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        try:
            self.directory.mkdir(mode=0o755, exist_ok=True)  # the issuer made the 0700 root
            write_token_files(self.directory, challenges)
        except OSError as exc:
            raise SolverError(
                f"serve solver: cannot write to {self.directory}: {exc.strerror or exc}"
            ) from exc

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        remove_token_files(self.directory, challenges)

    def close(self) -> None:
        return None
