"""The one table of finding codes: code, default severity, stage, title, explanation, remedy.

Everything else that names codes is generated from ``CODES`` or checked against
it by ``tests/diagnose/test_code_table.py``: the checks' ``codes``, the JSON
schemas' code lists, the table in docs/diagnose.md and the list in README.md.
Adding a code is: a ``Code`` member, its row here, the check that raises it,
and its tests (then ``python tests/diagnose/test_code_table.py --write``
regenerates the schemas and the docs).

Codes are a public contract (docs/diagnose.md): add, never rename.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


class Stage(enum.IntEnum):
    """The diagnosis stages, in the order they run. KUBE reads the cluster's objects
    (``--kube``, ``--challenges``) before any lookup or probe."""

    KUBE = -1
    NAME = 0
    DNS = 1
    HTTP = 2
    COMPARE = 3


class Code(enum.Enum):
    """Every finding code; values are the public names. The order is the report's order
    within a severity, so new members go at the end."""

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
    READ_TIMEOUT = "read-timeout"
    MALFORMED_RESPONSE = "malformed-response"
    CHECK_FAILED = "check-failed"
    SOLVER_NOT_PRESENTED = "solver-not-presented"
    PERSPECTIVE_BLOCKED = "perspective-blocked"
    LB_PROXY_SHORTCUT = "lb-proxy-protocol-shortcut"
    TRAFFIC_POLICY_LOCAL = "traffic-policy-local"
    INGRESS_REDIRECTS_SOLVER = "ingress-redirects-solver"
    INGRESS_CLASS_UNSERVED = "ingress-class-unserved"
    SELF_CHECK_SKIPPED = "self-check-skipped"
    SOLVER_ROUTE_NOT_ACCEPTED = "solver-route-not-accepted"
    LISTENER_NOT_PROGRAMMED = "listener-not-programmed"
    GATEWAY_REDIRECTS_SOLVER = "gateway-redirects-solver"
    GATEWAY_API_DISABLED = "gateway-api-disabled"
    TLS_ALPN_TERMINATED = "tls-alpn-terminated"
    PORT_443_REFUSED = "port-443-refused"
    PORT_443_TIMEOUT = "port-443-timeout"
    HTTPS_HOP_FAILED = "https-hop-failed"

    @property
    def default_severity(self) -> Severity:
        return CODES[self].severity

    @property
    def info(self) -> CodeInfo:
        return CODES[self]


@dataclass(frozen=True)
class CodeInfo:
    """One row. ``stage`` is None for a code the runner raises, not a check.
    ``explanation`` says when the code is raised; ``remedy`` is the usual fix in one
    line (the finding itself carries the remedy filled in with the evidence)."""

    severity: Severity
    stage: Stage | None
    title: str
    explanation: str
    remedy: str


CODES: dict[Code, CodeInfo] = {
    Code.INVALID_NAME: CodeInfo(
        Severity.FATAL,
        Stage.NAME,
        "not a name HTTP-01 can validate",
        "NAME is neither a valid DNS name nor an IP address for HTTP-01 (`*.` wildcard, bad "
        "label, too long; a malformed address, brackets, an IPv6 zone)",
        "use the DNS name or the address itself; wildcards need DNS-01",
    ),
    Code.DNS_NO_ADDRESS: CodeInfo(
        Severity.FATAL,
        Stage.DNS,
        "the name has no address",
        "NXDOMAIN, or no A and no AAAA record",
        "publish an A (and/or AAAA) record pointing at the load balancer",
    ),
    Code.DNS_LOOKUP_FAILED: CodeInfo(
        Severity.FATAL,
        Stage.DNS,
        "the DNS lookup failed",
        "SERVFAIL, refused or timed-out lookups",
        "fix the authoritative servers (DNSSEC, delegation, firewall)",
    ),
    Code.DNS_RESERVED_ADDRESS: CodeInfo(
        Severity.ERROR,
        Stage.DNS,
        "the name resolves to reserved addresses",
        "the name resolves (only or also) to private/reserved addresses the CA will not use, "
        "or the target is such an IP address",
        "publish only public addresses of the load balancer",
    ),
    Code.DNS_SPLIT_HORIZON: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "inside and outside resolve the name differently",
        "inside and outside vantages resolve NAME to different addresses",
        "make the inside address serve the challenge, or point the self-check at public DNS",
    ),
    Code.CAA_FORBIDS: CodeInfo(
        Severity.FATAL,
        Stage.DNS,
        "CAA records forbid the CA",
        "CAA records on NAME or a parent forbid the CA",
        "add an `issue` CAA record for the CA's identity",
    ),
    Code.PORT_80_TIMEOUT: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "port 80 times out",
        "from outside, connecting to port 80 times out (firewall, security group, no LB listener)",
        "open port 80 to the world on the firewall/security group and add an LB listener",
    ),
    Code.PORT_80_REFUSED: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "port 80 refuses connections",
        "from outside, connection refused",
        "make something listen on port 80 at the public address",
    ),
    Code.EMPTY_REPLY: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "connection closed without an answer",
        "the connection is accepted, then closed or reset without an HTTP response",
        "give the LB a healthy backend; check for PROXY protocol or TLS on port 80",
    ),
    Code.IPV6_UNREACHABLE: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the IPv6 path fails",
        "the AAAA path fails while the A path works",
        "fix IPv6 to the LB, or remove the AAAA record",
    ),
    Code.NAT_LOOPBACK: CodeInfo(
        Severity.ERROR,
        Stage.COMPARE,
        "no NAT loopback (hairpin) from inside",
        "outside reaches the endpoint, an inside vantage cannot reach the public address "
        "(timeout, refused, reset): the LB or router lacks NAT loopback (hairpin)",
        "enable NAT loopback on the LB/router, or split-horizon DNS inside",
    ),
    Code.PROXY_PROTOCOL_REQUIRED: CodeInfo(
        Severity.ERROR,
        Stage.COMPARE,
        "the backend expects PROXY protocol",
        "a probe without a PROXY protocol header gets no valid answer, the same probe with "
        "a PROXY v1 header succeeds: the backend expects PROXY protocol and this path "
        "bypasses the LB (e.g. kube-proxy short-circuits the LB address inside a cluster)",
        "ipMode: Proxy or the provider's hostname annotation on the Service",
    ),
    Code.LB_INTERCEPTS_CHALLENGE: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the load balancer answers the challenge itself",
        "the answer seen through the LB is a well-formed key authorization that is not ours "
        "(other account thumbprint, or any-token answering), while the backend itself "
        "answers correctly or is never reached: an HTTP-mode LB answers challenges itself; "
        "switch it to TCP pass-through",
        "switch the LB to TCP pass-through for port 80",
    ),
    Code.THUMBPRINT_MISMATCH: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the answer is for another ACME account",
        "the backend itself answers `token.<thumbprint>` with another account's thumbprint "
        "(stateless responder configured for another account)",
        "configure the stateless responder with this account's thumbprint",
    ),
    Code.CHALLENGE_NOT_FOUND: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the challenge URL answers 404",
        "HTTP 404 for the challenge URL",
        "route /.well-known/acme-challenge/ to the responder that holds the token",
    ),
    Code.HTTP_ERROR_STATUS: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the challenge URL answers an error status",
        "any other non-200 status, e.g. 503 from an LB with no healthy backend",
        "fix what answers the status (LB health checks, auth, WAF rules)",
    ),
    Code.WRONG_CONTENT: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the body is not the key authorization",
        "status 200 but the body is not the key authorization (HTML page, empty body, other token)",
        "serve the key authorization, exactly, at the challenge path",
    ),
    Code.BODY_TOO_LARGE: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the body is too large",
        "status 200 with 128 bytes or more of body",
        "serve only the key authorization",
    ),
    Code.TRAILING_WHITESPACE: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "the body has trailing whitespace",
        "body equals the key authorization only after trimming trailing whitespace: a CA "
        "passes, cert-manager's self-check fails",
        "serve the key authorization without a trailing newline",
    ),
    Code.INCONSISTENT_BACKENDS: CodeInfo(
        Severity.ERROR,
        Stage.COMPARE,
        "backends answer differently",
        "repeated probes to the same name give different answers (some backends behind the "
        "LB lack the token)",
        "present the token on every backend (shared storage, stateless responder)",
    ),
    Code.REDIRECT_BAD_STATUS: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "a redirect uses a status the CA does not follow",
        "redirect with a status other than 301/302/307/308",
        "redirect with 301, 302, 307 or 308",
    ),
    Code.REDIRECT_BAD_TARGET: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "a redirect target the CA refuses",
        "redirect to a port other than 80/443, a scheme other than http/https, a host ending "
        "in `.well-known` or outside the IANA TLDs, a reserved or scoped IP address, a path "
        "over 2000 bytes, or a hop that needs the AAAA-to-A fallback",
        "redirect only to http/https on ports 80/443 of a public name or address",
    ),
    Code.REDIRECT_LOOP: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "a redirect loop",
        "a redirect chain revisits a URL",
        "exempt /.well-known/acme-challenge/ from the redirect",
    ),
    Code.REDIRECT_TOO_MANY: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "too many redirects",
        "more than 11 redirects for the CA (Boulder follows 11); 10 or more for "
        "cert-manager's self-check (Go's client refuses the 10th)",
        "shorten the redirect chain",
    ),
    Code.REDIRECT_HTTPS: CodeInfo(
        Severity.INFO,
        Stage.HTTP,
        "redirected to https",
        "redirected to https on 443: the CA follows it and ignores certificate errors",
        "nothing required",
    ),
    Code.HTTP_ON_HTTPS_PORT: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "plain HTTP reached a TLS listener",
        'plain HTTP reached a TLS listener (e.g. nginx "plain HTTP request was sent to '
        'HTTPS port")',
        "serve plain HTTP on port 80",
    ),
    Code.MIDDLEBOX_FINGERPRINT: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "a known device or product answered",
        "the answer carries the fingerprint of a known device or product in the path (name it)",
        "configure that device to pass /.well-known/acme-challenge/ through",
    ),
    Code.VANTAGE_UNUSABLE: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "a vantage could not run a probe",
        "a vantage command failed to run a probe (no python3/curl, ssh failed)",
        "give the vantage python3 or curl, or fix its command prefix",
    ),
    Code.READ_TIMEOUT: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "no HTTP answer in time",
        "the connection is accepted but no complete HTTP response arrives in time (a hung "
        "backend, a listener waiting for a PROXY header or TLS, an LB retrying a dead "
        "backend). `empty-reply` covers the connections that are *closed*; this one covers "
        "those left open",
        "fix the backend, or the PROXY/TLS setting of the listener",
    ),
    Code.MALFORMED_RESPONSE: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the answer is not HTTP that Go's client reads",
        "the server answers, but Go's HTTP client (the CA's and cert-manager's) refuses "
        "what it sends: two different Content-Lengths, a Content-Length that is not "
        "digits (`87, 87`, `+87`), a Transfer-Encoding other than `chunked`, a header "
        "line without a colon or with a space in its name, a status line such as "
        "`HTTP/2 200` or more than five 1xx responses (a failed TLS handshake on an https "
        "hop is `https-hop-failed`); the evidence quotes Go's error",
        "fix the server or load balancer that writes the response (its HTTP/1.1 framing "
        "or headers)",
    ),
    Code.CHECK_FAILED: CodeInfo(
        Severity.WARNING,
        None,
        "a check of acmelb itself failed",
        "a check raised an exception (a bug in acmelb): its codes were not looked for on "
        "this name; the other checks, the probes and the verdicts are unaffected. A warning, "
        "not an error: acmelb's own bug must not fail (or refuse) a validation that the "
        "verdicts show passing",
        "report it with the evidence (exception and place); read the verdicts and probes",
    ),
    Code.SOLVER_NOT_PRESENTED: CodeInfo(
        Severity.FATAL,
        Stage.KUBE,
        "the challenge solver was never presented",
        "cert-manager could not present the HTTP-01 solver: a `PresentError` event, an "
        "admission webhook that denied the solver's Ingress (e.g. ingress-nginx's strict path "
        "validation against cert-manager's `pathType: Exact`), or a Challenge with "
        "`presented: false` and a reason. The CA and the self-check reach no solver at all, so "
        "this is not a validation failure",
        "fix what rejected the solver (read the Challenge's events), then let cert-manager retry",
    ),
    Code.PERSPECTIVE_BLOCKED: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "some of the CA's network perspectives fail",
        "with several `--outside` vantages (the first is the CA's primary perspective, the "
        "others its remote ones), some pass and some fail: geo-blocking, a source "
        "allowlist, a firewall admitting only some networks. A warning while the quorum of "
        "ballot SC-067 holds (the primary passes; of 2-5 remote perspectives at most one "
        "fails, of 6 or more at most two), an error when it does not",
        "admit port 80 from every network: the CA validates from several regions and does "
        "not publish its addresses",
    ),
    Code.LB_PROXY_SHORTCUT: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "PROXY protocol at the LB, its IP short-circuited inside",
        "the ingress controller's LoadBalancer Service turns PROXY protocol on (DigitalOcean, "
        "Hetzner, Scaleway, AWS annotations) and its status publishes a bare IP without "
        "`ipMode: Proxy` or a hostname: kube-proxy routes in-cluster traffic for that IP "
        "straight to the pods without the PROXY header, so the self-check gets EOF",
        "the provider's hostname annotation on the Service (or `ipMode: Proxy`)",
    ),
    Code.TRAFFIC_POLICY_LOCAL: CodeInfo(
        Severity.WARNING,
        Stage.KUBE,
        "externalTrafficPolicy: Local, solver on a node without a controller",
        "the controller's Service has `externalTrafficPolicy: Local` and the solver pod runs "
        "on a node with no ingress controller pod: traffic reaching that node is dropped",
        "`externalTrafficPolicy: Cluster`, or the controller on every node",
    ),
    Code.INGRESS_REDIRECTS_SOLVER: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "a redirect catches the challenge path",
        "the solver's Ingress carries a redirect that applies to every path "
        "(ingress-nginx `permanent-redirect`/`temporal-redirect`, a Traefik redirect "
        "middleware) or the Traefik controller redirects its whole HTTP entrypoint",
        "remove the redirect from the solver's Ingress (and the issuer's ingressTemplate)",
    ),
    Code.INGRESS_CLASS_UNSERVED: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "no controller serves the solver's Ingress class",
        "the solver's Ingress (or the issuer's solver) names an Ingress class that no "
        "ingress controller in the cluster serves: the solver is never routed",
        "set the issuer's solver `ingressClassName` to a class a controller serves",
    ),
    Code.SELF_CHECK_SKIPPED: CodeInfo(
        Severity.WARNING,
        Stage.COMPARE,
        "the self-check is skipped while the CA would fail",
        "the Challenge's solver sets `waitInsteadOfSelfCheck` (cert-manager >= 1.21) and the "
        "outside probes fail: cert-manager will ask the CA anyway and spend failed "
        "validations (rate-limited)",
        "fix the failing path, and drop `waitInsteadOfSelfCheck` until the CA's view passes",
    ),
    # -- the Gateway API (cert-manager's gatewayHTTPRoute solver) --
    Code.SOLVER_ROUTE_NOT_ACCEPTED: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "the solver's HTTPRoute is not attached to the Gateway",
        "the solver HTTPRoute's `status.parents[]` has `Accepted: False` for its Gateway or "
        "ListenerSet: `NotAllowedByListeners` (the listener's `allowedRoutes` admits another "
        "namespace), `NoMatchingListenerHostname`, `NoMatchingParent` (no HTTP listener on "
        "port 80, a `sectionName` naming the HTTPS listener) or the implementation's own "
        "reason; or no status at all for a parent in the file (`NoStatus`: no controller "
        "processed the route): the challenge path is not routed to the solver",
        "admit the solver's namespace on the port-80 listener, or name that listener in the "
        "issuer's `parentRefs` (`sectionName`); for `NoStatus`, a running controller for "
        "the Gateway's class",
    ),
    Code.LISTENER_NOT_PROGRAMMED: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "the Gateway or its HTTP listener is not programmed",
        "the Gateway's (or ListenerSet's) status says `Programmed: False`, or the listener "
        "the solver route uses has `Programmed`/`Accepted`/`ResolvedRefs: False`; with an "
        "HTTPS listener waiting for the Secret HTTP-01 is to produce (`InvalidCertificateRef`) "
        "some implementations program nothing: a deadlock",
        "fix the listener the status names; drop the waiting HTTPS listener until the "
        "certificate exists",
    ),
    Code.GATEWAY_REDIRECTS_SOLVER: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "a redirect on the Gateway catches the challenge path",
        "another HTTPRoute on the solver's Gateway has a `RequestRedirect` filter for the "
        "challenge's host and path, and the solver route is not attached to that listener "
        "(an attached solver route's `Exact` match would win); or the Traefik data plane "
        "redirects its entrypoint or answers `acme-http@internal` on it",
        "attach the solver route to the redirecting listener (`sectionName` in the issuer's "
        "`parentRefs`)",
    ),
    Code.GATEWAY_API_DISABLED: CodeInfo(
        Severity.ERROR,
        Stage.KUBE,
        "cert-manager's Gateway API support does not match the cluster",
        "the Challenge or its events say `gateway api is not enabled` (cert-manager runs "
        "without `--enable-gateway-api`), the solver is `gatewayHTTPRoute` and the file "
        "holds no Gateway API object at all (CRDs missing), or the issuer still uses the "
        "`http01.ingress` solver while the cluster serves Gateways and no ingress controller",
        "enable cert-manager's Gateway API support (and restart it after installing the "
        "CRDs), or move the issuer to the `gatewayHTTPRoute` solver",
    ),
    Code.TLS_ALPN_TERMINATED: CodeInfo(
        Severity.ERROR,
        None,
        "TLS-ALPN-01 meets a proxy that terminates TLS",
        "named by `acmelb explain` only (the probes check HTTP-01): the CA's TLS-ALPN-01 "
        "handshake (ALPN `acme-tls/1` on port 443) ends at a CDN, load balancer or proxy "
        "that terminates TLS itself, so the ACME client behind it never answers it: "
        '`Cannot negotiate ALPN protocol "acme-tls/1"`, Go autocert\'s `no viable '
        "challenge type found`, a TLS alert from the proxy",
        "pass port 443 through to the ACME client as TCP (no TLS termination; SNI routing "
        "at most), or switch the client to HTTP-01 on port 80 (or DNS-01)",
    ),
    # -- a redirect to https: port 80 answered, the :443 hop fails (Boulder follows it) --
    Code.PORT_443_REFUSED: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "port 443 refuses connections after the redirect to https",
        "port 80 answers with a redirect to https, which the CA follows (va/http.go), and "
        "port 443 of the redirect target refuses the connection",
        "serve port 443 (a TLS listener passing /.well-known/acme-challenge/ to the "
        "responder), or stop redirecting the challenge path to https",
    ),
    Code.PORT_443_TIMEOUT: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "port 443 times out after the redirect to https",
        "port 80 answers with a redirect to https, and connecting to port 443 of the "
        "redirect target times out (a firewall or security group dropping 443, no LB "
        "listener)",
        "open port 443 the way port 80 is open, or stop redirecting the challenge path to https",
    ),
    Code.HTTPS_HOP_FAILED: CodeInfo(
        Severity.ERROR,
        Stage.HTTP,
        "the https hop fails after the redirect",
        "port 80 answers with a redirect to https, port 443 accepts, and then the TLS "
        "handshake fails (plain HTTP on 443, TLS below 1.2), or the connection closes or "
        "hangs without an HTTP response",
        "serve TLS 1.2 or later on port 443 with any certificate (the CA does not check "
        "it), or stop redirecting the challenge path to https",
    ),
}

DEFAULT_SEVERITY: dict[Code, Severity] = {code: row.severity for code, row in CODES.items()}


# -- generated text: the docs table, the README list, the schemas' code lists ----------------


def code_values() -> list[str]:
    return [code.value for code in Code]


def markdown_table() -> str:
    """The table in docs/diagnose.md."""
    lines = [
        "| code | default severity | stage | raised when | usual fix |",
        "|---|---|---|---|---|",
    ]
    for code, row in CODES.items():
        stage = row.stage.name.lower() if row.stage is not None else "any (the runner)"
        lines.append(
            f"| `{code.value}` | {row.severity.value} | {stage} | {row.explanation} "
            f"| {row.remedy} |"
        )
    return "\n".join(lines)


def readme_list() -> str:
    """The comma-separated code list in README.md, in table order."""
    return ", ".join(f"`{value}`" for value in code_values())
