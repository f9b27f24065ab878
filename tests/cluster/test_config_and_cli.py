"""The agent's configuration and the cluster commands: good and bad input."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from acmelb.cli.main import main
from acmelb.cli.render import render_cluster_status
from acmelb.cluster.config import parse_config, parse_store_url
from acmelb.cluster.metrics import AgentMetrics
from acmelb.cluster.status import CertificateStatus, ClusterStatus
from acmelb.cluster.store import MemberRecord
from acmelb.errors import UsageError
from tests.cluster.conftest import LocalEtcd
from tests.conftest import free_port

GOOD = """
member = "n1"
store = "etcd://198.18.3.11:2379,198.18.3.12,[2001:db8::3]:2380"
[ca]
directory = "https://127.0.0.1:14000/dir"
[self_check]
mode = "tolerant"
outside = ["ip netns exec pub"]
[[certificate]]
names = ["App.Example.com", "www.app.example.com"]
deploy_hook = "systemctl reload haproxy"
[[certificate]]
names = ["other.example.com"]
key_type = "rsa2048"
[certificate.self_check]
mode = "off"
"""


def test_a_good_configuration() -> None:
    config = parse_config(GOOD, "agent.toml")
    assert [str(e) for e in config.store.endpoints] == [
        "198.18.3.11:2379",
        "198.18.3.12:2379",
        "[2001:db8::3]:2380",
    ]
    first, second = config.certificates
    assert first.names == ("app.example.com", "www.app.example.com")
    assert first.self_check is not None and first.self_check.mode == "tolerant"
    assert first.self_check.probe.outside == ("ip netns exec pub",)
    assert first.self_check.probe.here.value == "inside"
    assert second.self_check is None and second.key_type == "rsa2048"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('member = "n1"', 'member = "n1"\ncolour = 1'),
            "agent.toml: colour: unknown key (every key is in docs/cluster.md)",
        ),
        (("[ca]", "[ca]\nfoo = 1"), "agent.toml: [ca] foo: unknown key"),
        (("etcd://198.18.3.11:2379,", "http://198.18.3.11:2379,"), "agent.toml: store: "),
        (("etcd://198.18.3.11:2379,", "etcd://198.18.3.11:99999,"), "is not HOST[:PORT]"),
        (
            ('"other.example.com"', '"bad_name!.example.com"'),
            "agent.toml: [[certificate]] #2 names: ",
        ),
        (
            ('key_type = "rsa2048"', 'key_type = "dsa"'),
            "agent.toml: [[certificate]] #2 key_type: must be one of",
        ),
        (('mode = "tolerant"', 'mode = "maybe"'), "agent.toml: [self_check] mode: must be one of"),
        (
            ('member = "n1"', 'member = "n1"\nlease_ttl = 1'),
            "agent.toml: lease_ttl: must be between 2 and 300 seconds",
        ),
        (
            ('member = "n1"', 'member = "n1"\nhttp_port = "80"'),
            "agent.toml: http_port: must be a int, not '80'",
        ),
        (("[ca]\ndirectory", "[ca]\ndirectorx"), "agent.toml: [ca] directory: missing (required)"),
        (
            ("[ca]\n", '[ca]\nca_bundle = "/nonexistent/ca.pem"\n'),
            "agent.toml: [ca] ca_bundle: /nonexistent/ca.pem: no such file",
        ),
        (
            ('mode = "tolerant"', 'mode = "tolerant"\nresolve = ["nocolon"]'),
            "agent.toml: [self_check] resolve: 'nocolon': expected NAME:ADDRESS",
        ),
        (
            ('mode = "off"', 'mode = "strict"\ninside = [""]'),
            "agent.toml: [[certificate]] #2 [self_check] inside: empty command",
        ),
        (
            ('member = "n1"', 'member = "n1"\nretry_schedule = [60, -1]'),
            "agent.toml: retry_schedule: must be a list of positive numbers (seconds)",
        ),
        (
            ('member = "n1"', 'member = "n1"\ndeploy_hook = 3'),
            "agent.toml: deploy_hook: must be a str, not 3",
        ),
        (
            (
                '[[certificate]]\nnames = ["other.example.com"]',
                '[[certificate]]\nnames = ["app.example.com"]',
            ),
            "agent.toml: [[certificate]]: two tables name the same first name",
        ),
        (('member = "n1"', "member = [n1"), "not valid TOML"),
    ],
)
def test_bad_configurations_are_one_line_usage_errors(
    change: tuple[str, str], message: str
) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(UsageError, match=None) as info:
        parse_config(text, "agent.toml")
    assert message in str(info.value)
    assert "\n" not in str(info.value) or "TOML" in str(info.value)


def test_the_top_level_deploy_hook_and_retry_schedule() -> None:
    text = GOOD.replace(
        'member = "n1"', 'member = "n1"\ndeploy_hook = "reload all"\nretry_schedule = [5, 50]'
    )
    config = parse_config(text, "agent.toml")
    assert config.deploy_hook == "reload all"
    assert config.retry_schedule == (5.0, 50.0)
    assert parse_config(GOOD, "agent.toml").retry_schedule == (60.0, 600.0, 6000.0, 86400.0)


def test_check_config_refuses_a_missing_ca_bundle_at_once(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(bytes(32))
    config = tmp_path / "agent.toml"
    config.write_text(GOOD.replace("[ca]\n", '[ca]\nca_bundle = "/nonexistent/ca.pem"\n'))
    proc = run_cli(
        "agent", "--config", str(config), "--store-key-file", str(tmp_path / "k"), "--check-config"
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"acmelb: error: {config}: [ca] ca_bundle: /nonexistent/ca.pem: no such file\n"
    )


def test_store_urls() -> None:
    assert [str(e) for e in parse_store_url("etcd://h1,h2:2380")] == ["h1:2379", "h2:2380"]


AGENT = [sys.executable, "-m", "acmelb", "agent"]


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acmelb", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_agent_cli_errors(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text("surprise = true\n" + GOOD)
    proc = run_cli("agent", "--config", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"acmelb: error: {bad}: surprise: unknown key (every key is in docs/cluster.md)"
    )
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    proc = run_cli("agent", "--config", str(good))
    assert proc.returncode == 1 and "needs --store-key-file" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "short.key").write_text("abc\n")
    proc = run_cli("agent", "--config", str(good), "--store-key-file", str(tmp_path / "short.key"))
    assert proc.returncode == 1 and "not a 32-byte key" in proc.stderr


def test_an_unreachable_store_exits_1_in_one_line() -> None:
    port = free_port()
    proc = run_cli("cluster", "status", "--store", f"etcd://127.0.0.1:{port}")
    assert proc.returncode == 1, proc.stderr
    assert "NO QUORUM" in proc.stdout or "did not answer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_agent_started_before_its_store_serves_and_waits(tmp_path: Path) -> None:
    """Boot order is not the agent's to choose: started while etcd is away, it opens
    port 80, says once that the store is unreachable, and stops cleanly on SIGTERM."""
    (tmp_path / "k").write_bytes(bytes(32))
    http = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        GOOD.replace(
            "etcd://198.18.3.11:2379,198.18.3.12,[2001:db8::3]:2380",
            f"etcd://127.0.0.1:{free_port()}",
        ).replace(
            'member = "n1"',
            f'member = "n1"\nhttp_port = {http}\n'
            f'http_addresses = ["127.0.0.1"]\nstate_dir = "{tmp_path / "state"}"',
        )
    )
    agent = subprocess.Popen(
        [*AGENT, "--config", str(config), "--store-key-file", str(tmp_path / "k")],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/.well-known/acme-challenge/x")
            except urllib.error.HTTPError as answer:
                assert answer.code == 404  # port 80 answers: no such token
                break
            except OSError:
                assert time.monotonic() < deadline and agent.poll() is None
                time.sleep(0.2)
        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, stderr
    assert stderr.count("store unreachable") == 1, stderr
    assert "Traceback" not in stderr


def test_cluster_add_remove_status_on_a_real_store(
    local_etcd: LocalEtcd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", local_etcd.url]
    assert main(["cluster", "add", "a.test", "www.a.test", *store]) == 0
    assert main(["cluster", "add", "a.test", *store]) == 0
    assert "already declared" in capsys.readouterr().out
    assert main(["cluster", "status", *store]) == 0
    out = capsys.readouterr().out
    assert "a.test (a.test, www.a.test)  not issued yet" in out
    assert main(["cluster", "remove", "a.test", *store]) == 0
    assert main(["cluster", "remove", "a.test", *store]) == 1
    assert main(["cluster", "add", "bad..name", *store]) == 2
    assert (
        main(
            [
                "cluster",
                "export",
                "a.test",
                str(tmp_path / "x"),
                *store,
                "--store-key-file",
                str(tmp_path / "missing"),
            ]
        )
        == 1
    )
    key = tmp_path / "store.key"
    assert main(["cluster", "keygen", str(key)]) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["cluster", "keygen", str(key)]) == 2


def test_metrics_pass_promtool() -> None:
    metrics = AgentMetrics("n1")
    metrics.not_after.labels(name="a.test").set(1.7e9)
    metrics.renewals.labels(name="a.test", outcome="success").inc()
    metrics.orders.labels(name="a.test").inc()
    metrics.last_self_check("a.test", ["nat-loopback"])
    metrics.last_self_check("a.test", ["lb-intercepts-challenge"])
    port = free_port()
    metrics.serve(f"127.0.0.1:{port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert 'acmelb_self_check_finding{code="lb-intercepts-challenge",name="a.test"} 1.0' in text
    assert "nat-loopback" not in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_cluster_with_nothing_declared_or_nobody_alive_is_not_converged() -> None:
    now = time.time()
    member = MemberRecord("a1", now, now, True, installed={"a.test": 1})
    certificate = CertificateStatus("a.test", ("a.test",), 1, now + 3600, None, None, None, {})

    def summary(status: ClusterStatus) -> str:
        out = io.StringIO()
        render_cluster_status(status, out)
        return out.getvalue().splitlines()[-1]

    empty = ClusterStatus({"e": "ok"}, True, (member,), ())
    assert not empty.converged and "no certificate declared" in summary(empty)
    nobody = ClusterStatus({"e": "ok"}, True, (), (certificate,))
    assert not nobody.converged and "no member alive" in summary(nobody)
    served = ClusterStatus({"e": "ok"}, True, (member,), (certificate,))
    assert served.converged and summary(served).startswith("converged")
