"""What every solver shares: the challenge it presents, its options, the token files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from acmelb.names import challenge_url


@dataclass(frozen=True)
class PendingChallenge:
    """An HTTP-01 challenge this run must satisfy; ``name`` is the authorization's
    identifier: a DNS name or an IP address (RFC 8738)."""

    name: str
    token: str
    key_authorization: str
    authorization_url: str
    challenge_url: str

    @property
    def validation_url(self) -> str:
        return challenge_url(self.name, self.token)


class Solver(Protocol):
    """present/cleanup a batch of challenges; ``close`` releases what ``present`` opened."""

    name: str

    def present(self, challenges: Sequence[PendingChallenge]) -> None: ...

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None: ...

    def close(self) -> None: ...


def write_token_files(directory: Path, challenges: Sequence[PendingChallenge]) -> None:
    """One world-readable file per token, each written whole (temp file, then rename).

    A key authorization is public by design; the web server must be able to read it.
    """
    for challenge in challenges:
        path = directory / challenge.token
        tmp = path.with_name(f".{challenge.token}.tmp")
        tmp.write_text(challenge.key_authorization, encoding="ascii")
        tmp.chmod(0o644)
        os.replace(tmp, path)


def remove_token_files(directory: Path, challenges: Sequence[PendingChallenge]) -> None:
    for challenge in challenges:
        (directory / challenge.token).unlink(missing_ok=True)


@dataclass(frozen=True)
class SolverOptions:
    kind: str = "standalone"  # standalone | stateless | webroot | hook | serve
    http_port: int = 80
    addresses: tuple[str, ...] = ()
    webroot: str | None = None
    hook: str | None = None
    state_dir: str | None = None  # for the serve solver: where STATE/pending lives


SOLVER_KINDS = ("standalone", "stateless", "webroot", "hook", "serve")
