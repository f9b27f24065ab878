"""What every Kubernetes object read from the file has: its metadata, and the helpers that
read loosely typed JSON (a missing or mistyped field reads as empty, never as an error).

Shared by the Ingress views (``objects``) and the Gateway API views (``gateway``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Meta:
    kind: str
    namespace: str
    name: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def meta_of(kind: str, item: dict[str, Any]) -> Meta:
    meta = as_dict(item.get("metadata"))
    return Meta(
        kind=kind,
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        labels=str_map(meta.get("labels")),
        annotations=str_map(meta.get("annotations")),
    )
