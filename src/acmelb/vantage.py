"""Vantages: the places a probe runs from.

``Local`` runs ``acmelb.probe`` in this process.  ``CommandPrefix`` runs the
same probe source elsewhere: ``PREFIX python3 - --request-b64 B64`` with the
source on standard input (``ssh node1``, ``kubectl exec -n ns pod --``,
``ip netns exec ns``), and falls back to ``curl`` when the far side has no
``python3``.  Either way the result is the probe's JSON (``acmelb.probe/v1``);
a vantage that cannot run a probe returns a ``VantageFailure``, not an
exception.
"""

from __future__ import annotations

import base64
import enum
import importlib.resources
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Protocol

from acmelb import probe as _probe
from acmelb.errors import UsageError


class Role(enum.Enum):
    INSIDE = "inside"
    OUTSIDE = "outside"


@dataclass
class VantageFailure:
    """The vantage could not run a probe: what was tried and what it said."""

    reason: str
    details: list[str]


ProbeResult = dict[str, Any]


class Vantage(Protocol):
    role: Role

    @property
    def label(self) -> str: ...

    @property
    def remote(self) -> bool: ...

    def run(self, request: dict[str, Any], budget: float) -> ProbeResult | VantageFailure: ...


def probe_source() -> str:
    """The probe's own source text, as shipped to remote vantages."""
    return importlib.resources.files("acmelb").joinpath("probe.py").read_text("utf-8")


class Local:
    """This process; resolution is done by the caller (DNS like a CA, or --resolve)."""

    remote = False

    def __init__(self, role: Role) -> None:
        self.role = role

    @property
    def label(self) -> str:
        return f"{self.role.value}:local"

    def run(self, request: dict[str, Any], budget: float) -> ProbeResult | VantageFailure:
        return _probe.run_request(request)


def _excerpt(text: bytes | str | None, limit: int = 300) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


class CommandPrefix:
    """A command prefix that reaches another host, pod or network namespace."""

    remote = True

    def __init__(self, role: Role, prefix: str) -> None:
        try:
            argv = shlex.split(prefix)
        except ValueError as exc:
            raise UsageError(f"--{role.value} {prefix!r}: {exc}") from None
        if not argv:
            raise UsageError(f"--{role.value}: empty command")
        if shutil.which(argv[0]) is None:
            raise UsageError(f"--{role.value} {prefix!r}: command {argv[0]!r} not found")
        self.role = role
        self.prefix = prefix
        self.argv = with_stdin(argv)

    @property
    def label(self) -> str:
        return f"{self.role.value}:{self.prefix}"

    def run(self, request: dict[str, Any], budget: float) -> ProbeResult | VantageFailure:
        b64 = base64.b64encode(json.dumps(request).encode("utf-8")).decode("ascii")
        cmd = [*self.argv, "python3", "-", "--request-b64", b64]
        details: list[str] = []
        try:
            proc = subprocess.run(
                cmd, input=probe_source().encode("utf-8"), capture_output=True, timeout=budget
            )
        except subprocess.TimeoutExpired:
            return VantageFailure(
                f"the probe did not finish within {budget:.0f} s", [f"{self.prefix} python3 -"]
            )
        except OSError as exc:
            return VantageFailure(f"cannot run {self.argv[0]!r}: {exc}", [])
        result = _parse(proc.stdout)
        if result is not None:
            return result
        said = _excerpt(proc.stderr) or _excerpt(proc.stdout)
        if not said and proc.returncode == 0:
            said = "no output (does the prefix pass standard input to the command?)"
        details.append(f"`{self.prefix} python3 -` exited {proc.returncode}: {said or 'no output'}")
        if proc.returncode == 255 and self.argv[0] == "ssh":
            return VantageFailure("ssh failed", details)
        curl = curl_probe(self.argv, request, budget)
        if isinstance(curl, VantageFailure):
            details.extend(curl.details)
            return VantageFailure("neither python3 nor curl could run a probe there", details)
        curl["fallback_note"] = details[0]
        return curl


_STDIN_FLAGS = {"-i", "--stdin", "-it", "-ti", "--interactive"}


def with_stdin(argv: list[str]) -> list[str]:
    """``kubectl exec``/``oc exec``/``docker exec``/``podman exec`` pass standard input only
    with ``-i``: add it, since the probe's source travels on standard input."""
    tool = argv[0].rsplit("/", 1)[-1]
    if tool not in ("kubectl", "oc", "docker", "podman", "nerdctl", "crictl") or "exec" not in argv:
        return list(argv)
    if any(a in _STDIN_FLAGS or (a.startswith("--stdin=") and a != "--stdin=false")
           for a in argv):
        return list(argv)
    i = argv.index("exec") + 1
    return [*argv[:i], "-i", *argv[i:]]


def _parse(stdout: bytes) -> ProbeResult | None:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                return None
            if isinstance(data, dict) and data.get("schema") == _probe.PROBE_SCHEMA:
                if "error" in data:
                    return None
                return data
    return None


# ---------------------------------------------------------------------------
# curl fallback: fewer details (no redirect chain, resolution by curl itself).

_CURL_MARK = "\n@@ACMELB@@"
_CURL_FORMAT = (_CURL_MARK + " %{http_code} %{remote_ip} %{size_download} %{time_total} "
               "%{num_redirects} %{url_effective}")

_CURL_EXIT = {
    7: ("connect-refused", "connection refused (curl exit 7)"),
    28: ("connect-timeout", "timed out (curl exit 28)"),
    52: ("empty-reply", "empty reply from server (curl exit 52)"),
    56: ("reset", "failure receiving data, connection reset (curl exit 56)"),
    6: ("dns-error", "could not resolve host (curl exit 6)"),
    35: ("tls-on-http-port", "TLS error (curl exit 35)"),
    1: ("redirect-error", "unsupported protocol in a redirect (curl exit 1)"),
    47: ("redirect-error", "stopped after 10 redirects (curl exit 47)"),
    8: ("bad-response", "weird server reply (curl exit 8)"),
}


def curl_probe(
    prefix: list[str], request: dict[str, Any], budget: float
) -> ProbeResult | VantageFailure:
    opts = request.get("options") or {}
    timeout = float(opts.get("connect_timeout", 5.0))
    total = float(opts.get("total_timeout", timeout * 2))
    repeat = max(1, int(request.get("repeat", 1)))
    attempts: list[dict[str, Any]] = []
    resolution: dict[str, Any] = {
        "name": request["name"], "source": "curl", "aaaa": [], "a": [], "error": None,
    }
    for n in range(1, repeat + 1):
        cmd = [
            *prefix, "curl", "-sS", "--http1.1", "-o", "-", "-D", "-",
            "--connect-timeout", f"{timeout:g}", "--max-time", f"{total:g}",
            "-L", "--max-redirs", "10", "--proto-redir", "=http,https",
            "-H", "Accept: */*", "-A", _probe.DEFAULT_USER_AGENT, "-w", _CURL_FORMAT,
            request["url"],
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=budget)
        except (subprocess.TimeoutExpired, OSError) as exc:
            return VantageFailure("curl did not run", [f"curl: {exc}"])
        out = proc.stdout.decode("utf-8", "replace")
        if _CURL_MARK not in out:
            return VantageFailure(
                "curl did not run",
                [f"`{shlex.join(prefix)} curl` exited {proc.returncode}: "
                 f"{_excerpt(proc.stderr) or 'no output'}"],
            )
        body_part, _, trailer = out.rpartition(_CURL_MARK)
        fields = trailer.split()
        code, remote_ip = int(fields[0]), fields[1] if len(fields) > 1 else ""
        hop: dict[str, Any] = _probe.new_hop(
            request["url"], address=remote_ip or None, port=80,
            family="ipv6" if ":" in remote_ip else "ipv4", outcome="response",
            elapsed_ms=int(float(fields[3]) * 1000) if len(fields) > 3 else 0)
        if proc.returncode != 0 or code == 0:
            outcome, text = _CURL_EXIT.get(
                proc.returncode, ("connect-error", f"curl exit {proc.returncode}")
            )
            hop["outcome"] = outcome
            hop["error"] = f"{text}: {_excerpt(proc.stderr, 160)}"
        redirects: list[dict[str, Any]] = []
        if proc.returncode == 0 and code != 0:
            # -D - prints the header block of every hop before the final body
            rest = body_part
            current = str(request["url"])
            hops = int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 0
            for _ in range(hops):
                block, _sep, rest = rest.partition("\r\n\r\n")
                status, reason, headers = _parse_head(block)
                location = next((v for k, v in headers if k.lower() == "location"), "")
                target = _probe._join_url(current, location) if location else current
                redirects.append({**hop, "url": current, "status": status, "reason": reason,
                                  "headers": headers, "location": location,
                                  "redirect_to": target, "body": "", "body_length": 0})
                current = target
            head, _sep, body = rest.partition("\r\n\r\n")
            status, reason, headers = _parse_head(head)
            hop["url"] = fields[5] if len(fields) > 5 else current
            hop["status"] = code
            hop["reason"] = reason
            hop["headers"] = headers
            hop["body"] = body[: _probe.BODY_KEEP]
            hop["body_length"] = len(body.encode("utf-8"))
        if remote_ip:
            key = "aaaa" if ":" in remote_ip else "a"
            if remote_ip not in resolution[key]:
                resolution[key].append(remote_ip)
        attempts.append({
            "address": remote_ip or "?", "attempt": n, "target": "public",
            "proxy_protocol": False, "final": hop, "redirects": redirects,
        })
    return {
        "schema": _probe.PROBE_SCHEMA, "runner": "curl", "python": None, "host": None,
        "name": request["name"], "url": request["url"], "resolution": resolution,
        "attempts": attempts, "elapsed_ms": sum(a["final"]["elapsed_ms"] for a in attempts),
    }


def _parse_head(block: str) -> tuple[int | None, str, list[list[str]]]:
    lines = block.split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    reason = parts[2] if len(parts) > 2 else ""
    headers = [[k.strip(), v.strip()] for k, _, v in (ln.partition(":") for ln in lines[1:]) if k]
    return status, reason, headers


def parse_here(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise UsageError(f"--here {text!r}: expected 'inside' or 'outside'") from None
