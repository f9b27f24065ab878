"""``acmelb lab``: the command line a user reproduces an LB problem with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from acmelb.cli.main import main
from acmelb.lab import LAB_THUMBPRINT, LAB_TOKEN, Lab, netns

pytestmark = pytest.mark.lab


def acmelb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acmelb", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_up_status_exec_down(lab_available: None) -> None:
    up = acmelb("lab", "up", "haproxy-tcp-proxy:responder,not-found", "--shortcut", "b1", "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    lab = Lab.attach(info["id"])
    try:
        assert info["mode"] == "haproxy-tcp-proxy"
        assert [b["behaviour"] for b in info["backends"]] == ["responder", "not-found"]
        assert info["backends"][0]["shortcut"] and not info["backends"][1]["shortcut"]
        assert info["detached"] and all(p["running"] for p in info["processes"])

        status = acmelb("lab", "status", "--json", info["id"])
        assert json.loads(status.stdout)[0]["id"] == info["id"]
        text = acmelb("lab", "status", info["id"])
        assert f"lab {info['id']}: haproxy-tcp-proxy" in text.stdout

        fetch = acmelb("lab", "exec", f"{info['id']}:pub", "--", "curl", "-sS", info["url"])
        assert fetch.returncode == 0 and fetch.stdout == f"{LAB_TOKEN}.{LAB_THUMBPRINT}"
        shortcut = acmelb(
            "lab", "exec", f"alb{info['id']}-b1", "--", "curl", "-sS", "-m", "2", info["url"]
        )
        assert shortcut.returncode == 52, shortcut  # curl: empty reply (no PROXY header)

        down = acmelb("lab", "down", info["id"])
        assert down.returncode == 0 and info["id"] in down.stdout
        assert netns.lab_namespaces(f"alb{info['id']}-") == []
        assert not any(record.is_running() for record in lab.processes())
    finally:
        lab.down()


def test_up_prints_how_to_use_the_lab(lab_available: None) -> None:
    up = acmelb("lab", "up", "dnat", "--backend", "responder", "--backend", "html")
    assert up.returncode == 0, up.stderr
    lab_id = up.stdout.split()[1].rstrip(":")
    try:
        assert "app.acmelb.test -> VIP 198.18.0.10" in up.stdout
        assert f"ip netns exec alb{lab_id}-b2  (198.18.1.12: html-page)" in up.stdout
        assert f"acmelb lab down {lab_id}" in up.stdout
    finally:
        Lab.attach(lab_id).down()


def as_nobody(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in-process with the effective uid of nobody."""
    os.seteuid(65534)
    try:
        code = main(args)
    finally:
        os.seteuid(0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
def test_list_needs_no_root(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = as_nobody(capsys, "lab", "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert "haproxy-http-intercept" in data["modes"] and "redirect-loop" in data["behaviours"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")
@pytest.mark.parametrize(
    "args", [["up", "dnat"], ["down", "--all"], ["status"], ["exec", "b1", "--", "true"]]
)
def test_everything_else_needs_root(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, _, err = as_nobody(capsys, "lab", *args)
    assert code == 1
    assert err == (
        "acmelb: error: the lab needs root (network namespaces, iptables): run it with sudo\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "nat"], "unknown lab mode 'nat'"),
        (["up", "dnat:teapot"], "unknown backend behaviour 'teapot'"),
        (["up", "dnat:responder", "--backend", "404"], "either in SCENARIO"),
        (["up", "dnat", "--shortcut", "b7"], "shortcut 'b7': no such backend"),
        (["up", "cluster", "--backend", "none"], "size as a count"),
        (["up", "cluster:2", "--backend", "none"], "either in SCENARIO"),
        (["down"], "give lab ids or --all"),
        (["down", "zzzz"], "no lab 'zzzz'"),
        (["exec", "zzzz:b1", "--", "true"], "no lab 'zzzz'"),
    ],
)
def test_bad_input_is_one_line(lab_available: None, args: list[str], message: str) -> None:
    result = acmelb("lab", *args)
    assert result.returncode in (1, 2)
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
