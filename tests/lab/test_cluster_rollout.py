"""Verified rollout on the lab (issue 21): what every member actually serves on 443.

Continuous renewal: certificates of a few minutes' lifetime renewed for ten minutes
across three members, each member's :443 sampled every second by a sampler inside its
namespace: never an expired certificate served, one order per renewal. A reload missing
on one member (its deploy hook does not reload nginx) makes it a straggler that
``cluster status`` names, until it serves the current version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from acmelb.lab import Lab, Scenario, build
from tests.lab.cluster_agents import (
    NAME,
    agent_argv,
    fullchain,
    log,
    start,
    status,
    store_url,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.lab, pytest.mark.timeout(900)]
ROLES = ("b1", "b2", "b3")
LIFETIME = 120  # seconds: a few minutes
RUN = 600.0  # ten minutes of renewals

SAMPLER = """
import datetime, socket, ssl, sys, time
from cryptography import x509
name, until = sys.argv[1], float(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
def served():
    with socket.create_connection(("127.0.0.1", 443), timeout=3) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
while time.time() < until:
    now = time.time()
    # As a client would: a reset during a reload, or a handshake slower than 3 s on a
    # loaded machine, is retried.
    for attempt in range(4):
        try:
            cert = served()
            print(f"{now:.3f} {cert.serial_number:x} {cert.not_valid_after_utc.timestamp():.3f}")
            break
        except (OSError, ValueError) as exc:
            failure = type(exc).__name__
            time.sleep(0.25)
    else:
        print(f"{now:.3f} none {failure}")
    sys.stdout.flush()
    time.sleep(max(0.0, 1.0 - (time.time() - now)))
"""


def versions_issued(lab: Lab) -> int:
    code, doc = status(lab)
    assert code in (0, 1), doc
    return int(doc["certificates"][0]["version"] or 0)  # type: ignore[index]


def test_continuous_renewal_never_serves_an_expired_certificate() -> None:
    with build(Scenario.cluster_preset(3, cert_validity=LIFETIME)) as lab:
        start(lab, ROLES, check_interval=1.0)
        # converged is also true before any version exists: wait for the first one first
        wait_for(lambda: all(fullchain(lab, r) for r in ROLES), 90, "the first version")
        wait_for(lambda: status(lab)[1].get("converged"), 60, "the first version everywhere")
        first = versions_issued(lab)
        until = time.time() + RUN
        samplers = {
            role: subprocess.Popen(
                [*lab.exec_prefix(role), sys.executable, "-c", SAMPLER, NAME, str(until)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for role in ROLES
        }
        try:
            outputs = {
                role: proc.communicate(timeout=RUN + 60)[0] for role, proc in samplers.items()
            }
        finally:
            for proc in samplers.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        renewals = versions_issued(lab) - first
        expired: list[tuple[str, str]] = []
        missing: list[tuple[str, str]] = []
        samples = 0
        for role, text in outputs.items():
            for line in text.splitlines():
                at, serial, rest = line.split(" ", 2)
                samples += 1
                if serial == "none":
                    missing.append((role, line))
                elif float(rest) <= float(at):
                    expired.append((role, line))
        print(
            f"\n{renewals} renewals in {RUN:.0f} s on three members; {samples} samples of "
            f":443, {len(expired)} expired, {len(missing)} without TLS; "
            f"{lab.pebble_orders()} orders for {first + renewals} versions"
        )
        assert renewals >= RUN / LIFETIME  # a new version at least once a lifetime
        assert samples >= 3 * RUN * 0.9
        assert not expired, expired[:5]
        assert not missing, missing[:5]
        assert lab.pebble_orders() == first + renewals  # orders per renewal: 1.00


def test_a_member_that_does_not_reload_is_a_straggler_until_it_serves() -> None:
    with build(Scenario.cluster_preset(3)) as lab:
        for role in ROLES:
            path = write_config(lab, role)
            if role == "b3":  # b3's hook forgets to reload its nginx
                path.write_text(path.read_text().replace(lab.deploy_hook("b3"), "true"))
            lab.start_agent(role, agent_argv(lab, path))
        wait_for(lambda: status(lab)[0] == 1, 90, "b3 named as a straggler")
        _code, doc = status(lab)
        [cert] = doc["certificates"]  # type: ignore[misc]
        assert set(cert["stragglers"]) == {"b3"}, cert
        assert "a reload missing" in cert["stragglers"]["b3"]
        text = lab.run(
            "b1",
            [sys.executable, "-m", "acmelb", "cluster", "status", "--store", store_url(lab)],
            timeout=60,
        )
        assert text.returncode == 1 and "STRAGGLER b3: serves" in text.stdout
        lab.reload_tls("b3")  # the operator reloads it by hand
        wait_for(lambda: status(lab)[0] == 0, 30, "b3 serving the current version")
        assert status(lab)[1]["converged"] is True
        assert "deploy hook for" in log(lab, "b3")
        assert json.dumps(status(lab)[1]["certificates"][0]["stragglers"]) == "{}"  # type: ignore[index]
