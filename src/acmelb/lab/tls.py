"""The cluster lab's TLS side: each backend's agent directory and nginx on 443, fingerprints.

Per backend ``bI``, under the lab's state directory:

- ``bI-agent/``: the agent's state directory (``live/NAME/fullchain.pem``...);
- ``bI-tls/``: an nginx on 443 (its ``nginx.conf``, ``sites.conf``, pid file,
  logs) serving the certificates found in ``bI-agent/live``, and
  ``bI-tls/deploy-hook``, the command that makes it pick up new ones.

``topology`` writes these files and starts the nginx while building a cluster
lab; ``cluster`` (the agents) and the tests read the paths and compare the
certificates served by their fingerprints. Imports only ``configs`` of the lab.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

from acmelb.errors import LabError
from acmelb.lab import configs

TLS_PORT = 443
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def agent_state_dir(state_dir: Path, role: str) -> Path:
    return state_dir / f"{role}-agent"


def tls_workdir(state_dir: Path, role: str) -> Path:
    return state_dir / f"{role}-tls"


def deploy_hook_path(state_dir: Path, role: str) -> Path:
    return tls_workdir(state_dir, role) / "deploy-hook"


def write_tls_server(state_dir: Path, role: str, *, ipv6: bool) -> list[str]:
    """Write ``role``'s agent directory, nginx config and deploy hook; return the nginx
    command line that serves them."""
    workdir = tls_workdir(state_dir, role)
    (workdir / "tmp").mkdir(parents=True)
    live = agent_state_dir(state_dir, role) / "live"
    live.mkdir(parents=True)
    config = workdir / "nginx.conf"
    config.write_text(configs.tls_nginx_config(workdir, ipv6=ipv6))
    (workdir / "sites.conf").write_text("")
    hook = deploy_hook_path(state_dir, role)
    hook.write_text(configs.tls_deploy_hook(workdir, live, ipv6=ipv6))
    hook.chmod(0o755)
    return ["nginx", "-e", str(workdir / "error.log"), "-c", str(config), "-g", "daemon off;"]


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
