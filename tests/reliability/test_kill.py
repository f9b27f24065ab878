"""``kill -9`` during ``issue`` and ``renew``: nothing lost, nothing mixed, the next run works.

Two ways to pick the moment, both with a real SIGKILL on the real command line
against a real Pebble:

* by event: ``killer.py`` counts every change acmelb makes to the state dir
  (an audit hook) and dies just before the Nth; the tests aim at every one of
  them, in a first issuance (account registration included) and in a renewal;
* by time: ``kill -9`` from outside after a random delay spread over the
  whole run (start-up, ordering, validation, finalization, storing).

After every kill, before anything repairs the state: every ``live/`` lineage
points at one complete version whose certificate matches its key, the account
key is the one from before (or, if it was being created, absent or whole).
Then the next run succeeds, and no temporary file is left anywhere.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import LocalCA
from tests.reliability.conftest import check_state, standalone, temp_files

KILLER = Path(__file__).with_name("killer.py")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _issue_args(local_ca: LocalCA, state: Path, name: str) -> list[str]:
    return ["issue", name, *local_ca.ca_args(state), *standalone(local_ca)]


def _renew_args(state: Path) -> list[str]:
    return ["renew", "--all", "--force", "--state-dir", str(state)]


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acmelb", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _killed_at(
    state: Path, n: int, args: list[str], count_file: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(KILLER), str(state), str(n), str(count_file), "--", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _count(state: Path, args: list[str], count_file: Path) -> int:
    done = _killed_at(state, 0, args, count_file)
    assert done.returncode == 0, done.stderr
    return int(count_file.read_text())


def _account_keys(state: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(state)): p.read_bytes()
        for p in (state / "accounts").rglob("private_key.json")
    }


def _check_after_kill(
    state: Path, keys_before: dict[str, bytes], versions_before: dict[str, int]
) -> dict[str, int]:
    """The invariants right after the kill, before any run could repair anything."""
    versions = check_state(state)
    for name, version in versions_before.items():
        assert versions.get(name) in (version, version + 1), (name, version, versions)
    keys = _account_keys(state)
    for path, key in keys_before.items():
        assert keys.get(path) == key, f"account key {path} changed"
    for key in keys.values():
        json.loads(key)  # a new key is whole, never a part
    return versions


def _check_recovered(
    state: Path, roots: Path, result: subprocess.CompletedProcess[str], what: str
) -> dict[str, int]:
    assert result.returncode == 0, f"{what}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr
    versions = check_state(state, roots)
    assert temp_files(state) == [], f"{what}: temp files left: {temp_files(state)}"
    assert not [p for p in (state / "live").iterdir() if p.name.startswith(".")], what
    return versions


def test_kill_at_every_state_change_of_a_first_issuance(local_ca: LocalCA, tmp_path: Path) -> None:
    total = _count(
        tmp_path / "count-state",
        _issue_args(local_ca, tmp_path / "count-state", "kill.test"),
        tmp_path / "count",
    )
    assert total >= 15  # directories, account key, archive, renewal, links
    print(f"\nfirst issuance: {total} state changes, killed before each")
    for n in range(1, total + 1):
        state = tmp_path / f"s{n}"
        args = _issue_args(local_ca, state, "kill.test")
        killed = _killed_at(state, n, args, tmp_path / "unused")
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        _check_after_kill(state, {}, {})
        keys = _account_keys(state)
        again = _run(args)
        versions = _check_recovered(state, local_ca.root_bundle, again, f"after kill {n}")
        assert versions == {"kill.test": versions.get("kill.test", 0)} and versions
        for path, key in keys.items():  # a whole key left by the killed run is kept
            assert _account_keys(state)[path] == key


def test_kill_at_every_state_change_of_a_renewal(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "s"
    first = _run(_issue_args(local_ca, state, "renewkill.test"))
    assert first.returncode == 0, first.stderr
    total = _count(state, _renew_args(state), tmp_path / "count")
    assert total >= 10
    print(f"\nrenewal: {total} state changes, killed before each")
    for n in range(1, total + 1):
        keys, versions = _account_keys(state), check_state(state)
        killed = _killed_at(state, n, _renew_args(state), tmp_path / "unused")
        assert killed.returncode == -signal.SIGKILL, (n, killed.stderr)
        _check_after_kill(state, keys, versions)
        again = _run(_renew_args(state))
        after = _check_recovered(state, local_ca.root_bundle, again, f"after kill {n}")
        assert after["renewkill.test"] > versions["renewkill.test"]
        assert _account_keys(state) == keys


def test_kill_at_random_moments_of_issue_and_renew(local_ca: LocalCA, tmp_path: Path) -> None:
    seed = int(os.environ.get("ACMELB_KILL_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    state = tmp_path / "s"
    first = _run(_issue_args(local_ca, state, "random0.test"))
    assert first.returncode == 0, first.stderr
    # How long a whole run takes here, start-up included: aim over all of it.
    start = time.monotonic()
    assert _run(_renew_args(state)).returncode == 0
    span = (time.monotonic() - start) * 1.1
    runs = 30
    landed = 0
    for index in range(runs):
        keys, versions = _account_keys(state), check_state(state)
        if index % 2:
            args = _renew_args(state)
        else:
            args = _issue_args(local_ca, state, f"random{index % 6}.test")
        delay = span * (index + rng.random()) / runs  # stratified over the whole run
        proc = subprocess.Popen(
            [sys.executable, "-m", "acmelb", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        landed += proc.wait(30) == -signal.SIGKILL
        _check_after_kill(state, keys, versions)
        again = _run(args)
        _check_recovered(
            state,
            local_ca.root_bundle,
            again,
            f"seed {seed}, run {index}, killed after {delay:.3f} s",
        )
    print(f"\nrandom kills: seed {seed}, {runs} runs over {span:.2f} s, {landed} landed mid-run")
    assert landed >= runs * 2 // 3, f"seed {seed}: only {landed} kills landed mid-run"
