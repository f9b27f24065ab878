"""A cluster read from one file: the objects around each pending HTTP-01 Challenge.

Input is the List that ``kubectl get KUBECTL_KINDS -A -o json`` prints
(``KUBECTL_COMMAND``). ``parse_cluster`` wraps its items in typed views
(``Pod``, ``Service``, ``Ingress``, ``Event``, ``Challenge`` and the Gateway API kinds of
``acmelb.kube.gateway``; other kinds are skipped with a note), and
``Cluster.solver_for`` connects one Challenge to what serves it:

    Challenge -> solver Pod, Service, Ingress   (cert-manager's labels: the solver flag and
                                                 adler32 hashes of the name and the token)
              -> the Ingress class -> the controller Pods serving it (ingress-nginx, Traefik)
              -> the LoadBalancer/NodePort Service selecting those Pods (annotations, status)
              -> the Events of every one of them
    Challenge -> solver HTTPRoute (the same labels)   (cert-manager's gatewayHTTPRoute solver)
              -> its parentRefs: Gateway or ListenerSet, and the ListenerSet's Gateway
              -> the GatewayClass (controllerName: the implementation)
              -> the Service and Pods the implementation made for the Gateway (its labels)
              -> the other HTTPRoutes on those Gateways (a redirect that catches the path)

No API server is asked: everything comes from the file. Nothing here prints.
"""

from __future__ import annotations

import json
import shlex
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acmelb.errors import UsageError
from acmelb.kube.challenges import KUBECTL_COMMAND, Challenge, challenge_from_item
from acmelb.kube.gateway import (
    Gateway,
    GatewayClass,
    HTTPRoute,
    ParentRef,
    class_from_item,
    gateway_from_item,
    owned_by,
    route_from_item,
)
from acmelb.kube.meta import Meta, as_dict, as_list, meta_of, str_map

if TYPE_CHECKING:
    from acmelb.doctor.vantage import ProbeSettings


# cert-manager's labels on the solver Pod, Service and Ingress (pkg/apis/acme/v1/types.go);
# the domain and token values are decimal adler32 checksums (pkg/issuer/acme/http/pod.go).
SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
DOMAIN_LABEL = "acme.cert-manager.io/http-domain"
TOKEN_LABEL = "acme.cert-manager.io/http-token"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CHALLENGE_PATH = "/.well-known/acme-challenge/"

# Kinds read from the file; kinds the command lists and no check reads yet are passed over
# silently, any other kind is skipped with a note (a dump may hold more than it asked for).
READ_KINDS = {
    "Challenge",
    "Certificate",
    "Ingress",
    "Service",
    "Pod",
    "Event",
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "ListenerSet",
    "XListenerSet",
}
UNREAD_KINDS = {"Order", "Issuer", "ClusterIssuer", "EndpointSlice"}


def label_hash(text: str) -> str:
    """cert-manager's label value for a name or token: adler32, in decimal."""
    return str(zlib.adler32(text.encode("utf-8")))


@dataclass(frozen=True)
class Pod:
    meta: Meta
    node: str | None
    phase: str
    args: tuple[str, ...]  # every container's command and args, in order

    def arg_value(self, flag: str) -> str | None:
        """The value of ``--flag=value`` or ``--flag value`` (flags compared case-insensitively,
        as Traefik's are)."""
        wanted = flag.lower()
        for i, arg in enumerate(self.args):
            name, eq, value = arg.partition("=")
            if name.lower() == wanted and eq:
                return value
            if arg.lower() == wanted and i + 1 < len(self.args):
                return self.args[i + 1]
        return None


@dataclass(frozen=True)
class LbIngress:
    """One entry of a Service's status.loadBalancer.ingress[]."""

    ip: str | None
    hostname: str | None
    ip_mode: str | None  # "VIP" (the default) or "Proxy" (Kubernetes >= 1.30)


@dataclass(frozen=True)
class Service:
    meta: Meta
    type: str
    selector: dict[str, str]
    external_traffic_policy: str
    lb_ingress: tuple[LbIngress, ...]
    raw: dict[str, Any]  # the object as read: fixes print it back changed

    def selects(self, pod: Pod) -> bool:
        return (
            bool(self.selector)
            and pod.meta.namespace == self.meta.namespace
            and all(pod.meta.labels.get(k) == v for k, v in self.selector.items())
        )


@dataclass(frozen=True)
class IngressPath:
    host: str
    path: str
    path_type: str
    service: str | None


@dataclass(frozen=True)
class Ingress:
    meta: Meta
    class_name: str | None  # spec.ingressClassName, else the legacy annotation
    paths: tuple[IngressPath, ...]

    def serves_token(self, token: str) -> bool:
        return any(p.path == CHALLENGE_PATH + token for p in self.paths)


@dataclass(frozen=True)
class Event:
    involved_kind: str
    involved_namespace: str
    involved_name: str
    involved_uid: str
    type: str  # Normal | Warning
    reason: str
    message: str
    count: int

    def about(self, meta: Meta) -> bool:
        if self.involved_uid and meta.uid:
            return self.involved_uid == meta.uid
        return (self.involved_kind, self.involved_namespace, self.involved_name) == (
            meta.kind,
            meta.namespace,
            meta.name,
        )

    def line(self) -> str:
        times = f" (x{self.count})" if self.count > 1 else ""
        return (
            f"{self.type} {self.reason} on {self.involved_kind} "
            f"{self.involved_namespace}/{self.involved_name}{times}: {self.message}"
        )


# -- ingress controllers ------------------------------------------------------------------


@dataclass(frozen=True)
class Controller:
    """An ingress controller Pod and the Ingress classes it serves."""

    product: str  # "ingress-nginx" | "traefik"
    pod: Pod
    classes: frozenset[str]

    def serves(self, class_name: str | None) -> bool:
        # an Ingress without a class is served only by a controller told to watch those;
        # that flag is not visible here, so it counts as served
        return class_name is None or class_name in self.classes


def controller_of(pod: Pod) -> Controller | None:
    """The ingress controller this Pod runs, recognised by its chart labels or binary."""
    name = pod.meta.labels.get("app.kubernetes.io/name", "")
    component = pod.meta.labels.get("app.kubernetes.io/component", "controller")
    runs_nginx = any(a.endswith("/nginx-ingress-controller") for a in pod.args)
    if (name == "ingress-nginx" and component == "controller") or runs_nginx:
        # --ingress-class defaults to "nginx" (ingress-nginx's flags)
        return Controller(
            "ingress-nginx", pod, frozenset({pod.arg_value("--ingress-class") or "nginx"})
        )
    if name == "traefik" or pod.meta.labels.get("app") == "traefik":
        classes = {"traefik"}
        chosen = pod.arg_value("--providers.kubernetesingress.ingressclass")
        if chosen:
            classes.add(chosen)
        return Controller("traefik", pod, frozenset(classes))
    return None


# -- load balancer providers ---------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A load balancer's annotations on the Service: which turn PROXY protocol on, and which
    makes the status publish a hostname instead of the IP (None: the provider has none)."""

    name: str
    prefixes: tuple[str, ...]  # annotation prefixes that identify the provider
    proxy_annotations: tuple[str, ...]
    hostname_annotation: str | None
    hostname_value: str  # "{name}": the public name; else a literal

    def proxy_on(self, service: Service) -> bool:
        return bool(self._enabling(service))

    def enabled_by(self, service: Service) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self._enabling(service))

    def _enabling(self, service: Service) -> list[tuple[str, str]]:
        notes = service.meta.annotations
        return [
            (k, notes[k])
            for k in self.proxy_annotations
            if notes.get(k, "").strip().lower() not in ("", "false", "0")
        ]


# Verified against each provider's cloud controller documentation and source.
PROVIDERS = (
    Provider(
        "DigitalOcean",
        ("service.beta.kubernetes.io/do-loadbalancer-",),
        ("service.beta.kubernetes.io/do-loadbalancer-enable-proxy-protocol",),
        "service.beta.kubernetes.io/do-loadbalancer-hostname",
        "{name}",
    ),
    Provider(
        "Hetzner",
        ("load-balancer.hetzner.cloud/",),
        ("load-balancer.hetzner.cloud/uses-proxyprotocol",),
        "load-balancer.hetzner.cloud/hostname",
        "{name}",
    ),
    Provider(
        "Scaleway",
        ("service.beta.kubernetes.io/scw-loadbalancer-",),
        (
            "service.beta.kubernetes.io/scw-loadbalancer-proxy-protocol-v2",
            "service.beta.kubernetes.io/scw-loadbalancer-proxy-protocol-v1",
        ),
        "service.beta.kubernetes.io/scw-loadbalancer-use-hostname",
        "true",
    ),
    Provider(
        "AWS",
        ("service.beta.kubernetes.io/aws-load-balancer-",),
        ("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol",),
        None,  # an AWS LB publishes its DNS name in the status already
        "",
    ),
    Provider("MetalLB", ("metallb.universe.tf/", "metallb.io/"), (), None, ""),
)


def provider_of(service: Service) -> Provider | None:
    """The provider whose annotations the Service carries (None: none known)."""
    for provider in PROVIDERS:
        if any(k.startswith(provider.prefixes) for k in service.meta.annotations):
            return provider
    return None


def solver_classes(solver: Solver) -> list[str]:
    """The Ingress classes the solver uses: its Ingresses', else the issuer's solver config
    (spec.solver.http01.ingress.ingressClassName or .class) when no Ingress was created."""
    found = sorted({i.class_name for i in solver.ingresses if i.class_name})
    if found or solver.ingresses:
        return found
    config = as_dict(as_dict(solver.challenge.solver.get("http01")).get("ingress"))
    wanted = config.get("ingressClassName") or config.get("class")
    return [str(wanted)] if wanted else []


# -- parsing ------------------------------------------------------------------------------


def _pod(item: dict[str, Any]) -> Pod:
    spec = as_dict(item.get("spec"))
    args: list[str] = []
    for container in as_list(spec.get("containers")):
        c = as_dict(container)
        args += [str(a) for a in as_list(c.get("command")) + as_list(c.get("args"))]
    node = spec.get("nodeName")
    return Pod(
        meta=meta_of("Pod", item),
        node=str(node) if node else None,
        phase=str(as_dict(item.get("status")).get("phase") or ""),
        args=tuple(args),
    )


def _service(item: dict[str, Any]) -> Service:
    spec = as_dict(item.get("spec"))
    lb = as_dict(as_dict(item.get("status")).get("loadBalancer"))
    entries = tuple(
        LbIngress(
            ip=str(e["ip"]) if e.get("ip") else None,
            hostname=str(e["hostname"]) if e.get("hostname") else None,
            ip_mode=str(e["ipMode"]) if e.get("ipMode") else None,
        )
        for e in map(as_dict, as_list(lb.get("ingress")))
    )
    return Service(
        meta=meta_of("Service", item),
        type=str(spec.get("type") or "ClusterIP"),
        selector=str_map(spec.get("selector")),
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        lb_ingress=entries,
        raw=item,
    )


def _ingress(item: dict[str, Any]) -> Ingress:
    meta = meta_of("Ingress", item)
    spec = as_dict(item.get("spec"))
    class_name = spec.get("ingressClassName") or meta.annotations.get(CLASS_ANNOTATION)
    paths: list[IngressPath] = []
    for rule in map(as_dict, as_list(spec.get("rules"))):
        for p in map(as_dict, as_list(as_dict(rule.get("http")).get("paths"))):
            backend = as_dict(as_dict(p.get("backend")).get("service")).get("name")
            paths.append(
                IngressPath(
                    host=str(rule.get("host") or ""),
                    path=str(p.get("path") or "/"),
                    path_type=str(p.get("pathType") or ""),
                    service=str(backend) if backend else None,
                )
            )
    return Ingress(meta, str(class_name) if class_name else None, tuple(paths))


def _event(item: dict[str, Any]) -> Event:
    involved = as_dict(item.get("involvedObject") or item.get("regarding"))
    count = item.get("count") or as_dict(item.get("series")).get("count") or 1
    return Event(
        involved_kind=str(involved.get("kind") or ""),
        involved_namespace=str(involved.get("namespace") or ""),
        involved_name=str(involved.get("name") or ""),
        involved_uid=str(involved.get("uid") or ""),
        type=str(item.get("type") or "Normal"),
        reason=str(item.get("reason") or ""),
        message=str(item.get("message") or item.get("note") or ""),
        count=int(count) if isinstance(count, int) else 1,
    )


@dataclass(frozen=True)
class Certificate:
    """A cert-manager Certificate: its names, and the Gateway whose listener hostnames the
    gateway-shim made it from (its owner reference), if any."""

    meta: Meta
    dns_names: tuple[str, ...]
    owner_gateway: str | None

    @property
    def wildcard_note(self) -> str | None:
        """Why HTTP-01 can never issue it (None: it can)."""
        wild = [n for n in self.dns_names if n.startswith("*.")]
        if not wild:
            return None
        made = f" (made by the gateway-shim from Gateway {self.owner_gateway})"
        return (
            f"Certificate {self.meta.ref}{made if self.owner_gateway else ''} asks for "
            f"{', '.join(wild)}: HTTP-01 cannot validate a wildcard name, so no HTTP-01 "
            "Challenge is ever created; give the listener a hostname without '*', or use a "
            "DNS-01 solver for it"
        )


def certificate_from_item(item: dict[str, Any]) -> Certificate:
    meta = meta_of("Certificate", item)
    owners = as_list(as_dict(item.get("metadata")).get("ownerReferences"))
    gateway = next(
        (as_dict(o).get("name") for o in owners if as_dict(o).get("kind") == "Gateway"), None
    )
    names = as_list(as_dict(item.get("spec")).get("dnsNames"))
    return Certificate(
        meta,
        tuple(str(n) for n in names),
        f"{meta.namespace}/{gateway}" if gateway else None,
    )


@dataclass
class GatewayPath:
    """The Gateway API side of one Challenge: its solver HTTPRoutes, the Gateways and
    ListenerSets they name (with the Gateways of those ListenerSets), their classes, the
    Services and data-plane Pods made for those Gateways, and the other HTTPRoutes on them."""

    routes: list[HTTPRoute] = field(default_factory=list)
    parents: list[Gateway] = field(default_factory=list)  # Gateways and ListenerSets
    classes: list[GatewayClass] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    neighbours: list[HTTPRoute] = field(default_factory=list)

    def parent(self, ref: ParentRef) -> Gateway | None:
        return next((g for g in self.parents if g.key == ref.key), None)

    def owner_of(self, service: Service) -> Gateway | None:
        return next((g for g in self.parents if owned_by(g, service.meta)), None)

    def implementation(self, gateway: Gateway) -> str:
        cls = next((c for c in self.classes if c.meta.name == gateway.class_name), None)
        return cls.implementation if cls else "unknown"


@dataclass
class Cluster:
    """Every object of the file, by kind, and the kinds skipped."""

    challenges: list[Challenge] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    ingresses: list[Ingress] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    gateway_classes: list[GatewayClass] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)  # Gateways and ListenerSets
    routes: list[HTTPRoute] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> how many

    @property
    def controllers(self) -> list[Controller]:
        return [c for c in map(controller_of, self.pods) if c is not None]

    @property
    def notes(self) -> list[str]:
        """Lines about the file beyond its Challenges: wildcard Certificates HTTP-01 cannot
        issue, and the kinds nothing reads."""
        notes = [n for n in (c.wildcard_note for c in self.certificates) if n]
        if self.skipped:
            kinds = ", ".join(f"{k} ({n})" for k, n in sorted(self.skipped.items()))
            notes.append(f"skipped the objects of kinds acmelb does not read: {kinds}")
        return notes

    def solver_for(self, challenge: Challenge) -> Solver:
        """The objects connected to one Challenge."""
        hashes = {
            SOLVER_LABEL: "true",
            DOMAIN_LABEL: label_hash(challenge.dns_name),
            TOKEN_LABEL: label_hash(challenge.token or ""),
        }

        def labelled(meta: Meta) -> bool:
            return meta.namespace == challenge.namespace and all(
                meta.labels.get(k) == v for k, v in hashes.items()
            )

        ingresses = [
            i
            for i in self.ingresses
            if labelled(i.meta)
            # edit-in-place: cert-manager adds the path to the user's own Ingress
            or (i.meta.namespace == challenge.namespace and i.serves_token(challenge.token or ""))
        ]
        classes = {i.class_name for i in ingresses}
        controllers = [c for c in self.controllers if any(c.serves(k) for k in classes)]
        fronts = [s for s in self.services if s.type in ("LoadBalancer", "NodePort")]
        front = [s for s in fronts if any(s.selects(c.pod) for c in controllers)]
        routes = [
            r
            for r in self.routes
            if labelled(r.meta)
            or (r.meta.namespace == challenge.namespace and r.serves_token(challenge.token or ""))
        ]
        path = self.gateway_path(routes)
        solver = Solver(
            challenge=challenge,
            pods=[p for p in self.pods if labelled(p.meta)],
            services=[s for s in self.services if labelled(s.meta)],
            ingresses=ingresses,
            controllers=controllers,
            all_controllers=self.controllers,
            front_services=[*front, *(s for s in path.services if s in fronts)],
            gateway=path,
            gateway_api_seen=bool(self.gateways or self.gateway_classes or self.routes),
            all_gateways=self.gateways,
        )
        solver.events = [e for e in self.events if any(e.about(m) for m in solver.metas)]
        return solver

    def gateway_path(self, routes: list[HTTPRoute]) -> GatewayPath:
        """The Gateway API objects the solver routes lead to."""
        keys = {p.key for r in routes for p in r.parents}
        parents = [g for g in self.gateways if g.key in keys]
        # a ListenerSet's listeners are served by its Gateway
        keys |= {g.parent.key for g in parents if g.parent is not None}
        parents = [g for g in self.gateways if g.key in keys]
        gateways = [g for g in parents if g.key[0] == "Gateway"]
        services = [s for s in self.services if any(owned_by(g, s.meta) for g in gateways)]
        pods = [
            p
            for p in self.pods
            if any(owned_by(g, p.meta) for g in gateways) or any(s.selects(p) for s in services)
        ]
        names = {g.class_name for g in parents}
        classes = [c for c in self.gateway_classes if c.meta.name in names]
        if any(c.implementation == "Traefik" for c in classes):
            # Traefik serves its Gateways from its own pods, not from pods made per Gateway
            pods += [c.pod for c in self.controllers if c.product == "traefik"]
            services += [s for s in self.services if any(s.selects(p) for p in pods)]
        return GatewayPath(
            routes=routes,
            parents=parents,
            classes=classes,
            services=services,
            pods=pods,
            neighbours=[
                r for r in self.routes if r not in routes and any(p.key in keys for p in r.parents)
            ],
        )


@dataclass
class Solver:
    """One Challenge and the objects that serve it (empty lists: not in the file)."""

    challenge: Challenge
    pods: list[Pod]
    services: list[Service]
    ingresses: list[Ingress]
    controllers: list[Controller]  # the controllers serving the solver Ingress's class
    all_controllers: list[Controller]  # every controller in the file
    front_services: list[Service]  # LoadBalancer/NodePort Services of those controllers/Gateways
    events: list[Event] = field(default_factory=list)
    gateway: GatewayPath = field(default_factory=GatewayPath)
    gateway_api_seen: bool = False  # the file holds any Gateway API object
    from_cluster: bool = True  # False: the Challenge alone (--challenges), nothing around it
    all_gateways: list[Gateway] = field(default_factory=list)  # every Gateway in the file

    @classmethod
    def alone(cls, challenge: Challenge) -> Solver:
        """A Challenge read without its cluster (``--challenges``): its own fields only."""
        return cls(challenge, [], [], [], [], [], [], from_cluster=False)

    @property
    def challenge_meta(self) -> Meta:
        return Meta("Challenge", self.challenge.namespace, self.challenge.name)

    @property
    def metas(self) -> list[Meta]:
        objects: list[Pod | Service | Ingress | HTTPRoute] = [
            *self.pods,
            *self.services,
            *self.ingresses,
            *self.gateway.routes,
        ]
        return [
            self.challenge_meta,
            *(o.meta for o in objects),
            *(s.meta for s in self.front_services),
            *(g.meta for g in self.gateway.parents),
        ]

    @property
    def warnings(self) -> list[Event]:
        return [e for e in self.events if e.type == "Warning"]

    @property
    def data_plane(self) -> list[Pod]:
        """The pods that receive the challenge's request: ingress controllers, Gateway pods."""
        return [*(c.pod for c in self.controllers), *self.gateway.pods]


def parse_cluster(text: str, source: str = "input") -> Cluster:
    """The objects of a ``kubectl get ... -o json`` List; UsageError (one line) if the text is
    not such a List or holds no Challenge. Kinds nothing reads are counted, not refused."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise UsageError(f"{source}: not a Kubernetes List; expected `{KUBECTL_COMMAND}` output")
    cluster = Cluster()
    for i, item in enumerate(data["items"]):
        _add(cluster, item, f"{source}: items[{i}]")
    wildcards = [n for n in (c.wildcard_note for c in cluster.certificates) if n]
    if not cluster.challenges and wildcards:
        # the one cause the file can still name: a wildcard never gets an HTTP-01 Challenge
        raise UsageError(f"{source}: no cert-manager Challenge in the list: {wildcards[0]}")
    if not cluster.challenges:
        raise UsageError(
            f"{source}: no cert-manager Challenge in the list; expected `{KUBECTL_COMMAND}` output"
        )
    return cluster


def _add(cluster: Cluster, item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not an object")
    kind = item.get("kind")
    kind = kind if isinstance(kind, str) else repr(kind)  # a list is not even hashable
    if kind not in READ_KINDS:
        if kind not in UNREAD_KINDS:
            # repr(): the input's text must not reach the terminal raw (newlines, escapes)
            name = repr(str(kind)[:60])[1:-1]
            cluster.skipped[name] = cluster.skipped.get(name, 0) + 1
        return
    if kind == "Challenge":
        cluster.challenges.append(challenge_from_item(item, where))
    elif kind == "Pod":
        cluster.pods.append(_pod(item))
    elif kind == "Service":
        cluster.services.append(_service(item))
    elif kind == "Ingress":
        cluster.ingresses.append(_ingress(item))
    elif kind == "Event":
        cluster.events.append(_event(item))
    elif kind == "GatewayClass":
        cluster.gateway_classes.append(class_from_item(item))
    elif kind == "HTTPRoute":
        cluster.routes.append(route_from_item(item))
    elif kind == "Certificate":
        cluster.certificates.append(certificate_from_item(item))
    else:  # Gateway, ListenerSet, XListenerSet
        cluster.gateways.append(gateway_from_item(str(kind), item))


# -- where to probe from, and what ---------------------------------------------------------


@dataclass(frozen=True)
class ProbePlan:
    """Vantages and addresses read from the objects, and the command line that says so."""

    inside: list[str]  # command prefixes: ``kubectl exec -n NS POD --``
    resolve: list[tuple[str, str]]  # (name, LB address from the Service status)
    infos: list[str]

    def command(self, source: str) -> str:
        """The command line that probes the same way, to rerun by hand."""
        parts = ["acmelb", "diagnose", "--kube", source]
        for prefix in self.inside:
            parts += ["--inside", prefix]
        for name, address in self.resolve:
            parts += ["--resolve", f"{name}:{address}"]
        return shlex.join(parts)


def probe_plan(solvers: Iterable[Solver], user_inside: bool, user_resolve: bool) -> ProbePlan:
    """The inside vantage (a controller Pod serving the solver's class, unless the user gave
    one) and the LB address for each name (unless the user gave --resolve)."""
    inside: list[str] = []
    resolve: list[tuple[str, str]] = []
    infos: list[str] = []
    for s in solvers:
        pod = next((p for p in s.data_plane if p.phase in ("Running", "")), None)
        prefix = f"kubectl exec -n {pod.meta.namespace} {pod.meta.name} --" if pod else None
        if not user_inside and prefix and prefix not in inside:
            inside.append(prefix)
        # an LB that publishes a hostname (AWS) is found through DNS like any name
        published = [e.ip for svc in s.front_services for e in svc.lb_ingress if e.ip]
        # a Gateway's own status.addresses (GKE has no Service) come first
        published = [*(a for g in s.gateway.parents for a in g.addresses), *published]
        address = published[0] if published else None
        item = (s.challenge.dns_name, address) if address else None
        if not user_resolve and item and item not in resolve:
            resolve.append(item)
    if not inside and not user_inside:
        infos.append(
            "no ingress controller pod serving the solver's class and no Gateway pod: "
            "no inside vantage"
        )
    return ProbePlan(inside, resolve, infos)


def kube_settings(
    settings: ProbeSettings, solvers: Sequence[Solver]
) -> tuple[ProbeSettings, ProbePlan]:
    """The settings with the vantage and addresses read from the objects added (the user's
    own --inside and --resolve win), and the plan that says what was added."""
    import dataclasses
    import shutil

    found = probe_plan(solvers, bool(settings.inside), bool(settings.resolve))
    inside = found.inside
    infos = list(found.infos)
    if inside and shutil.which("kubectl") is None:
        infos.append(
            "kubectl is not installed here: no inside vantage; run the command below where "
            "kubectl reaches the cluster"
        )
        inside = []
    changed = dataclasses.replace(
        settings,
        inside=(*settings.inside, *inside),
        resolve=(*settings.resolve, *found.resolve),
    )
    # the line to rerun shows every vantage and address, the user's and the derived ones
    shown = ProbePlan([*settings.inside, *found.inside], [*settings.resolve, *found.resolve], infos)
    return changed, shown
