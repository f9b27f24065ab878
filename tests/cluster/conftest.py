"""A real etcd (Debian's etcd-server) on the loopback, one member, for the store tests."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from acmelb.cluster.config import StoreConfig, parse_store_url
from tests.conftest import free_port

ETCD = "/usr/bin/etcd"


@dataclass
class LocalEtcd:
    process: subprocess.Popen[bytes]
    client_port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def store(self, prefix: str = "/acmelb") -> StoreConfig:
        return StoreConfig(endpoints=parse_store_url(self.url), prefix=prefix, timeout=2.0)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return b'"true"' in answer.read()
    except OSError:
        return False


@pytest.fixture
def local_etcd(tmp_path: Path) -> Iterator[LocalEtcd]:
    if not Path(ETCD).exists():
        pytest.fail("etcd-server is not installed (./dev setup installs it)")
    client, peer = free_port(), free_port()
    data = tmp_path / "etcd"
    log = (tmp_path / "etcd.log").open("wb")
    process = subprocess.Popen(
        [
            ETCD,
            "--name",
            "t",
            "--data-dir",
            str(data),
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"t=http://127.0.0.1:{peer}",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while not _healthy(client):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not start: {(tmp_path / 'etcd.log').read_text()}")
            time.sleep(0.05)
        yield LocalEtcd(process, client, data)
    finally:
        process.kill()
        process.wait(10)
        log.close()
