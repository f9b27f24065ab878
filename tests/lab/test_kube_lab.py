"""`acmelb diagnose --kube` on the load-balancer lab: the static finding read from the
objects and the probes agree.

The cluster file is a provider fixture (tests/kube/fixtures) rewritten to the lab's name,
token and VIP. The lab plays the cluster: HAProxy in TCP mode with PROXY protocol to the
backends is the cloud LB, a DNAT on the backend short-circuits the VIP the way kube-proxy
does for a bare LB IP, and nginx answers what the Ingress would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from acmelb.kube.objects import label_hash
from acmelb.lab import Lab

from .conftest import LabFactory

pytestmark = pytest.mark.lab

FIXTURES = Path(__file__).resolve().parents[1] / "kube" / "fixtures"


def cluster_file(lab: Lab, fixture: str, tmp_path: Path) -> Path:
    """The fixture's objects moved to the lab: its name, token and key, and the VIP."""
    sc = lab.scenario
    data: dict[str, Any] = yaml.safe_load((FIXTURES / f"{fixture}.yaml").read_text())
    hashes = {
        "acme.cert-manager.io/http-domain": label_hash(sc.name),
        "acme.cert-manager.io/http-token": label_hash(sc.token),
    }
    for obj in data["items"]:
        labels = obj["metadata"].get("labels") or {}
        if "acme.cert-manager.io/http01-solver" in labels:
            labels.update(hashes)
        if obj["kind"] == "Challenge":
            obj["spec"].update(dnsName=sc.name, token=sc.token, key=sc.key_authorization)
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                rule["host"] = sc.name
                for path in rule["http"]["paths"]:
                    path["path"] = f"/.well-known/acme-challenge/{sc.token}"
        if obj["kind"] == "Service" and obj["spec"]["type"] == "LoadBalancer":
            for entry in obj["status"]["loadBalancer"]["ingress"]:
                if "ip" in entry:
                    entry["ip"] = lab.vip
    path = tmp_path / f"{fixture}.json"
    path.write_text(json.dumps(data))
    return path


def diagnose_kube(lab: Lab, path: Path, *, inside: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    sc = lab.scenario
    argv = [
        sys.executable, "-m", "acmelb", "diagnose", "--kube", str(path), "--json",
        "--timeout", "1", "--repeat", "1", "--assume-public", "198.18.0.0/15",
        "--assume-public", "test",
        "--resolve", f"{sc.name}:{lab.vip}",
    ]  # fmt: skip
    for role in inside:
        argv += ["--inside", lab.vantage(role)]
    proc = subprocess.run(
        [*lab.exec_prefix("pub"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    docs: list[dict[str, Any]] = json.loads(proc.stdout)
    assert len(docs) == 1
    assert proc.returncode == (0 if docs[0]["ok"] else 1)
    return docs[0], proc.stderr


def codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def test_proxy_protocol_shortcut_read_from_the_service_is_what_the_inside_probe_meets(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", shortcut=("b1",))
    path = cluster_file(lab, "digitalocean", tmp_path)
    doc, said = diagnose_kube(lab, path, inside=("b1",))
    found = codes(doc)
    # the objects say it: PROXY protocol at the LB, its bare IP short-circuited inside
    assert "lb-proxy-protocol-shortcut" in found
    # and the probes see it: no answer without the header from inside, one with it
    assert "proxy-protocol-required" in found
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}
    # one root cause: what the objects show explains what the probes meet
    assert doc["root_cause"]["code"] == "lb-proxy-protocol-shortcut"
    assert "proxy-protocol-required" in doc["root_cause"]["consequences"]
    # the line to rerun by hand names the file, the vantage and the address
    rerun = f"--kube {path} --inside '{lab.vantage('b1')}' --resolve {lab.scenario.name}:{lab.vip}"
    assert f"info: to rerun by hand: acmelb diagnose {rerun}" in said


def test_redirect_annotation_read_from_the_ingress_is_what_the_probes_follow(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("redirect-https",))
    doc, _said = diagnose_kube(lab, cluster_file(lab, "aws-nlb", tmp_path), inside=())
    found = codes(doc)
    assert "ingress-redirects-solver" in found  # the objects
    assert "redirect-https" in found  # the probes were redirected to https
    assert "port-443-refused" in found  # and nothing serves the solver there
    assert doc["verdicts"]["acme-ca"] == "fail"
    assert doc["root_cause"]["code"] == "ingress-redirects-solver"
    assert "port-443-refused" in doc["root_cause"]["consequences"]


@pytest.mark.parametrize(
    ("fixture", "mode", "backends", "root", "consequence"),
    [
        # no controller serves the solver's class: nothing routes it, the backend says 404
        ("traefik-class", "haproxy-tcp", ("not-found",), "ingress-class-unserved",
         "challenge-not-found"),
        # Local traffic policy, the solver's node without a controller: the LB's packets
        # are dropped (the lab's firewall mode); the issuer also waits instead of checking
        ("metallb", "firewall", ("responder",), "traffic-policy-local", "port-80-timeout"),
    ],
)  # fmt: skip
def test_static_cause_explains_what_the_probes_meet(
    lab_scenario: LabFactory,
    tmp_path: Path,
    fixture: str,
    mode: str,
    backends: tuple[str, ...],
    root: str,
    consequence: str,
) -> None:
    lab = lab_scenario(mode, backends=backends)
    doc, _said = diagnose_kube(lab, cluster_file(lab, fixture, tmp_path), inside=())
    assert doc["root_cause"]["code"] == root
    assert consequence in doc["root_cause"]["consequences"]
    assert doc["verdicts"]["acme-ca"] == "fail" and not doc["ok"]
    if fixture == "metallb":
        assert "self-check-skipped" in codes(doc)  # waitInsteadOfSelfCheck while the CA fails


def test_a_solver_never_presented_stops_before_any_probe(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    lab = lab_scenario("haproxy-tcp")
    doc, _said = diagnose_kube(lab, cluster_file(lab, "nodeport", tmp_path), inside=())
    assert doc["root_cause"]["code"] == "solver-not-presented"
    assert doc["root_cause"]["severity"] == "fatal"
    assert doc["probes"] == []  # nothing to validate: no packet is sent
    assert doc["verdicts"]["acme-ca"] == "fail"
