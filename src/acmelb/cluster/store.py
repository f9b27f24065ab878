"""The cluster's state in etcd: the key layout and every read and write of it.

::

    PREFIX/keycheck                    a sealed constant: proves every agent has the same key
    PREFIX/account/<sha256(directory)> the shared ACME account key (sealed JWK)
    PREFIX/specs/<name>                {"names": [...], "key_type": ..., "deploy_hook": ...}:
                                       the cluster keeps it
    PREFIX/versions/<name>             the current version's summary (number, validity)
    PREFIX/certs/<name>/current        the current version: cert, chain, sealed key, version
    PREFIX/certs/<name>/lock           the member ordering it; on the holder's lease
    PREFIX/certs/<name>/order          the pending order: IssuanceState + sealed key (fenced)
    PREFIX/tokens/<token>              a pending key authorization; on the holder's lease
    PREFIX/backoff/<name>              failures in a row, the next attempt, the last error
                                       (written by the holder that failed, fenced)
    PREFIX/requests/<name>             an operator's ``cluster renew``: renew now (until stored)
    PREFIX/ari/<name>                  the CA's renewal window for the current certificate, the
                                       moment chosen in it, the next poll (fenced by the poller)
    PREFIX/certs/<name>/ari-poll       the member polling ARI for it; on that member's lease
    PREFIX/members/<member>            last seen, installed versions, hooks, health; its lease
    PREFIX/probes/<id>/request         a self-check probe asked of one member; holder's lease
    PREFIX/probes/<id>/result          that member's probe result; on the member's lease

Private keys only ever reach etcd sealed (``SecretBox``, the key path as
associated data). Every write a lock holder makes under ``certs/<name>/`` or
``tokens/`` goes through ``EtcdKV.fenced``.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from acmelb.acme.ari import AriState
from acmelb.acme.issuance import IssuanceState
from acmelb.acme.solvers import PendingChallenge
from acmelb.cluster.backoff import Backoff
from acmelb.cluster.config import CertificateSpec
from acmelb.cluster.kv import Delete, Entry, EtcdKV, Fence, Put
from acmelb.cluster.secrets import SecretBox
from acmelb.errors import SecretKeyError, StateError
from acmelb.names import normalize_identifier

KEYCHECK = b"acmelb store key check v1"


@dataclass(frozen=True)
class StoredCertificate:
    """One version of a certificate, with its key (opened: keep it in memory only)."""

    name: str
    names: tuple[str, ...]
    version: int
    cert_pem: bytes
    chain_pem: bytes
    privkey_pem: bytes
    not_before: float
    not_after: float
    issued_by: str

    @property
    def fullchain_pem(self) -> bytes:
        return self.cert_pem + self.chain_pem


@dataclass(frozen=True)
class HookRun:
    """One run of a certificate's deploy hook on one member: what it said and when."""

    version: int  # the installed version it deployed
    exit_status: int | None  # None: it did not finish (timeout) or could not start
    output: str  # its last lines of stdout and stderr, bounded
    at: float
    command: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "exit_status": self.exit_status,
            "ok": self.ok,
            "output": self.output,
            "at": self.at,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HookRun:
        status = data.get("exit_status")
        return cls(
            version=int(data["version"]),
            exit_status=None if status is None else int(status),
            output=str(data.get("output", "")),
            at=float(data["at"]),
            command=str(data.get("command", "")),
        )


@dataclass(frozen=True)
class MemberRecord:
    member: str
    started: float
    last_seen: float
    store_ok: bool
    installed: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # name -> last failure
    answers_for: str | None = None  # the account thumbprint it answers any token for
    hooks: dict[str, HookRun] = field(default_factory=dict)  # name -> its last deploy hook
    serving: dict[str, str | None] = field(default_factory=dict)  # name -> serial served

    @property
    def failed_hooks(self) -> dict[str, HookRun]:
        """The certificates whose last deploy hook here failed (for the installed version)."""
        return {
            name: run
            for name, run in self.hooks.items()
            if not run.ok and self.installed.get(name) == run.version
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "started": self.started,
            "last_seen": self.last_seen,
            "store_ok": self.store_ok,
            "installed": self.installed,
            "problems": self.problems,
            "answers_for": self.answers_for,
            "hooks": {name: run.to_json() for name, run in self.hooks.items()},
            "serving": self.serving,
            "healthy": not self.failed_hooks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberRecord:
        return cls(
            member=str(data["member"]),
            started=float(data["started"]),
            last_seen=float(data["last_seen"]),
            store_ok=bool(data["store_ok"]),
            installed={str(k): int(v) for k, v in data.get("installed", {}).items()},
            problems={str(k): str(v) for k, v in data.get("problems", {}).items()},
            answers_for=data.get("answers_for"),
            hooks={str(k): HookRun.from_json(v) for k, v in data.get("hooks", {}).items()},
            serving={str(k): v for k, v in data.get("serving", {}).items()},
        )


@dataclass(frozen=True)
class PendingOrder:
    state: IssuanceState
    privkey_pem: bytes
    started_by: str
    started_at: float


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode("utf-8")


def _load(entry: Entry, what: str) -> Any:
    try:
        return json.loads(entry.value)
    except ValueError as exc:
        raise StateError(f"{what} ({entry.key}) in the store is damaged: {exc}") from exc


def _summary(current: dict[str, Any]) -> dict[str, Any]:
    keys = ("version", "names", "not_before", "not_after", "issued_by", "serial")
    return {k: current[k] for k in keys if k in current}


def serial_of(cert_pem: bytes) -> str | None:
    """The certificate's serial in hex (what an ARI window is bound to); None when the
    PEM is not a certificate."""
    try:
        return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
    except ValueError:
        return None


class ClusterStore:
    """The cluster's keys in etcd, with private keys sealed under the store key."""

    def __init__(self, kv: EtcdKV, box: SecretBox | None = None) -> None:
        self.kv = kv
        self._secret_box = box

    @property
    def box(self) -> SecretBox:
        if self._secret_box is None:
            raise SecretKeyError("this needs the store key: pass --store-key-file")
        return self._secret_box

    # -- the store key ---------------------------------------------------------------
    def verify_key(self) -> None:
        """Prove the key file opens what is stored (SecretKeyError if not), before any
        write; the first agent on an empty store leaves the proof for the others."""
        path = self.kv.path("keycheck")
        entry = self.kv.get(path)
        if entry is None:
            if self.kv.create(path, self.box.seal(KEYCHECK, path)):
                return
            entry = self.kv.get(path)
            assert entry is not None
        self.box.open(entry.value, path)

    # -- the account -----------------------------------------------------------------
    def _account_path(self, directory_url: str) -> str:
        return self.kv.path("account", hashlib.sha256(directory_url.encode()).hexdigest()[:32])

    def account_key(self, directory_url: str, new_key_json: str) -> str:
        """The shared account key (JWK JSON); ``new_key_json`` becomes it if there is none."""
        path = self._account_path(directory_url)
        if self.kv.create(path, self.box.seal(new_key_json.encode(), path)):
            return new_key_json
        key = self.existing_account_key(directory_url)
        if key is None:
            raise StateError(f"the account key {path} vanished while reading it")
        return key

    def existing_account_key(self, directory_url: str) -> str | None:
        path = self._account_path(directory_url)
        entry = self.kv.get(path)
        return None if entry is None else self.box.open(entry.value, path).decode("utf-8")

    # -- declared certificates -----------------------------------------------------
    def _cert(self, name: str, leaf: str) -> str:
        return self.kv.path("certs", name, leaf)

    def declare(self, spec: CertificateSpec) -> bool:
        """Declare ``spec`` unless its name is declared already; True if this call did."""
        return self.kv.create(self.kv.path("specs", spec.name), _json(spec.to_json()))

    def undeclare(self, name: str) -> bool:
        name = normalize_identifier(name)
        if self.kv.get(self.kv.path("specs", name)) is None:
            return False
        self.kv.delete(self.kv.path("specs", name))
        return True

    def specs(self) -> list[CertificateSpec]:
        return [spec for spec, _ in self.overview()]

    def overview(self) -> list[tuple[CertificateSpec, dict[str, Any] | None]]:
        """Every declared certificate with its current version's summary: two reads of
        small records (the versions' certificates and keys are not transferred)."""
        specs_prefix, versions_prefix = self.kv.path("specs", ""), self.kv.path("versions", "")
        versions = {
            e.key[len(versions_prefix) :]: dict(_load(e, "a version summary"))
            for e in self.kv.get_prefix(versions_prefix)
        }
        out = []
        for entry in self.kv.get_prefix(specs_prefix):
            data = _load(entry, "a certificate declaration")
            spec = CertificateSpec(
                names=tuple(data["names"]),
                key_type=data.get("key_type", "ec256"),
                deploy_hook=data.get("deploy_hook"),
                profile=data.get("profile"),
            )
            out.append((spec, versions.get(entry.key[len(specs_prefix) :])))
        return out

    # -- ARI: the CA's renewal window, polled once for the whole cluster ----------------
    def aris(self) -> dict[str, AriState]:
        """name -> the renewal timing last polled for its current certificate."""
        prefix = self.kv.path("ari", "")
        return {
            e.key[len(prefix) :]: AriState.from_json(_load(e, "an ARI state"))
            for e in self.kv.get_prefix(prefix)
        }

    def ari(self, name: str) -> AriState | None:
        entry = self.kv.get(self.kv.path("ari", name))
        return None if entry is None else AriState.from_json(_load(entry, "an ARI state"))

    def try_ari_poll(self, name: str, member: str, lease: int) -> Fence | None:
        """The right to poll ``name``'s ARI now (one poller for the cluster), on ``lease``."""
        path = self._cert(name, "ari-poll")
        if not self.kv.create(path, member.encode(), lease=lease):
            return None
        entry = self.kv.get(path)
        if entry is None or entry.lease != lease:
            return None
        return Fence(key=path, create_revision=entry.create_revision, lease=lease)

    def save_ari(self, fence: Fence, name: str, state: AriState) -> None:
        """The window the poller got, fenced by its poll lock: every member sees it."""
        self.kv.fenced(fence, [Put(self.kv.path("ari", name), _json(state.to_json()))])

    # -- back-off and operators' requests ------------------------------------------------
    def backoffs(self) -> dict[str, Backoff]:
        """name -> its back-off, for every certificate whose last attempt failed."""
        prefix = self.kv.path("backoff", "")
        return {
            e.key[len(prefix) :]: Backoff.from_json(_load(e, "a back-off"))
            for e in self.kv.get_prefix(prefix)
        }

    def backoff(self, name: str) -> Backoff | None:
        entry = self.kv.get(self.kv.path("backoff", name))
        return None if entry is None else Backoff.from_json(_load(entry, "a back-off"))

    def record_failure(self, fence: Fence, name: str, backoff: Backoff) -> None:
        """The back-off after the holder's failed attempt: fenced, so a holder that lost
        its lock cannot overwrite what its successor recorded."""
        self.kv.fenced(fence, [Put(self.kv.path("backoff", name), _json(backoff.to_json()))])

    def requests(self) -> dict[str, dict[str, Any]]:
        """name -> an operator's request to renew it now (``acmelb cluster renew``)."""
        prefix = self.kv.path("requests", "")
        return {
            e.key[len(prefix) :]: dict(_load(e, "a renewal request"))
            for e in self.kv.get_prefix(prefix)
        }

    def request(self, name: str) -> dict[str, Any] | None:
        entry = self.kv.get(self.kv.path("requests", name))
        return None if entry is None else dict(_load(entry, "a renewal request"))

    def request_renewal(self, name: str, *, now: bool, by: str) -> None:
        """An operator asks for a new version (with ``now``, also past any back-off)."""
        self.kv.put(
            self.kv.path("requests", name), _json({"at": time.time(), "now": now, "by": by})
        )

    def current(self, name: str) -> StoredCertificate | None:
        path = self._cert(name, "current")
        entry = self.kv.get(path)
        if entry is None:
            return None
        data = _load(entry, "a certificate")
        key = self.box.open(data["privkey"].encode("ascii"), path)
        return StoredCertificate(
            name=name,
            names=tuple(data["names"]),
            version=int(data["version"]),
            cert_pem=data["cert_pem"].encode(),
            chain_pem=data["chain_pem"].encode(),
            privkey_pem=key,
            not_before=float(data["not_before"]),
            not_after=float(data["not_after"]),
            issued_by=str(data["issued_by"]),
        )

    def current_summary(self, name: str) -> dict[str, Any] | None:
        """The current version's summary (version, names, validity, issuer): a small read."""
        entry = self.kv.get(self.kv.path("versions", name))
        return None if entry is None else dict(_load(entry, "a version summary"))

    # -- the lock ----------------------------------------------------------------------
    def lock_holder(self, name: str) -> str | None:
        entry = self.kv.get(self._cert(name, "lock"))
        return None if entry is None else entry.value.decode("utf-8")

    def try_lock(self, name: str, member: str, lease: int) -> Fence | None:
        """Take the certificate's lock on ``lease`` if nobody holds it."""
        path = self._cert(name, "lock")
        self.kv.create(path, member.encode(), lease=lease)
        entry = self.kv.get(path)
        # Created by this call, or by an earlier attempt of ours whose answer was lost.
        if entry is None or entry.value != member.encode() or entry.lease != lease:
            return None
        return Fence(key=path, create_revision=entry.create_revision, lease=lease)

    def release(self, fence: Fence) -> None:
        self.kv.fenced(fence, [Delete(fence.key)])

    # -- the pending order (written by the lock holder only) ------------------------
    def order(self, name: str) -> PendingOrder | None:
        path = self._cert(name, "order")
        entry = self.kv.get(path)
        if entry is None:
            return None
        data = _load(entry, "a pending order")
        return PendingOrder(
            state=IssuanceState.from_json(data["state"]),
            privkey_pem=self.box.open(data["privkey"].encode("ascii"), path),
            started_by=str(data["started_by"]),
            started_at=float(data["started_at"]),
        )

    def save_order(self, fence: Fence, name: str, order: PendingOrder) -> None:
        path = self._cert(name, "order")
        value = _json(
            {
                "state": order.state.to_json(),
                "privkey": self.box.seal(order.privkey_pem, path).decode("ascii"),
                "started_by": order.started_by,
                "started_at": order.started_at,
            }
        )
        self.kv.fenced(fence, [Put(path, value)])

    def drop_order(self, fence: Fence, name: str) -> None:
        self.kv.fenced(fence, [Delete(self._cert(name, "order"))])

    def save_certificate(self, fence: Fence, cert: StoredCertificate) -> None:
        """The new current version, and the pending order, the back-off and an operator's
        request gone, in one fenced step."""
        path = self._cert(cert.name, "current")
        value = _json(
            {
                "names": list(cert.names),
                "version": cert.version,
                "cert_pem": cert.cert_pem.decode(),
                "chain_pem": cert.chain_pem.decode(),
                "privkey": self.box.seal(cert.privkey_pem, path).decode("ascii"),
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "issued_by": cert.issued_by,
                "serial": serial_of(cert.cert_pem),
            }
        )
        summary = _json(_summary(json.loads(value)))
        self.kv.fenced(
            fence,
            [
                Put(path, value),
                Put(self.kv.path("versions", cert.name), summary),
                Delete(self._cert(cert.name, "order")),
                Delete(self.kv.path("backoff", cert.name)),
                Delete(self.kv.path("requests", cert.name)),
            ],
        )

    # -- tokens ----------------------------------------------------------------------------
    def publish_tokens(self, fence: Fence, challenges: Sequence[PendingChallenge]) -> None:
        self.kv.fenced(
            fence,
            [
                Put(
                    self.kv.path("tokens", c.token),
                    c.key_authorization.encode("ascii"),
                    lease=fence.lease,
                )
                for c in challenges
            ],
        )

    def withdraw_tokens(self, fence: Fence, challenges: Sequence[PendingChallenge]) -> None:
        self.kv.fenced(fence, [Delete(self.kv.path("tokens", c.token)) for c in challenges])

    def tokens(self) -> dict[str, str]:
        prefix = self.kv.path("tokens", "")
        return {e.key[len(prefix) :]: e.value.decode("ascii") for e in self.kv.get_prefix(prefix)}

    # -- members ------------------------------------------------------------------------
    def heartbeat(self, record: MemberRecord, lease: int) -> None:
        self.kv.put(self.kv.path("members", record.member), _json(record.to_json()), lease)

    def member_alive(self, member: str) -> bool:
        """Its member key is there (it goes with the member's lease)."""
        return self.kv.get(self.kv.path("members", member)) is not None

    def members(self) -> list[MemberRecord]:
        return [
            MemberRecord.from_json(_load(e, "a member record"))
            for e in self.kv.get_prefix(self.kv.path("members", ""))
        ]

    def pending_orders(self) -> dict[str, dict[str, Any]]:
        """name -> step, order URL, who started it and when (no keys opened)."""
        out = {}
        for entry in self.kv.get_prefix(self.kv.path("certs", "")):
            if entry.key.endswith("/order"):
                data = _load(entry, "a pending order")
                name = entry.key.split("/")[-2]
                out[name] = {
                    "step": data["state"]["step"],
                    "order_url": data["state"].get("order_url"),
                    "started_by": data["started_by"],
                    "started_at": data["started_at"],
                }
        return out

    # -- probes: the members as self-check vantages -----------------------------------
    def ask_probe(self, fence: Fence, member: str, request: dict[str, Any]) -> str:
        probe_id = f"{member}-{uuid.uuid4().hex[:12]}"
        self.kv.fenced(
            fence,
            [
                Put(
                    self.kv.path("probes", probe_id, "request"),
                    _json({"member": member, "request": request, "asked": time.time()}),
                    lease=fence.lease,
                )
            ],
        )
        return probe_id

    def probe_requests(self, member: str) -> dict[str, dict[str, Any]]:
        """The unanswered probe requests addressed to ``member``: id -> request."""
        prefix = self.kv.path("probes", "")
        entries = self.kv.get_prefix(prefix)
        answered = {
            e.key[len(prefix) :].rsplit("/", 1)[0] for e in entries if e.key.endswith("/result")
        }
        out = {}
        for entry in entries:
            probe_id = entry.key[len(prefix) :].rsplit("/", 1)[0]
            if entry.key.endswith("/request") and probe_id not in answered:
                data = _load(entry, "a probe request")
                if data.get("member") == member:
                    out[probe_id] = dict(data["request"])
        return out

    def probe_result(self, probe_id: str) -> dict[str, Any] | None:
        entry = self.kv.get(self.kv.path("probes", probe_id, "result"))
        return None if entry is None else dict(_load(entry, "a probe result"))

    def answer_probe(self, probe_id: str, result: dict[str, Any], lease: int) -> None:
        self.kv.put(self.kv.path("probes", probe_id, "result"), _json(result), lease)

    def forget_probe(self, fence: Fence, probe_id: str) -> None:
        self.kv.fenced(fence, [Delete(self.kv.path("probes", probe_id, ""), prefix=True)])
