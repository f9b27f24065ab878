"""The hook solver: a user command pushes the token to every backend behind the LB.

The command runs through the shell once per challenge and action, with the
challenge in its environment (certbot's manual-hook names are set too, so
existing certbot hooks work unchanged)::

    ACMELB_ACTION=present|cleanup  ACMELB_DOMAIN  ACMELB_TOKEN  ACMELB_KEY_AUTHORIZATION
    CERTBOT_DOMAIN  CERTBOT_TOKEN  CERTBOT_VALIDATION

A non-zero exit of ``present`` fails the run before the challenge is answered.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from acmelb.acme.solvers.base import PendingChallenge
from acmelb.errors import SolverError

HOOK_TIMEOUT = 300


class HookSolver:
    name = "hook"

    def __init__(self, command: str) -> None:
        self.command = command

    def _run(self, action: str, challenge: PendingChallenge) -> None:
        env = {
            **os.environ,
            "ACMELB_ACTION": action,
            "ACMELB_DOMAIN": challenge.name,
            "ACMELB_TOKEN": challenge.token,
            "ACMELB_KEY_AUTHORIZATION": challenge.key_authorization,
            "CERTBOT_DOMAIN": challenge.name,
            "CERTBOT_TOKEN": challenge.token,
            "CERTBOT_VALIDATION": challenge.key_authorization,
        }
        try:
            proc = subprocess.run(
                self.command,
                shell=True,
                env=env,
                capture_output=True,
                text=True,
                timeout=HOOK_TIMEOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SolverError(
                f"hook {action} for {challenge.name} did not finish within {HOOK_TIMEOUT} s"
            ) from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise SolverError(
                f"hook {action} for {challenge.name} exited {proc.returncode}"
                + (f": {tail[0]}" if tail else "")
            )

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:
            self._run("present", challenge)

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        errors = []
        for challenge in challenges:
            try:
                self._run("cleanup", challenge)
            except SolverError as exc:
                errors.append(str(exc))
        if errors:
            raise SolverError("; ".join(errors))

    def close(self) -> None:
        return None
