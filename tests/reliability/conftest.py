"""Helpers for the reliability tests: the fault proxy and the store invariants."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import LocalCA, run_acmelb
from tests.reliability.faultproxy import FaultProxy

KINDS = ("cert", "chain", "fullchain", "privkey")
_VERSION = re.compile(r"^(cert|chain|fullchain|privkey)(\d+)\.pem$")


@pytest.fixture
def fault_proxy(local_ca: LocalCA, tmp_path: Path) -> Iterator[FaultProxy]:
    proxy = FaultProxy(
        "127.0.0.1", local_ca.pebble.port, local_ca.ca_bundle, tmp_path / "proxy"
    ).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def standalone(local_ca: LocalCA) -> tuple[str, ...]:
    return (
        "--solver",
        "standalone",
        "--http-port",
        str(local_ca.http_port),
        "--http-address",
        "127.0.0.1",
        "--self-check",
        "off",
    )


def issue_via(
    proxy: FaultProxy, local_ca: LocalCA, state: Path, *names: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run_acmelb(
        "issue",
        *names,
        "--directory",
        proxy.directory_url,
        "--ca-bundle",
        str(proxy.ca_bundle),
        "--state-dir",
        str(state),
        *standalone(local_ca),
        timeout=timeout,
    )


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_lineage(live_dir: Path, roots: Path | None = None) -> int:
    """The issue's invariant for one live/NAME: return the version it points at.

    Every link resolves to a complete, parseable file; all four point at one
    version; the certificate matches the private key; fullchain = cert + chain.
    """
    versions = set()
    for kind in KINDS:
        link = live_dir / f"{kind}.pem"
        assert link.is_symlink(), f"{link} is not a link"
        target = os.readlink(link)
        match = _VERSION.match(Path(target).name)
        assert match and match.group(1) == kind, f"{link} -> {target}"
        versions.add(int(match.group(2)))
        assert link.resolve().is_file(), f"{link} -> {target}: missing"
    assert len(versions) == 1, f"{live_dir}: links point at versions {sorted(versions)} (a mix)"
    cert_pem = (live_dir / "cert.pem").read_bytes()
    chain_pem = (live_dir / "chain.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert x509.load_pem_x509_certificates(chain_pem), f"{live_dir}: empty chain"
    assert (live_dir / "fullchain.pem").read_bytes() == cert_pem + chain_pem
    key = serialization.load_pem_private_key((live_dir / "privkey.pem").read_bytes(), None)
    assert _public(key.public_key()) == _public(cert.public_key()), (
        f"{live_dir}: key does not match cert"
    )
    if roots is not None:
        verified = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(roots),
                "-untrusted",
                str(live_dir / "chain.pem"),
                str(live_dir / "cert.pem"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
    return versions.pop()


def check_state(state: Path, roots: Path | None = None) -> dict[str, int]:
    """Every lineage in live/ is whole; returns name -> version."""
    live = state / "live"
    found: dict[str, int] = {}
    if live.is_dir():
        for entry in sorted(live.iterdir()):
            if entry.name.startswith("."):
                continue
            found[entry.name] = check_lineage(entry, roots)
    return found


def temp_files(state: Path) -> list[Path]:
    return sorted(p for p in state.rglob("*") if p.name.endswith(".acmelb-tmp"))
