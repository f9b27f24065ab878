"""How a certificate is renewed: the settings it was issued with.

``RenewalConfig`` holds what an ``IssueRequest`` holds (``acmelb.acme.issuance`` turns
one into the other); it is the one reader (``load``/``from_json``) and the one
writer (``to_json``, stored by ``Store.save`` with each new version) of
``STATE/renewal/NAME.json``. It keeps the self-check settings, so ``acmelb
renew`` checks a renewal through the load balancer exactly as the original
``acmelb issue`` did. Files written before the self-check was stored have no
``self_check`` key and renew without one, as they did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acmelb.acme.ca import CAConfig
from acmelb.acme.selfcheck import SelfCheckOptions
from acmelb.acme.solvers import SolverOptions
from acmelb.errors import StateError, UsageError

if TYPE_CHECKING:
    from acmelb.acme.store import Lineage


@dataclass(frozen=True)
class RenewalConfig:
    names: tuple[str, ...]
    ca: CAConfig
    solver: SolverOptions
    key_type: str = "ec256"
    reuse_key: bool = False
    self_check: SelfCheckOptions | None = None
    profile: str | None = None  # the CA's profile it was issued in (kept on renewal)

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "directory": self.ca.directory_url,
            "ca_bundle": str(self.ca.ca_bundle) if self.ca.ca_bundle else None,
            "email": self.ca.email,
            "key_type": self.key_type,
            "reuse_key": self.reuse_key,
            "solver": asdict(self.solver),
            "self_check": self.self_check.to_json() if self.self_check else None,
            "profile": self.profile,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RenewalConfig:
        try:
            solver = dict(data["solver"])
            solver["addresses"] = tuple(solver.get("addresses", ()))
            bundle = data.get("ca_bundle")
            check = data.get("self_check")
            return cls(
                names=tuple(data["names"]),
                ca=CAConfig(
                    directory_url=data["directory"],
                    ca_bundle=Path(bundle) if bundle else None,
                    email=data.get("email"),
                ),
                solver=SolverOptions(**solver),
                key_type=data.get("key_type", "ec256"),
                reuse_key=bool(data.get("reuse_key", False)),
                self_check=SelfCheckOptions.from_json(check) if check else None,
                profile=data.get("profile"),
            )
        except (KeyError, TypeError, AttributeError, UsageError) as exc:
            raise StateError(f"renewal configuration is incomplete: {exc}") from exc

    @classmethod
    def load(cls, lineage: Lineage) -> RenewalConfig:
        import json

        try:
            data = json.loads(lineage.renewal_path.read_text())
        except FileNotFoundError as exc:
            raise StateError(
                f"no renewal configuration for {lineage.name} ({lineage.renewal_path})"
            ) from exc
        except ValueError as exc:
            raise StateError(f"{lineage.renewal_path} is damaged: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError(f"{lineage.renewal_path} is damaged: not a JSON object")
        return cls.from_json(data)
