"""The fleet engine: many diagnoses in one asyncio event loop.

Each diagnosis is a coroutine: its DNS lookups and its local probes are awaited in
the loop (``resolution.lookup_async``, ``probe_async``), a remote vantage's probe
runs its command on a thread; the checks, which are plain functions over the
results, run in the loop between two awaits. At most ``concurrency`` diagnoses are
in flight, the next target is taken from the (possibly lazy) iterable only when one
finishes, and each report goes to ``on_report`` as soon as it is ready and is not
kept: a run over 100,000 names holds about ``concurrency`` reports at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar, overload

from acmelb.doctor import probe_async
from acmelb.doctor.checks import DEFAULT_RUNNER
from acmelb.doctor.checks.base import Context, Options, Target, VantageRun
from acmelb.doctor.codes import Stage
from acmelb.doctor.engine import (
    check_name,
    probe_budget,
    probe_jobs,
    probe_request,
    skip_lookup,
    vantage_run,
)
from acmelb.doctor.report import Report, report_of
from acmelb.doctor.resolution import CaaCache
from acmelb.doctor.vantage import Local, Vantage, VantageFailure

__all__ = ["DEFAULT_CONCURRENCY", "diagnose_async", "diagnose_stream"]

R = TypeVar("R")

DEFAULT_CONCURRENCY = 64
# open probe connections of one run: in all, and to one address (a fleet's names mostly
# share one LB address; a server under that many connections answers slower, not better)
MAX_OPEN = 256
MAX_OPEN_PER_ADDRESS = 64
# From this many names on, a run is split over worker processes (one per CPU, at most
# MAX_PROCESSES): below it, starting them costs more than they save.
PROCESS_THRESHOLD = 200
MAX_PROCESSES = 4
# A worker process's collector threshold (young objects pending; Python's default: 700).
GC_THRESHOLD = 20_000


async def diagnose_async(
    target: Target,
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    caa_cache: CaaCache | None = None,
    limits: probe_async.Limits | None = None,
) -> Report:
    """``diagnose.diagnose`` as a coroutine: the same stages, checks and report."""
    ctx = Context(target=target, options=options or Options(), cluster=cluster)
    check_name(ctx)
    for stage in DEFAULT_RUNNER.stages(ctx):
        if stage is Stage.DNS:
            await _lookup(ctx, caa_cache)
        elif stage is Stage.HTTP:
            ctx.runs = await _probe_all(ctx, vantages, limits or probe_async.Limits())
        DEFAULT_RUNNER.run_stage(ctx, stage)
    return report_of(ctx)


async def _lookup(ctx: Context, caa_cache: CaaCache | None) -> None:
    """DNS as the CA sees it, unless --resolve alone decides the addresses."""
    from acmelb.doctor.resolution import lookup_async

    if skip_lookup(ctx):
        return
    opts = ctx.options
    ctx.dns = await lookup_async(
        ctx.target.name, opts.dns_server, timeout=min(opts.timeout, 5.0), caa_cache=caa_cache
    )


async def _probe_all(
    ctx: Context, vantages: Sequence[Vantage], limits: probe_async.Limits
) -> list[VantageRun]:
    """Every vantage's probes at once."""
    jobs = probe_jobs(ctx, vantages)
    if len(jobs) == 1:  # a fleet's common case: awaited here, no task for it
        return [await _run_vantage(ctx, *jobs[0], limits)]
    return list(
        await asyncio.gather(
            *(_run_vantage(ctx, vantage, addresses, limits) for vantage, addresses in jobs)
        )
    )


async def _run_vantage(
    ctx: Context, vantage: Vantage, addresses: list[str] | None, limits: probe_async.Limits
) -> VantageRun:
    request = probe_request(ctx, vantage, addresses)
    result: dict[str, Any] | VantageFailure
    if isinstance(vantage, Local):
        result = await probe_async.run_request_async(request, limits)
    else:  # a command on another host: its process runs on a thread
        result = await asyncio.to_thread(vantage.run, request, probe_budget(ctx))
    return vantage_run(vantage, result)


@overload
def diagnose_stream(
    targets: Iterable[Target],
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_report: Callable[[int, Report], None],
    processes: int | None = None,
) -> None: ...


@overload
def diagnose_stream(
    targets: Iterable[Target],
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_report: Callable[[int, R], None],
    render: Callable[[Report], R],
    processes: int | None = None,
) -> None: ...


def diagnose_stream(
    targets: Iterable[Target],
    vantages: Sequence[Vantage],
    options: Options | None = None,
    *,
    cluster: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_report: Callable[[int, Any], None],
    render: Callable[[Report], Any] | None = None,
    processes: int | None = None,
) -> None:
    """Diagnose every target, ``concurrency`` at once; ``on_report(index, report)`` gets
    each report as it finishes, on this thread (index: the target's place in
    ``targets``). With ``render``, it gets ``render(report)`` instead, made where the
    report was made: in a worker process, the output's own work (JSON, text) is done
    there, in parallel, and only its result crosses to this process.

    One event loop on this thread; a fleet of ``PROCESS_THRESHOLD`` names or more is
    split over one worker process per CPU (``processes`` overrides), each with its own
    loop: the checks are Python work, and one interpreter runs them on one core."""
    concurrency = max(1, concurrency)
    count = len(targets) if isinstance(targets, Sized) else None
    workers = _processes(count, processes)
    made = render or _prepared
    if workers <= 1:
        _run(_stream(iter(targets), vantages, options, cluster, concurrency, on_report, made))
        return
    _preload()
    _stream_in_processes(
        list(targets), vantages, options, cluster, concurrency, on_report, made, workers
    )


def _prepared(report: Report) -> Report:
    """The report itself, its JSON built (in a worker: in parallel, not in the parent)."""
    report.prepare_json()
    return report


def _preload() -> None:
    """What every worker uses, imported once here before the fork rather than in each."""
    from acmelb.doctor import resolution

    resolution.preload()
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the engine's loop: uvloop's when it is installed and ACMELB_LOOP is not
    "asyncio" (the same asyncio API, in C)."""
    if os.environ.get("ACMELB_LOOP") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def _processes(count: int | None, wanted: int | None) -> int:
    if wanted is not None:
        return max(1, wanted)
    if count is None or count < PROCESS_THRESHOLD:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_PROCESSES))


def _stream_in_processes(
    targets: list[Target],
    vantages: Sequence[Vantage],
    options: Options | None,
    cluster: bool,
    concurrency: int,
    on_report: Callable[[int, Any], None],
    render: Callable[[Report], Any],
    workers: int,
) -> None:
    """Worker ``k`` takes every ``workers``-th target (slow names, often neighbours in a
    list, are spread out) and sends each report back as it finishes, its JSON already
    built; this process hands them to ``on_report``."""
    context = multiprocessing.get_context("fork")
    pipes: list[Connection] = []
    children: list[tuple[Any, Connection]] = []
    for k in range(workers):
        receiving, sending = context.Pipe(duplex=False)
        part = list(range(len(targets)))[k::workers]
        child = context.Process(
            target=_worker,
            daemon=True,
            args=(
                targets,
                part,
                vantages,
                options,
                cluster,
                concurrency // workers,
                render,
                sending,
            ),
        )
        pipes.append(receiving)
        children.append((child, sending))
    try:
        for child, sending in children:
            child.start()
            sending.close()  # the child's end: EOF here when the child is gone
        _receive(pipes, on_report)
    finally:
        for child, _sending in children:
            if child.is_alive():
                child.terminate()  # done, failed or interrupted: nothing goes on
            child.join(5)


def _receive(pipes: list[Connection], on_report: Callable[[int, Any], None]) -> None:
    open_pipes = list(pipes)
    while open_pipes:
        for pipe in multiprocessing.connection.wait(open_pipes):
            assert isinstance(pipe, Connection)
            try:
                index, item = pipe.recv()
            except EOFError:
                raise RuntimeError("a diagnosis worker process died") from None
            if index is None:  # this worker is done
                open_pipes.remove(pipe)
            elif index < 0:
                raise item if isinstance(item, BaseException) else RuntimeError(str(item))
            else:
                on_report(index, item)


def _worker(
    targets: list[Target],
    part: list[int],
    vantages: Sequence[Vantage],
    options: Options | None,
    cluster: bool,
    concurrency: int,
    render: Callable[[Report], Any],
    sending: Any,
) -> None:
    """A worker process: its share of the targets in its own loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us

    def send(index: int, rendered: Any) -> None:
        sending.send((part[index], rendered))

    # what the fork shared stays out of the collector's way (and unwritten, so shared)
    gc.freeze()
    # A diagnosis frees nearly all it makes by reference counting: at the default
    # threshold (700) the collector ran 120 times for 500 names, 5-8% of the worker's
    # CPU, and found little. It still runs, for the cycles, at 20,000 pending objects.
    gc.set_threshold(GC_THRESHOLD, 50, 50)
    try:
        mine = (targets[i] for i in part)
        _run(_stream(mine, vantages, options, cluster, max(1, concurrency), send, render))
        sending.send((None, None))
    except BaseException as exc:  # the parent raises it
        sending.send((-1, exc))


async def _stream(
    targets: Iterator[Target],
    vantages: Sequence[Vantage],
    options: Options | None,
    cluster: bool,
    concurrency: int,
    on_report: Callable[[int, Any], None],
    render: Callable[[Report], Any],
) -> None:
    caa_cache = CaaCache()  # parent names' CAA sets, shared by the run
    limits = probe_async.Limits(MAX_OPEN, MAX_OPEN_PER_ADDRESS)
    remote = sum(1 for vantage in vantages if vantage.remote)
    if remote:
        # a remote vantage's probe is a command waited for on a thread: as many threads as
        # may run at once, not the loop's default handful (min(32, CPUs + 4))
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(concurrency * remote, thread_name_prefix="acmelb-vantage")
        )
    numbered = enumerate(targets)
    running: dict[asyncio.Task[Report], int] = {}

    def start(batch: int) -> None:
        for index, target in itertools.islice(numbered, batch):
            task = asyncio.ensure_future(
                diagnose_async(
                    target, vantages, options, cluster=cluster, caa_cache=caa_cache, limits=limits
                )
            )
            running[task] = index

    start(concurrency)
    try:
        while running:
            done, _pending = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                index = running.pop(task)
                on_report(index, render(task.result()))
            start(concurrency - len(running))
    finally:
        for task in running:
            task.cancel()
