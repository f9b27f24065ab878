"""Talking to an ACME server through certbot's ``acme`` library.

The library does the protocol (JWS, nonces, messages); this module adds what
a tool on a fleet needs around it: errors a person can act on, retries of what
is safe to retry (``badNonce``, ``rateLimited`` and 5xx with ``Retry-After``,
dropped connections), and short polling that honours ``Retry-After`` instead
of the library's fixed one-second sleeps.

Importing this module costs ~0.4 s (``acme.client``): import it only in
commands that talk to a CA.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import b64 as jose_b64
from josepy import errors as jose_errors
from josepy import json_util, jwa
from josepy.jwk import JWK, JWKEC

from acmelb.acme.store import Store, atomic_write, ensure_private_dir, remove_stale_temps
from acmelb.errors import (
    CAError,
    CAProblemError,
    CAUnreachableError,
    StateError,
    UsageError,
    ValidationFailedError,
)
from acmelb.names import challenge_url
from acmelb.version import __version__

DIRECTORY_ALIASES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
USER_AGENT = f"acmelb/{__version__} acme-python"
ALREADY_REPLACED = "urn:ietf:params:acme:error:alreadyReplaced"
NETWORK_TIMEOUT = 30
MAX_BAD_NONCE_RETRIES = 10
MAX_RETRY_WAIT = 60.0  # longest single Retry-After we honour before giving up
MAX_TRANSIENT_RETRIES = 4
AUTHORIZATION_TIMEOUT = 90.0
FINALIZE_TIMEOUT = 90.0

T = TypeVar("T")


def resolve_directory(value: str) -> str:
    url = DIRECTORY_ALIASES.get(value, value)
    if not url.startswith(("https://", "http://")):
        raise UsageError(
            f"--directory {value!r}: give an https:// URL, 'letsencrypt' or 'letsencrypt-staging'"
        )
    return url


class NewOrderReplacing(messages.NewOrder):
    """newOrder with RFC 9773 §5's ``replaces``: the ARI certificate ID of the certificate
    this order renews (certbot's ``acme`` has no such field; the message is extended,
    the library's order flow is kept)."""

    replaces: str | None = json_util.field("replaces", omitempty=True)


class _Client(acme_client.ClientV2):
    """The acme library's client, whose next newOrder carries ``replaces`` when set."""

    replaces: str | None = None

    def _post(self, url: str, obj: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if self.replaces and isinstance(obj, messages.NewOrder):
            obj = NewOrderReplacing.from_json({**obj.to_json(), "replaces": self.replaces})
        response: requests.Response = super()._post(url, obj, *args, **kwargs)
        return response


class _Network(acme_client.ClientNetwork):
    """ClientNetwork that remembers the last response, for its Retry-After header."""

    last_response: requests.Response | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = None
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_response = response
        return response

    def status(self) -> int:
        """The last response's HTTP status, 0 if there was none.

        (Not ``if self.last_response``: a requests Response is falsy for 4xx/5xx.)
        """
        return self.last_response.status_code if self.last_response is not None else 0

    def retry_after_seconds(self, default: float) -> float:
        header = (
            self.last_response.headers.get("Retry-After")
            if self.last_response is not None
            else None
        )
        return parse_retry_after(header, default)


def parse_retry_after(header: str | None, default: float) -> float:
    """Seconds to wait per an HTTP Retry-After value (delta-seconds or HTTP date)."""
    if not header:
        return default
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


@dataclass(frozen=True)
class CAConfig:
    directory_url: str
    ca_bundle: Path | None = None
    email: str | None = None


def _problem_text(error: messages.Error) -> str:
    code = error.code or (error.typ or "problem").rsplit(":", 1)[-1]
    detail = error.detail or error.title or "no detail given"
    return f"{detail} ({code})"


class CAClient:
    """One account at one ACME server, with one HTTP session for all requests."""

    def __init__(
        self,
        config: CAConfig,
        account_key: JWK,
        account: messages.RegistrationResource | None = None,
    ) -> None:
        self.config = config
        self.key = account_key
        alg = jwa.ES256 if isinstance(account_key, JWKEC) else jwa.RS256
        self.net = _Network(
            account_key, account=account, alg=alg, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT
        )
        if config.ca_bundle is not None:
            if not config.ca_bundle.is_file():
                raise UsageError(f"--ca-bundle {config.ca_bundle}: no such file")
            # requests takes a CA bundle path wherever it takes verify=True.
            self.net.verify_ssl = str(config.ca_bundle)  # type: ignore[assignment]
        directory = self.call(
            lambda: acme_client.ClientV2.get_directory(config.directory_url, self.net),
            what="fetch the directory",
        )
        self.acme = _Client(directory, self.net)

    @property
    def thumbprint(self) -> str:
        return jose_b64.b64encode(self.key.thumbprint()).decode("ascii")

    # -- the retry policy -----------------------------------------------------
    def call(self, fn: Callable[[], T], *, what: str) -> T:
        """Run one protocol step; retry what is safe, translate failures to CAError."""
        bad_nonces = transient = 0
        while True:
            try:
                return fn()
            except acme_errors.ConflictError:
                raise  # not a failure: the caller knows what it means
            except messages.Error as error:
                if error.code == "badNonce" and bad_nonces < MAX_BAD_NONCE_RETRIES:
                    bad_nonces += 1
                    continue
                status = self.net.status()
                if (
                    error.code in ("rateLimited", "serverInternal") or status >= 500
                ) and transient < MAX_TRANSIENT_RETRIES:
                    transient += 1
                    self._wait_before_retry(what, _problem_text(error), transient, error.typ)
                    continue
                raise CAProblemError(
                    f"the CA refused to {what}: {_problem_text(error)}", error.typ
                ) from error
            except requests.exceptions.SSLError as exc:
                raise CAUnreachableError(
                    f"TLS verification failed for {self.config.directory_url}: "
                    f"{_root_cause(exc)} (for a private or test CA, pass its certificate "
                    "with --ca-bundle PEM)"
                ) from exc
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError,  # the answer was cut short
                acme_errors.ClientError,
            ) as exc:
                status = self.net.status()
                # A 429 or 5xx without an ACME problem: a proxy or load balancer in front
                # of the CA (an HTML error page); as retriable as the CA's own.
                answered = isinstance(exc, acme_errors.ClientError) and (
                    status >= 500 or status == 429
                )
                retriable = not isinstance(exc, acme_errors.ClientError) or answered
                if isinstance(exc, requests.exceptions.ReadTimeout):
                    if self._looks_hung():
                        raise CAUnreachableError(
                            f"the CA at {self.config.directory_url} accepts connections and "
                            f"serves its directory, but did not answer while trying to {what} "
                            f"within {NETWORK_TIMEOUT} s: it looks hung (a test Pebble can "
                            "deadlock: restart it); run again later"
                        ) from exc
                    retriable = transient < 1  # a slow CA gets one more chance, not four
                if retriable and transient < MAX_TRANSIENT_RETRIES:
                    transient += 1
                    if answered:
                        self._wait_before_retry(what, f"HTTP {status}", transient, None)
                    else:
                        time.sleep(min(0.25 * 2**transient, 4.0))
                    continue
                if isinstance(exc, acme_errors.ClientError):
                    raise CAError(
                        f"unexpected answer from the CA while trying to {what}: "
                        f"HTTP {status or '?'}"
                    ) from exc
                raise CAUnreachableError(
                    f"cannot reach the CA at {self.config.directory_url} to {what}: "
                    f"{_root_cause(exc)}"
                ) from exc
            except (ValueError, jose_errors.DeserializationError) as exc:
                raise CAError(
                    f"the CA's answer while trying to {what} is not valid ACME "
                    f"JSON ({exc}); is --directory the ACME directory URL?"
                ) from exc

    def _looks_hung(self) -> bool:
        """Directory answers at once while a real request timed out: a deadlocked CA."""
        try:
            response = self.net.session.get(
                self.config.directory_url, timeout=5, verify=self.net.verify_ssl
            )
        except requests.exceptions.RequestException:
            return False
        return response.status_code == 200

    def _wait_before_retry(self, what: str, problem: str, attempt: int, typ: str | None) -> None:
        wait = self.net.retry_after_seconds(default=min(0.5 * 2**attempt, 8.0))
        if wait > MAX_RETRY_WAIT:
            raise CAProblemError(
                f"the CA refused to {what}: {problem}; it asks to retry after "
                f"{wait:.0f} s, longer than acmelb waits ({MAX_RETRY_WAIT:.0f} s): "
                "run again later",
                typ,
            )
        time.sleep(wait)

    # -- polling --------------------------------------------------------------
    def poll_until(
        self, fetch: Callable[[], T], done: Callable[[T], bool], *, deadline: float, what: str
    ) -> T:
        """Poll with short, growing intervals; honour Retry-After; stop at ``deadline``."""
        interval = 0.02
        while True:
            value = self.call(fetch, what=what)
            if done(value):
                return value
            if time.monotonic() >= deadline:
                raise CAError(f"timed out waiting for the CA to {what}")
            wait = self.net.retry_after_seconds(default=interval)
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            interval = min(interval * 1.6, 1.0)

    # -- the protocol steps of one order, through the acme library's public API --
    def post_as_get(self, url: str) -> requests.Response:
        """RFC 8555 §6.3: a signed POST with an empty payload (wrap it in ``call``)."""
        response: requests.Response = self.net.post(
            url, None, new_nonce_url=self.acme.directory["newNonce"]
        )
        return response

    def new_order(
        self, csr_pem: bytes, *, profile: str | None = None, replaces: str | None = None
    ) -> messages.OrderResource:
        """newOrder, in ``profile`` if given, as the replacement of the certificate whose
        ARI ID is ``replaces`` if given. A 409 here is RFC 9773's alreadyReplaced."""

        def order() -> messages.OrderResource:
            self.acme.replaces = replaces
            try:
                return self.acme.new_order(csr_pem, profile=profile)
            finally:
                self.acme.replaces = None

        try:
            return self.call(order, what="create the order")
        except acme_errors.ConflictError as exc:
            raise CAProblemError(
                f"the CA refused to create the order: the certificate {replaces} already has "
                "a replacement (alreadyReplaced)",
                ALREADY_REPLACED,
            ) from exc

    def profiles(self) -> dict[str, str]:
        """The profiles the CA offers (``meta.profiles``): name -> description."""
        meta = self.acme.directory.meta
        offered = getattr(meta, "profiles", None) or {}
        return {str(name): str(text) for name, text in dict(offered).items()}

    @property
    def renewal_info_url(self) -> str | None:
        """The CA's ARI endpoint (RFC 9773 §4), or None when it offers none."""
        try:
            url = self.acme.directory["renewalInfo"]
        except KeyError:
            return None
        return str(url).rstrip("/") if url else None

    def renewal_info(self, cert_id: str) -> tuple[bytes, float | None]:
        """GET renewalInfo/<certID> (unauthenticated): the body, and Retry-After in
        seconds when the CA sent one."""
        base = self.renewal_info_url
        if base is None:
            raise CAError("the CA offers no renewal information (no renewalInfo)")

        def fetch() -> requests.Response:
            response: requests.Response = self.net.get(f"{base}/{cert_id}")
            return response

        response = self.call(fetch, what="fetch the renewal information")
        header = response.headers.get("Retry-After")
        return response.content, parse_retry_after(header, -1.0) if header else None

    def order_document(self, url: str) -> dict[str, Any]:
        """An order as the CA shows it, every field kept (``replaces`` and ``profile``)."""

        def fetch() -> dict[str, Any]:
            document: dict[str, Any] = self.post_as_get(url).json()
            return document

        return self.call(fetch, what="look up the order")

    def fetch_authorization(self, url: str) -> messages.AuthorizationResource:
        def fetch() -> messages.AuthorizationResource:
            body = messages.Authorization.from_json(self.post_as_get(url).json())
            return messages.AuthorizationResource(body=body, uri=url)

        return self.call(fetch, what="look up the authorization")

    def fetch_order_body(self, url: str) -> messages.Order:
        def fetch() -> messages.Order:
            body: messages.Order = messages.Order.from_json(self.post_as_get(url).json())
            return body

        return self.call(fetch, what="look up the order")

    def fetch_order(self, url: str, csr_pem: bytes) -> messages.OrderResource:
        """An order created earlier (by this process or another), to resume it."""
        body = self.fetch_order_body(url)
        authorizations = [self.fetch_authorization(a) for a in body.authorizations]
        return messages.OrderResource(
            body=body, uri=url, authorizations=authorizations, csr_pem=csr_pem
        )

    def answer(self, order: messages.OrderResource, challb: messages.ChallengeBody) -> None:
        response = challb.chall.response(self.key)
        try:
            self.call(
                partial(self.acme.answer_challenge, challb, response), what="answer the challenge"
            )
        except CAProblemError:
            # A lost answer to a POST the CA did act on: the retried POST meets a
            # challenge that is no longer pending. That is the answer we wanted.
            if self._challenge_left_pending(order, challb):
                raise

    def _challenge_left_pending(
        self, order: messages.OrderResource, challb: messages.ChallengeBody
    ) -> bool:
        for authz in order.authorizations:
            current = self.fetch_authorization(authz.uri)
            for candidate in current.body.challenges:
                if candidate.uri == challb.uri:
                    return bool(candidate.status == messages.STATUS_PENDING)
        return True

    def wait_for_authorizations(
        self, order: messages.OrderResource, timeout: float = AUTHORIZATION_TIMEOUT
    ) -> None:
        """Poll until every authorization settles; ValidationFailedError names the failures."""
        deadline = time.monotonic() + timeout
        failures: list[tuple[str, str, str]] = []
        for authz in order.authorizations:
            final = self.poll_until(
                partial(self.fetch_authorization, authz.uri),
                _authorization_settled,
                deadline=deadline,
                what="validate the challenges",
            )
            if final.body.status != messages.STATUS_VALID:
                failures.append(failure_detail(final))
        if failures:
            lines = "; ".join(
                f"{name}: the CA fetched {url} and said: {detail}" for name, url, detail in failures
            )
            raise ValidationFailedError(f"validation failed: {lines}", failures)

    def deactivate_pending(self, order: messages.OrderResource) -> list[Deactivation]:
        """RFC 8555 §7.5.2: leave nothing pending that a later run would trip over.

        Best effort, on a path that is already failing: an authorization that cannot
        be looked up or deactivated is skipped.
        """
        done: list[Deactivation] = []
        for authz in order.authorizations:
            try:
                current = self.acme.poll(authz)[0]
                if current.body.status != messages.STATUS_PENDING:
                    continue
                after = self.acme.deactivate_authorization(current)
            except Exception:  # best effort, see above
                continue
            done.append(Deactivation.of(current, after))
        return done

    def finalize(self, order: messages.OrderResource, timeout: float = FINALIZE_TIMEOUT) -> bytes:
        """Finalize a ready order, wait until it is valid and download the full chain."""
        deadline = time.monotonic() + timeout
        try:
            self.call(lambda: self.acme.begin_finalization(order), what="finalize the order")
        except CAError:
            # The first attempt may have reached the CA before the connection broke.
            status = self.fetch_order_body(order.uri).status
            if status not in (messages.STATUS_PROCESSING, messages.STATUS_VALID):
                raise
        body = self.poll_until(
            partial(self.fetch_order_body, order.uri),
            lambda o: o.status in (messages.STATUS_VALID, messages.STATUS_INVALID),
            deadline=deadline,
            what="issue the certificate",
        )
        if body.status != messages.STATUS_VALID or body.certificate is None:
            detail = f": {body.error.detail}" if body.error is not None else ""
            raise CAError(f"the CA did not issue the certificate{detail}")
        return self.download(body.certificate)

    def download(self, certificate_url: str) -> bytes:
        response = self.call(
            partial(self.post_as_get, certificate_url), what="download the certificate"
        )
        fullchain: bytes = response.content
        return fullchain


@dataclass(frozen=True)
class Deactivation:
    """An authorization deactivated after deciding not to answer it."""

    name: str
    url: str
    status: str  # as the CA reports it after deactivation
    challenge_status: str  # the http-01 challenge before deactivation: "pending" = unanswered

    @classmethod
    def of(
        cls, before: messages.AuthorizationResource, after: messages.AuthorizationResource
    ) -> Deactivation:
        # The challenge as it stood just before: "pending" means it was never answered.
        statuses = [
            c.status.name
            for c in before.body.challenges
            if isinstance(c.chall, acme_challenges.HTTP01)
        ]
        return cls(
            name=after.body.identifier.value,
            url=after.uri,
            status=after.body.status.name,
            challenge_status=statuses[0] if statuses else "none",
        )


def http01_challenge(authz: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authz.body.challenges:
        if isinstance(challb.chall, acme_challenges.HTTP01):
            return challb
    name = authz.body.identifier.value
    raise CAError(f"the CA offers no http-01 challenge for {name}")


def failure_detail(authz: messages.AuthorizationResource) -> tuple[str, str, str]:
    """(name, the URL the CA fetched, the CA's words) of a failed authorization."""
    name = authz.body.identifier.value
    for challb in authz.body.challenges:
        if isinstance(challb.chall, acme_challenges.HTTP01):
            url = challenge_url(name, challb.chall.encode("token"))
            if challb.error is not None:
                err = challb.error
                return name, url, f"{err.detail or err.title} ({err.code or err.typ})"
            return name, url, f"challenge {challb.status}"
    return name, "", f"authorization {authz.body.status}"


def _authorization_settled(authz: messages.AuthorizationResource) -> bool:
    return authz.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc.args[-1] if exc.args else exc)
    return text.split("] ", 1)[-1][:200]


# -- accounts -----------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    uri: str
    thumbprint: str
    contact: tuple[str, ...]
    directory_url: str
    key_path: Path


def _load_key(path: Path) -> JWK:
    try:
        return JWK.json_loads(path.read_text())
    except (ValueError, jose_errors.DeserializationError) as exc:
        raise StateError(f"account key {path} is damaged: {exc}") from exc


def _new_key() -> JWK:
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


def open_account(store: Store, config: CAConfig, *, register: bool = True) -> CAClient:
    """A client logged in as this directory's account, registering it if needed."""
    store.prepare()
    account_dir = store.account_dir(config.directory_url)
    key_path = account_dir / "private_key.json"
    regr_path = account_dir / "regr.json"
    with store.lock("accounts"):
        remove_stale_temps(account_dir)  # left by a run killed while writing here
        if key_path.exists():
            key = _load_key(key_path)
            if regr_path.exists():
                try:
                    regr = messages.RegistrationResource.json_loads(regr_path.read_text())
                except (ValueError, jose_errors.DeserializationError) as exc:
                    raise StateError(f"account record {regr_path} is damaged: {exc}") from exc
                return CAClient(config, key, regr)
        elif not register:
            raise StateError(
                f"no account for {config.directory_url} in {store.root}; "
                "run `acmelb account register` or `acmelb issue` first"
            )
        else:
            key = _new_key()
            ensure_private_dir(account_dir)
            atomic_write(key_path, key.json_dumps().encode(), 0o600)
        client = CAClient(config, key)
        regr = register_account(client)
        atomic_write(regr_path, regr.json_dumps(indent=2).encode(), 0o600)
        atomic_write(
            account_dir / "meta.json",
            json.dumps({"directory": config.directory_url}).encode(),
            0o600,
        )
        return client


def register_account(client: CAClient) -> messages.RegistrationResource:
    """Log ``client`` in as its key's account, creating it if the CA does not know the key.

    Idempotent: registering a known key answers with its existing account, so every
    instance of a cluster sharing one key ends up on one account.
    """
    new = messages.NewRegistration.from_data(
        email=client.config.email, terms_of_service_agreed=True
    )
    try:
        regr = client.call(lambda: client.acme.new_account(new), what="register an account")
    except acme_errors.ConflictError as exc:
        # The key is known to the CA already: fetch its account URL.
        known = messages.RegistrationResource(uri=str(exc.location), body=messages.Registration())
        regr = client.call(
            lambda: client.acme.query_registration(known), what="look up the account"
        )
    client.net.account = regr
    return regr


def new_account_key() -> JWK:
    return _new_key()


def thumbprint_of(key_json: str) -> str:
    """RFC 7638 thumbprint (base64url) of an account key given as JWK JSON."""
    return jose_b64.b64encode(JWK.json_loads(key_json).thumbprint()).decode("ascii")


def describe_account(client: CAClient, store: Store) -> Account:
    regr = client.net.account
    assert regr is not None
    contact = tuple(regr.body.contact or ())
    return Account(
        uri=regr.uri,
        thumbprint=client.thumbprint,
        contact=contact,
        directory_url=client.config.directory_url,
        key_path=store.account_dir(client.config.directory_url) / "private_key.json",
    )
