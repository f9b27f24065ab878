"""Solvers put a challenge's key authorization where the CA will fetch it.

Like lego's providers, a solver only presents and cleans up; checking that
the token is reachable through the load balancer is the self-check's job,
which runs between ``present`` and answering the challenge.
"""

from __future__ import annotations

from pathlib import Path

from acmelb.acme.solvers.base import (
    SOLVER_KINDS,
    PendingChallenge,
    Solver,
    SolverOptions,
    remove_token_files,
    write_token_files,
)

__all__ = [
    "SOLVER_KINDS",
    "PendingChallenge",
    "Solver",
    "SolverOptions",
    "make_solver",
    "remove_token_files",
    "write_token_files",
]


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
