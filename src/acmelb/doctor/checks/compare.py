"""Stage COMPARE: what differs between vantages, attempts and headers.

nat-loopback, proxy-protocol-required, dns-split-horizon and
inconsistent-backends need more than one probe to be told apart; findings
that only the inside sees (cert-manager's self-check) are reported here too.
"""

from __future__ import annotations

from acmelb.doctor.checks.answers import le_failures
from acmelb.doctor.checks.base import (
    GO_SPACE,
    Attempt,
    Context,
    Target,
    VantageRun,
    ca_attempts,
    cm_verdict,
    corroborated,
    dedupe,
    describe,
    le_verdict,
    max_remote_failures,
)
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import (
    Code,
    Finding,
    Severity,
    remedy_nat_loopback,
    remedy_proxy_protocol,
    remedy_split_horizon,
)

NO_ANSWER = (
    "connect-timeout",
    "connect-refused",
    "connect-error",
    "reset",
    "empty-reply",
    "read-timeout",
    "total-timeout",
    "bad-response",
)


def _usable(a: Attempt) -> bool:
    f = a.final
    return f.outcome == "response" and f.status is not None and f.status < 500 and f.status != 400


def _proxy_rescued(
    run: VantageRun, address: str, target: str, challenge: Target | None = None
) -> Attempt | None:
    for a in run.attempts:
        if a.proxy and a.address == address and a.target == target and _rescues(a, challenge):
            return a
    return None


def _rescues(a: Attempt, challenge: Target | None) -> bool:
    """The request with a PROXY header got a real answer: with our token, anything but a
    404 (a 404 with the header is no rescue: the path lacks the token either way, and
    the CA would fail on it too); with a random token, or when only the listener matters
    (NAT loopback), any answer of the web server."""
    if not _usable(a):
        return False
    if challenge is None or challenge.key_authorization is None:
        return True
    return a.final.status != 404


def _outside_addresses(ctx: Context) -> list[str]:
    addrs: list[str] = []
    if ctx.dns is not None:
        addrs += ctx.dns.addresses
    for r in ctx.outside:
        addrs += [a for a in r.resolved if a not in addrs]
    return addrs


def _backend_addresses(ctx: Context) -> list[str]:
    out: list[str] = []
    for r in ctx.inside:
        for a in r.local_attempts:
            ok = a.final.outcome == "response" and not a.address.startswith("127.")
            if ok and a.address not in out:
                out.append(a.address)
    return out


def _prefix(label: str) -> str | None:
    """The command prefix of a remote vantage label (``inside:ssh node1`` -> ``ssh node1``)."""
    prefix = label.split(":", 1)[1]
    return None if prefix == "local" else prefix


class ProxyProtocol:
    codes = (Code.PROXY_PROTOCOL_REQUIRED,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return any(a.proxy for r in ctx.runs for a in r.attempts)

    def run(self, ctx: Context) -> list[Finding]:
        ev: list[str] = []
        vantages: list[str] = []
        for run in ctx.runs:
            for a in run.attempts:
                if a.proxy or _usable(a) or a.final.outcome not in (*NO_ANSWER, "response"):
                    continue
                if a.redirects:
                    continue  # the first hop answered without a header: no PROXY needed there
                rescue = _proxy_rescued(run, a.address, a.target, ctx.target)
                if rescue is None or a.number != 1:
                    continue
                ev += [describe(a), describe(rescue)]
                if run.label not in vantages:
                    vantages.append(run.label)
        if not ev:
            return []
        inside_only = all(v.startswith("inside:") for v in vantages) and bool(ctx.outside)
        expl = (
            "Without a PROXY protocol header the endpoint gives no valid answer; the same "
            "request with a PROXY v1 header succeeds. The backend expects PROXY protocol, "
            "which only the load balancer adds"
        )
        if inside_only:
            expl += (
                ", and from inside the path bypasses the load balancer (in Kubernetes "
                "kube-proxy short-circuits the LB's IP to the Service). Outside clients, "
                "the CA included, go through the LB and succeed; cert-manager's "
                "self-check from inside fails."
            )
            remedy = remedy_proxy_protocol(ctx.target.name)
        else:
            expl += ". Here even the path the CA takes arrives without the header."
            remedy = (
                "Make the load balancer send PROXY protocol to this backend (HAProxy: "
                "`server web1 BACKEND:80 send-proxy`; nginx stream: `proxy_protocol "
                "on;`), or turn off `accept-proxy`/`proxy_protocol` on the backend's "
                "port-80 listener.\n" + remedy_proxy_protocol(ctx.target.name)
            )
        return [
            Finding(
                Code.PROXY_PROTOCOL_REQUIRED,
                "the backend requires PROXY protocol and this path bypasses the LB",
                expl,
                remedy,
                vantages=vantages,
                evidence=dedupe(ev),
            )
        ]


class NatLoopback:
    codes = (Code.NAT_LOOPBACK,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.outside) and bool(ctx.inside)

    def run(self, ctx: Context) -> list[Finding]:
        reached = {a.address for r in ctx.outside for a in r.public_attempts if not a.dial_error}
        if not reached:
            return []
        ev: list[str] = []
        vantages: list[str] = []
        public: list[str] = []
        for run in ctx.inside:
            for a in run.public_attempts:
                if a.address not in reached or a.final.outcome not in NO_ANSWER:
                    continue
                if a.redirects or _proxy_rescued(run, a.address, "public") is not None:
                    continue
                ev.append(describe(a))
                if run.label not in vantages:
                    vantages.append(run.label)
                if a.address not in public:
                    public.append(a.address)
        if not ev:
            return []
        outside_ok = [
            describe(a)
            for r in ctx.outside
            for a in r.public_attempts
            if a.address in public and not a.dial_error
        ]
        backends = _backend_addresses(ctx)
        return [
            Finding(
                Code.NAT_LOOPBACK,
                "no NAT loopback: inside cannot reach the public address",
                f"From outside, {', '.join(public)} port 80 answers; from behind the load "
                "balancer the same address times out or is refused. The LB or router forwards "
                "port 80 from outside but does not hairpin connections that start inside "
                "(NAT loopback). The CA validates from outside and may pass, but checks run "
                "from inside (cert-manager's self-check, monitoring) fail.",
                remedy_nat_loopback(
                    public,
                    backends,
                    ctx.cluster,
                    ctx.target.name,
                    _prefix(vantages[0]) if vantages else None,
                ),
                vantages=vantages,
                evidence=dedupe(ev, 4) + dedupe(outside_ok, 2),
            )
        ]


class SplitHorizon:
    codes = (Code.DNS_SPLIT_HORIZON,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.inside) and (bool(ctx.outside) or ctx.dns is not None)

    def run(self, ctx: Context) -> list[Finding]:
        outside = _outside_addresses(ctx)
        out: list[Finding] = []
        for run in ctx.inside:
            if run.result is None or (run.result.get("resolution") or {}).get("source") in (
                "given",
                "override",
            ):
                continue
            inside = run.resolved
            if set(inside) == set(outside):
                continue
            ev = [
                f"outside: {', '.join(outside) or 'no address'}",
                f"{run.label}: {', '.join(inside) or run.resolution_error or 'no address'}",
            ]
            # Resolving to nothing inside means the self-check cannot even start.
            severity = None if inside else Severity.ERROR
            out.append(
                Finding(
                    Code.DNS_SPLIT_HORIZON,
                    "inside and outside resolve the name differently",
                    f"{run.label} resolves {ctx.target.name} to "
                    f"{', '.join(inside) or 'nothing'}, while outside it is "
                    f"{', '.join(outside) or 'nothing'}. The CA sees the outside answer; "
                    "cert-manager's self-check sees the inside one.",
                    remedy_split_horizon(inside, outside),
                    severity=severity,
                    vantages=[run.label],
                    evidence=ev,
                )
            )
        return out


def _signature(a: Attempt) -> str:
    f = a.final
    if f.outcome != "response":
        return f.outcome
    return f"HTTP {f.status} {f.body.strip()[:60]!r}"


class Consistency:
    codes = (Code.INCONSISTENT_BACKENDS,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return any(len(r.public_attempts) > 1 for r in ctx.runs)

    def run(self, ctx: Context) -> list[Finding]:
        ev: list[str] = []
        vantages: list[str] = []
        for run in ctx.primary + [r for r in ctx.inside if r not in ctx.primary]:
            by_addr: dict[str, list[Attempt]] = {}
            for a in run.public_attempts:
                by_addr.setdefault(a.address, []).append(a)
            for addr, attempts in by_addr.items():
                sigs: dict[str, list[int]] = {}
                for a in attempts:
                    sigs.setdefault(_signature(a), []).append(a.number)
                if len(sigs) < 2:
                    continue
                vantages.append(run.label)
                for sig, numbers in sigs.items():
                    ev.append(
                        f"{addr} from {run.label}, attempt(s) {', '.join(map(str, numbers))}: {sig}"
                    )
        if not ev:
            return []
        return [
            Finding(
                Code.INCONSISTENT_BACKENDS,
                "repeated probes get different answers",
                "The same request to the same address gets different answers: the load "
                "balancer spreads requests over backends and not all of them have the token "
                "(or serve the same thing). The CA validates from several places at once, and "
                "each may land on a different backend.",
                "Make every backend answer the challenge: share the webroot (NFS, object "
                "storage), use a stateless responder (token.THUMBPRINT for any token), route "
                "/.well-known/acme-challenge/ to a single backend on the LB, or run acmelb's "
                "responder where the LB can reach it.",
                vantages=vantages,
                evidence=ev[:8],
            )
        ]


class InsideOnly:
    """What cert-manager's self-check (inside) gets wrong while the outside is fine."""

    codes = (
        Code.CHALLENGE_NOT_FOUND,
        Code.HTTP_ERROR_STATUS,
        Code.WRONG_CONTENT,
        Code.THUMBPRINT_MISMATCH,
        Code.PORT_80_TIMEOUT,
        Code.PORT_80_REFUSED,
        Code.EMPTY_REPLY,
        Code.READ_TIMEOUT,
        Code.HTTP_ON_HTTPS_PORT,
        Code.MALFORMED_RESPONSE,
        Code.PORT_443_REFUSED,
        Code.PORT_443_TIMEOUT,
        Code.HTTPS_HOP_FAILED,
    )
    stage = Stage.COMPARE
    # their findings already explain what the inside gets wrong: then this one is quiet
    after: tuple[type, ...] = (NatLoopback, ProxyProtocol)

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.inside) and bool(ctx.outside)

    def run(self, ctx: Context) -> list[Finding]:
        if ctx.has(Code.NAT_LOOPBACK) or ctx.has(Code.PROXY_PROTOCOL_REQUIRED):
            return []
        outside_codes = set(le_failures(ctx))
        reached = {a.address for r in ctx.outside for a in r.public_attempts if not a.dial_error}
        grouped: dict[Code, list[Attempt]] = {}
        for run in ctx.inside:
            for a in run.public_attempts:
                v = cm_verdict(a, ctx.target)
                if v.ok or v.code is None or v.code in outside_codes:
                    continue
                if v.code in (Code.TRAILING_WHITESPACE, Code.BODY_TOO_LARGE):
                    continue
                if a.address in reached and a.final.outcome in NO_ANSWER:
                    continue  # nat-loopback territory, decided above
                grouped.setdefault(v.code, []).append(a)
        out: list[Finding] = []
        for code, attempts in grouped.items():
            vantages = sorted({a.vantage for a in attempts})
            out.append(
                Finding(
                    code,
                    f"from inside only: {code.value.replace('-', ' ')}",
                    "Outside probes (what the CA sees) are fine here, but from inside the "
                    f"request fails ({cm_verdict(attempts[0], ctx.target).detail}). "
                    "cert-manager's self-check runs from inside and will not let the CA "
                    "validate until this passes.",
                    "Make the inside path reach the same responder as the outside path "
                    "(same DNS answer, same LB), or set waitInsteadOfSelfCheck on the HTTP-01 "
                    "solver (cert-manager >= 1.21) once outside validation is known to work.",
                    vantages=vantages,
                    evidence=dedupe([describe(a) for a in attempts], 4),
                )
            )
        return out


class TrailingWhitespace:
    codes = (Code.TRAILING_WHITESPACE,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return ctx.target.key_authorization is not None

    def run(self, ctx: Context) -> list[Finding]:
        key = ctx.target.key_authorization
        hits = [
            a
            for r in ctx.runs
            for a in r.attempts
            if a.final.status == 200
            and a.final.body != key
            and a.final.body.rstrip(GO_SPACE) == key
        ]
        if not hits:
            return []
        return [
            Finding(
                Code.TRAILING_WHITESPACE,
                "the key authorization comes with trailing whitespace",
                f"The body is {hits[0].final.body!r}. Let's Encrypt trims trailing whitespace "
                "and passes; cert-manager's self-check compares exactly and fails forever "
                "('did not get expected response').",
                "Serve the key authorization without a newline: `printf %s KEY > FILE` instead "
                'of `echo KEY > FILE`; in nginx `return 200 "$1.THUMBPRINT";` with no \\n.',
                vantages=sorted({a.vantage for a in hits}),
                evidence=dedupe([describe(a) for a in hits], 3),
            )
        ]


MIDDLEBOXES: tuple[tuple[str, str, str], ...] = (
    # (where: header name or "body", substring, lower case, product name)
    ("server", "cloudflare", "Cloudflare"),
    ("cf-ray", "", "Cloudflare"),
    ("server", "awselb", "AWS Elastic Load Balancing"),
    ("x-amz-cf-id", "", "Amazon CloudFront"),
    ("server", "akamaighost", "Akamai"),
    ("server", "bigip", "F5 BIG-IP"),
    ("server", "big-ip", "F5 BIG-IP"),
    ("x-sucuri-id", "", "Sucuri WAF"),
    ("server", "fortiweb", "Fortinet FortiWeb"),
    ("server", "envoy", "Envoy"),
    ("x-envoy-upstream-service-time", "", "Envoy"),
    ("server", "istio-envoy", "Istio (Envoy)"),
    ("server", "caddy", "Caddy"),
    ("server", "traefik", "Traefik"),
    ("server", "varnish", "Varnish"),
    ("via", "varnish", "Varnish"),
    ("via", "squid", "Squid"),
    ("x-squid-error", "", "Squid"),
    ("server", "google frontend", "Google Front End"),
    ("via", "google", "Google Cloud Load Balancing"),
    ("server", "azure", "Azure Application Gateway"),
    ("server", "microsoft-azure-application-gateway", "Azure Application Gateway"),
    ("body", "no server is available to handle this request", "HAProxy (no backend)"),
    ("body", "default backend - 404", "ingress-nginx default backend"),
    ("body", "404 page not found", "Traefik / Go default mux"),
    ("body", "<center>openresty</center>", "OpenResty"),
    ("body", "<center>nginx</center>", "nginx"),
    ("body", "the plain http request was sent to https port", "nginx (TLS listener)"),
    ("body", "attention required! | cloudflare", "Cloudflare"),
)


def fingerprint(headers: list[tuple[str, str]], body: str) -> list[str]:
    found: list[str] = []
    hmap: dict[str, str] = {}
    for k, v in headers:
        hmap.setdefault(k.lower(), v.lower())
    low = body.lower()
    for where, needle, product in MIDDLEBOXES:
        hit = needle in low if where == "body" else (where in hmap and needle in hmap[where])
        if hit and product not in found:
            found.append(product)
    return found


class Middlebox:
    codes = (Code.MIDDLEBOX_FINGERPRINT,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.primary)

    def run(self, ctx: Context) -> list[Finding]:
        products: dict[str, list[str]] = {}
        for run in ctx.runs:
            for a in run.public_attempts:
                if le_verdict(a, ctx.target, ctx.options).ok:
                    continue
                for hop in [*a.redirects, a.final]:
                    if hop.outcome != "response":
                        continue
                    for p in fingerprint(hop.headers, hop.body):
                        products.setdefault(p, [])
                        line = describe(a, hop)
                        if line not in products[p]:
                            products[p].append(line)
        if not products:
            return []
        names = ", ".join(products)
        ev = [line for lines in products.values() for line in lines[:2]]
        return [
            Finding(
                Code.MIDDLEBOX_FINGERPRINT,
                f"the failing answer comes from {names}",
                f"The response carries the fingerprint of {names} (headers or error page). "
                "That device or product answers in place of the ACME responder, so the fix "
                "belongs in its configuration.",
                f"Look at {names}: route /.well-known/acme-challenge/ to the backend unchanged "
                "(no caching, no WAF challenge, no redirect), or pass port 80 through in TCP "
                "mode.",
                severity=Severity.WARNING,
                evidence=ev[:6],
            )
        ]


class VantageHealth:
    codes = (Code.VANTAGE_UNUSABLE,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return any(r.failure for r in ctx.runs)

    def run(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        for run in ctx.runs:
            if not run.failure:
                continue
            out.append(
                Finding(
                    Code.VANTAGE_UNUSABLE,
                    f"vantage {run.label} could not run a probe",
                    f"{run.failure}. The diagnosis goes on without this vantage, so anything "
                    "only it could see (e.g. NAT loopback from inside) is unknown.",
                    "Make sure the command works on its own (try `PREFIX python3 -V` and "
                    "`PREFIX curl -V`), and that python3 (any 3.x) or curl exists there.",
                    vantages=[run.label],
                    evidence=run.failure_details[:4],
                )
            )
        return out


class Perspectives:
    """Several outside vantages are the CA's perspectives (the first one its primary):
    the ones that fail while others pass are blocked for the CA too, and the quorum of
    ballot SC-067 decides whether that fails the validation."""

    codes = (Code.PERSPECTIVE_BLOCKED,)
    stage = Stage.COMPARE
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return len(ctx.outside) >= 2

    def run(self, ctx: Context) -> list[Finding]:
        failing = {run.label: _first_ca_failure(ctx, run) for run in ctx.outside}
        blocked = [label for label, failure in failing.items() if failure is not None]
        if not blocked or len(blocked) == len(failing):
            return []  # the same for every perspective: not a matter of where from
        primary, *remote = (run.label for run in ctx.outside)
        holds = corroborated(primary not in blocked, [label not in blocked for label in remote])
        return [_perspective_finding(ctx, primary, remote, failing, holds)]


def _first_ca_failure(ctx: Context, run: VantageRun) -> str | None:
    """The first of the run's CA-path probes that Let's Encrypt would refuse, described."""
    for a in ca_attempts(run.attempts):
        v = le_verdict(a, ctx.target, ctx.options)
        if not v.ok:
            return describe(a)
    if not run.public_attempts:
        return f"{ctx.target.name} resolved to no address from {run.label}"
    return None


def _perspective_finding(
    ctx: Context,
    primary: str,
    remote: list[str],
    failing: dict[str, str | None],
    holds: bool,
) -> Finding:
    blocked = [label for label, failure in failing.items() if failure is not None]
    failed_remote = [label for label in remote if label in blocked]
    allowed = max_remote_failures(len(remote))
    quorum = (
        f"the primary {'fails' if primary in blocked else 'passes'} and "
        f"{len(failed_remote)} of {len(remote)} remote perspective(s) fail, where at most "
        f"{allowed} may"
    )
    return Finding(
        Code.PERSPECTIVE_BLOCKED,
        f"{len(blocked)} of {len(failing)} outside vantages fail: {', '.join(blocked)}",
        f"The CA validates from several networks at once. Here {quorum}, so the quorum "
        + ("still holds: the CA passes today, with no margin left." if holds else "fails.")
        + " Whatever drops or answers these networks differently (geo-blocking, a source "
        "allowlist, a firewall admitting only some networks, a regional LB) stands in "
        "the CA's way.",
        "Admit TCP port 80 from every network (0.0.0.0/0 and ::/0) in front of the load "
        "balancer: Let's Encrypt's perspectives change and their addresses are not "
        "published. Then run the same diagnose with the same --outside vantages.",
        severity=Severity.WARNING if holds else Severity.ERROR,
        vantages=blocked,
        evidence=dedupe([f"{label}: {failing[label]}" for label in blocked]),
    )
