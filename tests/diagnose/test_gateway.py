"""``acmelb diagnose --kube`` and ``acmelb fix k8s --kube`` through the Gateway API.

The fixtures (``fixtures/gateway/*.yaml``, sources cited in each) are what ``kubectl get
KUBECTL_KINDS -A -o json`` prints for cert-manager's ``gatewayHTTPRoute`` solver on Envoy
Gateway, Cilium, Istio, NGINX Gateway Fabric and GKE, and a cluster with both Ingresses and
Gateways, written as YAML to carry comments. Each failure mode is a fixture or a change to
one; every printed patch is validated against the Gateway API CRDs (``gateway_schema``).
No packet is sent here.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

import acmelb.kube.plan  # noqa: F401 - registers the KUBE stage's checks
from acmelb.cli.main import main
from acmelb.doctor.checks.base import Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.findings import Code, Finding
from acmelb.doctor.report import Report
from acmelb.fix.kube import cluster_patches
from acmelb.kube.challenges import KUBECTL_COMMAND
from acmelb.kube.objects import Cluster, parse_cluster, probe_plan
from acmelb.kube.plan import plan, read_objects
from tests.diagnose import gateway_schema

FIXTURES = Path(__file__).with_name("fixtures") / "gateway"

# fixture -> (the codes the objects show, the root cause)
CAUSES: dict[str, tuple[list[Code], Code]] = {
    "envoy-gateway": (
        [Code.SOLVER_ROUTE_NOT_ACCEPTED, Code.GATEWAY_REDIRECTS_SOLVER],
        Code.SOLVER_ROUTE_NOT_ACCEPTED,
    ),
    "cilium": ([Code.LB_PROXY_SHORTCUT], Code.LB_PROXY_SHORTCUT),
    "istio": ([Code.SOLVER_ROUTE_NOT_ACCEPTED], Code.SOLVER_ROUTE_NOT_ACCEPTED),
    "nginx-gateway-fabric": ([Code.LISTENER_NOT_PROGRAMMED], Code.LISTENER_NOT_PROGRAMMED),
    "gke": ([Code.SOLVER_ROUTE_NOT_ACCEPTED], Code.SOLVER_ROUTE_NOT_ACCEPTED),
    "mixed": ([Code.GATEWAY_API_DISABLED], Code.GATEWAY_API_DISABLED),
}
GATEWAY_FIXTURES = sorted(set(CAUSES) - {"mixed"})
KUBERNETES_VERSION = "1.33"


def objects(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return data


def cluster_of(data: dict[str, Any]) -> Cluster:
    return parse_cluster(json.dumps(data), "test")


def report_of(data: dict[str, Any]) -> Report:
    todo = plan([], cluster=cluster_of(data))
    assert len(todo.targets) == 1
    return read_objects(todo.targets[0])


def static_codes(data: dict[str, Any]) -> list[Code]:
    return [f.code for f in report_of(data).findings]


def finding(data: dict[str, Any], code: Code) -> Finding:
    return next(f for f in report_of(data).findings if f.code is code)


def items(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in data["items"] if i["kind"] == kind]


def item(data: dict[str, Any], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(i for i in items(data, kind) if name is None or i["metadata"]["name"] == name)


def solver_route(data: dict[str, Any]) -> dict[str, Any]:
    return next(
        r for r in items(data, "HTTPRoute") if r["metadata"]["name"].startswith("cm-acme-http")
    )


def healthy(data: dict[str, Any]) -> dict[str, Any]:
    """The same cluster with every fault removed: conditions true, no redirect route, no
    PROXY protocol, the solver route on the port-80 listener, listeners for any host and
    namespace."""
    data = copy.deepcopy(data)
    data["items"] = [
        i
        for i in data["items"]
        if not (i["kind"] == "HTTPRoute" and i["metadata"]["name"] == "https-redirect")
    ]
    for obj in data["items"]:
        for cond in _conditions(obj):
            cond["status"] = "True"
        for ref in _parent_refs(obj):
            ref["sectionName"] = "http"
        if obj["kind"] == "Gateway":
            for lst in obj["spec"]["listeners"]:
                if lst["protocol"] == "HTTP":
                    lst.pop("hostname", None)
                    lst["allowedRoutes"] = {"namespaces": {"from": "All"}}
        notes = obj["metadata"].get("annotations") or {}
        for key in [k for k in notes if "proxy" in k]:
            del notes[key]
    return data


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    status = obj.get("status") or {}
    found = list(status.get("conditions") or [])
    for part in [*(status.get("listeners") or []), *(status.get("parents") or [])]:
        found += part.get("conditions") or []
    return found


def _parent_refs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "HTTPRoute":
        status = [p["parentRef"] for p in (obj.get("status") or {}).get("parents") or []]
        return [*obj["spec"]["parentRefs"], *status]
    if obj["kind"] == "Challenge":
        route = obj["spec"]["solver"]["http01"].get("gatewayHTTPRoute") or {}
        refs: list[dict[str, Any]] = route.get("parentRefs") or []
        return refs
    return []


# -- reading the file --------------------------------------------------------------------------


def test_the_documented_command_fetches_the_gateway_kinds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "gatewayclasses,gateways,httproutes,listenersets" in KUBECTL_COMMAND
    assert "issuers,clusterissuers" in KUBECTL_COMMAND
    assert main(["diagnose", "--help"]) == 0
    out = "".join(capsys.readouterr().out.split())
    assert "".join(KUBECTL_COMMAND.split()) in out and "dropitfromthelist" in out


def test_kinds_nothing_reads_are_skipped_with_a_note() -> None:
    data = objects("envoy-gateway")
    data["items"] += [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "x"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "namespace": "x"}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute", "metadata": {}},
        {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "i"}},
    ]
    cluster = cluster_of(data)
    assert cluster.notes == [
        "skipped the objects of kinds acmelb does not read: GRPCRoute (1), Secret (2)"
    ]
    todo = plan([], cluster=cluster)
    assert todo.infos == cluster.notes
    assert static_codes(data) == CAUSES["envoy-gateway"][0]


def test_a_challenge_is_connected_to_its_route_gateway_class_service_and_pods() -> None:
    cluster = cluster_of(objects("envoy-gateway"))
    solver = cluster.solver_for(cluster.challenges[0])
    path = solver.gateway
    assert [r.meta.name for r in path.routes] == ["cm-acme-http-solver-x7k2p"]
    assert [g.ref for g in path.parents] == ["Gateway infra/eg"]
    assert [c.implementation for c in path.classes] == ["Envoy Gateway"]
    assert [s.meta.ref for s in path.services] == ["envoy-gateway-system/envoy-infra-eg-5a1b2c3d"]
    assert [p.meta.name for p in path.pods] == ["envoy-infra-eg-5a1b2c3d-7f9c8b6d4-xk2lp"]
    assert [r.meta.name for r in path.neighbours] == ["https-redirect"]
    assert [s.meta.name for s in solver.front_services] == ["envoy-infra-eg-5a1b2c3d"]


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("cilium", "web/cilium-gateway-web"),
        ("istio", "istio-ingress/public-istio"),
        ("nginx-gateway-fabric", "store/gateway-nginx"),
        ("gke", None),  # GKE makes no Service: a Google LB
    ],
)
def test_each_implementations_service_is_found_by_its_labels(
    name: str, service: str | None
) -> None:
    cluster = cluster_of(objects(name))
    solver = cluster.solver_for(cluster.challenges[0])
    assert [s.meta.ref for s in solver.gateway.services] == ([service] if service else [])


# -- every fixture names its cause, and a healthy Gateway nothing ---------------------------


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_each_fixture_names_its_cause_and_root(name: str) -> None:
    codes, root = CAUSES[name]
    report = report_of(objects(name))
    assert sorted(f.code.value for f in report.findings) == sorted(c.value for c in codes)
    assert report.root_cause is not None and report.root_cause.code is root


@pytest.mark.parametrize("name", GATEWAY_FIXTURES)
def test_the_same_gateway_healthy_shows_nothing(name: str) -> None:
    assert static_codes(healthy(objects(name))) == []


# -- solver-route-not-accepted -----------------------------------------------------------------


def test_not_allowed_by_listeners_names_parent_listener_reason_and_the_patch() -> None:
    data = objects("envoy-gateway")
    found = finding(data, Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "Gateway infra/eg" in found.title and "NotAllowedByListeners" in found.title
    assert "listener 'http' (HTTP port 80, any hostname, routes from Same namespaces)" in (
        found.explanation
    )
    assert "No listeners included by this parent ref allowed this attachment." in (
        found.explanation
    )
    assert (
        "kubectl patch gateway -n infra eg --type=json -p "
        '\'[{"op":"add","path":"/spec/listeners/0/allowedRoutes","value":{"namespaces":'
        '{"from":"Selector","selector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name",'
        '"operator":"In","values":["infra","shop"]}]}}}}]\'' in found.remedy
    )


def test_a_selector_by_label_gets_the_label_on_the_namespace() -> None:
    data = objects("envoy-gateway")
    gateway = item(data, "Gateway")
    gateway["spec"]["listeners"][0]["allowedRoutes"] = {
        "namespaces": {"from": "Selector", "selector": {"matchLabels": {"shared-gateway": "yes"}}}
    }
    found = finding(data, Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "kubectl label namespace shop shared-gateway=yes" in found.remedy


def test_a_section_name_on_the_https_listener_gets_the_http_one() -> None:
    found = finding(objects("istio"), Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "NotAnHTTPListener" in found.title
    assert "kubectl edit issuer -n apps letsencrypt" in found.remedy
    assert "sectionName: http\n" in found.remedy + "\n"


def test_no_http_listener_on_port_80_gets_one_added() -> None:
    data = objects("gke")
    gateway = item(data, "Gateway")
    gateway["spec"]["listeners"] = gateway["spec"]["listeners"][1:]
    cond = solver_route(data)["status"]["parents"][0]["conditions"][0]
    cond.update(reason="NoMatchingParent", message="No listener matches sectionName http")
    found = finding(data, Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "NoMatchingParent" in found.title
    assert '"op":"add","path":"/spec/listeners/-"' in found.remedy
    assert '"name":"http","port":80,"protocol":"HTTP"' in found.remedy


def test_a_hostname_mismatch_gets_a_listener_for_the_name() -> None:
    found = finding(objects("gke"), Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "NoMatchingListenerHostname" in found.title
    assert "hostname www2.example.com" not in found.explanation  # the listener's line says it
    assert "www2.example.com" in found.explanation
    assert '"hostname":"blog.example.com"' in found.remedy
    assert "sectionName: acme-blog.example.com" in found.remedy


def test_an_implementations_own_reason_is_named() -> None:
    data = objects("envoy-gateway")
    cond = solver_route(data)["status"]["parents"][0]["conditions"][0]
    cond.update(
        reason="NoReadyListeners", message="There are no ready listeners for this parent ref"
    )
    found = finding(data, Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "NoReadyListeners" in found.title
    assert "kubectl describe httproute -n shop cm-acme-http-solver-x7k2p" in found.remedy


@pytest.mark.parametrize("name", GATEWAY_FIXTURES)
def test_a_route_no_controller_reported_on_is_named(name: str) -> None:
    # The controller down (or the class served by none): the route has no status at all.
    data = healthy(objects(name))
    solver_route(data).pop("status", None)
    report = report_of(data)
    assert [f.code for f in report.findings] == [Code.SOLVER_ROUTE_NOT_ACCEPTED]
    found = report.findings[0]
    assert "(NoStatus)" in found.title and "No controller has processed" in found.explanation
    assert report.root_cause is not None
    assert report.root_cause.code is Code.SOLVER_ROUTE_NOT_ACCEPTED
    gateway_class = item(data, "Gateway")["spec"]["gatewayClassName"]
    assert f"kubectl get gatewayclass {gateway_class} -o 'jsonpath={{.status}}'" in found.remedy


def listener_set_cluster() -> dict[str, Any]:
    """cert-manager 1.20+ with a ListenerSet holding only an HTTPS listener: its solver
    route names the ListenerSet, which has no HTTP listener (cert-manager#8748)."""
    data = objects("envoy-gateway")
    data["items"] = [
        i
        for i in data["items"]
        if not (i["kind"] == "HTTPRoute" and i["metadata"]["name"] == "https-redirect")
    ]
    item(data, "Gateway")["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    data["items"].append(yaml.safe_load(LISTENER_SET))
    ref = {"group": "gateway.networking.k8s.io", "kind": "ListenerSet", "name": "shop"}
    route = solver_route(data)
    route["spec"]["parentRefs"] = [ref]
    route["status"]["parents"][0]["parentRef"] = ref
    cond = route["status"]["parents"][0]["conditions"][0]
    cond.update(
        reason="NoReadyListeners", message="There are no ready listeners for this parent ref"
    )
    return data


# A ListenerSet as in cert-manager's "self-service TLS with ListenerSet" guide (cited in
# envoyproxy/gateway#9012), names replaced.
LISTENER_SET = """
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {name: shop, namespace: shop}
spec:
  parentRef: {group: gateway.networking.k8s.io, kind: Gateway, name: eg, namespace: infra}
  listeners:
  - name: https
    hostname: shop.example.com
    port: 443
    protocol: HTTPS
    tls:
      mode: Terminate
      certificateRefs: [{kind: Secret, name: shop-example-com-tls}]
status:
  conditions:
  - type: Accepted
    status: "True"
    lastTransitionTime: "2026-06-01T10:00:00Z"
    reason: Accepted
    message: ListenerSet accepted
  - type: Programmed
    status: "True"
    lastTransitionTime: "2026-06-01T10:00:00Z"
    reason: Programmed
    message: ListenerSet programmed
"""


def test_a_listener_set_without_http_falls_back_to_its_gateway() -> None:
    found = finding(listener_set_cluster(), Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert "ListenerSet shop/shop" in found.title
    assert "has no HTTP listener on port 80: name its Gateway's listener 'http'" in found.remedy
    assert "name: eg" in found.remedy and "kind: Gateway" in found.remedy


# -- listener-not-programmed -------------------------------------------------------------------


def test_the_certificate_deadlock_is_named_with_the_listener_to_drop() -> None:
    found = finding(objects("nginx-gateway-fabric"), Code.LISTENER_NOT_PROGRAMMED)
    assert "Gateway store/gateway is not programmed (Invalid)" in found.title
    assert "deadlock" in found.explanation
    assert "store/store-example-com-tls" in found.explanation
    assert '[{"op":"remove","path":"/spec/listeners/1"}]' in found.remedy


def test_an_http_listener_not_programmed_without_deadlock() -> None:
    data = objects("istio")
    gateway = item(data, "Gateway")
    gateway["status"]["listeners"][0]["conditions"][1].update(
        status="False", reason="Invalid", message="Bad TLS configuration"
    )
    codes = static_codes(data)
    assert Code.LISTENER_NOT_PROGRAMMED not in codes  # the solver is on https, not http
    for ref in _parent_refs(solver_route(data)):
        ref["sectionName"] = "http"
    found = finding(data, Code.LISTENER_NOT_PROGRAMMED)
    assert "listener 'http' of Gateway istio-ingress/public" in found.title
    assert "deadlock" not in found.explanation
    assert "kubectl describe gateway -n istio-ingress public" in found.remedy


# -- gateway-redirects-solver ------------------------------------------------------------------


def test_the_redirect_route_is_named_and_is_a_consequence_of_the_unattached_route() -> None:
    report = report_of(objects("envoy-gateway"))
    redirect = next(f for f in report.findings if f.code is Code.GATEWAY_REDIRECTS_SOLVER)
    assert redirect.evidence == [
        "HTTPRoute infra/https-redirect on Gateway infra/eg section http: RequestRedirect "
        "scheme: https, statusCode: 301"
    ]
    assert report.root_cause is not None
    assert Code.GATEWAY_REDIRECTS_SOLVER in report.root_cause.consequences


def test_no_redirect_finding_once_the_solver_route_is_attached_to_that_listener() -> None:
    data = objects("envoy-gateway")
    item(data, "Gateway")["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    solver_route(data)["status"]["parents"][0]["conditions"][0].update(
        status="True", reason="Accepted", message="Route is accepted"
    )
    assert static_codes(data) == []  # the solver's Exact match wins over the redirect


def test_a_redirect_for_another_host_or_path_is_not_flagged() -> None:
    data = objects("envoy-gateway")
    item(data, "HTTPRoute", "https-redirect")["spec"]["hostnames"] = ["other.example.com"]
    assert static_codes(data) == [Code.SOLVER_ROUTE_NOT_ACCEPTED]
    data = objects("envoy-gateway")
    item(data, "HTTPRoute", "https-redirect")["spec"]["rules"][0]["matches"] = [
        {"path": {"type": "PathPrefix", "value": "/shop"}}
    ]
    assert static_codes(data) == [Code.SOLVER_ROUTE_NOT_ACCEPTED]


def test_traefik_as_the_gateway_takes_the_challenge_with_its_own_acme() -> None:
    data = objects("cilium")
    for service in items(data, "Service"):
        service["metadata"]["annotations"] = {}
    item(data, "GatewayClass")["spec"]["controllerName"] = "traefik.io/gateway-controller"
    data["items"].append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "traefik-5d8c7b9f4-abcde",
                "namespace": "traefik",
                "labels": {"app.kubernetes.io/name": "traefik"},
            },
            "spec": {
                "nodeName": "worker-2",
                "containers": [
                    {
                        "name": "traefik",
                        "args": [
                            "--entryPoints.web.address=:8000/tcp",
                            "--providers.kubernetesgateway",
                            "--certificatesresolvers.le.acme.httpchallenge.entrypoint=web",
                        ],
                    }
                ],
            },
            "status": {"phase": "Running"},
        }
    )
    found = finding(data, Code.GATEWAY_REDIRECTS_SOLVER)
    assert "acme-http@internal, no allowACMEByPass" in found.evidence[0]
    assert "--entryPoints.web.allowACMEByPass=true" in found.remedy


# -- gateway-api-disabled ----------------------------------------------------------------------


def test_gateway_support_off_is_the_root_of_a_solver_never_presented() -> None:
    data = objects("envoy-gateway")
    data["items"] = [i for i in data["items"] if i["kind"] not in ("HTTPRoute", "Pod", "Service")]
    status = item(data, "Challenge")["status"]
    status.update(
        presented=False,
        reason="couldn't Present challenge: gateway api is not enabled",
    )
    report = report_of(data)
    assert report.root_cause is not None
    assert report.root_cause.code is Code.GATEWAY_API_DISABLED
    assert Code.SOLVER_NOT_PRESENTED in report.root_cause.consequences
    found = next(f for f in report.findings if f.code is Code.GATEWAY_API_DISABLED)
    assert "config.enableGatewayAPI=true" in found.remedy


def test_missing_crds_when_the_file_has_no_gateway_api_object() -> None:
    data = objects("envoy-gateway")
    gateway_kinds = ("HTTPRoute", "Gateway", "GatewayClass")
    data["items"] = [i for i in data["items"] if i["kind"] not in gateway_kinds]
    found = finding(data, Code.GATEWAY_API_DISABLED)
    assert "the CRDs are missing" in found.evidence[0]


def test_an_ingress_solver_left_after_the_migration_moves_to_the_gateway() -> None:
    found = finding(objects("mixed"), Code.GATEWAY_API_DISABLED)
    assert "solver http01.ingress" in found.evidence[0]
    assert "gatewayHTTPRoute" in found.remedy and "name: eg" in found.remedy


def test_an_ingress_solver_with_a_controller_left_is_not_flagged() -> None:
    data = objects("mixed")
    data["items"].append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "ingress-nginx-controller-1",
                "namespace": "ingress-nginx",
                "labels": {"app.kubernetes.io/name": "ingress-nginx"},
            },
            "spec": {"containers": [{"args": ["/nginx-ingress-controller"]}]},
            "status": {"phase": "Running"},
        }
    )
    assert static_codes(data) == []


# -- solver-not-presented, lb-proxy-protocol-shortcut, traffic-policy-local, self-check ---------


def test_a_route_refused_by_the_api_server_gets_section_names() -> None:
    data = objects("envoy-gateway")
    data["items"] = [i for i in data["items"] if i["kind"] != "HTTPRoute"]
    challenge = item(data, "Challenge")
    ref = challenge["spec"]["solver"]["http01"]["gatewayHTTPRoute"]["parentRefs"][0]
    challenge["spec"]["solver"]["http01"]["gatewayHTTPRoute"]["parentRefs"] = [ref, dict(ref)]
    challenge["status"].update(
        presented=False,
        reason=(
            'HTTPRoute.gateway.networking.k8s.io "cm-acme-http-solver-x7k2p" is invalid: '
            'spec.parentRefs: Invalid value: "array": sectionName or port must be specified '
            "when parentRefs includes 2 or more references to the same parent"
        ),
    )
    found = finding(data, Code.SOLVER_NOT_PRESENTED)
    assert "sectionName: http" in found.remedy
    assert found.remedy.count("sectionName") >= 1


def test_proxy_shortcut_on_a_gateway_service_patches_the_gateway_infrastructure() -> None:
    found = finding(objects("cilium"), Code.LB_PROXY_SHORTCUT)
    assert "web/cilium-gateway-web" in found.explanation
    assert '"path":"/spec/infrastructure"' in found.remedy
    assert "load-balancer.hetzner.cloud/hostname" in found.remedy


def test_traffic_policy_local_with_the_gateway_pods_elsewhere() -> None:
    data = objects("nginx-gateway-fabric")
    item(data, "Pod", "cm-acme-http-solver-l1k2j")["spec"]["nodeName"] = "node-b"
    found = finding(data, Code.TRAFFIC_POLICY_LOCAL)
    assert "gateway-nginx-7c9d8b6f5-t4r5e on node-a" in " ".join(found.evidence)


def outside_failing() -> VantageRun:
    final = {"outcome": "connect-timeout", "error": "timed out"}
    attempt = {"address": "198.51.100.20", "attempt": 1, "target": "public", "final": final}
    return VantageRun("outside:local", "outside", False, {"attempts": [attempt]})


def test_self_check_skipped_on_a_gateway_solver() -> None:
    data = objects("cilium")
    item(data, "Challenge")["spec"]["solver"]["waitInsteadOfSelfCheck"] = "45s"
    target: Target = plan([], cluster=cluster_of(data)).targets[0]
    report = analyse(target, [outside_failing()], cluster=True)
    codes = [f.code for f in report.findings]
    assert Code.SELF_CHECK_SKIPPED in codes and Code.LB_PROXY_SHORTCUT in codes


# -- vantages ---------------------------------------------------------------------------------


def test_the_gateway_pod_is_the_inside_vantage_and_its_address_is_probed() -> None:
    cluster = cluster_of(objects("envoy-gateway"))
    found = probe_plan([cluster.solver_for(c) for c in cluster.challenges], False, False)
    assert found.inside == [
        "kubectl exec -n envoy-gateway-system envoy-infra-eg-5a1b2c3d-7f9c8b6d4-xk2lp --"
    ]
    assert found.resolve == [("shop.example.com", "203.0.113.30")]
    assert "--resolve shop.example.com:203.0.113.30" in found.command("-")


def test_a_gateway_without_service_is_probed_at_its_status_address() -> None:
    cluster = cluster_of(objects("gke"))
    found = probe_plan([cluster.solver_for(c) for c in cluster.challenges], False, False)
    assert found.inside == [] and found.resolve == [("blog.example.com", "203.0.113.60")]
    assert "no Gateway pod" in found.infos[0]


# -- fix k8s: the patches, validated against the Gateway API CRDs -------------------------------

needs_crds = pytest.mark.skipif(not gateway_schema.available(), reason=gateway_schema.MISSING)


@needs_crds
@pytest.mark.parametrize("name", sorted(CAUSES))
def test_the_fixtures_gateway_objects_are_valid(name: str) -> None:
    for obj in objects(name)["items"]:
        if obj["apiVersion"].startswith("gateway.networking.k8s.io/"):
            gateway_schema.validate(obj)


def printed(data: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(data))
    assert main(["fix", "k8s", "--kube", str(path)]) == 0
    out: str = capsys.readouterr().out
    return out


VARIANTS = {
    **{name: lambda name=name: objects(name) for name in sorted(CAUSES)},
    "listener-set": listener_set_cluster,
}


@needs_crds
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fix_k8s_patches_parse_and_validate_against_the_crds(
    variant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = printed(VARIANTS[variant](), tmp_path, capsys)
    docs = [d for d in yaml.safe_load_all(out) if d is not None]
    assert docs and out.startswith("# ")
    unchecked: list[str] = []
    for doc in docs:
        if "kind" not in doc:  # the issuer's solver: its parentRefs are ParentReferences
            for solver in doc["spec"]["acme"]["solvers"]:
                route = solver["http01"].get("gatewayHTTPRoute") or {}
                for ref in route.get("parentRefs") or []:
                    jsonschema.Draft7Validator(gateway_schema.parent_ref_schema()).validate(ref)
        elif doc["apiVersion"].startswith("gateway.networking.k8s.io/"):
            unchecked += gateway_schema.validate(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # the CEL rules met that are not evaluated offline are listed, never silently passed
    for line in sorted(set(unchecked)):
        print(f"not checked (CEL): {line}")


@needs_crds
def test_the_cel_rules_not_evaluated_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (patch,) = [p for p in cluster_patches(cluster_of(objects("gke"))) if p.manifest]
    assert patch.manifest is not None
    unchecked = gateway_schema.validate(patch.manifest)
    assert unchecked, "the Gateway schema has CEL rules this test does not evaluate"
    assert all(": " in line for line in unchecked)


@needs_crds
def test_an_evaluated_cel_rule_catches_a_duplicate_listener() -> None:
    (patch,) = [p for p in cluster_patches(cluster_of(objects("gke"))) if p.manifest]
    assert patch.manifest is not None
    bad = copy.deepcopy(patch.manifest)
    bad["spec"]["listeners"].append(copy.deepcopy(bad["spec"]["listeners"][0]))
    with pytest.raises(AssertionError, match="Listener name must be unique"):
        gateway_schema.validate(bad)


def test_fix_k8s_gateway_is_the_one_read_with_only_the_listener_changed() -> None:
    data = objects("envoy-gateway")
    patch = next(p for p in cluster_patches(cluster_of(data)) if p.manifest)
    assert patch.manifest is not None
    original = item(data, "Gateway")
    assert "status" not in patch.manifest and "uid" not in patch.manifest["metadata"]
    assert patch.manifest["spec"]["listeners"][1] == original["spec"]["listeners"][1]
    changed = patch.manifest["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]
    assert changed["from"] == "Selector"


def test_diagnose_stdin_names_the_cause_with_the_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gke.json"
    path.write_text(json.dumps(objects("gke")))
    code = main(["diagnose", "--kube", str(path), "--no-probe"])
    out = capsys.readouterr().out
    assert code == 1
    assert "root cause: solver-route-not-accepted" in out
    assert "kubectl patch gateway -n infra external --type=json" in out


# -- every failure mode on every Gateway fixture --------------------------------------------


def _gateway(data: dict[str, Any]) -> dict[str, Any]:
    return items(data, "Gateway")[0]


def _http_listener(data: dict[str, Any]) -> dict[str, Any]:
    return next(lst for lst in _gateway(data)["spec"]["listeners"] if lst["protocol"] == "HTTP")


def _refuse(data: dict[str, Any], reason: str, message: str) -> None:
    for parent in solver_route(data)["status"]["parents"]:
        parent["conditions"][0].update(status="False", reason=reason, message=message)


def _not_allowed(data: dict[str, Any]) -> None:
    namespace = item(data, "Challenge")["metadata"]["namespace"]
    if _gateway(data)["metadata"]["namespace"] == namespace:  # Same would admit it
        selector = {"matchLabels": {"shared-gateway-access": "true"}}
        _http_listener(data)["allowedRoutes"] = {
            "namespaces": {"from": "Selector", "selector": selector}
        }
    else:
        _http_listener(data)["allowedRoutes"] = {"namespaces": {"from": "Same"}}
    _refuse(data, "NotAllowedByListeners", "No listeners included by this parent ref allowed it")


def _other_hostname(data: dict[str, Any]) -> None:
    _http_listener(data)["hostname"] = "other.example.org"
    _refuse(data, "NoMatchingListenerHostname", "No matching listener hostname")


def _https_section(data: dict[str, Any]) -> None:
    for obj in data["items"]:
        for ref in _parent_refs(obj):
            ref["sectionName"] = "https"


def _waiting_for_secret(data: dict[str, Any]) -> None:
    status = _gateway(data)["status"]
    status["conditions"][-1].update(status="False", reason="Invalid", message="not programmed")
    for lst in status.get("listeners") or []:
        if lst["name"] == "https":
            lst["conditions"] = [
                {
                    "type": "ResolvedRefs",
                    "status": "False",
                    "lastTransitionTime": "2026-06-01T10:00:00Z",
                    "reason": "InvalidCertificateRef",
                    "message": "Secret does not exist",
                }
            ]


def _redirect(data: dict[str, Any]) -> None:
    _not_allowed(data)
    gateway = _gateway(data)
    ref = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": gateway["metadata"]["name"],
        "namespace": gateway["metadata"]["namespace"],
        "sectionName": _http_listener(data)["name"],
    }
    data["items"].append(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "to-https", "namespace": gateway["metadata"]["namespace"]},
            "spec": {
                "parentRefs": [ref],
                "rules": [
                    {
                        "filters": [
                            {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}}
                        ]
                    }
                ],
            },
        }
    )


def _support_off(data: dict[str, Any]) -> None:
    data["items"] = [i for i in data["items"] if i["kind"] != "HTTPRoute"]
    item(data, "Challenge")["status"].update(
        presented=False, reason="couldn't Present challenge: gateway api is not enabled"
    )


def _proxy_at_the_lb(data: dict[str, Any]) -> None:
    cluster = cluster_of(data)
    (service,) = cluster.solver_for(cluster.challenges[0]).gateway.services
    raw = item(data, "Service", service.meta.name)
    raw["metadata"].setdefault("annotations", {})[
        "service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol"
    ] = "true"


# mode -> (the fault, the root cause, a text its fix must hold)
MODES = {
    "not-allowed": (_not_allowed, Code.SOLVER_ROUTE_NOT_ACCEPTED, "kubectl "),
    "other-hostname": (_other_hostname, Code.SOLVER_ROUTE_NOT_ACCEPTED, '"hostname":'),
    "https-section": (_https_section, Code.SOLVER_ROUTE_NOT_ACCEPTED, "sectionName: http"),
    "waiting-for-secret": (
        _waiting_for_secret,
        Code.LISTENER_NOT_PROGRAMMED,
        '"op":"remove","path":"/spec/listeners/1"',
    ),
    "redirect": (_redirect, Code.SOLVER_ROUTE_NOT_ACCEPTED, "kubectl "),
    "support-off": (_support_off, Code.GATEWAY_API_DISABLED, "config.enableGatewayAPI=true"),
    "proxy-at-the-lb": (
        _proxy_at_the_lb,
        Code.LB_PROXY_SHORTCUT,
        "service.beta.kubernetes.io/do-loadbalancer-hostname",
    ),
}
MATRIX = [
    (name, mode)
    for name in GATEWAY_FIXTURES
    for mode in sorted(MODES)
    if not (name == "gke" and mode == "proxy-at-the-lb")  # GKE: a Google LB, no Service
]


def faulty(name: str, mode: str) -> dict[str, Any]:
    data = healthy(objects(name))
    MODES[mode][0](data)
    return data


@pytest.mark.parametrize(("name", "mode"), MATRIX)
def test_every_failure_mode_on_every_gateway_names_its_root_and_fix(name: str, mode: str) -> None:
    _fault, root, fix = MODES[mode]
    report = report_of(faulty(name, mode))
    assert report.root_cause is not None and report.root_cause.code is root, [
        f.code.value for f in report.findings
    ]
    lead = next(f for f in report.findings if f.code is root)
    assert fix in lead.remedy
    if mode == "redirect":
        assert Code.GATEWAY_REDIRECTS_SOLVER in report.root_cause.consequences
    if mode == "support-off":
        assert Code.SOLVER_NOT_PRESENTED in report.root_cause.consequences


@needs_crds
@pytest.mark.parametrize(("name", "mode"), MATRIX)
def test_every_failure_modes_patches_validate(
    name: str, mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = printed(faulty(name, mode), tmp_path, capsys)
    # a change that is a command only (kubectl label, helm) is a comment, no document
    assert out.startswith("# ") and "no change to suggest" not in out
    docs = [d for d in yaml.safe_load_all(out) if d is not None]
    for doc in docs:
        if doc.get("apiVersion", "").startswith("gateway.networking.k8s.io/"):
            gateway_schema.validate(doc)
        elif "kind" not in doc:
            for solver in doc["spec"]["acme"]["solvers"]:
                for ref in (solver["http01"].get("gatewayHTTPRoute") or {}).get("parentRefs", []):
                    jsonschema.Draft7Validator(gateway_schema.parent_ref_schema()).validate(ref)


# -- a wildcard listener hostname: the gateway-shim's Certificate HTTP-01 cannot issue ----------

# As posted in cert-manager/cert-manager#6524: listeners with hostname "*.dev.domain.com"
# under cert-manager.io/issuer; the gateway-shim's Certificate asks for the wildcard.
WILDCARD_CERTIFICATE = {
    "apiVersion": "cert-manager.io/v1",
    "kind": "Certificate",
    "metadata": {
        "name": "blog-example-com-tls",
        "namespace": "infra",
        "ownerReferences": [
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": "external",
                "uid": "0ab191f4-0005-45b6-a278-aacbcd19ad05",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    },
    "spec": {
        "dnsNames": ["*.example.com"],
        "issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt-staging"},
        "secretName": "blog-example-com-tls",
    },
}
WILDCARD_SAID = (
    "Certificate infra/blog-example-com-tls (made by the gateway-shim from Gateway "
    "infra/external) asks for *.example.com: HTTP-01 cannot validate a wildcard name"
)


def test_a_wildcard_certificate_without_challenge_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = objects("gke")
    data["items"] = [i for i in data["items"] if i["kind"] != "Challenge"]
    data["items"].append(WILDCARD_CERTIFICATE)
    path = tmp_path / "wild.json"
    path.write_text(json.dumps(data))
    assert main(["diagnose", "--kube", str(path), "--no-probe"]) == 2
    err = capsys.readouterr().err
    assert WILDCARD_SAID in err and len(err.strip().splitlines()) == 1


def test_a_wildcard_certificate_beside_a_challenge_is_a_note() -> None:
    data = objects("gke")
    data["items"].append(WILDCARD_CERTIFICATE)
    todo = plan([], cluster=cluster_of(data))
    assert any(WILDCARD_SAID in line for line in todo.infos)


def test_a_gateway_challenge_read_alone_is_not_taken_for_missing_crds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --challenges: the Challenge without its cluster says nothing about the CRDs
    data = objects("envoy-gateway")
    data["items"] = items(data, "Challenge")
    path = tmp_path / "challenges.json"
    path.write_text(json.dumps(data))
    assert main(["diagnose", "--challenges", str(path), "--no-probe"]) == 0
    assert "gateway-api-disabled" not in capsys.readouterr().out


def test_the_readmes_gateway_report_is_what_acmelb_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "envoy-gateway.json"
    path.write_text(json.dumps(objects("envoy-gateway")))
    assert main(["diagnose", "--kube", str(path), "--no-probe"]) == 1
    report = capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "root cause: solver-route-not-accepted" in report
    assert report in readme, "README's Gateway API report is stale: paste the new one"


def test_explain_names_gateway_support_off() -> None:
    from acmelb.doctor.explain import explain

    said = explain(
        "couldn't Present challenge ...: gateway api is not enabled"  # as users quote it
    )
    assert said.candidates[:2] == ["gateway-api-disabled", "solver-not-presented"]
    assert "config.enableGatewayAPI=true" in said.reasoning


# -- odd input: never a traceback -------------------------------------------------------------

ODD_VALUES = (None, 7, "x", [], {}, [None], [7], {"x": None})


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside the object (dict keys and list indexes)."""
    found: list[tuple[Any, ...]] = []
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in children:
        found.append((*prefix, key))
        if isinstance(child, dict | list):
            found += _paths(child, (*prefix, key))
    return found


@pytest.mark.parametrize("kind", ["Gateway", "HTTPRoute", "GatewayClass"])
def test_odd_values_in_gateway_objects_never_raise(kind: str) -> None:
    base = objects("envoy-gateway")
    index = next(i for i, obj in enumerate(base["items"]) if obj["kind"] == kind)
    for path in _paths(base["items"][index]):
        for odd in ODD_VALUES:
            data = copy.deepcopy(base)
            target = data["items"][index]
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = odd
            cluster = cluster_of(data)
            for todo in plan([], cluster=cluster).targets:
                read_objects(todo)
            cluster_patches(cluster)


def test_a_refusal_with_no_listener_to_change_still_says_what_to_do() -> None:
    data = objects("envoy-gateway")
    for ref in _parent_refs(solver_route(data)):
        ref["sectionName"] = "web"  # a listener the Gateway does not have
    found = finding(data, Code.SOLVER_ROUTE_NOT_ACCEPTED)
    assert found.remedy.strip()
    assert "no listener the parentRef can use" in found.explanation
    assert "sectionName: http" in found.remedy and "admit routes from shop" in found.remedy


def test_the_readme_and_docs_give_the_same_kubectl_command() -> None:
    from acmelb.kube.challenges import KUBECTL_KINDS

    root = Path(__file__).resolve().parents[2]
    assert f"KINDS={KUBECTL_KINDS}\n" in (root / "README.md").read_text()
    assert KUBECTL_COMMAND in (root / "docs/diagnose.md").read_text()
