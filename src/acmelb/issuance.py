"""Issue, renew and revoke certificates.

One issuance: account -> order -> present -> self-check -> answer -> poll ->
finalize -> store -> clean up. The self-check is a seam (``SelfCheck``) that
runs after the solver presented every token and before any challenge is
answered, so a check that predicts failure can stop the run before the CA
counts a failed validation.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from acme import challenges as acme_challenges
from acme import crypto_util as acme_crypto
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from acmelb.ca import CAClient, CAConfig, open_account
from acmelb.errors import (
    AcmelbError,
    CAError,
    CAProblemError,
    SolverError,
    StateError,
    UsageError,
    ValidationFailedError,
)
from acmelb.names import normalize_name
from acmelb.solvers import PendingChallenge, Solver, SolverOptions, make_solver
from acmelb.store import Lineage, Store

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")
AUTHORIZATION_TIMEOUT = 90.0
FINALIZE_TIMEOUT = 90.0
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----\r?\n?", re.DOTALL)

# Raise (any AcmelbError) to stop before the challenges are answered.
SelfCheck = Callable[[Sequence[PendingChallenge]], None]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class IssueRequest:
    names: tuple[str, ...]
    ca: CAConfig
    solver: SolverOptions = field(default_factory=SolverOptions)
    key_type: str = "ec256"
    reuse_key: bool = False


@dataclass(frozen=True)
class IssueResult:
    name: str
    names: tuple[str, ...]
    version: int
    not_after: datetime.datetime
    live_dir: Path
    fullchain: Path
    privkey: Path
    account_thumbprint: str


@dataclass(frozen=True)
class Deactivation:
    """An authorization this run deactivated after deciding not to answer it."""

    name: str
    url: str
    status: str  # as the CA reports it after deactivation
    challenge_status: str  # the http-01 challenge before deactivation: "pending" = unanswered


def normalize_names(raw: Sequence[str]) -> tuple[str, ...]:
    if not raw:
        raise UsageError("give at least one name")
    seen: dict[str, None] = {}
    for name in raw:
        seen[normalize_name(name)] = None
    return tuple(seen)


def generate_key(key_type: str) -> bytes:
    key: CertificateIssuerPrivateKeyTypes
    if key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ec384":
        key = ec.generate_private_key(ec.SECP384R1())
    elif key_type in ("rsa2048", "rsa4096"):
        key = rsa.generate_private_key(65537, int(key_type[3:]))
    else:
        raise UsageError(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def split_chain(fullchain_pem: bytes) -> tuple[bytes, bytes]:
    blocks = _PEM_CERT.findall(fullchain_pem)
    if not blocks:
        raise CAError("the CA returned no certificate in PEM form")
    normalized = [b if b.endswith(b"\n") else b + b"\n" for b in blocks]
    return normalized[0], b"".join(normalized[1:])


def _http01(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authz.body.challenges:
        if isinstance(challb.chall, acme_challenges.HTTP01):
            return challb
    name = authz.body.identifier.value
    raise CAError(f"the CA offers no http-01 challenge for {name}")


def _failure_detail(authz: messages.AuthorizationResource) -> tuple[str, str, str]:
    name = authz.body.identifier.value
    for challb in authz.body.challenges:
        if isinstance(challb.chall, acme_challenges.HTTP01):
            url = f"http://{name}/.well-known/acme-challenge/{challb.chall.encode('token')}"
            if challb.error is not None:
                err = challb.error
                return name, url, f"{err.detail or err.title} ({err.code or err.typ})"
            return name, url, f"challenge {challb.status}"
    return name, "", f"authorization {authz.body.status}"


def _poll_authorization(client: CAClient, authz: messages.AuthorizationResource
                        ) -> messages.AuthorizationResource:
    return client.acme.poll(authz)[0]


def _authorization_settled(authz: messages.AuthorizationResource) -> bool:
    return authz.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING)


class Issuer:
    """Runs issuances for one store; one CA session per directory."""

    def __init__(self, store: Store, *, progress: Progress | None = None,
                 self_check: SelfCheck | None = None) -> None:
        self.store = store
        self.progress = progress or (lambda _msg: None)
        self.self_check = self_check
        self.deactivated: list[Deactivation] = []

    def issue(self, request: IssueRequest, *, client: CAClient | None = None,
              solver: Solver | None = None) -> IssueResult:
        """One certificate. ``client`` and ``solver`` may be shared by concurrent calls."""
        names = normalize_names(request.names)
        if request.key_type not in KEY_TYPES:
            raise UsageError(f"unknown key type {request.key_type!r} "
                             f"(choose from {', '.join(KEY_TYPES)})")
        self.store.prepare()
        client = client or open_account(self.store, request.ca)
        lineage_name = names[0]
        with self.store.lock(lineage_name):
            return self._issue_locked(client, request, names, self.store.lineage(lineage_name),
                                      solver)

    def issue_many(self, requests: Sequence[IssueRequest], *, concurrency: int = 8,
                   on_done: Callable[[IssueRequest, IssueResult | AcmelbError], None]
                   | None = None) -> list[IssueResult | AcmelbError]:
        """Many certificates with one account and one solver, ``concurrency`` orders at a time.

        Every request must use the same CA and solver settings. A failure of one
        certificate is returned in its place; the others go on.
        """
        if not requests:
            return []
        ca, solver_options = requests[0].ca, requests[0].solver
        if any(r.ca != ca or r.solver != solver_options for r in requests):
            raise UsageError("every certificate of one run must use the same CA and solver")
        first = open_account(self.store, ca)  # registers the account once, before the rush
        solver = make_solver(solver_options, first.thumbprint)
        # One HTTP session (and nonce pool) per worker thread: requests' sessions and the
        # acme library's nonce handling are not made for sharing between threads.
        per_thread = threading.local()

        def one(request: IssueRequest) -> IssueResult | AcmelbError:
            try:
                if not hasattr(per_thread, "client"):
                    per_thread.client = open_account(self.store, ca)
                outcome: IssueResult | AcmelbError = self.issue(
                    request, client=per_thread.client, solver=solver)
            except AcmelbError as exc:
                outcome = exc
            if on_done is not None:
                on_done(request, outcome)
            return outcome

        try:
            with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(requests)))) as pool:
                return list(pool.map(one, requests))
        finally:
            solver.close()

    def _issue_locked(self, client: CAClient, request: IssueRequest, names: tuple[str, ...],
                      lineage: Lineage, shared_solver: Solver | None) -> IssueResult:
        key_pem = (lineage.read("privkey") if request.reuse_key and lineage.exists()
                   else generate_key(request.key_type))
        csr_pem = acme_crypto.make_csr(key_pem, list(names))
        self.progress(f"ordering a certificate for {', '.join(names)}")
        order = client.call(lambda: client.acme.new_order(csr_pem), what="create the order")
        solver = shared_solver or make_solver(request.solver, client.thumbprint)
        pending, challenge_bodies = self._pending_challenges(client, order)
        try:
            if pending:
                self.progress(f"presenting {len(pending)} challenge(s) with the "
                              f"{solver.name} solver")
                solver.present(pending)
                if self.self_check is not None:
                    self.self_check(pending)
                self._answer(client, order, challenge_bodies)
                self._wait_for_authorizations(client, order)
        except AcmelbError:
            self._deactivate_pending(client, order)
            raise
        finally:
            self._cleanup(solver, pending, close=shared_solver is None)
        self.progress("finalizing the order")
        fullchain_pem = self._finalize(client, order)
        cert_pem, chain_pem = split_chain(fullchain_pem)
        renewal = {
            "names": list(names),
            "directory": request.ca.directory_url,
            "ca_bundle": str(request.ca.ca_bundle) if request.ca.ca_bundle else None,
            "email": request.ca.email,
            "key_type": request.key_type,
            "reuse_key": request.reuse_key,
            "solver": asdict(request.solver),
        }
        saved = self.store.save(lineage.name, privkey_pem=key_pem, cert_pem=cert_pem,
                                chain_pem=chain_pem, renewal=renewal)
        cert = x509.load_pem_x509_certificate(cert_pem)
        version = saved.current_version()
        assert version is not None
        return IssueResult(name=lineage.name, names=names, version=version,
                           not_after=cert.not_valid_after_utc, live_dir=saved.live_dir,
                           fullchain=saved.path("fullchain"), privkey=saved.path("privkey"),
                           account_thumbprint=client.thumbprint)

    def _pending_challenges(self, client: CAClient, order: messages.OrderResource
                            ) -> tuple[list[PendingChallenge], list[messages.ChallengeBody]]:
        pending: list[PendingChallenge] = []
        bodies: list[messages.ChallengeBody] = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA reused an earlier validation
            challb = _http01(authz)
            response, validation = challb.chall.response_and_validation(client.key)
            del response
            pending.append(PendingChallenge(
                name=authz.body.identifier.value, token=challb.chall.encode("token"),
                key_authorization=validation, authorization_url=authz.uri,
                challenge_url=challb.uri))
            bodies.append(challb)
        return pending, bodies

    def _answer(self, client: CAClient, order: messages.OrderResource,
                bodies: Sequence[messages.ChallengeBody]) -> None:
        for challb in bodies:
            response = challb.chall.response(client.key)
            try:
                client.call(partial(client.acme.answer_challenge, challb, response),
                            what="answer the challenge")
            except CAProblemError:
                # A lost answer to a POST the CA did act on: the retried POST meets a
                # challenge that is no longer pending. That is the answer we wanted.
                if not self._challenge_left_pending(client, order, challb):
                    continue
                raise

    def _challenge_left_pending(self, client: CAClient, order: messages.OrderResource,
                                challb: messages.ChallengeBody) -> bool:
        for authz in order.authorizations:
            current = client.call(partial(_poll_authorization, client, authz),
                                  what="look up the challenge")
            for candidate in current.body.challenges:
                if candidate.uri == challb.uri:
                    return bool(candidate.status == messages.STATUS_PENDING)
        return True

    def _wait_for_authorizations(self, client: CAClient, order: messages.OrderResource) -> None:
        deadline = time.monotonic() + AUTHORIZATION_TIMEOUT
        failures: list[tuple[str, str, str]] = []
        for authz in order.authorizations:
            final = client.poll_until(
                partial(_poll_authorization, client, authz), _authorization_settled,
                deadline=deadline, what="validate the challenges")
            if final.body.status != messages.STATUS_VALID:
                failures.append(_failure_detail(final))
        if failures:
            lines = "; ".join(f"{name}: the CA fetched {url} and said: {detail}"
                              for name, url, detail in failures)
            raise ValidationFailedError(f"validation failed: {lines}", failures)

    def _deactivate_pending(self, client: CAClient, order: messages.OrderResource) -> None:
        """RFC 8555 §7.5.2: leave nothing pending that a later run would trip over."""
        for authz in order.authorizations:
            try:
                current = client.acme.poll(authz)[0]
                if current.body.status != messages.STATUS_PENDING:
                    continue
                done = client.acme.deactivate_authorization(current)
            except Exception:  # best effort on an already failing path
                continue
            # The challenge as it stood just before: "pending" means it was never answered.
            before = [c.status.name for c in current.body.challenges
                      if isinstance(c.chall, acme_challenges.HTTP01)]
            record = Deactivation(name=done.body.identifier.value, url=done.uri,
                                  status=done.body.status.name,
                                  challenge_status=before[0] if before else "none")
            self.deactivated.append(record)
            self.progress(f"deactivated the authorization for {record.name} ({record.url}): "
                          f"now {record.status}; its challenge was {record.challenge_status}")

    def _cleanup(self, solver: Solver, pending: Sequence[PendingChallenge], *,
                 close: bool) -> None:
        try:
            if pending:
                solver.cleanup(pending)
        except SolverError as exc:
            self.progress(f"warning: {exc}")
        finally:
            if close:
                solver.close()

    def _finalize(self, client: CAClient, order: messages.OrderResource) -> bytes:
        deadline = time.monotonic() + FINALIZE_TIMEOUT

        def fetch_order() -> messages.Order:
            body: messages.Order = messages.Order.from_json(
                client.acme._post_as_get(order.uri).json())
            return body

        try:
            client.call(lambda: client.acme.begin_finalization(order), what="finalize the order")
        except CAError:
            # The first attempt may have reached the CA before the connection broke.
            status = client.call(fetch_order, what="look up the order").status
            if status not in (messages.STATUS_PROCESSING, messages.STATUS_VALID):
                raise
        body = client.poll_until(
            fetch_order,
            lambda o: o.status in (messages.STATUS_VALID, messages.STATUS_INVALID),
            deadline=deadline, what="issue the certificate")
        if body.status != messages.STATUS_VALID or body.certificate is None:
            detail = f": {body.error.detail}" if body.error is not None else ""
            raise CAError(f"the CA did not issue the certificate{detail}")
        certificate_url = body.certificate
        response = client.call(lambda: client.acme._post_as_get(certificate_url),
                               what="download the certificate")
        fullchain: bytes = response.content
        return fullchain


# -- renew, revoke, list --------------------------------------------------------

@dataclass(frozen=True)
class CertificateInfo:
    name: str
    names: tuple[str, ...]
    not_after: datetime.datetime | None
    days_left: float | None
    live_dir: Path
    problem: str | None = None


def inspect_certificates(store: Store) -> list[CertificateInfo]:
    now = datetime.datetime.now(datetime.UTC)
    infos = []
    for lineage in store.lineages():
        try:
            cert = x509.load_pem_x509_certificate(lineage.read("cert"))
        except (OSError, ValueError) as exc:
            infos.append(CertificateInfo(lineage.name, (lineage.name,), None, None,
                                         lineage.live_dir, problem=str(exc)))
            continue
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = tuple(san.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = (lineage.name,)
        left = (cert.not_valid_after_utc - now).total_seconds() / 86400
        infos.append(CertificateInfo(lineage.name, names, cert.not_valid_after_utc, left,
                                     lineage.live_dir))
    return infos


def request_from_renewal(params: dict[str, Any]) -> IssueRequest:
    try:
        solver = SolverOptions(**{**params["solver"],
                                  "addresses": tuple(params["solver"].get("addresses", ()))})
        bundle = params.get("ca_bundle")
        return IssueRequest(
            names=tuple(params["names"]),
            ca=CAConfig(directory_url=params["directory"],
                        ca_bundle=Path(bundle) if bundle else None, email=params.get("email")),
            solver=solver, key_type=params.get("key_type", "ec256"),
            reuse_key=bool(params.get("reuse_key", False)))
    except (KeyError, TypeError) as exc:
        raise StateError(f"renewal configuration is incomplete: {exc}") from None


@dataclass(frozen=True)
class RenewOutcome:
    name: str
    action: str  # "renewed" | "not-due" | "failed"
    detail: str
    result: IssueResult | None = None


def renew(store: Store, names: Sequence[str] | None, *, days: float,
          deploy_hook: str | None = None, force: bool = False,
          progress: Progress | None = None, self_check: SelfCheck | None = None,
          concurrency: int = 8) -> list[RenewOutcome]:
    """Renew the named lineages (all when ``names`` is None) that expire within ``days``.

    Due lineages that share a CA and a solver are renewed concurrently.
    """
    infos = {info.name: info for info in inspect_certificates(store)}
    wanted = list(infos) if names is None else [normalize_name(n) for n in names]
    outcomes: dict[str, RenewOutcome] = {}
    due: dict[tuple[CAConfig, SolverOptions], list[tuple[str, IssueRequest]]] = {}
    for name in wanted:
        info = infos.get(name)
        if info is None:
            outcomes[name] = RenewOutcome(name, "failed",
                                          f"no certificate named {name} in {store.root}")
        elif not force and info.days_left is not None and info.days_left > days:
            outcomes[name] = RenewOutcome(name, "not-due",
                                          f"expires in {info.days_left:.0f} days")
        else:
            try:
                request = request_from_renewal(store.lineage(name).renewal_params())
            except AcmelbError as exc:
                outcomes[name] = RenewOutcome(name, "failed", str(exc))
                continue
            due.setdefault((request.ca, request.solver), []).append((name, request))
    issuer = Issuer(store, progress=progress, self_check=self_check)
    for batch in due.values():
        try:
            results: list[IssueResult | AcmelbError] = issuer.issue_many(
                [request for _, request in batch], concurrency=concurrency)
        except AcmelbError as exc:  # the account or the solver failed for the whole batch
            results = [exc] * len(batch)
        for (name, _), result in zip(batch, results, strict=True):
            if isinstance(result, AcmelbError):
                outcomes[name] = RenewOutcome(name, "failed", str(result))
                continue
            detail = f"renewed, valid until {result.not_after:%Y-%m-%d %H:%M} UTC"
            if deploy_hook:
                detail += _run_deploy_hook(deploy_hook, result)
            outcomes[name] = RenewOutcome(name, "renewed", detail, result)
    return [outcomes[name] for name in wanted]


def _run_deploy_hook(command: str, result: IssueResult) -> str:
    env = {**os.environ, "RENEWED_LINEAGE": str(result.live_dir),
           "RENEWED_DOMAINS": " ".join(result.names)}
    try:
        proc = subprocess.run(command, shell=True, env=env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return "; deploy hook timed out after 300 s"
    if proc.returncode != 0:
        return f"; deploy hook exited {proc.returncode}"
    return "; deploy hook ran"


REVOCATION_REASONS = {
    "unspecified": 0,
    "keycompromise": 1,
    "affiliationchanged": 3,
    "superseded": 4,
    "cessationofoperation": 5,
}


def revoke(store: Store, name: str, *, reason: str = "unspecified",
           ca: CAConfig | None = None) -> CertificateInfo:
    name = normalize_name(name)
    code = REVOCATION_REASONS.get(reason.lower().replace("-", "").replace("_", ""))
    if code is None:
        raise UsageError(f"unknown reason {reason!r} (choose from "
                         f"{', '.join(REVOCATION_REASONS)})")
    lineage = store.lineage(name)
    if not lineage.exists():
        raise StateError(f"no certificate named {name} in {store.root}")
    params = lineage.renewal_params()
    config = ca or request_from_renewal(params).ca
    cert = x509.load_pem_x509_certificate(lineage.read("cert"))
    client = open_account(store, config, register=False)
    client.call(lambda: client.acme.revoke(cert, code), what="revoke the certificate")
    info = next(i for i in inspect_certificates(store) if i.name == name)
    return info
