"""`acmelb explain`: every message format named in the issue, the fixture's status.reason,
extraction of URL/token/expected/received, candidates, the next command, exit codes, schema."""

from __future__ import annotations

import importlib.resources
import io
import json
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest

from acmelb.cli.main import build_parser, main
from acmelb.doctor.explain import explain

SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/explain-v1.json").read_text()
)
FIXTURE = Path(__file__).with_name("fixtures") / "cert-manager-challenges.json"
T = "q3Vt8nWkR0bLsYc2fJ9aHxEo5pTgM1uZiDr7KvQw6yN"
TH = "Zp4sLx8cJ0aTq2WmHf6vRb9EkYnUo3GdSi1Nt7Cw5eA"
OTHER = "Ezr9sZbGqKjMB79QS2XAonqp4GCBtD8Tq0fo7bc2fWY"
KEY = f"{T}.{TH}"
URL = f"http://www.example.com/.well-known/acme-challenge/{T}"
CM = f"failed to perform self check GET request '{URL}': Get \"{URL}\": "
PROP = "Waiting for HTTP-01 challenge propagation: "

CASES = [
    # (message, source, first candidate, expected, received)
    (
        PROP + CM + "context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
        "cert-manager",
        "nat-loopback",
        None,
        None,
    ),
    (
        CM + "dial tcp 198.51.100.7:80: connect: connection refused",
        "cert-manager",
        "nat-loopback",
        None,
        None,
    ),
    (CM + "dial tcp 198.51.100.7:80: i/o timeout", "cert-manager", "nat-loopback", None, None),
    (CM + "EOF", "cert-manager", "proxy-protocol-required", None, None),
    (
        CM + "read tcp 10.0.0.3:41234->198.51.100.7:80: read: connection reset by peer",
        "cert-manager",
        "proxy-protocol-required",
        None,
        None,
    ),
    (
        PROP + "wrong status code '404', expected '200'",
        "cert-manager",
        "challenge-not-found",
        None,
        "HTTP 404",
    ),
    (
        "wrong status code '503', expected '200'",
        "cert-manager",
        "http-error-status",
        None,
        "HTTP 503",
    ),
    (
        PROP + f'did not get expected response when querying endpoint, expected "{KEY}" but got: '
        f"{T}.{OTHER}",
        "cert-manager",
        "lb-intercepts-challenge",
        KEY,
        f"{T}.{OTHER}",
    ),
    (
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: '
        "<html><body>Welcome</body></html>",
        "cert-manager",
        "wrong-content",
        KEY,
        "<html><body>Welcome</body></html>",
    ),
    (
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: {KEY}\\n',
        "cert-manager",
        "trailing-whitespace",
        KEY,
        KEY + "\n",
    ),
    (
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: {KEY}',
        "cert-manager",
        "trailing-whitespace",
        KEY,
        KEY,
    ),
    (f"Invalid response from {URL}: 404", "acme-ca", "challenge-not-found", None, "HTTP 404"),
    (
        f'Invalid response from {URL} [198.51.100.7]: "<html>\\r\\n<head><title>503 Service '
        'Temporarily Unavailable</title>"',
        "acme-ca",
        "http-error-status",
        None,
        "HTTP 503",
    ),
    (
        f"198.51.100.7: Fetching {URL}: Timeout during connect (likely firewall problem)",
        "acme-ca",
        "port-80-timeout",
        None,
        None,
    ),
    (
        f"2001:db8::7: Fetching {URL}: Timeout during connect (likely firewall problem)",
        "acme-ca",
        "ipv6-unreachable",
        None,
        None,
    ),
    (f"198.51.100.7: Fetching {URL}: Connection refused", "acme-ca", "port-80-refused", None, None),
    (
        f"198.51.100.7: Fetching {URL}: Connection reset by peer",
        "acme-ca",
        "empty-reply",
        None,
        None,
    ),
    (
        f'The key authorization file from the server did not match this challenge. Expected "{KEY}"'
        f' (got "{T}.{OTHER}")',
        "acme-ca",
        "lb-intercepts-challenge",
        KEY,
        f"{T}.{OTHER}",
    ),
    (
        f"198.51.100.7: Fetching {URL}: Error getting validation data",
        "acme-ca",
        "port-80-timeout",
        None,
        None,
    ),
    (f"Fetching {URL}: Too many redirects", "acme-ca", "redirect-too-many", None, None),
    (
        f"Fetching {URL}: Invalid port in redirect target. Only ports 80 and 443 are supported, "
        "not 8080",
        "acme-ca",
        "redirect-bad-target",
        None,
        None,
    ),
    (
        f'Fetching {URL}: Invalid host in redirect target "www.example.com.well-known"',
        "acme-ca",
        "redirect-bad-target",
        None,
        None,
    ),
    (
        "no valid A records found for www.example.com; no valid AAAA records found for "
        "www.example.com",
        "acme-ca",
        "dns-no-address",
        None,
        None,
    ),
    (
        "DNS problem: NXDOMAIN looking up A for www.example.com - check that a DNS record exists "
        "for this domain",
        "acme-ca",
        "dns-no-address",
        None,
        None,
    ),
    (
        "DNS problem: SERVFAIL looking up CAA for example.com - the domain's nameservers may be "
        "malfunctioning",
        "acme-ca",
        "dns-lookup-failed",
        None,
        None,
    ),
    ("CAA record for www.example.com prevents issuance", "acme-ca", "caa-forbids", None, None),
    (
        f'The key authorization file from the server did not match this challenge. Expected "{KEY}"'
        ' (got "hello")',
        "acme-ca",
        "wrong-content",
        KEY,
        "hello",
    ),
    (
        "Non-200 status code from HTTP: 404 returned",
        "acme-ca",
        "challenge-not-found",
        None,
        "HTTP 404",
    ),
    (
        f'Get "{URL}": dial tcp 198.51.100.7:80: connect: connection refused',
        "acme-ca",
        "port-80-refused",
        None,
        None,
    ),
    (
        "Error accepting authorization: acme: authorization error for www.example.com: 400 "
        "urn:ietf:params:acme:error:connection: 198.51.100.7: Fetching "
        f"{URL}: Timeout during connect (likely firewall problem)",
        "cert-manager",
        "port-80-timeout",
        None,
        None,
    ),
    (
        "Accepting challenge authorization failed: acme: authorization error for www.example.com:"
        f" 403 urn:ietf:params:acme:error:unauthorized: 198.51.100.7: Invalid response from {URL}"
        ": 404",
        "cert-manager",
        "challenge-not-found",
        None,
        "HTTP 404",
    ),
    (
        "Waiting for http-01 challenge propagation: failed to perform self check GET request "
        f"'{URL}': Get {URL}: dial tcp 198.51.100.7:80: i/o timeout",
        "cert-manager",
        "nat-loopback",
        None,
        None,
    ),
    (
        "Certbot failed to authenticate some domains (authenticator: standalone). The Certificate "
        "Authority reported these problems:\n  Domain: www.example.com\n  Type:   unauthorized\n"
        f"  Detail: 198.51.100.7: Invalid response from {URL}: 404\n",
        "certbot",
        "challenge-not-found",
        None,
        "HTTP 404",
    ),
    (
        "Certbot failed to authenticate some domains (authenticator: webroot).\n  Domain: "
        "www.example.com\n  Type:   connection\n  Detail: 198.51.100.7: Fetching "
        f"{URL}: Timeout during connect (likely firewall problem)\n",
        "certbot",
        "port-80-timeout",
        None,
        None,
    ),
    (
        "[www.example.com] acme: error: 403 :: urn:ietf:params:acme:error:unauthorized :: "
        f"198.51.100.7: Invalid response from {URL}: 404",
        "lego",
        "challenge-not-found",
        None,
        "HTTP 404",
    ),
    (
        "acme: error: 400 :: urn:ietf:params:acme:error:connection :: 198.51.100.7: Fetching "
        f"{URL}: Connection refused",
        "lego",
        "port-80-refused",
        None,
        None,
    ),
]


@pytest.mark.parametrize("message,source,first,expected,received", CASES)
def test_recognised(
    message: str, source: str, first: str, expected: str | None, received: str | None
) -> None:
    e = explain(message)
    assert e.source == source
    assert e.candidates and e.candidates[0] == first, e.candidates
    assert e.expected == expected and e.received == received
    if "www.example.com" in message:
        assert e.name == "www.example.com"
    if URL in message:
        assert e.url == URL and e.token == T
        assert e.next is not None and e.next.startswith(
            f"acmelb diagnose www.example.com --token={T}"
        )
    assert e.reasoning
    jsonschema.validate(e.to_json(), SCHEMA)


def test_next_command_carries_the_key_and_an_inside_vantage() -> None:
    e = explain(CASES[7][0])
    assert e.token == T and e.name is None  # the message has no URL: the token from the key
    assert e.next == (
        f"acmelb diagnose NAME --token={T} --key={KEY} --inside 'kubectl exec -n NAMESPACE POD --'"
    )
    assert "lb-intercepts-challenge" in e.candidates


def test_unrecognised_message() -> None:
    e = explain("the printer is on fire")
    assert e.source == "unknown" and e.candidates == [] and not e.recognised
    jsonschema.validate(e.to_json(), SCHEMA)


def test_cli_explain_fixture_reason_json(capsys: pytest.CaptureFixture[str]) -> None:
    reason = json.loads(FIXTURE.read_text())["items"][0]["status"]["reason"]
    code = main(["explain", reason, "--json"])
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, SCHEMA)
    assert code == 0 and doc["source"] == "cert-manager" and doc["token"] == T
    assert doc["candidates"][:2] == ["nat-loopback", "port-80-timeout"]
    assert "--inside" in doc["next"]


def test_cli_explain_stdin_human(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(CASES[11][0] + "\n"))
    code = main(["explain", "-"])
    out = capsys.readouterr().out
    assert code == 0 and "source:     acme-ca" in out and "candidates: challenge-not-found" in out
    assert "next:       acmelb diagnose www.example.com" in out


def test_cli_explain_unrecognised_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "nothing", "to", "see", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["source"] == "unknown"


def test_cli_explain_empty_input_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("   \n"))
    assert main(["explain", "-"]) == 2
    err = capsys.readouterr().err
    assert "empty message" in err and "Traceback" not in err


# -- reading the values ----------------------------------------------------------------------

PREFIX = T[:24]


def test_the_issue_message_names_lb_interception_second_with_what_tells_them_apart() -> None:
    e = explain(
        "did not get expected response when querying endpoint, expected 'xxxx' but got: yyyy"
    )
    assert e.source == "cert-manager"
    assert "lb-intercepts-challenge" in e.candidates[:2]
    assert "inside" in e.reasoning and "TCP pass-through" in e.reasoning
    assert e.next is not None and e.next.startswith("acmelb diagnose NAME")
    assert "--inside 'kubectl exec" in e.next


def test_cert_manager_cut_body_that_starts_with_our_token_leads_with_interception() -> None:
    e = explain(
        PROP + f'did not get expected response when querying endpoint, expected "{KEY}" but '
        f"got: {PREFIX}... (truncated)"
    )
    assert e.candidates[:2] == ["lb-intercepts-challenge", "thumbprint-mismatch"]
    assert "trailing-whitespace" in e.candidates
    assert "received body: our-token-prefix" in e.evidence
    assert e.next is not None and f"--key={KEY}" in e.next


def test_cut_body_of_another_token_is_not_taken_for_ours() -> None:
    e = explain(
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: '
        f"{OTHER[:24]}... (truncated)"
    )
    assert e.candidates[0] == "wrong-content"
    assert "received body: other-token" in e.evidence


def test_cut_html_and_empty_bodies() -> None:
    html = explain(
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: '
        "<!DOCTYPE html><html lan... (truncated)"
    )
    empty = explain(
        f'did not get expected response when querying endpoint, expected "{KEY}" but got: '
    )
    assert html.candidates[0] == "wrong-content" and "received body: html" in html.evidence
    assert empty.candidates[0] == "wrong-content" and "received body: empty" in empty.evidence


def test_old_cert_manager_presented_key_format_reads_the_body_first() -> None:
    e = explain(f"presented key ({T}.{OTHER}) did not match expected ({KEY})")
    assert e.source == "cert-manager" and e.expected == KEY and e.received == f"{T}.{OTHER}"
    assert e.candidates[0] == "lb-intercepts-challenge"


def test_https_hop_timeout_is_not_a_port_80_problem() -> None:
    e = explain(
        f"{PROP}failed to perform self check GET request '{URL}': Get "
        f'"https://www.example.com/.well-known/acme-challenge/{T}": context deadline exceeded '
        "(Client.Timeout exceeded while awaiting headers)"
    )
    assert e.candidates[0] == "redirect-https"
    assert e.fetched == f"https://www.example.com/.well-known/acme-challenge/{T}"
    assert "port 443" in e.reasoning


def test_https_hop_tls_failure() -> None:
    e = explain(
        f"198.51.100.7: Fetching https://www.example.com/.well-known/acme-challenge/{T}: "
        "remote error: tls: handshake failure"
    )
    assert e.candidates[0] == "redirect-https" and e.address == "198.51.100.7"


def test_redirect_to_another_port_read_from_the_fetched_url() -> None:
    e = explain(
        f"{PROP}failed to perform self check GET request '{URL}': Get "
        f'"http://www.example.com:8080/.well-known/acme-challenge/{T}": dial tcp '
        "198.51.100.7:8080: connect: connection refused"
    )
    assert e.candidates == ["redirect-bad-target"]


def test_self_check_dialling_a_private_address_is_split_horizon() -> None:
    e = explain(CM + "dial tcp 10.43.12.7:80: i/o timeout")
    assert e.candidates[0] == "dns-split-horizon"
    assert "dialled 10.43.12.7: a private address" in e.evidence


def test_ca_dialling_loopback_is_a_reserved_address() -> None:
    e = explain(f'Get "{URL}": dial tcp 127.0.0.1:80: connect: connection refused')
    assert e.candidates[0] == "dns-reserved-address"


def test_documentation_addresses_count_as_public() -> None:
    e = explain(CM + "dial tcp 203.0.113.9:80: i/o timeout")
    assert e.candidates[0] == "nat-loopback"


def test_ipv6_connect_failure_from_inside() -> None:
    e = explain(CM + "dial tcp [2001:db8::7]:80: connect: network is unreachable")
    assert e.candidates[0] == "ipv6-unreachable"


def test_quoted_404_page_is_challenge_not_found_not_wrong_content() -> None:
    e = explain(
        f'198.51.100.7: Invalid response from {URL}: "<html>\\r\\n<head><title>404 Not '
        'Found</title></head>"'
    )
    assert e.candidates[0] == "challenge-not-found" and e.status == 404
    assert e.title == "404 Not Found"


def test_cluster_dns_lookup_failure() -> None:
    e = explain(
        f"{PROP}failed to perform self check GET request '{URL}': Get \"{URL}\": dial tcp: "
        "lookup www.example.com on 10.96.0.10:53: no such host"
    )
    assert e.candidates[0] == "dns-split-horizon" and "10.96.0.10" in e.reasoning


def test_presenting_failure_is_not_a_validation_failure() -> None:
    e = explain(
        'Error presenting challenge: admission webhook "validate.nginx.ingress.kubernetes.io" '
        f"denied the request: ingress contains invalid paths: path /.well-known/acme-challenge/{T}"
        " cannot be used with pathType Exact"
    )
    assert e.source == "cert-manager" and e.candidates == ["solver-not-presented"]
    assert "strict-validate-path-type" in e.reasoning
    assert e.next == "kubectl get challenges -A -o json | acmelb diagnose --challenges -"
    jsonschema.validate(e.to_json(), SCHEMA)


def test_traefik_and_old_lego_formats() -> None:
    traefik = explain(
        'level=error msg="Unable to obtain ACME certificate for domains \\"www.example.com\\": '
        "acme: error: 403 :: urn:ietf:params:acme:error:unauthorized :: 198.51.100.7: Invalid "
        f'response from {URL}: 404" providerName=le.acme'
    )
    old_lego = explain(
        "acme: Error 403 - urn:acme:error:unauthorized - Invalid response from "
        f"{URL} [198.51.100.7]: 404"
    )
    assert traefik.source == "traefik" and traefik.candidates[0] == "challenge-not-found"
    assert old_lego.source == "lego" and old_lego.candidates[0] == "challenge-not-found"
    assert old_lego.address == "198.51.100.7"


def test_a_host_glued_to_the_path_is_a_broken_redirect_target() -> None:
    # certbot wraps the detail: "Fetching" ends its line, the URL starts the next
    e = explain(
        "Domain: www.example.com\n   Type:   connection\n   Detail: Fetching\n"
        f"   https://www.example.com.well-known/acme-challenge/{T}:\n"
        "   Error getting validation data"
    )
    assert e.candidates[0] == "redirect-bad-target", e.candidates
    assert e.fetched == f"https://www.example.com.well-known/acme-challenge/{T}"
    assert e.name == "www.example.com" and e.token == T
    assert e.next is not None and e.next.startswith(f"acmelb diagnose www.example.com --token={T}")
    jsonschema.validate(e.to_json(), SCHEMA)


def test_a_self_test_with_the_wrong_data_is_a_content_mismatch() -> None:
    e = explain(
        "acme.responder: http-01 self test failed: got 200 response when doing self-test, "
        "but with the wrong data"
    )
    assert e.recognised and e.candidates[0] == "wrong-content", e.candidates


def test_the_next_command_keeps_a_token_that_starts_with_a_dash() -> None:
    token = "-" + T[1:]  # base64url: one token in 64 begins with "-"
    e = explain(
        f"Invalid response from http://www.example.com/.well-known/acme-challenge/{token}: "
        '404 "not found"'
    )
    assert e.next is not None and e.token == token
    args = build_parser("diagnose").parse_args(shlex.split(e.next)[1:])
    assert args.names == ["www.example.com"] and args.token == token


# -- evidence atoms (issue 23): what the message says happened, whatever its format --------


@pytest.mark.parametrize(
    ("message", "first", "source"),
    [
        (
            "acme: error: 403 :: urn:ietf:params:acme:error:unauthorized :: Cannot negotiate "
            'ALPN protocol "acme-tls/1" for tls-alpn-01 challenge',
            "tls-alpn-terminated",
            "lego",
        ),
        (
            "http: TLS handshake error from 192.0.2.4:47452: acme/autocert: unable to satisfy "
            '"https://acme-v02.api.letsencrypt.org/acme/authz-v3/1" for domain "example.com": '
            "no viable challenge type found",
            "tls-alpn-terminated",
            "autocert",
        ),
        (
            '[error] 7#7: *12 broken header: "GET /.well-known/acme-challenge/abc HTTP/1.1" '
            "while reading PROXY protocol, client: 10.2.0.26, server: 0.0.0.0:80",
            "proxy-protocol-required",
            "other",
        ),
        (
            'The HTTPRoute "cm-acme-http-solver-x" status: Accepted False, reason '
            "NotAllowedByListeners",
            "solver-route-not-accepted",
            "cert-manager",
        ),
        (
            "the load balancer returns 503 Service Unavailable for the challenge path",
            "http-error-status",
            "other",
        ),
        ("dial tcp 203.0.113.7:80: connect: connection refused", "port-80-refused", "acme-ca"),
        (
            "no information found to solve challenge for identifier: example.com",
            "challenge-not-found",
            "caddy",
        ),
    ],
)
def test_atoms_name_causes_in_formats_no_rule_knows(message: str, first: str, source: str) -> None:
    e = explain(message)
    assert e.recognised and e.candidates[0] == first and e.source == source, e.candidates
    jsonschema.validate(e.to_json(), SCHEMA)


def test_tls_alpn_terminated_names_its_fix() -> None:
    e = explain('Cannot negotiate ALPN protocol "acme-tls/1" for tls-alpn-01 challenge')
    assert e.candidates[0] == "tls-alpn-terminated"
    assert "TCP" in e.reasoning and "HTTP-01" in e.reasoning


def test_connection_refused_is_a_refusal_not_a_timeout() -> None:
    e = explain(PROP + CM + "dial tcp 203.0.113.7:80: connect: connection refused")
    assert "port-80-refused" in e.candidates[:2] and "port-80-timeout" not in e.candidates


def test_quoted_not_found_page_is_a_404_whatever_scheme() -> None:
    e = explain(
        f"Invalid response from https://www.example.com/.well-known/acme-challenge/{T} "
        '[203.0.113.5]: "<html><head><title>Not Found</title></head>'
    )
    assert e.status == 404 and e.candidates[0] == "challenge-not-found"


def test_our_token_with_another_suffix_is_another_account_even_redacted() -> None:
    e = explain(
        "did not get expected response when querying endpoint, expected "
        '"lm1~~~~jA3I.nx~~~_nL0w9h5a3UU0" but got: lm1~~~~jA3I.Qz~~~_abcdefgh'
    )
    assert e.candidates[0] == "lb-intercepts-challenge"
    assert "received body: other-thumbprint" in e.evidence


def test_secondary_validation_puts_the_perspectives_first() -> None:
    e = explain(
        f"During secondary validation: 198.51.100.49: Fetching {URL}: "
        "Timeout during connect (likely firewall problem)"
    )
    assert e.candidates[:2] == ["perspective-blocked", "port-80-timeout"]


def test_ipv6_failing_where_ipv4_answers_is_the_aaaa_path() -> None:
    e = explain(
        f"curl -i6 -m6 {URL}\ncurl: (28) Failed to connect to www.example.com port 80 after "
        f"3002 ms: Connection timed out\n\ncurl -i4 -m6 {URL}\nHTTP/1.1 404 Not Found"
    )
    assert e.candidates[0] == "ipv6-unreachable"


def test_klog_wrapper_is_cert_manager() -> None:
    e = explain(
        'E1005 19:56:01.979482       1 controller.go:157] "re-queuing item due to error '
        "processing\" err=\"wrong status code '503', expected '200'\" "
        'logger="cert-manager.controller"'
    )
    assert e.source == "cert-manager" and e.candidates[0] == "http-error-status"


def test_no_atom_at_all_is_not_recognised() -> None:
    assert not explain("it does not work, please help").recognised


@pytest.mark.parametrize(
    ("message", "first", "absent"),
    [
        (
            "Invalid response from http://[2001:db8::7]/.well-known/acme-challenge/abc: 404",
            "challenge-not-found",
            {"redirect-bad-target", "ipv6-unreachable", "dns-split-horizon"},
        ),
        (
            "Fetching http://[2001:db8::7]/.well-known/acme-challenge/abc: Timeout during "
            "connect (likely firewall problem)",
            "port-80-timeout",
            {"ipv6-unreachable", "redirect-bad-target"},
        ),
        (
            "198.51.100.7: Fetching http://198.51.100.7/.well-known/acme-challenge/abc: "
            "Connection refused",
            "port-80-refused",
            {"dns-no-address"},
        ),
    ],
)
def test_ip_identifiers_are_read_whole_and_have_no_dns_causes(
    message: str, first: str, absent: set[str]
) -> None:
    # An IP certificate's error names the address itself: the URL keeps its [v6] host,
    # and causes that live in DNS (an AAAA record, split horizon) are not offered.
    exp = explain(message)
    host = message.split("http://", 1)[1].split("/", 1)[0]
    assert exp.url == f"http://{host}/.well-known/acme-challenge/abc"
    assert exp.name == host.strip("[]") and exp.token == "abc"
    assert exp.candidates[0] == first and not absent & set(exp.candidates)
    assert (exp.next or "").startswith(f"acmelb diagnose {exp.name} --token=abc")


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        ("Connection refused", "port-443-refused"),
        ("Timeout during connect (likely firewall problem)", "port-443-timeout"),
    ],
)
def test_a_failing_https_hop_names_port_443(tail: str, code: str) -> None:
    # an https URL in a CA's error is a redirect target: the failure is on port 443
    exp = explain(f"Fetching https://app.example.com/.well-known/acme-challenge/abc: {tail}")
    assert exp.candidates[:2] == ["redirect-https", code]
