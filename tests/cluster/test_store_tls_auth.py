"""The store over TLS with client certificates and etcd users, on a real etcd: the
``[store_tls]`` and ``[store_auth]`` settings, and a token that expires under the agent."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acmelb.cluster.config import StoreConfig, StoreTLS, parse_store_url
from acmelb.cluster.kv import EtcdKV
from acmelb.errors import StoreUnavailable
from tests.cluster.conftest import ETCD
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(90)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test etcd CA",
        cwd=d,
    )
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        extfile = d / f"{name}.ext"
        extfile.write_text((ext + "\n" if ext else "") + "extendedKeyUsage=serverAuth,clientAuth\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            str(extfile),
            cwd=d,
        )


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    make_pki(tmp_path)
    client, peer = free_port(), free_port()
    log = (tmp_path / "etcd.log").open("wb")
    process = subprocess.Popen(
        [
            ETCD,
            "--name",
            "t",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen-client-urls",
            f"https://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"https://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"t=http://127.0.0.1:{peer}",
            "--cert-file",
            str(tmp_path / "server.pem"),
            "--key-file",
            str(tmp_path / "server.key"),
            "--trusted-ca-file",
            str(tmp_path / "ca.pem"),
            "--client-cert-auth",
            "--auth-token-ttl",
            "2",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    ctl = [
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--endpoints",
        f"https://127.0.0.1:{client}",
        "--cacert",
        str(tmp_path / "ca.pem"),
        "--cert",
        str(tmp_path / "client.pem"),
        "--key",
        str(tmp_path / "client.key"),
    ]
    try:
        deadline = time.monotonic() + 15
        while subprocess.run([*ctl, "endpoint", "health"], capture_output=True).returncode:
            assert process.poll() is None and time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.1)
        for args in (
            ["user", "add", "root:rootpw"],
            ["user", "add", "acmelb:s3cret"],
            ["role", "add", "acmelb"],
            ["role", "grant-permission", "acmelb", "readwrite", "/acmelb/", "--prefix"],
            ["user", "grant-role", "acmelb", "acmelb"],
            ["auth", "enable"],
        ):
            subprocess.run([*ctl, *args], check=True, capture_output=True)
        yield client, tmp_path
    finally:
        process.kill()
        process.wait(10)
        log.close()


def config(port: int, pki: Path, password: str = "s3cret", cert: bool = True) -> StoreConfig:
    tls = StoreTLS(
        ca=pki / "ca.pem",
        cert=pki / "client.pem" if cert else None,
        key=pki / "client.key" if cert else None,
    )
    return StoreConfig(
        endpoints=parse_store_url(f"etcd://127.0.0.1:{port}"),
        tls=tls,
        user="acmelb",
        password=password,
        timeout=2.0,
    )


def test_tls_users_and_an_expired_token(tls_etcd: tuple[int, Path]) -> None:
    port, pki = tls_etcd
    kv = EtcdKV(config(port, pki))
    kv.put("/acmelb/x", b"1")
    time.sleep(3.5)  # past --auth-token-ttl: the first call fails, the client authenticates
    entry = kv.get("/acmelb/x")  # one call: it authenticates again inside
    assert entry is not None and entry.value == b"1"
    with pytest.raises(StoreUnavailable):
        kv.put("/elsewhere", b"1")  # outside the role's prefix
    kv.close()
    with pytest.raises(StoreUnavailable) as refused:
        EtcdKV(config(port, pki, password="wrong"))
    assert "\n" not in str(refused.value)
    with pytest.raises(StoreUnavailable):
        EtcdKV(config(port, pki, cert=False)).get("/acmelb/x")  # no client certificate
