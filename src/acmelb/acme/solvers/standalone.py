"""The standalone solver: acmelb's own responder on the HTTP port, for this run only."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from acmelb.acme.responder import ExactTokens, Responder, ResponderThread
from acmelb.acme.solvers.base import PendingChallenge
from acmelb.errors import SolverError


class StandaloneSolver:
    name = "standalone"

    def __init__(self, *, port: int = 80, addresses: Sequence[str] = ()) -> None:
        self.tokens = ExactTokens()
        self._responder = Responder(self.tokens, addresses=addresses, port=port)
        self._thread: ResponderThread | None = None
        self._start_lock = threading.Lock()  # concurrent orders share one server

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:
            self.tokens.add(challenge.token, challenge.key_authorization)
        with self._start_lock:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            thread = ResponderThread(self._responder)
            try:
                thread.__enter__()
            except OSError as exc:
                raise SolverError(
                    f"standalone solver: {exc.strerror or exc} (is another web server using "
                    f"port {self._responder.port}? try --solver webroot, or --http-port)"
                ) from exc
            self._thread = thread

    @property
    def bound(self) -> list[tuple[str, int]]:
        return list(self._responder.bound)

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:
            self.tokens.remove(challenge.token)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None
