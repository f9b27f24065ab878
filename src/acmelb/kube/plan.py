"""What a diagnosis of a cluster's objects will do: its targets, from cert-manager's
Challenges, each carrying the objects around it for the KUBE stage's checks.

``acmelb diagnose --kube FILE`` (every object) and ``--challenges FILE`` (the Challenges
alone) make their plan here; ``read_objects`` is ``--no-probe``: the KUBE stage alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from acmelb.doctor.checks import DEFAULT_RUNNER, Stage
from acmelb.doctor.checks.base import Context, Options, Target
from acmelb.doctor.diagnose import Plan
from acmelb.doctor.engine import make_target
from acmelb.doctor.findings import Severity
from acmelb.doctor.report import FAIL, UNKNOWN, Report, report_of
from acmelb.doctor.vantage import ProbeSettings
from acmelb.errors import UsageError
from acmelb.kube.challenges import Challenge
from acmelb.kube.checks import KUBE_CHECKS
from acmelb.kube.objects import Cluster, Solver, kube_settings

__all__ = ["plan", "probe_settings", "read_objects", "targets_from_challenges"]

# Targets with Kubernetes facts are made here only: whoever has one has imported this
# module, and with it the checks that read them are in the doctor's runner.
DEFAULT_RUNNER.register(KUBE_CHECKS)


def targets_from_challenges(
    challenges: Sequence[Challenge],
    wanted_names: Iterable[str] = (),
    solver_of: Callable[[Challenge], Solver] | None = None,
) -> tuple[list[Target], list[str]]:
    """The pending HTTP-01 challenges (of the wanted names, if any) as targets, and one
    line for each challenge skipped and why. ``solver_of`` connects a Challenge to its
    objects (``Cluster.solver_for``); by default it stands alone."""
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
        target.facts = solver_of(ch) if solver_of is not None else Solver.alone(ch)
        targets.append(target)
    if not targets:
        infos.append("no pending HTTP-01 challenge in the list")
    return targets, infos


def plan(
    names: Sequence[str],
    *,
    token: str | None = None,
    key: str | None = None,
    thumbprint: str | None = None,
    challenges: Sequence[Challenge] | None = None,
    cluster: Cluster | None = None,
) -> Plan:
    """Targets from a cluster's objects (``--kube``) or cert-manager Challenges alone
    (``--challenges``); ``names``, when given, filter them."""
    if token or key or thumbprint:
        which = "--kube" if cluster is not None else "--challenges"
        raise UsageError(f"{which} brings its own tokens; drop --token/--key/--thumbprint")
    if cluster is not None:
        targets, infos = targets_from_challenges(cluster.challenges, names, cluster.solver_for)
        infos = [*cluster.notes, *infos]
    else:
        targets, infos = targets_from_challenges(challenges or [], names)
    return Plan(targets, infos, cluster=True)


def probe_settings(
    settings: ProbeSettings, targets: Sequence[Target], source: str
) -> tuple[ProbeSettings, list[str]]:
    """The settings with the inside vantage and the addresses read from the targets'
    objects added (the user's own --inside and --resolve win), and the lines that say what
    was added and the command to rerun it by hand (``source``: the objects' file)."""
    solvers = [t.facts for t in targets if isinstance(t.facts, Solver)]
    changed, derived = kube_settings(settings, solvers)
    return changed, [*derived.infos, f"to rerun by hand: {derived.command(source)}"]


def read_objects(target: Target, options: Options | None = None) -> Report:
    """Only the KUBE stage: what the cluster's objects say about the target, with no
    lookup and no probe (``acmelb diagnose --kube FILE --no-probe``). The CA's verdict is
    known only when the objects alone make it fail."""
    ctx = Context(target=target, options=options or Options(), cluster=True)
    DEFAULT_RUNNER.run_stage(ctx, Stage.KUBE)
    fatal = any(f.sev is Severity.FATAL for f in ctx.findings)
    return report_of(
        ctx, {"acme-ca": FAIL if fatal else UNKNOWN, "cert-manager-self-check": UNKNOWN}
    )
