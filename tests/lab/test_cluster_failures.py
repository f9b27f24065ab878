"""The cluster under failure, on the lab (issue 20): the back-off that protects the CA
account, counted at Pebble; every certificate deployed; a failing deploy hook is health.

Three agents in three backends behind a round-robin TCP HAProxy, a 3-member etcd, Pebble
on the public side. A name outside the lab's zone is one the CA cannot validate (its DNS
says NXDOMAIN): with the self-check off, each attempt is an order and a failed validation
at Pebble; with the strict self-check, each attempt is refused before any answer. The
schedule is the documented one scaled down (``retry_schedule``) so that a run of a minute
shows its first two steps; tests/cluster/test_backoff.py holds the default schedule.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acmelb.lab import Lab, Scenario, build
from tests.lab.cluster_agents import (
    NAME,
    agent_argv,
    fullchain,
    log,
    status,
    store_url,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(400)]
ROLES = ("b1", "b2", "b3")
FIRST_WAIT = 30.0  # the scaled schedule: 30 s after the first failure, 300 s after the second
SCHEDULE = f"retry_schedule = [{FIRST_WAIT:.0f}, {10 * FIRST_WAIT:.0f}]"
UNVALIDATABLE = "nowhere.acmelb.example"  # outside the lab's zone: NXDOMAIN for the CA
REFUSED = "refused.acmelb.example"  # the same, refused by the strict self-check


def start_agents(lab: Lab, tables: str, extra: str = SCHEDULE) -> None:
    """Every role's agent with the lab's defaults, ``extra`` at the top and ``tables``
    (``[[certificate]]`` TOML) as its certificates."""
    for role in ROLES:
        path = write_config(lab, role, names=(), extra=extra)
        path.write_text(path.read_text() + tables)
        lab.start_agent(role, agent_argv(lab, path))


def cluster_cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """``acmelb cluster ARGS --store ...`` from b1."""
    argv = [sys.executable, "-m", "acmelb", "cluster", *args, "--store", store_url(lab)]
    return lab.run("b1", argv, timeout=60)


def certificate(name: str, *, self_check: str | None = None, hook: str | None = None) -> str:
    text = f"[[certificate]]\nnames = [{json.dumps(name)}]\n"
    if hook is not None:
        text += f"deploy_hook = {json.dumps(hook)}\n"
    if self_check is not None:
        text += f'[certificate.self_check]\nmode = "{self_check}"\n'
    return text


def logs(lab: Lab) -> str:
    return "".join(log(lab, role) for role in ROLES)


def count(lab: Lab, pattern: str) -> int:
    return len(re.findall(pattern, logs(lab)))


def backoff_of(lab: Lab, name: str) -> dict[str, object]:
    _code, doc = status(lab)
    for cert in doc.get("certificates", []):  # type: ignore[attr-defined]
        if cert["name"] == name:
            return dict(cert["backoff"] or {})
    raise AssertionError(f"{name} not in cluster status: {doc}")


def test_failed_validations_and_refusals_back_off_for_the_whole_cluster() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        start_agents(lab, certificate(UNVALIDATABLE, self_check="off") + certificate(REFUSED))
        started = time.monotonic()
        wait_for(lambda: count(lab, rf"renewal of {UNVALIDATABLE} failed") >= 1, 60, "a try")
        wait_for(lambda: count(lab, rf"renewal of {REFUSED} failed") >= 1, 60, "a refusal")
        # Let the three agents run past the first wait: each certificate gets exactly one
        # more attempt (30 s +- 10%), then waits 300 s. Before the back-off was shared,
        # three agents made 43 orders and 43 failed validations in 30 s.
        time.sleep(max(0.0, started + 2 * FIRST_WAIT + 10 - time.monotonic()))
        tries = count(lab, rf"renewal of {UNVALIDATABLE} failed")
        refusals = count(lab, rf"renewal of {REFUSED} failed")
        assert tries == 2, logs(lab)[-3000:]
        assert refusals == 2, logs(lab)[-3000:]
        # At Pebble: two orders for the name it cannot validate, one for the refused one
        # (the pending order is resumed after the back-off, not ordered again).
        assert lab.pebble_orders() == 3, lab.pebble_log.read_text()[-3000:]
        assert lab.pebble_counts().failed_validations == 2
        assert count(lab, rf"{REFUSED}: resuming the order") == 1
        # cluster status shows the back-off: failures in a row, the next attempt, the error
        tried = backoff_of(lab, UNVALIDATABLE)
        assert tried["failures"] == 2 and tried["kind"] == "validation-failed"
        assert float(tried["next_attempt"]) > time.time() + 200  # type: ignore[arg-type]
        assert str(tried["last_error"]).startswith(f"validation failed: {UNVALIDATABLE}")
        refused = backoff_of(lab, REFUSED)
        assert refused["failures"] == 2 and refused["kind"] == "self-check-refused"
        # An operator who fixed the cause cuts the back-off short: one more attempt now.
        proc = cluster_cli(lab, "renew", REFUSED, "--now")
        assert proc.returncode == 0 and "renewal requested" in proc.stdout, proc.stderr
        wait_for(lambda: count(lab, rf"renewal of {REFUSED} failed") == 3, 30, "the retry")
        assert backoff_of(lab, REFUSED)["failures"] == 3
        assert lab.pebble_orders() == 3  # still the same pending order
        time.sleep(5)
        assert count(lab, rf"renewal of {UNVALIDATABLE} failed") == 2  # untouched


def test_a_ca_that_is_down_costs_one_attempt_then_fewer() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        assert lab.ca is not None
        lab.ca.stop()
        start_agents(lab, certificate(NAME))
        wait_for(lambda: count(lab, rf"renewal of {NAME} failed") >= 1, 60, "a failure")
        # the next attempt 27-33 s later, itself up to ~7 s (the CA client's retries)
        time.sleep(FIRST_WAIT + 15)
        # Before: a failure every 9-10 s for ever, from whichever member took the lock.
        assert count(lab, rf"renewal of {NAME} failed") == 2, logs(lab)[-3000:]
        assert backoff_of(lab, NAME)["kind"] == "ca-unreachable"
        # The CA is back and the operator says so: issued, and the back-off cleared.
        lab.ca.start()
        proc = cluster_cli(lab, "renew", NAME, "--now")
        assert proc.returncode == 0, proc.stderr
        wait_for(lambda: all(fullchain(lab, r) for r in ROLES), 60, "every member installed")
        assert backoff_of(lab, NAME) == {}


def hook_script(lab: Lab, role: str, path: Path) -> str:
    """A deploy hook that reloads the role's nginx and notes what it deployed in ``path``;
    it fails (exit 3, saying why) while ``path``.fail exists."""
    script = lab.agent_state_dir(role) / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e {path}.fail ]; then echo "reload refused: bad config" >&2; exit 3; fi\n'
        f'echo "$RENEWED_DOMAINS" >> {path}\n'
        f"{lab.deploy_hook(role)}\n"
    )
    script.chmod(0o755)
    return str(script)


def test_every_certificate_is_deployed_and_a_failing_hook_is_unhealthy() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        deployed = {r: lab.agent_state_dir(r) / "deployed.txt" for r in ROLES}
        (lab.agent_state_dir("b3") / "deployed.txt.fail").touch()
        for role in ROLES:
            # the top-level default hook; no [[certificate]] at all
            extra = f"deploy_hook = {json.dumps(hook_script(lab, role, deployed[role]))}"
            path = write_config(lab, role, names=(), extra=extra)
            lab.start_agent(role, agent_argv(lab, path))
        proc = cluster_cli(lab, "add", NAME)
        assert proc.returncode == 0, proc.stderr
        # Added with `cluster add`: installed AND deployed by the default hook.
        wait_for(
            lambda: all(
                d.exists() and NAME in d.read_text() for r, d in deployed.items() if r != "b3"
            ),
            60,
            "the default deploy hook on b1 and b2",
        )
        # b3's hook fails: status names b3 and the certificate, exits non-zero.
        wait_for(lambda: status(lab)[0] == 1, 30, "cluster status unhealthy")
        _code, doc = status(lab)
        members = {m["member"]: m for m in doc["members"]}  # type: ignore[index]
        assert not members["b3"]["healthy"] and members["b1"]["healthy"]
        assert members["b3"]["hooks"][NAME]["exit_status"] == 3
        assert "reload refused: bad config" in members["b3"]["hooks"][NAME]["output"]
        assert doc["converged"] is False and doc["healthy"] is False
        text = cluster_cli(lab, "status")
        assert text.returncode == 1
        assert f"UNHEALTHY: deploy hook for {NAME} v1 exited 3" in text.stdout
        assert "reload refused: bad config" in text.stdout
        # The hook works again: retried (check interval 2 s), healthy, converged.
        (lab.agent_state_dir("b3") / "deployed.txt.fail").unlink()
        wait_for(lambda: status(lab)[0] == 0, 30, "healthy again")
        assert status(lab)[1]["converged"] is True
        assert NAME in deployed["b3"].read_text()
        # `cluster remove`: the agents stop keeping it; the files stay, each agent says so.
        proc = cluster_cli(lab, "remove", NAME)
        assert proc.returncode == 0 and "its files stay" in proc.stdout
        wait_for(lambda: count(lab, rf"{NAME} is no longer declared") == 3, 30, "the note")
        assert all(fullchain(lab, r) for r in ROLES)


def test_precedence_of_deploy_hooks() -> None:
    """[[certificate]] deploy_hook > `cluster add --deploy-hook` > top-level deploy_hook."""
    with build(Scenario.cluster_preset(3)) as lab:
        marks = lab.state_dir / "marks"
        marks.mkdir()
        for role in ROLES:
            own = certificate(NAME, hook=f"echo own-{role} >> {marks}/{role}")
            tables = own if role == "b1" else ""
            extra = f"deploy_hook = {json.dumps(f'echo default-{role} >> {marks}/{role}')}"
            path = write_config(lab, role, names=(), extra=extra)
            path.write_text(path.read_text() + tables)
            lab.start_agent(role, agent_argv(lab, path))
        other = "other.acmelb.test"
        # each member's own file: its lineage is STATE/live/NAME
        added_hook = 'echo "added-$RENEWED_DOMAINS" >> "$RENEWED_LINEAGE/../../added"'
        proc = cluster_cli(lab, "add", other, "--deploy-hook", added_hook)
        assert proc.returncode == 0, proc.stderr
        wait_for(
            lambda: all(fullchain(lab, r, other) and fullchain(lab, r) for r in ROLES),
            90,
            "both certificates everywhere",
        )
        # a hook runs after its install: wait for each hook's mark, not for the files alone
        added = {r: lab.agent_state_dir(r) / "added" for r in ROLES}
        wait_for(
            lambda: all((marks / r).exists() and added[r].exists() for r in ROLES),
            20,
            "the hooks",
        )
        assert (marks / "b1").read_text().split() == ["own-b1"]  # its own, for NAME
        for role in ("b2", "b3"):
            assert (marks / role).read_text().split() == [f"default-{role}"]
        for role in ROLES:
            assert added[role].read_text().split() == [f"added-{other}"]  # the stored hook
