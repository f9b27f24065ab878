"""The command line's own contract: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys

import pytest

from acmelb import __version__
from acmelb.cli.main import build_parser, main, run, with_base64url_values_attached
from tests.conftest import acmelb_serve


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
    import acmelb.cli.certificates as certificates

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


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_a_run_builds_only_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _commands(build_parser("explain")) == ["explain"]
    assert len(_commands(build_parser())) > 5
    # a word that is no command still gets the whole list in its one-line error
    assert main(["--debug", "diagnos"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'diagnos'" in err and "diagnose" in err and len(err.splitlines()) == 1
    assert main(["--debug", "explain", "--help"]) == 0
    assert "usage: acmelb explain" in capsys.readouterr().out


def test_the_program_entry_runs_main_and_leaves_the_heap_to_the_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["acmelb", "--version"])
    try:
        assert run() == 0
        assert gc.get_freeze_count() > 0  # the teardown's collections skip it
    finally:
        gc.unfreeze()
    assert capsys.readouterr().out.strip() == f"acmelb {__version__}"


DASH_THUMBPRINT = "-" + "A1b_" * 10 + "xy"  # 43 characters, as SHA-256 in base64url
DASH_TOKEN = "-Rw9" + "k" * 39


def test_base64url_values_may_begin_with_a_dash() -> None:
    # One thumbprint in 64 begins with "-"; argparse alone takes it for an option.
    parser = build_parser("serve")
    argv = with_base64url_values_attached(
        ["serve", "--token", DASH_TOKEN, "--key", f"{DASH_TOKEN}.{DASH_THUMBPRINT}"]
    )
    args = parser.parse_args(argv)
    assert (args.token, args.key) == ([DASH_TOKEN], [f"{DASH_TOKEN}.{DASH_THUMBPRINT}"])
    stateless = parser.parse_args(
        with_base64url_values_attached(["serve", "--stateless", "--thumbprint", DASH_THUMBPRINT])
    )
    assert stateless.thumbprint == DASH_THUMBPRINT


def test_a_missing_value_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    # An option name after --thumbprint stays an option: the value is missing.
    assert with_base64url_values_attached(["--thumbprint", "--stateless"]) == [
        "--thumbprint",
        "--stateless",
    ]
    assert main(["serve", "--thumbprint", "--stateless"]) == 2
    assert "expected one argument" in capsys.readouterr().err


def test_serve_starts_with_a_thumbprint_that_begins_with_a_dash() -> None:
    with acmelb_serve("--stateless", "--thumbprint", DASH_THUMBPRINT, "--address", "127.0.0.1",
                      "--port", "0") as server:  # fmt: skip
        assert server.poll() is None
