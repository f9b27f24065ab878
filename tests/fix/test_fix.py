"""acmelb fix: rendering checked by the real tools, apply/undo/rollback on a real ruleset."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmelb.cli.main import main
from acmelb.fix import nat_loopback
from acmelb.lab import netns


def test_haproxy_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed")
    assert (
        main(
            [
                "fix",
                "lb-tcp",
                "--haproxy",
                "--vip",
                "198.18.0.10",
                "--backend",
                "198.18.1.11",
                "--backend",
                "198.18.1.12:8080",
            ]
        )
        == 0
    )
    config = capsys.readouterr().out
    assert "mode tcp" in config and "server backend2 198.18.1.12:8080" in config
    assert "server backend2 198.18.1.12:443" in config
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_nginx_stream_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx not installed")
    # nginx -t binds its listeners, so the VIP is a loopback address here.
    assert main(["fix", "lb-tcp", "--nginx", "--vip", "127.0.0.80", "--backend", "127.0.0.81"]) == 0
    config = capsys.readouterr().out
    assert "stream {" in config and "proxy_pass acme_backends_80;" in config
    path = tmp_path / "nginx.conf"
    path.write_text(
        config.replace(
            "events {}", f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}"
        )
    )
    check = subprocess.run(
        ["nginx", "-t", "-c", str(path), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("provider", ["digitalocean", "hetzner", "scaleway", "generic"])
def test_k8s_fix_is_yaml_with_the_right_pieces(
    provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    yaml = pytest.importorskip("yaml")
    assert (
        main(
            [
                "fix",
                "k8s",
                "--case",
                "proxy-protocol",
                "--provider",
                provider,
                "--name",
                "shop.example.com",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    documents = list(yaml.safe_load_all(text))
    service, corefile, issuer = documents
    assert service["kind"] == "Service"
    if provider == "generic":
        assert service["status"]["loadBalancer"]["ingress"][0]["ipMode"] == "Proxy"
    else:
        expected = {
            "digitalocean": "service.beta.kubernetes.io/do-loadbalancer-hostname",
            "hetzner": "load-balancer.hetzner.cloud/hostname",
            "scaleway": "service.beta.kubernetes.io/scw-loadbalancer-use-hostname",
        }
        value = service["metadata"]["annotations"][expected[provider]]
        assert value == ("true" if provider == "scaleway" else "shop.example.com")
    assert "rewrite name exact shop.example.com" in corefile["data"]["Corefile"]
    assert issuer["spec"]["acme"]["solvers"][0]["waitInsteadOfSelfCheck"] == "30s"
    assert "--acme-http01-solver-nameservers" in text


def test_hairpin_case_has_no_proxy_service(capsys: pytest.CaptureFixture[str]) -> None:
    yaml = pytest.importorskip("yaml")
    assert main(["fix", "k8s", "--case", "hairpin"]) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ConfigMap", "ClusterIssuer"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--vip", "1.2.3", "--backend", "198.18.1.11", "--subnet", "198.18.1.0/24"],
            "--vip '1.2.3': not an IP address",
        ),
        (
            ["--vip", "198.18.0.10", "--backend", "nope", "--subnet", "198.18.1.0/24"],
            "--backend 'nope': not IP[:PORT]",
        ),
        (
            ["--vip", "198.18.0.10", "--backend", "2001:db8::1", "--subnet", "198.18.1.0/24"],
            "not the VIP's IP version",
        ),
        (
            ["--vip", "198.18.0.10", "--backend", "198.18.1.11", "--subnet", "x"],
            "--subnet 'x': not a CIDR block",
        ),
        (
            ["--vip", "198.18.0.10", "--backend", "198.18.1.11:99999", "--subnet", "198.18.1.0/24"],
            "bad port",
        ),
    ],
)
def test_nat_loopback_bad_input(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fix", "nat-loopback", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_nft_rendering_round_robin() -> None:
    plan = nat_loopback.parse_plan(
        "198.18.0.10", 80, ["198.18.1.11", "198.18.1.12"], "198.18.1.0/24", "nft"
    )
    script = nat_loopback.nft_script(plan)
    assert "numgen inc mod 2 map { 0 : 198.18.1.11:80, 1 : 198.18.1.12:80 }" in script
    assert script.count("masquerade") == 2


# -- apply / undo / rollback on a real ruleset, in a namespace of our own ----------


@pytest.fixture
def lb_namespace() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.skip("needs root and iptables")
    name = f"alb{secrets.token_hex(2)}-fix"
    netns.add(name)
    try:
        netns.ip(["link", "set", "lo", "up"], namespace=name)
        # An LB's own DNAT rule, to prove acmelb leaves it alone.
        netns.run_in(
            name,
            [
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                "198.18.0.10",
                "-p",
                "tcp",
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                "198.18.1.11:80",
            ],
        )
        yield name
    finally:
        netns.delete(name)


def _fix(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return netns.run_in(
        namespace,
        [
            sys.executable,
            "-m",
            "acmelb",
            "fix",
            "nat-loopback",
            "--vip",
            "198.18.0.10",
            "--backend",
            "198.18.1.11",
            "--subnet",
            "198.18.1.0/24",
            *args,
        ],
        timeout=60,
    )


def _save(namespace: str, tool: str) -> str:
    if tool == "nft":
        return netns.run_in(namespace, ["nft", "list", "ruleset"]).stdout
    return nat_loopback.normalize_iptables_save(netns.run_in(namespace, ["iptables-save"]).stdout)


@pytest.mark.lab
@pytest.mark.parametrize("tool", ["iptables", "nft"])
def test_apply_is_idempotent_and_undo_restores_exactly(lb_namespace: str, tool: str) -> None:
    if tool == "nft" and shutil.which("nft") is None:
        pytest.skip("nft not installed")
    before = _save(lb_namespace, tool)
    first = _fix(lb_namespace, "--backend-tool", tool, "--apply")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Added NAT loopback")
    applied = _save(lb_namespace, tool)
    assert "MASQUERADE" in applied or "masquerade" in applied
    second = _fix(lb_namespace, "--backend-tool", tool, "--apply")
    assert second.returncode == 0 and second.stdout.startswith("Already in place")
    assert _save(lb_namespace, tool) == applied
    undone = _fix(lb_namespace, "--backend-tool", tool, "--undo")
    assert undone.returncode == 0 and "Removed" in undone.stdout
    assert _save(lb_namespace, tool) == before
    assert "--to-destination 198.18.1.11:80" in _save(lb_namespace, "iptables")


@pytest.mark.lab
def test_failed_verification_rolls_back_byte_identically(lb_namespace: str) -> None:
    before = _save(lb_namespace, "iptables")
    # The namespace has no route to the VIP: the verification fetch cannot succeed.
    failed = _fix(lb_namespace, "--apply", "--verify-from", f"ip netns exec {lb_namespace}")
    assert failed.returncode == 1
    assert (
        "verification failed" in failed.stderr and "previous ruleset was restored" in failed.stderr
    )
    assert "Traceback" not in failed.stderr
    assert _save(lb_namespace, "iptables") == before
