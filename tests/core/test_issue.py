"""End-to-end issuance against a real Pebble, through the command line."""

from __future__ import annotations

import json
import os
import shlex
import ssl
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from acmelb.cli.main import main
from tests.conftest import LocalCA, acmelb_serve, openssl_verify, run_acmelb

pytestmark = pytest.mark.timeout(120)


def _issue(
    local_ca: LocalCA, state: Path, *names: str, extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    # Pebble validates on a random high port here, where no LB-aware self-check applies;
    # the self-check has its own tests in the lab.
    check = () if "--self-check" in extra else ("--self-check", "off")
    return run_acmelb("issue", *names, *local_ca.ca_args(state), *check, *extra)


def _standalone(local_ca: LocalCA) -> tuple[str, ...]:
    return (
        "--solver",
        "standalone",
        "--http-port",
        str(local_ca.http_port),
        "--http-address",
        "127.0.0.1",
    )


def _san(path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return sorted(ext.value.get_values_for_type(x509.DNSName))


@contextmanager
def nginx_serving(root: Path, port: int, workdir: Path) -> Iterator[None]:
    """A real nginx serving ``root`` on 127.0.0.1:port (the web server a webroot user has)."""
    conf = workdir / "nginx.conf"
    # pytest's temp dirs are 0700: as root, let the workers read them.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {workdir};
    proxy_temp_path {workdir};
    fastcgi_temp_path {workdir};
    uwsgi_temp_path {workdir};
    scgi_temp_path {workdir};
    server {{
        listen 127.0.0.1:{port};
        root {root};
        default_type text/plain;
    }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except urllib.error.HTTPError:
                break  # 403/404 from nginx: it is up
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"nginx failed: {proc.stderr.read()!r}") from None
                time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(5)


def test_standalone_multi_name_certificate_verifies(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _issue(
        local_ca, state, "app.test", "www.app.test", "API.App.Test", extra=_standalone(local_ca)
    )
    assert result.returncode == 0, result.stderr
    assert "issued" in result.stdout
    live = state / "live" / "app.test"
    assert openssl_verify(local_ca.root_bundle, live).returncode == 0
    assert _san(live / "cert.pem") == ["api.app.test", "app.test", "www.app.test"]
    # certbot layout: relative links into archive/, version 1
    for kind in ("cert", "chain", "fullchain", "privkey"):
        assert os.readlink(live / f"{kind}.pem") == f"../../archive/app.test/{kind}1.pem"
    assert (live / "fullchain.pem").read_bytes() == (live / "cert.pem").read_bytes() + (
        live / "chain.pem"
    ).read_bytes()
    # permissions: keys 0600, every state directory 0700
    assert stat.S_IMODE((state / "archive" / "app.test" / "privkey1.pem").stat().st_mode) == 0o600
    for directory in [state, *[p for p in state.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    key_files = list((state / "accounts").rglob("private_key.json"))
    assert len(key_files) == 1
    assert stat.S_IMODE(key_files[0].stat().st_mode) == 0o600


def test_stateless_solver_with_acmelb_serve(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    registered = run_acmelb("account", "register", *local_ca.ca_args(state), "--json")
    assert registered.returncode == 0, registered.stderr
    account = json.loads(registered.stdout)
    assert account["uri"].startswith("https://")
    shown = run_acmelb("account", "show", *local_ca.ca_args(state), "--json")
    assert json.loads(shown.stdout)["thumbprint"] == account["thumbprint"]
    port = str(local_ca.http_port)
    thumbprint = account["thumbprint"]
    with acmelb_serve("--stateless", "--thumbprint", thumbprint, "--address", "127.0.0.1",
                      "--port", port):  # fmt: skip
        result = _issue(local_ca, state, "stateless.test", extra=("--solver", "stateless"))
        assert result.returncode == 0, result.stderr
    assert openssl_verify(local_ca.root_bundle, state / "live" / "stateless.test").returncode == 0


def test_serve_solver_with_a_running_acmelb_serve_pending(
    local_ca: LocalCA, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    port = str(local_ca.http_port)
    with acmelb_serve("--pending", "--state-dir", str(state), "--address", "127.0.0.1",
                      "--port", port) as server:  # fmt: skip
        assert server.stderr is not None
        result = _issue(
            local_ca, state, "pending.test", "www.pending.test", extra=("--solver", "serve")
        )
        assert result.returncode == 0, result.stderr
        served = [server.stderr.readline() for _ in range(6)]  # Pebble's VA: 3 GETs a name
    assert sum("-> 200 key authorization" in line for line in served) == 6
    assert openssl_verify(local_ca.root_bundle, state / "live" / "pending.test").returncode == 0
    assert list((state / "pending").iterdir()) == []  # nothing left pending


def test_reuse_key_keeps_the_private_key(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _issue(local_ca, state, "reuse.test", extra=_standalone(local_ca)).returncode == 0
    key = (state / "live" / "reuse.test" / "privkey.pem").read_bytes()
    again = _issue(local_ca, state, "reuse.test", extra=(*_standalone(local_ca), "--reuse-key"))
    assert again.returncode == 0, again.stderr
    assert (state / "live" / "reuse.test" / "privkey.pem").read_bytes() == key
    assert os.readlink(state / "live" / "reuse.test" / "cert.pem").endswith("cert2.pem")
    fresh = _issue(
        local_ca, state, "reuse.test", extra=(*_standalone(local_ca), "--key-type", "rsa2048")
    )
    assert fresh.returncode == 0, fresh.stderr
    new_key = (state / "live" / "reuse.test" / "privkey.pem").read_bytes()
    assert new_key != key and b"PRIVATE KEY" in new_key
    cert = x509.load_pem_x509_certificate((state / "live" / "reuse.test" / "cert.pem").read_bytes())
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_webroot_solver_behind_nginx(local_ca: LocalCA, tmp_path: Path) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    webroot.chmod(0o755)
    state = tmp_path / "state"
    with nginx_serving(webroot, local_ca.http_port, tmp_path):
        result = _issue(
            local_ca,
            state,
            "webroot.test",
            extra=("--solver", "webroot", "--webroot", str(webroot)),
        )
    assert result.returncode == 0, result.stderr
    assert openssl_verify(local_ca.root_bundle, state / "live" / "webroot.test").returncode == 0
    assert list(webroot.iterdir()) == []  # tokens and the directories we made are gone


def test_hook_solver_pushes_to_backend(local_ca: LocalCA, tmp_path: Path) -> None:
    backend_root = tmp_path / "backend"
    backend_root.mkdir()
    backend_root.chmod(0o755)
    log = tmp_path / "hook.log"
    challenge_dir = backend_root / ".well-known" / "acme-challenge"
    # A certbot-style manual hook: it only knows certbot's variable names.
    hook = (
        f'echo "$ACMELB_ACTION $CERTBOT_DOMAIN" >> {shlex.quote(str(log))}; '
        f'if [ "$ACMELB_ACTION" = present ]; then mkdir -p {challenge_dir} && '
        f'printf %s "$CERTBOT_VALIDATION" > {challenge_dir}/"$CERTBOT_TOKEN"; '
        f'else rm -f {challenge_dir}/"$CERTBOT_TOKEN"; fi'
    )
    state = tmp_path / "state"
    with nginx_serving(backend_root, local_ca.http_port, tmp_path):
        result = _issue(
            local_ca,
            state,
            "hook.test",
            "www.hook.test",
            extra=("--solver", "hook", "--hook", hook),
        )
    assert result.returncode == 0, result.stderr
    assert sorted(log.read_text().split("\n")) == sorted(
        [
            "present hook.test",
            "present www.hook.test",
            "cleanup hook.test",
            "cleanup www.hook.test",
            "",
        ]
    )
    assert list(challenge_dir.iterdir()) == []
    assert openssl_verify(local_ca.root_bundle, state / "live" / "hook.test").returncode == 0


def test_failing_hook_stops_before_answering(local_ca: LocalCA, tmp_path: Path) -> None:
    result = _issue(
        local_ca,
        tmp_path / "state",
        "badhook.test",
        extra=("--solver", "hook", "--hook", "echo no ssh to backend >&2; exit 7"),
    )
    assert result.returncode == 1
    assert "hook present for badhook.test exited 7: no ssh to backend" in result.stderr
    assert "Traceback" not in result.stderr


def test_renew_revoke_and_list(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _issue(local_ca, state, "renew.test", extra=_standalone(local_ca)).returncode == 0
    live = state / "live" / "renew.test"
    first_serial = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes()).serial_number

    not_due = run_acmelb("renew", "renew.test", "--state-dir", str(state), "--days", "30")
    assert not_due.returncode == 0 and "not-due" in not_due.stdout

    marker = tmp_path / "deployed"
    renewed = run_acmelb(
        "renew",
        "--all",
        "--state-dir",
        str(state),
        "--days",
        "100000",
        "--deploy-hook",
        f'echo "$RENEWED_LINEAGE $RENEWED_DOMAINS" > {marker}',
    )
    assert renewed.returncode == 0, renewed.stderr
    assert "renew.test: renewed" in renewed.stdout
    assert marker.read_text().strip() == f"{live} renew.test"
    assert os.readlink(live / "cert.pem") == "../../archive/renew.test/cert2.pem"
    second = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert second.serial_number != first_serial
    assert (state / "archive" / "renew.test" / "cert1.pem").exists()  # history is kept

    listed = run_acmelb("certificates", "--state-dir", str(state), "--json")
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "renew.test" and entry["names"] == ["renew.test"]
    assert entry["days_left"] > 1

    revoked = run_acmelb(
        "revoke", "renew.test", "--state-dir", str(state), "--reason", "superseded"
    )
    assert revoked.returncode == 0, revoked.stderr
    context = ssl.create_default_context(cafile=str(local_ca.ca_bundle))
    status_url = f"{local_ca.pebble.management_url}/cert-status-by-serial/{second.serial_number:x}"
    with urllib.request.urlopen(status_url, context=context, timeout=5) as response:
        status = json.loads(response.read())
    assert status["Status"] == "Revoked"


def test_failed_validation_leaves_old_certificate(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert _issue(local_ca, state, "keep.test", extra=_standalone(local_ca)).returncode == 0
    live = state / "live" / "keep.test"
    before = {kind: (live / f"{kind}.pem").read_bytes() for kind in ("cert", "privkey")}
    # Nobody serves the token: stateless solver with no responder running.
    failed = _issue(local_ca, state, "keep.test", extra=("--solver", "stateless"))
    assert failed.returncode == 1
    assert (
        "validation failed: keep.test: the CA fetched http://keep.test/.well-known/"
        "acme-challenge/" in failed.stderr
    )
    assert "connection refused" in failed.stderr.lower()
    assert "Traceback" not in failed.stderr
    after = {kind: (live / f"{kind}.pem").read_bytes() for kind in ("cert", "privkey")}
    assert after == before
    assert sorted(p.name for p in (state / "archive" / "keep.test").iterdir()) == [
        "cert1.pem",
        "chain1.pem",
        "fullchain1.pem",
        "privkey1.pem",
    ]


def test_concurrent_runs_on_one_name(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    # Register first so both runs share one account.
    assert run_acmelb("account", "register", *local_ca.ca_args(state)).returncode == 0
    webroot = tmp_path / "www"
    webroot.mkdir()
    webroot.chmod(0o755)
    results: list[subprocess.CompletedProcess[str]] = []

    def one() -> None:
        results.append(
            _issue(
                local_ca,
                state,
                "race.test",
                "www.race.test",
                extra=("--solver", "webroot", "--webroot", str(webroot)),
            )
        )

    with nginx_serving(webroot, local_ca.http_port, tmp_path):
        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    archive = sorted(p.name for p in (state / "archive" / "race.test").iterdir())
    assert archive == sorted(
        f"{k}{n}.pem" for k in ("cert", "chain", "fullchain", "privkey") for n in (1, 2)
    )
    live = state / "live" / "race.test"
    assert {os.readlink(live / f"{k}.pem")[-5] for k in ("cert", "privkey")} == {"2"}
    assert openssl_verify(local_ca.root_bundle, live).returncode == 0


def test_badnonce_is_retried(nonce_rejecting_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    for index in range(5):
        result = _issue(
            nonce_rejecting_ca, state, f"nonce{index}.test", extra=_standalone(nonce_rejecting_ca)
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("*.app.test", "wildcard names cannot be validated over HTTP-01"),
        ("::1%eth0", "an IPv6 zone (%eth0) only means something on this host"),
        ("300.1.1.1", "not a valid IPv4 (dotted-quad) address"),
        ("bad_label.test", "not a valid DNS name"),
        ("-lead.test", "not a valid DNS name"),
        ("a" * 64 + ".test", "not a valid DNS name"),
    ],
)
def test_bad_names_are_refused_in_one_line(
    local_ca: LocalCA, tmp_path: Path, name: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["issue", *local_ca.ca_args(tmp_path / "state"), "--", name])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_idna_name_is_issued_as_punycode(local_ca: LocalCA, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = _issue(local_ca, state, "bücher.test", extra=_standalone(local_ca))
    assert result.returncode == 0, result.stderr
    assert _san(state / "live" / "xn--bcher-kva.test" / "cert.pem") == ["xn--bcher-kva.test"]


def test_wrong_directory_url_and_untrusted_tls(local_ca: LocalCA, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    wrong = run_acmelb(
        "issue",
        "x.test",
        "--directory",
        local_ca.directory_url.replace("/dir", "/nope"),
        "--ca-bundle",
        str(local_ca.ca_bundle),
        "--state-dir",
        state,
    )
    assert wrong.returncode == 1
    assert "acmelb: error:" in wrong.stderr and "Traceback" not in wrong.stderr
    untrusted = run_acmelb(
        "issue", "x.test", "--directory", local_ca.directory_url, "--state-dir", state
    )
    assert untrusted.returncode == 1
    assert "TLS verification failed" in untrusted.stderr and "--ca-bundle" in untrusted.stderr
    closed = run_acmelb(
        "issue", "x.test", "--directory", "https://127.0.0.1:1/dir", "--state-dir", state
    )
    assert closed.returncode == 1
    assert "cannot reach the CA at https://127.0.0.1:1/dir" in closed.stderr
    assert len(closed.stderr.strip().splitlines()) == 1


def test_self_check_is_skipped_with_a_note_off_port_80(local_ca: LocalCA, tmp_path: Path) -> None:
    result = _issue(
        local_ca,
        tmp_path / "state",
        "note.test",
        extra=(*_standalone(local_ca), "--self-check", "strict"),
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"self-check skipped: the responder listens on port {local_ca.http_port}" in result.stderr
    )


def test_port_in_use_is_a_clear_error(local_ca: LocalCA, tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = _issue(
            local_ca,
            tmp_path / "state",
            "busy.test",
            extra=("--http-port", str(port), "--http-address", "127.0.0.1"),
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "Traceback" not in result.stderr
