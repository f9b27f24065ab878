"""Gateway API objects validated offline against the CRDs' OpenAPI schemas.

The CRDs (standard channel of Gateway API v1.6.1) stay in the shared data beside the
project, ``../shared/fixtures/gateway-api-v1.6.1/`` (``ACMELB_GATEWAY_API_CRDS`` names
another directory); they are not copied here. ``validate`` checks an object against its
kind's ``openAPIV3Schema`` with jsonschema, evaluates by hand the few CEL rules
(``x-kubernetes-validations``) written below, and returns the others it met as not checked.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = Path(
    os.environ.get(
        "ACMELB_GATEWAY_API_CRDS", ROOT.parent / "shared" / "fixtures" / "gateway-api-v1.6.1"
    )
)
FILES = {
    "GatewayClass": "gatewayclasses.yaml",
    "Gateway": "gateways.yaml",
    "HTTPRoute": "httproutes.yaml",
    "ListenerSet": "listenersets.yaml",
    "ReferenceGrant": "referencegrants.yaml",
}
MISSING = f"the Gateway API v1.6.1 CRDs are not at {CRDS} (../shared is absent here)"


def available() -> bool:
    return all((CRDS / name).is_file() for name in FILES.values())


@functools.cache
def schema(kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / FILES[kind]).read_text())
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            found: dict[str, Any] = served["schema"]["openAPIV3Schema"]
            return found
    raise KeyError(f"{kind} {version} is not in {FILES[kind]}")


# -- the CEL rules evaluated here, by their message ----------------------------------------


def _listener_names_unique(listeners: list[dict[str, Any]]) -> bool:
    names = [lst.get("name") for lst in listeners]
    return len(names) == len(set(names))


def _listener_combinations_unique(listeners: list[dict[str, Any]]) -> bool:
    combos = [(lst.get("port"), lst.get("protocol"), lst.get("hostname")) for lst in listeners]
    return len(combos) == len(set(combos))


def _tls_needs_certificate(tls: dict[str, Any]) -> bool:
    # the rule reads self.mode: a tls block of the CRD always has one (its default)
    terminate = tls.get("mode", "Terminate") == "Terminate"
    return not terminate or bool(tls.get("certificateRefs")) or bool(tls.get("options"))


def _no_tls_on_plain_protocols(listeners: list[dict[str, Any]]) -> bool:
    return all(
        "tls" not in lst for lst in listeners if lst.get("protocol") in ("HTTP", "TCP", "UDP")
    )


def _https_terminates(listeners: list[dict[str, Any]]) -> bool:
    return all(
        (lst.get("tls") or {}).get("mode", "") in ("", "Terminate")
        for lst in listeners
        if lst.get("protocol") == "HTTPS"
    )


EVALUATED: dict[str, Callable[[Any], bool]] = {
    "Listener name must be unique within the Gateway": _listener_names_unique,
    "Listener name must be unique within the ListenerSet": _listener_names_unique,
    "Combination of port, protocol and hostname must be unique for each listener": (
        _listener_combinations_unique
    ),
    "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']": _no_tls_on_plain_protocols,
    "tls mode must be Terminate for protocol HTTPS": _https_terminates,
    "certificateRefs or options must be specified when mode is Terminate": _tls_needs_certificate,
}


def _rules(node: dict[str, Any], value: Any, path: str, out: list[tuple[str, str, Any]]) -> None:
    """Every CEL rule of the schema on the path the value takes: (path, message, value)."""
    for rule in node.get("x-kubernetes-validations") or []:
        out.append((path, str(rule.get("message") or rule.get("rule")), value))
    if isinstance(value, dict):
        props = node.get("properties") or {}
        for key, item in value.items():
            if key in props:
                _rules(props[key], item, f"{path}.{key}", out)
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            _rules(node["items"], item, f"{path}[{i}]", out)


def validate(obj: dict[str, Any]) -> list[str]:
    """Validate a Gateway API object (raises on a schema or evaluated CEL failure); the CEL
    rules met and not evaluated, as ``path: message``."""
    group, _, version = str(obj["apiVersion"]).partition("/")
    assert group == "gateway.networking.k8s.io", obj["apiVersion"]
    kind = "ListenerSet" if obj["kind"] == "XListenerSet" else obj["kind"]
    root = schema(kind, version)
    jsonschema.Draft7Validator(root).validate(obj)
    met: list[tuple[str, str, Any]] = []
    _rules(root, obj, kind, met)
    unchecked: list[str] = []
    for path, message, value in met:
        check = EVALUATED.get(message)
        if check is not None:
            assert check(value), f"{path}: {message}"
        else:
            unchecked.append(f"{path}: {message}")
    return unchecked


def parent_ref_schema() -> dict[str, Any]:
    """The ParentReference schema (HTTPRoute spec.parentRefs[]): cert-manager's
    gatewayHTTPRoute.parentRefs use the same type."""
    spec = schema("HTTPRoute", "v1")["properties"]["spec"]
    found: dict[str, Any] = spec["properties"]["parentRefs"]["items"]
    return found
