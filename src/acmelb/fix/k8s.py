"""The Kubernetes-side fixes for hairpin and PROXY-protocol failures."""

from __future__ import annotations

from acmelb.errors import UsageError

PROVIDERS = ("digitalocean", "hetzner", "scaleway", "generic")
CASES = ("hairpin", "proxy-protocol")

# Annotations that make the cloud LB publish a hostname instead of its IP, so
# kube-proxy does not short-circuit the LB address inside the cluster.
HOSTNAME_ANNOTATIONS = {
    "digitalocean": ("service.beta.kubernetes.io/do-loadbalancer-hostname", "{name}"),
    "hetzner": ("load-balancer.hetzner.cloud/hostname", "{name}"),
    "scaleway": ("service.beta.kubernetes.io/scw-loadbalancer-use-hostname", '"true"'),
}


def render(
    case: str,
    provider: str,
    name: str = "www.example.com",
    service: str = "ingress-nginx-controller",
    namespace: str = "ingress-nginx",
) -> str:
    if case not in CASES:
        raise UsageError(f"--case {case!r}: choose {' or '.join(CASES)}")
    if provider not in PROVIDERS:
        raise UsageError(f"--provider {provider!r}: choose from {', '.join(PROVIDERS)}")
    parts = []
    if case == "proxy-protocol":
        parts.append(_proxy_protocol(provider, name, service, namespace))
    parts.append(_coredns_rewrite(name, service, namespace))
    parts.append(_cert_manager(case))
    return "\n---\n".join(parts)


def _proxy_protocol(provider: str, name: str, service: str, namespace: str) -> str:
    header = (
        "# PROXY protocol: inside the cluster kube-proxy routes the LB's IP straight to the\n"
        "# ingress pods, without the PROXY header they expect, so the self-check gets an empty\n"
        "# reply. Make the LB address leave the cluster:\n"
    )
    if provider in HOSTNAME_ANNOTATIONS:
        key, value = HOSTNAME_ANNOTATIONS[provider]
        return header + (
            "apiVersion: v1\n"
            "kind: Service\n"
            "metadata:\n"
            f"  name: {service}\n"
            f"  namespace: {namespace}\n"
            "  annotations:\n"
            f"    {key}: {value.format(name=name)}\n"
        )
    return header + (
        "# Kubernetes >= 1.30: have the cloud controller set ipMode: Proxy on the LB status,\n"
        "# so kube-proxy no longer short-circuits the LB IP (check your provider's docs):\n"
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        f"  name: {service}\n"
        f"  namespace: {namespace}\n"
        "status:\n"
        "  loadBalancer:\n"
        "    ingress:\n"
        "    - ip: 203.0.113.10   # your LB's address\n"
        "      ipMode: Proxy\n"
    )


def _coredns_rewrite(name: str, service: str, namespace: str) -> str:
    return (
        "# Split horizon inside the cluster (what hairpin-proxy does): resolve the public name\n"
        "# to the ingress Service, so in-cluster clients never go through the LB.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: coredns\n"
        "  namespace: kube-system\n"
        "data:\n"
        "  Corefile: |\n"
        "    .:53 {\n"
        "        errors\n"
        "        health\n"
        f"        rewrite name exact {name} {service}.{namespace}.svc.cluster.local\n"
        "        kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        "            pods insecure\n"
        "            fallthrough in-addr.arpa ip6.arpa\n"
        "        }\n"
        "        forward . /etc/resolv.conf\n"
        "        cache 30\n"
        "        loop\n"
        "        reload\n"
        "    }\n"
    )


def _cert_manager(case: str) -> str:
    why = (
        "the self-check cannot pass from inside until the LB hairpins"
        if case == "hairpin"
        else "the self-check cannot pass from inside while the PROXY path is short-circuited"
    )
    return (
        f"# cert-manager: {why}.\n"
        "# Either resolve names with public DNS servers for the self-check (controller flags):\n"
        "#   --acme-http01-solver-nameservers=8.8.8.8:53,1.1.1.1:53\n"
        "# or (cert-manager >= 1.21) skip the self-check and wait a fixed time instead:\n"
        "apiVersion: cert-manager.io/v1\n"
        "kind: ClusterIssuer\n"
        "metadata:\n"
        "  name: letsencrypt\n"
        "spec:\n"
        "  acme:\n"
        "    server: https://acme-v02.api.letsencrypt.org/directory\n"
        "    privateKeySecretRef:\n"
        "      name: letsencrypt-account\n"
        "    solvers:\n"
        "    - http01:\n"
        "        ingress:\n"
        "          ingressClassName: nginx\n"
        "      # solver-level field: skip the self-check, wait this long, then let the CA check\n"
        "      waitInsteadOfSelfCheck: 30s\n"
    )
