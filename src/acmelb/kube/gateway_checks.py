"""Stage KUBE, Gateway API: what the status conditions of the solver's HTTPRoute, its
Gateway or ListenerSet and their listeners say before any packet is sent.

cert-manager's ``gatewayHTTPRoute`` solver creates an HTTPRoute beside the solver Pod and
Service (``pkg/issuer/acme/http/httproute.go``); whether it is routed shows only in the
Gateway API's status. Each check is one rule of ``acmelb.kube.gateway_rules``.
"""

from __future__ import annotations

from acmelb.doctor.checks.base import Check, Context
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding
from acmelb.kube import gateway_patches as fixes
from acmelb.kube.gateway_rules import (
    api_mismatch,
    gateway_redirects,
    rejection_detail,
    rejections,
    unprogrammed,
)
from acmelb.kube.objects import Solver
from acmelb.kube.patches import remedy


def solver_of(ctx: Context) -> Solver | None:
    """The Challenge and its objects, when the target was read from Kubernetes objects."""
    facts = ctx.target.facts
    return facts if isinstance(facts, Solver) else None


def through_gateway(ctx: Context) -> Solver | None:
    """The solver, when it has an HTTPRoute in the file."""
    solver = solver_of(ctx)
    return solver if solver is not None and solver.gateway.routes else None


class SolverRouteNotAccepted:
    codes = (Code.SOLVER_ROUTE_NOT_ACCEPTED,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return through_gateway(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:
        solver = through_gateway(ctx)
        assert solver is not None
        found = rejections(solver)
        if not found:
            return []
        first, ch = found[0], solver.challenge
        said = first.condition
        return [
            Finding(
                Code.SOLVER_ROUTE_NOT_ACCEPTED,
                f"the solver's HTTPRoute is not attached to {first.ref.ref} ({said.reason})",
                f"cert-manager's HTTPRoute {first.route.meta.ref} for {ch.dns_name} names "
                f"{first.ref.ref} as its parent, and its status there says "
                f"{said.line().rstrip('.')}. "
                f"{rejection_detail(first, ch.namespace, ch.dns_name)} The challenge path "
                "is then not routed to the solver: the Gateway answers 404, or another "
                "route on the listener (a redirect to HTTPS) takes it.",
                remedy([p for r in found for p in fixes.rejection_patches(solver, r)]),
                evidence=[
                    *(
                        f"HTTPRoute {r.route.meta.ref} on {r.ref.ref}: {r.condition.line()}"
                        for r in found
                    ),
                    *(
                        f"{r.parent.ref}: {lst.line()}"
                        for r in found[:1]
                        if r.parent is not None
                        for lst in r.parent.listeners
                    ),
                ],
            )
        ]


class ListenerNotProgrammed:
    codes = (Code.LISTENER_NOT_PROGRAMMED,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return through_gateway(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:
        solver = through_gateway(ctx)
        assert solver is not None
        found = unprogrammed(solver)
        if not found:
            return []
        first = found[0]
        where = f"listener {first.listener.name!r} of " if first.listener else ""
        waiting = ", ".join(
            f"{lst.name!r} (certificateRefs {', '.join(lst.certificate_refs)})"
            for lst in first.waiting
        )
        deadlock = (
            f" The HTTPS listener(s) {waiting} wait for the Secret that this very HTTP-01 "
            "challenge is to produce: where the implementation programs nothing until "
            "every listener resolves, nothing is served until the certificate exists, and "
            "the certificate never comes. A deadlock."
            if first.waiting
            else ""
        )
        return [
            Finding(
                Code.LISTENER_NOT_PROGRAMMED,
                f"{where}{first.parent.ref} is not programmed ({first.condition.reason})",
                f"The status of {where}{first.parent.ref} says {first.condition.line()}: "
                "the data plane does not serve it, so the solver's route, attached or not, "
                f"is not reached on port 80.{deadlock}",
                remedy([p for item in found[:1] for p in fixes.unprogrammed_patches(item)]),
                evidence=[
                    *(
                        f"{u.parent.ref}"
                        + (f" listener {u.listener.name!r}" if u.listener else "")
                        + f": {u.condition.line()}"
                        for u in found
                    ),
                    *(
                        f"{first.parent.ref} listener {lst.name!r}: ResolvedRefs=False "
                        f"(InvalidCertificateRef) for {', '.join(lst.certificate_refs)}"
                        for lst in first.waiting
                    ),
                ],
            )
        ]


class GatewayRedirectsSolver:
    codes = (Code.GATEWAY_REDIRECTS_SOLVER,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return through_gateway(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:
        solver = through_gateway(ctx)
        assert solver is not None
        found = gateway_redirects(solver)
        if not found:
            return []
        return [
            Finding(
                Code.GATEWAY_REDIRECTS_SOLVER,
                "a redirect on the Gateway catches the challenge path",
                f"A redirect on the solver's Gateway applies to {solver.challenge.dns_name}"
                "/.well-known/acme-challenge/ and the solver's route is not attached to that "
                "listener (an attached route's Exact match would take precedence over it). "
                "The CA and the self-check follow the redirect to HTTPS, where no route "
                "serves the solver (and the certificate is the one being issued).",
                remedy(fixes.redirect_patches(solver, found)),
                evidence=[r.line for r in found],
            )
        ]


class GatewayApiDisabled:
    codes = (Code.GATEWAY_API_DISABLED,)
    stage = Stage.KUBE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return solver_of(ctx) is not None

    def run(self, ctx: Context) -> list[Finding]:
        solver = solver_of(ctx)
        assert solver is not None
        evidence = api_mismatch(solver)
        if not evidence:
            return []
        return [
            Finding(
                Code.GATEWAY_API_DISABLED,
                "cert-manager's HTTP-01 solver does not fit the Gateway API of the cluster",
                "cert-manager's Gateway API support is off, the Gateway API CRDs are missing, "
                "or the issuer still uses the Ingress solver where only Gateways serve: "
                "either no solver route is created at all, or it is one nobody routes. "
                "The evidence says which.",
                remedy(fixes.api_disabled_patches(solver, evidence)),
                evidence=evidence,
            )
        ]


# Registered into the doctor's runner by acmelb.kube (with acmelb.kube.checks' KUBE_CHECKS).
GATEWAY_CHECKS: tuple[Check, ...] = (
    GatewayApiDisabled(),
    SolverRouteNotAccepted(),
    ListenerNotProgrammed(),
    GatewayRedirectsSolver(),
)

__all__ = [
    "GATEWAY_CHECKS",
    "GatewayApiDisabled",
    "GatewayRedirectsSolver",
    "ListenerNotProgrammed",
    "SolverRouteNotAccepted",
]
