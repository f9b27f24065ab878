"""The fleet engine: reports as they finish, a bounded number in flight, targets taken
lazily, worker processes that give the same reports, and failures that surface."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from acmelb.doctor import fleet
from acmelb.doctor.checks.base import Options, Target
from acmelb.doctor.diagnose import Report, diagnose_many, make_target
from acmelb.doctor.vantage import CommandPrefix, Local, Role
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server, answer, hang

Serve = Callable[..., Server]
TIMINGS = ("elapsed_ms", "connect_ms")


def options_for(names: list[str], address: str) -> Options:
    return Options(
        repeat=1,
        timeout=1.0,
        resolve={n: [address] for n in names},
        assume_public=["127.0.0.0/8"],
    )


def untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (0 if k in TIMINGS else untimed(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def test_each_report_once_with_its_index_and_few_targets_taken_ahead(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(40)]
    taken: list[int] = []
    seen: list[tuple[int, str]] = []

    def lazily() -> Iterator[Target]:
        for i, name in enumerate(names):
            taken.append(i)
            # never more than `concurrency` ahead of the reports handed out
            assert len(taken) - len(seen) <= 5
            yield make_target(name, KEYAUTH_TOKEN, KEYAUTH)

    def on_report(index: int, report: Report) -> None:
        seen.append((index, report.name))

    fleet.diagnose_stream(
        lazily(),
        [Local(Role.OUTSIDE)],
        options_for(names, s.address),
        concurrency=5,
        on_report=on_report,
    )
    assert sorted(seen) == list(enumerate(names))


def test_a_slow_name_does_not_hold_the_others(serve: Serve) -> None:
    fast = serve(answer(200, KEYAUTH))
    slow = serve(hang(2.0))
    names = ["slow.fleet.test"] + [f"n{i}.fleet.test" for i in range(10)]
    opts = options_for(names, fast.address)
    opts.resolve["slow.fleet.test"] = [slow.address]
    order: list[str] = []
    fleet.diagnose_stream(
        [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names],
        [Local(Role.OUTSIDE)],
        opts,
        concurrency=2,
        on_report=lambda _i, r: order.append(r.name),
    )
    assert order[-1] == "slow.fleet.test" and len(order) == len(names)


def test_worker_processes_give_the_same_reports(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(12)]
    targets = [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names]
    opts = options_for(names, s.address)
    one = diagnose_many(targets, [Local(Role.OUTSIDE)], opts, workers=4, processes=1)
    two = diagnose_many(targets, [Local(Role.OUTSIDE)], opts, workers=4, processes=2)
    assert [untimed(r.to_json()) for r in two] == [untimed(r.to_json()) for r in one]


@pytest.mark.parametrize("processes", [1, 2])
def test_a_bug_in_the_engine_surfaces(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    async def broken(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(fleet, "diagnose_async", broken)
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(4)]
    with pytest.raises(RuntimeError, match="simulated bug"):
        diagnose_many(
            [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names],
            [Local(Role.OUTSIDE)],
            options_for(names, s.address),
            processes=processes,
        )


def test_remote_vantage_probes_run_as_many_at_once_as_diagnoses(
    serve: Serve, tmp_path: Path
) -> None:
    """A command-prefix vantage waits on a thread per probe: the engine gives it as many
    threads as diagnoses in flight, not the loop's default handful (6 on 2 CPUs)."""
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(24)]
    running = tmp_path / "running"
    running.mkdir()
    counts = tmp_path / "counts"
    # each probe marks itself running, waits, records how many are running, then probes
    script = (
        f"touch {running}/$$; sleep 0.4; ls {running} | wc -l >> {counts}; "
        f'rm {running}/$$; PATH={Path(sys.executable).parent}:$PATH exec "$0" "$@"'
    )
    vantage = CommandPrefix(Role.INSIDE, f"sh -c '{script}'")
    opts = options_for(names, s.address)
    reports = diagnose_many(
        [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names],
        [vantage],
        opts,
        workers=24,
        processes=1,
    )
    assert all(r.runs and r.runs[0].usable for r in reports)
    assert max(int(line) for line in counts.read_text().split()) > 8


def test_render_runs_in_the_worker_that_made_the_report(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(8)]
    got: dict[int, tuple[int, str, bool]] = {}
    fleet.diagnose_stream(
        [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names],
        [Local(Role.OUTSIDE)],
        options_for(names, s.address),
        concurrency=4,
        on_report=got.__setitem__,
        render=lambda r: (os.getpid(), r.name, r.ok),
        processes=2,
    )
    assert [got[i][1:] for i in range(len(names))] == [(n, True) for n in names]
    # made in the workers: only what render returned crossed to this process
    assert os.getpid() not in {pid for pid, _name, _ok in got.values()}


def test_workers_collect_garbage_less_often(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    names = [f"n{i}.fleet.test" for i in range(4)]
    seen: list[int] = []
    fleet.diagnose_stream(
        [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names],
        [Local(Role.OUTSIDE)],
        options_for(names, s.address),
        on_report=lambda _i, threshold: seen.append(threshold),
        render=lambda _r: gc.get_threshold()[0],
        processes=2,
    )
    assert seen == [fleet.GC_THRESHOLD] * len(names)
    assert gc.get_threshold()[0] != fleet.GC_THRESHOLD  # this process keeps its own
