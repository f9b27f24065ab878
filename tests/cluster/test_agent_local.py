"""The agent against a real etcd and a real Pebble on the loopback (no namespaces)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmelb.cluster.agent import Agent
from acmelb.cluster.config import AgentConfig, CertificateSpec, parse_config
from acmelb.cluster.kv import EtcdKV
from acmelb.cluster.secrets import SecretBox, generate_key_file
from acmelb.cluster.status import cluster_status
from acmelb.errors import SecretKeyError
from tests.cluster.conftest import LocalEtcd
from tests.conftest import LocalCA

pytestmark = pytest.mark.timeout(120)


def agent_config(
    etcd: LocalEtcd, ca: LocalCA, state: Path, member: str, names: tuple[str, ...] = ("one.test",)
) -> AgentConfig:
    text = f"""
member = "{member}"
state_dir = "{state}"
store = "{etcd.url}"
http_port = {ca.http_port}
http_addresses = ["127.0.0.1"]
lease_ttl = 3
check_interval = 1
[ca]
directory = "{ca.directory_url}"
ca_bundle = "{ca.ca_bundle}"
[self_check]
mode = "off"
[[certificate]]
names = {list(names)!r}
deploy_hook = "echo $RENEWED_DOMAINS > {state}/hook.out"
""".replace("'", '"')
    return parse_config(text, "test.toml")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "store.key"
    generate_key_file(path)
    return path


@pytest.fixture
def running(
    local_etcd: LocalEtcd, local_ca: LocalCA, tmp_path: Path, key_file: Path
) -> Iterator[Agent]:
    config = agent_config(local_etcd, local_ca, tmp_path / "a1", "a1")
    agent = Agent(config, SecretBox.from_file(key_file))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_one_agent_issues_installs_and_reports(
    running: Agent, local_etcd: LocalEtcd, tmp_path: Path
) -> None:
    live = tmp_path / "a1" / "live" / "one.test"
    wait_for(lambda: (live / "fullchain.pem").exists())
    hook_out = tmp_path / "a1" / "hook.out"
    wait_for(lambda: hook_out.exists() and hook_out.read_text().strip())  # run after the files
    assert hook_out.read_text().strip() == "one.test"
    wait_for(lambda: cluster_status(local_etcd.store()).converged)
    status = cluster_status(local_etcd.store())
    [cert] = status.certificates
    assert cert.version == 1 and cert.installed_on == {"a1": 1}
    # no private key in clear anywhere in etcd
    kv = EtcdKV(local_etcd.store(prefix=""))
    values = [e.value for e in kv.get_prefix("/")]
    kv.close()
    assert values and not any(b"PRIVATE KEY" in v or b'"d":' in v for v in values)


def test_wrong_store_key_fails_before_writing(
    running: Agent, local_etcd: LocalEtcd, local_ca: LocalCA, tmp_path: Path
) -> None:
    wait_for(lambda: (tmp_path / "a1" / "live" / "one.test" / "fullchain.pem").exists())
    kv = EtcdKV(local_etcd.store(prefix=""))
    before = {e.key: e.value for e in kv.get_prefix("/acmelb/certs")}
    other_key = tmp_path / "other.key"
    generate_key_file(other_key)
    config = dataclasses.replace(
        agent_config(local_etcd, local_ca, tmp_path / "a2", "a2"),
        certificates=(CertificateSpec(names=("two.test",)),),
    )
    intruder = Agent(config, SecretBox.from_file(other_key))
    with pytest.raises(SecretKeyError, match="wrong key file"):
        intruder.start()
    intruder.stop()
    assert {e.key: e.value for e in kv.get_prefix("/acmelb/certs")} == before
    assert kv.get("/acmelb/members/a2") is None
    kv.close()
    assert not (tmp_path / "a2").exists()
