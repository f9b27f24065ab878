"""What an operator installs (issue 24): the wheel, the systemd units, the alert rules.

* ``python -m build`` makes an sdist and a wheel; the wheel installs into a fresh venv
  (no editable install, no source tree on the path) and runs there, with its package
  data (schemas, ``py.typed``).
* ``systemd-analyze verify`` accepts the units, pointed at that installed ``acmelb``
  (the units name /opt/acmelb/bin/acmelb, where docs/operations.md installs it), and
  prints nothing: an unknown directive is only a warning there, so no output is the bar.
* ``promtool check rules`` and ``promtool test rules`` accept the alert rules and their
  unit tests (every alert firing and not firing).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
RULES = ROOT / "contrib" / "prometheus"
INSTALLED_AT = "/opt/acmelb/bin/acmelb"
MESSAGE = (
    "acme: error: 403 :: urn:ietf:params:acme:error:unauthorized :: 198.51.100.7: "
    "Invalid response from http://www.example.com/.well-known/acme-challenge/abc: 404"
)


def run(argv: list[str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        **options,  # type: ignore[call-overload]
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel (and its dependencies) installed, nothing else."""
    venv = tmp_path_factory.mktemp("venv") / "acmelb"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    (wheel,) = dist.glob("acmelb-*.whl")
    proc = run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield venv


def outside_the_tree(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``acmelb ARGV`` from the venv, run from / with no PYTHONPATH: the source tree
    cannot be what it imports."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return run([str(venv / "bin" / "acmelb"), *argv], cwd="/", env=env)


def test_build_makes_an_sdist_and_a_wheel_with_the_package_data(dist: Path) -> None:
    assert len(list(dist.glob("acmelb-*.tar.gz"))) == 1
    (wheel,) = dist.glob("acmelb-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"acmelb/py.typed", "acmelb/schemas/diagnosis-v1.json"} <= names
    assert "acmelb/schemas/explain-v1.json" in names
    assert not any(name.startswith("tests/") for name in names)


def test_the_installed_wheel_runs_outside_the_source_tree(installed: Path) -> None:
    where = run(
        [str(installed / "bin" / "python"), "-c", "import acmelb; print(acmelb.__file__)"],
        cwd="/",
    )
    assert where.returncode == 0 and str(installed) in where.stdout, where
    version = outside_the_tree(installed, "--version")
    assert version.returncode == 0 and re.search(r"\d+\.\d+\.\d+", version.stdout), version
    explained = outside_the_tree(installed, "explain", "--json", MESSAGE)
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["candidates"], explained.stdout
    helped = outside_the_tree(installed, "diagnose", "--help")
    assert helped.returncode == 0 and "--kube" in helped.stdout
    bad = outside_the_tree(installed, "agent", "--config", "/nonexistent/agent.toml")
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze missing")
def test_systemd_accepts_the_units(installed: Path, tmp_path: Path) -> None:
    for unit in UNITS.iterdir():
        text = unit.read_text()
        (tmp_path / unit.name).write_text(text.replace(INSTALLED_AT, str(installed / "bin/acmelb")))
    units = sorted(str(p) for p in tmp_path.iterdir())
    assert len(units) == 3
    proc = run(["systemd-analyze", "verify", "--man=no", *units])
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, proc


def test_the_units_say_what_the_issue_asks() -> None:
    agent = (UNITS / "acmelb-agent.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "User=acmelb",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/acmelb",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"ExecStart={INSTALLED_AT} agent --config /etc/acmelb/agent.toml",
    ):
        assert line in agent, line
    timer = (UNITS / "acmelb-renew.timer").read_text()
    assert "OnCalendar=*-*-* 00,12:00:00" in timer  # twice a day
    assert "RandomizedDelaySec=" in timer and "Persistent=true" in timer
    renew = (UNITS / "acmelb-renew.service").read_text()
    assert "Type=oneshot" in renew and f"ExecStart={INSTALLED_AT} renew --all" in renew


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool missing (Debian: prometheus)")
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    checked = run(["promtool", "check", "rules", str(RULES / "acmelb-alerts.yml")])
    assert checked.returncode == 0 and "SUCCESS: 8 rules found" in checked.stdout, checked
    tested = run(["promtool", "test", "rules", "acmelb-alerts.test.yml"], cwd=RULES)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    import yaml

    rules = yaml.safe_load((RULES / "acmelb-alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((RULES / "acmelb-alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert firing == alerts and quiet == alerts
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"summary", "runbook"} <= set(rule["annotations"]), rule["alert"]
            assert "acmelb " in rule["annotations"]["runbook"], rule["alert"]


def test_the_metrics_the_rules_use_exist() -> None:
    from prometheus_client import generate_latest

    from acmelb.cluster.metrics import AgentMetrics

    metrics = AgentMetrics("m1")
    for gauge in (metrics.not_after, metrics.not_before, metrics.failures, metrics.hook_ok):
        gauge.labels(name="a.test").set(1)
    metrics.serving_current.labels(name="a.test").set(1)
    metrics.lock_held.labels(name="a.test").set(0)
    metrics.ari_early_renewals.labels(name="a.test").inc()
    exported = generate_latest(metrics.registry).decode()
    used = set(re.findall(r"\bacmelb_[a-z_]+", (RULES / "acmelb-alerts.yml").read_text()))
    missing = {name for name in used if not re.search(rf"^{name}[{{ ]", exported, re.M)}
    assert not missing, missing


def test_every_event_the_agent_logs_is_documented() -> None:
    sources = [ROOT / "src/acmelb/cluster/agent.py", ROOT / "src/acmelb/cluster/events.py"]
    sources.append(ROOT / "src/acmelb/cli/agent.py")
    emitted: set[str] = set()
    for source in sources:
        text = source.read_text()
        emitted |= set(re.findall(r'log\.(?:info|warning|error)\(\s*"([a-z-]+)"', text))
        emitted |= set(re.findall(r'self\.(?:info|warning|error)\(\s*"([a-z-]+)"', text))
        emitted |= set(re.findall(r'"(deploy-hook(?:-failed)?)"', text))
    documented = set(re.findall(r"`([a-z-]+)`", (ROOT / "docs/operations.md").read_text()))
    assert len(emitted) > 20 and emitted <= documented, emitted - documented
