"""`acmelb diagnose --kube` through the Gateway API on the load-balancer lab: the static
finding read from the HTTPRoute and Gateway status and what the probes meet agree, and the
root cause is the static one.

The cluster file is a Gateway fixture (tests/diagnose/fixtures/gateway) rewritten to the
lab's name, token and VIP. The lab plays the Gateway's data plane: HAProxy is the cloud LB,
and the backends answer what the Gateway would, for the route that is *not* attached: the
HTTP->HTTPS redirect route (a 301 to https, where nothing listens), or the Gateway's 404.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from acmelb.kube.objects import label_hash
from acmelb.lab import Lab

from .conftest import LabFactory
from .test_kube_lab import codes, diagnose_kube

pytestmark = pytest.mark.lab

FIXTURES = Path(__file__).resolve().parents[1] / "diagnose" / "fixtures" / "gateway"
CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def gateway_cluster_file(lab: Lab, fixture: str, tmp_path: Path) -> Path:
    """The fixture's objects moved to the lab: its name, token and key, the VIP as the
    Gateway's and its Service's address."""
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
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [sc.name]
            for rule in obj["spec"]["rules"]:
                for match in rule.get("matches") or []:
                    if match["path"]["value"].startswith(CHALLENGE_PREFIX):
                        match["path"]["value"] = CHALLENGE_PREFIX + sc.token
        if obj["kind"] == "Gateway":
            for address in (obj.get("status") or {}).get("addresses") or []:
                address["value"] = lab.vip
        if obj["kind"] == "Service" and obj["spec"]["type"] == "LoadBalancer":
            for entry in obj["status"]["loadBalancer"]["ingress"]:
                entry["ip"] = lab.vip
    path = tmp_path / f"{fixture}.json"
    path.write_text(json.dumps(data))
    return path


def test_unattached_solver_route_lets_the_redirect_take_the_challenge(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    # Envoy Gateway: the solver route is refused by the port-80 listener (from: Same), so
    # the redirect route on that listener answers the path: 301 to https, nothing there
    lab = lab_scenario("haproxy-tcp", backends=("redirect-https",))
    doc, _said = diagnose_kube(lab, gateway_cluster_file(lab, "envoy-gateway", tmp_path), inside=())
    found = codes(doc)
    assert "solver-route-not-accepted" in found  # the HTTPRoute's status
    assert "gateway-redirects-solver" in found  # the redirect route on that listener
    assert "redirect-https" in found  # the probes were redirected to https
    assert "port-443-refused" in found  # and nothing serves the solver there
    assert doc["verdicts"]["acme-ca"] == "fail"
    root = doc["root_cause"]
    assert root["code"] == "solver-route-not-accepted"
    assert {"gateway-redirects-solver", "port-443-refused"} <= set(root["consequences"])


def test_unattached_solver_route_leaves_the_gateways_404(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    # GKE: the listener serves another hostname, the solver route is refused, and the
    # Google LB answers the challenge path with its default 404
    lab = lab_scenario("haproxy-tcp", backends=("not-found",))
    doc, said = diagnose_kube(lab, gateway_cluster_file(lab, "gke", tmp_path), inside=())
    assert "challenge-not-found" in codes(doc)
    assert doc["root_cause"]["code"] == "solver-route-not-accepted"
    assert "challenge-not-found" in doc["root_cause"]["consequences"]
    assert doc["verdicts"]["acme-ca"] == "fail" and not doc["ok"]
    # the address probed is the Gateway's status address (GKE has no Service)
    assert f"--resolve {lab.scenario.name}:{lab.vip}" in said


def test_proxy_protocol_on_the_gateways_lb_is_what_the_inside_probe_meets(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    # Cilium on Hetzner: PROXY protocol at the LB of the Gateway's Service, its bare IP
    # short-circuited inside the cluster
    lab = lab_scenario("haproxy-tcp-proxy", shortcut=("b1",))
    doc, _said = diagnose_kube(lab, gateway_cluster_file(lab, "cilium", tmp_path), inside=("b1",))
    found = codes(doc)
    assert "lb-proxy-protocol-shortcut" in found and "proxy-protocol-required" in found
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}
    assert doc["root_cause"]["code"] == "lb-proxy-protocol-shortcut"
    assert "proxy-protocol-required" in doc["root_cause"]["consequences"]


def test_a_gateway_not_programmed_serves_nothing_on_port_80(
    lab_scenario: LabFactory, tmp_path: Path
) -> None:
    # NGINX Gateway Fabric waiting for the certificate's Secret programs nothing: the LB
    # finds no listener behind it (the lab's backend has nothing on port 80)
    lab = lab_scenario("haproxy-tcp", backends=("none",))
    path = gateway_cluster_file(lab, "nginx-gateway-fabric", tmp_path)
    doc, _said = diagnose_kube(lab, path, inside=())
    root = doc["root_cause"]
    assert root["code"] == "listener-not-programmed"
    unreachable = {"port-80-refused", "port-80-timeout", "empty-reply", "read-timeout"}
    assert unreachable & set(root["consequences"]), codes(doc)
    assert doc["verdicts"]["acme-ca"] == "fail" and not doc["ok"]
