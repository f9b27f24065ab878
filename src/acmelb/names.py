"""Validation and normalisation of names for HTTP-01."""

from __future__ import annotations

import ipaddress
import re

import idna

from acmelb.errors import InvalidNameError

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


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


def normalize_name(raw: str) -> str:
    """Return the lower-case ASCII (punycode) form of ``raw``.

    Raises InvalidNameError with a one-line reason when HTTP-01 cannot
    validate the name: wildcards, IP literals, bad labels, too long.
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
