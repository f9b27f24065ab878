"""``diagnose(target, vantages, options) -> Report``: why HTTP-01 validation fails.

Stages run in order (``acmelb.doctor.checks.Stage``): the name, DNS as the CA sees
it, then probes from every vantage (concurrently) judged by the HTTP checks,
then the comparisons across vantages.  A fatal finding in the NAME or DNS
stage stops before any probe.  The report carries two verdicts: would a CA
validating like Let's Encrypt accept it (``acme-ca``), and would
cert-manager's self-check pass from the inside vantages.

Nothing here prints.  ``diagnose_challenge`` is the entry point for issuance.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acmelb.doctor.checks import DEFAULT_RUNNER, Stage
from acmelb.doctor.checks.base import (
    Attempt,
    Context,
    Options,
    Target,
    VantageRun,
    ca_attempts,
    cm_verdict,
    corroborated,
    go_path,
    le_verdict,
)
from acmelb.doctor.findings import Code, Finding, Severity, sort_findings
from acmelb.doctor.resolution import CaaCache, DnsResult, lookup
from acmelb.doctor.rootcause import RootCause, attribute
from acmelb.doctor.vantage import (
    ProbeResult,
    ProbeSettings,
    Role,
    Vantage,
    VantageFailure,
    build_vantages,
)
from acmelb.errors import InvalidNameError, UsageError
from acmelb.names import normalize_name

if TYPE_CHECKING:
    from acmelb.kube.challenges import Challenge
    from acmelb.kube.objects import Cluster

SCHEMA = "acmelb.diagnosis/v1"
PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
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
    "read_objects",
    "targets_from_names",
]


@dataclass
class Report:
    target: Target
    findings: list[Finding]
    verdicts: dict[str, str]
    runs: list[VantageRun] = field(default_factory=list)
    root_cause: RootCause | None = None
    # to_json() made ahead of time by a fleet worker process (see prepare_json)
    _doc: dict[str, Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def ok(self) -> bool:
        return not any(f.sev.failing for f in self.findings)

    def prepare_json(self) -> None:
        """Build the JSON document now (a worker process does, in parallel); the next
        ``to_json()`` hands it over instead of building it in the parent."""
        self._doc = self._build_json()

    def to_json(self) -> dict[str, Any]:
        doc, self._doc = self._doc, None
        return doc if doc is not None else self._build_json()

    def _build_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.target.name,
            "url": self.target.url,
            "ok": self.ok,
            "root_cause": self.root_cause.to_json() if self.root_cause else None,
            "verdicts": dict(self.verdicts),
            "findings": [f.to_json() for f in self.findings],
            "probes": probes_json(self.runs),
            "token": self.target.token,
            "random_token": self.target.random_token,
        }
        if self.target.challenge:
            data["challenge"] = {"name": self.target.challenge, "reason": self.target.reason}
        return data


def probes_json(runs: Sequence[VantageRun]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for run in runs:
        for a in run.attempts:
            f = a.final
            out.append(
                {
                    "vantage": run.label,
                    "address": a.address,
                    "attempt": a.number,
                    "target": a.target,
                    "proxy_protocol": a.proxy,
                    "outcome": f.outcome,
                    "status": f.status,
                    "error": f.error or None,
                    "body_prefix": f.body[:200] if f.outcome == "response" else None,
                    "body_length": f.raw.get("body_length"),
                    "elapsed_ms": int(f.raw.get("elapsed_ms") or 0),
                    "server": f.header("Server"),
                    "redirects": [
                        {"url": h.url, "status": h.status, "location": h.raw.get("redirect_to")}
                        for h in a.redirects
                    ],
                    "runner": run.runner,
                }
            )
    return out


def make_target(
    name: str,
    token: str | None = None,
    key_authorization: str | None = None,
    thumbprint: str | None = None,
) -> Target:
    """Build a Target; with no token a random one (reachability and routing only).

    A thumbprint without a token checks a stateless responder: a random token
    must come back as ``token.thumbprint``.
    """
    random = token is None and thumbprint is None
    tok = token or secrets.token_urlsafe(32)
    key = key_authorization
    if key is None and thumbprint is not None:
        key = f"{tok}.{thumbprint}"
    return Target(name=name, token=tok, key_authorization=key, random_token=random)


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
    challenges: Sequence[Challenge] | None = None,
    cluster: Cluster | None = None,
) -> Plan:
    """Targets from a cluster's objects (``--kube``) or cert-manager Challenges alone
    (``names`` then filters them), or from names."""
    if challenges is None and cluster is None:
        return Plan(targets_from_names(names, token, key, thumbprint), [], settings.cluster)
    if token or key or thumbprint:
        which = "--kube" if cluster is not None else "--challenges"
        raise UsageError(f"{which} brings its own tokens; drop --token/--key/--thumbprint")
    from acmelb.kube.challenges import targets_from_challenges

    if cluster is not None:
        targets, infos = targets_from_challenges(cluster.challenges, names, cluster.solver_for)
    else:
        targets, infos = targets_from_challenges(challenges or [], names)
    return Plan(targets, infos, cluster=True)


def probe_request(ctx: Context, vantage: Vantage, addresses: list[str] | None) -> dict[str, Any]:
    t = ctx.options.timeout
    return {
        "name": ctx.target.name,
        "url": ctx.target.url,
        "repeat": ctx.options.repeat,
        "addresses": addresses,
        "resolve": ctx.options.resolve if not vantage.remote else {},
        "proxy_protocol": "on-failure",
        "local_probe": vantage.role is Role.INSIDE,
        "options": {
            "connect_timeout": t,
            "read_timeout": t,
            "total_timeout": 2 * t,
            "body_cap": 1024 * 1024,
        },
    }


def probe_budget(ctx: Context) -> float:
    """How long a vantage's probe may take in all (its command included)."""
    return 20 + (ctx.options.repeat + 2) * 4 * 2 * ctx.options.timeout


def vantage_run(vantage: Vantage, result: ProbeResult | VantageFailure) -> VantageRun:
    """A vantage's probe result (or why it had none) as the checks read it."""
    if isinstance(result, VantageFailure):
        return VantageRun(
            vantage.label,
            vantage.role.value,
            vantage.remote,
            None,
            failure=result.reason,
            failure_details=result.details,
        )
    return VantageRun(vantage.label, vantage.role.value, vantage.remote, result)


def _run_vantage(ctx: Context, vantage: Vantage, addresses: list[str] | None) -> VantageRun:
    request = probe_request(ctx, vantage, addresses)
    return vantage_run(vantage, vantage.run(request, probe_budget(ctx)))


def _local_addresses(ctx: Context) -> list[str] | None:
    """Addresses for this process's probes: --resolve first, else the CA-like DNS lookup."""
    override = ctx.options.resolve.get(ctx.target.name)
    if override:
        return list(override)
    if ctx.dns is not None:
        return ctx.dns.addresses
    return None


def verdicts(ctx: Context) -> dict[str, str]:
    name_fatal = ctx.name_error is not None
    fatal = any(f.sev is Severity.FATAL for f in ctx.findings)
    return {
        "acme-ca": FAIL if fatal else _verdict(ctx, ctx.outside, ca=True),
        # a fatal DNS finding stopped the probes: the inside was never asked
        "cert-manager-self-check": FAIL
        if name_fatal
        else (UNKNOWN if fatal else _verdict(ctx, ctx.inside, ca=False)),
    }


def _verdict(ctx: Context, runs: list[VantageRun], ca: bool) -> str:
    if not runs:
        return UNKNOWN
    if ca and any(f.code is Code.DNS_RESERVED_ADDRESS and f.sev.failing for f in ctx.findings):
        return FAIL
    states = [_run_verdict(ctx, run, ca) for run in runs]
    if ca and len(states) > 1:
        return _quorum(states)
    if FAIL in states:
        return FAIL
    return UNKNOWN if UNKNOWN in states else PASS


def _quorum(states: list[str]) -> str:
    """Several outside vantages are the CA's perspectives: the first is the primary."""
    remote = [s != FAIL for s in states[1:]]
    if not corroborated(states[0] != FAIL, remote):
        return FAIL
    return UNKNOWN if UNKNOWN in states else PASS


def _run_verdict(ctx: Context, run: VantageRun, ca: bool) -> str:
    """One vantage's verdict: every attempt the validator would make must pass."""
    numbers = sorted({a.number for a in run.public_attempts})
    if not numbers:
        return FAIL  # resolved to nothing there
    if ca:
        chosen: list[Attempt] = ca_attempts(run.attempts)
    else:
        chosen = [a for a in (go_path(run.attempts, n) for n in numbers) if a is not None]
    results: list[bool] = []
    unknown = False
    for a in chosen:
        v = le_verdict(a, ctx.target, ctx.options) if ca else cm_verdict(a, ctx.target)
        if ctx.target.key_authorization is None and v.ok:
            unknown = True  # reachable, but content cannot be judged without the key
        elif (
            ctx.target.random_token
            and v.code is Code.LB_INTERCEPTS_CHALLENGE
            and not ctx.has(Code.LB_INTERCEPTS_CHALLENGE)
        ):
            unknown = True  # the backend's own stateless responder: needs our thumbprint
        else:
            results.append(v.ok)
    if results and not all(results):
        return FAIL
    return UNKNOWN if unknown or not results else PASS


def check_name(ctx: Context) -> None:
    """Normalise the target's name, or keep why it is invalid (the NAME stage reports it)."""
    try:
        ctx.target.name = normalize_name(ctx.target.name)
    except InvalidNameError as exc:
        ctx.name_error = str(exc)


def _lookup(ctx: Context, caa_cache: CaaCache | None) -> None:
    """DNS as the CA sees it, unless --resolve alone decides the addresses."""
    opts, name = ctx.options, ctx.target.name
    if name in opts.resolve and opts.dns_server is None:
        return
    ctx.dns = lookup(name, opts.dns_server, timeout=min(opts.timeout, 5.0), caa_cache=caa_cache)


def probe_jobs(ctx: Context, vantages: Sequence[Vantage]) -> list[tuple[Vantage, list[str] | None]]:
    """Each vantage with the addresses it probes (None: it resolves the name itself)."""
    local_addrs = _local_addresses(ctx)
    # this process standing inside resolves like the inside does (the system's
    # resolver), unless --resolve says otherwise; outside, like the CA
    return [(v, None if v.remote or v.role is Role.INSIDE else local_addrs) for v in vantages]


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


def report_of(ctx: Context, judged: dict[str, str] | None = None) -> Report:
    """The verdicts from every finding as found (unless given), then the findings with
    the consequences of the root cause folded."""
    judged = judged if judged is not None else verdicts(ctx)
    findings, cause = attribute(sort_findings(ctx.findings))
    return Report(
        target=ctx.target,
        findings=sort_findings(findings),
        verdicts=judged,
        runs=ctx.runs,
        root_cause=cause,
    )


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
    from acmelb.doctor.fleet import diagnose_stream

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
