"""The webroot solver: write the token file under an existing web server's root."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from acmelb.acme.solvers.base import PendingChallenge, remove_token_files, write_token_files
from acmelb.errors import SolverError


class WebrootSolver:
    name = "webroot"

    def __init__(self, webroot: str) -> None:
        self.root = Path(webroot)
        if not self.root.is_dir():
            raise SolverError(f"webroot {self.root} is not a directory")
        self.challenge_dir = self.root / ".well-known" / "acme-challenge"
        self._created: list[Path] = []

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        try:
            for directory in (self.root / ".well-known", self.challenge_dir):
                if not directory.exists():
                    directory.mkdir(mode=0o755)
                    directory.chmod(0o755)  # readable by the web server whatever our umask
                    self._created.append(directory)
            write_token_files(self.challenge_dir, challenges)
        except OSError as exc:
            raise SolverError(
                f"webroot solver: cannot write under {self.challenge_dir}: {exc.strerror or exc}"
            ) from exc

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        remove_token_files(self.challenge_dir, challenges)

    def close(self) -> None:
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if we made it and it is empty again
        self._created.clear()
