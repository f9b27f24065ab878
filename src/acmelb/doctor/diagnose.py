"""``diagnose(target, vantages, options) -> Report``: why HTTP-01 validation fails.

Stages run in order (``acmelb.doctor.checks.Stage``): the name, DNS as the CA sees
it, then probes from every vantage (concurrently) judged by the HTTP checks,
then the comparisons across vantages.  A fatal finding in the NAME or DNS
stage stops before any probe.  The report carries two verdicts: would a CA
validating like Let's Encrypt accept it (``acme-ca``), and would
cert-manager's self-check pass from the inside vantages (``acmelb.doctor.report``).

This is the blocking driver (probes on threads); ``acmelb.doctor.fleet`` is the asyncio
one, which ``diagnose_many`` uses for several names; both are made of the steps in
``acmelb.doctor.engine``. Nothing here prints.  ``diagnose_challenge`` is the entry
point for issuance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from acmelb.doctor.checks import DEFAULT_RUNNER, Stage
from acmelb.doctor.checks.base import Context, Options, Target, VantageRun
from acmelb.doctor.engine import (
    check_name,
    make_target,
    probe_budget,
    probe_jobs,
    probe_request,
    skip_lookup,
    vantage_run,
)
from acmelb.doctor.fleet import diagnose_stream
from acmelb.doctor.report import SCHEMA, Report, report_of
from acmelb.doctor.resolution import CaaCache, DnsResult, lookup
from acmelb.doctor.vantage import ProbeSettings, Vantage, build_vantages
from acmelb.errors import UsageError

# Diagnoses in flight at once with several names. Broken names wait out timeouts (a hung
# backend: read timeout, then the PROXY retry), so the bound is generous; in the event
# loop a waiting diagnosis costs a coroutine, not a thread.
DEFAULT_WORKERS = 64

__all__ = [
    "SCHEMA",
    "Options",
    "Plan",
    "Report",
    "Target",
    "analyse",
    "diagnose",
    "diagnose_challenge",
    "diagnose_many",
    "make_target",
    "names_from_text",
    "plan",
    "targets_from_names",
]


def names_from_text(text: str) -> list[str]:
    """Names one per line; blank lines and ``#`` comments skipped."""
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def targets_from_names(
    names: Sequence[str],
    token: str | None = None,
    key: str | None = None,
    thumbprint: str | None = None,
) -> list[Target]:
    """One target per name, all with the same token and key (or a random token)."""
    if not names:
        raise UsageError("give a NAME, --from-file or --challenges")
    if key and not token:
        raise UsageError("--key needs --token")
    if key and token and not key.startswith(token + "."):
        raise UsageError("--key must be TOKEN.THUMBPRINT for the --token given")
    return [make_target(n, token, key, thumbprint) for n in names]


@dataclass
class Plan:
    """What a diagnose run will do: its targets, lines to tell the user first, and whether
    the cluster's remedies apply (inside vantages in Kubernetes, or Challenges)."""

    targets: list[Target]
    infos: list[str]
    cluster: bool


def plan(
    settings: ProbeSettings,
    names: Sequence[str],
    *,
    token: str | None = None,
    key: str | None = None,
    thumbprint: str | None = None,
) -> Plan:
    """Targets from names (``acmelb.kube.plan`` makes them from a cluster's objects)."""
    return Plan(targets_from_names(names, token, key, thumbprint), [], settings.cluster)


def _run_vantage(ctx: Context, vantage: Vantage, addresses: list[str] | None) -> VantageRun:
    request = probe_request(ctx, vantage, addresses)
    return vantage_run(vantage, vantage.run(request, probe_budget(ctx)))


def _lookup(ctx: Context, caa_cache: CaaCache | None) -> None:
    """DNS as the CA sees it, unless --resolve alone decides the addresses."""
    if skip_lookup(ctx):
        return
    opts = ctx.options
    ctx.dns = lookup(
        ctx.target.name, opts.dns_server, timeout=min(opts.timeout, 5.0), caa_cache=caa_cache
    )


def _probe_all(ctx: Context, vantages: Sequence[Vantage]) -> list[VantageRun]:
    """Every vantage's probes, concurrently."""
    jobs = probe_jobs(ctx, vantages)
    if len(jobs) == 1:  # the common case on a fleet: no thread for one vantage
        return [_run_vantage(ctx, *jobs[0])]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(_run_vantage, ctx, v, addrs) for v, addrs in jobs]
        return [f.result() for f in futures]


def diagnose(
    target: Target,
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    caa_cache: CaaCache | None = None,
) -> Report:
    """Diagnose one target from the given vantages (at least one).

    ``caa_cache`` (``diagnose_many`` passes one per run) shares the CAA sets of parent
    names between the targets of a run."""
    opts = options or Options()
    ctx = Context(target=target, options=opts, cluster=cluster)
    check_name(ctx)

    def measure(ctx: Context, stage: Stage) -> None:
        if stage is Stage.DNS:
            _lookup(ctx, caa_cache)
        elif stage is Stage.HTTP:
            ctx.runs = _probe_all(ctx, vantages)

    DEFAULT_RUNNER.run(ctx, measure)
    return report_of(ctx)


def analyse(
    target: Target,
    runs: Sequence[VantageRun],
    options: Options | None = None,
    *,
    dns: DnsResult | None = None,
    cluster: bool = False,
) -> Report:
    """Run every stage on results already measured (recorded probes, a DNS result).

    No network: this is how checks are tested on recorded probe results, and how a
    caller that probed by other means gets the same findings and verdicts.
    """
    ctx = Context(target=target, options=options or Options(), cluster=cluster, dns=dns)
    check_name(ctx)

    def given(ctx: Context, stage: Stage) -> None:
        if stage is Stage.HTTP:
            ctx.runs = list(runs)

    DEFAULT_RUNNER.run(ctx, given)
    return report_of(ctx)


def diagnose_many(
    targets: Sequence[Target],
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    workers: int = DEFAULT_WORKERS,
    processes: int | None = None,
    on_done: Callable[[Report], None] | None = None,
) -> list[Report]:
    """Diagnose several targets, ``workers`` at once (``acmelb.doctor.fleet``: event loops,
    in worker processes for a fleet; ``processes`` overrides how many); the reports
    in the order given. ``on_done`` gets each report as it finishes (to show
    progress). A long run that need not keep its reports streams them with
    ``fleet.diagnose_stream`` instead."""
    reports: list[Report | None] = [None] * len(targets)

    def keep(index: int, report: Report) -> None:
        reports[index] = report
        if on_done is not None:
            on_done(report)

    diagnose_stream(
        targets,
        vantages,
        options,
        cluster=cluster,
        concurrency=workers,
        on_report=keep,
        processes=processes,
    )
    return [r for r in reports if r is not None]


def diagnose_challenge(
    name: str,
    token: str,
    key_authorization: str,
    settings: ProbeSettings | None = None,
) -> Report:
    """For issuance: diagnose one pending HTTP-01 challenge (no ACME client imported)."""
    settings = settings or ProbeSettings()
    target = make_target(name, token, key_authorization)
    return diagnose(target, build_vantages(settings), settings.options(), cluster=settings.cluster)
