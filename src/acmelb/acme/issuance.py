"""Issue, renew and revoke certificates.

One issuance is a pipeline of named steps (``Step``): order -> present ->
self-check -> answer -> poll -> finalize -> store. Its state
(``IssuanceState``) is plain data that can be saved after every step and
resumed by another process, which is how a cluster hands an order over
when its owner dies. The self-check runs after the solver presented every
token and before any challenge is answered, so a check that predicts failure
stops the run before the CA counts a failed validation.
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acme import crypto_util as acme_crypto
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from acmelb.acme import ari
from acmelb.acme.ca import CAClient, CAConfig, Deactivation, http01_challenge, open_account
from acmelb.acme.renewal import RenewalConfig
from acmelb.acme.selfcheck import SelfCheck as SelfCheckRun
from acmelb.acme.selfcheck import SelfCheckOptions, compare_with_ca, make_self_check
from acmelb.acme.solvers import PendingChallenge, Solver, SolverOptions, make_solver
from acmelb.acme.store import Lineage, Store
from acmelb.errors import (
    AcmelbError,
    CAError,
    CAProblemError,
    SolverError,
    StateError,
    UsageError,
    ValidationFailedError,
)
from acmelb.names import is_ip_address, normalize_identifier

if TYPE_CHECKING:
    from acmelb.doctor.diagnose import Report

__all__ = [
    "KEY_TYPES",
    "CertificateInfo",
    "Deactivation",
    "IssuanceState",
    "IssueRequest",
    "IssueResult",
    "Issuer",
    "Pipeline",
    "RenewOutcome",
    "Step",
    "inspect_certificates",
    "renew",
    "revoke",
]

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----\r?\n?", re.DOTALL
)

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
    self_check: SelfCheckOptions | None = None  # None: no self-check
    profile: str | None = None  # the CA's profile (None: its default)
    replaces: str | None = None  # a renewal: the ARI ID of the certificate it replaces

    @classmethod
    def renewing(cls, config: RenewalConfig, replaces: str | None = None) -> IssueRequest:
        """The request that renews a lineage, from the settings it was issued with."""
        return cls(
            names=config.names,
            ca=config.ca,
            solver=config.solver,
            key_type=config.key_type,
            reuse_key=config.reuse_key,
            self_check=config.self_check,
            profile=config.profile,
            replaces=replaces,
        )

    def renewal_config(self, names: tuple[str, ...]) -> RenewalConfig:
        """What is stored with each version, so that a renewal repeats this request."""
        return RenewalConfig(
            names=names,
            ca=self.ca,
            solver=self.solver,
            key_type=self.key_type,
            reuse_key=self.reuse_key,
            self_check=self.self_check,
            profile=self.profile,
        )


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
    self_check: tuple[Report, ...] = ()
    warnings: tuple[str, ...] = ()  # errors the tolerant self-check accepted


def normalize_names(raw: Sequence[str]) -> tuple[str, ...]:
    """A certificate's identifiers, normalised and without repeats, in the order given:
    DNS names and IP addresses (RFC 8738), alone or mixed. The first names the lineage
    (an IP-address certificate's lineage is its address, as certbot names it)."""
    if not raw:
        raise UsageError("give at least one name")
    seen: dict[str, None] = {}
    for name in raw:
        seen[normalize_identifier(name)] = None
    return tuple(seen)


def check_key_type(key_type: str) -> None:
    if key_type not in KEY_TYPES:
        raise UsageError(f"unknown key type {key_type!r} (choose from {', '.join(KEY_TYPES)})")


def generate_key(key_type: str) -> bytes:
    check_key_type(key_type)
    key: CertificateIssuerPrivateKeyTypes
    if key_type == "ec256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "ec384":
        key = ec.generate_private_key(ec.SECP384R1())
    else:
        key = rsa.generate_private_key(65537, int(key_type[3:]))
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def split_chain(fullchain_pem: bytes) -> tuple[bytes, bytes]:
    blocks = _PEM_CERT.findall(fullchain_pem)
    if not blocks:
        raise CAError("the CA returned no certificate in PEM form")
    normalized = [b if b.endswith(b"\n") else b + b"\n" for b in blocks]
    return normalized[0], b"".join(normalized[1:])


# -- the issuance pipeline: named, resumable steps ---------------------------------


class Step(enum.Enum):
    """The steps of one issuance, in order; ``IssuanceState.step`` is the next one to run."""

    ORDER = "order"
    PRESENT = "present"
    SELF_CHECK = "self-check"
    ANSWER = "answer"
    POLL = "poll"
    FINALIZE = "finalize"
    STORE = "store"
    DONE = "done"


# The steps during which a challenge is out (presented, maybe answered): a failure there
# deactivates what is still pending and cleans the solver up.
_CHALLENGE_STEPS = (Step.PRESENT, Step.SELF_CHECK, Step.ANSWER, Step.POLL)
_UNANSWERED_STEPS = (Step.PRESENT, Step.SELF_CHECK)  # the CA has not been asked to validate


@dataclass(frozen=True)
class IssuanceState:
    """Where one issuance stands. JSON-serialisable and free of secrets: the private key
    that signed ``csr_pem`` is kept apart (a cluster stores it encrypted)."""

    names: tuple[str, ...]
    step: Step = Step.ORDER
    order_url: str | None = None
    csr_pem: str | None = None
    challenges: tuple[PendingChallenge, ...] = ()
    fullchain_pem: str | None = None
    profile: str | None = None  # the CA's profile to order in (None: the CA's default)
    replaces: str | None = None  # the ARI ID of the certificate this order renews

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "step": self.step.value,
            "order_url": self.order_url,
            "csr_pem": self.csr_pem,
            "challenges": [asdict(c) for c in self.challenges],
            "fullchain_pem": self.fullchain_pem,
            "profile": self.profile,
            "replaces": self.replaces,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IssuanceState:
        try:
            return cls(
                names=tuple(data["names"]),
                step=Step(data["step"]),
                order_url=data.get("order_url"),
                csr_pem=data.get("csr_pem"),
                challenges=tuple(PendingChallenge(**c) for c in data["challenges"]),
                fullchain_pem=data.get("fullchain_pem"),
                profile=data.get("profile"),
                replaces=data.get("replaces"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"the saved issuance state is damaged: {exc!r}") from exc

    def resume_point(self) -> IssuanceState:
        """The state a successor starts from after this one's owner stopped.

        Tokens that were out went with their owner, so a successor presents them again
        (an answered challenge still needs them while the CA validates); a finalized
        order is looked up again rather than finalized twice.
        """
        if self.step in _CHALLENGE_STEPS:
            return replace(self, step=Step.PRESENT)
        return self


SaveCertificate = Callable[[IssuanceState, bytes], None]
StepObserver = Callable[[IssuanceState], None]


class Pipeline:
    """Runs the steps of one issuance with one CA session and one solver.

    ``on_step`` sees every new state before its step runs (a cluster persists it, fenced
    by its lock); ``save`` stores the certificate with its key. With ``keep_unanswered``,
    a failure before any challenge was answered (the self-check refused, the solver failed)
    leaves the order pending at the CA instead of deactivating it, so that the next attempt
    resumes it rather than creating a second order (a cluster keeps its state).
    """

    def __init__(
        self,
        client: CAClient,
        solver: Solver,
        *,
        save: SaveCertificate,
        self_check: SelfCheck | None = None,
        progress: Progress | None = None,
        on_step: StepObserver | None = None,
        keep_unanswered: bool = False,
    ) -> None:
        self.client = client
        self.keep_unanswered = keep_unanswered
        self.solver = solver
        self.save = save
        self.self_check = self_check
        self.progress = progress or (lambda _msg: None)
        self.on_step = on_step or (lambda _state: None)
        self.deactivated: list[Deactivation] = []
        self._order: messages.OrderResource | None = None
        self._steps: dict[Step, Callable[[IssuanceState, bytes], IssuanceState]] = {
            Step.ORDER: self.order,
            Step.PRESENT: self.present,
            Step.SELF_CHECK: self.check,
            Step.ANSWER: self.answer,
            Step.POLL: self.poll,
            Step.FINALIZE: self.finalize,
            Step.STORE: self.store,
        }

    def run(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        while state.step is not Step.DONE:
            self.on_step(state)
            state = self.advance(state, key_pem)
        return state

    def advance(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        """Run the next step; on a failure while challenges are out, withdraw them."""
        try:
            return self._steps[state.step](state, key_pem)
        except AcmelbError:
            if self.keep_unanswered and state.step in _UNANSWERED_STEPS:
                self._cleanup(state)
            elif state.step in _CHALLENGE_STEPS:
                self._withdraw(state)
            raise

    # -- the steps ----------------------------------------------------------------
    def order(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        csr_pem = make_csr(key_pem, state.names)
        what = f" as the replacement of {state.replaces}" if state.replaces else ""
        in_profile = f" in the profile {state.profile}" if state.profile else ""
        self.progress(f"ordering a certificate for {', '.join(state.names)}{in_profile}{what}")
        try:
            self._order = self.client.new_order(
                csr_pem, profile=state.profile, replaces=state.replaces
            )
        except CAProblemError as exc:
            if state.replaces is None or not replaces_refused(exc):
                raise
            # RFC 9773 §5: the order stands without replaces (it only loses the renewal's
            # exemption from rate limits); say so and order once more, without it
            self.progress(f"{exc}; ordering again without replaces")
            state = replace(state, replaces=None)
            self._order = self.client.new_order(csr_pem, profile=state.profile)
        challenges = tuple(self._pending_challenges(self._order))
        return replace(
            state,
            step=Step.PRESENT if challenges else Step.FINALIZE,
            order_url=self._order.uri,
            csr_pem=csr_pem.decode("ascii"),
            challenges=challenges,
        )

    def present(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        self.progress(
            f"presenting {len(state.challenges)} challenge(s) with the {self.solver.name} solver"
        )
        self.solver.present(state.challenges)
        return replace(state, step=Step.SELF_CHECK)

    def check(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        if self.self_check is not None:
            self.self_check(state.challenges)
        return replace(state, step=Step.ANSWER)

    def answer(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        order = self._current_order(state)
        wanted = {c.challenge_url for c in state.challenges}
        for authz in order.authorizations:
            challb = http01_challenge(authz)
            if challb.uri in wanted:
                self.client.answer(order, challb)
        return replace(state, step=Step.POLL)

    def poll(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        self.client.wait_for_authorizations(self._current_order(state))
        self._cleanup(state)
        return replace(state, step=Step.FINALIZE)

    def finalize(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        self.progress("finalizing the order")
        fullchain = self.client.finalize(self._current_order(state))
        return replace(state, step=Step.STORE, fullchain_pem=fullchain.decode("ascii"))

    def store(self, state: IssuanceState, key_pem: bytes) -> IssuanceState:
        self.save(state, key_pem)
        return replace(state, step=Step.DONE)

    # -- helpers --------------------------------------------------------------------
    def _current_order(self, state: IssuanceState) -> messages.OrderResource:
        """The order of ``state``; fetched from the CA when another process started it."""
        if self._order is None or self._order.uri != state.order_url:
            if state.order_url is None or state.csr_pem is None:
                raise StateError("the issuance state has no order to resume")
            self._order = self.client.fetch_order(state.order_url, state.csr_pem.encode())
        return self._order

    def _pending_challenges(self, order: messages.OrderResource) -> list[PendingChallenge]:
        pending = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # the CA reused an earlier validation
            challb = http01_challenge(authz)
            _response, validation = challb.chall.response_and_validation(self.client.key)
            pending.append(
                PendingChallenge(
                    name=authz.body.identifier.value,
                    token=challb.chall.encode("token"),
                    key_authorization=validation,
                    authorization_url=authz.uri,
                    challenge_url=challb.uri,
                )
            )
        return pending

    def _withdraw(self, state: IssuanceState) -> None:
        if self._order is not None:
            for record in self.client.deactivate_pending(self._order):
                self.deactivated.append(record)
                self.progress(
                    f"deactivated the authorization for {record.name} "
                    f"({record.url}): now {record.status}; its challenge was "
                    f"{record.challenge_status}"
                )
        self._cleanup(state)

    def _cleanup(self, state: IssuanceState) -> None:
        try:
            if state.challenges:
                self.solver.cleanup(state.challenges)
        except SolverError as exc:
            self.progress(f"warning: {exc}")


SHORTLIVED = "shortlived"  # Let's Encrypt's profile, the only one it issues IPs in


def ip_profile_warning(client: CAClient, names: Sequence[str], profile: str | None) -> str | None:
    """Let's Encrypt issues IP-address certificates only in its ``shortlived`` profile: a
    warning line when one is ordered in another profile (or none) from a CA that offers
    ``shortlived``. Not a refusal: another CA (Pebble) may issue it in any profile."""
    addresses = [n for n in names if is_ip_address(n)]
    if not addresses or profile == SHORTLIVED or SHORTLIVED not in client.profiles():
        return None
    how = f"in the profile {profile}" if profile else "in the CA's default profile"
    return (
        f"warning: {', '.join(addresses)}: ordered {how}; Let's Encrypt issues certificates "
        f"for IP addresses only in the {SHORTLIVED} profile, which this CA offers (add "
        f"--profile {SHORTLIVED} if the order is refused)"
    )


def check_profile(client: CAClient, profile: str | None) -> None:
    """A profile the CA does not offer is a one-line error, before any order."""
    if profile is None:
        return
    offered = client.profiles()
    if profile not in offered:
        listed = ", ".join(sorted(offered)) or "no profiles"
        raise UsageError(
            f"profile {profile!r}: the CA at {client.config.directory_url} offers {listed}"
        )


def stored_timing(store: Store, name: str) -> ari.AriState | None:
    """The lineage's renewal timing as last stored, else its lifetime's window (nothing
    asked of the CA, nothing written); None when its certificate cannot be read."""
    try:
        return renewal_timing(store, name, None)
    except (OSError, ValueError):
        return None


def make_csr(key_pem: bytes, names: Sequence[str]) -> bytes:
    """A CSR for DNS names and IP addresses: an IP only in the SAN, never in the Common
    Name (RFC 8738; the acme library puts no Common Name at all)."""
    domains = [n for n in names if not is_ip_address(n)]
    addresses = [ipaddress.ip_address(n) for n in names if is_ip_address(n)]
    return acme_crypto.make_csr(key_pem, domains or None, ipaddrs=addresses or None)


def replaces_refused(exc: CAProblemError) -> bool:
    """A newOrder refused for its ``replaces``: already replaced, another account's
    certificate, or one the CA does not know (after a switch of CA) or cannot match."""
    kind = (exc.problem_type or "").rsplit(":", 1)[-1]
    text = str(exc).lower()
    if kind in ("alreadyReplaced", "unauthorized"):
        return True
    return kind in ("malformed", "serverInternal") and any(
        word in text for word in ("replace", "certid", "certificate")
    )


class Issuer:
    """Runs issuances for one local store; one CA session per directory."""

    def __init__(self, store: Store, *, progress: Progress | None = None) -> None:
        self.store = store
        self.progress = progress or (lambda _msg: None)
        self.deactivated: list[Deactivation] = []

    def issue(
        self, request: IssueRequest, *, client: CAClient | None = None, solver: Solver | None = None
    ) -> IssueResult:
        """One certificate. ``client`` and ``solver`` may be shared by concurrent calls."""
        names = normalize_names(request.names)
        check_key_type(request.key_type)
        self.store.prepare()
        client = client or open_account(self.store, request.ca)
        check_profile(client, request.profile)
        # once, for a new lineage: a renewal repeats an order the CA already issued
        warning = ip_profile_warning(client, names, request.profile)
        if warning is not None and not self.store.lineage(names[0]).exists():
            self.progress(warning)
        with self.store.lock(names[0]):
            own_solver = solver is None
            solver = solver or make_solver(request.solver, client.thumbprint)
            try:
                return self._issue_locked(client, solver, request, names)
            finally:
                if own_solver:
                    solver.close()

    def issue_many(
        self,
        requests: Sequence[IssueRequest],
        *,
        concurrency: int = 8,
        on_done: Callable[[IssueRequest, IssueResult | AcmelbError], None] | None = None,
    ) -> list[IssueResult | AcmelbError]:
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
                    request, client=per_thread.client, solver=solver
                )
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

    def _issue_locked(
        self, client: CAClient, solver: Solver, request: IssueRequest, names: tuple[str, ...]
    ) -> IssueResult:
        lineage = self.store.lineage(names[0])
        key_pem = (
            lineage.read("privkey")
            if request.reuse_key and lineage.exists()
            else generate_key(request.key_type)
        )
        self_check = make_self_check(request.self_check, request.solver, self.progress)
        config = request.renewal_config(names)

        def save(state: IssuanceState, key: bytes) -> None:
            assert state.fullchain_pem is not None
            cert_pem, chain_pem = split_chain(state.fullchain_pem.encode("ascii"))
            self.store.save(
                lineage.name,
                privkey_pem=key,
                cert_pem=cert_pem,
                chain_pem=chain_pem,
                renewal=config.to_json(),
            )

        pipeline = Pipeline(
            client, solver, save=save, self_check=self_check, progress=self.progress
        )
        try:
            state = IssuanceState(names=names, profile=request.profile, replaces=request.replaces)
            pipeline.run(state, key_pem)
        except ValidationFailedError as failed:
            if self_check is not None:
                failed.notes = compare_with_ca(self_check.reports, failed.failures)
            raise
        finally:
            self.deactivated.extend(pipeline.deactivated)
        return self._result(lineage, names, client.thumbprint, self_check)

    def _result(
        self,
        lineage: Lineage,
        names: tuple[str, ...],
        thumbprint: str,
        self_check: SelfCheckRun | None,
    ) -> IssueResult:
        cert = x509.load_pem_x509_certificate(lineage.read("cert"))
        version = lineage.current_version()
        assert version is not None
        return IssueResult(
            name=lineage.name,
            names=names,
            version=version,
            not_after=cert.not_valid_after_utc,
            live_dir=lineage.live_dir,
            fullchain=lineage.path("fullchain"),
            privkey=lineage.path("privkey"),
            account_thumbprint=thumbprint,
            self_check=tuple(self_check.reports) if self_check else (),
            warnings=tuple(self_check.warnings()) if self_check else (),
        )


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
            infos.append(
                CertificateInfo(
                    lineage.name, (lineage.name,), None, None, lineage.live_dir, problem=str(exc)
                )
            )
            continue
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = tuple(san.value.get_values_for_type(x509.DNSName)) + tuple(
                str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            names = (lineage.name,)
        left = (cert.not_valid_after_utc - now).total_seconds() / 86400
        infos.append(
            CertificateInfo(lineage.name, names, cert.not_valid_after_utc, left, lineage.live_dir)
        )
    return infos


@dataclass(frozen=True)
class RenewOutcome:
    name: str
    action: str  # "renewed" | "not-due" | "failed"
    detail: str
    result: IssueResult | None = None


def renew(
    store: Store,
    names: Sequence[str] | None,
    *,
    days: float | None = None,
    deploy_hook: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    concurrency: int = 8,
) -> list[RenewOutcome]:
    """Renew the named lineages (all when ``names`` is None) that are due.

    Due: past the moment chosen in the CA's ARI window, or in the lifetime's window when
    the CA has no ARI (``acmelb.acme.ari``); with ``days``, when fewer days are left (an
    explicit override). A renewal in the CA's window carries ``replaces``. Each renews
    with the settings it was issued with, its profile and self-check included. Due
    lineages that share a CA and a solver are renewed concurrently.
    """
    infos = {info.name: info for info in inspect_certificates(store)}
    wanted = list(infos) if names is None else [normalize_identifier(n) for n in names]
    outcomes: dict[str, RenewOutcome] = {}
    due: dict[tuple[CAConfig, SolverOptions], list[tuple[str, IssueRequest]]] = {}
    clients = _Clients(store)
    for name in wanted:
        info = infos.get(name)
        try:
            if info is None:
                raise StateError(f"no certificate named {name} in {store.root}")
            config = RenewalConfig.load(store.lineage(name))
            request, detail = _renewal_due(store, info, config, clients, days=days, force=force)
        except AcmelbError as exc:
            outcomes[name] = RenewOutcome(name, "failed", str(exc))
            continue
        if request is None:
            outcomes[name] = RenewOutcome(name, "not-due", detail)
        else:
            due.setdefault((request.ca, request.solver), []).append((name, request))
    _renew_due(store, due, outcomes, deploy_hook, progress, concurrency)
    return [outcomes[name] for name in wanted]


class _Clients:
    """One CA session per CA within a run (for the ARI polls)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._clients: dict[CAConfig, CAClient] = {}

    def get(self, ca: CAConfig) -> CAClient:
        if ca not in self._clients:
            self._clients[ca] = open_account(self.store, ca)
        return self._clients[ca]


def _renewal_due(
    store: Store,
    info: CertificateInfo,
    config: RenewalConfig,
    clients: _Clients,
    *,
    days: float | None,
    force: bool,
) -> tuple[IssueRequest | None, str]:
    """The renewal request if ``info`` is due, else None and when it will be."""
    if config.solver.kind == "cluster":
        make_solver(config.solver, "")  # raises: the agents renew it, not this command
    if force:
        return IssueRequest.renewing(config), ""
    if days is not None:
        if info.days_left is not None and info.days_left > days:
            return None, f"expires in {info.days_left:.0f} days"
        return IssueRequest.renewing(config), ""
    try:
        client: CAClient | None = clients.get(config.ca)
    except CAError:  # the CA is away: judge by what is known (a due renewal fails anyway)
        client = None
    state = renewal_timing(store, info.name, client)
    cert = x509.load_pem_x509_certificate(store.lineage(info.name).read("cert"))
    due = ari.renew_by(
        state.moment, cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    )
    if time.time() < due:
        return None, ari.describe(state)
    replaces = state.cert_id if state.source == "ari" and state.cert_id else None
    return IssueRequest.renewing(config, replaces=replaces), ari.describe(state)


def renewal_timing(store: Store, name: str, client: CAClient | None) -> ari.AriState:
    """The lineage's renewal timing, refreshed from the CA's ARI when its Retry-After
    allows (``client`` None: no CA asked), and stored beside its renewal settings."""
    lineage = store.lineage(name)
    cert = x509.load_pem_x509_certificate(lineage.read("cert"))
    path = ari_state_path(lineage)
    previous = ari.load_state(path, cert)
    if client is None:
        return previous or ari.timing(cert, None, None, now=time.time())
    fetch = client.renewal_info if client.renewal_info_url else None
    state = ari.timing(cert, previous, fetch, now=time.time())
    if state != previous:
        ari.save_state(path, state)
    return state


def ari_state_path(lineage: Lineage) -> Path:
    """STATE/renewal/NAME.ari.json, beside the lineage's renewal settings."""
    return lineage.renewal_path.with_name(f"{lineage.name}.ari.json")


def _renew_due(
    store: Store,
    due: dict[tuple[CAConfig, SolverOptions], list[tuple[str, IssueRequest]]],
    outcomes: dict[str, RenewOutcome],
    deploy_hook: str | None,
    progress: Progress | None,
    concurrency: int,
) -> None:
    issuer = Issuer(store, progress=progress)
    for batch in due.values():
        try:
            results: list[IssueResult | AcmelbError] = issuer.issue_many(
                [request for _, request in batch], concurrency=concurrency
            )
        except AcmelbError as exc:  # the account or the solver failed for the whole batch
            results = [exc] * len(batch)
        for (name, _), result in zip(batch, results, strict=True):
            if isinstance(result, AcmelbError):
                outcomes[name] = RenewOutcome(name, "failed", str(result))
                continue
            detail = f"renewed, valid until {result.not_after:%Y-%m-%d %H:%M} UTC"
            if deploy_hook:
                detail += run_deploy_hook(deploy_hook, result.live_dir, result.names)
            outcomes[name] = RenewOutcome(name, "renewed", detail, result)


HOOK_TIMEOUT = 300.0  # seconds a deploy hook may run
HOOK_OUTPUT_LINES = 10  # the last lines of its output that are kept
HOOK_OUTPUT_CHARS = 2000


@dataclass(frozen=True)
class HookOutcome:
    """How a deploy hook ended: its exit status (None: timed out or could not start) and
    the last lines of what it wrote to stdout and stderr."""

    exit_status: int | None
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def clause(self) -> str:
        """What happened, as a clause to append to a status line."""
        if self.ok:
            return "; deploy hook ran"
        last = self.output.splitlines()[-1] if self.output else ""
        said = f": {last}" if last else ""
        if self.exit_status is None:
            return f"; deploy hook failed ({self.output or 'no output'})"
        return f"; deploy hook exited {self.exit_status}{said}"


def run_deploy_hook_outcome(
    command: str, live_dir: Path, names: Sequence[str], timeout: float = HOOK_TIMEOUT
) -> HookOutcome:
    """certbot's deploy hook: ``command`` through the shell with RENEWED_LINEAGE (one
    lineage's live directory) and RENEWED_DOMAINS (its names, space-separated)."""
    return run_deploy_hook_batch(command, [(live_dir, names)], timeout)


def run_deploy_hook_batch(
    command: str, lineages: Sequence[tuple[Path, Sequence[str]]], timeout: float = HOOK_TIMEOUT
) -> HookOutcome:
    """One run of ``command`` for several lineages installed together (one reload of the
    server for all of them). certbot's variables describe the first lineage, so that a
    hook written for one lineage works; RENEWED_LINEAGES lists every live directory, one
    a line, and RENEWED_DOMAINS_ALL every name of every lineage, space-separated."""
    first_dir, first_names = lineages[0]
    env = {
        **os.environ,
        "RENEWED_LINEAGE": str(first_dir),
        "RENEWED_DOMAINS": " ".join(first_names),
        "RENEWED_LINEAGES": "\n".join(str(live) for live, _ in lineages),
        "RENEWED_DOMAINS_ALL": " ".join(n for _, names in lineages for n in names),
    }
    try:
        proc = subprocess.run(
            command,
            shell=True,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return HookOutcome(None, f"timed out after {timeout:.0f} s")
    except OSError as exc:
        return HookOutcome(None, f"could not start: {exc.strerror or exc}")
    return HookOutcome(proc.returncode, _tail(proc.stdout + proc.stderr))


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()][-HOOK_OUTPUT_LINES:]
    return "\n".join(lines)[-HOOK_OUTPUT_CHARS:]


def run_deploy_hook(command: str, live_dir: Path, names: Sequence[str]) -> str:
    """The deploy hook run (``run_deploy_hook_outcome``); what happened, as a clause."""
    outcome = run_deploy_hook_outcome(command, live_dir, names)
    if outcome.exit_status is None and outcome.output.startswith("timed out"):
        return "; deploy hook timed out after 300 s"
    if not outcome.ok and outcome.exit_status is not None:
        return f"; deploy hook exited {outcome.exit_status}"
    return outcome.clause()


REVOCATION_REASONS = {
    "unspecified": 0,
    "keycompromise": 1,
    "affiliationchanged": 3,
    "superseded": 4,
    "cessationofoperation": 5,
}


def revoke(
    store: Store, name: str, *, reason: str = "unspecified", ca: CAConfig | None = None
) -> CertificateInfo:
    name = normalize_identifier(name)
    code = REVOCATION_REASONS.get(reason.lower().replace("-", "").replace("_", ""))
    if code is None:
        raise UsageError(f"unknown reason {reason!r} (choose from {', '.join(REVOCATION_REASONS)})")
    lineage = store.lineage(name)
    if not lineage.exists():
        raise StateError(f"no certificate named {name} in {store.root}")
    config = ca or RenewalConfig.load(lineage).ca
    cert = x509.load_pem_x509_certificate(lineage.read("cert"))
    client = open_account(store, config, register=False)
    client.call(lambda: client.acme.revoke(cert, code), what="revoke the certificate")
    info = next(i for i in inspect_certificates(store) if i.name == name)
    return info
