"""End to end on real local servers: `acmelb diagnose` names the code for each behaviour.

The codes the namespace lab has no behaviour for (TLS on port 80, a non-key body, redirect
statuses and chains, a reset) are proved here, through the whole command line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acmelb.cli.main import main
from tests.diagnose.servers import (
    KEYAUTH,
    KEYAUTH_TOKEN,
    Handler,
    Server,
    answer,
    by_path,
    hang,
    http_response,
    reset,
    tls_context,
)

PATH = f"/.well-known/acme-challenge/{KEYAUTH_TOKEN}"


def redirects(n: int, status: int = 302) -> Handler:
    routes = {PATH: http_response(status, "", {"Location": "/r0"})}
    routes.update(
        {f"/r{i}": http_response(status, "", {"Location": f"/r{i + 1}"}) for i in range(n)}
    )
    return by_path(routes, http_response(200, KEYAUTH))


CASES: list[tuple[str, Callable[[Path], dict[str, Any]], str]] = [
    (
        "tls",
        lambda tmp: {"handler": answer(200, "x"), "tls": tls_context(tmp)},
        "http-on-https-port",
    ),
    (
        "nginx-ssl-400",
        lambda tmp: {
            "handler": answer(400, "<center>The plain HTTP request was sent to HTTPS port</center>")
        },
        "http-on-https-port",
    ),
    ("wrong", lambda tmp: {"handler": answer(200, "it works")}, "wrong-content"),
    ("empty", lambda tmp: {"handler": answer(200, "")}, "wrong-content"),
    ("303", lambda tmp: {"handler": redirects(1, 303)}, "redirect-bad-status"),
    ("chain", lambda tmp: {"handler": redirects(12)}, "redirect-too-many"),
    (
        "loop",
        lambda tmp: {
            "handler": by_path(
                {PATH: http_response(301, "", {"Location": PATH})}, http_response(404, "")
            )
        },
        "redirect-loop",
    ),
    ("reset", lambda tmp: {"handler": reset}, "empty-reply"),
    ("hang", lambda tmp: {"handler": hang(2.0)}, "read-timeout"),
    (
        "503",
        lambda tmp: {"handler": answer(503, "busy", {"Server": "awselb/2.0"})},
        "http-error-status",
    ),
]


@pytest.mark.parametrize("label,make,code", CASES, ids=[c[0] for c in CASES])
def test_behaviour_gives_code(
    label: str,
    make: Callable[[Path], dict[str, Any]],
    code: str,
    serve: Callable[..., Server],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kw = make(tmp_path)
    s = serve(kw.pop("handler"), **kw)
    rc = main(
        [
            "diagnose",
            "app.example.com",
            "--resolve",
            f"app.example.com:{s.address}",
            "--token",
            KEYAUTH_TOKEN,
            "--key",
            KEYAUTH,
            "--timeout",
            "0.5",
            "--repeat",
            "1",
            "--json",
        ]
    )
    doc = json.loads(capsys.readouterr().out)
    codes = [f["code"] for f in doc["findings"]]
    assert rc == 1 and code in codes, codes
    assert doc["verdicts"]["acme-ca"] == "fail"
    if label == "503":
        assert "AWS Elastic Load Balancing" in codes_title(doc, "middlebox-fingerprint")


def codes_title(doc: dict[str, Any], code: str) -> str:
    return next(f["title"] for f in doc["findings"] if f["code"] == code)
