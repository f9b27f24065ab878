"""Run Pebble, the ACME test CA, as a child process.

The test CA is Pebble 2.10 (Debian unstable's ``pebble``: ARI, profiles, ``replaces``,
IP identifiers), which ``./dev`` unpacks into ``.tools/pebble`` and links into the venv;
``pebble_binary`` finds it there first. Debian's ``pebble`` ships no configuration and no
TLS certificate, so this module generates both: a throw-away CA and a leaf for the
listen address (the file to pass as ``--ca-bundle``). Determinism matters in tests:
``PEBBLE_VA_NOSLEEP=1`` and ``PEBBLE_AUTHZREUSE=0`` are always set and nonce rejection
defaults to 0. Pebble is always pointed at a DNS server with ``-dnsserver`` (2.10 asks it
over TCP).

Profiles carry Let's Encrypt's names (``classic``, ``tlsserver``, ``shortlived``). Pebble
gives an order that names no profile a random one, so unless a test asks for distinct
validities (``profiles``) all three have the same one: ``certificate_validity`` seconds,
or 90 days. ``set_renewal_info`` moves a certificate's ARI window (a revocation drill),
and ``count_log`` counts the orders, certificates and failed validations Pebble logged.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acmelb.errors import LabError

PEBBLE_BINARY = "pebble"
PROFILES = ("classic", "tlsserver", "shortlived")  # Let's Encrypt's profile names
DEFAULT_VALIDITY = 90 * 86400
# Let's Encrypt's validity periods (2026): classic 90 days, tlsserver 45, shortlived 160 h
LETSENCRYPT_PROFILES = {"classic": 90 * 86400, "tlsserver": 45 * 86400, "shortlived": 160 * 3600}
# Pebble's log lines for a new order and an issued certificate.
ORDER_LINE = "Added order "
ISSUED_LINE = "Issued certificate serial "
INVALID_AUTHZ_LINE = " set INVALID by completed challenge "  # the VA failed a validation


def _write_tls_material(workdir: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a leaf certificate for ``host`` (an IP address or a DNS name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmelb lab Pebble TLS CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=29))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = workdir / "tls-ca.pem"
    cert_path = workdir / "tls-cert.pem"
    key_path = workdir / "tls-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(pem))
    cert_path.write_bytes(leaf.public_bytes(pem))
    key_path.write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


@dataclass(frozen=True)
class LogCounts:
    """What Pebble's log says it did: one line per new order, one per certificate, one per
    authorization its VA found invalid (a failed validation, as a CA counts them)."""

    orders: int
    issued: int
    failed_validations: int = 0


def count_log(path: Path) -> LogCounts:
    """Count ``Added order``, ``Issued certificate serial`` and ``set INVALID by completed
    challenge`` lines in a Pebble log.

    The log is appended to across restarts of the same Pebble (counts are since
    the first start); a missing log counts as nothing.
    """
    orders = issued = failed = 0
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as log:
        for line in log:
            if ORDER_LINE in line:
                orders += 1
            elif ISSUED_LINE in line:
                issued += 1
            elif INVALID_AUTHZ_LINE in line:
                failed += 1
    return LogCounts(orders, issued, failed)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pebble_binary() -> str | None:
    """The Pebble to run: ``$ACMELB_PEBBLE``, else the one ``./dev`` linked into this
    Python's environment (2.10), else ``pebble`` on the PATH; None when there is none."""
    configured = os.environ.get("ACMELB_PEBBLE")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    linked = Path(sys.prefix) / "bin" / PEBBLE_BINARY
    if os.access(linked, os.X_OK):
        return str(linked)
    return shutil.which(PEBBLE_BINARY)


class PebbleCA:
    """A running Pebble: ``directory_url``, ``ca_bundle`` and ``root_pem()``.

    ``validation_port`` is the port Pebble's VA connects to for HTTP-01 (80 in
    the lab, a high port on the loopback). ``netns_prefix`` runs Pebble in a
    namespace, e.g. ``["ip", "netns", "exec", "alb1234-pub"]``. Ports given as 0
    are picked free on the loopback (only meaningful without a namespace).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 14000,
        management_port: int = 15000,
        validation_port: int = 5002,
        dns_server: str = "127.0.0.1:8053",
        netns_prefix: Sequence[str] = (),
        nonce_reject_percent: int = 0,
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        certificate_validity: int | None = None,
        profiles: Mapping[str, int] | None = None,
    ) -> None:
        binary = pebble_binary()
        if binary is None:
            raise LabError("pebble is not installed (./dev setup fetches Pebble 2.10)")
        self.binary = binary
        self.host = host
        self.port = port or _free_port(host)
        self.management_port = management_port or _free_port(host)
        self.validation_port = validation_port
        self.dns_server = dns_server
        self.certificate_validity = certificate_validity
        validity = certificate_validity or DEFAULT_VALIDITY
        self.profiles = dict(profiles) if profiles else dict.fromkeys(PROFILES, validity)
        self._prefix = list(netns_prefix)
        self._env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_AUTHZREUSE": "0",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject_percent),
            **(env or {}),
        }
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="acmelb-pebble-"))
        self.ca_bundle, self._cert, self._key = _write_tls_material(self.workdir, host)
        self.log_path = self.workdir / "pebble.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def _base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def directory_url(self) -> str:
        return f"{self._base}/dir"

    @property
    def management_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.management_port}"

    def start(self, timeout: float = 15.0) -> PebbleCA:
        host = f"[{self.host}]" if ":" in self.host else self.host
        config: dict[str, dict[str, Any]] = {
            "pebble": {
                "listenAddress": f"{host}:{self.port}",
                "managementListenAddress": f"{host}:{self.management_port}",
                "certificate": str(self._cert),
                "privateKey": str(self._key),
                "httpPort": self.validation_port,
                "tlsPort": 5001,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        config["pebble"]["profiles"] = {
            name: {"description": f"{name}: {seconds} s", "validityPeriod": seconds}
            for name, seconds in self.profiles.items()
        }
        config_path = self.workdir / "pebble-config.json"
        config_path.write_text(json.dumps(config, indent=2))
        cmd = [
            *self._prefix,
            self.binary,
            "-config",
            str(config_path),
            "-dnsserver",
            self.dns_server,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self._env},
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LabError(f"pebble exited at start: {self._log_tail()}")
            if self._answers("/dir", 0.5) is not None:
                return self
            time.sleep(0.05)
        self.stop()
        raise LabError(f"pebble did not answer on {self.directory_url} within {timeout:.0f} s")

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def _answers(self, path: str, timeout: float, base: str | None = None) -> bytes | None:
        if self._prefix:
            # The CA lives in a namespace: ask from inside it.
            proc = subprocess.run(
                [
                    *self._prefix,
                    "curl",
                    "-sS",
                    "--fail",
                    "--max-time",
                    str(timeout),
                    "--cacert",
                    str(self.ca_bundle),
                    f"{base or self._base}{path}",
                ],
                capture_output=True,
                check=False,
            )
            return proc.stdout if proc.returncode == 0 else None
        try:
            with urllib.request.urlopen(
                f"{base or self._base}{path}", timeout=timeout, context=self._ssl_context()
            ) as response:
                body: bytes = response.read()
                return body
        except (OSError, urllib.error.URLError):
            return None

    def set_renewal_info(
        self,
        cert_pem: bytes,
        start: datetime.datetime,
        end: datetime.datetime,
        explanation_url: str | None = None,
    ) -> None:
        """Move the ARI window of a certificate Pebble issued (its management port's
        ``/set-renewal-info/``): a window in the past is a CA's "replace it now"."""

        def stamp(moment: datetime.datetime) -> str:
            return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        window: dict[str, Any] = {"suggestedWindow": {"start": stamp(start), "end": stamp(end)}}
        if explanation_url:
            window["explanationURL"] = explanation_url
        body = json.dumps({"certificate": cert_pem.decode(), "ariResponse": json.dumps(window)})
        if self._post(f"{self.management_url}/set-renewal-info/", body.encode()) is None:
            raise LabError("Pebble refused the renewal window (set-renewal-info)")

    def _post(self, url: str, body: bytes, timeout: float = 5.0) -> bytes | None:
        if self._prefix:
            curl = ["curl", "-sS", "--fail", "--max-time", str(timeout), "--data-binary", "@-"]
            proc = subprocess.run(
                [*self._prefix, *curl, "--cacert", str(self.ca_bundle), url],
                input=body,
                capture_output=True,
                check=False,
            )
            return proc.stdout if proc.returncode == 0 else None
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("User-Agent", "acmelb-lab")  # Pebble 2.10 refuses a request without
        try:
            with urllib.request.urlopen(
                request, timeout=timeout, context=self._ssl_context()
            ) as response:
                answer: bytes = response.read()
                return answer
        except (OSError, urllib.error.URLError):
            return None

    def root_pem(self) -> bytes:
        """The root of the certificates Pebble issues (fresh at every Pebble start)."""
        body = self._answers("/roots/0", 5.0, base=self.management_url)
        if body is None:
            raise LabError("could not fetch Pebble's root from its management port")
        return body

    def intermediate_pem(self) -> bytes:
        body = self._answers("/intermediates/0", 5.0, base=self.management_url)
        if body is None:
            raise LabError("could not fetch Pebble's intermediate from its management port")
        return body

    def is_hung(self, timeout: float = 3.0) -> bool:
        """Pebble 2.4 can deadlock: the directory answers, everything else hangs."""
        return (
            self._answers("/dir", timeout) is not None
            and self._answers("/nonce-plz", timeout) is None
        )

    def counts(self) -> LogCounts:
        """Orders created and certificates issued so far (from Pebble's log)."""
        return count_log(self.log_path)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else "(no output)"
        return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> PebbleCA:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PebbleCA:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
