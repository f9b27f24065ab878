"""``acmelb diagnose --kube`` and ``acmelb fix k8s --kube`` on real-format cluster files.

The fixtures (``fixtures/*.yaml``, sources cited in each) are what
``kubectl get challenges,orders,certificates,ingresses,services,endpointslices,pods,events
-A -o json`` prints, written as YAML so that they can carry comments; the tests feed them to
acmelb as that JSON. No packet is sent here (``--no-probe``, or recorded probe results).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from acmelb.cli.main import main
from acmelb.doctor.checks.base import Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.findings import Code
from acmelb.fix.kube import cluster_patches
from acmelb.kube.objects import (
    KUBECTL_COMMAND,
    Cluster,
    label_hash,
    parse_cluster,
    probe_plan,
)
from acmelb.kube.plan import plan, read_objects

FIXTURES = Path(__file__).with_name("fixtures")
ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)
KUBERNETES_VERSION = "1.33"

# fixture -> the one cause it must name
CAUSES = {
    "digitalocean": Code.LB_PROXY_SHORTCUT,
    "hetzner": Code.LB_PROXY_SHORTCUT,
    "scaleway": Code.INGRESS_REDIRECTS_SOLVER,
    "aws-nlb": Code.INGRESS_REDIRECTS_SOLVER,
    "metallb": Code.TRAFFIC_POLICY_LOCAL,
    "nodeport": Code.SOLVER_NOT_PRESENTED,
    "traefik-class": Code.INGRESS_CLASS_UNSERVED,
}


def objects(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return data


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data)


def cluster_of(data: dict[str, Any]) -> Cluster:
    return parse_cluster(as_json(data), "test")


def item(data: dict[str, Any], kind: str, name: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = next(
        i
        for i in data["items"]
        if i["kind"] == kind and (name is None or i["metadata"]["name"] == name)
    )
    return found


def static_codes(data: dict[str, Any]) -> list[Code]:
    """The codes the KUBE stage finds for the file's one pending Challenge."""
    cluster = cluster_of(data)
    todo = plan([], cluster=cluster)
    assert len(todo.targets) == 1
    return [f.code for f in read_objects(todo.targets[0]).findings]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- reading and connecting --------------------------------------------------------------------


def test_label_hash_is_cert_managers_adler32() -> None:
    # the solver pod labels of the DigitalOcean fixture carry these values
    pod = item(objects("digitalocean"), "Pod", "cm-acme-http-solver-7m2xq")
    assert (
        label_hash("shop.example.com")
        == pod["metadata"]["labels"]["acme.cert-manager.io/http-domain"]
    )


def test_a_challenge_is_connected_to_its_solver_controller_service_and_events() -> None:
    cluster = cluster_of(objects("digitalocean"))
    solver = cluster.solver_for(cluster.challenges[0])
    assert [p.meta.name for p in solver.pods] == ["cm-acme-http-solver-7m2xq"]
    assert [s.meta.name for s in solver.services] == ["cm-acme-http-solver-9zt4w"]
    assert [i.meta.name for i in solver.ingresses] == ["cm-acme-http-solver-5b8ls"]
    assert [(c.product, c.pod.meta.name) for c in solver.controllers] == [
        ("ingress-nginx", "ingress-nginx-controller-6d9f7c8b5-2wqzl")
    ]
    assert [s.meta.ref for s in solver.front_services] == ["ingress-nginx/ingress-nginx-controller"]
    assert [e.reason for e in solver.events] == ["Presented"]


def test_an_edit_in_place_ingress_is_found_by_the_token_path() -> None:
    data = objects("aws-nlb")
    ing = item(data, "Ingress")
    ing["metadata"]["labels"] = {}  # the user's own Ingress, edited in place
    cluster = cluster_of(data)
    solver = cluster.solver_for(cluster.challenges[0])
    assert [i.meta.name for i in solver.ingresses] == ["cm-acme-http-solver-d9e0f"]


# -- every fixture names its cause -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_each_provider_fixture_names_the_right_cause(name: str) -> None:
    assert static_codes(objects(name)) == [CAUSES[name]]


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_the_json_reports_validate_against_the_schema(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(as_json(objects(name)))
    code, out, _err = run_main(["diagnose", "--kube", str(path), "--no-probe", "--json"], capsys)
    docs = json.loads(out)
    for doc in docs:
        jsonschema.validate(doc, SCHEMA)
    assert [f["code"] for f in docs[0]["findings"]] == [CAUSES[name].value]
    assert code == (1 if CAUSES[name].default_severity.failing else 0)  # a warning passes


# -- lb-proxy-protocol-shortcut ----------------------------------------------------------------


def test_proxy_shortcut_names_the_providers_hostname_annotation() -> None:
    cluster = cluster_of(objects("hetzner"))
    todo = plan([], cluster=cluster)
    (finding,) = read_objects(todo.targets[0]).findings
    assert "load-balancer.hetzner.cloud/uses-proxyprotocol: true" in finding.explanation
    assert (
        "kubectl annotate service -n ingress-nginx ingress-nginx-controller "
        "load-balancer.hetzner.cloud/hostname=app.example.com" in finding.remedy
    )


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"service.beta.kubernetes.io/do-loadbalancer-hostname": "shop.example.com"}, "hostname"),
        ({"service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol": "false"}, "off"),
    ],
)
def test_no_proxy_shortcut_with_the_hostname_annotation_or_proxy_off(
    change: dict[str, str], why: str
) -> None:
    data = objects("digitalocean")
    item(data, "Service", "ingress-nginx-controller")["metadata"]["annotations"].update(change)
    assert static_codes(data) == [], why


@pytest.mark.parametrize(
    "entry", [{"ip": "203.0.113.10", "ipMode": "Proxy"}, {"hostname": "lb.example.com"}]
)
def test_no_proxy_shortcut_when_the_status_does_not_publish_a_bare_ip(
    entry: dict[str, str],
) -> None:
    data = objects("digitalocean")
    item(data, "Service", "ingress-nginx-controller")["status"]["loadBalancer"]["ingress"] = [entry]
    assert static_codes(data) == []


def test_aws_nlb_with_proxy_protocol_publishes_a_hostname_so_no_shortcut() -> None:
    data = objects("aws-nlb")
    for key in list(item(data, "Ingress")["metadata"]["annotations"]):
        if key.endswith("permanent-redirect"):
            del item(data, "Ingress")["metadata"]["annotations"][key]
    assert static_codes(data) == []


# -- traffic-policy-local ----------------------------------------------------------------------


def test_traffic_policy_local_names_the_nodes_and_the_patch() -> None:
    cluster = cluster_of(objects("metallb"))
    todo = plan([], cluster=cluster)
    (finding,) = read_objects(todo.targets[0]).findings
    assert "node-2" in finding.explanation
    assert "ingress-nginx-controller-68f9d7c5b-m4n5p on node-1" in " ".join(finding.evidence)
    assert (
        "kubectl patch service -n ingress-nginx ingress-nginx-controller -p "
        '\'{"spec":{"externalTrafficPolicy":"Cluster"}}\'' in finding.remedy
    )


def test_no_traffic_policy_finding_when_a_controller_runs_on_the_solvers_node() -> None:
    data = objects("metallb")
    item(data, "Pod", "cm-acme-http-solver-s8t9u")["spec"]["nodeName"] = "node-1"
    assert static_codes(data) == []


# -- ingress-redirects-solver ------------------------------------------------------------------


def test_redirect_on_the_solver_ingress_gives_the_annotation_to_remove() -> None:
    cluster = cluster_of(objects("aws-nlb"))
    todo = plan([], cluster=cluster)
    (finding,) = read_objects(todo.targets[0]).findings
    assert (
        "kubectl annotate ingress -n site cm-acme-http-solver-d9e0f "
        "nginx.ingress.kubernetes.io/permanent-redirect-" in finding.remedy
    )
    assert "kubectl edit clusterissuer letsencrypt-prod" in finding.remedy


def test_traefik_entrypoint_redirect_is_seen_in_the_controllers_args() -> None:
    cluster = cluster_of(objects("scaleway"))
    todo = plan([], cluster=cluster)
    (finding,) = read_objects(todo.targets[0]).findings
    assert any(
        "--entryPoints.web.http.redirections.entryPoint.to=:443" in e for e in finding.evidence
    )
    assert "helm upgrade traefik traefik/traefik -n traefik --reuse-values" in finding.remedy


def test_traefik_redirect_middleware_on_the_solver_ingress() -> None:
    data = objects("traefik-class")
    ing = item(data, "Ingress")
    ing["spec"]["ingressClassName"] = "traefik"
    ing["metadata"]["annotations"] = {
        "traefik.ingress.kubernetes.io/router.middlewares": "default-redirect-https@kubernetescrd"
    }
    assert static_codes(data) == [Code.INGRESS_REDIRECTS_SOLVER]


def test_ssl_redirect_annotations_are_not_flagged() -> None:
    # ingress-nginx exempts /.well-known/acme-challenge from them (no-tls-redirect-locations)
    data = objects("aws-nlb")
    item(data, "Ingress")["metadata"]["annotations"] = {
        "nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
    }
    assert static_codes(data) == []


# -- ingress-class-unserved --------------------------------------------------------------------


def test_unserved_class_names_the_served_one_for_the_issuer() -> None:
    cluster = cluster_of(objects("traefik-class"))
    todo = plan([], cluster=cluster)
    (finding,) = read_objects(todo.targets[0]).findings
    assert "'nginx'" in finding.title
    assert "ingressClassName: traefik" in finding.remedy


def test_unserved_class_from_the_solver_config_when_no_ingress_exists() -> None:
    data = objects("traefik-class")
    data["items"] = [i for i in data["items"] if i["kind"] != "Ingress"]
    assert static_codes(data) == [Code.INGRESS_CLASS_UNSERVED]


def test_no_class_finding_without_any_known_controller_in_the_file() -> None:
    data = objects("traefik-class")
    data["items"] = [i for i in data["items"] if i["kind"] != "Pod"]
    assert static_codes(data) == []


# -- solver-not-presented ----------------------------------------------------------------------


def test_not_presented_from_the_present_error_event_gives_the_feature_gate() -> None:
    cluster = cluster_of(objects("nodeport"))
    todo = plan([], cluster=cluster)
    report = read_objects(todo.targets[0])
    (finding,) = report.findings
    assert any(e.startswith("Warning PresentError on Challenge") for e in finding.evidence)
    assert "featureGates=ACMEHTTP01IngressPathTypeExact=false" in finding.remedy
    assert report.verdicts["acme-ca"] == "fail"


def test_not_presented_from_the_challenge_status_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --challenges: only the Challenge is known, its status says it was never presented
    data = objects("nodeport")
    data["items"] = [item(data, "Challenge")]
    path = tmp_path / "challenges.json"
    path.write_text(as_json(data))
    code, out, _err = run_main(["diagnose", "--challenges", str(path), "--no-probe"], capsys)
    assert code == 1
    assert "solver-not-presented" in out


def test_a_presented_challenge_with_a_self_check_reason_is_not_flagged() -> None:
    data = objects("digitalocean")
    data["items"] = [item(data, "Challenge")]
    assert static_codes(data) == []


# -- self-check-skipped (COMPARE: with recorded probes) ----------------------------------------


def outside_run(outcome: str) -> VantageRun:
    final = (
        {"outcome": "response", "status": 200, "body": KEY, "body_length": len(KEY)}
        if outcome == "response"
        else {"outcome": outcome, "error": "timed out"}
    )
    attempt = {"address": "198.51.100.20", "attempt": 1, "target": "public", "final": final}
    return VantageRun("outside:local", "outside", False, {"attempts": [attempt]})


KEY = "Tt1Yy3Uu5Ii7Oo9Aa2Ss4Dd6Ff8Gg0Hh1Jj3Kk5Ll7Zz9.Zp4sLx8cJ0aTq2WmHf6vRb9EkYnUo3iDr7KvQw6yNq0"


def metallb_target() -> Target:
    data = objects("metallb")
    item(data, "Pod", "cm-acme-http-solver-s8t9u")["spec"]["nodeName"] = "node-1"
    todo = plan([], cluster=cluster_of(data))
    target: Target = todo.targets[0]
    return target


def test_self_check_skipped_while_the_ca_would_fail() -> None:
    report = analyse(metallb_target(), [outside_run("connect-timeout")], cluster=True)
    codes = [f.code for f in report.findings]
    assert Code.SELF_CHECK_SKIPPED in codes and Code.PORT_80_TIMEOUT in codes
    skipped = next(f for f in report.findings if f.code is Code.SELF_CHECK_SKIPPED)
    assert "waitInsteadOfSelfCheck: 30s" in skipped.explanation
    assert "kubectl edit issuer -n blog letsencrypt" in skipped.remedy


def test_self_check_skipped_is_quiet_when_the_ca_would_pass() -> None:
    report = analyse(metallb_target(), [outside_run("response")], cluster=True)
    assert report.findings == []


# -- vantages and addresses from the objects ---------------------------------------------------


def test_probe_plan_uses_the_controller_pod_and_the_lb_address() -> None:
    cluster = cluster_of(objects("digitalocean"))
    solvers = [cluster.solver_for(c) for c in cluster.challenges]
    found = probe_plan(solvers, user_inside=False, user_resolve=False)
    assert found.inside == [
        "kubectl exec -n ingress-nginx ingress-nginx-controller-6d9f7c8b5-2wqzl --"
    ]
    assert found.resolve == [("shop.example.com", "203.0.113.10")]
    assert found.command("-") == (
        "acmelb diagnose --kube - --inside "
        "'kubectl exec -n ingress-nginx ingress-nginx-controller-6d9f7c8b5-2wqzl --' "
        "--resolve shop.example.com:203.0.113.10"
    )


def test_probe_plan_keeps_the_users_vantage_and_skips_lb_hostnames() -> None:
    cluster = cluster_of(objects("aws-nlb"))
    solvers = [cluster.solver_for(c) for c in cluster.challenges]
    found = probe_plan(solvers, user_inside=True, user_resolve=False)
    assert found.inside == []
    assert found.resolve == []  # the NLB publishes a hostname: DNS finds it like the CA does


# -- fix k8s --kube ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CAUSES))
def test_fix_k8s_patches_parse_and_whole_objects_validate(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(as_json(objects(name)))
    code, out, _err = run_main(["fix", "k8s", "--kube", str(path)], capsys)
    assert code == 0
    docs = [d for d in yaml.safe_load_all(out) if d is not None]
    assert out.startswith("# ")  # every patch says why and gives its kubectl line
    for doc in docs:
        if "kind" in doc:  # a whole object: kubectl apply -f accepts it
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        else:  # the fragment of an issuer's solver
            assert doc["spec"]["acme"]["solvers"]


def test_fix_k8s_service_is_the_one_read_with_the_annotation_added() -> None:
    data = objects("digitalocean")
    (patch,) = cluster_patches(cluster_of(data))
    assert patch.manifest is not None
    original = copy.deepcopy(item(data, "Service", "ingress-nginx-controller"))
    assert "status" not in patch.manifest
    assert "uid" not in patch.manifest["metadata"]
    assert patch.manifest["spec"] == original["spec"]
    added = set(patch.manifest["metadata"]["annotations"]) - set(
        original["metadata"]["annotations"]
    )
    assert added == {"service.beta.kubernetes.io/do-loadbalancer-hostname"}


def test_fix_k8s_one_patch_for_two_challenges_behind_one_service() -> None:
    data = objects("digitalocean")
    second = copy.deepcopy(item(data, "Challenge"))
    second["metadata"]["name"] += "-2"
    data["items"].append(second)
    assert len(cluster_patches(cluster_of(data))) == 1


def test_fix_k8s_says_so_when_nothing_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = objects("digitalocean")
    data["items"] = [item(data, "Challenge")]
    path = tmp_path / "ok.json"
    path.write_text(as_json(data))
    code, out, _err = run_main(["fix", "k8s", "--kube", str(path)], capsys)
    assert (code, out) == (0, "# acmelb: no change to suggest from these objects\n")


# -- the command line: help, stdin, bad input --------------------------------------------------


def test_help_names_the_exact_kubectl_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", "--help"]) == 0
    out = "".join(capsys.readouterr().out.split())  # argparse wraps the text anywhere
    assert "".join(KUBECTL_COMMAND.split()) in out


BAD_INPUTS = [
    ("not json at all", "not JSON"),
    (json.dumps({"apiVersion": "v1", "kind": "List", "items": []}), "no cert-manager Challenge"),
    (json.dumps({"kind": "Secret"}), "not a Kubernetes List"),
    (
        # a kind nothing reads is skipped, not refused: here nothing else is left
        json.dumps({"kind": "List", "items": [{"kind": "Secret", "metadata": {"name": "x"}}]}),
        "no cert-manager Challenge",
    ),
    (json.dumps({"kind": "List", "items": [{"kind": "Challenge", "spec": {}}]}), "lacks spec"),
]


@pytest.mark.parametrize(("text", "said"), BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(
    text: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.json"
    path.write_text(text)
    for argv in (["diagnose", "--kube", str(path)], ["fix", "k8s", "--kube", str(path)]):
        code, out, err = run_main(argv, capsys)
        assert code == 2
        assert said in err and len(err.strip().splitlines()) == 1
        assert "Traceback" not in err and out == ""


def test_no_probe_needs_objects(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(["diagnose", "example.com", "--no-probe"], capsys)
    assert code == 2 and "--no-probe goes with --kube or --challenges" in err


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src")
    return env


def test_subprocess_stdin_names_the_cause_and_prints_the_patch() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "acmelb", "diagnose", "--kube", "-", "--no-probe"],
        input=as_json(objects("digitalocean")),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "lb-proxy-protocol-shortcut" in proc.stdout
    assert "service.beta.kubernetes.io/do-loadbalancer-hostname=shop.example.com" in proc.stdout


@pytest.mark.parametrize(("text", "said"), BAD_INPUTS[:3])
def test_subprocess_bad_input_is_one_line(text: str, said: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "acmelb", "diagnose", "--kube", "-"],
        input=text,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert proc.returncode == 2
    assert said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
