"""Private keys in the cluster store, encrypted.

Every private key (a certificate's, the shared ACME account key, a pending
order's) is sealed with AES-256-GCM under the key from ``--store-key-file``,
with the store path of the value as associated data, so a sealed value
copied to another path does not open. A sealed value is JSON text:
``{"alg": "AES-256-GCM", "kid": KEY_ID, "nonce": B64, "ct": B64}``; ``kid``
(the first 8 bytes of SHA-256 of the key, hex) lets the error for a wrong key
say so instead of "decryption failed".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from acmelb.errors import SecretKeyError

ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32


def _decode_key(raw: bytes) -> bytes | None:
    """32 raw bytes, or their base64 or hex text (what `openssl rand` prints)."""
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == KEY_BYTES else None


def generate_key_file(path: Path) -> None:
    """A new random store key, base64, mode 0600; refuses to overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")


class SecretBox:
    """Seals and opens values under one store key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a store key has {KEY_BYTES} bytes, this one {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path | None) -> SecretBox:
        if path is None:
            raise SecretKeyError(
                "the cluster store needs --store-key-file (32 random bytes, "
                "e.g. `openssl rand -base64 32 > store.key`)"
            )
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise SecretKeyError(f"--store-key-file {path}: {exc.strerror or exc}") from exc
        key = _decode_key(raw)
        if key is None:
            raise SecretKeyError(
                f"--store-key-file {path}: not a {KEY_BYTES}-byte key (raw, "
                "base64 or hex; `openssl rand -base64 32` makes one)"
            )
        return cls(key)

    def seal(self, plaintext: bytes, path: str) -> bytes:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, plaintext, path.encode("utf-8"))
        return json.dumps(
            {
                "alg": ALGORITHM,
                "kid": self.key_id,
                "nonce": base64.b64encode(nonce).decode("ascii"),
                "ct": base64.b64encode(ct).decode("ascii"),
            }
        ).encode("ascii")

    def open(self, sealed: bytes, path: str) -> bytes:
        try:
            doc = json.loads(sealed)
            nonce = base64.b64decode(doc["nonce"])
            ct = base64.b64decode(doc["ct"])
            kid = str(doc.get("kid", "?"))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise SecretKeyError(f"{path} in the store is not a sealed value") from exc
        if kid != self.key_id:
            raise SecretKeyError(
                f"{path} in the store was sealed under store key {kid}, "
                f"and --store-key-file holds key {self.key_id}: wrong key file"
            )
        try:
            return self._aead.decrypt(nonce, ct, path.encode("utf-8"))
        except InvalidTag as exc:
            raise SecretKeyError(
                f"{path} in the store does not open with this store key "
                "(damaged, or moved from another path)"
            ) from exc
