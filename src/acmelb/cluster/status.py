"""``acmelb cluster status|add|remove|export``: the cluster as the store sees it."""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from acmelb.acme.ari import AriState
from acmelb.acme.ca import CAConfig
from acmelb.acme.renewal import RenewalConfig
from acmelb.acme.solvers import SolverOptions
from acmelb.acme.store import Store
from acmelb.cluster.backoff import Backoff
from acmelb.cluster.config import CertificateSpec, StoreConfig
from acmelb.cluster.kv import EtcdKV
from acmelb.cluster.schedule import default_window
from acmelb.cluster.secrets import SecretBox
from acmelb.cluster.store import ClusterStore, MemberRecord
from acmelb.errors import StateError, StoreUnavailable, UsageError
from acmelb.names import normalize_identifier

SCHEMA = "acmelb.cluster-status/v1"


@dataclass(frozen=True)
class CertificateStatus:
    name: str
    names: tuple[str, ...]
    version: int | None
    not_after: float | None
    renewal_window: tuple[float, float] | None
    lock_holder: str | None
    pending_order: dict[str, Any] | None
    installed_on: dict[str, int]  # member -> version it reports installed
    backoff: dict[str, Any] | None = None  # failures in a row, next attempt, last error
    renewal_requested: dict[str, Any] | None = None  # an operator's `cluster renew`
    hook_failed_on: dict[str, dict[str, Any]] = field(default_factory=dict)  # member -> run
    ari: dict[str, Any] | None = None  # the CA's window for the current serial, as polled
    # member -> why it does not serve the current version though it should: its deploy
    # hook failed, or it serves another certificate (a reload missing)
    stragglers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterStatus:
    store: dict[str, str]  # endpoint -> health
    quorum: bool
    members: tuple[MemberRecord, ...]
    certificates: tuple[CertificateStatus, ...]
    error: str | None = None

    @property
    def converged(self) -> bool:
        """Every live member has every certificate's current version installed, and its
        deploy hook for it did not fail. A cluster with no member or no certificate
        declared yet has converged on nothing: it is not converged."""
        if not (self.members and self.certificates):
            return False
        return self.quorum and all(
            c.version is not None
            and all(m.installed.get(c.name) == c.version for m in self.members)
            and not c.stragglers
            for c in self.certificates
        )

    @property
    def healthy(self) -> bool:
        """Quorum, and no straggler: no member whose deploy hook for an installed version
        failed, nor one that installed the current version and serves another."""
        return self.quorum and not any(c.stragglers for c in self.certificates)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "time": time.time(),
            "store": self.store,
            "quorum": self.quorum,
            "converged": self.converged,
            "healthy": self.healthy,
            "error": self.error,
            "members": [m.to_json() for m in self.members],
            "certificates": [asdict(c) for c in self.certificates],
        }


def cluster_status(store_config: StoreConfig, renew_fraction: float = 2 / 3) -> ClusterStatus:
    """What every member and certificate looks like; without quorum, what can be said."""
    kv = EtcdKV(store_config)
    try:
        health = kv.endpoint_health()
        reader = ClusterStore(kv)  # reads no secret
        try:
            members = tuple(sorted(reader.members(), key=lambda m: m.member))
            pending = reader.pending_orders()
            controls = (reader.backoffs(), reader.requests(), reader.aris())
            certificates = tuple(
                _certificate(reader, spec, current, members, renew_fraction, pending, controls)
                for spec, current in reader.overview()
            )
        except StoreUnavailable as exc:
            return ClusterStatus(
                store=health,
                quorum=False,
                members=(),
                certificates=(),
                error=f"{exc} (no quorum: agents keep serving what they have and issue nothing)",
            )
        return ClusterStatus(store=health, quorum=True, members=members, certificates=certificates)
    finally:
        kv.close()


def _certificate(
    store: ClusterStore,
    spec: CertificateSpec,
    current: dict[str, Any] | None,
    members: tuple[MemberRecord, ...],
    renew_fraction: float,
    pending: dict[str, dict[str, Any]],
    controls: tuple[dict[str, Backoff], dict[str, dict[str, Any]], dict[str, AriState]],
) -> CertificateStatus:
    window = None
    if current is not None:
        w = default_window(current["not_before"], current["not_after"], renew_fraction)
        window = (w.start, w.end)
    return CertificateStatus(
        name=spec.name,
        names=spec.names,
        version=current["version"] if current else None,
        not_after=current["not_after"] if current else None,
        renewal_window=window,
        lock_holder=store.lock_holder(spec.name),
        pending_order=pending.get(spec.name),
        installed_on={
            m.member: m.installed[spec.name] for m in members if spec.name in m.installed
        },
        backoff=backoff.to_json() if (backoff := controls[0].get(spec.name)) else None,
        renewal_requested=controls[1].get(spec.name),
        ari=_ari_of(controls[2].get(spec.name), current),
        hook_failed_on={
            m.member: m.failed_hooks[spec.name].to_json()
            for m in members
            if spec.name in m.failed_hooks
        },
        stragglers=_stragglers(spec.name, current, members),
    )


def _stragglers(
    name: str, current: dict[str, Any] | None, members: tuple[MemberRecord, ...]
) -> dict[str, str]:
    found = {}
    for m in members:
        if name in m.failed_hooks:
            found[m.member] = f"deploy hook for v{m.failed_hooks[name].version} failed"
            continue
        if current is None or m.installed.get(name) != current["version"]:
            continue  # not installed yet: converging, not a straggler
        if name in m.serving and m.serving[name] != current.get("serial"):
            served = m.serving[name]
            what = f"serial {served}" if served else "nothing over TLS"
            found[m.member] = f"serves {what}, not the current version (a reload missing?)"
    return found


def _ari_of(state: AriState | None, current: dict[str, Any] | None) -> dict[str, Any] | None:
    """The polled window, when it belongs to the current version (its serial)."""
    if state is None or current is None or state.serial != current.get("serial"):
        return None
    return state.to_json()


def declare(
    store_config: StoreConfig,
    names: tuple[str, ...],
    key_type: str,
    deploy_hook: str | None = None,
    profile: str | None = None,
) -> bool:
    """Declare one certificate for NAME... (first name names it); False if it exists.
    ``deploy_hook`` is stored with it: every member runs it after installing a version,
    unless the member's own ``[[certificate]]`` names another."""
    if not names:
        raise UsageError("give at least one name")
    if deploy_hook is not None and not deploy_hook.strip():
        raise UsageError("--deploy-hook: an empty command")
    spec = CertificateSpec(
        names=tuple(dict.fromkeys(normalize_identifier(n) for n in names)),
        key_type=key_type,
        deploy_hook=deploy_hook,
        profile=profile,
    )
    kv = EtcdKV(store_config)
    try:
        return ClusterStore(kv).declare(spec)
    finally:
        kv.close()


def undeclare(store_config: StoreConfig, name: str) -> bool:
    kv = EtcdKV(store_config)
    try:
        return ClusterStore(kv).undeclare(name)
    finally:
        kv.close()


def export(store_config: StoreConfig, box: SecretBox, name: str, directory: Path) -> Path:
    """Write the current version of NAME into DIR in certbot's layout; its live dir."""
    name = normalize_identifier(name)
    kv = EtcdKV(store_config)
    try:
        cert = ClusterStore(kv, box).current(name)
    finally:
        kv.close()
    if cert is None:
        raise StateError(f"the cluster has no certificate named {name} yet")
    local = Store(directory)
    # `acmelb renew` on the copy says that the agents renew it
    renewal = RenewalConfig(
        names=cert.names, ca=CAConfig("cluster"), solver=SolverOptions(kind="cluster")
    )
    with local.lock(name):
        local.save(
            name,
            privkey_pem=cert.privkey_pem,
            cert_pem=cert.cert_pem,
            chain_pem=cert.chain_pem,
            renewal=renewal.to_json(),
        )
    return local.lineage(name).live_dir


def request_renewal(store_config: StoreConfig, names: Sequence[str], *, now: bool) -> list[str]:
    """Ask the agents for a new version of each NAME at their next check (with ``now``,
    also past a back-off: after a key compromise, or once the cause of failures is fixed);
    the names that are not declared."""
    kv = EtcdKV(store_config)
    try:
        store = ClusterStore(kv)
        declared = {spec.name for spec in store.specs()}
        missing = []
        for raw in names:
            name = normalize_identifier(raw)
            if name not in declared:
                missing.append(name)
                continue
            store.request_renewal(name, now=now, by=f"{getpass.getuser()}@{socket.gethostname()}")
        return missing
    finally:
        kv.close()
