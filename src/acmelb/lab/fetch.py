"""Plain HTTP fetches from a namespace with curl: the lab's ground-truth instrument.

Deliberately not acmelb's own probe: the ground truth of the lab must not
depend on the code it is used to test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# curl exit codes -> what happened on the wire.
_OUTCOMES = {0: "response", 7: "refused", 28: "timeout", 52: "empty-reply", 56: "reset"}
_HEADERS_MARK = "\n@@acmelb-headers@@\n"


@dataclass(frozen=True)
class FetchResult:
    """``outcome``: response, timeout, refused, unreachable, empty-reply, reset or error."""

    outcome: str
    status: int | None = None
    body: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""
    elapsed: float = 0.0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def location(self) -> str | None:
        values = self.headers.get("location")
        return values[0] if values else None

    def __str__(self) -> str:
        if self.outcome != "response":
            return f"{self.outcome} after {self.elapsed:.1f} s ({self.error})"
        return f"HTTP {self.status} {self.text[:60]!r}"


def curl_fetch(
    prefix: Sequence[str],
    url: str,
    *,
    address: str | None = None,
    proxy_protocol: bool = False,
    connect_timeout: float = 1.0,
    max_time: float = 3.0,
    headers: Sequence[str] = (),
) -> FetchResult:
    """GET ``url`` with curl run under ``prefix`` (e.g. ``ip netns exec NS``)."""
    argv = [
        *prefix,
        "curl",
        "--silent",
        "--output",
        "-",
        "--connect-timeout",
        f"{connect_timeout:g}",
        "--max-time",
        f"{max_time:g}",
        "--write-out",
        "%{stderr}%{json}" + _HEADERS_MARK.replace("\n", "\\n") + "%{header_json}",
    ]
    if address is not None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        argv += ["--resolve", f"{parts.hostname}:{port}:{address}"]
    if proxy_protocol:
        argv.append("--haproxy-protocol")
    for header in headers:
        argv += ["--header", header]
    argv.append(url)
    proc = subprocess.run(argv, capture_output=True, check=False, timeout=max_time + 10)
    stderr = proc.stderr.decode("utf-8", errors="replace")
    meta_text, _, headers_text = stderr.partition(_HEADERS_MARK)
    try:
        meta = json.loads(meta_text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return FetchResult("error", error=stderr.strip() or f"curl exited {proc.returncode}")
    try:
        parsed_headers = {
            key.lower(): list(value) for key, value in json.loads(headers_text or "{}").items()
        }
    except ValueError:
        parsed_headers = {}
    code = int(meta.get("exitcode", proc.returncode))
    error = meta.get("errormsg") or ""
    outcome = _OUTCOMES.get(code, "error")
    if code == 7 and "No route" in error:
        outcome = "unreachable"
    status = int(meta["http_code"]) if code == 0 else None
    return FetchResult(
        outcome,
        status,
        proc.stdout if code == 0 else b"",
        parsed_headers,
        error,
        float(meta.get("time_total", 0.0)),
    )
