"""The Gateway API rules, as pure functions over one Challenge's objects (``Solver``).

The checks (``acmelb.kube.gateway_checks``) and ``acmelb fix k8s --kube`` both call them:
each returns what it found (empty: nothing), never a finding or a patch. Nothing prints.
"""

from __future__ import annotations

from dataclasses import dataclass

from acmelb.kube.gateway import (
    CHALLENGE_PREFIX,
    Condition,
    Gateway,
    HTTPRoute,
    Listener,
    ParentRef,
    false_condition,
    hostname_matches,
)
from acmelb.kube.objects import Pod, Solver

# cert-manager's message when it runs without --enable-gateway-api (pkg/issuer/acme/http)
API_DISABLED_TEXT = "gateway api is not enabled"
HTTP_PORT = 80


def solver_kind(solver: Solver) -> str | None:
    """The issuer's HTTP-01 solver kind, as copied into the Challenge: ``gatewayHTTPRoute``,
    ``ingress`` or None."""
    http01 = solver.challenge.solver.get("http01")
    if not isinstance(http01, dict):
        return None
    return next((k for k in ("gatewayHTTPRoute", "ingress") if k in http01), None)


def candidate_listeners(parent: Gateway, ref: ParentRef) -> list[Listener]:
    """The listeners a parentRef can attach to: the one its sectionName names, else every
    HTTP listener (of its port, if it names one)."""
    if ref.section:
        named = parent.listener(ref.section)
        return [named] if named else []
    return parent.http_listeners(ref.port)


# -- solver-route-not-accepted -------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """A solver route's parent that does not route the challenge path to it."""

    route: HTTPRoute
    ref: ParentRef
    condition: Condition
    parent: Gateway | None  # None: the parent is not in the file
    listeners: tuple[Listener, ...]  # the listeners the parentRef names or could use


def rejections(solver: Solver) -> list[Rejection]:
    """Each solver route parent whose status says ``Accepted: False``, and each one attached
    only to a listener that is not plain HTTP (the CA asks on port 80, over HTTP)."""
    found: list[Rejection] = []
    for route in solver.gateway.routes:
        for ref in route.parents:
            parent = solver.gateway.parent(ref)
            status = route.status_for(ref)
            refused = false_condition(status.conditions, "Accepted") if status else None
            listeners = tuple(candidate_listeners(parent, ref)) if parent else ()
            if refused is not None:
                found.append(Rejection(route, ref, refused, parent, listeners))
            elif status is None and parent is not None:
                found.append(Rejection(route, ref, unreported(parent), parent, listeners))
            elif parent is not None and listeners and not any(lst.http for lst in listeners):
                not_http = Condition(
                    "Accepted",
                    "True",
                    "NotAnHTTPListener",
                    f"sectionName {ref.section} is a {listeners[0].protocol} listener on port "
                    f"{listeners[0].port}: the CA's plain HTTP request on port 80 never "
                    "reaches it",
                )
                found.append(Rejection(route, ref, not_http, parent, listeners))
    return found


def unreported(parent: Gateway) -> Condition:
    """The route names a parent that is in the objects read, but no controller wrote a
    status for it: nothing has attached it (Gateway API: a controller writes one entry
    per parentRef it is responsible for; RouteParentStatus, httproute_types.go)."""
    return Condition(
        "Accepted",
        "Unknown",
        "NoStatus",
        f"no controller has written a status for {parent.ref} on this route",
    )


def rejection_detail(rejection: Rejection, namespace: str, name: str) -> str:
    """What the reason means for this listener, in one sentence."""
    reason, listeners = rejection.condition.reason, rejection.listeners
    shown = "; ".join(lst.line() for lst in listeners) or "no listener the parentRef can use"
    if reason == "NotAllowedByListeners":
        return (
            f"The listener does not admit routes from the solver's namespace ({shown}); the "
            f"solver route is in {namespace}."
        )
    if reason == "NoMatchingListenerHostname":
        return f"The listener serves other hostnames ({shown}); the solver route is for {name}."
    if reason in ("NoMatchingParent", "NotAnHTTPListener"):
        return (
            f"The parentRef names no HTTP listener on port {HTTP_PORT} ({shown}): the "
            "challenge request arrives over plain HTTP on port 80."
        )
    if reason == "NoStatus":
        return (
            "No controller has processed the route for this parent: the Gateway's "
            "controller is down or not running, its GatewayClass is served by no "
            "controller, or the route was created seconds before the objects were read "
            "(read them again to tell)."
        )
    return f"The implementation refused it ({shown})."


# -- listener-not-programmed ---------------------------------------------------------------


@dataclass(frozen=True)
class Unprogrammed:
    parent: Gateway
    listener: Listener | None  # None: the Gateway (or ListenerSet) as a whole
    condition: Condition
    waiting: tuple[Listener, ...]  # HTTPS listeners waiting for their certificate's Secret


def waiting_for_secret(parent: Gateway) -> tuple[Listener, ...]:
    return tuple(
        lst
        for lst in parent.listeners
        if (c := false_condition(parent.status_of(lst), "ResolvedRefs")) is not None
        and c.reason == "InvalidCertificateRef"
    )


def unprogrammed(solver: Solver) -> list[Unprogrammed]:
    """The solver's Gateways and ListenerSets whose status says they, or the listeners the
    solver route uses, are not programmed, accepted or resolved."""
    found: list[Unprogrammed] = []
    refs = [p for r in solver.gateway.routes for p in r.parents]
    for parent in solver.gateway.parents:
        waiting = waiting_for_secret(parent)
        whole = false_condition(parent.conditions, "Programmed", "Accepted")
        if whole is not None:
            found.append(Unprogrammed(parent, None, whole, waiting))
        used = {
            lst.index: lst
            for ref in refs
            if ref.key == parent.key
            for lst in candidate_listeners(parent, ref)
        }
        for _, lst in sorted(used.items()):
            bad = false_condition(parent.status_of(lst), "Programmed", "Accepted", "ResolvedRefs")
            if bad is not None:
                found.append(Unprogrammed(parent, lst, bad, waiting))
    return found


# -- gateway-redirects-solver --------------------------------------------------------------


@dataclass(frozen=True)
class Redirect:
    route: HTTPRoute | None  # None: the data plane's own configuration (Traefik)
    ref: ParentRef | None
    line: str


def solver_attached(solver: Solver, ref: ParentRef) -> bool:
    """Whether a solver route is accepted on the listener ``ref`` names (or any of its
    Gateway's listeners, when either names none)."""
    for route in solver.gateway.routes:
        for mine in route.parents:
            same_listener = mine.section is None or ref.section in (None, mine.section)
            if mine.key == ref.key and same_listener and route.accepted_on(mine) is not False:
                return True
    return False


def gateway_redirects(solver: Solver) -> list[Redirect]:
    """Redirects that take the challenge request: another HTTPRoute on the solver's Gateway
    redirecting the path (winning only where no solver route is attached: an attached
    ``Exact`` match takes precedence), and a Traefik data plane's own redirect or ACME."""
    ch = solver.challenge
    path = CHALLENGE_PREFIX + (ch.token or "")
    found: list[Redirect] = []
    for route in solver.gateway.neighbours:
        redirect = route.redirect_for(path)
        if redirect is None or not route.covers(ch.dns_name):
            continue
        for ref in route.parents:
            if route.accepted_on(ref) is False or solver_attached(solver, ref):
                continue
            to = ", ".join(f"{k}: {v}" for k, v in redirect.items()) or "(defaults)"
            line = f"HTTPRoute {route.meta.ref} on {ref.ref}: RequestRedirect {to}"
            found.append(Redirect(route, ref, line))
    found += [
        Redirect(None, None, line) for pod in solver.gateway.pods for line in traefik_takes(pod)
    ]
    return found


def traefik_takes(pod: Pod) -> list[str]:
    """A Traefik pod's arguments that take the challenge path on its HTTP entrypoint: an
    entrypoint redirection, or its own ACME HTTP challenge (router ``acme-http@internal``)
    without ``allowACMEByPass`` (Traefik's entrypoint and ACME options)."""
    args = [a.lower() for a in pod.args]
    lines = [
        f"pod {pod.meta.ref}: {a}"
        for a, low in zip(pod.args, args, strict=True)
        if low.startswith("--entrypoints.") and ".http.redirections." in low
    ]
    acme = [a for a, low in zip(pod.args, args, strict=True) if ".acme.httpchallenge" in low]
    bypass = any("allowacmebypass=true" in low for low in args)
    if acme and not bypass:
        lines.append(f"pod {pod.meta.ref}: {acme[0]} (acme-http@internal, no allowACMEByPass)")
    return lines


# -- gateway-api-disabled ------------------------------------------------------------------


def api_mismatch(solver: Solver) -> list[str]:
    """Why cert-manager's Gateway API support and the cluster do not fit (empty: they do)."""
    ch = solver.challenge
    lines = [
        e.line()
        for e in solver.events
        if API_DISABLED_TEXT in e.message.lower() and e.type == "Warning"
    ]
    if ch.reason and API_DISABLED_TEXT in ch.reason.lower():
        lines.append(f"Challenge {ch.ref}: reason: {ch.reason}")
    kind = solver_kind(solver) if solver.from_cluster else None  # alone: nothing to compare
    if kind == "gatewayHTTPRoute" and not solver.gateway.routes and not solver.gateway_api_seen:
        lines.append(
            f"Challenge {ch.ref}: solver gatewayHTTPRoute, and the file holds no HTTPRoute, "
            "Gateway or GatewayClass (the CRDs are missing, or the dump left those kinds out)"
        )
    if kind == "ingress" and solver.gateway_api_seen and not solver.all_controllers:
        lines.append(
            f"Challenge {ch.ref}: solver http01.ingress, while the cluster serves Gateways "
            "and the file holds no ingress controller pod"
        )
    return lines


def http_gateway(solver: Solver, gateways: list[Gateway]) -> tuple[Gateway, Listener] | None:
    """The first Gateway with an HTTP listener on port 80, and that listener."""
    for gateway in gateways:
        listeners = gateway.http_listeners(HTTP_PORT)
        if listeners and gateway.key[0] == "Gateway":
            return gateway, listeners[0]
    return None


def matching_listener(parent: Gateway, name: str) -> Listener | None:
    """An HTTP listener on port 80 that serves ``name``."""
    return next(
        (lst for lst in parent.http_listeners(HTTP_PORT) if hostname_matches(lst.hostname, name)),
        None,
    )
