"""``acmelb demo`` (what ``./dev demo`` runs): its chapters on the lab, from the command line."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from acmelb.cli.main import main


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acmelb", "demo", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=200,
        check=False,
    )


@pytest.mark.lab
@pytest.mark.timeout(240)
def test_cluster_chapter(lab_available: None) -> None:
    proc = run_demo("--chapter", "cluster")
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert "not what the demo expected" not in out
    assert "== 4. Cluster mode" in out and "== 1." not in out
    # One order, counted in Pebble's log.
    assert re.search(r"Pebble's log \(pebble\.log\): 1 order \(", out), out
    # The CA's requests, quoted from the agents' logs, answered on at least two instances.
    answered = {
        m.group(1)
        for m in re.finditer(
            r"acmelb agent\[(b\d)\]: responder: \S+ GET /\.well-known/acme-challenge/\S+ .*"
            r"UA='LetsEncrypt-Pebble-VA[^']*' -> 200 \(key authorization\)",
            out,
        )
    }
    assert len(answered) >= 2, out
    match = re.search(r"(\d) instances answered the CA", out)
    assert match and int(match.group(1)) == len(answered)
    # The same fingerprint through the VIP (three connections) and on each instance.
    served = dict(
        re.findall(r"^ {4}(through the VIP .+?|directly b\d .+?):\s+([0-9a-f]{64})$", out, re.M)
    )
    assert len(served) == 6 and len(set(served.values())) == 1, out
    # acmelb cluster status, run in the lab: three members on one version.
    status = out[out.index("$ acmelb cluster status") :]
    assert "members (3 live):" in status
    assert (
        len(
            re.findall(
                r"^ +b\d +last seen .* installed: app\.acmelb\.test v1 +health: ok$", status, re.M
            )
        )
        == 3
    )
    assert "converged: every member serves every current version" in status


@pytest.mark.parametrize("chapter", ["0", "5", "clusters"])
def test_unknown_chapters_are_usage_errors(
    chapter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--chapter", chapter]) == 2
    assert f"no chapter {chapter!r}" in capsys.readouterr().err
