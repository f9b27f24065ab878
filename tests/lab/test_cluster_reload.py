"""Reload on SIGHUP in the lab (issue 24): three agents behind the LB; a certificate
added to b1's file is ordered once and installed on every member without a restart; a
broken file is refused and the running configuration keeps working; a client polling
b1's port 80 throughout sees every request answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from acmelb.lab import Lab, Scenario, build
from tests.lab.cluster_agents import (
    NAME,
    agent_argv,
    fullchain,
    log,
    status,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]
ROLES = ("b1", "b2", "b3")
ADDED = "added.acmelb.test"
POLLER = """
import sys, time, urllib.error, urllib.request
until, answered, failed = float(sys.argv[1]), 0, []
while time.time() < until:
    try:
        urllib.request.urlopen("http://127.0.0.1/.well-known/acme-challenge/poll", timeout=2)
        answered += 1
    except urllib.error.HTTPError:
        answered += 1  # an HTTP answer (404: no such token) is an answer
    except OSError as exc:
        failed.append(type(exc).__name__)
    time.sleep(0.02)
print(answered, len(failed), " ".join(failed[:5]))
"""


def default_hook(lab: Lab, role: str) -> str:
    return f"deploy_hook = {json.dumps(lab.deploy_hook(role))}"


def test_sighup_adds_a_certificate_everywhere_and_refuses_a_broken_file() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        records = {}
        for role in ROLES:  # the default hook deploys what any member adds (docs/cluster.md)
            path = write_config(lab, role, check_interval=1.0, extra=default_hook(lab, role))
            records[role] = lab.start_agent(role, agent_argv(lab, path))
        wait_for(lambda: all(fullchain(lab, r) for r in ROLES), 90, "the first version everywhere")
        wait_for(lambda: status(lab)[1].get("converged"), 30, "converged")
        poller = subprocess.Popen(
            [*lab.exec_prefix("b1"), sys.executable, "-c", POLLER, str(time.time() + 40)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            write_config(
                lab, "b1", names=(NAME, ADDED), check_interval=1.0, extra=default_hook(lab, "b1")
            )
            os.kill(records["b1"].pid, signal.SIGHUP)
            try:
                wait_for(
                    lambda: all(fullchain(lab, role, ADDED) for role in ROLES),
                    90,
                    "the added certificate on every member",
                )
            except AssertionError as exc:
                said = {r: (str(lab.agent_log(r)), log(lab, r)[-3000:]) for r in ROLES}
                raise AssertionError(f"{exc}\n{said}\n{status(lab)}") from None
            assert "configuration reloaded: 2 certificate(s), 1 added" in log(lab, "b1")
            config = lab.agent_state_dir("b1") / "agent.toml"
            config.write_text(config.read_text().replace("check_interval = 1.0", "check_int"))
            os.kill(records["b1"].pid, signal.SIGHUP)
            wait_for(lambda: "reload refused" in log(lab, "b1"), 15, "the refusal")
            output = poller.communicate(timeout=60)[0]
        finally:
            if poller.poll() is None:
                poller.kill()
                poller.wait()
        assert all(records[role].is_running() for role in ROLES)
        code, doc = status(lab)
        assert code == 0 and doc["converged"] is True, json.dumps(doc, indent=1)[-3000:]
        assert len(doc["members"]) == 3  # type: ignore[arg-type]
        assert lab.pebble_orders() == 2  # one order per certificate for the whole cluster
        answered, failures = output.split()[:2]
        assert int(answered) > 200 and int(failures) == 0, output
        refused = [line for line in log(lab, "b1").splitlines() if "reload refused" in line]
        assert len(refused) == 1 and "agent.toml" in refused[0] and "ERROR" in refused[0]
        assert "Traceback" not in log(lab, "b1")
