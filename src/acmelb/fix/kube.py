"""``acmelb fix k8s --kube FILE``: the exact changes for the objects of a cluster's file.

The same rules as the KUBE stage's checks (``acmelb.kube.checks``), applied to every
pending HTTP-01 Challenge of the file; each problem found gives its ``Patch`` (a kubectl
line, and the whole changed object or the issuer's fragment). Nothing here prints.
"""

from __future__ import annotations

from acmelb.kube import checks as rules
from acmelb.kube import gateway_patches as gateway_fixes
from acmelb.kube import gateway_rules
from acmelb.kube import patches as fixes
from acmelb.kube.objects import Cluster, Solver
from acmelb.kube.patches import Patch


def solver_patches(solver: Solver) -> list[Patch]:
    """Every patch for one Challenge's objects, in the order the checks run."""
    patches = gateway_patches(solver)
    said = rules.present_failures(solver)
    # Gateway support off explains the failure to present: its patch is the one to apply
    if said and not gateway_rules.api_mismatch(solver):
        patches += fixes.not_presented_patches(solver, " ".join(said))
    for service in solver.front_services:
        provider = rules.proxy_shortcut(service)
        if provider is not None:
            patches += rules.proxy_patches(solver, service, provider)
    local = rules.local_policy_services(solver)
    if local and rules.nodes_without_controller(solver):
        patches.append(fixes.traffic_policy_patch(local[0]))
    redirects = rules.redirects(solver)
    if redirects:
        patches += fixes.redirect_patches(solver, redirects)
    served = rules.served_classes(solver)
    if rules.unserved_classes(solver) and served:
        patches += fixes.ingress_class_patches(solver, served[0])
    return patches


def gateway_patches(solver: Solver) -> list[Patch]:
    """The patches for what the Gateway API rules find, in the order the checks run."""
    patches: list[Patch] = []
    mismatch = gateway_rules.api_mismatch(solver)
    if mismatch:
        patches += gateway_fixes.api_disabled_patches(solver, mismatch)
    for rejection in gateway_rules.rejections(solver):
        patches += gateway_fixes.rejection_patches(solver, rejection)
    for item in gateway_rules.unprogrammed(solver)[:1]:
        patches += gateway_fixes.unprogrammed_patches(item)
    redirects = gateway_rules.gateway_redirects(solver)
    if redirects:
        patches += gateway_fixes.redirect_patches(solver, redirects)
    return patches


def cluster_patches(cluster: Cluster) -> list[Patch]:
    """The patches for every pending HTTP-01 Challenge, each change once (several
    Challenges behind one Service need one annotation)."""
    seen: set[str] = set()
    out: list[Patch] = []
    for challenge in cluster.challenges:
        if not (challenge.http01 and challenge.pending):
            continue
        for patch in solver_patches(cluster.solver_for(challenge)):
            if patch.command not in seen:
                seen.add(patch.command)
                out.append(patch)
    return out


def render(cluster: Cluster) -> str:
    """The patches as a YAML stream (comments name the kubectl line), or one comment
    saying nothing was found."""
    patches = cluster_patches(cluster)
    if not patches:
        return "# acmelb: no change to suggest from these objects\n"
    return "---\n".join(p.document() for p in patches)
