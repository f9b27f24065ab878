"""Secrets and files: modes from the first byte, keys never printed, concurrent runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import LocalCA, run_acmelb
from tests.reliability.conftest import check_state, standalone, temp_files

PERMWATCH = Path(__file__).with_name("permwatch.py")
pytestmark = pytest.mark.timeout(300)


def _watched(state: Path, report: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(PERMWATCH), str(state), str(report), "--", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    result: dict[str, object] = json.loads(report.read_text())
    assert proc.returncode == 0 and result["exit"] == 0, proc.stderr
    return result


def test_modes_are_tight_at_every_step_even_with_umask_0(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    runs = [
        ("account", "register", *local_ca.ca_args(state)),
        ("issue", "perm.test", "www.perm.test", *local_ca.ca_args(state), *standalone(local_ca)),
        (
            "issue",
            "perm-rsa.test",
            "--key-type",
            "rsa2048",
            *local_ca.ca_args(state),
            *standalone(local_ca),
        ),
        ("renew", "--all", "--force", "--state-dir", str(state)),
    ]
    total = 0
    for index, args in enumerate(runs):
        result = _watched(state, tmp_path / f"report{index}.json", *args)
        assert result["violations"] == [], args
        total += int(result["checks"])  # type: ignore[call-overload]
    assert total > 100  # it really looked, again and again
    print(f"\nmodes: {total} checks of the whole state dir over {len(runs)} runs, 0 violations")
    assert set(check_state(state, local_ca.root_bundle)) == {"perm.test", "perm-rsa.test"}


def _secrets(state: Path) -> list[str]:
    """Distinctive pieces of every private key in the state dir."""
    found = []
    for path in (state / "accounts").rglob("private_key.json"):
        jwk = json.loads(path.read_text())
        found += [jwk[k] for k in ("d", "p", "q", "dp", "dq", "qi") if k in jwk]
    for path in (state / "archive").rglob("privkey*.pem"):
        pem = path.read_bytes()
        der = serialization.load_pem_private_key(pem, None).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        found += [line.decode() for line in pem.splitlines()[1:-1] if len(line) > 20]
        found.append(der.hex()[40:80])
        found.append(base64.b64encode(der).decode()[30:70])
    return found


def test_keys_never_appear_in_output_logs_or_json(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = run_acmelb(*args)
        outputs.extend([done.stdout, done.stderr])
        return done

    assert (
        run(
            "issue", "secret.test", *local_ca.ca_args(state), *standalone(local_ca), "--json"
        ).returncode
        == 0
    )
    assert (
        run(
            "--debug",
            "issue",
            "secret.test",
            "--reuse-key",
            *local_ca.ca_args(state),
            *standalone(local_ca),
        ).returncode
        == 0
    )
    run("account", "show", *local_ca.ca_args(state), "--json")
    run("certificates", "--state-dir", str(state), "--json")
    run("renew", "--all", "--force", "--state-dir", str(state), "--json")
    # failures, with --debug tracebacks: validation refused, a damaged account record
    failed = run(
        "--debug",
        "issue",
        "secret.test",
        "--reuse-key",
        *local_ca.ca_args(state),
        "--solver",
        "stateless",
        "--self-check",
        "off",
        "--json",
    )
    assert failed.returncode == 1
    [regr] = (state / "accounts").rglob("regr.json")
    good = regr.read_text()
    regr.write_text("{not json")
    assert (
        run(
            "--debug", "issue", "secret.test", *local_ca.ca_args(state), *standalone(local_ca)
        ).returncode
        == 1
    )
    regr.write_text(good)
    # a damaged key file: the error names the file, never its content
    [key] = (state / "accounts").rglob("private_key.json")
    whole = key.read_text()
    key.write_text(whole[: len(whole) // 2])
    damaged = run("issue", "secret.test", *local_ca.ca_args(state), *standalone(local_ca))
    assert damaged.returncode == 1 and "is damaged" in damaged.stderr
    key.write_text(whole)
    text = "\n".join(outputs)
    secrets = _secrets(state)
    assert len(secrets) > 10
    assert "PRIVATE KEY" not in text
    leaked = [s for s in secrets if s in text]
    assert leaked == []
    assert whole[len(whole) // 4 : len(whole) // 2] not in text


# -- concurrent runs on one state dir -------------------------------------------------------


@pytest.fixture
def stateless_responder(local_ca: LocalCA, tmp_path: Path) -> Iterator[Path]:
    """One registered account and a stateless responder for it: runs need no port."""
    state = tmp_path / "state"
    registered = run_acmelb("account", "register", *local_ca.ca_args(state), "--json")
    assert registered.returncode == 0, registered.stderr
    thumbprint = json.loads(registered.stdout)["thumbprint"]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "acmelb",
            "serve",
            "--stateless",
            f"--thumbprint={thumbprint}",  # base64url: may start with "-"
            "--address",
            "127.0.0.1",
            "--port",
            str(local_ca.http_port),
            "--quiet",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None and "listening" in server.stderr.readline()
        yield state
    finally:
        server.terminate()
        server.wait(5)


def _parallel(*runs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    results: list[subprocess.CompletedProcess[str] | None] = [None] * len(runs)

    def one(index: int) -> None:
        results[index] = run_acmelb(*runs[index], timeout=240)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_concurrent_issue_and_renew_runs_never_corrupt_the_state(
    local_ca: LocalCA, stateless_responder: Path, tmp_path: Path
) -> None:
    state = stateless_responder
    common = (*local_ca.ca_args(state), "--solver", "stateless", "--self-check", "off")
    lists = {}
    for label, names in (("a", range(0, 10)), ("b", range(5, 15)), ("c", range(0, 5))):
        lists[label] = tmp_path / f"{label}.txt"
        lists[label].write_text("".join(f"c{n}.conc.test www.c{n}.conc.test\n" for n in names))
    first = _parallel(
        ("issue", "--from-file", str(lists["a"]), "--concurrency", "4", *common),
        ("issue", "--from-file", str(lists["b"]), "--concurrency", "4", *common),
    )
    assert [r.returncode for r in first] == [0, 0], [r.stderr[-500:] for r in first]
    versions = check_state(state, local_ca.root_bundle)
    assert versions == {f"c{n}.conc.test": 2 if 5 <= n < 10 else 1 for n in range(15)}
    second = _parallel(
        ("renew", "--all", "--force", "--state-dir", str(state)),
        ("renew", "--all", "--force", "--state-dir", str(state)),
        ("issue", "--from-file", str(lists["c"]), "--concurrency", "4", *common),
    )
    assert [r.returncode for r in second] == [0, 0, 0], [r.stderr[-500:] for r in second]
    after = check_state(state, local_ca.root_bundle)
    for name, version in versions.items():
        bump = 3 if int(name[1:].split(".")[0]) < 5 else 2
        assert after[name] == version + bump, (name, version, after[name])
        archive = sorted(p.name for p in (state / "archive" / name).iterdir())
        assert archive == sorted(
            f"{k}{v}.pem"
            for k in ("cert", "chain", "fullchain", "privkey")
            for v in range(1, after[name] + 1)
        )
    assert len(list((state / "accounts").rglob("private_key.json"))) == 1
    assert temp_files(state) == []
    assert not [p for p in (state / "live").iterdir() if p.name.startswith(".")]


def test_concurrent_first_runs_register_one_account(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    results = _parallel(*[("account", "register", *local_ca.ca_args(state), "--json")] * 4)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr for r in results]
    assert len({json.loads(r.stdout)["uri"] for r in results}) == 1
    assert len(list((state / "accounts").rglob("private_key.json"))) == 1


def test_serve_pending_creates_a_new_state_dir_0700(tmp_path: Path) -> None:
    import os
    import stat

    from tests.conftest import free_port

    state = tmp_path / "new" / "state"
    old = os.umask(0o022)  # the usual umask
    try:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "acmelb",
                "serve",
                "--pending",
                "--state-dir",
                str(state),
                "--address",
                "127.0.0.1",
                "--port",
                str(free_port()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.umask(old)
    try:
        assert server.stderr is not None and "listening" in server.stderr.readline()
    finally:
        server.terminate()
        server.wait(5)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
