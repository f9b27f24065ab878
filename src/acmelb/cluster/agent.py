"""``acmelb agent``: one long-running process per instance behind the load balancer.

Threads, each with one job:

* the responder answers every pending token of the cluster on port 80, from a
  local copy fed by an etcd watch (and resynchronised every few seconds, since a
  watch dies silently with its etcd member);
* the heartbeat keeps this member's lease (and the leases of the locks it holds)
  alive and records its installed versions and health under ``members/``;
* the sync loop installs new certificate versions into the local ``live/`` (the
  atomic switch of ``acmelb.acme.store``) and runs the deploy hook, and answers the
  probes other members ask of it for their self-checks;
* the renewal loop finds certificates that are due, takes a certificate's lock
  (an etcd lease), and runs the issuance pipeline of ``acmelb issue`` with the
  cluster as its solver (tokens published under the lock's lease), every live
  member as a self-check vantage, and every write fenced by the lock; a pending
  order left by a holder that died is resumed, not ordered again.

An instance cut off from etcd keeps serving what it has installed and issues
nothing; it converges when the store comes back.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography import x509

from acmelb.acme.ari import AriState, renew_by
from acmelb.acme.responder import (
    ExactTokens,
    RequestLog,
    Responder,
    ResponderThread,
    Stateless,
    TokensThenStateless,
)
from acmelb.acme.solvers import PendingChallenge, SolverOptions
from acmelb.acme.store import Store
from acmelb.cluster.backoff import Backoff, after_failure, config_digest
from acmelb.cluster.config import AgentConfig, CertificateSpec
from acmelb.cluster.events import AgentLog
from acmelb.cluster.hooks import HookLedger
from acmelb.cluster.kv import EtcdKV, Fence, wait_until
from acmelb.cluster.metrics import AgentMetrics
from acmelb.cluster.schedule import default_window
from acmelb.cluster.sdnotify import Notifier
from acmelb.cluster.secrets import SecretBox
from acmelb.cluster.store import (
    ClusterStore,
    HookRun,
    MemberRecord,
    PendingOrder,
    StoredCertificate,
)
from acmelb.doctor.vantage import ProbeResult, Role, VantageFailure
from acmelb.errors import AcmelbError, LockLost, StoreUnavailable

RESYNC_INTERVAL = 2.0  # seconds between full resyncs of the watch-fed copies
PROBE_WAIT_MARGIN = 5.0  # a member's probe result may take this long beyond the probe budget
ARI_RETRY = 60.0  # seconds before a failed ARI poll is tried again
MEMBER_LOOK_INTERVAL = 1.0  # while waiting for a member's probe: is it still a member?
# What a reload cannot change in a running agent (a restart does): who it is, where it
# keeps its files, the store, the port it answers on, the metrics listener.
RESTART_FIELDS = (
    "member",
    "state_dir",
    "store",
    "store_key_file",
    "http_port",
    "http_addresses",
    "metrics_listen",
    "lease_ttl",
)


@dataclass
class AgentState:
    """What this member knows about itself (read by the heartbeat and by status)."""

    started: float = field(default_factory=time.time)
    store_ok: bool = False
    installed: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    held: dict[str, Fence] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)  # no longer declared; files left in place
    serving: dict[str, str | None] = field(default_factory=dict)  # name -> serial served


@dataclass(frozen=True)
class Deploy:
    """A version installed here whose deploy hook must run."""

    spec: CertificateSpec
    version: int
    names: tuple[str, ...]


class ClusterSolver:
    """Presents tokens to the whole cluster: published under the lock holder's lease."""

    name = "cluster"

    def __init__(self, store: ClusterStore, fence: Fence, local: ExactTokens) -> None:
        self.store, self.fence, self.local = store, fence, local

    def present(self, challenges: Sequence[PendingChallenge]) -> None:
        self.store.publish_tokens(self.fence, challenges)
        for challenge in challenges:  # this member answers at once, without the watch
            self.local.add(challenge.token, challenge.key_authorization)

    def cleanup(self, challenges: Sequence[PendingChallenge]) -> None:
        for challenge in challenges:
            self.local.remove(challenge.token)
        with contextlib.suppress(LockLost, StoreUnavailable):  # the lease takes them anyway
            self.store.withdraw_tokens(self.fence, challenges)

    def close(self) -> None:
        pass


class MemberVantage:
    """Another live member, as a self-check vantage behind the LB: the probe request goes
    through the store and the member runs the same probe as every other vantage."""

    role = Role.INSIDE
    remote = True

    def __init__(self, store: ClusterStore, fence: Fence, member: str) -> None:
        self.store, self.fence, self.member = store, fence, member

    @property
    def label(self) -> str:
        return f"inside:member:{self.member}"

    def run(self, request: dict[str, Any], budget: float) -> ProbeResult | VantageFailure:
        probe_id = self.store.ask_probe(self.fence, self.member, request)
        result: dict[str, Any] = {}
        gone = threading.Event()
        next_look = [time.monotonic() + MEMBER_LOOK_INTERVAL]

        def answered() -> bool:
            found = self.store.probe_result(probe_id)
            if found is not None:
                result.update(found)
                return True
            # a member cut off from the store never answers: once its member key has gone
            # with its lease, stop waiting (not the whole probe budget)
            if time.monotonic() >= next_look[0]:
                next_look[0] = time.monotonic() + MEMBER_LOOK_INTERVAL
                if not self.store.member_alive(self.member):
                    gone.set()
                    return True
            return False

        try:
            if wait_until(answered, budget + PROBE_WAIT_MARGIN) and not gone.is_set():
                return result
            if gone.is_set():
                return VantageFailure(
                    f"member {self.member} left the cluster before it answered the probe "
                    "(its member key expired: cut off from the store, or stopped)",
                    [],
                )
            return VantageFailure(
                f"member {self.member} did not answer the probe within "
                f"{budget + PROBE_WAIT_MARGIN:.0f} s",
                [],
            )
        finally:
            with contextlib.suppress(StoreUnavailable, LockLost):  # the lease takes it anyway
                self.store.forget_probe(self.fence, probe_id)


def served_serial(address: str, server_name: str, timeout: float = 2.0) -> str | None:
    """The serial (hex) of the certificate served on ``address`` (HOST:PORT) for
    ``server_name``, or None when nothing answers with TLS there."""
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is served, trusted or not
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    if not der:
        return None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def _not_before_after(cert_pem: bytes) -> tuple[float, float]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        box: SecretBox,
        *,
        log: AgentLog | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.log = log or AgentLog(config.member)
        self.notifier = notifier or Notifier(None)
        self.joined = False  # the store key proven and this member's certificates declared
        self.fatal: Exception | None = None  # what stopped the agent on its own
        self._reload_requested = threading.Event()
        self._withdrawn: set[str] = set()  # removed from this file by a reload: not renewed
        self._store_known = False  # has the store answered, or failed to, yet?
        self.kv = EtcdKV(config.store)
        self.store = ClusterStore(self.kv, box)
        self.local = Store(config.state_dir)
        self.tokens = ExactTokens()
        self.answers = TokensThenStateless(self.tokens)
        self.metrics = AgentMetrics(config.member)
        self.state = AgentState()
        self.stopping = threading.Event()
        self._wake_sync = threading.Event()
        self._wake_renewal = threading.Event()  # a lock was released or a version stored
        self._beat_now = threading.Event()  # something the member record shows has changed
        self._member_lease: int | None = None
        self._cancel_watch: Callable[[], None] | None = None
        self._watch_dead = threading.Event()
        # the watch events that call for a sync (heartbeats and probe results do not)
        self._versions_prefix = self.kv.path("versions", "").encode()
        self._specs_prefix = self.kv.path("specs", "").encode()
        self._my_probes_prefix = self.kv.path("probes", f"{config.member}-").encode()
        self._account_prefix = self.kv.path("account", "").encode()
        self._probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="acmelb-probe")
        self._answered: set[str] = set()
        # the cluster's back-offs and operators' requests, as of the last overview
        self._backoffs: dict[str, Backoff] = {}
        self._requests: dict[str, dict[str, Any]] = {}
        self._aris: dict[str, AriState] = {}  # the CA's windows, as polled for the cluster
        self._ari_retry: dict[str, float] = {}  # name -> not before (its last poll failed)
        self.hooks = HookLedger(config.state_dir / "cluster-hooks.json")
        self._lock_wait: dict[str, float] = {}  # name -> not before (another holds the lock)
        # name -> its current version's summary, as of the last overview of the store
        self._current: dict[str, dict[str, Any] | None] = {}
        self._client: Any = None  # one CA session, used by the renewal loop only
        self._responder: ResponderThread | None = None
        self._threads: list[threading.Thread] = []

    # -- start and stop -----------------------------------------------------------------
    def start(self) -> None:
        """Check the key before writing anything, then serve, then join the cluster; an
        agent started while the store is away serves port 80 and joins when it answers."""
        connected = self._connect()
        # The pending tokens before port 80 opens: until then the LB finds the port closed
        # and sends the CA elsewhere, instead of to a 404 that fails the order.
        self._responder = ResponderThread(
            Responder(
                self.answers,
                addresses=self.config.http_addresses,
                port=self.config.http_port,
                log=self._request_logged,
            )
        )
        self._responder.__enter__()
        if self.config.metrics_listen:
            self.metrics.serve(self.config.metrics_listen)
        if connected:
            self._join()
        for name, target in (
            ("heartbeat", self._heartbeat_loop),
            ("sync", self._sync_loop),
            ("renewal", self._renewal_loop),
        ):
            thread = threading.Thread(
                target=self._guarded, args=(name, target), name=f"acmelb-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.log.info(
            "started",
            f"member {self.config.member} serving tokens on port {self.config.http_port}"
            f"; store {self.kv.where}",
            port=self.config.http_port,
            store=self.kv.where,
            store_ok=self.state.store_ok,
        )
        self.notifier.ready(self._status_line())

    def _connect(self) -> bool:
        """Prove the key opens what is stored (a wrong key raises), then watch the store
        and copy its pending tokens; False while the store is away."""
        try:
            self.store.verify_key()
            self._watch()
            self._sync_tokens()
            self._learn_thumbprint()
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
            return False
        self._store_reached(True)
        return True

    def _join(self, *, sync_now: bool = True) -> None:
        """Declare this file's certificates, write the member record, install what the
        cluster has (``sync_now``; else the sync loop does): from now on the member takes
        part in renewals."""
        try:
            self._declare()
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
            return
        self.joined = True
        self._heartbeat()
        if sync_now:
            self._sync()

    def _status_line(self) -> str:
        store = "store reachable" if self.state.store_ok else "store unreachable, waiting for it"
        return f"serving tokens on port {self.config.http_port}; {store}"

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        """A loop that dies on a bug stops the agent (systemd restarts it) and says why
        in one line, instead of leaving an agent that silently renews nothing."""
        try:
            target()
        except Exception as exc:
            self.fatal = exc
            self.log.error(
                "internal-error",
                f"the {name} loop stopped: {type(exc).__name__}: {exc}; stopping the agent",
                loop=name,
                error=type(exc).__name__,
                reason=str(exc),
                traceback="".join(traceback.format_exception(exc)),
            )
            self.stopping.set()

    def _declare(self) -> None:
        declared = {spec.name for spec in self.store.specs()}
        for spec in self.config.certificates:
            # this member's own deploy hook is not the cluster's: declared without it
            if spec.name not in declared and self.store.declare(replace(spec, deploy_hook=None)):
                self.log.info(
                    "declared",
                    f"declared {spec.name} ({', '.join(spec.names)}) in the store",
                    spec.name,
                    names=list(spec.names),
                )

    def request_reload(self) -> None:
        """Ask for a reload (safe in a signal handler: it only sets an event)."""
        self._reload_requested.set()

    def wait(self, load_config: Callable[[], AgentConfig] | None = None) -> None:
        """Until stopped; on a reload request, ``load_config()`` is applied."""
        while not self.stopping.wait(0.2):
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                if load_config is not None:
                    self.reload(load_config)

    def reload(self, load_config: Callable[[], AgentConfig]) -> bool:
        """Read the configuration again and apply it; a configuration with an error is
        refused in one line and the running one stays in force. The responder never
        stops: it is not touched."""
        self.notifier.reloading()
        try:
            config = load_config()
        except AcmelbError as exc:
            self.log.error(
                "reload-refused",
                f"reload refused: {exc}; the running configuration stays in force",
                reason=str(exc),
            )
            self.notifier.ready(self._status_line())
            return False
        self.reconfigure(config)
        self.notifier.ready(self._status_line())
        return True

    def reconfigure(self, config: AgentConfig) -> None:
        """Apply ``config``: added certificates are declared, removed ones are no longer
        renewed by this member, the rest applies from the next pass (hooks, self-check,
        intervals). What only a restart can change is kept, and said."""
        needs_restart = [f for f in RESTART_FIELDS if getattr(config, f) != getattr(self.config, f)]
        if needs_restart:
            self.log.warning(
                "reload-needs-restart",
                f"reload: {', '.join(needs_restart)} changed; that takes a restart, "
                "the running value stays",
                fields=needs_restart,
            )
        config = replace(config, **{f: getattr(self.config, f) for f in RESTART_FIELDS})
        if (config.directory, config.ca_bundle, config.email) != (
            self.config.directory,
            self.config.ca_bundle,
            self.config.email,
        ):
            self._client = None  # the next renewal opens a session on the new CA settings
        before = {spec.name for spec in self.config.certificates}
        after = {spec.name for spec in config.certificates}
        self.config = config
        self._withdrawn = (self._withdrawn | (before - after)) - after
        for name in sorted(before - after):
            self.log.info(
                "withdrawn",
                f"{name} was removed from this member's file: this member no longer renews "
                "it (it stays declared in the cluster; `acmelb cluster remove` ends it there)",
                name,
            )
        if self.joined:
            with contextlib.suppress(StoreUnavailable):  # declared when the store is back
                self._declare()
        self.log.info(
            "reloaded",
            f"configuration reloaded: {len(after)} certificate(s), "
            f"{len(after - before)} added, {len(before - after)} removed",
            added=sorted(after - before),
            removed=sorted(before - after),
        )
        self._wake_sync.set()
        self._wake_renewal.set()
        self._beat_now.set()

    def stop(self) -> None:
        self.notifier.stopping()
        self.stopping.set()
        self._wake_sync.set()
        self._wake_renewal.set()
        self._beat_now.set()
        for thread in self._threads:
            thread.join(10)
        if self._cancel_watch is not None:
            self._cancel_watch()
        self._probes.shutdown(wait=False, cancel_futures=True)
        if self._member_lease is not None:
            with contextlib.suppress(StoreUnavailable):
                self.kv.revoke(self._member_lease)  # leave at once, not after the TTL
        if self._responder is not None:
            self._responder.stop()
        self.kv.close()

    def _request_logged(self, entry: RequestLog) -> None:
        self.log.info(
            "responder-request",
            f"responder: {entry.client} {entry.method} {entry.target} Host={entry.host} "
            f"UA={entry.user_agent!r} -> {entry.status} ({entry.answer})",
            client=entry.client,
            method=entry.method,
            target=entry.target,
            host=entry.host,
            user_agent=entry.user_agent,
            status=entry.status,
            answer=entry.answer,
        )

    # -- heartbeat: leases and the member record --------------------------------------
    def _heartbeat_loop(self) -> None:
        # the watchdog is petted from here: a heartbeat that hangs is an agent that hangs
        interval = self.config.lease_ttl / 3
        if self.notifier.watchdog_interval is not None:
            interval = min(interval, self.notifier.watchdog_interval)
        while not self.stopping.is_set():
            self.notifier.watchdog()
            self._beat_now.wait(interval)
            self._beat_now.clear()
            if self.stopping.is_set():
                return
            if self.joined:
                self._heartbeat()
            elif self._connect():
                self._late_join()

    def _late_join(self) -> None:
        self._join(sync_now=False)  # the sync loop installs: one thread syncs at a time
        if self.joined:
            self.log.info("joined", "the store answers: joined the cluster", store=self.kv.where)
            self.notifier.status(self._status_line())
            self._wake_sync.set()
            self._wake_renewal.set()

    def _heartbeat(self) -> None:
        try:
            if self._member_lease is None or not self.kv.refresh(self._member_lease):
                self._member_lease = self.kv.grant(self.config.lease_ttl)
            for fence in list(self.state.held.values()):
                self.kv.refresh(fence.lease)
            self.store.heartbeat(self._record(), self._member_lease)
            self.metrics.members.set(len(self.store.members()))
            self._store_reached(True)
        except StoreUnavailable as exc:
            self._store_reached(False, exc)

    def _record(self) -> MemberRecord:
        return MemberRecord(
            member=self.config.member,
            started=self.state.started,
            last_seen=time.time(),
            store_ok=self.state.store_ok,
            installed=dict(self.state.installed),
            problems=dict(self.state.problems),
            answers_for=self.answers.stateless.thumbprint if self.answers.stateless else None,
            hooks=self.hooks.runs(),
            serving=dict(self.state.serving),
        )

    def _store_reached(self, ok: bool, exc: Exception | None = None) -> None:
        first = not self._store_known  # the first answer (or its absence) at start
        self._store_known = True
        if ok != self.state.store_ok or (first and not ok):
            if ok and not first:
                self.log.info("store-reachable", "store reachable again", store=self.kv.where)
            elif not ok:
                self.log.error(
                    "store-unreachable",
                    f"store unreachable: {exc}; serving what is installed, issuing nothing",
                    store=self.kv.where,
                    reason=str(exc),
                )
        self.state.store_ok = ok
        self.metrics.store_up.set(1 if ok else 0)

    # -- sync: the watch-fed copies, installs and probes --------------------------------
    def _sync_loop(self) -> None:
        while not self.stopping.is_set():
            self._wake_sync.wait(RESYNC_INTERVAL)
            self._wake_sync.clear()
            if self.joined and not self.stopping.is_set():
                self._sync()

    def _sync(self) -> None:
        try:
            if self._cancel_watch is None or self._watch_dead.is_set():
                self._watch()
            self._sync_tokens()
            self._learn_thumbprint()
            self._answer_probes()
            specs = self._specs()
            installed = [job for spec in specs if (job := self._install(spec)) is not None]
            self._deploy(installed)
            for spec in specs:
                self._retry_failed_hook(spec)
            self._forget_removed({spec.name for spec in specs})
            self._check_serving(specs)
            self._store_reached(True)
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
        except AcmelbError as exc:
            self.log.error("sync-failed", f"sync: {exc}", reason=str(exc))

    def _watch(self) -> None:
        if self._cancel_watch is not None:
            self._cancel_watch()
        self._watch_dead.clear()
        start = self.kv.revision() + 1
        self._cancel_watch = self.kv.watch_prefix(self.kv.path(""), self._on_watch, start)

    def _on_watch(self, response: Any) -> None:
        events = getattr(response, "events", None)
        if events is None:  # the watch's connection failed: it will not deliver again
            self._watch_dead.set()
            self._wake_sync.set()
            return
        token_prefix = self.kv.path("tokens", "").encode()
        for event in events:
            key: bytes = event.key
            if key.startswith(token_prefix):
                token = key[len(token_prefix) :].decode("ascii", "replace")
                value = getattr(event, "value", b"")
                if type(event).__name__ == "PutEvent":
                    self.tokens.add(token, value.decode("ascii", "replace"))
                else:
                    self.tokens.remove(token)
            elif key.startswith(
                (
                    self._versions_prefix,
                    self._specs_prefix,
                    self._my_probes_prefix,
                    self._account_prefix,
                )
            ):
                self._wake_sync.set()  # a new version, a declaration, a probe for us
            if key.startswith(self._versions_prefix) or key.endswith(b"/lock"):
                self._lock_wait.clear()
                self._wake_renewal.set()  # a lock came free, or the work is done

    def _sync_tokens(self) -> None:
        # Only tokens held before the read may go: one the watch adds meanwhile stays.
        held = self.tokens.tokens()
        published = self.store.tokens()
        for token, key_authorization in published.items():
            self.tokens.add(token, key_authorization)
        for token in held - published.keys():
            self.tokens.remove(token)

    def _learn_thumbprint(self) -> None:
        """The shared account's thumbprint, so this member answers any token of the
        account even while cut off from the store (stateless, like acme.sh's mode)."""
        if self.answers.stateless is not None:
            return
        key_json = self.store.existing_account_key(self.config.directory)
        if key_json is not None:
            self._answer_for(key_json)

    def _answer_for(self, key_json: str) -> None:
        from acmelb.acme.ca import thumbprint_of

        self.answers.stateless = Stateless(thumbprint_of(key_json))
        self._beat_now.set()  # tell the others at once (they wait for it, see _issue)

    def _answer_probes(self) -> None:
        requests = self.store.probe_requests(self.config.member)
        for probe_id, request in requests.items():
            if probe_id not in self._answered:
                self._answered.add(probe_id)
                self._probes.submit(self._run_probe, probe_id, request)
        self._answered &= requests.keys()  # the answered ones are no longer asked

    def _run_probe(self, probe_id: str, request: dict[str, Any]) -> None:
        from acmelb.doctor import probe

        try:
            result = probe.run_request(request)
            if self._member_lease is not None:
                self.store.answer_probe(probe_id, result, self._member_lease)
        except (StoreUnavailable, ValueError, TypeError) as exc:
            self.log.warning(
                "probe-failed", f"probe {probe_id}: {exc}", probe=probe_id, reason=str(exc)
            )

    def _specs(self) -> list[CertificateSpec]:
        """The declared certificates, with this member's deploy hook and self-check (and,
        as of this overview, their back-offs and any operator's request)."""
        own = {spec.name: spec for spec in self.config.certificates}
        out = []
        overview = self.store.overview()
        self._current = {spec.name: current for spec, current in overview}
        self._backoffs = self.store.backoffs()
        self._requests = self.store.requests()
        self._aris = self.store.aris()
        for declared, _ in overview:
            mine = own.get(declared.name)
            out.append(
                replace(
                    declared,
                    deploy_hook=self._deploy_hook(declared, mine),
                    self_check=mine.self_check if mine else self.config.self_check,
                )
            )
        return out

    def _deploy_hook(self, declared: CertificateSpec, mine: CertificateSpec | None) -> str | None:
        """This member's [[certificate]] hook, else the one ``cluster add --deploy-hook``
        stored with the declaration, else the file's top-level ``deploy_hook``."""
        if mine is not None and mine.deploy_hook:
            return mine.deploy_hook
        return declared.deploy_hook or self.config.deploy_hook

    def _check_serving(self, specs: Sequence[CertificateSpec]) -> None:
        """What this instance actually serves (``serve_check``, SNI the first name): the
        serial, recorded for ``cluster status``, which names the stragglers."""
        if self.config.serve_check is None:
            return
        for spec in specs:
            if spec.name not in self.state.installed:
                continue
            served = served_serial(self.config.serve_check, spec.names[0])
            summary = self._current.get(spec.name) or {}
            current = served is not None and served == summary.get("serial")
            self.metrics.serving_current.labels(name=spec.name).set(1 if current else 0)
            if spec.name not in self.state.serving or self.state.serving[spec.name] != served:
                self.state.serving[spec.name] = served
                self._beat_now.set()

    def _forget_removed(self, declared: set[str]) -> None:
        """A certificate removed with ``cluster remove``: said once; its files stay."""
        for name in sorted(set(self.state.installed) - declared):
            del self.state.installed[name]
            self.hooks.forget(name)
            self.state.removed.add(name)
            live = self.local.lineage(name).live_dir
            self.log.warning(
                "undeclared",
                f"{name} is no longer declared in the cluster (cluster remove): its files stay "
                f"in {live}; delete them once nothing uses them",
                name,
                path=str(live),
            )
            self._beat_now.set()

    def _install(self, spec: CertificateSpec) -> Deploy | None:
        """Put the store's current version into the local live/ (atomic) if it is new;
        what its deploy hook must deploy, unless this version's hook ran already (before
        a restart of this agent)."""
        summary = self._current.get(spec.name)
        if summary is None or self.state.installed.get(spec.name) == summary["version"]:
            return None
        cert = self.store.current(spec.name)
        if cert is None:
            return None
        changed = self._install_files(spec, cert)
        self.state.installed[spec.name] = cert.version
        self.metrics.installed_version.labels(name=spec.name).set(cert.version)
        self.metrics.not_after.labels(name=spec.name).set(cert.not_after)
        self.metrics.not_before.labels(name=spec.name).set(cert.not_before)
        if changed:
            live = self.local.lineage(spec.name).live_dir
            self.log.info(
                "installed",
                f"installed {spec.name} version {cert.version} in {live}",
                spec.name,
                version=cert.version,
                path=str(live),
                not_after=cert.not_after,
            )
        self._beat_now.set()
        last = self.hooks.get(spec.name)
        if spec.deploy_hook and (changed or last is None or last.version != cert.version):
            return Deploy(spec, cert.version, cert.names)
        return None

    def _deploy(self, installed: Sequence[Deploy]) -> None:
        """The installs of one pass share one run of each deploy hook (one reload for
        many certificates: a drill over fifty converges in about the time ordering
        takes, not one reload after another)."""
        by_command: dict[str, list[Deploy]] = {}
        for job in installed:
            assert job.spec.deploy_hook is not None
            by_command.setdefault(job.spec.deploy_hook, []).append(job)
        for command, jobs in by_command.items():
            self._run_hook(command, jobs)

    def _run_hook(self, command: str, jobs: Sequence[Deploy]) -> None:
        """One run of ``command`` for ``jobs``; its outcome is kept for each certificate
        (locally, and in this member's record: a failure is this member's health)."""
        from acmelb.acme.issuance import run_deploy_hook_batch

        lineages = [(self.local.lineage(j.spec.name).live_dir, j.names) for j in jobs]
        outcome = run_deploy_hook_batch(command, lineages)
        now = time.time()
        for job in jobs:
            run = HookRun(job.version, outcome.exit_status, outcome.output, now, command)
            self.hooks.record(job.spec.name, run)
            self.metrics.hook_ran(job.spec.name, outcome.ok)
        names = ", ".join(f"{j.spec.name} v{j.version}" for j in jobs)
        for job in jobs:  # one line per certificate: each line names its certificate
            self.log.emit(
                logging.INFO if outcome.ok else logging.ERROR,
                "deploy-hook" if outcome.ok else "deploy-hook-failed",
                f"deploy hook for {names}{outcome.clause()}",
                job.spec.name,
                {"version": job.version, "exit_status": outcome.exit_status, "batch": len(jobs)},
            )

    def _retry_failed_hook(self, spec: CertificateSpec) -> None:
        """A failed deploy hook is run again every check interval until it succeeds."""
        last = self.hooks.get(spec.name)
        version = self.state.installed.get(spec.name)
        if spec.deploy_hook is None or last is None or last.ok or last.version != version:
            return
        if time.time() - last.at < self.config.check_interval:
            return
        assert spec.deploy_hook is not None
        self._run_hook(spec.deploy_hook, [Deploy(spec, last.version, spec.names)])
        retried = self.hooks.get(spec.name)
        if retried is not None and retried.ok:
            self.log.info(
                "deploy-hook",
                f"{spec.name}: deploy hook for version {version} succeeded on a retry",
                spec.name,
                version=version,
                retry=True,
            )

    def _install_files(self, spec: CertificateSpec, cert: StoredCertificate) -> bool:
        from acmelb.acme.ca import CAConfig
        from acmelb.acme.renewal import RenewalConfig

        with self.local.lock(spec.name):
            lineage = self.local.lineage(spec.name)
            if (
                lineage.exists()
                and lineage.read("fullchain") == cert.fullchain_pem
                and lineage.read("privkey") == cert.privkey_pem
            ):
                return False  # installed before a restart of this agent
            renewal = RenewalConfig(
                names=cert.names,
                ca=CAConfig(self.config.directory, self.config.ca_bundle, self.config.email),
                solver=SolverOptions(kind="cluster"),
                key_type=spec.key_type,
            )
            self.local.save(
                spec.name,
                privkey_pem=cert.privkey_pem,
                cert_pem=cert.cert_pem,
                chain_pem=cert.chain_pem,
                renewal=renewal.to_json(),
            )
            return True

    # -- renewals ----------------------------------------------------------------------
    def _renewal_loop(self) -> None:
        # At start, a short random pause: instances started together should not all reach
        # for the same lock in the same millisecond (the lock decides either way).
        delay = random.uniform(0, 0.5)
        while not self.stopping.is_set():
            self._wake_renewal.wait(delay)
            self._wake_renewal.clear()
            self._poll_aris()
            for spec in self._in_my_order(self._due()):
                if self.stopping.is_set():
                    return
                self._renew(spec)
            delay = min(self.config.check_interval, self._next_due_in()) * random.uniform(0.9, 1.1)

    def _in_my_order(self, specs: list[CertificateSpec]) -> list[CertificateSpec]:
        """Each member walks the due certificates in its own order, so members that wake
        together reach for different locks."""

        def rank(spec: CertificateSpec) -> bytes:
            return hashlib.sha256(f"{self.config.member}\0{spec.name}".encode()).digest()

        return sorted(specs, key=rank)

    def _due(self) -> list[CertificateSpec]:
        if not self.joined or not self.state.store_ok:
            return []
        now = time.time()
        try:
            return [
                spec
                for spec in self._specs()
                if spec.name not in self._withdrawn and self._next_attempt(spec) <= now
            ]
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
            return []

    def _due_at(self, spec: CertificateSpec, *, fresh: bool = False) -> float:
        """When ``spec`` is due by the last overview (or by the store, ``fresh``): at once
        when an operator asked for a new version (``cluster renew``); else at the moment
        the cluster's ARI poller chose in the CA's window (the same for every member);
        else at this member's moment in the lifetime's window."""
        summary = self.store.current_summary(spec.name) if fresh else self._current.get(spec.name)
        request = self.store.request(spec.name) if fresh else self._requests.get(spec.name)
        if summary is None or request is not None:
            return 0.0
        polled = self._ari_window(spec, summary, fresh=fresh)
        if polled is not None:
            return renew_by(polled.moment, summary["not_before"], summary["not_after"])
        window = default_window(
            summary["not_before"], summary["not_after"], self.config.renew_fraction
        )
        return window.moment(self.config.member, spec.name, summary["version"])

    def _ari_window(
        self, spec: CertificateSpec, summary: dict[str, Any], *, fresh: bool = False
    ) -> AriState | None:
        """The CA's window for the current version, if the cluster polled one for it."""
        state = self.store.ari(spec.name) if fresh else self._aris.get(spec.name)
        if state is None or state.source != "ari" or state.serial != summary.get("serial"):
            return None
        return state

    # -- ARI: one poller for the whole cluster ------------------------------------------
    def _poll_aris(self) -> None:
        """The certificates whose window is due for a poll (the CA's Retry-After passed,
        or a new version): polled by one member, under a short lock, for all."""
        if not self.state.store_ok:
            return
        now = time.time()
        try:
            specs = self._specs()
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
            return
        for spec in specs:
            summary = self._current.get(spec.name)
            if summary is None or "serial" not in summary:
                continue
            state = self._aris.get(spec.name)
            if state is not None and state.serial == summary["serial"] and state.next_poll > now:
                continue
            if self._ari_retry.get(spec.name, 0.0) > now:
                continue
            self._poll_ari(spec, summary["serial"])

    def _poll_ari(self, spec: CertificateSpec, serial: str) -> None:
        try:
            lease = self.kv.grant(self.config.lease_ttl)
            fence = self.store.try_ari_poll(spec.name, self.config.member, lease)
            if fence is None:
                self.kv.revoke(lease)
                return  # another member polls it now
            try:
                self._poll_locked(spec, serial, fence)
            finally:
                self.kv.revoke(lease)
        except (StoreUnavailable, LockLost) as exc:
            self.log.warning(
                "ari-poll-failed", f"{spec.name}: ARI poll: {exc}", spec.name, reason=str(exc)
            )
        except AcmelbError as exc:  # the CA is away: the window known stays
            # asked again after a minute (or the check interval), not on every pass
            self._ari_retry[spec.name] = time.time() + max(ARI_RETRY, self.config.check_interval)
            self.log.warning(
                "ari-poll-failed",
                f"{spec.name}: ARI poll failed: {exc}",
                spec.name,
                reason=str(exc),
            )

    def _poll_locked(self, spec: CertificateSpec, serial: str, fence: Fence) -> None:
        from acmelb.acme import ari

        now = time.time()
        known = self.store.ari(spec.name)
        if known is not None and known.serial == serial and known.next_poll > now:
            self._aris[spec.name] = known  # polled by another member a moment ago
            return
        current = self.store.current(spec.name)
        if current is None:
            return
        cert = x509.load_pem_x509_certificate(current.cert_pem)
        client = self._ca_client()
        fetch = client.renewal_info if client.renewal_info_url else None
        cap = self.config.ari_poll_max or ari.MAX_POLL
        previous = known if known is not None and known.serial == serial else None
        state = ari.timing(cert, previous, fetch, now=now, max_poll=cap)
        if state.next_poll <= now:  # a CA without ARI: look again later, not every pass
            state = replace(state, next_poll=now + min(ari.DEFAULT_POLL, cap))
        self.store.save_ari(fence, spec.name, state)
        self._aris[spec.name] = state
        self.metrics.ari_polled(spec.name, state)
        self.log.info(
            "ari-polled",
            f"{spec.name}: ARI poll: {ari.describe(state)}",
            spec.name,
            window_start=state.window.start,
            window_end=state.window.end,
            moment=state.moment,
        )

    def _next_attempt(self, spec: CertificateSpec) -> float:
        """When this member should next look at ``spec``: due, and not waiting."""
        return max(
            self._due_at(spec),
            self._backoff_until(spec, self._backoffs.get(spec.name), self._requests),
            self._lock_wait.get(spec.name, 0.0),
        )

    def _config_digest(self, spec: CertificateSpec) -> str:
        """What an attempt depends on: when it changes, a back-off no longer holds."""
        check = spec.self_check.to_json() if spec.self_check else None
        return config_digest(spec.to_json(), self.config.directory, check)

    def _backoff_until(
        self,
        spec: CertificateSpec,
        backoff: Backoff | None,
        requests: dict[str, dict[str, Any]],
    ) -> float:
        """Until when the cluster's back-off holds ``spec`` (0: it does not)."""
        if backoff is None:
            return 0.0
        request = requests.get(spec.name)
        requested_at = float(request["at"]) if request and request.get("now") else None
        if backoff.holds(time.time(), self._config_digest(spec), requested_at):
            return backoff.next_attempt
        return 0.0

    def _held_back(self, spec: CertificateSpec) -> bool:
        """Read afresh under the lock: another member may have just failed and let go."""
        backoff = self.store.backoff(spec.name)
        request = self.store.request(spec.name)
        requests = {spec.name: request} if request is not None else {}
        return self._backoff_until(spec, backoff, requests) > time.time()

    def _next_due_in(self) -> float:
        try:
            soonest = min(
                (self._next_attempt(s) for s in self._specs()), default=time.time() + 3600
            )
        except StoreUnavailable:
            return self.config.lease_ttl
        return max(0.2, soonest - time.time())

    def _renew(self, spec: CertificateSpec) -> None:
        try:
            if self._due_at(spec, fresh=True) > time.time():
                return  # done by another member since the overview
            if self.store.lock_holder(spec.name) is not None:
                # Another member is at it: wait for its lock to go (the watch wakes us),
                # not poll it.
                self._lock_wait[spec.name] = time.time() + self.config.lease_ttl
                return
            lease = self.kv.grant(self.config.lease_ttl)
            fence = self.store.try_lock(spec.name, self.config.member, lease)
            if fence is None:
                self.kv.revoke(lease)
                return
        except StoreUnavailable as exc:
            self._store_reached(False, exc)
            return
        self.state.held[spec.name] = fence
        self.metrics.lock_held.labels(name=spec.name).set(1)
        try:
            if self._due_at(spec, fresh=True) > time.time() or self._held_back(spec):
                return  # renewed, or failed and backing off, while we waited for the lock
            self._issue(spec, fence)
            self.state.problems.pop(spec.name, None)
            self._backoffs.pop(spec.name, None)
            self.metrics.backoff(spec.name, None)
            self.metrics.renewals.labels(name=spec.name, outcome="success").inc()
        except AcmelbError as exc:
            self.state.problems[spec.name] = str(exc)
            outcome = "lock-lost" if isinstance(exc, LockLost) else "failure"
            self.metrics.renewals.labels(name=spec.name, outcome=outcome).inc()
            self.log.error(
                "renewal-failed",
                f"renewal of {spec.name} failed: {exc}",
                spec.name,
                reason=str(exc),
                error=type(exc).__name__,
            )
            # not the CA's nor the certificate's: a successor holds the lock, or the store
            # is away (the agent issues nothing without it anyway)
            if not isinstance(exc, LockLost | StoreUnavailable):
                self._record_failure(spec, fence, exc)
        finally:
            self.state.held.pop(spec.name, None)
            self.metrics.lock_held.labels(name=spec.name).set(0)
            with contextlib.suppress(AcmelbError):
                self.kv.revoke(fence.lease)  # frees the lock and its tokens at once
        self._wake_sync.set()

    def _record_failure(self, spec: CertificateSpec, fence: Fence, exc: AcmelbError) -> None:
        """The cluster's back-off for ``spec`` after this failed attempt, in the store
        (fenced, before the lock goes) so every member and a restarted agent wait it out."""
        now = time.time()
        try:
            backoff = after_failure(
                self.store.backoff(spec.name),
                exc,
                now=now,
                member=self.config.member,
                config_digest=self._config_digest(spec),
                schedule=self.config.retry_schedule,
            )
            self.store.record_failure(fence, spec.name, backoff)
        except (StoreUnavailable, LockLost) as store_exc:
            self.log.error(
                "backoff-not-recorded",
                f"{spec.name}: the back-off could not be recorded: {store_exc}",
                spec.name,
                reason=str(store_exc),
            )
            return
        self._backoffs[spec.name] = backoff
        self.metrics.backoff(spec.name, backoff)
        self.log.warning(
            "backoff",
            f"{spec.name}: failure {backoff.failures} in a row ({backoff.kind}); the cluster "
            f"waits {backoff.next_attempt - now:.0f} s before the next attempt",
            spec.name,
            failures=backoff.failures,
            kind=backoff.kind,
            next_attempt=backoff.next_attempt,
        )

    def _issue(self, spec: CertificateSpec, fence: Fence) -> None:
        from acmelb.acme.issuance import IssuanceState, Pipeline, check_profile, generate_key
        from acmelb.acme.selfcheck import make_self_check

        client = self._ca_client()
        check_profile(client, spec.profile)  # before any order: a one-line failure
        self._wait_for_members_answering(client.thumbprint)
        order = self._resumable_order(spec, client)
        if order is None:
            order = PendingOrder(
                state=IssuanceState(
                    names=spec.names, profile=spec.profile, replaces=self._replaces(spec)
                ),
                privkey_pem=generate_key(spec.key_type),
                started_by=self.config.member,
                started_at=time.time(),
            )
            self.log.info(
                "ordering", f"{spec.name}: this member holds the lock; ordering", spec.name
            )
        else:
            self.log.info(
                "resuming-order",
                f"{spec.name}: resuming the order {order.state.order_url} left by "
                f"{order.started_by} at step {order.state.step.value}",
                spec.name,
                order=order.state.order_url,
                started_by=order.started_by,
                step=order.state.step.value,
            )
        self_check = make_self_check(
            spec.self_check,
            SolverOptions(kind="cluster"),
            self.log.progress(spec.name),
            more_vantages=lambda: self._member_vantages(fence),
        )

        def on_step(state: IssuanceState) -> None:
            if state.step.value == "present" and state.order_url != order.state.order_url:
                self.metrics.orders.labels(name=spec.name).inc()
            self.store.save_order(fence, spec.name, replace(order, state=state))

        def save(state: IssuanceState, key: bytes) -> None:
            self._save_certificate(spec, fence, state, key)

        pipeline = Pipeline(
            client,
            ClusterSolver(self.store, fence, self.tokens),
            save=save,
            self_check=self_check,
            progress=self.log.progress(spec.name),
            on_step=on_step,
            # refused before any answer: the order stays pending, resumed after the back-off
            keep_unanswered=True,
        )
        try:
            pipeline.run(order.state, order.privkey_pem)
        except AcmelbError:
            if pipeline.deactivated:  # withdrawn (refused by the self-check): a dead order
                self.store.drop_order(fence, spec.name)
            raise
        finally:
            if self_check is not None:
                codes = {
                    f.code.value for r in self_check.reports for f in r.findings if f.sev.failing
                }
                self.metrics.last_self_check(spec.name, codes)

    def _replaces(self, spec: CertificateSpec) -> str | None:
        """The ARI ID of the certificate this order renews, when the CA gave a window for
        it; a renewal the CA asked for early (a window before the lifetime's) is said."""
        summary = self._current.get(spec.name)
        state = self._ari_window(spec, summary) if summary is not None else None
        if state is None or summary is None:
            return None
        lifetime = default_window(
            summary["not_before"], summary["not_after"], self.config.renew_fraction
        )
        if state.window.start < lifetime.start and state.moment < lifetime.start:
            self.metrics.ari_early_renewals.labels(name=spec.name).inc()
            said = f"; the CA explains: {state.explanation_url}" if state.explanation_url else ""
            self.log.info(
                "ari-early-renewal",
                f"{spec.name}: renewing early, in the CA's ARI window (before the lifetime's "
                f"window opens){said}",
                spec.name,
                explanation_url=state.explanation_url,
            )
        return state.cert_id or None

    def _resumable_order(self, spec: CertificateSpec, client: Any) -> PendingOrder | None:
        """The order a previous holder left, from where it can go on; None to start anew."""
        pending = self.store.order(spec.name)
        if pending is None or pending.state.order_url is None:
            return None
        try:
            status = client.fetch_order_body(pending.state.order_url).status.name
        except AcmelbError as exc:
            self.log.warning(
                "order-not-resumed",
                f"{spec.name}: the pending order cannot be resumed ({exc}); a new one",
                spec.name,
                reason=str(exc),
            )
            return None
        if status in ("invalid", "deactivated", "expired", "revoked"):
            self.log.info(
                "order-not-resumed",
                f"{spec.name}: the pending order is {status}; a new one",
                spec.name,
                reason=status,
            )
            return None
        return replace(pending, state=pending.state.resume_point())

    def _member_vantages(self, fence: Fence) -> list[MemberVantage]:
        return [
            MemberVantage(self.store, fence, record.member)
            for record in self.store.members()
            if record.member != self.config.member
        ]

    def _save_certificate(
        self, spec: CertificateSpec, fence: Fence, state: Any, key: bytes
    ) -> None:
        from acmelb.acme.issuance import split_chain

        cert_pem, chain_pem = split_chain(state.fullchain_pem.encode("ascii"))
        not_before, not_after = _not_before_after(cert_pem)
        current = self.store.current_summary(spec.name)
        version = (current["version"] + 1) if current else 1
        self.store.save_certificate(
            fence,
            StoredCertificate(
                name=spec.name,
                names=spec.names,
                version=version,
                cert_pem=cert_pem,
                chain_pem=chain_pem,
                privkey_pem=key,
                not_before=not_before,
                not_after=not_after,
                issued_by=self.config.member,
            ),
        )
        expires = datetime.datetime.fromtimestamp(not_after, datetime.UTC)
        self.log.info(
            "stored",
            f"{spec.name}: version {version} stored, valid until {expires:%Y-%m-%d %H:%M:%S} UTC",
            spec.name,
            version=version,
            not_after=not_after,
        )

    def _ca_client(self) -> Any:
        """One CA session on the cluster's one account (its key shared, sealed, in etcd)."""
        if self._client is None:
            from josepy.jwk import JWK

            from acmelb.acme.ca import CAClient, CAConfig, new_account_key, register_account

            config = CAConfig(self.config.directory, self.config.ca_bundle, self.config.email)
            key_json = self.store.account_key(config.directory_url, new_account_key().json_dumps())
            client = CAClient(config, JWK.json_loads(key_json))
            register_account(client)
            self._client = client
            if self.answers.stateless is None:
                self._answer_for(key_json)
        return self._client

    def _wait_for_members_answering(self, thumbprint: str) -> None:
        """Before presenting: every live member answers the account's tokens (statelessly),
        so the CA's request finds the answer whichever instance the LB picks, however late
        the member's copy of the token. Bounded: a member that does not say so within
        the lease time is not waited for (the self-check, if on, sees the rest)."""
        wait_until(
            lambda: all(m.answers_for == thumbprint for m in self.store.members()),
            timeout=self.config.lease_ttl,
            interval=0.1,
        )
