"""The exact changes for what the Gateway API rules find (``acmelb.kube.gateway_rules``).

Each is a ``Patch`` (``acmelb.kube.patches``): a kubectl line and, for an object of the file,
the whole object changed, ready for ``kubectl apply -f`` (the tests validate them against
the Gateway API CRDs' schemas), or the fragment of the issuer's solver. cert-manager never
edits a Gateway: its listeners are the user's to change.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from acmelb.kube.gateway import NAMESPACE_NAME_LABEL, Gateway, Listener
from acmelb.kube.gateway_rules import (
    HTTP_PORT,
    Redirect,
    Rejection,
    Unprogrammed,
    http_gateway,
    matching_listener,
)
from acmelb.kube.meta import as_dict, as_list
from acmelb.kube.patches import Patch, clean_object, issuer_fragment

if TYPE_CHECKING:
    from acmelb.kube.challenges import Challenge
    from acmelb.kube.objects import Provider, Service, Solver

PER_CERTIFICATE_NOTE = (
    "(cert-manager >= 1.20 also takes the parent per Certificate, in the annotations "
    "acme.cert-manager.io/http01-parentrefname, -parentrefkind, -parentrefnamespace)"
)


def json_patch(target: Gateway, ops: list[dict[str, Any]]) -> str:
    """``kubectl patch`` of a Gateway or ListenerSet with a JSON patch."""
    body = json.dumps(ops, separators=(",", ":"))
    kind = target.meta.kind.lower()
    where = ["-n", target.meta.namespace, target.meta.name]
    return shlex.join(["kubectl", "patch", kind, *where, "--type=json", "-p", body])


def changed(target: Gateway) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A clean copy of the object to change, and its spec.listeners list."""
    obj = clean_object(target.raw)
    if not isinstance(obj.get("spec"), dict):
        obj["spec"] = {}
    found = obj["spec"].get("listeners")
    # odd input (not what an API server returns): the parsed view read it as empty
    listeners = [lst if isinstance(lst, dict) else {} for lst in as_list(found)]
    obj["spec"]["listeners"] = listeners
    return obj, listeners


# -- the listener admits the solver's namespace -----------------------------------------------


def admitted(listener: Listener, raw: dict[str, Any], owner: str, wanted: str) -> dict[str, Any]:
    """allowedRoutes that keep what the listener admitted (its own namespace, the names its
    Selector lists) and add ``wanted`` by the Namespace's name label: no label to set on the
    Namespace, no ReferenceGrant (that is for backends in other namespaces, not parents)."""
    names = {owner, wanted}
    for e in listener.allowed.match_expressions:
        if e.get("key") == NAMESPACE_NAME_LABEL and e.get("operator") == "In":
            names |= {str(v) for v in e.get("values") or []}
    if NAMESPACE_NAME_LABEL in listener.allowed.match_labels:
        names.add(listener.allowed.match_labels[NAMESPACE_NAME_LABEL])
    expression = {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": sorted(names)}
    allowed: dict[str, Any] = {
        "namespaces": {"from": "Selector", "selector": {"matchExpressions": [expression]}}
    }
    kinds = as_dict(raw.get("allowedRoutes")).get("kinds")
    if kinds:
        allowed["kinds"] = kinds
    return allowed


def admit_patch(parent: Gateway, listener: Listener, namespace: str) -> Patch:
    labels = listener.allowed.match_labels
    if (
        listener.allowed.namespaces_from == "Selector"
        and labels
        and not (set(labels) & {NAMESPACE_NAME_LABEL})
    ):
        # the listener selects Namespaces by a label: give the solver's Namespace that label
        pairs = [f"{k}={v}" for k, v in sorted(labels.items())]
        return Patch(
            f"Give the namespace {namespace} the label the {parent.ref} listener "
            f"{listener.name!r} selects:",
            shlex.join(["kubectl", "label", "namespace", namespace, *pairs]),
        )
    obj, listeners = changed(parent)
    value = admitted(listener, listeners[listener.index], parent.meta.namespace, namespace)
    listeners[listener.index]["allowedRoutes"] = value
    op = {"op": "add", "path": f"/spec/listeners/{listener.index}/allowedRoutes", "value": value}
    return Patch(
        f"Let the {parent.ref} listener {listener.name!r} admit routes from {namespace}:",
        json_patch(parent, [op]),
        manifest=obj,
    )


# -- the issuer names the right parent --------------------------------------------------------


def parent_refs_patch(challenge: Challenge, gateway: Gateway, section: str, why: str) -> Patch:
    ref = {
        "group": "gateway.networking.k8s.io",
        "kind": "ListenerSet" if gateway.key[0] == "ListenerSet" else "Gateway",
        "name": gateway.meta.name,
        "namespace": gateway.meta.namespace,
        "sectionName": section,
    }
    part = {"http01": {"gatewayHTTPRoute": {"parentRefs": [ref]}}}
    patch = issuer_fragment(challenge, part, why)
    return Patch(patch.why, patch.command, fragment=patch.fragment, notes=(PER_CERTIFICATE_NOTE,))


def add_listener_patch(
    gateway: Gateway, name: str, namespace: str, hostname: str | None
) -> tuple[Patch, str]:
    """A new plain HTTP listener on port 80 for the solver's namespace (and name), and the
    listener's name."""
    obj, listeners = changed(gateway)
    taken = {str(lst.get("name")) for lst in listeners}
    listener_name = name if name not in taken else f"acme-{name}"
    new: dict[str, Any] = {"name": listener_name, "port": HTTP_PORT, "protocol": "HTTP"}
    if hostname:
        new["hostname"] = hostname
    expression = {
        "key": NAMESPACE_NAME_LABEL,
        "operator": "In",
        "values": sorted({gateway.meta.namespace, namespace}),
    }
    new["allowedRoutes"] = {
        "namespaces": {"from": "Selector", "selector": {"matchExpressions": [expression]}}
    }
    listeners.append(new)
    patch = Patch(
        f"Add an HTTP listener on port {HTTP_PORT} to {gateway.ref} for the solver's route:",
        json_patch(gateway, [{"op": "add", "path": "/spec/listeners/-", "value": new}]),
        manifest=obj,
    )
    return patch, listener_name


def rejection_patches(solver: Solver, rejection: Rejection) -> list[Patch]:
    ch, parent, reason = solver.challenge, rejection.parent, rejection.condition.reason
    if parent is None:
        return [_describe("httproute", rejection.route.meta.namespace, rejection.route.meta.name)]
    if reason == "NoStatus":
        return [_controller_check(parent)]
    admit = [admit_patch(parent, lst, ch.namespace) for lst in rejection.listeners if lst.http]
    if reason == "NotAllowedByListeners" and admit:
        return admit
    if parent.parent is not None and not parent.http_listeners(HTTP_PORT):
        return listener_set_fallback(solver, parent)
    better = matching_listener(parent, ch.dns_name)
    if better is not None and better not in rejection.listeners:
        patches = [
            parent_refs_patch(
                ch,
                parent,
                better.name,
                f"Name the HTTP listener {better.name!r} of {parent.ref} in the issuer's "
                "gatewayHTTPRoute parentRefs:",
            )
        ]
        if better.allowed.admits(ch.namespace, parent.meta.namespace) is False:
            patches.append(admit_patch(parent, better, ch.namespace))
        return patches
    if reason in ("NoMatchingListenerHostname", "NoMatchingParent", "NotAnHTTPListener"):
        hostname = ch.dns_name if reason == "NoMatchingListenerHostname" else None
        name = "acme-" + ch.dns_name if hostname else "http"
        patch, added = add_listener_patch(parent, name, ch.namespace, hostname)
        why = f"and name that listener ({added}) in the issuer's gatewayHTTPRoute parentRefs:"
        return [patch, parent_refs_patch(ch, parent, added, why)]
    return [_describe("httproute", rejection.route.meta.namespace, rejection.route.meta.name)]


def listener_set_fallback(solver: Solver, listener_set: Gateway) -> list[Patch]:
    """A ListenerSet with no HTTP listener: route the solver through its Gateway's port-80
    listener instead (cert-manager >= 1.21 does so itself with the Certificate annotation
    acme.cert-manager.io/http01-parentreffallback; cert-manager#8748)."""
    assert listener_set.parent is not None
    gateway = solver.gateway.parent(listener_set.parent)
    listener = matching_listener(gateway, solver.challenge.dns_name) if gateway else None
    if gateway is None or listener is None:
        return [_describe("listenerset", listener_set.meta.namespace, listener_set.meta.name)]
    patches = [
        parent_refs_patch(
            solver.challenge,
            gateway,
            listener.name,
            f"{listener_set.ref} has no HTTP listener on port {HTTP_PORT}: name its Gateway's "
            f"listener {listener.name!r} in the issuer's parentRefs instead:",
        )
    ]
    if listener.allowed.admits(solver.challenge.namespace, gateway.meta.namespace) is False:
        patches.append(admit_patch(gateway, listener, solver.challenge.namespace))
    return patches


def _controller_check(parent: Gateway) -> Patch:
    """No controller wrote the route's status: is the parent's class accepted by a running
    controller? (A GatewayClass no controller serves keeps no Accepted condition.)"""
    gateway_class = parent.class_name or "CLASS"
    return Patch(
        "Check that a controller serves the Gateway's class (status Accepted=True, and its "
        "pods running); when it does, read the objects again, and the route has a status:",
        shlex.join(["kubectl", "get", "gatewayclass", gateway_class, "-o", "jsonpath={.status}"]),
    )


def _describe(kind: str, namespace: str, name: str) -> Patch:
    return Patch(
        "Read what the implementation says, fix it, and cert-manager's route is accepted:",
        shlex.join(["kubectl", "describe", kind, "-n", namespace, name]),
    )


# -- listener-not-programmed ------------------------------------------------------------------


def unprogrammed_patches(item: Unprogrammed) -> list[Patch]:
    parent = item.parent
    if not item.waiting:
        return [_describe(parent.meta.kind.lower(), parent.meta.namespace, parent.meta.name)]
    obj, listeners = changed(parent)
    gone = sorted((lst.index for lst in item.waiting), reverse=True)
    for index in gone:
        del listeners[index]
    names = ", ".join(repr(lst.name) for lst in item.waiting)
    return [
        Patch(
            f"Until the certificate is issued, drop the listener(s) {names} of {parent.ref} "
            "that wait for its Secret (put them back once the Secret exists):",
            json_patch(parent, [{"op": "remove", "path": f"/spec/listeners/{i}"} for i in gone]),
            manifest=obj,
            notes=(
                "(Gateway API says one invalid listener must not stop the others: "
                "report it to the implementation too)",
            ),
        )
    ]


# -- gateway-redirects-solver -----------------------------------------------------------------


def redirect_patches(solver: Solver, redirects: list[Redirect]) -> list[Patch]:
    ch = solver.challenge
    patches: list[Patch] = []
    for redirect in redirects:
        ref = redirect.ref
        parent = solver.gateway.parent(ref) if ref else None
        if ref is None or parent is None:
            continue
        listener = parent.listener(ref.section) or matching_listener(parent, ch.dns_name)
        if listener is None:
            continue
        patches.append(
            parent_refs_patch(
                ch,
                parent,
                listener.name,
                f"Attach the solver's route to the listener {listener.name!r} of {parent.ref}, "
                "where the redirect is (its Exact match on the challenge path then wins):",
            )
        )
        if listener.allowed.admits(ch.namespace, parent.meta.namespace) is False:
            patches.append(admit_patch(parent, listener, ch.namespace))
    if any(r.route is None for r in redirects):
        patches.append(
            Patch(
                "Traefik takes the challenge path on its HTTP entrypoint: drop the entrypoint "
                "redirection (Helm: ports.web.redirections) or set "
                "--entryPoints.web.allowACMEByPass=true so that routes may answer ACME:",
                "helm upgrade traefik traefik/traefik --reuse-values --set "
                "'additionalArguments={--entryPoints.web.allowACMEByPass=true}'",
            )
        )
    return patches


# -- gateway-api-disabled ---------------------------------------------------------------------


def api_disabled_patches(solver: Solver, evidence: list[str]) -> list[Patch]:
    ch = solver.challenge
    if any("http01.ingress" in line for line in evidence):
        found = http_gateway(solver, solver.all_gateways)
        if found is not None:
            gateway, listener = found
            return [
                parent_refs_patch(
                    ch,
                    gateway,
                    listener.name,
                    "Move the issuer from the http01.ingress solver (no controller serves "
                    f"Ingresses any more) to gatewayHTTPRoute on {gateway.ref}; delete its "
                    "http01.ingress part:",
                )
            ]
    return [
        Patch(
            "Turn on cert-manager's Gateway API support (the CRDs must be installed before "
            "cert-manager starts: it reads them once):",
            "helm upgrade cert-manager jetstack/cert-manager -n cert-manager --reuse-values "
            "--set config.apiVersion=controller.config.cert-manager.io/v1alpha1 "
            "--set config.kind=ControllerConfiguration --set config.enableGatewayAPI=true",
            notes=(
                "(or add --enable-gateway-api to the controller's args; then: kubectl rollout "
                "restart deployment -n cert-manager cert-manager)",
            ),
        )
    ]


# -- lb-proxy-protocol-shortcut, on a Gateway's Service -------------------------------------


def infrastructure_patch(
    gateway: Gateway, service: Service, provider: Provider, challenge: Challenge
) -> Patch | None:
    """The provider's hostname annotation through the Gateway's spec.infrastructure (the
    implementation owns the Service and would undo an annotation set on it)."""
    if provider.hostname_annotation is None:
        return None
    value = provider.hostname_value.format(name=challenge.dns_name)
    obj = clean_object(gateway.raw)
    spec = obj["spec"] = as_dict(obj.get("spec"))
    infrastructure = spec["infrastructure"] = as_dict(spec.get("infrastructure"))
    infrastructure["annotations"] = {
        **as_dict(infrastructure.get("annotations")),
        provider.hostname_annotation: value,
    }
    op = {
        "op": "add",
        "path": "/spec/infrastructure",
        "value": spec["infrastructure"],
    }
    return Patch(
        f"Make the {provider.name} LB of {gateway.ref} publish a hostname, through the "
        f"Gateway's infrastructure annotations (the implementation copies them to "
        f"{service.meta.ref}), so kube-proxy stops short-circuiting its IP:",
        json_patch(gateway, [op]),
        manifest=obj,
        notes=(f"({value} must resolve to the LB's address)",),
    )
