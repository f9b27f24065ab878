"""The cluster-mode lab's agents: their configuration, the shared store key, starting them.

A cluster lab (``Scenario.cluster_preset(n)``, ``acmelb lab up cluster``) is a
round-robin TCP HAProxy on VIP:80 and VIP:443 in front of ``n`` backends whose
port 80 is free for the agents' responders, each backend with its TLS server
on 443 (``tls``: ``bI-agent/`` and ``bI-tls/`` under the lab's state
directory), and a 3-member ``EtcdCluster`` attached to every backend; ``topology``
builds all of it. This module writes the agents' ``agent.toml`` and starts
them; ``Lab`` exposes the rest (``lab.tls_fingerprint``, ``lab.start_agent``...).

It sits above ``topology`` in the lab package (it takes a ``Lab``); the paths
and fingerprints of ``tls`` are re-exported here for the tests and scripts that
import them from this module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from acmelb.lab.tls import (
    TLS_PORT,
    agent_state_dir,
    deploy_hook_path,
    file_fingerprint,
    fingerprint,
    served_fingerprint,
    tls_workdir,
)
from acmelb.lab.topology import ETCD_MEMBERS

if TYPE_CHECKING:
    from acmelb.lab.processes import ProcessRecord
    from acmelb.lab.topology import Lab

__all__ = [
    "ETCD_MEMBERS",
    "LAB_PUBLIC",
    "TLS_PORT",
    "agent_argv",
    "agent_state_dir",
    "deploy_hook_path",
    "file_fingerprint",
    "fingerprint",
    "served_fingerprint",
    "start_agents",
    "store_key_file",
    "store_key_path",
    "store_url",
    "tls_workdir",
    "write_agent_config",
]

# The lab's addresses (198.18.0.0/15, RFC 2544) count as public for the agents' self-check.
LAB_PUBLIC = "198.18.0.0/15"


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
    CA's side); the agent checks what its nginx serves on 443 after each deploy
    (``serve_check``). ``extra`` is added verbatim to the top-level table.
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
serve_check = "127.0.0.1:{TLS_PORT}"
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
