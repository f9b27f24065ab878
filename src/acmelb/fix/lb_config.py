"""TCP pass-through configuration for HAProxy and nginx.

An LB in HTTP mode can answer ``/.well-known/acme-challenge/`` itself (many
appliances and ingress controllers with built-in ACME do); in TCP mode it
forwards the bytes and the backend's responder answers. Port 443 is passed
through too, so TLS terminates on the backends that hold the certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from acmelb.errors import UsageError
from acmelb.fix.nat_loopback import Backend, parse_backend

PORTS = (80, 443)
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def parse_backends(vip: str, backends: Sequence[str]) -> tuple[str, list[Backend]]:
    try:
        ip = ipaddress.ip_address(vip)
    except ValueError as exc:
        raise UsageError(f"--vip {vip!r}: not an IP address") from exc
    if not backends:
        raise UsageError("give at least one --backend IP[:PORT]")
    return str(ip), [parse_backend(text, 80, ip.version) for text in backends]


def _bind(vip: str, port: int) -> str:
    return f"[{vip}]:{port}" if ":" in vip else f"{vip}:{port}"


def _with_port(backend: Backend, port: int) -> str:
    # A backend given with an explicit port keeps it for :80; :443 goes to 443.
    target = backend.port if port == 80 else 443
    return _bind(backend.address, target)


def haproxy_config(vip: str, backends: Sequence[Backend], *, with_globals: bool = True) -> str:
    out = []
    if with_globals:
        out += [
            "global",
            "    log stdout format raw local0",
            "",
            "defaults",
            "    log global",
            "    timeout connect 5s",
            "    timeout client 30s",
            "    timeout server 30s",
            "",
        ]
    for port in PORTS:
        out += [
            f"# TCP pass-through on {port}: the backends answer HTTP-01 themselves.",
            f"frontend acme_tcp_{port}",
            "    mode tcp",
            f"    bind {_bind(vip, port)}",
            f"    default_backend acme_backends_{port}",
            "",
            f"backend acme_backends_{port}",
            "    mode tcp",
            "    balance roundrobin",
        ]
        out += [
            f"    server backend{i + 1} {_with_port(b, port)} check" for i, b in enumerate(backends)
        ]
        out.append("")
    return "\n".join(out)


def nginx_stream_config(vip: str, backends: Sequence[Backend], *, with_main: bool = True) -> str:
    body = []
    for port in PORTS:
        body += [f"    upstream acme_backends_{port} {{"]
        body += [f"        server {_with_port(b, port)};" for b in backends]
        body += [
            "    }",
            "    server {",
            f"        listen {_bind(vip, port)};",
            f"        proxy_pass acme_backends_{port};",
            "    }",
        ]
    stream = [
        "# TCP pass-through (stream module): the backends answer HTTP-01 themselves.",
        "# Top level of nginx.conf, not inside http {}; remove any http server that",
        "# listens on these ports.",
        "stream {",
        *body,
        "}",
    ]
    if not with_main:
        return "\n".join(stream) + "\n"
    # A whole file: the stream module is dynamic on Debian (libnginx-mod-stream).
    return "\n".join([f"load_module {STREAM_MODULE};", "events {}", *stream]) + "\n"
