"""The command line's own contract: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from acmelb import __version__
from acmelb.cli import main


def test_version_in_process_and_as_subprocess(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"acmelb {__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "acmelb", "--version"], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, f"acmelb {__version__}")


def test_no_command_and_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    assert main(["issue", "app.test", "--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("acmelb: error:") and len(err.strip().splitlines()) == 1


def test_internal_error_is_exit_3_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import acmelb.commands.certificates as certificates

    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(certificates, "run", broken)
    assert main(["certificates"]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: boom" in err and "Traceback" not in err
    assert main(["--debug", "certificates"]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_empty_state_dir_lists_nothing(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certificates", "--state-dir", str(tmp_path)]) == 0
    assert "No certificates" in capsys.readouterr().out


def test_renew_unknown_name_fails_cleanly(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["renew", "nothere.test", "--state-dir", str(tmp_path)]) == 1
    assert "nothere.test: failed: no certificate named nothere.test" in capsys.readouterr().out


def test_revoke_unknown_name_fails_cleanly(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["revoke", "nothere.test", "--state-dir", str(tmp_path)]) == 1
    assert "no certificate named nothere.test" in capsys.readouterr().err


def test_debug_shows_the_cause_of_an_error() -> None:
    argv = [
        sys.executable,
        "-m",
        "acmelb",
        "fix",
        "nat-loopback",
        "--vip",
        "not-an-ip",
        "--backend",
        "198.18.1.11",
        "--subnet",
        "198.18.1.0/24",
    ]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2
    assert plain.stderr == "acmelb: error: --vip 'not-an-ip': not an IP address\n"
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, timeout=60
    )
    assert debug.returncode == 2
    assert "ValueError" in debug.stderr  # the cause underneath
    assert "direct cause of the following exception" in debug.stderr
    assert debug.stderr.endswith("acmelb: error: --vip 'not-an-ip': not an IP address\n")
