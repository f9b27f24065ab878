"""Findings: what a diagnosis reports (codes and severities: ``acmelb.doctor.codes``).

A ``Finding`` is data: a stable ``Code``, a ``Severity``, a title, an
explanation for a person, a concrete remedy, the vantages it was seen from
and the evidence lines.  The CLI renders findings; nothing here prints.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from acmelb.doctor.codes import DEFAULT_SEVERITY, Code, Severity

__all__ = ["DEFAULT_SEVERITY", "KEYAUTH_RE", "Code", "Finding", "Severity", "sort_findings"]

# A well-formed key authorization: token "." base64url(SHA-256 thumbprint) (RFC 8555 8.1).
KEYAUTH_RE = re.compile(r"^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{43})$")


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


_CODE_ORDER = {code: i for i, code in enumerate(Code)}


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.sev.rank, _CODE_ORDER[f.code]))


# ---------------------------------------------------------------------------
# Remedy texts.  Functions so that the evidence (addresses, names) fills them.


def remedy_nat_loopback(
    public: list[str],
    backends: list[str],
    cluster: bool,
    name: str = "NAME",
    inside: str | None = None,
) -> str:
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
