"""Stage KUBE: what the cluster's objects say before any packet is sent.

These checks read the target's facts (``ctx.target.facts``): the Challenge and the objects
connected to it (``acmelb.kube.objects.Solver``), from ``acmelb diagnose --kube`` (all of them) or
``--challenges`` (the Challenge alone). Each rule is a pure function over that view;
``SelfCheckSkipped`` also reads the probes, so it runs in the COMPARE stage.
"""

from __future__ import annotations

from collections.abc import Sequence

from acmelb.doctor.checks.base import Check, Context, le_verdict
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding
from acmelb.kube import gateway_patches
from acmelb.kube import patches as fixes
from acmelb.kube.gateway_checks import GATEWAY_CHECKS
from acmelb.kube.objects import (
    Event,
    Ingress,
    Provider,
    Service,
    Solver,
    provider_of,
    solver_classes,
)

# This module is imported (and its checks registered, see acmelb.kube) only where targets
# are read from Kubernetes objects: a fleet's start-up does not pay for it.

# ingress-nginx: these redirect every location of the Ingress, the solver's path included
# (kubernetes/ingress-nginx#11315). ssl-redirect/force-ssl-redirect are not here: the
# controller exempts /.well-known/acme-challenge by default (no-tls-redirect-locations).
NGINX_REDIRECTS = (
    "nginx.ingress.kubernetes.io/permanent-redirect",
    "nginx.ingress.kubernetes.io/temporal-redirect",
)
TRAEFIK_MIDDLEWARES = "traefik.ingress.kubernetes.io/router.middlewares"


def _kube(ctx: Context) -> Solver | None:
    """The Challenge and its objects, when the target was read from Kubernetes objects."""
    facts = ctx.target.facts
    return facts if isinstance(facts, Solver) else None


def _solver(ctx: Context) -> Solver:
    """The target's solver, for a check whose ``applies`` said there is one."""
    solver = _kube(ctx)
    assert solver is not None
    return solver


# -- solver-not-presented ------------------------------------------------------------------


def present_failures(solver: Solver) -> list[str]:
    """Why cert-manager could not present the solver: its PresentError events, an admission
    webhook's denial on any solver object, or the reason of a Challenge never presented."""
    lines = [e.line() for e in solver.warnings if _present_failure(e)]
    ch = solver.challenge
    if not ch.presented and ch.reason:
        lines.append(f"Challenge {ch.ref}: presented false, reason: {ch.reason}")
    return lines


def _present_failure(event: Event) -> bool:
    return event.reason == "PresentError" or (
        "admission webhook" in event.message and "denied" in event.message
    )


class SolverNotPresented:
    codes = (Code.SOLVER_NOT_PRESENTED,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return _kube(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        evidence = present_failures(solver)
        if not evidence:
            return []
        text = " ".join(evidence)
        return [
            Finding(
                Code.SOLVER_NOT_PRESENTED,
                "cert-manager could not present the HTTP-01 solver",
                "cert-manager failed to create the solver's Pod, Service or Ingress (the "
                "events and the Challenge's reason below say why), so neither the CA nor the "
                "self-check can reach a solver: no probe can pass until it is presented.",
                fixes.remedy_not_presented(solver, text),
                evidence=evidence,
            )
        ]


# -- lb-proxy-protocol-shortcut ------------------------------------------------------------


def proxy_shortcut(service: Service) -> Provider | None:
    """The provider whose PROXY protocol is on at this Service's LB while the status shows a
    bare IP (no hostname, no ipMode: Proxy): kube-proxy then routes in-cluster traffic for
    that IP straight to the pods, without the header they expect."""
    provider = provider_of(service)
    if provider is None or not provider.proxy_on(service):
        return None
    entries = service.lb_ingress
    if not entries or any(e.hostname or e.ip_mode == "Proxy" for e in entries):
        return None
    if provider.hostname_annotation and provider.hostname_annotation in service.meta.annotations:
        return None
    return provider


class LbProxyShortcut:
    codes = (Code.LB_PROXY_SHORTCUT,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        solver = _kube(ctx)
        return solver is not None and bool(solver.front_services)

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        found: list[Finding] = []
        for service in solver.front_services:
            provider = proxy_shortcut(service)
            if provider is None:
                continue
            ips = ", ".join(e.ip or "" for e in service.lb_ingress)
            pods = "Gateway" if solver.gateway.owner_of(service) else "ingress"
            bare = "IPs" if len(service.lb_ingress) > 1 else "IP"
            found.append(
                Finding(
                    Code.LB_PROXY_SHORTCUT,
                    f"PROXY protocol on the {provider.name} load balancer, but its IP is "
                    "short-circuited inside the cluster",
                    f"The Service {service.meta.ref} turns on PROXY protocol at the "
                    f"{provider.name} load balancer ({provider.enabled_by(service)}) and its "
                    f"status publishes the bare {bare} {ips} without ipMode: Proxy. kube-proxy "
                    f"routes in-cluster traffic for that address straight to the {pods} pods, "
                    "without the PROXY header they now require: cert-manager's self-check "
                    "gets EOF or a timeout while the CA, through the LB, would pass.",
                    fixes.remedy(proxy_patches(solver, service, provider)),
                    evidence=[
                        f"{service.meta.ref}: {provider.enabled_by(service)}",
                        f"{service.meta.ref}: status.loadBalancer.ingress = "
                        + ", ".join(
                            f"ip {e.ip} ipMode {e.ip_mode or '(VIP)'}" for e in service.lb_ingress
                        ),
                        f"{service.meta.ref}: no {provider.hostname_annotation} annotation"
                        if provider.hostname_annotation
                        else f"{provider.name}: no hostname annotation exists; ipMode: Proxy is "
                        "the cloud controller's to set",
                    ],
                )
            )
        return found


def proxy_patches(solver: Solver, service: Service, provider: Provider) -> list[fixes.Patch]:
    """The hostname annotation: on the Service, or through the Gateway that owns it (its
    implementation would undo a change made on the Service itself)."""
    owner = solver.gateway.owner_of(service)
    through = (
        gateway_patches.infrastructure_patch(owner, service, provider, solver.challenge)
        if owner is not None
        else None
    )
    if through is not None:
        return [through]
    return fixes.proxy_shortcut_patches(service, provider, solver.challenge)


# -- traffic-policy-local ------------------------------------------------------------------


def nodes_without_controller(solver: Solver) -> list[str]:
    """The nodes of the solver pods that run no pod of the controllers serving its class
    or of its Gateway (none when the file holds no such pod: nothing can be said)."""
    served = {p.node for p in solver.data_plane}
    if not served:
        return []
    return sorted({p.node for p in solver.pods if p.node and p.node not in served})


class TrafficPolicyLocal:
    codes = (Code.TRAFFIC_POLICY_LOCAL,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        solver = _kube(ctx)
        return solver is not None and any(
            s.external_traffic_policy == "Local" for s in solver.front_services
        )

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        lonely = nodes_without_controller(solver)
        if not lonely:
            return []
        services = local_policy_services(solver)
        controllers = sorted({f"{p.meta.name} on {p.node}" for p in solver.data_plane})
        return [
            Finding(
                Code.TRAFFIC_POLICY_LOCAL,
                "externalTrafficPolicy: Local, and the solver runs where no controller does",
                f"The Service {services[0].meta.ref} has externalTrafficPolicy: Local: a node "
                "passes the traffic it receives only to ingress controller pods on that same "
                f"node, and drops it when there is none. The solver pod runs on "
                f"{', '.join(lonely)}, which runs no controller pod: requests that reach "
                "that node (a NodePort or DNS pointing at every node, an LB without health "
                "checks, a client on that node) are dropped before any controller sees them.",
                fixes.remedy_traffic_policy(services[0]),
                evidence=[
                    *(
                        f"{s.meta.ref}: type {s.type}, externalTrafficPolicy Local"
                        for s in services
                    ),
                    f"controller pods: {', '.join(controllers) or 'none'}",
                    *(f"solver pod {p.meta.ref} on {p.node}" for p in solver.pods),
                ],
            )
        ]


# -- ingress-redirects-solver --------------------------------------------------------------


def redirects(solver: Solver) -> list[str]:
    """Every redirect that applies to the solver's path: annotations of the solver
    Ingress, and Traefik controllers that redirect a whole entrypoint."""
    lines: list[str] = []
    for ing in solver.ingresses:
        lines += _ingress_redirects(ing)
    for c in solver.controllers:
        lines += [
            f"controller pod {c.pod.meta.ref}: {arg}"
            for arg in c.pod.args
            if arg.lower().startswith("--entrypoints.") and ".http.redirections." in arg.lower()
        ]
    return lines


def _ingress_redirects(ing: Ingress) -> list[str]:
    notes = ing.meta.annotations
    lines = [f"Ingress {ing.meta.ref}: {k}: {notes[k]}" for k in NGINX_REDIRECTS if k in notes]
    middlewares = notes.get(TRAEFIK_MIDDLEWARES, "")
    if "redirect" in middlewares.lower():
        lines.append(f"Ingress {ing.meta.ref}: {TRAEFIK_MIDDLEWARES}: {middlewares}")
    return lines


class IngressRedirectsSolver:
    codes = (Code.INGRESS_REDIRECTS_SOLVER,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return _kube(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        evidence = redirects(solver)
        if not evidence:
            return []
        return [
            Finding(
                Code.INGRESS_REDIRECTS_SOLVER,
                "a redirect catches the challenge path",
                "A redirect configured on the solver's Ingress or on the controller's "
                "entrypoint applies to /.well-known/acme-challenge/ too. The CA and the "
                "self-check follow it, and what answers at the target (HTTPS on 443, "
                "another host) does not serve the solver: 404, a TLS route that never "
                "matches, or a redirect the CA refuses.",
                fixes.remedy_redirect(solver, evidence),
                evidence=evidence,
            )
        ]


# -- ingress-class-unserved ----------------------------------------------------------------


def unserved_classes(solver: Solver) -> list[str]:
    """The solver's Ingress classes that no controller in the file serves (none when the
    file holds no controller: then nothing can be said)."""
    return [
        k for k in solver_classes(solver) if not any(c.serves(k) for c in solver.all_controllers)
    ]


def served_classes(solver: Solver) -> list[str]:
    return sorted({k for c in solver.all_controllers for k in c.classes})


def local_policy_services(solver: Solver) -> list[Service]:
    return [s for s in solver.front_services if s.external_traffic_policy == "Local"]


class IngressClassUnserved:
    codes = (Code.INGRESS_CLASS_UNSERVED,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        solver = _kube(ctx)
        # with no controller in the file, nothing can be said about the classes
        return solver is not None and bool(solver.all_controllers)

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        unserved = unserved_classes(solver)
        if not unserved:
            return []
        served = served_classes(solver)
        return [
            Finding(
                Code.INGRESS_CLASS_UNSERVED,
                f"no ingress controller serves the class {unserved[0]!r}",
                f"The solver's Ingress has the class {unserved[0]!r}, and no ingress "
                f"controller in the cluster serves it (they serve {', '.join(served)}): the "
                "solver is created but never routed, so the CA gets the controller's "
                "default backend (404) or nothing.",
                fixes.remedy_ingress_class(solver, served[0] if served else "nginx"),
                evidence=[
                    *(f"Ingress {i.meta.ref}: class {i.class_name}" for i in solver.ingresses),
                    *(
                        f"{c.product} pod {c.pod.meta.ref} serves {', '.join(sorted(c.classes))}"
                        for c in solver.all_controllers
                    ),
                ],
            )
        ]


# -- self-check-skipped (COMPARE: needs the probes) ----------------------------------------


def failing_outside(ctx: Context) -> list[str]:
    """One line per outside probe a CA would reject."""
    lines: list[str] = []
    for run in ctx.outside:
        for attempt in run.public_attempts:
            verdict = le_verdict(attempt, ctx.target)
            if not verdict.ok and verdict.code is not None:
                lines.append(f"{attempt.address} from {run.label}: {verdict.code.value}")
    return lines


class SelfCheckSkipped:
    codes = (Code.SELF_CHECK_SKIPPED,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        solver = _kube(ctx)
        return solver is not None and solver.challenge.wait_instead_of_self_check is not None

    def run(self, ctx: Context) -> list[Finding]:

        solver = _solver(ctx)
        failing = failing_outside(ctx)
        if not failing:
            return []
        wait = solver.challenge.wait_instead_of_self_check
        return [
            Finding(
                Code.SELF_CHECK_SKIPPED,
                "the self-check is skipped, and the CA would fail",
                f"The solver sets waitInsteadOfSelfCheck: {wait}, so cert-manager asks the CA "
                "to validate after that wait without checking first. From outside the CA "
                "would fail now: each attempt is a failed validation, and Let's Encrypt "
                "allows only 5 an hour per account and name before it refuses more.",
                fixes.remedy_self_check_skipped(solver),
                evidence=[
                    f"Challenge {solver.challenge.ref}: waitInsteadOfSelfCheck {wait}",
                    *_short(failing),
                ],
            )
        ]


def _short(lines: Sequence[str], limit: int = 4) -> list[str]:
    return list(lines[:limit]) + (
        [f"... and {len(lines) - limit} more"] if len(lines) > limit else []
    )


# Registered into the doctor's runner by acmelb.kube, in this order.
KUBE_CHECKS: tuple[Check, ...] = (
    *GATEWAY_CHECKS,
    SolverNotPresented(),
    LbProxyShortcut(),
    TrafficPolicyLocal(),
    IngressRedirectsSolver(),
    IngressClassUnserved(),
    SelfCheckSkipped(),
)

__all__ = [
    "KUBE_CHECKS",
    "IngressClassUnserved",
    "IngressRedirectsSolver",
    "LbProxyShortcut",
    "SelfCheckSkipped",
    "SolverNotPresented",
    "TrafficPolicyLocal",
]
