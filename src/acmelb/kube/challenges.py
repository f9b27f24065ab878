"""cert-manager Challenge lists (``kubectl get challenges -A -o json``) as diagnosis targets."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from acmelb.errors import UsageError

# What ``acmelb diagnose --kube`` reads (``acmelb.kube.objects``): the objects around a Challenge,
# through an Ingress or through the Gateway API. A cluster that does not serve a kind (no
# Gateway API CRDs, no ListenerSet) makes kubectl fail: drop that kind from the list.
KUBECTL_KINDS = (
    "challenges,orders,certificates,issuers,clusterissuers,ingresses,services,endpointslices,"
    "pods,events,gatewayclasses,gateways,httproutes,listenersets"
)
KUBECTL_COMMAND = f"kubectl get {KUBECTL_KINDS} -A -o json"


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
    presented: bool = False
    # spec.solver as cert-manager copied it from the issuer (ACMEChallengeSolver)
    solver: dict[str, Any] = field(default_factory=dict)
    issuer: str | None = None  # "ClusterIssuer/name" or "Issuer/namespace/name"

    @property
    def wait_instead_of_self_check(self) -> str | None:
        """spec.solver.waitInsteadOfSelfCheck (cert-manager >= 1.21): the self-check is skipped."""
        value = self.solver.get("waitInsteadOfSelfCheck")
        return str(value) if value is not None else None

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
        out.append(challenge_from_item(item, f"{source}: items[{i}]"))
    return out


def challenge_from_item(item: dict[str, Any], where: str) -> Challenge:
    """One Challenge object; UsageError naming ``where`` if it lacks what a Challenge has."""
    meta = item.get("metadata") or {}
    spec = item.get("spec")
    status = item.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(meta, dict) or not isinstance(status, dict):
        raise UsageError(f"{where} has no spec")
    dns_name = spec.get("dnsName")
    ctype = spec.get("type")
    if not isinstance(dns_name, str) or not isinstance(ctype, str):
        raise UsageError(f"{where} lacks spec.dnsName or spec.type")
    token, key = spec.get("token"), spec.get("key")
    if not isinstance(token, str | None) or not isinstance(key, str | None):
        raise UsageError(f"{where} has a non-string token or key")
    reason = status.get("reason")
    solver = spec.get("solver")
    namespace = str(meta.get("namespace") or "default")
    return Challenge(
        namespace=namespace,
        name=str(meta.get("name") or where),
        dns_name=dns_name,
        type=ctype,
        token=token,
        key=key,
        state=str(status.get("state") or ""),
        reason=reason if isinstance(reason, str) and reason else None,
        presented=status.get("presented") is True,
        solver=solver if isinstance(solver, dict) else {},
        issuer=_issuer_ref(spec.get("issuerRef"), namespace),
    )


def _issuer_ref(ref: Any, namespace: str) -> str | None:
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    kind = str(ref.get("kind") or "Issuer")
    where = "" if kind == "ClusterIssuer" else f"{namespace}/"
    return f"{kind}/{where}{ref['name']}"
