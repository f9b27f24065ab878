"""cert-manager Challenge lists (``kubectl get challenges -A -o json``) as diagnosis targets."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acmelb.errors import UsageError

if TYPE_CHECKING:
    from acmelb.checks.base import Target


@dataclass
class Challenge:
    namespace: str
    name: str
    dns_name: str
    type: str
    token: str | None
    key: str | None
    state: str
    reason: str | None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def http01(self) -> bool:
        return self.type.upper().replace("_", "-") == "HTTP-01"

    @property
    def pending(self) -> bool:
        return self.state in ("", "pending", "processing")


def parse_challenges(text: str, source: str = "input") -> list[Challenge]:
    """Parse a Challenge List (or a single Challenge); UsageError with the reason if malformed."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a JSON object (a List of Challenges)")
    if data.get("kind") == "Challenge":
        items: Any = [data]
    else:
        items = data.get("items")
        if not isinstance(items, list):
            raise UsageError(
                f"{source}: no 'items' list; expected `kubectl get challenges -A -o json` output"
            )
    out: list[Challenge] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise UsageError(f"{source}: items[{i}] is not an object")
        kind = item.get("kind")
        if kind is not None and kind != "Challenge":
            # repr(): the input's text must not reach the terminal raw (newlines, escapes).
            raise UsageError(
                f"{source}: items[{i}] is a {str(kind)[:60]!r}, not a cert-manager Challenge"
            )
        meta = item.get("metadata") or {}
        spec = item.get("spec")
        status = item.get("status") or {}
        if not isinstance(spec, dict) or not isinstance(meta, dict) or not isinstance(status, dict):
            raise UsageError(f"{source}: items[{i}] has no spec")
        dns_name = spec.get("dnsName")
        ctype = spec.get("type")
        if not isinstance(dns_name, str) or not isinstance(ctype, str):
            raise UsageError(f"{source}: items[{i}] lacks spec.dnsName or spec.type")
        token, key = spec.get("token"), spec.get("key")
        if not isinstance(token, str | None) or not isinstance(key, str | None):
            raise UsageError(f"{source}: items[{i}] has a non-string token or key")
        reason = status.get("reason")
        out.append(
            Challenge(
                namespace=str(meta.get("namespace") or "default"),
                name=str(meta.get("name") or f"items[{i}]"),
                dns_name=dns_name,
                type=ctype,
                token=token,
                key=key,
                state=str(status.get("state") or ""),
                reason=reason if isinstance(reason, str) and reason else None,
            )
        )
    return out


def targets_from_challenges(
    challenges: Sequence[Challenge], wanted_names: Iterable[str] = ()
) -> tuple[list[Target], list[str]]:
    """The pending HTTP-01 challenges (of the wanted names, if any) as targets, and one
    line for each challenge skipped and why."""
    from acmelb.diagnose import make_target

    wanted = {n.lower().rstrip(".") for n in wanted_names}
    targets: list[Target] = []
    infos: list[str] = []
    for ch in challenges:
        if wanted and ch.dns_name.lower() not in wanted:
            continue
        if not ch.http01:
            infos.append(f"skipping {ch.ref} ({ch.dns_name}): {ch.type} challenge, not HTTP-01")
            continue
        if not ch.pending:
            infos.append(f"skipping {ch.ref} ({ch.dns_name}): state {ch.state}")
            continue
        target = make_target(ch.dns_name, ch.token, ch.key)
        target.challenge, target.reason = ch.ref, ch.reason
        targets.append(target)
    if not targets:
        infos.append("no pending HTTP-01 challenge in the list")
    return targets, infos
