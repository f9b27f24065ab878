"""Validation and normalisation of names for HTTP-01.

An identifier is a DNS name (``normalize_name``) or, for an IP-address certificate
(RFC 8738), an IP address (``normalize_ip``); ``normalize_identifier`` takes either.
"""

from __future__ import annotations

import ipaddress
import re

import idna

from acmelb.errors import InvalidNameError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")  # an IPv6 zone (interface) fit to quote


def _plain(name: str) -> str | None:
    """The name lower-cased when it is plain ASCII letters, digits and hyphens that
    IDNA would only lower-case (no A-label, no hyphens in the 3rd and 4th place);
    None when IDNA must decide. A fleet's names are nearly all plain: this skips the
    IDNA codec's per-label work for them."""
    if not name.isascii():
        return None
    lowered = name.lower()
    for label in lowered.split("."):
        if not _LABEL.match(label) or label[2:4] == "--":
            return None
    return lowered


def _idna(raw: str, name: str) -> str:
    try:
        # IDNA 2008 with UTS 46 mapping, as browsers and CAs use (not Python's IDNA 2003 codec).
        return idna.encode(name, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidNameError(f"{raw!r}: not a valid DNS name ({exc})") from exc


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 literal (an ``ip`` identifier of RFC 8738, not a DNS name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def looks_like_ip(text: str) -> bool:
    """Written as an IP address, well or badly: a colon, brackets, a zone (``%``), or
    nothing but digits and dots. No DNS name HTTP-01 can validate looks so (its last
    label is never all digits), so such text is judged as an address."""
    if ":" in text or "[" in text or "]" in text or "%" in text:
        return True
    digits = text.replace(".", "")
    return bool(digits) and digits.isascii() and digits.isdigit()


def normalize_ip(raw: str) -> str:
    """The canonical text of an IP address: IPv4 dotted-quad, IPv6 compressed and
    lower-case (RFC 5952), as an ``ip`` identifier (RFC 8738) and a certificate's SAN
    carry it. One-line InvalidNameError for anything else: a malformed address, an IPv6
    zone (``%eth0``), brackets, an IPv4-mapped IPv6 address."""
    text = raw.strip()
    if text.startswith("[") or text.endswith("]"):
        raise InvalidNameError(f"{raw!r}: give the IPv6 address without brackets")
    if "%" in text:
        zone = text.partition("%")[2]
        shown = f" (%{zone})" if _ZONE.match(zone) else ""
        raise InvalidNameError(
            f"{raw!r}: an IPv6 zone{shown} only means something on this host; "
            "a CA cannot validate it"
        )
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        kind = "IPv6" if ":" in text else "IPv4 (dotted-quad)"
        raise InvalidNameError(f"{raw!r}: not a valid {kind} address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise InvalidNameError(
            f"{raw!r}: an IPv4-mapped IPv6 address; give the IPv4 address "
            f"{address.ipv4_mapped} instead"
        )
    return str(address)


def normalize_identifier(raw: str) -> str:
    """A DNS name (``normalize_name``) or an IP address (``normalize_ip``), normalised;
    what a certificate or a diagnosis may name. InvalidNameError, one line, otherwise."""
    if looks_like_ip(raw.strip()):
        return normalize_ip(raw)
    return normalize_name(raw)


def url_host(identifier: str) -> str:
    """The identifier as the host of a URL or a Host header: an IPv6 address bracketed."""
    return f"[{identifier}]" if ":" in identifier and identifier[:1] != "[" else identifier


def challenge_url(identifier: str, token: str) -> str:
    """The HTTP-01 URL a CA fetches for ``identifier`` (RFC 8555 §8.3, RFC 8738 §3)."""
    return f"http://{url_host(identifier)}/.well-known/acme-challenge/{token}"


def normalize_name(raw: str) -> str:
    """Return the lower-case ASCII (punycode) form of ``raw``.

    Raises InvalidNameError with a one-line reason when HTTP-01 cannot
    validate the name: wildcards, IP literals (``normalize_identifier`` takes those),
    bad labels, too long.
    """
    name = raw.strip().rstrip(".")
    if not name:
        raise InvalidNameError("empty name")
    if name.startswith("*."):
        raise InvalidNameError(
            f"{raw!r}: wildcard names cannot be validated over HTTP-01 (use DNS-01)"
        )
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        raise InvalidNameError(f"{raw!r}: an IP address is not a DNS name for HTTP-01")
    ascii_name = _plain(name) or _idna(raw, name)
    if len(ascii_name) > 253:
        raise InvalidNameError(f"{raw!r}: longer than 253 characters")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise InvalidNameError(f"{raw!r}: needs at least two labels (e.g. app.example.com)")
    for label in labels:
        if not _LABEL.match(label):
            raise InvalidNameError(f"{raw!r}: invalid label {label!r}")
    if labels[-1].isdigit():
        raise InvalidNameError(f"{raw!r}: the last label cannot be all digits")
    return ascii_name
