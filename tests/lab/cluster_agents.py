"""Helpers for the cluster tests on the lab: reading the store and the agents' files from
inside the lab. Agent configuration files and starting agents are acmelb.lab.cluster's
(``write_config``, ``start``, ``store_url``: the demo uses them too)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

from acmelb.lab import Lab, cluster

NAME = "app.acmelb.test"
store_url = cluster.store_url
write_config = cluster.write_agent_config  # (lab, role, *, outside=..., metrics=...) -> Path
start = cluster.start_agents  # (lab, roles, **write_config's options)
agent_argv = cluster.agent_argv  # (lab, config path) -> the agent's command line


def fullchain(lab: Lab, role: str, name: str = NAME) -> bytes | None:
    path = lab.agent_state_dir(role) / "live" / name / "fullchain.pem"
    return path.read_bytes() if path.exists() else None


def status(lab: Lab, role: str = "b1") -> tuple[int, dict[str, object]]:
    proc = lab.run(
        role,
        [sys.executable, "-m", "acmelb", "cluster", "status", "--store", store_url(lab), "--json"],
        timeout=60,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def etcd_values(lab: Lab, prefix: str = "/acmelb/") -> dict[str, str]:
    """Every raw key and value under ``prefix``, read with etcdctl from b1."""
    endpoints = ",".join(lab.etcd_endpoints)
    proc = lab.run(
        "b1",
        [
            "env",
            "ETCDCTL_API=3",
            "etcdctl",
            "--endpoints",
            endpoints,
            "get",
            "--prefix",
            prefix,
            "-w",
            "json",
        ],
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    import base64

    doc = json.loads(proc.stdout)
    return {
        base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode(
            "utf-8", "replace"
        )
        for kv in doc.get("kvs", [])
    }


def lock_holder(lab: Lab, name: str = NAME) -> str | None:
    return etcd_values(lab, f"/acmelb/certs/{name}/lock").get(f"/acmelb/certs/{name}/lock")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - started


def log(lab: Lab, role: str) -> str:
    return lab.agent_log(role).read_text(errors="replace")
