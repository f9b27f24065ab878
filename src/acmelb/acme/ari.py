"""When to renew: ACME Renewal Information (RFC 9773), else a share of the lifetime.

A CA that offers ARI (``renewalInfo`` in its directory) says, per certificate, a
suggested window to renew in; it moves the window into the past when the certificate
must be replaced early (a mass revocation, an incident), with an ``explanationURL``.
Since OCSP is gone (Let's Encrypt, 2025-08-06), ARI is the only way a client learns
that. The client (RFC 9773 §4.2, and Let's Encrypt's integration guide):

* names the certificate by its ID: the Authority Key Identifier's keyIdentifier and the
  serial's DER bytes, each base64url without padding, joined by a dot (§4.1);
* asks again after the response's ``Retry-After`` (Let's Encrypt: about 6 h; at least
  twice a day), across runs;
* picks a uniformly random moment in the window, once per window, and renews when the
  moment has passed; a window whose end is past means "now";
* marks the renewal order with ``replaces`` (§5): the ID of the certificate it replaces.

Without ARI (a CA that offers none, or an answer that cannot be read), the window is
derived from the certificate: it closes when a third of the lifetime is left (half, for
a lifetime under 10 days: Let's Encrypt's guide) and opens a twelfth of the lifetime
before. Whatever the window, a certificate is renewed before a third of its lifetime is
left (``renew_by``).

The state (``AriState``) is kept per lineage and bound to the certificate's serial: a new
version starts afresh, so a window fetched for the certificate just replaced can never
trigger a second renewal.
"""

from __future__ import annotations

import base64
import datetime
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography import x509

from acmelb.acme.store import atomic_write

# Let's Encrypt's guide: poll at least twice a day; never more often than this
DEFAULT_POLL = 6 * 3600.0
MIN_POLL = 60.0
MAX_POLL = 24 * 3600.0
SHORT_LIFETIME = 10 * 86400.0  # under this, renew at half the lifetime
LAST_SHARE = 1 / 3  # whatever the window, renew before only this share of the lifetime is left


@dataclass(frozen=True)
class Window:
    start: float  # epoch seconds
    end: float

    def moment(self, rng: random.Random | None = None) -> float:
        """A uniformly random moment in the window (RFC 9773 §4.2)."""
        return (rng or random).uniform(self.start, self.end)


@dataclass(frozen=True)
class AriState:
    """What is known about when one certificate (by its serial) should be renewed."""

    cert_id: str
    serial: str  # hex: the certificate this state belongs to
    source: str  # "ari" (the CA's window) or "lifetime" (derived from the certificate)
    window: Window
    moment: float  # the random moment chosen in ``window``
    next_poll: float  # when the CA may be asked again (Retry-After), 0: never asked
    explanation_url: str | None = None
    warning: str | None = None  # why the CA's answer was not used

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AriState:
        window = data["window"]
        return cls(
            cert_id=str(data["cert_id"]),
            serial=str(data["serial"]),
            source=str(data["source"]),
            window=Window(float(window["start"]), float(window["end"])),
            moment=float(data["moment"]),
            next_poll=float(data["next_poll"]),
            explanation_url=data.get("explanation_url"),
            warning=data.get("warning"),
        )


class AriError(ValueError):
    """The CA's renewal information cannot be used (a malformed answer)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def serial_der(serial: int) -> bytes:
    """The serial's DER INTEGER contents: big-endian, two's complement, minimal (a leading
    zero byte when the high bit is set)."""
    length = serial.bit_length() // 8 + 1
    return serial.to_bytes(length, "big", signed=True)


def cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(serial DER bytes)."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise AriError("the certificate has no Authority Key Identifier") from exc
    if aki.key_identifier is None:
        raise AriError("the certificate's Authority Key Identifier has no keyIdentifier")
    return f"{_b64(aki.key_identifier)}.{_b64(serial_der(cert.serial_number))}"


def lifetime_window(not_before: float, not_after: float) -> Window:
    """Without ARI: a window that closes when a third of the lifetime is left (half, for a
    lifetime under 10 days) and opens a twelfth of the lifetime before, so that
    certificates issued together do not all renew in the same second."""
    lifetime = max(1.0, not_after - not_before)
    left = lifetime / 2 if lifetime < SHORT_LIFETIME else lifetime / 3
    return Window(not_after - left - lifetime / 12, not_after - left)


def renew_by(moment: float, not_before: float, not_after: float) -> float:
    """When to renew: the chosen moment, but never with less than a third of the lifetime
    left, the point where Let's Encrypt's guide renews without ARI (a window that ends at
    the expiry, as a test CA gives a very short certificate, must not leave a renewal to
    its last seconds; a CA's real windows open before that point)."""
    lifetime = max(1.0, not_after - not_before)
    return min(moment, not_after - lifetime * LAST_SHARE)


def _timestamp(value: Any) -> float:
    if not isinstance(value, str):
        raise AriError(f"not an RFC 3339 time: {value!r}")
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AriError(f"not an RFC 3339 time: {value!r}") from exc
    if moment.tzinfo is None:
        raise AriError(f"a time without its offset: {value!r}")
    return moment.timestamp()


def parse_renewal_info(body: bytes) -> tuple[Window, str | None]:
    """The suggested window and the explanation URL of a renewalInfo response."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise AriError(f"not JSON: {exc}") from exc
    window = data.get("suggestedWindow") if isinstance(data, dict) else None
    if not isinstance(window, dict):
        raise AriError("no suggestedWindow")
    start, end = _timestamp(window.get("start")), _timestamp(window.get("end"))
    if end <= start:
        raise AriError("the window ends before it starts")
    explanation = data.get("explanationURL")
    if explanation is not None and not isinstance(explanation, str):
        raise AriError("explanationURL is not a string")
    return Window(start, end), explanation


def poll_interval(retry_after: float | None, max_poll: float = MAX_POLL) -> float:
    """Seconds until the next poll: the CA's Retry-After, kept between one minute and a
    day (a CA asking for less would be polled in a loop, for more never twice a day), and
    at most ``max_poll`` (a drill's or a lab's shorter cap)."""
    wait = DEFAULT_POLL if retry_after is None else min(MAX_POLL, max(MIN_POLL, retry_after))
    return min(wait, max_poll)


def from_lifetime(
    cert: x509.Certificate, *, previous: AriState | None, next_poll: float, warning: str | None
) -> AriState:
    """The state when the CA says nothing usable: the lifetime's window."""
    window = lifetime_window(
        cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
    )
    return _with_window(
        cert, previous, window, source="lifetime", next_poll=next_poll, warning=warning
    )


def from_ari(
    cert: x509.Certificate,
    *,
    previous: AriState | None,
    window: Window,
    explanation_url: str | None,
    next_poll: float,
) -> AriState:
    state = _with_window(cert, previous, window, source="ari", next_poll=next_poll, warning=None)
    return replace(state, explanation_url=explanation_url)


def _with_window(
    cert: x509.Certificate,
    previous: AriState | None,
    window: Window,
    *,
    source: str,
    next_poll: float,
    warning: str | None,
) -> AriState:
    """The moment is chosen once per window: kept while the window stays the same."""
    serial = format(cert.serial_number, "x")
    same = previous is not None and previous.serial == serial and previous.window == window
    moment = previous.moment if same and previous is not None else window.moment()
    return AriState(
        cert_id=_cert_id_or_empty(cert),
        serial=serial,
        source=source,
        window=window,
        moment=moment,
        next_poll=next_poll,
        warning=warning,
    )


def _cert_id_or_empty(cert: x509.Certificate) -> str:
    try:
        return cert_id(cert)
    except AriError:
        return ""


def load_state(path: Path, cert: x509.Certificate) -> AriState | None:
    """The stored state if it belongs to this certificate (its serial), else None."""
    try:
        state = AriState.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if state.serial == format(cert.serial_number, "x") else None


def save_state(path: Path, state: AriState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state.to_json(), sort_keys=True).encode("utf-8"), mode=0o600)


Fetch = Callable[[str], tuple[bytes, float | None]]  # certID -> (body, Retry-After)


def timing(
    cert: x509.Certificate,
    previous: AriState | None,
    fetch: Fetch | None,
    *,
    now: float,
    max_poll: float = MAX_POLL,
) -> AriState:
    """When to renew ``cert``: the stored state while the CA's Retry-After holds (across
    runs), else the CA's window fetched afresh; the lifetime's window when the CA offers
    no ARI (``fetch`` None) or its answer cannot be used (a warning says why, and the CA
    is asked again only after the default interval: no loop on a broken answer)."""
    if fetch is None:
        return from_lifetime(cert, previous=previous, next_poll=0.0, warning=None)
    if previous is not None and previous.next_poll > now:
        return previous
    try:
        body, retry_after = fetch(cert_id(cert))
        window, explanation = parse_renewal_info(body)
    except AriError as exc:
        return from_lifetime(
            cert,
            previous=previous,
            next_poll=now + min(DEFAULT_POLL, max_poll),
            warning=f"the CA's renewal information is unusable ({exc}); renewing by the lifetime",
        )
    return from_ari(
        cert,
        previous=previous,
        window=window,
        explanation_url=explanation,
        next_poll=now + poll_interval(retry_after, max_poll),
    )


def describe(state: AriState) -> str:
    """One line: the window, where it came from, the moment, the next poll."""

    def when(epoch: float) -> str:
        return f"{datetime.datetime.fromtimestamp(epoch, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"

    source = "the CA's ARI" if state.source == "ari" else "the lifetime"
    text = (
        f"window {when(state.window.start)} .. {when(state.window.end)} from {source}; "
        f"renews after {when(state.moment)}"
    )
    if state.next_poll:
        text += f"; next ARI poll {when(state.next_poll)}"
    if state.explanation_url:
        text += f"; explanation: {state.explanation_url}"
    if state.warning:
        text += f" ({state.warning})"
    return text
