"""Renewal in the short-lived era against a real Pebble 2.10 (issue 21): profiles, ARI
windows set through Pebble's management port, ``replaces`` read back from the order,
``alreadyReplaced`` survived, Retry-After honoured across runs, and the lifetime's
window when the CA's answer cannot be used.

Pebble's profiles carry Let's Encrypt's names and validity periods (classic 90 days,
tlsserver 45 days, shortlived 160 hours).
"""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from acmelb.acme import ari
from acmelb.acme.ca import CAConfig, open_account
from acmelb.acme.issuance import ari_state_path, renewal_timing
from acmelb.acme.store import Store
from acmelb.lab.pebble import LETSENCRYPT_PROFILES
from tests.conftest import LocalCA, _start_local_ca, run_acmelb

pytestmark = pytest.mark.timeout(180)
HOUR = 3600.0
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def le_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCA]:
    ca = _start_local_ca(tmp_path_factory.mktemp("pebble-le"), profiles=LETSENCRYPT_PROFILES)
    try:
        yield ca
    finally:
        ca.pebble.stop()
        ca.dns.stop()


def issue(ca: LocalCA, state: Path, name: str, *extra: str) -> None:
    proc = run_acmelb(
        "issue",
        name,
        *ca.ca_args(state),
        "--self-check",
        "off",
        "--solver",
        "standalone",
        "--http-port",
        str(ca.http_port),
        "--http-address",
        "127.0.0.1",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr


def renew(ca: LocalCA, state: Path, name: str, *extra: str) -> tuple[int, dict[str, str]]:
    proc = run_acmelb("renew", name, "--state-dir", str(state), "--json", *extra)
    assert "Traceback" not in proc.stderr, proc.stderr
    outcome: dict[str, str] = json.loads(proc.stdout)[0]
    return proc.returncode, outcome


def cert(state: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((state / "live" / name / "cert.pem").read_bytes())


def lifetime_hours(c: x509.Certificate) -> float:
    return (c.not_valid_after_utc - c.not_valid_before_utc).total_seconds() / HOUR


def window(ca: LocalCA, state: Path, name: str, start_hours: float, end_hours: float) -> None:
    ca.pebble.set_renewal_info(
        (state / "live" / name / "cert.pem").read_bytes(),
        NOW + datetime.timedelta(hours=start_hours),
        NOW + datetime.timedelta(hours=end_hours),
        explanation_url="https://status.example/incident-42",
    )


def forget_poll(state: Path, name: str) -> None:
    """As if the Retry-After had passed: the next run asks the CA again."""
    path = ari_state_path(Store(state).lineage(name))
    data = json.loads(path.read_text())
    data["next_poll"] = 0
    path.write_text(json.dumps(data))


def test_profiles_set_the_validity_and_renewal_keeps_the_profile(
    le_ca: LocalCA, tmp_path: Path
) -> None:
    issue(le_ca, tmp_path, "short.test", "--profile", "shortlived")
    assert lifetime_hours(cert(tmp_path, "short.test")) == pytest.approx(160, abs=0.01)
    issue(le_ca, tmp_path, "classic.test", "--profile", "classic")
    assert lifetime_hours(cert(tmp_path, "classic.test")) == pytest.approx(90 * 24, abs=0.01)
    first = cert(tmp_path, "short.test").serial_number
    code, outcome = renew(le_ca, tmp_path, "short.test", "--force")
    assert code == 0 and outcome["action"] == "renewed", outcome
    renewed = cert(tmp_path, "short.test")
    assert renewed.serial_number != first
    assert lifetime_hours(renewed) == pytest.approx(160, abs=0.01)  # the profile was kept
    # A profile the CA does not offer: one line, exit 2, no order made.
    orders = le_ca.pebble.counts().orders
    proc = run_acmelb(
        "issue", "x.test", *le_ca.ca_args(tmp_path), "--self-check", "off", "--profile", "nope"
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("acmelb: error: profile 'nope': the CA at https://")
    assert "classic, shortlived, tlsserver" in proc.stderr and proc.stderr.count("\n") == 1
    assert le_ca.pebble.counts().orders == orders
    listed = run_acmelb("account", "profiles", *le_ca.ca_args(tmp_path))
    assert listed.returncode == 0
    assert [line.split(":")[0] for line in listed.stdout.splitlines()] == [
        "classic",
        "shortlived",
        "tlsserver",
    ]


def issue_replaceable(ca: LocalCA, state: Path, name: str, *extra: str) -> None:
    """Issue until the serial's DER has no leading zero byte: Pebble 2.10 looks up
    ``replaces`` by the serial's bytes without it (about 1 certificate in 256 fails
    there with serverInternal; acmelb then orders without ``replaces``, as for any
    refusal of it, but these tests read ``replaces`` back)."""
    issue(ca, state, name, *extra)
    while ari.serial_der(cert(state, name).serial_number)[0] == 0:
        issue(ca, state, name, *extra)


def test_ari_window_in_the_future_then_in_the_past(le_ca: LocalCA, tmp_path: Path) -> None:
    name = "ari.test"
    issue_replaceable(le_ca, tmp_path, name, "--profile", "tlsserver")
    original = cert(tmp_path, name)
    window(le_ca, tmp_path, name, 24, 48)
    code, outcome = renew(le_ca, tmp_path, name)
    assert code == 0 and outcome["action"] == "not-due", outcome
    assert "from the CA's ARI" in outcome["detail"] and "next ARI poll" in outcome["detail"]
    shown = json.loads(run_acmelb("certificates", "--state-dir", str(tmp_path), "--json").stdout)
    timing = shown[0]["renewal"]
    assert timing["source"] == "ari"
    assert timing["explanation_url"] == "https://status.example/incident-42"
    start = datetime.datetime.fromisoformat(timing["window"]["start"])
    assert abs((start - NOW).total_seconds() - 24 * HOUR) < 5
    assert timing["window"]["start"] <= timing["renew_after"] <= timing["window"]["end"]
    # The CA moves the window into the past: renewed at once, with `replaces`, once.
    window(le_ca, tmp_path, name, -2, -1)
    forget_poll(tmp_path, name)
    code, outcome = renew(le_ca, tmp_path, name)
    assert code == 0 and outcome["action"] == "renewed", outcome
    replacement = cert(tmp_path, name)
    assert replacement.serial_number != original.serial_number
    client = open_account(Store(tmp_path), CAConfig(le_ca.directory_url, le_ca.ca_bundle))
    assert client.order_document(last_order_url(le_ca, client))["replaces"] == ari.cert_id(original)
    # The new certificate's window is its own: nothing more to do.
    code, outcome = renew(le_ca, tmp_path, name)
    assert code == 0 and outcome["action"] == "not-due", outcome


def last_order_url(ca: LocalCA, client: object) -> str:
    """The newest order's URL, from Pebble's log ("Added order \\"ID\\" to the db")."""
    text = ca.pebble.log_path.read_text()
    order_id = text.rsplit('Added order "', 1)[1].split('"', 1)[0]
    return f"{ca.directory_url.rsplit('/', 1)[0]}/my-order/{order_id}"


def test_a_second_replacement_is_refused_and_ordered_without_replaces(
    le_ca: LocalCA, tmp_path: Path
) -> None:
    name, state = "twice.test", tmp_path / "state"
    issue_replaceable(le_ca, state, name)
    store = Store(state)
    lineage = store.lineage(name)
    original_pem = lineage.read("cert")
    window(le_ca, state, name, -2, -1)
    renewal_timing(store, name, open_account(store, CAConfig(le_ca.directory_url, le_ca.ca_bundle)))
    stale = tmp_path / "stale.json"
    stale.write_text(ari_state_path(lineage).read_text())  # the first certificate's window
    _code, outcome = renew(le_ca, state, name)
    assert outcome["action"] == "renewed", outcome
    # Put the first certificate back with its past window, as a restored backup would:
    # its replacement exists, so the CA answers alreadyReplaced; acmelb orders again
    # without `replaces`, says so, and renews.
    restored = tmp_path / "restored-cert.pem"
    restored.write_bytes(original_pem)
    lineage.path("cert").unlink()
    lineage.path("cert").symlink_to(restored)
    ari_state_path(lineage).write_text(stale.read_text())
    proc = run_acmelb("renew", name, "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert "alreadyReplaced" in proc.stderr and "ordering again without replaces" in proc.stderr


def test_retry_after_is_honoured_across_runs(le_ca: LocalCA, tmp_path: Path) -> None:
    name = "poll.test"
    issue_replaceable(le_ca, tmp_path, name)
    window(le_ca, tmp_path, name, 24, 48)
    renew(le_ca, tmp_path, name)
    state = json.loads(ari_state_path(Store(tmp_path).lineage(name)).read_text())
    assert state["next_poll"] == pytest.approx(time.time() + 6 * HOUR, abs=60)  # Pebble: 6 h
    # The CA moves the window, but its Retry-After has not passed: not asked, not renewed.
    window(le_ca, tmp_path, name, -2, -1)
    code, outcome = renew(le_ca, tmp_path, name)
    assert outcome["action"] == "not-due" and code == 0
    forget_poll(tmp_path, name)
    assert renew(le_ca, tmp_path, name)[1]["action"] == "renewed"


def test_a_malformed_or_backwards_window_falls_back_to_the_lifetime(
    le_ca: LocalCA, tmp_path: Path
) -> None:
    name = "broken.test"
    issue(le_ca, tmp_path, name)
    pem = (tmp_path / "live" / name / "cert.pem").read_bytes()
    le_ca.pebble.set_renewal_info(
        pem, NOW - datetime.timedelta(hours=1), NOW - datetime.timedelta(hours=2)
    )  # ends before it starts
    for _run in range(2):  # no renewal, and no loop: the CA is asked again only later
        code, outcome = renew(le_ca, tmp_path, name)
        assert code == 0 and outcome["action"] == "not-due", outcome
        assert "from the lifetime" in outcome["detail"]
        assert "the window ends before it starts" in outcome["detail"]
    assert not (tmp_path / "archive" / name / "cert2.pem").exists()  # nothing issued


def test_the_lifetime_rule_without_ari() -> None:
    day = 86400.0
    assert ari.lifetime_window(0, 90 * day) == ari.Window(52.5 * day, 60 * day)
    assert ari.lifetime_window(0, 45 * day) == ari.Window(26.25 * day, 30 * day)
    six = 160 * HOUR  # under 10 days: by half the lifetime
    assert ari.lifetime_window(0, six) == ari.Window(six / 2 - six / 12, six / 2)
    # whatever the window: before a third of the lifetime is left
    assert ari.renew_by(80 * day, 0, 90 * day) == 60 * day
    assert ari.renew_by(10 * day, 0, 90 * day) == 10 * day
    with pytest.raises(ari.AriError, match="ends before it starts"):
        ari.parse_renewal_info(
            b'{"suggestedWindow": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}}'
        )
    with pytest.raises(ari.AriError, match="no suggestedWindow"):
        ari.parse_renewal_info(b"{}")
    with pytest.raises(ari.AriError, match="not JSON"):
        ari.parse_renewal_info(b"<html>")
    assert ari.serial_der(0x80) == b"\x00\x80" and ari.serial_der(0x7F) == b"\x7f"


class _DirectoryWithoutAri(http.server.BaseHTTPRequestHandler):
    """A CA without ARI: Pebble's directory, served over plain HTTP without renewalInfo
    (every other URL in it still points at Pebble itself)."""

    upstream = ""
    bundle = ""

    def do_GET(self) -> None:
        context = ssl.create_default_context(cafile=self.bundle)
        request = urllib.request.Request(self.upstream, headers={"User-Agent": "acmelb-test"})
        with urllib.request.urlopen(request, context=context, timeout=5) as answer:
            directory = json.loads(answer.read())
        directory.pop("renewalInfo", None)
        body = json.dumps(directory).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_ca_without_ari_renews_by_the_lifetime(le_ca: LocalCA, tmp_path: Path) -> None:
    handler = type(
        "Handler",
        (_DirectoryWithoutAri,),
        {"upstream": le_ca.directory_url, "bundle": str(le_ca.ca_bundle)},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        directory = f"http://127.0.0.1:{server.server_address[1]}/dir"
        proc = run_acmelb(
            "issue",
            "noari.test",
            "--directory",
            directory,
            "--ca-bundle",
            str(le_ca.ca_bundle),
            "--state-dir",
            str(tmp_path),
            "--self-check",
            "off",
            "--solver",
            "standalone",
            "--http-port",
            str(le_ca.http_port),
            "--http-address",
            "127.0.0.1",
            "--profile",
            "tlsserver",
        )
        assert proc.returncode == 0, proc.stderr
        code, outcome = renew(le_ca, tmp_path, "noari.test")
        assert code == 0 and outcome["action"] == "not-due", outcome
        assert "from the lifetime" in outcome["detail"]
        shown = json.loads(
            run_acmelb("certificates", "--state-dir", str(tmp_path), "--json").stdout
        )[0]["renewal"]
        assert shown["source"] == "lifetime" and shown["next_ari_poll"] is None
        # 45 days: the window closes with a third left (day 30), opens a twelfth before
        not_before = cert(tmp_path, "noari.test").not_valid_before_utc
        end = datetime.datetime.fromisoformat(shown["window"]["end"])
        assert abs((end - not_before).total_seconds() - 30 * 86400) < 5
    finally:
        server.shutdown()
        server.server_close()
