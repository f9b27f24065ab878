"""`acmelb diagnose` end to end on the load-balancer lab: each finding code on a real topology.

The command runs in the lab's public namespace (the internet: this process is
the outside vantage) and reaches behind the LB with ``--inside 'ip netns exec
<backend>'``, exactly as a user would with ``ssh node1``.  The lab's ground
truth (tests/lab/test_ground_truth.py) says what each mode does; these tests
check that the diagnosis names it.
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from typing import Any

import jsonschema
import pytest

from acmelb.lab import ADDRESSES, OTHER_THUMBPRINT, Lab

from .conftest import LabFactory

pytestmark = pytest.mark.lab

SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)


def diagnose(
    lab: Lab,
    *extra: str,
    inside: tuple[str, ...] = ("b1",),
    key: bool = True,
    repeat: int = 2,
    timeout: float = 1,
    dns: bool = False,
    assume_public: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Run `acmelb diagnose` in the public namespace; names from --resolve, or (``dns``)
    from the lab's DNS server."""
    sc = lab.scenario
    argv = [
        sys.executable,
        "-m",
        "acmelb",
        "diagnose",
        sc.name,
        "--json",
        "--timeout",
        str(timeout),
        "--repeat",
        str(repeat),
    ]
    if dns:
        assert lab.dns_server is not None
        argv += ["--dns-server", lab.dns_server]
    else:
        argv += ["--resolve", f"{sc.name}:{lab.vip}"]
    if assume_public:
        argv += ["--assume-public", "198.18.0.0/15", "--assume-public", "test"]
    if key:
        argv += [f"--token={sc.token}", f"--key={sc.key_authorization}"]
    for role in inside:
        argv += ["--inside", lab.vantage(role)]
    argv += list(extra)
    proc = subprocess.run(
        [*lab.exec_prefix("pub"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert proc.returncode == (0 if doc["ok"] else 1)
    return proc.returncode, doc


def codes(doc: dict[str, Any]) -> list[str]:
    return [f["code"] for f in doc["findings"]]


def root(doc: dict[str, Any]) -> str | None:
    """The report's one root cause (checked to lead: it is a finding, not folded, and every
    consequence it names is lowered to info)."""
    cause = doc["root_cause"]
    if cause is None:
        assert all(f["severity"] == "info" for f in doc["findings"]), doc["findings"]
        return None
    leading = [f for f in doc["findings"] if f["code"] == cause["code"]]
    assert len(leading) == 1 and leading[0]["severity"] == cause["severity"], leading
    for f in doc["findings"]:
        if f["code"] in cause["consequences"]:
            assert f["severity"] == "info", f
    return str(cause["code"])


def finding(doc: dict[str, Any], code: str) -> dict[str, Any]:
    found = [f for f in doc["findings"] if f["code"] == code]
    assert found, f"{code} not in {codes(doc)}"
    return found[0]


def test_dnat_without_hairpin_is_nat_loopback(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat")
    rc, doc = diagnose(lab)
    assert rc == 1 and codes(doc) == ["nat-loopback"] and root(doc) == "nat-loopback"
    f = finding(doc, "nat-loopback")
    assert f["vantages"] == [f"inside:{lab.vantage('b1')}"]
    assert f"-d {ADDRESSES.vip}" in f["remedy"]
    assert f"--backend {lab.backend_address('b1')}" in f["remedy"]
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}


def test_dnat_with_loopback_is_healthy(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("dnat-loopback"), inside=("b1", "b2"))
    assert rc == 0 and doc["findings"] == [] and root(doc) is None
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "pass"}


def test_proxy_protocol_backend_reached_through_a_shortcut(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", shortcut=("b1",))
    rc, doc = diagnose(lab)
    assert rc == 1 and "proxy-protocol-required" in codes(doc)
    assert root(doc) == "proxy-protocol-required"
    assert "nat-loopback" not in codes(doc)
    assert "ipMode: Proxy" in finding(doc, "proxy-protocol-required")["remedy"]
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}


def test_http_mode_lb_answering_itself(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-http-intercept"))
    assert rc == 1 and "lb-intercepts-challenge" in codes(doc)
    assert root(doc) == "lb-intercepts-challenge"
    assert "thumbprint-mismatch" not in codes(doc)
    f = finding(doc, "lb-intercepts-challenge")
    assert OTHER_THUMBPRINT in f["explanation"] and "mode tcp" in f["remedy"]
    assert doc["verdicts"]["acme-ca"] == "fail"


def test_http_mode_lb_answers_any_token(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-http-intercept"), key=False, inside=())
    assert rc == 1 and codes(doc) == ["lb-intercepts-challenge"]
    assert root(doc) == "lb-intercepts-challenge"
    assert doc["random_token"] is True


def test_backend_with_another_accounts_thumbprint(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-tcp", backends=("wrong-thumbprint", "responder")))
    assert rc == 1 and "thumbprint-mismatch" in codes(doc)
    assert root(doc) == "thumbprint-mismatch"
    assert "lb-intercepts-challenge" not in codes(doc)


def test_round_robin_with_one_backend_lacking_the_token(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(
        lab_scenario("round-robin", backends=("responder", "not-found")), inside=(), repeat=4
    )
    assert rc == 1 and "inconsistent-backends" in codes(doc)
    assert "challenge-not-found" in codes(doc)
    assert root(doc) == "inconsistent-backends"
    assert finding(doc, "challenge-not-found")["severity"] == "info"


def test_firewall_drops_port_80(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("firewall"), inside=(), repeat=1)
    assert rc == 1 and codes(doc) == ["port-80-timeout"] and root(doc) == "port-80-timeout"
    assert "timed out" in finding(doc, "port-80-timeout")["evidence"][0]


def test_nothing_listening_behind_dnat_is_refused(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("dnat", backends=("none",)), inside=(), repeat=1)
    assert rc == 1 and codes(doc) == ["port-80-refused"] and root(doc) == "port-80-refused"


def test_tcp_lb_with_dead_backend_closes_without_reply(lab_scenario: LabFactory) -> None:
    # HAProxy retries the refused backend before it gives up and closes the client side
    rc, doc = diagnose(
        lab_scenario("haproxy-tcp", backends=("none",)), inside=(), repeat=1, timeout=4
    )
    assert rc == 1 and "empty-reply" in codes(doc) and root(doc) == "empty-reply"
    # With less patience than HAProxy's ~1 s retry turn-around: no answer in time. (At 1 s
    # the two raced, and the test flaked.)
    rc, doc = diagnose(
        lab_scenario("haproxy-tcp", backends=("none",)), inside=(), repeat=1, timeout=0.3
    )
    assert rc == 1 and "read-timeout" in codes(doc) and root(doc) == "read-timeout"


def test_no_backend_503_with_haproxy_fingerprint(lab_scenario: LabFactory) -> None:
    # HAProxy waits `timeout connect 2s` for the dead pool before its 503
    rc, doc = diagnose(lab_scenario("no-backend"), inside=(), repeat=1, timeout=4)
    assert rc == 1 and "http-error-status" in codes(doc) and root(doc) == "http-error-status"
    assert "HAProxy" in finding(doc, "middlebox-fingerprint")["title"]


def test_backend_404(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-tcp", backends=("not-found",)), inside=(), repeat=1)
    assert rc == 1 and "challenge-not-found" in codes(doc)
    assert root(doc) == "challenge-not-found"


def test_trailing_newline(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("dnat-loopback", backends=("trailing-newline",)))
    assert rc == 0 and codes(doc) == ["trailing-whitespace"]
    assert root(doc) == "trailing-whitespace"
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}


def test_html_page(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-tcp", backends=("html-page",)), inside=(), repeat=1)
    assert rc == 1 and "body-too-large" in codes(doc) and root(doc) == "body-too-large"


@pytest.mark.parametrize(
    "behaviour,code",
    [
        ("redirect-bad-port", "redirect-bad-target"),
        ("redirect-loop", "redirect-loop"),
    ],
)
def test_redirects(lab_scenario: LabFactory, behaviour: str, code: str) -> None:
    rc, doc = diagnose(lab_scenario("haproxy-tcp", backends=(behaviour,)), inside=(), repeat=1)
    assert rc == 1 and code in codes(doc) and root(doc) == code


def test_redirect_to_https(lab_scenario: LabFactory) -> None:
    rc, doc = diagnose(
        lab_scenario("haproxy-tcp", backends=("redirect-https",)), inside=(), repeat=1
    )
    assert "redirect-https" in codes(doc)
    # nothing listens on 443 in the lab: the CA follows the redirect and is refused there
    assert rc == 1 and "port-443-refused" in codes(doc) and "port-80-refused" not in codes(doc)
    assert root(doc) == "port-443-refused"  # on the https hop; redirect-https is context


def test_redirect_to_https_where_the_lb_drops_443(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("redirect-https",))
    # the LB answers port 80 and silently drops 443: a security group open on 80 only
    dropped = lab.run(
        "lb", ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "443", "-j", "DROP"]
    )
    assert dropped.returncode == 0, dropped.stderr
    rc, doc = diagnose(lab, inside=(), repeat=1)
    assert "redirect-https" in codes(doc)
    assert rc == 1 and root(doc) == "port-443-timeout", codes(doc)
    assert "port-80-timeout" not in codes(doc)


def test_unusable_inside_vantage(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat-loopback")
    rc, doc = diagnose(lab, "--inside", "ip netns exec acmelb-no-such-ns", inside=())
    assert rc == 0 and codes(doc) == ["vantage-unusable"] and root(doc) == "vantage-unusable"


def test_aaaa_path_dead_ipv4_fine(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat-loopback", ipv6=True)
    sc = lab.scenario
    # an unassigned address of the public IPv6 segment: neighbour discovery never answers
    rc, doc = diagnose(lab, "--resolve", f"{sc.name}:2001:db8::99", inside=(), repeat=1)
    assert rc == 0 and codes(doc) == ["ipv6-unreachable"] and root(doc) == "ipv6-unreachable"
    assert finding(doc, "ipv6-unreachable")["severity"] == "warning"  # the CA falls back
    assert doc["verdicts"]["acme-ca"] == "pass"
    rc, doc = diagnose(lab, "--resolve", f"{sc.name}:{lab.vip6}", inside=(), repeat=1)
    assert rc == 0 and doc["findings"] == [] and root(doc) is None
    assert {p["address"] for p in doc["probes"]} == {lab.vip6, lab.vip}


def test_split_horizon_inside_goes_straight_to_the_backend(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat", split_horizon=True)
    rc, doc = diagnose(lab, dns=False)
    assert rc == 0 and codes(doc) == ["dns-split-horizon"] and root(doc) == "dns-split-horizon"
    f = finding(doc, "dns-split-horizon")
    assert lab.backend_address("b1") in f["explanation"] and ADDRESSES.vip in f["explanation"]
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "pass"}


def test_names_from_the_labs_dns_server(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat-loopback", ca=True)
    rc, doc = diagnose(lab, dns=True)
    assert rc == 0 and doc["findings"] == [] and root(doc) is None
    assert {p["address"] for p in doc["probes"] if p["target"] == "public"} == {lab.vip}
    # without --assume-public the lab's addresses are what they are: a reserved range
    rc, doc = diagnose(lab, dns=True, assume_public=False, inside=())
    assert rc == 1 and codes(doc) == ["dns-reserved-address"]
    assert root(doc) == "dns-reserved-address"
    assert (
        "198.18.0.10: benchmarking (RFC 2544)"
        in finding(doc, "dns-reserved-address")["evidence"][0]
    )


def test_cert_manager_challenge_list_on_a_hairpin_less_lb(
    lab_scenario: LabFactory, tmp_path: Any
) -> None:
    """`kubectl get challenges -A -o json` as cert-manager leaves it when its self-check
    times out: the diagnosis names nat-loopback, and the reason's explanation agreed."""
    lab = lab_scenario("dnat")
    sc = lab.scenario
    url = lab.url
    reason = (
        f"Waiting for HTTP-01 challenge propagation: failed to perform self check GET "
        f"request '{url}': Get \"{url}\": context deadline exceeded (Client.Timeout "
        "exceeded while awaiting headers)"
    )
    challenges = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "acme.cert-manager.io/v1",
                "kind": "Challenge",
                "metadata": {"name": "app-tls-1", "namespace": "shop"},
                "spec": {
                    "dnsName": sc.name,
                    "token": sc.token,
                    "key": sc.key_authorization,
                    "type": "HTTP-01",
                },
                "status": {
                    "state": "pending",
                    "processing": True,
                    "presented": True,
                    "reason": reason,
                },
            }
        ],
    }
    path = tmp_path / "challenges.json"
    path.write_text(json.dumps(challenges))
    proc = subprocess.run(
        [
            *lab.exec_prefix("pub"),
            sys.executable,
            "-m",
            "acmelb",
            "diagnose",
            "--challenges",
            str(path),
            "--inside",
            lab.vantage("b1"),
            "--resolve",
            f"{sc.name}:{lab.vip}",
            "--assume-public",
            "198.18.0.0/15",
            "--timeout",
            "1",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    assert "challenge shop/app-tls-1" in out and "cert-manager says: Waiting for HTTP-01" in out
    assert "that message points to: nat-loopback" in out
    assert out.splitlines()[0].startswith(f"{sc.name}: root cause: nat-loopback: no NAT loopback")
    assert "nat-loopback: no NAT loopback" in out and "CoreDNS" in out


def test_run_from_behind_the_lb_with_a_remote_outside_vantage(lab_scenario: LabFactory) -> None:
    """The other arrangement: acmelb runs on a node behind the LB (--here inside) and reaches
    the internet side through a command prefix (--outside); both resolve the name themselves."""
    lab = lab_scenario("dnat")
    sc = lab.scenario
    proc = subprocess.run(
        [
            *lab.exec_prefix("b2"),
            sys.executable,
            "-m",
            "acmelb",
            "diagnose",
            sc.name,
            "--json",
            "--here",
            "inside",
            "--outside",
            lab.vantage("pub"),
            f"--token={sc.token}",
            f"--key={sc.key_authorization}",
            "--timeout",
            "1",
            "--repeat",
            "1",
            "--assume-public",
            "198.18.0.0/15",
            "--resolve",
            f"{sc.name}:{lab.vip}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert proc.returncode == 1 and codes(doc) == ["nat-loopback"] and root(doc) == "nat-loopback"
    assert finding(doc, "nat-loopback")["vantages"] == ["inside:local"]
    assert doc["verdicts"] == {"acme-ca": "pass", "cert-manager-self-check": "fail"}
    outside = [p for p in doc["probes"] if p["vantage"] == f"outside:{lab.vantage('pub')}"]
    assert outside and all(p["status"] == 200 for p in outside)


def test_redirect_to_https_where_443_speaks_plain_http(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("redirect-https",))
    # plain HTTP on the VIP's port 443: the CA's TLS handshake fails there
    plain = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("lb"), sys.executable, "-u", "-m", "http.server", "443",
         "--bind", lab.vip],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert plain.stdout is not None
        assert "Serving HTTP" in plain.stdout.readline()  # "" if it could not bind
        rc, doc = diagnose(lab, inside=(), repeat=1)
    finally:
        plain.terminate()
        plain.wait(10)
    assert rc == 1 and root(doc) == "https-hop-failed", codes(doc)
    assert "TLS handshake on port 443" in finding(doc, "https-hop-failed")["title"]
