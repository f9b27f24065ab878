"""This member's deploy hook runs, kept on local disk so a restarted agent remembers them.

A hook that failed for the installed version is this member's health: the agent puts the
runs in its member record (``cluster status`` names the member and the certificate, and
exits non-zero), retries the hook every check interval, and a success clears it. The
file is replaced whole (``atomic_write``): a crash leaves the old record or the new one.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from acmelb.acme.store import atomic_write
from acmelb.cluster.store import HookRun


class HookLedger:
    """name -> its last deploy hook run on this member, persisted in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._runs: dict[str, HookRun] = self._load()

    def _load(self) -> dict[str, HookRun]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(name): HookRun.from_json(run) for name, run in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # damaged: every hook runs once more, which a reload tolerates

    def get(self, name: str) -> HookRun | None:
        with self._lock:
            return self._runs.get(name)

    def runs(self) -> dict[str, HookRun]:
        with self._lock:
            return dict(self._runs)

    def record(self, name: str, run: HookRun) -> None:
        with self._lock:
            self._runs[name] = run
            self._save()

    def forget(self, name: str) -> None:
        with self._lock:
            if self._runs.pop(name, None) is not None:
                self._save()

    def _save(self) -> None:
        text = json.dumps({n: r.to_json() for n, r in self._runs.items()}, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, text.encode("utf-8"), mode=0o600)
