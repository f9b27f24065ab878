"""Solvers put a challenge's key authorization where the CA will fetch it.

Like lego's providers, a solver only presents and cleans up; checking that
the token is reachable through the load balancer is the self-check's job,
which runs between ``present`` and answering the challenge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class PendingChallenge:
    """An HTTP-01 challenge this run must satisfy."""

    name: str
    token: str
    key_authorization: str
    authorization_url: str
    challenge_url: str

    @property
    def validation_url(self) -> str:
        return f"http://{self.name}/.well-known/acme-challenge/{self.token}"


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


def make_solver(options: SolverOptions, thumbprint: str) -> Solver:
    from acmelb.errors import UsageError

    if options.kind == "standalone":
        from acmelb.acme.solvers.standalone import StandaloneSolver

        return StandaloneSolver(port=options.http_port, addresses=options.addresses)
    if options.kind == "stateless":
        from acmelb.acme.solvers.stateless import StatelessSolver

        return StatelessSolver(thumbprint)
    if options.kind == "webroot":
        if not options.webroot:
            raise UsageError("--solver webroot needs --webroot DIR")
        from acmelb.acme.solvers.webroot import WebrootSolver

        return WebrootSolver(options.webroot)
    if options.kind == "hook":
        if not options.hook:
            raise UsageError("--solver hook needs --hook CMD")
        from acmelb.acme.solvers.hook import HookSolver

        return HookSolver(options.hook)
    if options.kind == "serve":
        if not options.state_dir:
            raise UsageError("--solver serve needs the state directory")
        from acmelb.acme.solvers.serve import ServeSolver

        return ServeSolver(Path(options.state_dir))
    if options.kind == "cluster":
        raise UsageError(
            "this certificate is kept by `acmelb agent` (cluster mode): the "
            "agents renew it; `acmelb cluster status` shows when"
        )
    raise UsageError(f"unknown solver {options.kind!r} (choose from {', '.join(SOLVER_KINDS)})")
