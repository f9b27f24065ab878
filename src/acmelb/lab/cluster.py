"""The cluster-mode lab's own parts: each backend's TLS server and agent directory, etcd.

A cluster lab (``Scenario.cluster_preset(n)``, ``acmelb lab up cluster``) is a
round-robin TCP HAProxy on VIP:80 and VIP:443 in front of ``n`` backends whose
port 80 is free for the agents' responders. This module adds, per backend
``bI``, under the lab's state directory:

- ``bI-agent/``: the agent's state directory (``live/NAME/fullchain.pem``...);
- ``bI-tls/``: an nginx on 443 (its ``nginx.conf``, ``sites.conf``, pid file,
  logs) serving the certificates found in ``bI-agent/live``, and
  ``bI-tls/deploy-hook``, the command that makes it pick up new ones;

and a 3-member ``EtcdCluster`` attached to every backend. ``topology`` calls
``start`` while building and ``Lab`` exposes the rest (``lab.tls_fingerprint``,
``lab.start_agent``...).
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from acmelb.errors import LabError
from acmelb.lab import configs

if TYPE_CHECKING:
    from acmelb.lab.topology import Lab, ProcessRecord

TLS_PORT = 443
ETCD_MEMBERS = 3
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
# The lab's addresses (198.18.0.0/15, RFC 2544) count as public for the agents' self-check.
LAB_PUBLIC = "198.18.0.0/15"


def agent_state_dir(state_dir: Path, role: str) -> Path:
    return state_dir / f"{role}-agent"


def tls_workdir(state_dir: Path, role: str) -> Path:
    return state_dir / f"{role}-tls"


def deploy_hook_path(state_dir: Path, role: str) -> Path:
    return tls_workdir(state_dir, role) / "deploy-hook"


def start_tls_servers(lab: Lab) -> dict[str, set[int]]:
    """Write every backend's agent directory, nginx config and deploy hook; start nginx.

    Returns the ports to wait for, per role.
    """
    expected: dict[str, set[int]] = {}
    ipv6 = lab.scenario.ipv6
    for role in lab.backends:
        workdir = tls_workdir(lab.state_dir, role)
        (workdir / "tmp").mkdir(parents=True)
        live = agent_state_dir(lab.state_dir, role) / "live"
        live.mkdir(parents=True)
        config = workdir / "nginx.conf"
        config.write_text(configs.tls_nginx_config(workdir, ipv6=ipv6))
        (workdir / "sites.conf").write_text("")
        hook = deploy_hook_path(lab.state_dir, role)
        hook.write_text(configs.tls_deploy_hook(workdir, live, ipv6=ipv6))
        hook.chmod(0o755)
        lab.start_process(
            role,
            "tls",
            ["nginx", "-e", str(workdir / "error.log"), "-c", str(config), "-g", "daemon off;"],
        )
        expected[role] = {TLS_PORT}
    return expected


def start_etcd(lab: Lab) -> None:
    """A 3-member etcd cluster, attached to every backend, recorded in the lab's state."""
    from acmelb.lab.etcd import EtcdCluster

    cluster = EtcdCluster.start(ETCD_MEMBERS, detached=lab.state.owner_pid is None)
    lab._etcd = cluster
    lab.state.etcd_id = cluster.id
    lab._save()
    for role in lab.backends:
        cluster.attach(lab.ns(role))


def fingerprint(pem: bytes | str) -> str:
    """SHA-256 of the first certificate in ``pem`` (DER), lower-case hex without colons."""
    data = pem.encode() if isinstance(pem, str) else pem
    match = _PEM_CERT.search(data)
    if match is None:
        raise LabError("no PEM certificate in the input")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group().decode())).hexdigest()


def file_fingerprint(path: Path) -> str:
    """``fingerprint`` of a PEM file (``live/NAME/fullchain.pem``: its leaf)."""
    return fingerprint(path.read_bytes())


def served_fingerprint(s_client_output: str) -> str | None:
    """The fingerprint of the certificate ``openssl s_client`` printed, or None."""
    match = _PEM_CERT.search(s_client_output.encode())
    return fingerprint(match.group()) if match else None


# -- agents: their configuration, the shared store key, starting them --------------------


def store_url(lab: Lab) -> str:
    """The agents' ``store`` setting: ``etcd://`` and every member's ``HOST:PORT``."""
    return "etcd://" + ",".join(e.split("//", 1)[1] for e in lab.etcd_endpoints)


def store_key_path(lab: Lab) -> Path:
    """Where the lab keeps the store key every agent shares (``acmelb cluster keygen``)."""
    return lab.state_dir / "store.key"


def store_key_file(lab: Lab) -> Path:
    """The lab's store key file, generated on first use if nobody wrote it."""
    from acmelb.cluster.secrets import generate_key_file

    path = store_key_path(lab)
    if not path.exists():
        generate_key_file(path)
    return path


def write_agent_config(
    lab: Lab,
    role: str,
    *,
    names: Sequence[str] | None = None,
    lease_ttl: int = 4,
    check_interval: float = 2.0,
    outside: str | None = None,
    metrics: bool = False,
    extra: str = "",
) -> Path:
    """Write ``role``'s ``agent.toml`` into its agent state directory and return its path.

    One ``[[certificate]]`` per name of ``names`` (default: the lab's name), each with
    ``role``'s deploy hook (its nginx on 443 reloads ``live/*/``); the CA is the lab's
    Pebble; a strict self-check with the public namespace as the outside vantage (the
    CA's side). ``extra`` is added verbatim to the top-level table.
    """
    state = lab.agent_state_dir(role)
    names = (lab.scenario.name,) if names is None else names
    outside = outside if outside is not None else lab.vantage("pub")
    hook = json.dumps(lab.deploy_hook(role))
    certs = "".join(
        f"[[certificate]]\nnames = [{json.dumps(n)}]\ndeploy_hook = {hook}\n" for n in names
    )
    text = f"""member = {json.dumps(role)}
state_dir = {json.dumps(str(state))}
store = {json.dumps(store_url(lab))}
lease_ttl = {lease_ttl}
check_interval = {check_interval}
{'metrics_listen = "127.0.0.1:9108"' if metrics else ""}
{extra}
[ca]
directory = {json.dumps(lab.ca_directory_url)}
ca_bundle = {json.dumps(str(lab.ca_bundle))}
[self_check]
mode = "strict"
outside = [{json.dumps(outside)}]
assume_public = [{json.dumps(LAB_PUBLIC)}]
timeout = 2
{certs}"""
    path = state / "agent.toml"
    path.write_text(text)
    return path


def agent_argv(lab: Lab, config: Path, key_file: Path | None = None) -> list[str]:
    """The command line of an agent reading ``config`` (default key: the lab's)."""
    key = key_file if key_file is not None else store_key_file(lab)
    return [
        sys.executable,
        "-m",
        "acmelb",
        "agent",
        "--config",
        str(config),
        "--store-key-file",
        str(key),
    ]


def start_agents(lab: Lab, roles: Sequence[str], **config: object) -> list[ProcessRecord]:
    """Write each role's ``agent.toml`` (``config``: ``write_agent_config``'s options)
    and start its agent, one right after the other; their logs are ``lab.agent_log``."""
    key = store_key_file(lab)
    started = []
    for role in roles:
        path = write_agent_config(lab, role, **config)  # type: ignore[arg-type]
        started.append(lab.start_agent(role, agent_argv(lab, path, key)))
    return started
