"""Vantages: the probe shipped through a command prefix, the curl fallback, failures as data."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acmelb.doctor import probe as _probe
from acmelb.doctor.vantage import (
    CommandPrefix,
    Local,
    ProbeSettings,
    Role,
    VantageFailure,
    build_vantages,
    curl_probe,
    looks_like_cluster,
    parse_here,
)
from acmelb.errors import UsageError
from tests.diagnose.servers import KEYAUTH, Server, answer, by_path, close_at_once, http_response

Serve = Callable[..., Server]
# generous: curl's --max-time covers the whole redirect chain, and a loaded CI machine is slow
OPTS = {"connect_timeout": 2.0, "read_timeout": 2.0, "total_timeout": 5.0}


def request(address: str, path: str = "/x", repeat: int = 1) -> dict[str, Any]:
    return {
        "name": address,
        "url": f"http://{address}{path}",
        "repeat": repeat,
        "addresses": None,
        "resolve": {},
        "options": OPTS,
    }


@pytest.fixture
def curl_only(tmp_path: Path) -> Path:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    d = tmp_path / "bin"
    d.mkdir()
    os.symlink(curl, d / "curl")
    return d


def test_command_prefix_runs_the_shipped_probe(serve: Serve) -> None:
    s = serve(answer(200, KEYAUTH))
    v = CommandPrefix(Role.INSIDE, f"env PATH={os.path.dirname(sys.executable)}")
    assert v.label == f"inside:env PATH={os.path.dirname(sys.executable)}" and v.remote
    result = v.run({**request(s.address), "local_probe": True, "local_addresses": [s.address]}, 30)
    assert not isinstance(result, VantageFailure)
    assert result["runner"] == "python"
    targets = [(a["target"], a["final"]["status"]) for a in result["attempts"]]
    assert targets == [("public", 200), ("local", 200)]


def test_curl_fallback_follows_and_records_redirects(serve: Serve, curl_only: Path) -> None:
    s = serve(
        by_path(
            {
                "/a": http_response(301, "", {"Location": "/b"}),
                "/b": http_response(302, "", {"Location": "/c"}),
            },
            http_response(200, KEYAUTH),
        )
    )
    v = CommandPrefix(Role.OUTSIDE, f"env PATH={curl_only}")
    result = v.run(request(s.address, "/a", repeat=2), 30)
    assert not isinstance(result, VantageFailure)
    assert result["runner"] == "curl" and "exited" in result["fallback_note"]
    attempt = result["attempts"][0]
    assert [h["status"] for h in attempt["redirects"]] == [301, 302], (result, s.requests)
    assert attempt["redirects"][1]["redirect_to"] == f"http://{s.address}/c"
    assert attempt["final"]["status"] == 200 and attempt["final"]["body"] == KEYAUTH
    assert len(result["attempts"]) == 2


def test_curl_fallback_outcomes(serve: Serve, curl_only: Path) -> None:
    closed = serve(close_at_once)
    res = curl_probe(["env", f"PATH={curl_only}"], request(closed.address), 30)
    assert not isinstance(res, VantageFailure)
    assert res["attempts"][0]["final"]["outcome"] == "empty-reply"
    res = curl_probe(["env", f"PATH={curl_only}"], request("127.0.0.1", "/"), 30)
    assert not isinstance(res, VantageFailure)
    assert res["attempts"][0]["final"]["outcome"] in ("connect-refused", "response")


def test_nothing_runs_there_is_a_failure_not_an_exception() -> None:
    v = CommandPrefix(Role.INSIDE, "env PATH=/nonexistent")
    result = v.run(request("127.0.0.1"), 10)
    assert isinstance(result, VantageFailure)
    assert "neither python3 nor curl" in result.reason and len(result.details) == 2


def test_prefix_validation() -> None:
    with pytest.raises(UsageError, match="not found"):
        CommandPrefix(Role.INSIDE, "no-such-command-xyz")
    with pytest.raises(UsageError, match="empty"):
        CommandPrefix(Role.OUTSIDE, "   ")
    with pytest.raises(UsageError):
        parse_here("sideways")
    assert Local(Role.OUTSIDE).label == "outside:local"


@pytest.mark.parametrize(
    "argv,expected",
    [
        (
            ["kubectl", "exec", "-n", "ns", "pod", "--"],
            ["kubectl", "exec", "-i", "-n", "ns", "pod", "--"],
        ),
        (["kubectl", "exec", "-i", "pod", "--"], ["kubectl", "exec", "-i", "pod", "--"]),
        (
            ["kubectl", "-n", "x", "exec", "deploy/nginx", "--"],
            ["kubectl", "-n", "x", "exec", "-i", "deploy/nginx", "--"],
        ),
        (["docker", "exec", "web"], ["docker", "exec", "-i", "web"]),
        (["ssh", "node1"], ["ssh", "node1"]),
        (["ip", "netns", "exec", "ns"], ["ip", "netns", "exec", "ns"]),
    ],
)
def test_exec_prefixes_get_stdin(argv: list[str], expected: list[str]) -> None:
    from acmelb.doctor.vantage import with_stdin

    assert with_stdin(argv) == expected


# ---------------------------------------------------------------------------
# ProbeSettings: the vantage options as one validated, serialisable value.


def test_probe_settings_from_cli_round_trip_through_json() -> None:
    settings = ProbeSettings.from_cli(
        here="inside",
        inside=["ip netns exec node1"],
        outside=["ssh edge"],
        resolve=["A.example.com.:80:127.0.0.9", "a.example.com:[::1]"],
        dns_server="[::1]:5353",
        timeout=2.5,
        repeat=4,
        assume_public=["10.0.0.0/8"],
        ca_identity="pebble.example",
    )
    assert settings.here is Role.INSIDE
    assert settings.resolve == (("a.example.com", "127.0.0.9"), ("a.example.com", "::1"))
    assert settings.dns_server == ("::1", 5353)
    assert ProbeSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    opts = settings.options()
    assert (opts.repeat, opts.timeout, opts.ca_identity, opts.dns_server) == (
        4,
        2.5,
        "pebble.example",
        ("::1", 5353),
    )
    assert opts.resolve == {"a.example.com": ["127.0.0.9", "::1"]}
    assert opts.assume_public == ["10.0.0.0/8"]


def test_probe_settings_defaults_and_missing_json_keys() -> None:
    assert ProbeSettings.from_json({}) == ProbeSettings() == ProbeSettings.from_cli()
    assert ProbeSettings(here="inside") == ProbeSettings(here=Role.INSIDE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeat": 0}, "--repeat must be between 1 and 50"),
        ({"repeat": 51}, "--repeat must be between 1 and 50"),
        ({"timeout": 0}, "--timeout must be between 0 and 120 seconds"),
        ({"timeout": 121}, "--timeout must be between 0 and 120 seconds"),
        (
            {"assume_public": ["10.0.0.0/33"]},
            "--assume-public '10.0.0.0/33': neither a network nor a DNS suffix",
        ),
        ({"here": "sideways"}, "--here 'sideways': expected 'inside' or 'outside'"),
        ({"resolve": ["a.example.com"]}, "--resolve 'a.example.com': expected NAME:ADDRESS"),
        (
            {"resolve": ["a.example.com:8080:127.0.0.1"]},
            "--resolve 'a.example.com:8080:127.0.0.1': only port 80 is probed",
        ),
        ({"dns_server": "dns.example"}, "--dns-server 'dns.example': not an IP address"),
    ],
)
def test_probe_settings_reject_with_the_flags_messages(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as info:
        ProbeSettings.from_cli(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "data",
    [
        {"repeat": 0},
        {"inside": "ssh node1"},
        {"dns_server": ["127.0.0.1"]},
        {"resolve": [["a.example.com", "not-an-address"]]},
        {"timeout": "soon"},
    ],
)
def test_probe_settings_from_json_rejects_bad_values(data: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        ProbeSettings.from_json(data)


def test_build_vantages_in_order() -> None:
    settings = ProbeSettings.from_cli(here="inside", inside=["env A=1"], outside=["env B=2"])
    vantages = build_vantages(settings)
    assert [v.label for v in vantages] == ["inside:local", "inside:env A=1", "outside:env B=2"]
    assert [v.remote for v in vantages] == [False, True, True]


@pytest.mark.parametrize(
    ("inside", "cluster"),
    [
        ((), False),
        (("ssh node1",), False),
        (("kubectl exec -n ingress deploy/nginx --",), True),
        (("  oc exec router --",), True),
        (("ip netns exec node",), False),
    ],
)
def test_cluster_guess(inside: tuple[str, ...], cluster: bool) -> None:
    assert looks_like_cluster(inside) is cluster
    assert ProbeSettings(inside=inside).cluster is cluster


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /final\r\nServer:  nginx ",
            (301, "Moved Permanently", [["Location", "/final"], ["Server", "nginx"]]),
        ),
        (
            "HTTP/1.1 200 OK\r\nX-Empty:\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT",
            (200, "OK", [["X-Empty", ""], ["Date", "Mon, 01 Jan 2024 00:00:00 GMT"]]),
        ),
        ("HTTP/2 404 \r\ncontent-type: text/plain", (404, "", [["content-type", "text/plain"]])),
        ("HTTP/1.0 503", (503, "", [])),
        ("garbage\r\nA: b", (None, "", [["A", "b"]])),
    ],
)
def test_curl_heads_parse_with_the_probes_parser(head: str, expected: tuple[Any, ...]) -> None:
    """The curl fallback reads the heads curl prints (-D -) with the probe's own parser."""
    assert _probe.parse_head(head) == expected
    # the probe's own form: the head with its blank line
    assert _probe.parse_head(head + "\r\n\r\n") == expected
