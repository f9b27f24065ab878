"""The cluster lab: N backends behind a round-robin TCP HAProxy (80 and 443), a TLS nginx
per backend, Pebble and DNS on the public side, 3 etcd members attached to every backend.

One lab serves the whole module (it takes about 2 s to build). Stand-in agents are
``acmelb serve --stateless`` with the account's thumbprint in every backend: they answer
any token, so Pebble's requests may land anywhere, as with the real agents.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acmelb.lab import Lab, Scenario, build, netns
from acmelb.lab.cluster import file_fingerprint
from acmelb.lab.etcd import ETCD_BINARY
from acmelb.lab.etcd import STATE_ROOT as ETCD_STATE_ROOT
from acmelb.lab.pebble import pebble_binary

from .test_etcd_lab import etcd_op

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

VALIDITY = 300  # seconds: Pebble's certificateValidityPeriod for this lab


@pytest.fixture(scope="module")
def lab(lab_available: None) -> Iterator[Lab]:
    if not os.access(ETCD_BINARY, os.X_OK) or pebble_binary() is None:
        pytest.skip("the cluster lab needs etcd-server and pebble (./dev setup installs them)")
    started = time.monotonic()
    built = build(Scenario.cluster_preset(3, cert_validity=VALIDITY))
    elapsed = time.monotonic() - started
    namespaces = list(built.namespaces.values())
    etcd_id = built.state.etcd_id
    try:
        assert elapsed < 15, f"the cluster lab took {elapsed:.1f} s to build"
        yield built
    finally:
        built.down()
    # Teardown leaves nothing: no lab or etcd namespace, state or process.
    assert etcd_id is not None
    left = set(netns.existing())
    assert not [name for name in namespaces if name in left]
    assert not [name for name in left if name.startswith(f"ale{etcd_id}-")]
    assert not (ETCD_STATE_ROOT / etcd_id).exists() and not built.state_dir.exists()
    assert not [record for record in built.processes() if record.is_running()]


def _acmelb(lab: Lab, *args: str) -> list[str]:
    """``acmelb ARGS`` against the lab's Pebble, with b1's agent state directory."""
    assert lab.ca_directory_url and lab.ca_bundle
    return [
        sys.executable,
        "-m",
        "acmelb",
        *args,
        "--directory",
        lab.ca_directory_url,
        "--ca-bundle",
        str(lab.ca_bundle),
        "--state-dir",
        str(lab.agent_state_dir("b1")),
    ]


@pytest.fixture(scope="module")
def responders(lab: Lab) -> str:
    """A stateless responder as the "agent" of every backend; returns the account thumbprint."""
    proc = lab.run("b1", [*_acmelb(lab, "account", "register"), "--json"])
    assert proc.returncode == 0, proc.stderr
    thumbprint: str = json.loads(proc.stdout)["thumbprint"]
    for role in lab.backends:
        lab.start_agent(
            role,
            [
                sys.executable,
                "-m",
                "acmelb",
                "serve",
                "--stateless",
                "--thumbprint",
                thumbprint,
                "--address",
                "0.0.0.0",
                "--port",
                "80",
            ],
        )
    deadline = time.monotonic() + 10
    for role in lab.backends:
        assert netns.wait_listening(lab.ns(role), {80}, deadline), lab.agent_log(role)
    return thumbprint


def self_signed(name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def install(lab: Lab, role: str, lineage: str, cert: bytes, key: bytes) -> Path:
    """What an agent does: files in STATE/live/LINEAGE/, then the deploy hook."""
    live = lab.agent_state_dir(role) / "live" / lineage
    live.mkdir(parents=True, exist_ok=True)
    (live / "privkey.pem").write_bytes(key)
    (live / "fullchain.pem").write_bytes(cert)
    lab.reload_tls(role)
    return live / "fullchain.pem"


def test_haproxy_passes_80_and_443_through_round_robin_and_its_config_checks(lab: Lab) -> None:
    config = lab.state_dir / "haproxy.cfg"
    check = lab.run("lb", ["haproxy", "-c", "-f", str(config)])
    assert check.returncode == 0, check.stdout + check.stderr
    text = config.read_text()
    assert "mode tcp" in text and "send-proxy" not in text and "backup" not in text
    assert text.count("balance roundrobin") == 2
    for index in (1, 2, 3):
        assert f"198.18.1.{10 + index}:80" in text and f"198.18.1.{10 + index}:443" in text
    assert {80, 443} <= netns.listening_ports(lab.ns("lb"))
    for role in lab.backends:  # port 80 is the agents'; 443 the lab's nginx
        ports = netns.listening_ports(lab.ns(role))
        assert (443 in ports and 80 not in ports) or "agent" in {
            record.what for record in lab.processes() if record.role == role
        }


def test_the_lab_dns_answers_every_name_of_the_zone_with_the_vip(lab: Lab) -> None:
    for name in ("app.acmelb.test", "c42.acmelb.test", "x.y.acmelb.test"):
        proc = lab.run("b2", ["getent", "ahostsv4", name])
        assert proc.stdout.split()[:1] == [lab.vip], (name, proc.stdout, proc.stderr)


def test_plain_http_through_the_vip_lands_on_every_backend(lab: Lab, responders: str) -> None:
    tokens = [f"roundrobin{index}" for index in range(3)]
    for token in tokens:
        result = lab.fetch("pub", f"http://app.acmelb.test/.well-known/acme-challenge/{token}")
        assert result.status == 200 and result.text == f"{token}.{responders}"
    landed = {
        token: [
            role
            for role in lab.backends
            if f"/acme-challenge/{token} " in lab.agent_log(role).read_text()
        ]
        for token in tokens
    }
    assert sorted(role for roles in landed.values() for role in roles) == ["b1", "b2", "b3"]


def test_etcd_is_reachable_from_every_backend(lab: Lab) -> None:
    assert lab.etcd_endpoints == [
        "http://198.18.3.11:2379",
        "http://198.18.3.12:2379",
        "http://198.18.3.13:2379",
    ]
    for role in lab.backends:
        assert etcd_op(lab.ns(role), lab.etcd_endpoints, "put", f"/lab/{role}", role)["ok"]
    for role in lab.backends:
        assert etcd_op(lab.ns(role), lab.etcd_endpoints, "get", "/lab/b1")["value"] == "b1"
    # The backends' own network is untouched: default route via the LB.
    assert "default via 198.18.1.1" in netns.run_in(lab.ns("b3"), ["ip", "route"]).stdout


def test_the_tls_server_serves_what_is_installed_after_the_deploy_hook(lab: Lab) -> None:
    name = "tls.acmelb.test"
    assert lab.tls_fingerprint("vip", name) is None  # nothing installed: no certificate
    cert, key = self_signed(name)
    fingerprints = set()
    for role in lab.backends:
        fingerprints.add(file_fingerprint(install(lab, role, name, cert, key)))
    (expected,) = fingerprints
    assert [lab.tls_fingerprint("vip", name) for _ in range(3)] == [expected] * 3
    assert [lab.tls_fingerprint(role, name) for role in lab.backends] == [expected] * 3
    assert lab.tls_fingerprint("b1", "other.acmelb.test") is None

    # A renewal on b1 only: its nginx serves the new certificate once the hook ran.
    new_cert, new_key = self_signed(name)
    live = lab.agent_state_dir("b1") / "live" / name
    (live / "fullchain.pem").write_bytes(new_cert)
    (live / "privkey.pem").write_bytes(new_key)
    assert lab.tls_fingerprint("b1", name) == expected
    lab.reload_tls("b1")
    renewed = file_fingerprint(live / "fullchain.pem")
    assert renewed != expected
    assert lab.tls_fingerprint("b1", name) == renewed
    assert lab.tls_fingerprint("b2", name) == expected


def test_pebble_counts_one_order_and_one_certificate(lab: Lab, responders: str) -> None:
    before = lab.pebble_counts()
    proc = lab.run(
        "b1",
        [*_acmelb(lab, "issue", "app.acmelb.test"), "--solver", "stateless", "--self-check", "off"],
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    counts = lab.pebble_counts()
    assert (counts.orders - before.orders, counts.issued - before.issued) == (1, 1)
    assert (lab.pebble_orders(), lab.pebble_issued()) == (counts.orders, counts.issued)
    chain = lab.agent_state_dir("b1") / "live" / "app.acmelb.test" / "fullchain.pem"
    cert = x509.load_pem_x509_certificate(chain.read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() == pytest.approx(VALIDITY, abs=2)
    # The certbot layout the hook reads: b1 serves it at once, through the VIP one in three.
    lab.reload_tls("b1")
    assert lab.tls_fingerprint("b1") == file_fingerprint(chain)
    # Pebble 2.4 fetches each challenge three times: more than one instance answered.
    pebble_hits = [
        role for role in lab.backends if "LetsEncrypt-Pebble-VA" in lab.agent_log(role).read_text()
    ]
    assert len(pebble_hits) >= 2


def test_agents_are_signalled_and_restarted_by_pid(lab: Lab, responders: str) -> None:
    lab.signal_agent("b2", signal.SIGSTOP)
    assert lab.agent_alive("b2")
    lab.signal_agent("b2", signal.SIGCONT)
    lab.signal_agent("b3", signal.SIGKILL)
    assert not lab.agent_alive("b3")
    # The LB retries a refused connection on another backend (option redispatch).
    assert [lab.fetch("pub", max_time=5).status for _ in range(3)] == [200, 200, 200]
    record = lab.start_agent(
        "b3",
        [
            sys.executable,
            "-m",
            "acmelb",
            "serve",
            "--stateless",
            "--thumbprint",
            responders,
            "--port",
            "80",
        ],
    )
    assert record.log.endswith("b3-agent.log") and lab.agent_alive("b3")
    with pytest.raises(Exception, match="already runs"):
        lab.start_agent("b3", ["true"])


def test_cli_up_status_down_cluster(lab_available: None) -> None:
    cli = [sys.executable, "-m", "acmelb", "lab"]
    up = subprocess.run(
        [*cli, "up", "cluster", "--backends", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    try:
        assert [b["role"] for b in info["backends"]] == ["b1", "b2"]
        assert info["dns_names"] == ["*.acmelb.test"]
        etcd = info["cluster"]["etcd"]
        assert etcd["running"] == [True, True, True]
        status = subprocess.run(
            [*cli, "status", info["id"]], capture_output=True, text=True, timeout=30, check=False
        )
        assert "etcd     http://198.18.3.11:2379" in status.stdout
        assert "b2-tls/deploy-hook" in status.stdout
    finally:
        down = subprocess.run(
            [*cli, "down", info["id"]], capture_output=True, text=True, timeout=60, check=False
        )
    assert down.returncode == 0, down.stderr
    left = netns.existing()
    assert not [n for n in left if n.startswith((f"alb{info['id']}-", f"ale{etcd['id']}-"))]
    assert not (ETCD_STATE_ROOT / etcd["id"]).exists()
