"""Vantages: the places a probe runs from.

``Local`` runs ``acmelb.doctor.probe`` in this process.  ``CommandPrefix`` runs the
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
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from acmelb.doctor import probe as _probe
from acmelb.errors import UsageError

if TYPE_CHECKING:
    from acmelb.doctor.checks.base import Options


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
    return importlib.resources.files("acmelb.doctor").joinpath("probe.py").read_text("utf-8")


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
            raise UsageError(f"--{role.value} {prefix!r}: {exc}") from exc
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
    if any(a in _STDIN_FLAGS or (a.startswith("--stdin=") and a != "--stdin=false") for a in argv):
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
_CURL_FORMAT = (
    _CURL_MARK + " %{http_code} %{remote_ip} %{size_download} %{time_total} "
    "%{num_redirects} %{url_effective}"
)

_CURL_EXIT = {
    7: ("connect-refused", "connection refused (curl exit 7)"),
    28: ("connect-timeout", "timed out (curl exit 28)"),
    52: ("empty-reply", "empty reply from server (curl exit 52)"),
    56: ("reset", "failure receiving data, connection reset (curl exit 56)"),
    6: ("dns-error", "could not resolve host (curl exit 6)"),
    35: ("tls-on-http-port", "TLS error (curl exit 35)"),
    1: ("redirect-error", "unsupported protocol in a redirect (curl exit 1)"),
    47: ("redirect-error", "stopped after 11 redirects (curl exit 47)"),
    8: ("bad-response", "weird server reply (curl exit 8)"),
}


def curl_probe(
    prefix: list[str], request: dict[str, Any], budget: float
) -> ProbeResult | VantageFailure:
    """The probe's result for ``request`` made with curl through ``prefix`` (no python3
    there): one attempt per ``repeat``, the addresses curl connected to as resolution."""
    opts = request.get("options") or {}
    timeout = float(opts.get("connect_timeout", 5.0))
    total = float(opts.get("deadline") or opts.get("total_timeout", timeout * 2))
    repeat = max(1, int(request.get("repeat", 1)))
    attempts: list[dict[str, Any]] = []
    resolution: dict[str, Any] = {
        "name": request["name"],
        "source": "curl",
        "aaaa": [],
        "a": [],
        "error": None,
    }
    cmd = _curl_command(prefix, request["url"], timeout, total)
    for n in range(1, repeat + 1):
        attempt = _curl_attempt(cmd, prefix, request, budget, n)
        if isinstance(attempt, VantageFailure):
            return attempt
        remote_ip = attempt["final"]["address"] or ""
        if remote_ip:
            key = "aaaa" if ":" in remote_ip else "a"
            if remote_ip not in resolution[key]:
                resolution[key].append(remote_ip)
        attempts.append(attempt)
    return {
        "schema": _probe.PROBE_SCHEMA,
        "runner": "curl",
        "python": None,
        "host": None,
        "name": request["name"],
        "url": request["url"],
        "resolution": resolution,
        "attempts": attempts,
        "elapsed_ms": sum(a["final"]["elapsed_ms"] for a in attempts),
    }


def _curl_command(prefix: list[str], url: str, timeout: float, total: float) -> list[str]:
    """curl as the probe fetches: HTTP/1.1, redirects followed (http and https only),
    gzip asked for, every hop's header block and then the body on standard output,
    ``_CURL_FORMAT``'s trailer last."""
    return [
        *prefix,
        "curl",
        "-sS",
        "--http1.1",
        "-o",
        "-",
        "-D",
        "-",
        "--connect-timeout",
        f"{timeout:g}",
        "--max-time",
        f"{total:g}",
        "-L",
        "--max-redirs",
        str(_probe.MAX_HOPS),
        "--proto-redir",
        "=http,https",
        "-H",
        "Accept: */*",
        # as the probe (and Go's transport): ask for gzip, decode it
        "--compressed",
        "-H",
        "Accept-Encoding: gzip",
        "-A",
        _probe.DEFAULT_USER_AGENT,
        # no URL globbing: an IPv6 target's URL is bracketed (http://[2001:db8::1]/...)
        "--globoff",
        "-w",
        _CURL_FORMAT,
        url,
    ]


def _curl_attempt(
    cmd: list[str], prefix: list[str], request: dict[str, Any], budget: float, n: int
) -> dict[str, Any] | VantageFailure:
    """Attempt ``n``: run ``cmd``, read its output into the probe's attempt."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=budget)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return VantageFailure("curl did not run", [f"curl: {exc}"])
    out = proc.stdout.decode("utf-8", "replace")
    if _CURL_MARK not in out:
        return VantageFailure(
            "curl did not run",
            [
                f"`{shlex.join(prefix)} curl` exited {proc.returncode}: "
                f"{_excerpt(proc.stderr) or 'no output'}"
            ],
        )
    body_part, _, trailer = out.rpartition(_CURL_MARK)
    fields = trailer.split()
    code, remote_ip = int(fields[0]), fields[1] if len(fields) > 1 else ""
    hop: dict[str, Any] = _probe.new_hop(
        request["url"],
        address=remote_ip or None,
        port=80,
        family="ipv6" if ":" in remote_ip else "ipv4",
        outcome="response",
        elapsed_ms=int(float(fields[3]) * 1000) if len(fields) > 3 else 0,
    )
    if proc.returncode != 0 or code == 0:
        outcome, text = _CURL_EXIT.get(
            proc.returncode, ("connect-error", f"curl exit {proc.returncode}")
        )
        hop["outcome"] = outcome
        hop["error"] = f"{text}: {_excerpt(proc.stderr, 160)}"
    redirects: list[dict[str, Any]] = []
    if proc.returncode == 0 and code != 0:
        redirects = _curl_response(hop, body_part, fields, str(request["url"]))
    return {
        "address": remote_ip or "?",
        "attempt": n,
        "target": "public",
        "proxy_protocol": False,
        "final": hop,
        "redirects": redirects,
    }


def _curl_response(
    hop: dict[str, Any], output: str, fields: list[str], url: str
) -> list[dict[str, Any]]:
    """Fill ``hop``, the final one, from curl's ``output`` (``-D -`` prints the header
    block of every hop before the final body) and trailer ``fields``; return the
    redirect hops before it, each a copy of ``hop`` as it was then."""
    redirects: list[dict[str, Any]] = []
    rest = output
    current = url
    hops = int(fields[4]) if len(fields) > 4 and fields[4].isdigit() else 0
    for _ in range(hops):
        block, _sep, rest = rest.partition("\r\n\r\n")
        status, reason, headers = _probe.parse_head(block)
        location = next((v for k, v in headers if k.lower() == "location"), "")
        target = _probe.join_url(current, location) if location else current
        redirects.append(
            {
                **hop,
                "url": current,
                "status": status,
                "reason": reason,
                "headers": headers,
                "location": location,
                "redirect_to": target,
                "body": "",
                "body_length": 0,
            }
        )
        current = target
    head, _sep, body = rest.partition("\r\n\r\n")
    status, reason, headers = _probe.parse_head(head)
    hop["url"] = fields[5] if len(fields) > 5 else current
    hop["status"] = int(fields[0])
    hop["reason"] = reason
    hop["headers"] = headers
    hop["body"] = body[: _probe.BODY_KEEP]
    hop["body_length"] = len(body.encode("utf-8"))
    return redirects


def parse_here(text: str) -> Role:
    try:
        return Role(text)
    except ValueError as exc:
        raise UsageError(f"--here {text!r}: expected 'inside' or 'outside'") from exc


# ---------------------------------------------------------------------------
# Probe settings: where and how to probe, shared by diagnose, issue, renew and the agent.


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def parse_resolve(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """--resolve NAME:ADDRESS (or curl's NAME:80:ADDRESS) values as (name, address) pairs."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, addr = item.partition(":")
        if not name or not sep:
            raise UsageError(f"--resolve {item!r}: expected NAME:ADDRESS")
        if not _is_ip(addr):
            # curl's NAME:PORT:ADDRESS form is accepted too (the port must be 80)
            port, _, rest = addr.partition(":")
            if not (port.isdigit() and _is_ip(rest)):
                raise UsageError(f"--resolve {item!r}: expected NAME:ADDRESS")
            if port != "80":
                raise UsageError(f"--resolve {item!r}: only port 80 is probed")
            addr = rest
        pairs.append((name.lower().rstrip("."), addr.strip("[]")))
    return tuple(pairs)


def resolve_map(items: Sequence[str]) -> dict[str, list[str]]:
    """--resolve values as a name -> addresses map (the form ``Options.resolve`` takes)."""
    return _as_map(parse_resolve(items))


def _as_map(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, address in pairs:
        out.setdefault(name, []).append(address)
    return out


@dataclass(frozen=True)
class ProbeSettings:
    """Where to probe from and how: the vantage options of diagnose, issue and renew.

    Validated on construction with the command line's messages, so a value read
    back from a renewal configuration is checked exactly like a flag.
    """

    here: Role = Role.OUTSIDE
    inside: tuple[str, ...] = ()  # command prefixes of vantages behind the LB
    outside: tuple[str, ...] = ()  # command prefixes of vantages on the public side
    resolve: tuple[tuple[str, str], ...] = ()  # (name, address), in the order given
    dns_server: tuple[str, int] | None = None
    timeout: float = 10.0  # per connection attempt (the whole validation: 1.5 x)
    repeat: int = 3  # probes per address
    assume_public: tuple[str, ...] = ()  # CIDRs treated as public (labs, test networks)
    ca_identity: str = "letsencrypt.org"  # the CA's CAA identity

    def __post_init__(self) -> None:
        # frozen: normalise through object.__setattr__ (a str role, lists from callers)
        object.__setattr__(
            self, "here", parse_here(self.here) if isinstance(self.here, str) else self.here
        )
        for name in ("inside", "outside", "assume_public"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "resolve", tuple((str(n), str(a)) for n, a in self.resolve))
        if not 1 <= self.repeat <= 50:
            raise UsageError("--repeat must be between 1 and 50")
        if not 0 < self.timeout <= 120:
            raise UsageError("--timeout must be between 0 and 120 seconds")
        for value in self.assume_public:
            _check_public(value)
        for name, address in self.resolve:
            if not name or not _is_ip(address):
                raise UsageError(f"--resolve {name}:{address}: expected NAME:ADDRESS")
        if self.dns_server is not None:
            from acmelb.doctor.resolution import parse_dns_server

            host, port = self.dns_server
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            object.__setattr__(self, "dns_server", parse_dns_server(shown))

    @classmethod
    def from_cli(
        cls,
        *,
        here: str = "outside",
        inside: Sequence[str] = (),
        outside: Sequence[str] = (),
        resolve: Sequence[str] = (),
        dns_server: str | None = None,
        timeout: float = 10.0,
        repeat: int = 3,
        assume_public: Sequence[str] = (),
        ca_identity: str = "letsencrypt.org",
    ) -> ProbeSettings:
        """From the flags' text: --resolve NAME:ADDRESS values, --dns-server ADDRESS[:PORT]."""
        from acmelb.doctor.resolution import parse_dns_server

        return cls(
            here=parse_here(here),
            inside=tuple(inside),
            outside=tuple(outside),
            resolve=parse_resolve(resolve),
            dns_server=parse_dns_server(dns_server) if dns_server else None,
            timeout=timeout,
            repeat=repeat,
            assume_public=tuple(assume_public),
            ca_identity=ca_identity,
        )

    @property
    def resolve_map(self) -> dict[str, list[str]]:
        return _as_map(self.resolve)

    @property
    def cluster(self) -> bool:
        """Do the inside vantages look like Kubernetes? (Then cluster remedies apply.)"""
        return looks_like_cluster(self.inside)

    def options(self) -> Options:
        from acmelb.doctor.checks.base import Options

        return Options(
            repeat=self.repeat,
            timeout=self.timeout,
            ca_identity=self.ca_identity,
            dns_server=self.dns_server,
            resolve=self.resolve_map,
            assume_public=list(self.assume_public),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "here": self.here.value,
            "inside": list(self.inside),
            "outside": list(self.outside),
            "resolve": [[name, address] for name, address in self.resolve],
            "dns_server": list(self.dns_server) if self.dns_server else None,
            "timeout": self.timeout,
            "repeat": self.repeat,
            "assume_public": list(self.assume_public),
            "ca_identity": self.ca_identity,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeSettings:
        """The inverse of ``to_json``; missing keys take their defaults."""
        default = cls()
        try:
            dns = data.get("dns_server")
            return cls(
                here=parse_here(str(data.get("here", default.here.value))),
                inside=_strings(data.get("inside", ())),
                outside=_strings(data.get("outside", ())),
                resolve=tuple((str(n), str(a)) for n, a in data.get("resolve", ())),
                dns_server=(str(dns[0]), int(dns[1])) if dns else None,
                timeout=float(data.get("timeout", default.timeout)),
                repeat=int(data.get("repeat", default.repeat)),
                assume_public=_strings(data.get("assume_public", ())),
                ca_identity=str(data.get("ca_identity", default.ca_identity)),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise UsageError(f"probe settings: {exc}") from exc


def _check_public(value: str) -> None:
    """An ``--assume-public`` value: a network, or a DNS suffix (such as a lab's ``test``)."""
    try:
        ipaddress.ip_network(value, strict=False)
        return
    except ValueError:
        pass
    labels = value.lower().strip(".").split(".")
    if not all(_SUFFIX_LABEL.match(label) for label in labels):
        raise UsageError(f"--assume-public {value!r}: neither a network nor a DNS suffix")


_SUFFIX_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def looks_like_cluster(inside: Sequence[str]) -> bool:
    """The one guess that inside vantages are Kubernetes pods (kubectl/oc exec)."""
    return any(p.lstrip().startswith(("kubectl", "oc ")) for p in inside)


def build_vantages(settings: ProbeSettings) -> list[Vantage]:
    """This process at ``here``, then the inside and outside command prefixes."""
    vantages: list[Vantage] = [Local(settings.here)]
    vantages += [CommandPrefix(Role.INSIDE, p) for p in settings.inside]
    vantages += [CommandPrefix(Role.OUTSIDE, p) for p in settings.outside]
    return vantages
