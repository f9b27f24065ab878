"""Building fast, validating configurations, and tearing down whatever happens."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from acmelb.errors import LabError
from acmelb.lab import (
    Behaviour,
    Lab,
    Mode,
    Scenario,
    build,
    configs,
    down_all,
    netns,
    remove_orphan_namespaces,
)
from acmelb.lab.topology import leftovers_of_this_process

from .conftest import LabFactory

pytestmark = pytest.mark.lab

NGINX_BEHAVIOURS = [b for b in Behaviour if b is not Behaviour.NONE]


@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize("mode", list(Mode))
def test_haproxy_config_is_valid(tmp_path: Path, mode: Mode, ipv6: bool) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    config = tmp_path / "haproxy.cfg"
    config.write_text(configs.haproxy_config(Scenario(mode, ipv6=ipv6)))
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("mode", [Mode.HAPROXY_TCP, Mode.HAPROXY_TCP_PROXY])
@pytest.mark.parametrize("behaviour", NGINX_BEHAVIOURS)
def test_nginx_config_is_valid(tmp_path: Path, behaviour: Behaviour, mode: Mode) -> None:
    if shutil.which("nginx") is None or os.geteuid() != 0:
        pytest.skip("needs nginx and root")
    (tmp_path / "tmp").mkdir()
    config = tmp_path / "nginx.conf"
    config.write_text(configs.nginx_config(Scenario(mode, ipv6=True), behaviour, tmp_path))
    check = subprocess.run(
        ["nginx", "-t", "-e", str(tmp_path / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_building_takes_well_under_a_second(lab_scenario: LabFactory) -> None:
    # The busiest scenario without a CA: HAProxy, two nginx, two responders.
    timings = []
    for _ in range(2):
        started = time.monotonic()
        lab = lab_scenario("haproxy-tcp-proxy", shortcut=("b1",))
        timings.append(time.monotonic() - started)
        lab.down()
    assert min(timings) < 1.0, timings


def test_parallel_labs_do_not_collide(lab_scenario: LabFactory) -> None:
    from concurrent.futures import ThreadPoolExecutor

    modes = ("dnat", "firewall", "haproxy-http-intercept")
    with ThreadPoolExecutor(len(modes)) as pool:
        labs = list(pool.map(lab_scenario, modes))
    assert len({lab.id for lab in labs}) == len(modes)
    # Same addresses everywhere, yet each answers as its own mode.
    outcomes = [(lab.fetch("pub").outcome, lab.fetch("pub").status) for lab in labs]
    assert outcomes == [("response", 200), ("timeout", None), ("response", 200)]
    assert labs[0].fetch("pub").text != labs[2].fetch("pub").text


def test_a_failed_build_removes_what_it_built(
    lab_scenario: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = set(netns.lab_namespaces())
    monkeypatch.setattr(configs, "haproxy_config", lambda scenario: "global\n  no-such-thing\n")
    with pytest.raises(LabError, match=r"haproxy in alb[0-9a-f]{4}-lb exited at start"):
        lab_scenario("haproxy-tcp")
    assert set(netns.lab_namespaces()) <= before
    assert leftovers_of_this_process() == []


def test_processes_and_namespaces_are_recorded(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", backends=("responder", "not-found"))
    what = sorted((record.role, record.what) for record in lab.processes())
    assert what == [
        ("b1", "nginx"),
        ("b1", "responder"),
        ("b2", "nginx"),
        ("lb", "haproxy"),
        ("pub", "dns"),
    ]
    assert all(record.is_running() for record in lab.processes())
    assert all(len(name) <= 15 for name in lab.namespaces.values())
    assert set(lab.namespaces.values()) <= set(netns.existing())
    again = Lab.attach(lab.id)
    assert again.summary()["namespaces_present"] == sorted(lab.namespaces.values())
    assert not again.is_stale()


def _child_building_a_lab(tmp_path: Path, *, detached: bool) -> tuple[subprocess.Popen[str], str]:
    script = textwrap.dedent(f"""
        import sys, time
        from acmelb.lab import Scenario, build
        lab = build(Scenario("haproxy-tcp"), detached={detached})
        print(lab.id, flush=True)
        if not {detached}:
            time.sleep(60)
    """)
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert child.stdout is not None
    lab_id = child.stdout.readline().strip()
    assert lab_id, "the child did not build a lab"
    return child, lab_id


def _assert_gone(lab: Lab) -> None:
    assert netns.lab_namespaces(f"alb{lab.id}-") == []
    assert not any(record.is_running() for record in lab.processes())
    assert not lab.state_dir.exists()
    assert not list(netns.NETNS_ETC_DIR.glob(f"alb{lab.id}-*"))


def test_interrupted_owner_tears_its_lab_down(lab_available: None, tmp_path: Path) -> None:
    child, lab_id = _child_building_a_lab(tmp_path, detached=False)
    lab = Lab.attach(lab_id)
    assert all(record.is_running() for record in lab.processes())
    child.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt, then atexit
    child.wait(10)
    _assert_gone(lab)


def test_killed_owner_leaves_a_stale_lab_that_is_reaped(
    lab_available: None, tmp_path: Path
) -> None:
    child, lab_id = _child_building_a_lab(tmp_path, detached=False)
    lab = Lab.attach(lab_id)
    child.kill()  # no chance to clean up
    child.wait(10)
    try:
        assert lab.is_stale()
        assert all(record.is_running() for record in lab.processes())  # still up
        assert lab.fetch("pub").status == 200
        assert lab_id in down_all(only_stale=True)
        _assert_gone(lab)
    finally:
        lab.down()


def test_detached_lab_outlives_its_builder(lab_available: None, tmp_path: Path) -> None:
    child, lab_id = _child_building_a_lab(tmp_path, detached=True)
    assert child.wait(10) == 0
    lab = Lab.attach(lab_id)
    try:
        assert not lab.is_stale()
        assert lab.fetch("pub").status == 200
        assert lab_id not in down_all(only_stale=True)
    finally:
        lab.down()
    _assert_gone(lab)


def test_down_all_removes_only_acmelb_labs(lab_available: None, tmp_path: Path) -> None:
    """Labs, and lab-named namespaces nobody accounts for, go; everything else stays."""
    state_root = tmp_path / "state"
    labs = [build(Scenario("haproxy-tcp"), detached=True, state_root=state_root) for _ in range(2)]
    suffix = os.urandom(2).hex()
    orphan, decoy = f"alb{suffix}-pub", f"acmelbdecoy{suffix}"
    sleepers: list[subprocess.Popen[bytes]] = []
    try:
        for name in (orphan, decoy):
            netns.add(name)
            sleepers.append(subprocess.Popen([*netns.exec_prefix(name), "sleep", "60"]))
        sleepers.append(subprocess.Popen(["sleep", "60"]))  # an unrelated process
        time.sleep(0.1)

        assert sorted(down_all(state_root=state_root)) == sorted(lab.id for lab in labs)
        assert remove_orphan_namespaces(state_root=state_root, ids={suffix}) == [orphan]

        for lab in labs:
            _assert_gone(lab)
        assert orphan not in netns.existing()
        assert sleepers[0].wait(5) == -signal.SIGKILL  # it lived in the orphan namespace
        assert decoy in netns.existing()
        assert sleepers[1].poll() is None and sleepers[2].poll() is None
    finally:
        for lab in labs:
            lab.down()
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        netns.delete(orphan)
        netns.delete(decoy)


def test_scenario_rejects_bad_input() -> None:
    from acmelb.errors import UsageError

    with pytest.raises(UsageError, match="unknown lab mode"):
        Scenario.parse("nat")
    with pytest.raises(UsageError, match="unknown backend behaviour 'teapot'"):
        Scenario.parse("dnat:responder,teapot")
    with pytest.raises(UsageError, match="shortcut 'b3'"):
        Scenario("dnat", shortcut=("b3",))
    with pytest.raises(UsageError, match="base64url"):
        Scenario("dnat", token="a;b")
    with pytest.raises(UsageError, match="round-robin needs"):
        Scenario("round-robin", backends=("responder",))
    assert Scenario.parse("dnat:404,html").backends == (Behaviour.NOT_FOUND, Behaviour.HTML_PAGE)
