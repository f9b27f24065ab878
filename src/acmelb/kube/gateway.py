"""Gateway API objects read from the file: GatewayClass, Gateway, ListenerSet, HTTPRoute.

Typed views of the fields HTTP-01 depends on, with their status conditions (the Gateway
API reports what went wrong there, not in annotations). Field names and condition reasons
follow the Gateway API v1.6.1 reference (``apis/v1``: ``gateway_types.go``,
``httproute_types.go``, ``shared_types.go``; ``ListenerSet`` in ``apis/v1``, formerly
``XListenerSet`` in ``apisx/v1alpha1``). Nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acmelb.kube.meta import Meta, as_dict, as_list, meta_of, str_map

GATEWAY_GROUP = "gateway.networking.k8s.io"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
# the label Kubernetes sets on every Namespace (>= 1.22): a Selector on it is decidable here
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# GatewayClass spec.controllerName -> the implementation (each project's documentation)
IMPLEMENTATIONS = {
    "gateway.envoyproxy.io/gatewayclass-controller": "Envoy Gateway",
    "io.cilium/gateway-controller": "Cilium",
    "istio.io/gateway-controller": "Istio",
    "gateway.nginx.org/nginx-gateway-controller": "NGINX Gateway Fabric",
    "networking.gke.io/gateway": "GKE",
    "kgateway.dev/kgateway": "kgateway",
    "traefik.io/gateway-controller": "Traefik",
    "gateway.k8s.aws/alb": "AWS Load Balancer Controller",
    "gateway.k8s.aws/nlb": "AWS Load Balancer Controller",
}

# Labels the implementations put on the Service and Pods they create for a Gateway:
# Envoy Gateway (internal/infrastructure/kubernetes/proxy), Cilium (operator/pkg/gateway-api),
# and GEP-1762's gateway-name label (Istio, NGINX Gateway Fabric 2.x, kgateway).
ENVOY_NAME = "gateway.envoyproxy.io/owning-gateway-name"
ENVOY_NAMESPACE = "gateway.envoyproxy.io/owning-gateway-namespace"
CILIUM_OWNER = "io.cilium.gateway/owning-gateway"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str

    def line(self) -> str:
        said = f": {self.message}" if self.message else ""
        return f"{self.type}={self.status} ({self.reason}){said}"


def conditions_of(value: Any) -> tuple[Condition, ...]:
    return tuple(
        Condition(
            str(c.get("type") or ""),
            str(c.get("status") or ""),
            str(c.get("reason") or ""),
            str(c.get("message") or ""),
        )
        for c in map(as_dict, as_list(value))
    )


def false_condition(conditions: tuple[Condition, ...], *types: str) -> Condition | None:
    """The first condition of one of ``types`` that is False."""
    return next((c for c in conditions if c.type in types and c.status == "False"), None)


def hostname_matches(pattern: str | None, name: str) -> bool:
    """Gateway API hostname matching: none matches all, ``*.`` any name below the suffix."""
    if not pattern:
        return True
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return pattern == name


@dataclass(frozen=True)
class AllowedRoutes:
    namespaces_from: str  # "Same" (the default) | "All" | "Selector" | "None"
    match_labels: dict[str, str]
    match_expressions: tuple[dict[str, Any], ...]

    def admits(self, route_namespace: str, owner_namespace: str) -> bool | None:
        """Whether a route in ``route_namespace`` may attach (None: a Selector on labels of
        the Namespace that the file does not hold)."""
        if self.namespaces_from == "All":
            return True
        if self.namespaces_from == "Same":
            return route_namespace == owner_namespace
        if self.namespaces_from != "Selector":
            return False
        labels = {NAMESPACE_NAME_LABEL: route_namespace}
        if set(self.match_labels) - {NAMESPACE_NAME_LABEL}:
            return None
        if any(e.get("key") != NAMESPACE_NAME_LABEL for e in self.match_expressions):
            return None
        ok = all(labels.get(k) == v for k, v in self.match_labels.items())
        for e in self.match_expressions:
            values = [str(v) for v in as_list(e.get("values"))]
            inside = route_namespace in values
            ok = ok and (inside if e.get("operator") == "In" else not inside)
        return ok


@dataclass(frozen=True)
class Listener:
    index: int  # its place in spec.listeners[] (JSON patches address it by index)
    name: str
    port: int
    protocol: str
    hostname: str | None
    allowed: AllowedRoutes
    certificate_refs: tuple[str, ...]  # "namespace/name" of each TLS Secret

    @property
    def http(self) -> bool:
        return self.protocol == "HTTP"

    def line(self) -> str:
        host = self.hostname or "any hostname"
        return (
            f"listener {self.name!r} ({self.protocol} port {self.port}, {host}, routes from "
            f"{self.allowed.namespaces_from} namespaces)"
        )


@dataclass(frozen=True)
class ListenerStatus:
    name: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class ParentRef:
    kind: str  # "Gateway" (the default) | "ListenerSet" | "XListenerSet"
    namespace: str
    name: str
    section: str | None
    port: int | None

    @property
    def key(self) -> tuple[str, str, str]:
        kind = "ListenerSet" if self.kind == "XListenerSet" else self.kind
        return (kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        section = f" section {self.section}" if self.section else ""
        return f"{self.kind} {self.namespace}/{self.name}{section}"


@dataclass(frozen=True)
class Gateway:
    """A Gateway, or a ListenerSet (``parent`` is then the Gateway it adds listeners to)."""

    meta: Meta
    class_name: str | None
    listeners: tuple[Listener, ...]
    conditions: tuple[Condition, ...]
    listener_status: tuple[ListenerStatus, ...]
    addresses: tuple[str, ...]  # status.addresses[].value of type IPAddress
    parent: ParentRef | None
    raw: dict[str, Any]  # the object as read: fixes print it back changed

    @property
    def key(self) -> tuple[str, str, str]:
        kind = "ListenerSet" if self.meta.kind in ("ListenerSet", "XListenerSet") else "Gateway"
        return (kind, self.meta.namespace, self.meta.name)

    @property
    def ref(self) -> str:
        return f"{self.meta.kind} {self.meta.ref}"

    def listener(self, name: str | None) -> Listener | None:
        return next((lst for lst in self.listeners if lst.name == name), None)

    def status_of(self, listener: Listener) -> tuple[Condition, ...]:
        found = next((s for s in self.listener_status if s.name == listener.name), None)
        return found.conditions if found else ()

    def http_listeners(self, port: int | None = None) -> list[Listener]:
        return [lst for lst in self.listeners if lst.http and port in (None, lst.port)]


@dataclass(frozen=True)
class RouteParentStatus:
    parent: ParentRef
    controller: str
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class RouteRule:
    paths: tuple[tuple[str, str], ...]  # (type, value) of each match; empty: every path
    redirect: dict[str, Any] | None  # the RequestRedirect filter's settings

    def catches(self, path: str) -> bool:
        """Whether a request for ``path`` matches this rule (RegularExpression: unknown, no)."""
        if not self.paths:
            return True
        for kind, value in self.paths:
            if kind == "Exact" and value == path:
                return True
            prefix = value.rstrip("/") + "/"
            if kind == "PathPrefix" and (value in ("", "/") or path.startswith(prefix)):
                return True
        return False


@dataclass(frozen=True)
class HTTPRoute:
    meta: Meta
    parents: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    status: tuple[RouteParentStatus, ...]
    raw: dict[str, Any]

    def serves_token(self, token: str) -> bool:
        return any((("Exact", CHALLENGE_PREFIX + token) in r.paths) for r in self.rules)

    def covers(self, name: str) -> bool:
        return not self.hostnames or any(hostname_matches(h, name) for h in self.hostnames)

    def redirect_for(self, path: str) -> dict[str, Any] | None:
        """The redirect the first rule catching ``path`` applies (None: no such redirect)."""
        return next((r.redirect for r in self.rules if r.redirect and r.catches(path)), None)

    def status_for(self, parent: ParentRef) -> RouteParentStatus | None:
        return next((s for s in self.status if s.parent.key == parent.key), None)

    def accepted_on(self, parent: ParentRef) -> bool | None:
        """The parent's Accepted condition (None: no controller wrote one)."""
        status = self.status_for(parent)
        found = [c for c in status.conditions if c.type == "Accepted"] if status else []
        return found[0].status == "True" if found else None


@dataclass(frozen=True)
class GatewayClass:
    meta: Meta
    controller: str

    @property
    def implementation(self) -> str:
        return IMPLEMENTATIONS.get(self.controller, self.controller or "unknown")


def owned_by(gateway: Gateway, meta: Meta) -> bool:
    """Whether a Service or Pod was created by the implementation for this Gateway."""
    labels = meta.labels
    name, namespace = gateway.meta.name, gateway.meta.namespace
    if labels.get(ENVOY_NAME) == name:
        return labels.get(ENVOY_NAMESPACE, namespace) == namespace
    same = meta.namespace == namespace
    return same and name in (labels.get(CILIUM_OWNER), labels.get(GATEWAY_NAME_LABEL))


# -- parsing ------------------------------------------------------------------------------


def parent_ref(value: Any, namespace: str) -> ParentRef:
    ref = as_dict(value)
    port = ref.get("port")
    return ParentRef(
        kind=str(ref.get("kind") or "Gateway"),
        namespace=str(ref.get("namespace") or namespace),
        name=str(ref.get("name") or ""),
        section=str(ref["sectionName"]) if ref.get("sectionName") else None,
        port=port if isinstance(port, int) else None,
    )


def _allowed(value: Any) -> AllowedRoutes:
    namespaces = as_dict(as_dict(value).get("namespaces"))
    selector = as_dict(namespaces.get("selector"))
    return AllowedRoutes(
        namespaces_from=str(namespaces.get("from") or "Same"),
        match_labels=str_map(selector.get("matchLabels")),
        match_expressions=tuple(map(as_dict, as_list(selector.get("matchExpressions")))),
    )


def _listener(index: int, value: Any, namespace: str) -> Listener:
    spec = as_dict(value)
    refs = as_list(as_dict(spec.get("tls")).get("certificateRefs"))
    port = spec.get("port")
    return Listener(
        index=index,
        name=str(spec.get("name") or ""),
        port=port if isinstance(port, int) else 0,
        protocol=str(spec.get("protocol") or ""),
        hostname=str(spec["hostname"]) if spec.get("hostname") else None,
        allowed=_allowed(spec.get("allowedRoutes")),
        certificate_refs=tuple(
            f"{r.get('namespace') or namespace}/{r.get('name')}" for r in map(as_dict, refs)
        ),
    )


def gateway_from_item(kind: str, item: dict[str, Any]) -> Gateway:
    """A Gateway, ListenerSet or XListenerSet."""
    meta = meta_of(kind, item)
    spec, status = as_dict(item.get("spec")), as_dict(item.get("status"))
    addresses = tuple(
        str(a.get("value"))
        for a in map(as_dict, as_list(status.get("addresses")))
        if a.get("value") and a.get("type", "IPAddress") == "IPAddress"
    )
    parent = spec.get("parentRef")
    return Gateway(
        meta=meta,
        class_name=str(spec["gatewayClassName"]) if spec.get("gatewayClassName") else None,
        listeners=tuple(
            _listener(i, lst, meta.namespace)
            for i, lst in enumerate(as_list(spec.get("listeners")))
        ),
        conditions=conditions_of(status.get("conditions")),
        listener_status=tuple(
            ListenerStatus(str(s.get("name") or ""), conditions_of(s.get("conditions")))
            for s in map(as_dict, as_list(status.get("listeners")))
        ),
        addresses=addresses,
        parent=parent_ref(parent, meta.namespace) if isinstance(parent, dict) else None,
        raw=item,
    )


def _rule(value: Any) -> RouteRule:
    rule = as_dict(value)
    paths = []
    for match in map(as_dict, as_list(rule.get("matches"))):
        path = as_dict(match.get("path"))
        paths.append((str(path.get("type") or "PathPrefix"), str(path.get("value") or "/")))
    redirect = next(
        (
            as_dict(f.get("requestRedirect"))
            for f in map(as_dict, as_list(rule.get("filters")))
            if f.get("type") == "RequestRedirect"
        ),
        None,
    )
    return RouteRule(tuple(paths), redirect)


def route_from_item(item: dict[str, Any]) -> HTTPRoute:
    meta = meta_of("HTTPRoute", item)
    spec, status = as_dict(item.get("spec")), as_dict(item.get("status"))
    return HTTPRoute(
        meta=meta,
        parents=tuple(parent_ref(p, meta.namespace) for p in as_list(spec.get("parentRefs"))),
        hostnames=tuple(str(h) for h in as_list(spec.get("hostnames"))),
        rules=tuple(_rule(r) for r in as_list(spec.get("rules"))),
        status=tuple(
            RouteParentStatus(
                parent_ref(s.get("parentRef"), meta.namespace),
                str(s.get("controllerName") or ""),
                conditions_of(s.get("conditions")),
            )
            for s in map(as_dict, as_list(status.get("parents")))
        ),
        raw=item,
    )


def class_from_item(item: dict[str, Any]) -> GatewayClass:
    spec = as_dict(item.get("spec"))
    return GatewayClass(meta_of("GatewayClass", item), str(spec.get("controllerName") or ""))
