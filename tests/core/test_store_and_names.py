"""Storage invariants and name rules, without a CA."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from acmelb.acme.ca import parse_retry_after
from acmelb.acme.store import KINDS, Store, atomic_write
from acmelb.errors import InvalidNameError, StateError
from acmelb.names import normalize_name


def _save(store: Store, name: str, tag: bytes) -> None:
    store.save(
        name,
        privkey_pem=b"key-" + tag,
        cert_pem=b"cert-" + tag + b"\n",
        chain_pem=b"chain-" + tag + b"\n",
        renewal={"names": [name]},
    )


def test_key_file_is_never_wider_than_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask a caller could have
    try:
        atomic_write(tmp_path / "key.pem", b"secret", 0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]


def test_versions_accumulate_and_live_follows(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with store.lock("a.test"):
        _save(store, "a.test", b"1")
        _save(store, "a.test", b"2")
    lineage = store.lineage("a.test")
    assert lineage.current_version() == 2
    assert lineage.read("privkey") == b"key-2"
    assert lineage.read("fullchain") == b"cert-2\nchain-2\n"
    assert (lineage.archive_dir / "privkey1.pem").read_bytes() == b"key-1"


def test_interrupted_switch_is_finished_by_next_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with store.lock("b.test"):
        _save(store, "b.test", b"1")
        _save(store, "b.test", b"2")
    lineage = store.lineage("b.test")
    # Simulate a kill between two link switches: cert at 2, the rest back at 1.
    for kind in KINDS:
        if kind != "cert":
            (lineage.live_dir / f"{kind}.pem").unlink()
            os.symlink(f"../../archive/b.test/{kind}1.pem", lineage.live_dir / f"{kind}.pem")
    (lineage.live_dir / ".switching").write_text("2")
    (lineage.archive_dir / ".cert3.pem.999.acmelb-tmp").write_bytes(b"partial")
    assert lineage.current_version() is None
    with store.lock("b.test"):
        pass
    assert lineage.current_version() == 2
    assert not (lineage.live_dir / ".switching").exists()
    assert not list(lineage.archive_dir.glob("*.acmelb-tmp"))


def test_lock_times_out_with_a_clear_message(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    with (
        store.lock("c.test"),
        pytest.raises(StateError, match="another acmelb run holds"),
        store.lock("c.test", timeout=0.2),
    ):
        pass


def test_unusable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="not usable"):
        Store(blocker / "state").prepare()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("a-b.c-d.example", "a-b.c-d.example"),
    ],
)
def test_names_normalize(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "*.example.com",
        "192.0.2.1",
        "[2001:db8::1]",
        "localhost",
        "a..b",
        "-a.example",
        "a_b.example",
        "example.123",
        ("a" * 63 + ".") * 4 + "com",
    ],
)
def test_bad_names_raise(raw: str) -> None:
    with pytest.raises(InvalidNameError):
        normalize_name(raw)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7", 1.0) == 7.0
    assert parse_retry_after(None, 1.5) == 1.5
    assert parse_retry_after("garbage", 2.0) == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 0.0  # in the past
