"""Fixtures for tests on the load-balancer lab (real namespaces, HAProxy, nginx, iptables).

Put lab tests under ``tests/lab/`` and ask for ``lab_scenario``::

    @pytest.mark.lab
    def test_hairpin(lab_scenario):
        lab = lab_scenario("dnat", backends=("responder", "responder"))
        assert lab.fetch("b1").outcome == "timeout"

Every lab a test builds is torn down after it, pass or fail. Labs (and etcd
labs) left by a killed earlier run (their owner process is gone) are removed at
session start, and the session fails if this run leaves any namespace or
process behind.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from acmelb.lab import Lab, Scenario, build, down_all, etcd
from acmelb.lab.topology import down_labs_of_this_process, leftovers_of_this_process

REQUIRED_TOOLS = ("ip", "iptables-restore", "haproxy", "nginx", "curl")


def lab_unavailable_reason() -> str | None:
    """Why the lab cannot run here, or None."""
    import os

    if os.geteuid() != 0:
        return "the lab needs root (network namespaces)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"the lab needs {', '.join(missing)} (./dev setup installs them)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()}"
    return None


LabFactory = Callable[..., Lab]


@pytest.fixture(scope="session")
def lab_available() -> None:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    down_all(only_stale=True)  # labs of an earlier run that was killed
    etcd.down_stale()  # and its etcd clusters (a cluster lab's goes with its lab)


@pytest.fixture
def lab_scenario(lab_available: None) -> Iterator[LabFactory]:
    """Build labs: ``lab_scenario(mode, backends=(...), shortcut=("b1",), ca=True, ...)``.

    Arguments are those of ``acmelb.lab.Scenario``; behaviours and modes may be
    given as strings. Returns the running ``Lab``.
    """
    labs: list[Lab] = []

    def make(
        mode: str, backends: Sequence[str] = ("responder", "responder"), **options: Any
    ) -> Lab:
        lab = build(Scenario(mode, backends=tuple(backends), **options))  # type: ignore[arg-type]
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any lab built in it left a namespace, process or file behind.

    Then remove the leftovers, so that one leaking test does not leak into the next run.
    """
    problems = leftovers_of_this_process() + etcd.leftovers_of_this_process()
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "lab leftovers (now removed)", red=True)
            for problem in problems:
                reporter.write_line(problem)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        down_labs_of_this_process()
        etcd.down_clusters_of_this_process()
