"""What a lab is made of: the load-balancer mode, the backends' behaviours, the address plan.

A scenario is pure data; ``acmelb.lab.topology`` turns it into namespaces and
processes. Every mode and behaviour here has a ground-truth test in
``tests/lab/test_ground_truth.py`` and a row in ``docs/lab.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from acmelb.errors import UsageError
from acmelb.names import normalize_name


class Mode(StrEnum):
    """How the load balancer forwards port 80 of the VIP to the backends."""

    DNAT = "dnat"
    DNAT_LOOPBACK = "dnat-loopback"
    HAPROXY_TCP = "haproxy-tcp"
    HAPROXY_TCP_PROXY = "haproxy-tcp-proxy"
    HAPROXY_HTTP = "haproxy-http"
    HAPROXY_HTTP_INTERCEPT = "haproxy-http-intercept"
    ROUND_ROBIN = "round-robin"
    FIREWALL = "firewall"
    NO_BACKEND = "no-backend"

    @property
    def description(self) -> str:
        return _MODE_DESCRIPTIONS[self]

    @property
    def uses_haproxy(self) -> bool:
        return self not in (Mode.DNAT, Mode.DNAT_LOOPBACK)

    @property
    def haproxy_http(self) -> bool:
        return self in (Mode.HAPROXY_HTTP, Mode.HAPROXY_HTTP_INTERCEPT, Mode.NO_BACKEND)

    @property
    def proxy_protocol(self) -> bool:
        """Backends expect a PROXY protocol header on port 80."""
        return self is Mode.HAPROXY_TCP_PROXY

    @property
    def balances(self) -> bool:
        """Spread connections over all backends (otherwise: b1 active, the rest standby)."""
        return self is Mode.ROUND_ROBIN


_MODE_DESCRIPTIONS = {
    Mode.DNAT: "iptables DNAT of VIP:80 to b1, no NAT loopback (hairpin times out)",
    Mode.DNAT_LOOPBACK: "iptables DNAT of VIP:80 to b1 plus the MASQUERADE loopback rule",
    Mode.HAPROXY_TCP: "HAProxy TCP pass-through to b1 (others standby)",
    Mode.HAPROXY_TCP_PROXY: "HAProxy TCP with send-proxy; backends are nginx expecting "
    "PROXY protocol",
    Mode.HAPROXY_HTTP: "HAProxy HTTP mode passing the challenge through to b1",
    Mode.HAPROXY_HTTP_INTERCEPT: "HAProxy HTTP mode answering every challenge itself with "
    "another account's thumbprint",
    Mode.ROUND_ROBIN: "HAProxy TCP round-robin over all backends",
    Mode.FIREWALL: "HAProxy TCP, but port 80 dropped on the LB's public interface",
    Mode.NO_BACKEND: "HAProxy HTTP mode whose backend pool is down: 503 for everything",
}


class Behaviour(StrEnum):
    """What a backend serves on its port 80."""

    RESPONDER = "responder"
    STATELESS = "stateless"
    WRONG_THUMBPRINT = "wrong-thumbprint"
    NOT_FOUND = "not-found"
    TRAILING_NEWLINE = "trailing-newline"
    HTML_PAGE = "html-page"
    REDIRECT_HTTPS = "redirect-https"
    REDIRECT_BAD_PORT = "redirect-bad-port"
    REDIRECT_LOOP = "redirect-loop"
    NONE = "none"

    @property
    def description(self) -> str:
        return _BEHAVIOUR_DESCRIPTIONS[self]

    @property
    def runs_responder(self) -> bool:
        """Served by ``acmelb serve`` (the others by nginx, or by nothing)."""
        return self in (Behaviour.RESPONDER, Behaviour.STATELESS, Behaviour.WRONG_THUMBPRINT)


_BEHAVIOUR_DESCRIPTIONS = {
    Behaviour.RESPONDER: "acmelb serve with the lab token and its key authorization",
    Behaviour.STATELESS: "acmelb serve --stateless with the lab thumbprint",
    Behaviour.WRONG_THUMBPRINT: "acmelb serve --stateless with another account's thumbprint",
    Behaviour.NOT_FOUND: "nginx answering 404 for everything",
    Behaviour.TRAILING_NEWLINE: "nginx answering the key authorization plus a newline",
    Behaviour.HTML_PAGE: "nginx answering every path with a 200 HTML page of a few KiB",
    Behaviour.REDIRECT_HTTPS: "nginx: 301 to the same URL on https (nothing listens on 443)",
    Behaviour.REDIRECT_BAD_PORT: "nginx: 302 to the same URL on port 8080",
    Behaviour.REDIRECT_LOOP: "nginx: 302 to the very same URL",
    Behaviour.NONE: "nothing listens on port 80 (free for `acmelb issue` or `acmelb serve`)",
}

_BEHAVIOUR_ALIASES = {"404": Behaviour.NOT_FOUND, "html": Behaviour.HTML_PAGE}

# RFC 8555 section 8.3's example token and RFC 7638's example thumbprint:
# recognisable in logs and valid base64url of the right length.
LAB_TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
LAB_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
# The account an intercepting LB (or a misconfigured stateless responder) answers for:
# base64url(sha256("acmelb lab: another account")).
OTHER_THUMBPRINT = "Ezr9sZbGqKjMB79QS2XAonqp4GCBtD8Tq0fo7bc2fWY"
LAB_NAME = "app.acmelb.test"

MAX_BACKENDS = 10
MAX_PERSPECTIVES = 8  # public-side namespaces p1..pN besides pub: the CA's remote perspectives
CLUSTER_BACKENDS = 3  # the cluster preset's default number of instances
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class AddressPlan:
    """Addresses of one lab, all inside 198.18.0.0/15 (RFC 2544) and 2001:db8::/32.

    Every lab uses the same plan: labs are isolated by namespace, not by address.
    """

    public_prefix: int = 24
    public_host: str = "198.18.0.1"  # the internet: Pebble, DNS, the outside vantage
    lb_public: str = "198.18.0.2"  # the LB's own address on its uplink (source NAT)
    vip: str = "198.18.0.10"
    backend_prefix: int = 24
    backend_subnet: str = "198.18.1.0/24"
    lb_backend: str = "198.18.1.1"  # the LB on the backend segment: the backends' gateway
    public6_host: str = "2001:db8::1"
    lb_public6: str = "2001:db8::2"
    vip6: str = "2001:db8::10"
    backend6_subnet: str = "2001:db8:1::/64"
    lb_backend6: str = "2001:db8:1::1"

    def backend(self, index: int) -> str:
        """Address of backend ``b<index>`` (1-based)."""
        return f"198.18.1.{10 + index}"

    def backend6(self, index: int) -> str:
        return f"2001:db8:1::{10 + index:x}"

    def perspective(self, index: int) -> str:
        """Address of public-side namespace ``p<index>`` (1-based), on its own /30 to the LB."""
        return f"198.18.4.{4 * (index - 1) + 2}"

    def lb_perspective(self, index: int) -> str:
        """The LB's end of ``p<index>``'s link: that namespace's default gateway."""
        return f"198.18.4.{4 * (index - 1) + 1}"


ADDRESSES = AddressPlan()


@dataclass(frozen=True)
class Scenario:
    """A load-balancer mode and what each backend (b1, b2, ...) serves.

    ``shortcut`` names backends (``"b1"``) that short-circuit VIP:80 to
    themselves in their own OUTPUT chain, as kube-proxy does for a
    LoadBalancer IP. ``ipv6`` adds 2001:db8:: addresses, a v6 VIP and AAAA
    answers everywhere. ``ca`` starts Pebble and its DNS server in the public
    namespace. ``split_horizon`` makes the backends resolve the name to b1's
    own address (an internal zone, or CoreDNS rewriting it as hairpin-proxy
    does) while the public side still gets the VIP.

    ``cluster`` is the cluster-mode lab (``Scenario.cluster_preset``): HAProxy
    also passes VIP:443 through (TCP, with ``option redispatch``), every
    backend runs a TLS nginx on 443 serving what an agent installed, and a
    3-member etcd cluster is attached to every backend; it needs ``ca`` and
    backends that leave port 80 free (``none``) for the agents' responders.
    ``dns_names`` are more names the lab DNS answers with the VIP (``*.zone``
    answers every name under ``zone``). ``cert_validity`` is Pebble's
    ``certificateValidityPeriod`` in seconds (None: Pebble's default, 5 years).
    """

    mode: Mode
    backends: tuple[Behaviour, ...] = (Behaviour.RESPONDER, Behaviour.RESPONDER)
    shortcut: tuple[str, ...] = ()
    name: str = LAB_NAME
    token: str = LAB_TOKEN
    thumbprint: str = LAB_THUMBPRINT
    ipv6: bool = False
    ca: bool = False
    split_horizon: bool = False
    extra_tokens: tuple[tuple[str, str], ...] = field(default=())
    cluster: bool = False
    dns_names: tuple[str, ...] = ()
    cert_validity: int | None = None
    perspectives: int = 0
    blocked: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", parse_mode(self.mode))
        object.__setattr__(self, "backends", tuple(parse_behaviour(b) for b in self.backends))
        object.__setattr__(self, "name", normalize_name(self.name))
        object.__setattr__(self, "dns_names", tuple(_dns_name(n) for n in self.dns_names))
        if not 1 <= len(self.backends) <= MAX_BACKENDS:
            raise UsageError(f"a lab has 1 to {MAX_BACKENDS} backends, not {len(self.backends)}")
        if self.mode is Mode.ROUND_ROBIN and len(self.backends) < 2:
            raise UsageError("round-robin needs at least two backends")
        if not 0 <= self.perspectives <= MAX_PERSPECTIVES:
            raise UsageError(f"a lab has 0 to {MAX_PERSPECTIVES} perspectives")
        object.__setattr__(self, "blocked", tuple(self.blocked))
        for role in self.blocked:
            if role != "pub" and role not in self.perspective_roles:
                raise UsageError(
                    f"blocked {role!r}: not pub nor a perspective "
                    f"({', '.join(self.perspective_roles) or 'none'})"
                )
        for label, value in (("token", self.token), ("thumbprint", self.thumbprint)):
            if not _BASE64URL.match(value):
                raise UsageError(f"{label} {value!r}: must be base64url (A-Z a-z 0-9 _ -)")
        for token, key in self.extra_tokens:
            if not _BASE64URL.match(token) or not key.startswith(token + "."):
                raise UsageError(f"extra token {token!r}: the key must be '{token}.THUMBPRINT'")
        known = set(self.backend_roles)
        for role in self.shortcut:
            if role not in known:
                raise UsageError(
                    f"shortcut {role!r}: no such backend (have {', '.join(self.backend_roles)})"
                )
        if self.cluster:
            if self.mode not in (Mode.ROUND_ROBIN, Mode.HAPROXY_TCP):
                raise UsageError(
                    "a cluster lab needs a TCP pass-through LB: round-robin or "
                    f"haproxy-tcp, not {self.mode.value}"
                )
            if not self.ca:
                raise UsageError("a cluster lab needs the CA (ca=True)")
            if any(b is not Behaviour.NONE for b in self.backends):
                raise UsageError(
                    "a cluster lab's backends must be 'none': port 80 is the agents' responder"
                )
        if self.cert_validity is not None and self.cert_validity < 1:
            raise UsageError(f"certificate validity {self.cert_validity}: give seconds >= 1")

    @property
    def key_authorization(self) -> str:
        return f"{self.token}.{self.thumbprint}"

    @property
    def backend_roles(self) -> tuple[str, ...]:
        return tuple(f"b{index}" for index in range(1, len(self.backends) + 1))

    @property
    def perspective_roles(self) -> tuple[str, ...]:
        """More public-side namespaces (``p1``...): the CA's other network perspectives."""
        return tuple(f"p{index}" for index in range(1, self.perspectives + 1))

    def source_address(self, role: str) -> str:
        """The address a public-side role (``pub``, ``p1``...) connects to the VIP from."""
        if role == "pub":
            return ADDRESSES.public_host
        return ADDRESSES.perspective(self.perspective_roles.index(role) + 1)

    @property
    def challenge_path(self) -> str:
        return f"/.well-known/acme-challenge/{self.token}"

    @property
    def wildcard_zone(self) -> str:
        """``*.`` and the name's parent domain: ``*.acmelb.test`` for app.acmelb.test."""
        return "*." + self.name.split(".", 1)[1] if "." in self.name else "*." + self.name

    @classmethod
    def cluster_preset(cls, backends: int = CLUSTER_BACKENDS, **options: object) -> Scenario:
        """The cluster lab: ``backends`` free backends behind a round-robin TCP HAProxy
        (80 and 443), Pebble, DNS answering every name of the lab's zone, etcd."""
        if not 1 <= backends <= MAX_BACKENDS:
            raise UsageError(f"a lab has 1 to {MAX_BACKENDS} backends, not {backends}")
        options = {key: value for key, value in options.items() if key not in ("ca", "cluster")}
        options.setdefault("mode", Mode.ROUND_ROBIN if backends > 1 else Mode.HAPROXY_TCP)
        scenario = cls(backends=(Behaviour.NONE,) * backends, ca=True, cluster=True, **options)  # type: ignore[arg-type]
        if not scenario.dns_names:
            scenario = replace(scenario, dns_names=(scenario.wildcard_zone,))
        return scenario

    @classmethod
    def parse(cls, spec: str, **options: object) -> Scenario:
        """``MODE`` or ``MODE:BEHAVIOUR,BEHAVIOUR,...`` (e.g. ``dnat:responder,404``).

        ``cluster`` or ``cluster:N`` is ``cluster_preset(N)``.
        """
        mode_text, _, backends_text = spec.partition(":")
        if mode_text == "cluster":
            if "backends" in options:  # cluster_preset's own parameter is the count
                raise UsageError(
                    "give a cluster lab's size as a count (cluster:N, --backends N), "
                    "not behaviours: its backends are free for the agents"
                )
            try:
                count = int(backends_text) if backends_text else CLUSTER_BACKENDS
            except ValueError as exc:
                raise UsageError(f"cluster:{backends_text}: give a number of backends") from exc
            return cls.cluster_preset(count, **options)
        if backends_text:
            options["backends"] = tuple(part.strip() for part in backends_text.split(","))
        return cls(mode=parse_mode(mode_text), **options)  # type: ignore[arg-type]


def scenario_from_arguments(
    spec: str,
    *,
    cluster_size: int | None = None,
    behaviours: Sequence[str] = (),
    name: str | None = None,
    token: str | None = None,
    thumbprint: str | None = None,
    dns_names: Sequence[str] = (),
    **options: object,
) -> Scenario:
    """The scenario of ``acmelb lab up SCENARIO [options]``: ``Scenario.parse`` of ``spec``.

    ``cluster_size`` (``--backends N``) is the size of the cluster lab, and only
    of it; ``behaviours`` (``--backend``, repeated) are the backends of a
    ``spec`` that names none. An empty ``name``, ``token``, ``thumbprint`` or
    ``dns_names`` keeps the default; ``options`` go to ``Scenario.parse`` as given.
    """
    if cluster_size is not None:
        if spec != "cluster":
            raise UsageError(
                "--backends N is the size of the cluster lab (acmelb lab up "
                "cluster --backends N); other labs take --backend BEHAVIOUR"
            )
        spec = f"cluster:{cluster_size}"
    for key, value in (("name", name), ("token", token), ("thumbprint", thumbprint)):
        if value:
            options[key] = value
    if dns_names:
        options["dns_names"] = tuple(dns_names)
    if behaviours:
        if ":" in spec:
            raise UsageError(
                "give the backends either in SCENARIO (MODE:B1,B2) or with --backend, not both"
            )
        options["backends"] = tuple(behaviours)
    return Scenario.parse(spec, **options)


def _dns_name(value: str) -> str:
    """A name for the lab DNS: a host name, or ``*.`` and a zone (every name below it)."""
    if value.startswith("*."):
        return "*." + normalize_name(value[2:])
    return normalize_name(value)


def parse_mode(value: str | Mode) -> Mode:
    try:
        return Mode(value)
    except ValueError as exc:
        choices = ", ".join(mode.value for mode in Mode)
        raise UsageError(f"unknown lab mode {value!r} (choose from {choices})") from exc


def parse_behaviour(value: str | Behaviour) -> Behaviour:
    if isinstance(value, Behaviour):
        return value
    if value in _BEHAVIOUR_ALIASES:
        return _BEHAVIOUR_ALIASES[value]
    try:
        return Behaviour(value)
    except ValueError as exc:
        choices = ", ".join(behaviour.value for behaviour in Behaviour)
        raise UsageError(f"unknown backend behaviour {value!r} (choose from {choices})") from exc
