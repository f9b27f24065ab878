"""Ground truth: each lab mode and backend behaviour does what its name says.

Only plain curl fetches, from the public namespace (the internet) and from the
backends (behind the LB), so the diagnosis tests built on the lab can trust it.
The same table is in docs/lab.md.
"""

from __future__ import annotations

import pytest

from acmelb.lab import ADDRESSES, LAB_THUMBPRINT, LAB_TOKEN, OTHER_THUMBPRINT, FetchResult

from .conftest import LabFactory

pytestmark = pytest.mark.lab

KEY = f"{LAB_TOKEN}.{LAB_THUMBPRINT}"
OTHER_TOKEN = "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"


def is_key(result: FetchResult, key: str = KEY) -> bool:
    return result.outcome == "response" and result.status == 200 and result.text == key


def timed_out(result: FetchResult) -> bool:
    """A connect that got no answer at all: not refused, not reset, just silence."""
    return result.outcome == "timeout" and result.elapsed >= 0.9 and "connect" in result.error


# -- LB modes -------------------------------------------------------------------


def test_dnat_public_gets_key_backends_time_out(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat")
    assert is_key(lab.fetch("pub")), lab.fetch("pub")
    # b1 drops its own hairpinned SYN (martian source); b2 gets b1's direct SYN-ACK
    # from an address it never called and resets it.
    assert timed_out(lab.fetch("b1")), lab.fetch("b1")
    assert timed_out(lab.fetch("b2")), lab.fetch("b2")
    assert is_key(lab.fetch("b1", address=lab.backend_address("b1")))


def test_dnat_with_shortcut_bypasses_the_lb(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat", shortcut=("b1",))
    assert is_key(lab.fetch("b1"))  # kube-proxy style: VIP:80 goes to itself
    assert timed_out(lab.fetch("b2"))  # no shortcut there: still the hairpin


def test_dnat_with_split_horizon_dns_avoids_the_hairpin(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat", split_horizon=True)
    resolved = {
        role: lab.run(role, ["getent", "ahostsv4", lab.scenario.name]).stdout.split()[0]
        for role in ("pub", "b1", "b2")
    }
    assert resolved == {
        "pub": ADDRESSES.vip,
        "b1": ADDRESSES.backend(1),
        "b2": ADDRESSES.backend(1),
    }
    for role in ("pub", "b1", "b2"):
        assert is_key(lab.fetch(role)), (role, lab.fetch(role))


def test_dnat_loopback_everyone_gets_key(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("dnat-loopback")
    for role in ("pub", "b1", "b2"):
        assert is_key(lab.fetch(role)), (role, lab.fetch(role))


def test_haproxy_tcp_passes_through_to_b1(lab_scenario: LabFactory) -> None:
    # b2 answers 404: every 200 with the key proves b1 is the one serving.
    lab = lab_scenario("haproxy-tcp", backends=("responder", "not-found"))
    for role in ("pub", "b1", "b2"):
        for _ in range(2):
            assert is_key(lab.fetch(role)), (role, lab.fetch(role))


def test_haproxy_tcp_proxy_without_shortcut(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp-proxy")
    for role in ("pub", "b1", "b2"):
        assert is_key(lab.fetch(role)), (role, lab.fetch(role))
    direct = lab.backend_address("b1")
    assert lab.fetch("b2", address=direct).outcome == "empty-reply"
    assert is_key(lab.fetch("b2", address=direct, proxy_protocol=True))


def test_haproxy_tcp_proxy_with_shortcut_needs_proxy_header(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", shortcut=("b1",))
    assert is_key(lab.fetch("pub"))
    plain = lab.fetch("b1")
    assert plain.outcome == "empty-reply", plain
    assert is_key(lab.fetch("b1", proxy_protocol=True))
    assert is_key(lab.fetch("b2"))  # b2 still goes through the LB, which adds the header


def test_haproxy_http_passes_challenge_through(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-http", backends=("responder", "not-found"))
    for role in ("pub", "b1", "b2"):
        assert is_key(lab.fetch(role)), (role, lab.fetch(role))
    other = lab.fetch("pub", f"http://{lab.scenario.name}/.well-known/acme-challenge/{OTHER_TOKEN}")
    assert other.status == 404


def test_haproxy_http_intercept_answers_for_another_account(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-http-intercept")
    for role in ("pub", "b1", "b2"):
        assert is_key(lab.fetch(role), f"{LAB_TOKEN}.{OTHER_THUMBPRINT}"), lab.fetch(role)
    any_token = lab.fetch(
        "pub", f"http://{lab.scenario.name}/.well-known/acme-challenge/{OTHER_TOKEN}"
    )
    assert is_key(any_token, f"{OTHER_TOKEN}.{OTHER_THUMBPRINT}")
    # The backend itself is right; the LB never lets the challenge reach it.
    assert is_key(lab.fetch("b2", address=lab.backend_address("b1")))
    assert (lab.state_dir / "b1-responder.log").exists()


def test_round_robin_alternates_backends(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("round-robin", backends=("responder", "not-found"))
    statuses = [lab.fetch("pub").status for _ in range(4)]
    assert sorted(statuses) == [200, 200, 404, 404], statuses
    assert statuses[0] != statuses[1] and statuses[0] == statuses[2], statuses


def test_firewall_drops_port_80_from_public_only(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("firewall")
    assert timed_out(lab.fetch("pub")), lab.fetch("pub")
    assert is_key(lab.fetch("b1"))
    assert is_key(lab.fetch("b2"))


def test_no_backend_gives_503_everywhere(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("no-backend")
    for role in ("pub", "b1", "b2"):
        result = lab.fetch(role)
        assert result.outcome == "response" and result.status == 503, (role, result)
    assert is_key(lab.fetch("b2", address=lab.backend_address("b1")))  # the backend is fine


# -- backend behaviours, seen from the internet through haproxy-tcp ----------------


def challenge_url(lab_name: str, token: str = LAB_TOKEN) -> str:
    return f"http://{lab_name}/.well-known/acme-challenge/{token}"


def test_behaviour_responder_exact(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("responder",))
    assert is_key(lab.fetch("pub"))
    assert lab.fetch("pub", challenge_url(lab.scenario.name, OTHER_TOKEN)).status == 404


def test_behaviour_stateless(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("stateless",))
    assert is_key(lab.fetch("pub"))
    assert is_key(
        lab.fetch("pub", challenge_url(lab.scenario.name, OTHER_TOKEN)),
        f"{OTHER_TOKEN}.{LAB_THUMBPRINT}",
    )


def test_behaviour_wrong_thumbprint(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("wrong-thumbprint",))
    assert is_key(lab.fetch("pub"), f"{LAB_TOKEN}.{OTHER_THUMBPRINT}")


def test_behaviour_not_found(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("not-found",))
    result = lab.fetch("pub")
    assert result.outcome == "response" and result.status == 404


def test_behaviour_trailing_newline(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("trailing-newline",))
    result = lab.fetch("pub")
    assert result.status == 200 and result.body == (KEY + "\n").encode()


def test_behaviour_html_page(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("html-page",))
    for url in (lab.url, f"http://{lab.scenario.name}/anything"):
        result = lab.fetch("pub", url)
        assert result.status == 200 and len(result.body) >= 1024
        assert result.text.startswith("<!DOCTYPE html>")
        assert result.headers["content-type"][0].startswith("text/html")


@pytest.mark.parametrize(
    ("behaviour", "status", "location"),
    [
        ("redirect-https", 301, "https://{name}{path}"),
        ("redirect-bad-port", 302, "http://{name}:8080{path}"),
        ("redirect-loop", 302, "http://{name}{path}"),
    ],
)
def test_behaviour_redirects(
    lab_scenario: LabFactory, behaviour: str, status: int, location: str
) -> None:
    lab = lab_scenario("haproxy-tcp", backends=(behaviour,))
    result = lab.fetch("pub")
    assert result.status == status
    assert result.location == location.format(
        name=lab.scenario.name, path=lab.scenario.challenge_path
    )


def test_behaviour_none(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", backends=("none", "responder"))
    # HAProxy accepts, cannot reach b1 (standby b2 is not used without health checks).
    assert lab.fetch("pub").outcome == "empty-reply"
    assert lab.fetch("b2", address=lab.backend_address("b1")).outcome == "refused"


@pytest.mark.parametrize("behaviour", ["not-found", "trailing-newline", "stateless"])
def test_behaviours_behind_proxy_protocol(lab_scenario: LabFactory, behaviour: str) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", backends=(behaviour,))
    through_lb = lab.fetch("pub")
    direct = lab.fetch("b1", address=lab.backend_address("b1"), proxy_protocol=True)
    assert through_lb.outcome == direct.outcome == "response"
    assert (through_lb.status, through_lb.body) == (direct.status, direct.body)


# -- IPv6: the same truths through the v6 VIP ---------------------------------------

IPV6_TRUTH = {
    # mode: (public fetch, fetch from b1, fetch from b2)
    "dnat": ("key", "timeout", "timeout"),
    "dnat-loopback": ("key", "key", "key"),
    "haproxy-tcp": ("key", "key", "key"),
    "haproxy-http-intercept": ("other", "other", "other"),
    "firewall": ("timeout", "key", "key"),
    "no-backend": ("503", "503", "503"),
}


def classify(result: FetchResult) -> str:
    if is_key(result):
        return "key"
    if is_key(result, f"{LAB_TOKEN}.{OTHER_THUMBPRINT}"):
        return "other"
    if timed_out(result):
        return "timeout"
    return str(result.status) if result.outcome == "response" else result.outcome


@pytest.mark.parametrize("mode", list(IPV6_TRUTH))
def test_ipv6_vip(lab_scenario: LabFactory, mode: str) -> None:
    lab = lab_scenario(mode, ipv6=True)
    assert lab.vip6 == ADDRESSES.vip6
    seen = tuple(classify(lab.fetch(role, address=ADDRESSES.vip6)) for role in ("pub", "b1", "b2"))
    assert seen == IPV6_TRUTH[mode]


def test_ipv6_proxy_protocol_shortcut(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp-proxy", ipv6=True, shortcut=("b1",))
    assert is_key(lab.fetch("pub", address=ADDRESSES.vip6))
    assert lab.fetch("b1", address=ADDRESSES.vip6).outcome == "empty-reply"
    assert is_key(lab.fetch("b1", address=ADDRESSES.vip6, proxy_protocol=True))


# -- the network is sealed ------------------------------------------------------------


def test_public_side_cannot_reach_backends_directly(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp")
    route = lab.run("pub", ["ip", "route", "get", lab.backend_address("b1")])
    assert route.returncode != 0 and "unreachable" in route.stderr, route
    assert lab.fetch("pub", address=lab.backend_address("b1")).outcome == "refused"


def test_no_namespace_has_a_route_out_of_the_lab(lab_scenario: LabFactory) -> None:
    lab = lab_scenario("haproxy-tcp", ipv6=True)
    gateways = {"-4": ADDRESSES.lb_backend, "-6": ADDRESSES.lb_backend6}
    lab_prefixes = {"-4": ("198.18.",), "-6": ("2001:db8:", "fe80::")}
    for role in lab.namespaces:
        for family in ("-4", "-6"):
            routes = lab.run(role, ["ip", family, "route", "show"]).stdout
            for line in routes.splitlines():
                if line.startswith("default"):
                    # Only backends have one, and it points at the LB.
                    assert role.startswith("b") and f"via {gateways[family]} " in line, line
                else:
                    assert line.split()[0].startswith(lab_prefixes[family]), (role, line)
