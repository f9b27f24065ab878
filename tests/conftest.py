"""Shared fixtures: a real Pebble CA and its DNS server on the loopback.

Every name under ``.test`` resolves to 127.0.0.1, and Pebble validates
HTTP-01 on ``http_port``, where the tests run their responders.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from acmelb.lab.dnsserver import DnsServer
from acmelb.lab.pebble import PebbleCA, pebble_binary


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalCA:
    pebble: PebbleCA
    dns: DnsServer
    http_port: int
    root_bundle: Path  # Pebble's root + intermediate, for openssl verify

    @property
    def directory_url(self) -> str:
        return self.pebble.directory_url

    @property
    def ca_bundle(self) -> Path:
        return self.pebble.ca_bundle

    def ca_args(self, state_dir: Path) -> list[str]:
        return [
            "--directory",
            self.directory_url,
            "--ca-bundle",
            str(self.ca_bundle),
            "--state-dir",
            str(state_dir),
        ]


def _start_local_ca(tmp: Path, **pebble_options: object) -> LocalCA:
    if pebble_binary() is None:
        pytest.skip("pebble is not installed (apt-get install pebble)")
    dns_port = free_port()
    http_port = free_port()
    dns = DnsServer(
        {"default": {"A": ["127.0.0.1"]}}, listen=f"127.0.0.1:{dns_port}", workdir=tmp
    ).start()
    try:
        pebble = PebbleCA(
            port=0,
            management_port=0,
            validation_port=http_port,
            dns_server=f"127.0.0.1:{dns_port}",
            workdir=tmp,
            **pebble_options,
        ).start()  # type: ignore[arg-type]
    except BaseException:
        dns.stop()
        raise
    bundle = tmp / "pebble-roots.pem"
    bundle.write_bytes(pebble.root_pem() + pebble.intermediate_pem())
    return LocalCA(pebble, dns, http_port, bundle)


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    ca = _start_local_ca(tmp_path_factory.mktemp("pebble"))
    try:
        yield ca
    finally:
        ca.pebble.stop()
        ca.dns.stop()


@pytest.fixture
def nonce_rejecting_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    ca = _start_local_ca(tmp_path_factory.mktemp("pebble-nonce"), nonce_reject_percent=30)
    try:
        yield ca
    finally:
        ca.pebble.stop()
        ca.dns.stop()


def run_acmelb(
    *args: str, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "acmelb", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@contextmanager
def acmelb_serve(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``acmelb serve ARGS`` as a child process, once it says it listens; its stderr
    (one line per request) stays readable; stopped on the way out."""
    server = subprocess.Popen(
        [sys.executable, "-m", "acmelb", "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        assert "listening" in first, first
        yield server
    finally:
        server.terminate()
        server.wait(10)


def openssl_verify(bundle: Path, live_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(bundle),
            "-untrusted",
            str(live_dir / "chain.pem"),
            str(live_dir / "cert.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
