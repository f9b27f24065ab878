"""Helpers for the cluster tests on the lab: agent configuration files, starting agents,
reading the store from inside the lab."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from acmelb.cluster.secrets import generate_key_file
from acmelb.lab import Lab

NAME = "app.acmelb.test"


def store_url(lab: Lab) -> str:
    return "etcd://" + ",".join(e.split("//", 1)[1] for e in lab.etcd_endpoints)


def write_config(lab: Lab, role: str, *, names: Sequence[str] = (NAME,), lease_ttl: int = 4,
                 check_interval: float = 2.0, outside: str | None = None,
                 metrics: bool = False, extra: str = "") -> Path:
    """The agent.toml of the agent in ``role``: strict self-check with the public namespace
    as an outside vantage (the CA's side), every member as an inside one."""
    state = lab.agent_state_dir(role)
    outside = outside if outside is not None else lab.vantage("pub")
    certs = "".join(f'[[certificate]]\nnames = ["{n}"]\ndeploy_hook = "{lab.deploy_hook(role)}"\n'
                    for n in names)
    text = f"""member = "{role}"
state_dir = "{state}"
store = "{store_url(lab)}"
lease_ttl = {lease_ttl}
check_interval = {check_interval}
{'metrics_listen = "127.0.0.1:9108"' if metrics else ''}
{extra}
[ca]
directory = "{lab.ca_directory_url}"
ca_bundle = "{lab.ca_bundle}"
[self_check]
mode = "strict"
outside = [{json.dumps(outside)}]
assume_public = ["198.18.0.0/15"]
timeout = 2
{certs}"""
    path = state / "agent.toml"
    path.write_text(text)
    return path


def key_file(lab: Lab) -> Path:
    path = lab.state_dir / "store.key"
    if not path.exists():
        generate_key_file(path)
    return path


def start(lab: Lab, roles: Sequence[str], **config: object) -> None:
    for role in roles:
        cfg = write_config(lab, role, **config)  # type: ignore[arg-type]
        lab.start_agent(role, [sys.executable, "-m", "acmelb", "agent", "--config", str(cfg),
                               "--store-key-file", str(key_file(lab))])


def fullchain(lab: Lab, role: str, name: str = NAME) -> bytes | None:
    path = lab.agent_state_dir(role) / "live" / name / "fullchain.pem"
    return path.read_bytes() if path.exists() else None


def status(lab: Lab, role: str = "b1") -> tuple[int, dict[str, object]]:
    proc = lab.run(role, [sys.executable, "-m", "acmelb", "cluster", "status", "--store",
                          store_url(lab), "--json"], timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}


def etcd_values(lab: Lab, prefix: str = "/acmelb/") -> dict[str, str]:
    """Every raw key and value under ``prefix``, read with etcdctl from b1."""
    endpoints = ",".join(lab.etcd_endpoints)
    proc = lab.run("b1", ["env", "ETCDCTL_API=3", "etcdctl", "--endpoints", endpoints,
                          "get", "--prefix", prefix, "-w", "json"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    import base64

    doc = json.loads(proc.stdout)
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv["value"]).decode(
        "utf-8", "replace") for kv in doc.get("kvs", [])}


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
