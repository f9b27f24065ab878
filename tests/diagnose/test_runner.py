"""The check runner: order by declared dependencies, isolation of a failing check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from acmelb.doctor.checks import ALL_CHECKS, Runner, check_name, ordered
from acmelb.doctor.checks.answers import Content
from acmelb.doctor.checks.base import Context, Options
from acmelb.doctor.checks.compare import InsideOnly, NatLoopback, ProxyProtocol
from acmelb.doctor.checks.dns import Caa, DnsAddresses
from acmelb.doctor.codes import Code, Stage
from acmelb.doctor.diagnose import diagnose_many, make_target
from acmelb.doctor.findings import Finding
from acmelb.doctor.vantage import Local, Role
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server, answer

Serve = Callable[..., Server]


@dataclass
class Fake:
    """A check that only declares: stage and dependencies."""

    stage: Stage
    after: tuple[type, ...] = ()
    codes: tuple[Code, ...] = (Code.WRONG_CONTENT,)

    def applies(self, ctx: Context) -> bool:
        return True

    def run(self, ctx: Context) -> list[Finding]:
        return []


def fake(name: str, stage: Stage = Stage.HTTP, after: tuple[type, ...] = ()) -> Fake:
    """An instance of a fresh class called ``name`` (the runner names checks by class)."""
    cls = type(name, (Fake,), {})
    made: Fake = cls(stage, after)
    return made


def test_the_registry_runs_stages_in_order_and_dependencies_first() -> None:
    order = [type(c) for c in ordered(ALL_CHECKS)]
    assert [c.stage for c in ordered(ALL_CHECKS)] == sorted(c.stage for c in ALL_CHECKS)
    assert order.index(DnsAddresses) < order.index(Caa)
    assert order.index(NatLoopback) < order.index(InsideOnly)
    assert order.index(ProxyProtocol) < order.index(InsideOnly)


def test_dependencies_decide_the_order_not_the_position() -> None:
    first = fake("First")
    second = fake("Second", after=(type(first),))
    late = fake("Late", Stage.COMPARE)
    early = fake("Early", Stage.NAME)
    got = [check_name(c) for c in ordered([late, second, first, early])]
    assert got == ["Early", "First", "Second", "Late"]


def test_a_cycle_is_rejected() -> None:
    a = fake("A")
    b = fake("B", after=(type(a),))
    a.after = (type(b),)
    with pytest.raises(ValueError, match="cycle among: A, B"):
        ordered([a, b])


def test_an_unknown_dependency_is_rejected() -> None:
    with pytest.raises(ValueError, match="runs after Content, which is not registered"):
        Runner([fake("Lonely", after=(Content,))])


def test_a_dependency_on_a_later_stage_is_rejected() -> None:
    later = fake("Later", Stage.COMPARE)
    with pytest.raises(ValueError, match="belongs to a later stage"):
        ordered([fake("Early", Stage.DNS, after=(type(later),)), later])


def test_a_broken_check_does_not_end_a_fleet_run(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = serve(answer(200, KEYAUTH))
    content = next(c for c in ALL_CHECKS if isinstance(c, Content))

    def broken(ctx: Context) -> list[Finding]:
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(content, "run", broken)
    names = [f"n{i}.runner.test" for i in range(6)]
    options = Options(
        repeat=1,
        timeout=2.0,
        resolve={n: [s.address] for n in names},
        assume_public=["127.0.0.0/8"],
    )
    targets = [make_target(n, KEYAUTH_TOKEN, KEYAUTH) for n in names]
    # in one event loop, several at once; then in two worker processes (forked: they
    # inherit the broken check), as a large fleet runs
    reports = diagnose_many(targets, [Local(Role.OUTSIDE)], options, workers=3)
    assert [r.name for r in reports] == names
    reports += diagnose_many(targets, [Local(Role.OUTSIDE)], options, workers=4, processes=2)
    assert [r.name for r in reports] == names * 2
    for r in reports:
        assert [f.code for f in r.findings] == [Code.CHECK_FAILED]
        assert r.findings[0].evidence[0].startswith("RuntimeError: deliberately broken at ")
        assert r.ok and r.verdicts["acme-ca"] == "pass"
