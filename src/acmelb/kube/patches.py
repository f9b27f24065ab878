"""The Kubernetes-side fixes for hairpin and PROXY-protocol failures."""

from __future__ import annotations

import copy
import json
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acmelb.errors import UsageError

if TYPE_CHECKING:
    from acmelb.kube.challenges import Challenge
    from acmelb.kube.objects import Provider, Service, Solver

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


# -- exact changes for the objects read with --kube -----------------------------------------
#
# Each builder returns a ``Patch``: the one-line kubectl command that makes the change on
# the live object and, when the object is in the file, the whole object after it (for
# ``kubectl apply -f``), or a YAML fragment of an object the file does not hold (the Issuer).


@dataclass(frozen=True)
class Patch:
    why: str
    command: str
    manifest: dict[str, Any] | None = None  # the whole object, changed
    fragment: str | None = None  # YAML of a part of an object not in the file
    notes: tuple[str, ...] = ()

    def text(self) -> str:
        """The remedy as a finding shows it: the command, then the YAML, indented."""
        lines = [self.why, f"  {self.command}", *(f"  {n}" for n in self.notes)]
        if self.manifest is not None:
            lines.append("  (`acmelb fix k8s --kube FILE` prints the whole object to apply)")
        if self.fragment:
            lines += [f"    {line}" for line in self.fragment.rstrip("\n").splitlines()]
        return "\n".join(lines)

    def document(self) -> str:
        """The patch as one YAML document: comments, then the object or the fragment."""
        lines = [f"# {self.why}", f"#   {self.command}", *(f"#   {n}" for n in self.notes)]
        body = yaml_text(self.manifest) if self.manifest is not None else self.fragment
        return "\n".join(lines) + "\n" + (body or "")


# server-set fields: an object printed back for `kubectl apply` leaves them out
_SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def clean_object(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of an object as read, without its status and server-set metadata."""
    obj = copy.deepcopy(raw)
    obj.pop("status", None)
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}  # odd input: nothing to drop, no traceback
    for key in _SERVER_FIELDS:
        meta.pop(key, None)
    notes = meta.get("annotations")
    if isinstance(notes, dict):
        notes.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


def annotate_service(service: Service, key: str, value: str, why: str) -> Patch:
    obj = clean_object(service.raw)
    obj.setdefault("metadata", {}).setdefault("annotations", {})[key] = value
    command = shlex.join(
        [
            "kubectl",
            "annotate",
            "service",
            "-n",
            service.meta.namespace,
            service.meta.name,
            f"{key}={value}",
        ]
    )
    return Patch(why, command, manifest=obj)


def hostname_patch(service: Service, provider: Provider, name: str) -> Patch | None:
    """The provider's hostname annotation on the Service (None: the provider has none)."""
    if provider.hostname_annotation is None:
        return None
    value = provider.hostname_value.format(name=name)
    patch = annotate_service(
        service,
        provider.hostname_annotation,
        value,
        f"Make the {provider.name} LB publish a hostname, so kube-proxy stops short-circuiting "
        "its IP:",
    )
    notes = (
        (f"({value} must resolve to the LB's address)",)
        if "{name}" in provider.hostname_value
        else ()
    )
    return Patch(patch.why, patch.command, patch.manifest, notes=notes)


def traffic_policy_patch(service: Service) -> Patch:
    obj = clean_object(service.raw)
    obj.setdefault("spec", {})["externalTrafficPolicy"] = "Cluster"
    body = json.dumps({"spec": {"externalTrafficPolicy": "Cluster"}}, separators=(",", ":"))
    command = shlex.join(
        ["kubectl", "patch", "service", "-n", service.meta.namespace, service.meta.name, "-p", body]
    )
    return Patch(
        "Let every node pass the traffic to a controller pod (client source IPs then need "
        "PROXY protocol or X-Forwarded-For; or run the controller on every node as a DaemonSet):",
        command,
        manifest=obj,
    )


def remove_annotation_patch(kind: str, namespace: str, name: str, key: str) -> Patch:
    command = shlex.join(["kubectl", "annotate", kind.lower(), "-n", namespace, name, f"{key}-"])
    return Patch(f"Remove {key} from the {kind} that holds the solver's path:", command)


def issuer_fragment(challenge: Challenge, solver_part: dict[str, Any], why: str) -> Patch:
    """A change to the issuer's solver, which the file does not hold: ``kubectl edit`` and the
    fragment of spec.acme.solvers[] to put there."""
    kind, _, rest = (challenge.issuer or "ClusterIssuer/ISSUER").partition("/")
    namespace, _, name = rest.rpartition("/")
    where = ["-n", namespace] if namespace else []
    command = shlex.join(["kubectl", "edit", kind.lower(), *where, name])
    fragment = yaml_text({"spec": {"acme": {"solvers": [solver_part]}}})
    return Patch(why, command, fragment=fragment)


# -- the patches for each static finding (the checks show them; `fix k8s --kube` prints them) --

PATH_TYPE_EXACT_GATE = "ACMEHTTP01IngressPathTypeExact"


def not_presented_patches(solver: Solver, said: str) -> list[Patch]:
    ch = solver.challenge
    if "HTTPRoute" in said and ("parentRefs" in said or "sectionName" in said):
        return [route_refused_patch(ch)]
    if "pathType" in said or "path type" in said.lower():
        # cert-manager >= 1.18 creates the solver path with pathType Exact, which ingress-nginx's
        # strict path validation rejects (cert-manager's feature gate comment says to disable it)
        return [
            Patch(
                "cert-manager's solver path (pathType Exact) was rejected by the ingress "
                "controller's validation: turn the feature gate off on cert-manager's controller",
                f"helm upgrade cert-manager jetstack/cert-manager -n cert-manager --reuse-values "
                f"--set featureGates={PATH_TYPE_EXACT_GATE}=false",
                notes=(
                    f"(or add --feature-gates={PATH_TYPE_EXACT_GATE}=false to the controller's "
                    "args); cert-manager retries presenting on its own",
                ),
            )
        ]
    return [
        Patch(
            "Fix what the events name, then cert-manager presents the solver again on its own; "
            "to watch it:",
            shlex.join(["kubectl", "describe", "challenge", "-n", ch.namespace, ch.name]),
        )
    ]


def route_refused_patch(challenge: Challenge) -> Patch:
    """The API server refused the solver HTTPRoute over its parentRefs (two to one Gateway
    without sectionName, cert-manager 1.20.0): the issuer's parentRefs, each with one."""
    http01 = challenge.solver.get("http01")
    route = http01.get("gatewayHTTPRoute") if isinstance(http01, dict) else None
    refs = route.get("parentRefs") if isinstance(route, dict) else None
    fixed = [
        {**ref, "sectionName": ref.get("sectionName") or "http"}
        for ref in (refs if isinstance(refs, list) else [])
        if isinstance(ref, dict)
    ]
    # two refs to one parent differ by their sectionName only: keep one per listener
    unique = list({json.dumps(ref, sort_keys=True): ref for ref in fixed}.values())
    return issuer_fragment(
        challenge,
        {"http01": {"gatewayHTTPRoute": {"parentRefs": unique or [{"name": "GATEWAY"}]}}},
        "The API server refused the solver's HTTPRoute over its parentRefs: give each of "
        "the issuer's parentRefs the sectionName of the HTTP listener on port 80 (the "
        "listener's name; 'http' is a guess), one per listener:",
    )


def proxy_shortcut_patches(
    service: Service, provider: Provider, challenge: Challenge
) -> list[Patch]:
    patch = hostname_patch(service, provider, challenge.dns_name)
    if patch is not None:
        return [patch]
    return [
        Patch(
            f"{provider.name} has no hostname annotation: the cloud controller must set "
            "status.loadBalancer.ingress[].ipMode: Proxy (Kubernetes >= 1.30); check with:",
            shlex.join(
                [
                    "kubectl",
                    "get",
                    "service",
                    "-n",
                    service.meta.namespace,
                    service.meta.name,
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress}",
                ]
            ),
        ),
        issuer_fragment(
            challenge,
            {
                "http01": challenge.solver.get("http01") or {"ingress": {}},
                "waitInsteadOfSelfCheck": "30s",
            },
            "Until then, if the CA passes through the LB, let cert-manager skip the self-check "
            "(cert-manager >= 1.21; the field sits beside http01 in the solver):",
        ),
    ]


def issuer_edit(challenge: Challenge, why: str) -> Patch:
    """``kubectl edit`` of the challenge's issuer, for a change described in ``why``."""
    kind, _, rest = (challenge.issuer or "ClusterIssuer/ISSUER").partition("/")
    namespace, _, name = rest.rpartition("/")
    where = ["-n", namespace] if namespace else []
    return Patch(why, shlex.join(["kubectl", "edit", kind.lower(), *where, name]))


def redirect_patches(solver: Solver, evidence: list[str]) -> list[Patch]:
    patches: list[Patch] = []
    for ing in solver.ingresses:
        for key in ing.meta.annotations:
            if any(key in line for line in evidence if line.startswith(f"Ingress {ing.meta.ref}:")):
                patches.append(
                    remove_annotation_patch("Ingress", ing.meta.namespace, ing.meta.name, key)
                )
    if patches:
        patches.append(
            issuer_edit(
                solver.challenge,
                "and delete it from the issuer's spec.acme.solvers[].http01.ingress."
                "ingressTemplate.metadata.annotations, or the next solver Ingress has it again:",
            )
        )
    redirecting = [
        c.pod.meta.namespace
        for c in solver.controllers
        if any(line.startswith(f"controller pod {c.pod.meta.ref}:") for line in evidence)
    ]
    if redirecting:
        patches.append(
            Patch(
                "Traefik redirects the whole entrypoint, the challenge path included: drop the "
                "entrypoint redirection (Helm: ports.web.redirectTo, or ports.web.redirections "
                "in newer charts) and put a redirect middleware on the application Ingresses "
                "only:",
                shlex.join(
                    [
                        "helm",
                        "upgrade",
                        "traefik",
                        "traefik/traefik",
                        "-n",
                        redirecting[0],
                        "--reuse-values",
                        "--set",
                        "ports.web.redirectTo=null",
                    ]
                ),
            )
        )
    return patches


def ingress_class_patches(solver: Solver, served: str) -> list[Patch]:
    return [
        issuer_fragment(
            solver.challenge,
            {"http01": {"ingress": {"ingressClassName": served}}},
            f"Give the issuer's HTTP-01 solver a class a controller serves ({served}):",
        )
    ]


def self_check_skipped_patches(solver: Solver) -> list[Patch]:
    return [
        issuer_edit(
            solver.challenge,
            "Fix the failing path first (the other findings); until the CA's view passes, "
            "delete waitInsteadOfSelfCheck from the issuer's solver so the self-check guards "
            "the CA:",
        )
    ]


def remedy(patches: list[Patch]) -> str:
    return "\n".join(p.text() for p in patches)


def remedy_not_presented(solver: Solver, said: str) -> str:
    return remedy(not_presented_patches(solver, said))


def remedy_proxy_shortcut(service: Service, provider: Provider, challenge: Challenge) -> str:
    return remedy(proxy_shortcut_patches(service, provider, challenge))


def remedy_traffic_policy(service: Service) -> str:
    return remedy([traffic_policy_patch(service)])


def remedy_redirect(solver: Solver, evidence: list[str]) -> str:
    return remedy(redirect_patches(solver, evidence))


def remedy_ingress_class(solver: Solver, served: str) -> str:
    return remedy(ingress_class_patches(solver, served))


def remedy_self_check_skipped(solver: Solver) -> str:
    return remedy(self_check_skipped_patches(solver))


# -- a small YAML writer: block style, every string that could read as something else quoted --

_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def yaml_text(value: Any, indent: int = 0) -> str:
    """``value`` (dicts, lists, scalars) as block-style YAML text."""
    return "".join(line + "\n" for line in _yaml_lines(value, indent))


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(item, dict | list) and item:
                lines += [head, *_yaml_lines(item, indent + 2)]
            else:
                empty = "{}" if isinstance(item, dict) else "[]"
                lines.append(f"{head} {empty if isinstance(item, dict | list) else _scalar(item)}")
        return lines
    if isinstance(value, list):
        for item in value:
            inner = _yaml_lines(item, indent + 2)
            if isinstance(item, dict | list) and item:
                lines += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
            elif isinstance(item, dict | list):
                lines.append(f"{pad}- {'{}' if isinstance(item, dict) else '[]'}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
        return lines
    return [pad + _scalar(value)]
