"""Renewal drills for the cluster on the lab (issue 21): the CA moves every ARI window
into the past, as Let's Encrypt did on 2026-03-19 for about 3M certificates, and the
cluster replaces each certificate once, with ``replaces``, polling ARI once per
certificate for the cluster (not once per member).

Ten agents in ten backends behind a round-robin TCP HAProxy, a 3-member etcd, Pebble 2.10
(10-day certificates: nothing is due by its lifetime, nor in Pebble's own window, during
the test). ``ari_poll_max`` caps the CA's Retry-After (6 h at Pebble) at a few seconds,
so that the drill is seen within the test.
"""

from __future__ import annotations

import datetime
import re
import time

import pytest
from cryptography import x509

from acmelb.acme import ari
from acmelb.lab import Lab, Scenario, build
from tests.lab.cluster_agents import etcd_values, log, start, status, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]
AGENTS = 10
CERTS = 20
POLL = 5.0  # ari_poll_max
NAMES = tuple(f"d{i}.acmelb.test" for i in range(1, CERTS + 1))
# the bound docs/cluster.md states, from "the CA moves the windows" to "every member has
# installed every new version": one poll interval, then the orders, then the installs
DRILL_BOUND = 120.0


def roles() -> tuple[str, ...]:
    return tuple(f"b{i}" for i in range(1, AGENTS + 1))


def versions(lab: Lab) -> dict[str, int | None] | None:
    """Each certificate's current version, if every member has installed it."""
    code, doc = status(lab)
    if code != 0 or not doc.get("converged"):
        return None
    return {c["name"]: c["version"] for c in doc["certificates"]}  # type: ignore[attr-defined]


def polls(lab: Lab) -> int:
    return sum(len(re.findall(r": ARI poll: window", log(lab, r))) for r in roles())


def test_a_drill_over_twenty_certificates_one_order_each() -> None:
    with build(Scenario.cluster_preset(AGENTS, cert_validity=10 * 86400)) as lab:
        assert lab.ca is not None
        start(lab, roles(), names=NAMES, check_interval=1.0, extra=f"ari_poll_max = {POLL:g}")
        issued = wait_for(
            lambda: (v := versions(lab)) is not None and set(v.values()) == {1},
            300,
            "twenty certificates on ten members",
        )
        wait_for(
            lambda: len(etcd_values(lab, "/acmelb/ari/")) == CERTS,
            60,
            "an ARI window for every certificate",
        )
        orders = lab.pebble_orders()
        assert orders == CERTS
        watched = time.monotonic()
        before = polls(lab)
        now = datetime.datetime.now(datetime.UTC)
        # Pebble 2.10 looks `replaces` up by the serial without its DER sign byte: for a
        # serial whose DER starts with a zero byte (about 1 in 256) it answers 500, and
        # acmelb orders again without `replaces` (RFC 9773 allows it), and says so.
        unreplaceable = 0
        for name in NAMES:
            pem = (lab.agent_state_dir("b1") / "live" / name / "cert.pem").read_bytes()
            serial = x509.load_pem_x509_certificate(pem).serial_number
            unreplaceable += ari.serial_der(serial)[0] == 0
            lab.ca.set_renewal_info(
                pem,
                now - datetime.timedelta(hours=2),
                now - datetime.timedelta(hours=1),
                explanation_url="https://status.example/drill",
            )
        took = wait_for(
            lambda: (v := versions(lab)) is not None and set(v.values()) == {2},
            DRILL_BOUND,
            "every member installing every replacement",
        )
        elapsed = time.monotonic() - watched
        print(
            f"\nten members, twenty certificates: issued in {issued:.1f} s; after the CA "
            f"moved the windows, every member had every replacement in {took:.1f} s"
        )
        # One order per certificate, each naming the certificate it replaces.
        assert lab.pebble_orders() == 2 * CERTS
        pebble = lab.pebble_log.read_text()
        replacements = len(re.findall(r"ARI: order .* is a replacement of", pebble))
        assert replacements == CERTS - unreplaceable, (replacements, unreplaceable)
        logs = "".join(log(lab, r) for r in roles())
        assert logs.count("ordering again without replaces") == unreplaceable
        # ARI polled once per certificate per interval for the cluster, not per member.
        made = polls(lab) - before
        per_certificate = made / CERTS
        assert per_certificate <= elapsed / POLL + 2, (made, elapsed)
        print(f"ARI polls per certificate in {elapsed:.0f} s: {per_certificate:.1f}")
        early = sum(log(lab, r).count("renewing early") for r in roles())
        assert early == CERTS
        assert "https://status.example/drill" in "".join(log(lab, r) for r in roles())
        assert took < DRILL_BOUND
