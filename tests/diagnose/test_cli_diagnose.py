"""The `acmelb diagnose` contract: JSON valid against the schema, exit codes 0/1/2/3, no traceback.

Names resolve through a DNS server the test starts on 127.x; every probe goes
to a server the test starts on 127.x.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from acmelb.cli.main import main
from tests.diagnose.dnsserver import DnsServer
from tests.diagnose.servers import KEYAUTH, KEYAUTH_TOKEN, Server, answer, by_path, http_response

FIXTURE = Path(__file__).with_name("fixtures") / "cert-manager-challenges.json"
SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)
Serve = Callable[..., Server]
FAST = ["--timeout", "0.5", "--repeat", "2", "--assume-public", "127.0.0.0/8"]


@pytest.fixture
def world(serve: Serve) -> Iterator[dict[str, Any]]:
    good = serve(answer(200, KEYAUTH))
    missing = serve(answer(404, "nope"))
    fixture = json.loads(FIXTURE.read_text())["items"][0]["spec"]
    cm = serve(
        by_path(
            {f"/.well-known/acme-challenge/{fixture['token']}": http_response(200, fixture["key"])},
            http_response(404, ""),
        )
    )
    dns = DnsServer(
        {
            "good.example.test": {"A": [good.address]},
            "missing.example.test": {"A": [missing.address]},
            "www.example.com": {"A": [cm.address]},
            "gone.example.test": {"rcode": "NXDOMAIN"},
        }
    )
    yield {"dns": dns.spec, "good": good, "missing": missing}
    dns.close()


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def key_args() -> list[str]:
    return ["--token", KEYAUTH_TOKEN, "--key", KEYAUTH]


def test_healthy_json_exit_0(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(
        [
            "diagnose",
            "good.example.test",
            "--dns-server",
            world["dns"],
            *key_args(),
            *FAST,
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert code == 0 and doc["ok"] is True and doc["findings"] == []
    assert doc["verdicts"]["acme-ca"] == "pass"
    assert doc["probes"][0]["vantage"] == "outside:local" and doc["probes"][0]["status"] == 200


def test_problem_json_exit_1(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(
        [
            "diagnose",
            "missing.example.test",
            "--dns-server",
            world["dns"],
            *key_args(),
            *FAST,
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert code == 1 and doc["ok"] is False
    assert [f["code"] for f in doc["findings"]] == ["challenge-not-found"]


def test_dns_fatal_stops_before_probes(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(
        ["diagnose", "gone.example.test", "--dns-server", world["dns"], *FAST, "--json"], capsys
    )
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert code == 1 and doc["findings"][0]["code"] == "dns-no-address" and doc["probes"] == []


def test_loopback_answer_is_a_reserved_address_without_assume_public(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_main(
        [
            "diagnose",
            "good.example.test",
            "--dns-server",
            world["dns"],
            *key_args(),
            "--timeout",
            "0.5",
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    assert code == 1 and "dns-reserved-address" in [f["code"] for f in doc["findings"]]


def test_several_names_human_report(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    names = tmp_path / "names.txt"
    names.write_text("# two names\nmissing.example.test\n\ngood.example.test\n")
    code, out, _ = run_main(
        ["diagnose", "--from-file", str(names), "--dns-server", world["dns"], *key_args(), *FAST],
        capsys,
    )
    assert code == 1
    assert out.index("missing.example.test") < out.index("good.example.test")
    assert "ERROR (1)" in out and "challenge-not-found" in out and "evidence:" in out
    assert "\033[" not in out  # no colour when stdout is not a terminal


def test_several_names_json_are_lines_as_each_finishes(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["diagnose", "good.example.test", "missing.example.test", "--dns-server",
            world["dns"], *key_args(), *FAST, "--json"]  # fmt: skip
    code, out, _ = run_main(argv, capsys)
    lines = out.splitlines()
    assert len(lines) == 2  # one compact report a line (JSON Lines)
    docs = {d["name"]: d for d in map(json.loads, lines)}
    for doc in docs.values():
        jsonschema.validate(doc, SCHEMA)
    assert docs["good.example.test"]["ok"] and not docs["missing.example.test"]["ok"]
    assert code == 1
    # the array form, in the order given, on request
    code, out, _ = run_main([*argv, "--json-array"], capsys)
    array = json.loads(out)
    jsonschema.validate(array, SCHEMA)
    assert [d["name"] for d in array] == ["good.example.test", "missing.example.test"]
    assert [d["ok"] for d in array] == [True, False] and code == 1


def test_invalid_name_is_a_fatal_finding(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(["diagnose", "*.example.com", "--json"], capsys)
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert code == 1 and doc["findings"][0]["code"] == "invalid-name"
    assert "Traceback" not in err


def test_resolve_overrides_dns_for_this_process(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    good = world["good"].address
    code, out, _ = run_main(
        [
            "diagnose",
            "nowhere.example.test",
            "--resolve",
            f"nowhere.example.test:{good}",
            *key_args(),
            *FAST,
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    assert code == 0 and doc["probes"][0]["address"] == good


def test_here_inside(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    good = world["good"].address
    code, out, _ = run_main(
        [
            "diagnose",
            "good.example.test",
            "--here",
            "inside",
            "--resolve",
            f"good.example.test:{good}",
            "--dns-server",
            world["dns"],
            *key_args(),
            *FAST,
            "--json",
        ],
        capsys,
    )
    doc = json.loads(out)
    assert code == 0 and doc["verdicts"] == {
        "acme-ca": "unknown",
        "cert-manager-self-check": "pass",
    }
    assert {p["vantage"] for p in doc["probes"]} == {"inside:local"}


def test_resolve_forms() -> None:
    from acmelb.cli.common import resolve_map as _resolve_map

    assert _resolve_map(
        [
            "A.example.com:2001:db8::1",
            "a.example.com:80:127.0.0.9",
            "a.example.com:[::1]",
            "b.example.com.:80:[2001:db8::2]",
        ]
    ) == {"a.example.com": ["2001:db8::1", "127.0.0.9", "::1"], "b.example.com": ["2001:db8::2"]}


def test_challenges_file(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = json.loads(FIXTURE.read_text())
    dns01 = copy.deepcopy(data["items"][0])
    dns01["metadata"]["name"] = "wild-dns01"
    dns01["spec"]["type"] = "DNS-01"
    data["items"].append(dns01)
    path = tmp_path / "ch.json"
    path.write_text(json.dumps(data))
    code, out, err = run_main(
        ["diagnose", "--challenges", str(path), "--dns-server", world["dns"], *FAST, "--json"],
        capsys,
    )
    docs = json.loads(out)
    jsonschema.validate(docs, SCHEMA)
    assert len(docs) == 1  # --challenges always prints an array
    doc = docs[0]
    assert "skipping shop/wild-dns01" in err and "DNS-01" in err
    assert doc["name"] == "www.example.com" and doc["challenge"]["name"].startswith("shop/")
    assert doc["token"] == data["items"][0]["spec"]["token"]
    assert "nat-loopback" in doc["challenge"]["explain"]["candidates"]
    assert code == 0 and doc["verdicts"]["acme-ca"] == "pass"


def test_challenges_with_nothing_pending(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = json.loads(FIXTURE.read_text())
    data["items"][0]["status"]["state"] = "valid"
    path = tmp_path / "ch.json"
    path.write_text(json.dumps(data))
    code, out, err = run_main(["diagnose", "--challenges", str(path), "--json"], capsys)
    assert code == 0 and json.loads(out) == []
    assert "state valid" in err and "no pending HTTP-01 challenge" in err


def test_challenges_from_stdin_human(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(FIXTURE.read_text()))
    code, out, _ = run_main(
        ["diagnose", "--challenges", "-", "--dns-server", world["dns"], *FAST], capsys
    )
    assert code == 0 and "cert-manager says: Waiting for HTTP-01" in out
    assert "that message points to: nat-loopback" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["diagnose", "a.example.com", "--no-such-flag"], "unrecognized arguments"),
        (["diagnose"], "give a NAME"),
        (["diagnose", "a.example.com", "--resolve", "bogus"], "--resolve"),
        (["diagnose", "a.example.com", "--resolve", "a.example.com:443:127.0.0.1"], "port 80"),
        (["diagnose", "a.example.com", "--dns-server", "not-an-ip"], "--dns-server"),
        (["diagnose", "a.example.com", "--repeat", "0"], "--repeat"),
        (["diagnose", "a.example.com", "--here", "sideways"], "invalid choice"),
        (["diagnose", "a.example.com", "--inside", "no-such-command-xyz --flag"], "not found"),
        (["diagnose", "a.example.com", "--inside", "ssh 'unclosed"], "--inside"),
        (["diagnose", "--challenges", "/nonexistent/file.json"], "No such file"),
        (["diagnose", "--from-file", "/nonexistent/names"], "No such file"),
        (["diagnose", "a.example.com", "--key", "x.y"], "--key needs --token"),
        (["diagnose", "--from-file", "-", "--challenges", "-"], "both read standard input"),
        (["diagnose", "a.example.com", "--token", "t", "--key", "u.v"], "TOKEN.THUMBPRINT"),
        (["diagnose", "a.example.com", "--timeout", "0"], "--timeout"),
        (["diagnose", "a.example.com", "--assume-public", "10.0.0.0/33"], "--assume-public"),
    ],
)
def test_bad_input_exit_2_one_line_no_traceback(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors exit through SystemExit
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2 and needle in err and "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content,needle",
    [
        ("not json", "not JSON"),
        ('{"kind": "List"}', "no 'items' list"),
        ('{"items": [{"kind": "Pod", "spec": {}}]}', "not a cert-manager Challenge"),
        ('{"items": [{"kind": "Challenge", "spec": {"type": "HTTP-01"}}]}', "spec.dnsName"),
    ],
)
def test_malformed_challenges_file_exit_2_with_reason(
    content: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _out, err = run_main(["diagnose", "--challenges", str(path)], capsys)
    assert code == 2 and needle in err and "Traceback" not in err


def test_internal_failure_exit_3_without_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import acmelb.doctor.fleet

    async def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(acmelb.doctor.fleet, "diagnose_async", boom)
    code, _out, err = run_main(
        ["diagnose", "a.example.com", "--resolve", "a.example.com:127.0.0.1"], capsys
    )
    assert code == 3 and "internal error" in err and "Traceback" not in err


def vantage_with_hosts(tmp: Path, tag: str, hosts: dict[str, str], path: str) -> str:
    """A command prefix for a 'remote' vantage on this host: its own /etc/hosts (a private
    mount namespace, like `ip netns exec` does with /etc/netns/NAME/hosts) and its own PATH."""
    hosts_file = tmp / f"hosts-{tag}"
    hosts_file.write_text("".join(f"{addr} {name}\n" for name, addr in hosts.items()))
    script = f'mount --bind {hosts_file} /etc/hosts && PATH={path} exec "$0" "$@"'
    return f"unshare -m sh -c '{script}'"


def test_subprocess_with_remote_vantages(world: dict[str, Any], tmp_path: Path) -> None:
    """The real command line, with remote vantages that resolve the name themselves: one runs
    the shipped probe (python3 -), one has only curl, one can run nothing."""
    if shutil.which("curl") is None or shutil.which("unshare") is None:
        pytest.skip("curl or unshare not installed")
    curl_only = tmp_path / "curl-only"
    curl_only.mkdir()
    os.symlink(str(shutil.which("curl")), curl_only / "curl")
    hosts = {"good.example.test": world["good"].address}
    py = vantage_with_hosts(tmp_path, "py", hosts, os.path.dirname(sys.executable))
    curl = vantage_with_hosts(tmp_path, "curl", hosts, str(curl_only))
    broken = "env PATH=/nonexistent"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "acmelb",
            "diagnose",
            "good.example.test",
            "--dns-server",
            world["dns"],
            *key_args(),
            *FAST,
            "--json",
            "--outside",
            py,
            "--outside",
            curl,
            "--inside",
            broken,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    runners = {p["vantage"]: p["runner"] for p in doc["probes"]}
    assert runners == {
        "outside:local": "python",
        f"outside:{py}": "python",
        f"outside:{curl}": "curl",
    }
    assert all(p["status"] == 200 for p in doc["probes"])
    assert [f["code"] for f in doc["findings"]] == ["vantage-unusable"]
    assert doc["findings"][0]["vantages"] == [f"inside:{broken}"]
    assert proc.returncode == 0 and doc["verdicts"] == {
        "acme-ca": "pass",
        "cert-manager-self-check": "unknown",
    }


def test_colour_only_on_a_terminal(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["diagnose", "missing.example.test", "--dns-server", world["dns"], *key_args(), *FAST]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    _code, out, _err = run_main(argv, capsys)
    assert "\033[31m" in out and "challenge-not-found" in out
    monkeypatch.setenv("NO_COLOR", "1")
    _code, out, _err = run_main(argv, capsys)
    assert "\033[" not in out
