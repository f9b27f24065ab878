"""Findings: what a diagnosis reports (the table in spec/diagnosis.md).

A ``Finding`` is data: a stable ``Code``, a ``Severity``, a title, an
explanation for a person, a concrete remedy, the vantages it was seen from
and the evidence lines.  The CLI renders findings; nothing here prints.
"""

from __future__ import annotations

import enum
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# A well-formed key authorization: token "." base64url(SHA-256 thumbprint) (RFC 8555 8.1).
KEYAUTH_RE = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$")


class Severity(enum.Enum):
    FATAL = "fatal"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def failing(self) -> bool:
        return self in (Severity.FATAL, Severity.ERROR)


_RANK = {Severity.FATAL: 0, Severity.ERROR: 1, Severity.WARNING: 2, Severity.INFO: 3}


class Code(enum.Enum):
    """Every finding code of the contract; values are the public names."""

    INVALID_NAME = "invalid-name"
    DNS_NO_ADDRESS = "dns-no-address"
    DNS_LOOKUP_FAILED = "dns-lookup-failed"
    DNS_RESERVED_ADDRESS = "dns-reserved-address"
    DNS_SPLIT_HORIZON = "dns-split-horizon"
    CAA_FORBIDS = "caa-forbids"
    PORT_80_TIMEOUT = "port-80-timeout"
    PORT_80_REFUSED = "port-80-refused"
    EMPTY_REPLY = "empty-reply"
    IPV6_UNREACHABLE = "ipv6-unreachable"
    NAT_LOOPBACK = "nat-loopback"
    PROXY_PROTOCOL_REQUIRED = "proxy-protocol-required"
    LB_INTERCEPTS_CHALLENGE = "lb-intercepts-challenge"
    THUMBPRINT_MISMATCH = "thumbprint-mismatch"
    CHALLENGE_NOT_FOUND = "challenge-not-found"
    HTTP_ERROR_STATUS = "http-error-status"
    WRONG_CONTENT = "wrong-content"
    BODY_TOO_LARGE = "body-too-large"
    TRAILING_WHITESPACE = "trailing-whitespace"
    INCONSISTENT_BACKENDS = "inconsistent-backends"
    REDIRECT_BAD_STATUS = "redirect-bad-status"
    REDIRECT_BAD_TARGET = "redirect-bad-target"
    REDIRECT_LOOP = "redirect-loop"
    REDIRECT_TOO_MANY = "redirect-too-many"
    REDIRECT_HTTPS = "redirect-https"
    HTTP_ON_HTTPS_PORT = "http-on-https-port"
    MIDDLEBOX_FINGERPRINT = "middlebox-fingerprint"
    VANTAGE_UNUSABLE = "vantage-unusable"
    # Added under "a new code may be added when a real failure mode needs one":
    # the remote side answered something that is not HTTP at all, or the
    # whole exchange did not finish in time after connecting.
    READ_TIMEOUT = "read-timeout"

    @property
    def default_severity(self) -> Severity:
        return DEFAULT_SEVERITY[self]


DEFAULT_SEVERITY: dict[Code, Severity] = {
    Code.INVALID_NAME: Severity.FATAL,
    Code.DNS_NO_ADDRESS: Severity.FATAL,
    Code.DNS_LOOKUP_FAILED: Severity.FATAL,
    Code.DNS_RESERVED_ADDRESS: Severity.ERROR,
    Code.DNS_SPLIT_HORIZON: Severity.WARNING,
    Code.CAA_FORBIDS: Severity.FATAL,
    Code.PORT_80_TIMEOUT: Severity.ERROR,
    Code.PORT_80_REFUSED: Severity.ERROR,
    Code.EMPTY_REPLY: Severity.ERROR,
    Code.IPV6_UNREACHABLE: Severity.ERROR,
    Code.NAT_LOOPBACK: Severity.ERROR,
    Code.PROXY_PROTOCOL_REQUIRED: Severity.ERROR,
    Code.LB_INTERCEPTS_CHALLENGE: Severity.ERROR,
    Code.THUMBPRINT_MISMATCH: Severity.ERROR,
    Code.CHALLENGE_NOT_FOUND: Severity.ERROR,
    Code.HTTP_ERROR_STATUS: Severity.ERROR,
    Code.WRONG_CONTENT: Severity.ERROR,
    Code.BODY_TOO_LARGE: Severity.ERROR,
    Code.TRAILING_WHITESPACE: Severity.WARNING,
    Code.INCONSISTENT_BACKENDS: Severity.ERROR,
    Code.REDIRECT_BAD_STATUS: Severity.ERROR,
    Code.REDIRECT_BAD_TARGET: Severity.ERROR,
    Code.REDIRECT_LOOP: Severity.ERROR,
    Code.REDIRECT_TOO_MANY: Severity.ERROR,
    Code.REDIRECT_HTTPS: Severity.INFO,
    Code.HTTP_ON_HTTPS_PORT: Severity.ERROR,
    Code.MIDDLEBOX_FINGERPRINT: Severity.WARNING,
    Code.VANTAGE_UNUSABLE: Severity.WARNING,
    Code.READ_TIMEOUT: Severity.ERROR,
}


@dataclass
class Finding:
    code: Code
    title: str
    explanation: str
    remedy: str
    severity: Severity | None = None
    vantages: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.severity is None:
            self.severity = self.code.default_severity

    @property
    def sev(self) -> Severity:
        assert self.severity is not None
        return self.severity

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "severity": self.sev.value,
            "title": self.title,
            "explanation": self.explanation,
            "remedy": self.remedy,
            "vantages": list(self.vantages),
            "evidence": list(self.evidence),
        }


def sort_findings(findings: list[Finding]) -> list[Finding]:
    order = list(Code)
    return sorted(findings, key=lambda f: (f.sev.rank, order.index(f.code)))


# ---------------------------------------------------------------------------
# Remedy texts.  Functions so that the evidence (addresses, names) fills them.


def remedy_nat_loopback(public: list[str], backends: list[str], cluster: bool,
                        name: str = "NAME", inside: str | None = None) -> str:
    pub = public[0] if public else "PUBLIC_IP"
    back = backends[0] if backends else "BACKEND_IP"
    subnet = (back.rsplit(".", 1)[0] + ".0/24") if backends and ":" not in back else "SUBNET"
    verify = f" --verify-from {shlex.quote(inside)}" if inside else ""
    lines = [
        "Give the path from inside a route to the public address, in one of these ways:",
        "1. Enable NAT loopback (hairpin NAT) on the load balancer or router. On a Linux",
        "   router that DNATs port 80, add the hairpin SNAT next to the DNAT rule:",
        f"     iptables -t nat -A PREROUTING -d {pub} -p tcp --dport 80 "
        f"-j DNAT --to-destination {back}:80",
        f"     iptables -t nat -A POSTROUTING -s {subnet} -d {back} -p tcp --dport 80 "
        "-j MASQUERADE",
        "   or let acmelb render, apply and verify them (run it on the LB):",
        f"     acmelb fix nat-loopback --vip {pub} --backend {back} --subnet {subnet} "
        f"--apply{verify}",
        "2. Or answer the name with the internal address inside (split-horizon DNS), so that",
        f"   inside clients go straight to {back}.",
    ]
    if cluster:
        lines += [
            "3. In Kubernetes: a CoreDNS rewrite that points the name at the ingress Service",
            "   (what hairpin-proxy does), in the Corefile:",
            f"     rewrite name {name} ingress-nginx-controller.ingress-nginx.svc.cluster.local",
            "   (`acmelb fix k8s --case hairpin` prints it), or make cert-manager skip the",
            "   self-check: `waitInsteadOfSelfCheck` on the HTTP-01 solver (cert-manager",
            "   >= 1.21), or let it resolve through public DNS with the controller flag",
            "   --acme-http01-solver-nameservers=8.8.8.8:53 if the inside DNS differs.",
        ]
    return "\n".join(lines)


def remedy_tcp_passthrough(vip: str = "VIP", backends: list[str] | None = None) -> str:
    backs = backends or ["BACKEND"]
    servers = [f"              server web{i} {b}:80" for i, b in enumerate(backs, start=1)]
    return "\n".join(
        [
            "Switch the load balancer for port 80 to TCP pass-through (layer 4) so that",
            "/.well-known/acme-challenge/ reaches the backend that holds the token:",
            "  HAProxy:  frontend http-in",
            "              mode tcp",
            f"              bind {vip}:80",
            "              default_backend web",
            "            backend web",
            "              mode tcp",
            *servers,
            f"  nginx:    stream {{ server {{ listen {vip}:80; proxy_pass {backs[0]}:80; }} }}",
            "Or, if it must stay in HTTP mode, route /.well-known/acme-challenge/ to the",
            "backend and turn off the device's own ACME/certificate feature for this name.",
            f"(`acmelb fix lb-tcp --haproxy --vip {vip} --backend {backs[0]}` prints it too.)",
        ]
    )


def remedy_proxy_protocol(name: str = "NAME") -> str:
    return "\n".join(
        [
            "The backend expects a PROXY protocol header, which only the load balancer adds;",
            "clients inside reach the backend without passing through the LB. Fix one of:",
            "- Kubernetes >= 1.30: set status.loadBalancer.ingress[].ipMode: Proxy on the",
            "  Service (the cloud controller does it when supported) so that kube-proxy stops",
            "  short-circuiting the LB address;",
            "- give the LB a hostname instead of an IP in the Service status with the",
            "  provider's annotation:",
            f"    service.beta.kubernetes.io/do-loadbalancer-hostname: {name}  (DigitalOcean)",
            f"    load-balancer.hetzner.cloud/hostname: {name}  (Hetzner)",
            '    service.beta.kubernetes.io/scw-loadbalancer-use-hostname: "true"  (Scaleway)',
            "  (`acmelb fix k8s --case proxy-protocol --provider ...` prints the manifest);",
            "- or have cert-manager skip the self-check: waitInsteadOfSelfCheck on the HTTP-01",
            "  solver (cert-manager >= 1.21).",
        ]
    )


def remedy_split_horizon(inside: list[str], outside: list[str]) -> str:
    return "\n".join(
        [
            f"Inside, the name resolves to {', '.join(inside) or 'nothing'}; outside to "
            f"{', '.join(outside) or 'nothing'}.",
            "If the inside answer is deliberate, make sure the inside address serves the",
            "challenge too. cert-manager checks from inside: point its self-check at public",
            "DNS with --acme-http01-solver-nameservers=1.1.1.1:53 (controller flag), or use",
            "a CoreDNS rewrite so that inside and outside agree.",
        ]
    )
