"""Pebble rejects 30% of nonces (PEBBLE_WFE_NONCEREJECT=30): 100 issuances in a row."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LocalCA, _start_local_ca
from tests.reliability.conftest import check_state, issue_via, temp_files
from tests.reliability.faultproxy import FaultProxy

ISSUANCES = 100


@pytest.fixture
def rejecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCA, FaultProxy]]:
    ca = _start_local_ca(tmp_path_factory.mktemp("pebble-30"), nonce_reject_percent=30)
    # A pass-through proxy (no faults) only to count the badNonce answers.
    proxy = FaultProxy(
        "127.0.0.1", ca.pebble.port, ca.ca_bundle, tmp_path_factory.mktemp("proxy")
    ).start()
    try:
        yield ca, proxy
    finally:
        proxy.stop()
        ca.pebble.stop()
        ca.dns.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_hundred_issuances_in_a_row_with_30_percent_bad_nonces(
    rejecting: tuple[LocalCA, FaultProxy], tmp_path: Path
) -> None:
    ca, proxy = rejecting
    state = tmp_path / "state"
    start = time.monotonic()
    failures = []
    for index in range(ISSUANCES):
        result = issue_via(proxy, ca, state, f"n{index}.nonce.test")
        if result.returncode != 0:
            failures.append((index, result.stderr.strip().splitlines()[-1:]))
    elapsed = time.monotonic() - start
    assert failures == []
    assert len(check_state(state, ca.root_bundle)) == ISSUANCES
    assert temp_files(state) == []
    rejected = [s for s in proxy.log if s.status == 400]
    posts = [s for s in proxy.log if s.method == "POST"]
    # Pebble really did reject about 30% of the POSTs (each one uses a nonce).
    assert 0.2 < len(rejected) / len(posts) < 0.4, (len(rejected), len(posts))
    summary = {
        "issuances": ISSUANCES,
        "succeeded": ISSUANCES - len(failures),
        "posts": len(posts),
        "bad_nonce_answers": len(rejected),
        "seconds": round(elapsed, 1),
    }
    print(f"\nbad-nonce run: {json.dumps(summary)}")
