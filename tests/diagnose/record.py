"""Record real probe results for the unit tests of the checks.

Run as root: ``.venv/bin/python -m tests.diagnose.record``.  Each scenario
starts a real server (tests/diagnose/servers.py) on a 127.x address, runs the
probe against it exactly as a vantage does, and writes the probe's JSON to
``tests/diagnose/recordings/NAME.json``.  The unit tests load these files and
may rename addresses in them (see ``test_checks.recording``) to combine
vantages, but never change their shape.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acmelb.doctor import probe
from tests.diagnose.servers import (
    KEYAUTH,
    KEYAUTH_TOKEN,
    OTHER_THUMB,
    FullBacklog,
    Server,
    answer,
    by_path,
    close_at_once,
    hang,
    http_response,
    loop_address,
    proxy_required,
    reset,
    round_robin,
    tls_context,
)

OUT = Path(__file__).with_name("recordings")
NAME = "app.example.com"
PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"
URL = f"http://{NAME}{PATH}"
OPTS = {"connect_timeout": 0.5, "read_timeout": 0.5, "total_timeout": 1.5, "body_cap": 1024 * 1024}


def run(
    addresses: list[str],
    repeat: int = 2,
    resolve: dict[str, list[str]] | None = None,
    local: list[str] | None = None,
    url: str = URL,
) -> dict[str, Any]:
    req: dict[str, Any] = {
        "name": NAME,
        "url": url,
        "repeat": repeat,
        "addresses": addresses,
        "resolve": resolve or {},
        "proxy_protocol": "on-failure",
        "options": OPTS,
    }
    if local is not None:
        req["local_probe"] = True
        req["local_addresses"] = local
    return probe.run_request(req)


def with_server(handler: Callable[..., None], **kw: Any) -> Callable[[], dict[str, Any]]:
    def go() -> dict[str, Any]:
        s = Server(handler)
        try:
            return run([s.address], **kw)
        finally:
            s.close()

    return go


def redirect(location: str, status: int = 301) -> Callable[[], dict[str, Any]]:
    def go() -> dict[str, Any]:
        target = Server(answer(200, KEYAUTH))
        s = Server(
            by_path(
                {PATH: http_response(status, "", {"Location": location})},
                http_response(200, KEYAUTH),
            )
        )
        try:
            return run(
                [s.address],
                repeat=1,
                resolve={"other.example.com": [target.address], NAME: [s.address]},
            )
        finally:
            s.close()
            target.close()

    return go


def loop() -> dict[str, Any]:
    s = Server(
        by_path(
            {
                PATH: http_response(302, "", {"Location": "/a"}),
                "/a": http_response(302, "", {"Location": PATH}),
            },
            http_response(404, ""),
        )
    )
    try:
        return run([s.address], repeat=1, resolve={NAME: [s.address]})
    finally:
        s.close()


def too_many() -> dict[str, Any]:
    routes = {PATH: http_response(302, "", {"Location": "/r0"})}
    routes.update({f"/r{i}": http_response(302, "", {"Location": f"/r{i + 1}"}) for i in range(12)})
    s = Server(by_path(routes, http_response(200, KEYAUTH)))
    try:
        return run([s.address], repeat=1, resolve={NAME: [s.address]})
    finally:
        s.close()


def https_redirect() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        addr = loop_address()
        tls = Server(answer(200, KEYAUTH), address=addr, port=443, tls=tls_context(Path(tmp)))
        plain = Server(answer(301, "", {"Location": f"https://{NAME}{PATH}"}), address=addr)
        try:
            return run([addr], repeat=1, resolve={NAME: [addr]})
        finally:
            tls.close()
            plain.close()


def timeout() -> dict[str, Any]:
    fb = FullBacklog()
    try:
        return run([fb.address], repeat=1)
    finally:
        fb.close()


def tls_port() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(answer(200, "x"), tls=tls_context(Path(tmp)))
        try:
            return run([s.address], repeat=1)
        finally:
            s.close()


def ipv6_refused_ipv4_ok() -> dict[str, Any]:
    s = Server(answer(200, KEYAUTH))
    try:
        return run(["::1", s.address], repeat=1)  # nothing listens on [::1]:80 here
    finally:
        s.close()


def backend_direct(
    handler: Callable[..., None], public: Callable[..., None]
) -> Callable[[], dict[str, Any]]:
    """An inside vantage: the public address, then the backend itself (local probe)."""

    def go() -> dict[str, Any]:
        lb = Server(public)
        backend = Server(handler)
        try:
            return run([lb.address], repeat=1, local=[backend.address])
        finally:
            lb.close()
            backend.close()

    return go


HAPROXY_503 = (
    "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to "
    "handle this request.\n</body></html>\n"
)
HTML = "<!doctype html><html><head><title>Shop</title></head><body>" + "x" * 400 + "</body></html>"
OTHER = f"{KEYAUTH_TOKEN}.{OTHER_THUMB}"

SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "ok": with_server(answer(200, KEYAUTH, {"Server": "nginx"})),
    "trailing-newline": with_server(answer(200, KEYAUTH + "\n")),
    "not-found": with_server(
        answer(404, "<html><center>nginx</center></html>", {"Server": "nginx"})
    ),
    "haproxy-503": with_server(answer(503, HAPROXY_503, {"Cache-Control": "no-cache"})),
    "html-page": with_server(answer(200, HTML, {"Server": "Apache"})),
    "small-wrong": with_server(answer(200, "hello")),
    "empty-body": with_server(answer(200, "")),
    "other-thumbprint": with_server(answer(200, OTHER)),
    "refused": lambda: run([loop_address()], repeat=1),
    "timeout": timeout,
    "empty-reply": with_server(close_at_once, repeat=1),
    "reset": with_server(reset, repeat=1),
    # Go refuses a Content-Length that is not digits (net/http/transfer.go)
    "malformed-content-length": with_server(
        answer(200, KEYAUTH, {"Content-Length": f"{len(KEYAUTH)}, {len(KEYAUTH)}"}), repeat=1
    ),
    "read-timeout": with_server(hang(1.0), repeat=1),
    "tls-on-http-port": tls_port,
    "nginx-400-https": with_server(
        answer(400, "<html><center>The plain HTTP request was sent to HTTPS port</center></html>")
    ),
    "proxy-required": with_server(proxy_required(answer(200, KEYAUTH)), repeat=1),
    "round-robin": with_server(round_robin([answer(200, KEYAUTH), answer(404, "")]), repeat=4),
    "redirect-303": redirect(f"http://other.example.com{PATH}", 303),
    "redirect-port": redirect(f"http://other.example.com:8080{PATH}", 302),
    "redirect-well-known": redirect(f"http://{NAME}.well-known/acme-challenge/x", 301),
    "redirect-ip": redirect(f"http://127.0.0.1{PATH}", 301),
    "redirect-ok": redirect(f"http://other.example.com{PATH}", 301),
    "redirect-loop": loop,
    "redirect-too-many": too_many,
    "redirect-https": https_redirect,
    "ipv6-refused": ipv6_refused_ipv4_ok,
    "inside-lb-other-backend-ok": backend_direct(answer(200, KEYAUTH), answer(200, OTHER)),
    "inside-lb-other-backend-other": backend_direct(answer(200, OTHER), answer(200, OTHER)),
    "inside-refused-backend-ok": backend_direct(answer(200, KEYAUTH), reset),
    "cloudflare-403": with_server(
        answer(
            403,
            "<title>Attention Required! | Cloudflare</title>",
            {"Server": "cloudflare", "CF-RAY": "1-AMS"},
        )
    ),
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, fn in SCENARIOS.items():
        result = fn()
        (OUT / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        finals = [
            (a["address"], a["final"]["outcome"], a["final"]["status"]) for a in result["attempts"]
        ]
        print(f"{name}: {finals}")


if __name__ == "__main__":
    main()
