"""Vantages: the probe shipped through a command prefix, the curl fallback, failures as data."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acmelb.errors import UsageError
from acmelb.vantage import CommandPrefix, Local, Role, VantageFailure, curl_probe, parse_here
from tests.diagnose.servers import KEYAUTH, Server, answer, by_path, close_at_once, http_response

Serve = Callable[..., Server]
# generous: curl's --max-time covers the whole redirect chain, and a loaded CI machine is slow
OPTS = {"connect_timeout": 2.0, "read_timeout": 2.0, "total_timeout": 5.0}


def request(address: str, path: str = "/x", repeat: int = 1) -> dict[str, Any]:
    return {"name": address, "url": f"http://{address}{path}", "repeat": repeat,
            "addresses": None, "resolve": {}, "options": OPTS}


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
    result = v.run({**request(s.address), "local_probe": True,
                    "local_addresses": [s.address]}, 30)
    assert not isinstance(result, VantageFailure)
    assert result["runner"] == "python"
    targets = [(a["target"], a["final"]["status"]) for a in result["attempts"]]
    assert targets == [("public", 200), ("local", 200)]


def test_curl_fallback_follows_and_records_redirects(serve: Serve, curl_only: Path) -> None:
    s = serve(by_path({"/a": http_response(301, "", {"Location": "/b"}),
                       "/b": http_response(302, "", {"Location": "/c"})},
                      http_response(200, KEYAUTH)))
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


@pytest.mark.parametrize("argv,expected", [
    (["kubectl", "exec", "-n", "ns", "pod", "--"], ["kubectl", "exec", "-i", "-n", "ns", "pod",
                                                    "--"]),
    (["kubectl", "exec", "-i", "pod", "--"], ["kubectl", "exec", "-i", "pod", "--"]),
    (["kubectl", "-n", "x", "exec", "deploy/nginx", "--"],
     ["kubectl", "-n", "x", "exec", "-i", "deploy/nginx", "--"]),
    (["docker", "exec", "web"], ["docker", "exec", "-i", "web"]),
    (["ssh", "node1"], ["ssh", "node1"]),
    (["ip", "netns", "exec", "ns"], ["ip", "netns", "exec", "ns"]),
])
def test_exec_prefixes_get_stdin(argv: list[str], expected: list[str]) -> None:
    from acmelb.vantage import with_stdin

    assert with_stdin(argv) == expected
