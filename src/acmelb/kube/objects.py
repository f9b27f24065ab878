"""A cluster read from one file: the objects around each pending HTTP-01 Challenge.

Input is the List that ``kubectl get KUBECTL_KINDS -A -o json`` prints
(``KUBECTL_COMMAND``). ``parse_cluster`` wraps its items in typed views
(``Pod``, ``Service``, ``Ingress``, ``Event`` and ``k8s.Challenge``), and
``Cluster.solver_for`` connects one Challenge to what serves it:

    Challenge -> solver Pod, Service, Ingress   (cert-manager's labels: the solver flag and
                                                 adler32 hashes of the name and the token)
              -> the Ingress class -> the controller Pods serving it (ingress-nginx, Traefik)
              -> the LoadBalancer/NodePort Service selecting those Pods (annotations, status)
              -> the Events of every one of them

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
from acmelb.kube.challenges import KUBECTL_COMMAND, KUBECTL_KINDS, Challenge, challenge_from_item

if TYPE_CHECKING:
    from acmelb.doctor.vantage import ProbeSettings


# cert-manager's labels on the solver Pod, Service and Ingress (pkg/apis/acme/v1/types.go);
# the domain and token values are decimal adler32 checksums (pkg/issuer/acme/http/pod.go).
SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
DOMAIN_LABEL = "acme.cert-manager.io/http-domain"
TOKEN_LABEL = "acme.cert-manager.io/http-token"
CLASS_ANNOTATION = "kubernetes.io/ingress.class"
CHALLENGE_PATH = "/.well-known/acme-challenge/"

# Kinds the command lists; anything else in the file means it is not that output.
KNOWN_KINDS = {
    "Challenge",
    "Order",
    "Certificate",
    "Ingress",
    "Service",
    "EndpointSlice",
    "Pod",
    "Event",
}


def label_hash(text: str) -> str:
    """cert-manager's label value for a name or token: adler32, in decimal."""
    return str(zlib.adler32(text.encode("utf-8")))


@dataclass(frozen=True)
class Meta:
    kind: str
    namespace: str
    name: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


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
    config = _dict(_dict(solver.challenge.solver.get("http01")).get("ingress"))
    wanted = config.get("ingressClassName") or config.get("class")
    return [str(wanted)] if wanted else []


# -- parsing ------------------------------------------------------------------------------


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _meta(kind: str, item: dict[str, Any]) -> Meta:
    meta = _dict(item.get("metadata"))
    return Meta(
        kind=kind,
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
    )


def _pod(item: dict[str, Any]) -> Pod:
    spec = _dict(item.get("spec"))
    args: list[str] = []
    for container in _list(spec.get("containers")):
        c = _dict(container)
        args += [str(a) for a in _list(c.get("command")) + _list(c.get("args"))]
    node = spec.get("nodeName")
    return Pod(
        meta=_meta("Pod", item),
        node=str(node) if node else None,
        phase=str(_dict(item.get("status")).get("phase") or ""),
        args=tuple(args),
    )


def _service(item: dict[str, Any]) -> Service:
    spec = _dict(item.get("spec"))
    lb = _dict(_dict(item.get("status")).get("loadBalancer"))
    entries = tuple(
        LbIngress(
            ip=str(e["ip"]) if e.get("ip") else None,
            hostname=str(e["hostname"]) if e.get("hostname") else None,
            ip_mode=str(e["ipMode"]) if e.get("ipMode") else None,
        )
        for e in map(_dict, _list(lb.get("ingress")))
    )
    return Service(
        meta=_meta("Service", item),
        type=str(spec.get("type") or "ClusterIP"),
        selector=_str_map(spec.get("selector")),
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        lb_ingress=entries,
        raw=item,
    )


def _ingress(item: dict[str, Any]) -> Ingress:
    meta = _meta("Ingress", item)
    spec = _dict(item.get("spec"))
    class_name = spec.get("ingressClassName") or meta.annotations.get(CLASS_ANNOTATION)
    paths: list[IngressPath] = []
    for rule in map(_dict, _list(spec.get("rules"))):
        for p in map(_dict, _list(_dict(rule.get("http")).get("paths"))):
            backend = _dict(_dict(p.get("backend")).get("service")).get("name")
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
    involved = _dict(item.get("involvedObject") or item.get("regarding"))
    count = item.get("count") or _dict(item.get("series")).get("count") or 1
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


@dataclass
class Cluster:
    """Every object of the file, by kind."""

    challenges: list[Challenge] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    ingresses: list[Ingress] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @property
    def controllers(self) -> list[Controller]:
        return [c for c in map(controller_of, self.pods) if c is not None]

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
        solver = Solver(
            challenge=challenge,
            pods=[p for p in self.pods if labelled(p.meta)],
            services=[s for s in self.services if labelled(s.meta)],
            ingresses=ingresses,
            controllers=controllers,
            all_controllers=self.controllers,
            front_services=front,
        )
        solver.events = [e for e in self.events if any(e.about(m) for m in solver.metas)]
        return solver


@dataclass
class Solver:
    """One Challenge and the objects that serve it (empty lists: not in the file)."""

    challenge: Challenge
    pods: list[Pod]
    services: list[Service]
    ingresses: list[Ingress]
    controllers: list[Controller]  # the controllers serving the solver Ingress's class
    all_controllers: list[Controller]  # every controller in the file
    front_services: list[Service]  # LoadBalancer/NodePort Services selecting those controllers
    events: list[Event] = field(default_factory=list)

    @classmethod
    def alone(cls, challenge: Challenge) -> Solver:
        """A Challenge read without its cluster (``--challenges``): its own fields only."""
        return cls(challenge, [], [], [], [], [], [])

    @property
    def challenge_meta(self) -> Meta:
        return Meta("Challenge", self.challenge.namespace, self.challenge.name)

    @property
    def metas(self) -> list[Meta]:
        objects: list[Pod | Service | Ingress] = [*self.pods, *self.services, *self.ingresses]
        return [
            self.challenge_meta,
            *(o.meta for o in objects),
            *(s.meta for s in self.front_services),
        ]

    @property
    def warnings(self) -> list[Event]:
        return [e for e in self.events if e.type == "Warning"]


def parse_cluster(text: str, source: str = "input") -> Cluster:
    """The objects of a ``kubectl get ... -o json`` List; UsageError (one line) if the text is
    not such a List, holds a kind the command does not list, or holds no Challenge."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source}: not JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise UsageError(f"{source}: not a Kubernetes List; expected `{KUBECTL_COMMAND}` output")
    cluster = Cluster()
    for i, item in enumerate(data["items"]):
        _add(cluster, item, f"{source}: items[{i}]")
    if not cluster.challenges:
        raise UsageError(
            f"{source}: no cert-manager Challenge in the list; expected `{KUBECTL_COMMAND}` output"
        )
    return cluster


def _add(cluster: Cluster, item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not an object")
    kind = item.get("kind")
    if kind not in KNOWN_KINDS:
        # repr(): the input's text must not reach the terminal raw (newlines, escapes)
        raise UsageError(f"{where} is a {str(kind)[:60]!r}, not one of the kinds {KUBECTL_KINDS}")
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
    # Orders, Certificates and EndpointSlices are accepted; no check reads them yet


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
        pod = next((c.pod for c in s.controllers if c.pod.phase in ("Running", "")), None)
        prefix = f"kubectl exec -n {pod.meta.namespace} {pod.meta.name} --" if pod else None
        if not user_inside and prefix and prefix not in inside:
            inside.append(prefix)
        # an LB that publishes a hostname (AWS) is found through DNS like any name
        address = next((e.ip for svc in s.front_services for e in svc.lb_ingress if e.ip), None)
        item = (s.challenge.dns_name, address) if address else None
        if not user_resolve and item and item not in resolve:
            resolve.append(item)
    if not inside and not user_inside:
        infos.append("no ingress controller pod serving the solver's class: no inside vantage")
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
