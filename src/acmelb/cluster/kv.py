"""The etcd v3 store, through the maintained ``etcd-sdk-python`` client (``pyetcd``).

Only what the cluster needs, each call bounded by the store timeout and every
client failure turned into ``StoreUnavailable`` (one line, with the cause
chained): reads, prefix reads, leases, watches, and transactions. Writes of a
lock holder go through ``fenced``: a transaction that succeeds only while the
lock key still has the create revision the holder got when it took the lock,
so an instance that paused past its lease cannot overwrite a successor's work
(docs/cluster.md). See docs/cluster-etcd-client.md for why this client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pyetcd
from pyetcd import exceptions as etcd_errors

from acmelb.cluster.config import StoreConfig
from acmelb.errors import LockLost, StoreUnavailable, UsageError

T = TypeVar("T")
MIN_ATTEMPT = 0.2  # seconds: the shortest wait for one endpoint's answer
RETRY_PAUSE = 0.1  # seconds between two rounds over the endpoints
_CLIENT_ERRORS = (etcd_errors.Etcd3Exception, grpc.RpcError, ValueError)


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class Fence:
    """The proof a lock holder carries: its lock key and that key's create revision."""

    key: str
    create_revision: int
    lease: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


Op = Put | Delete


def _entry(value: bytes, meta: Any) -> Entry:
    return Entry(
        key=meta.key.decode("utf-8"),
        value=value,
        create_revision=int(meta.create_revision),
        mod_revision=int(meta.mod_revision),
        lease=int(meta.lease_id),
    )


class EtcdKV:
    """One client for all endpoints, failing over between them."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.prefix = config.prefix.rstrip("/")
        self._lock = threading.Lock()  # the client's failover bookkeeping is not thread-safe
        self.client = self._connect()

    def _connect(self) -> Any:
        """A client for every endpoint; with a user, it authenticates here."""
        creds = self._credentials(self.config)
        endpoints = [
            pyetcd.Endpoint(e.host, e.port, secure=creds is not None, creds=creds, time_retry=2.0)
            for e in self.config.endpoints
        ]
        try:
            return pyetcd.MultiEndpointEtcd3Client(
                endpoints,
                timeout=self.config.timeout,
                user=self.config.user,
                password=self.config.password,
                failover=True,
            )
        except _CLIENT_ERRORS as exc:
            raise StoreUnavailable(
                f"cannot reach the store at {self.where}: {_describe(exc)}"
            ) from exc

    @staticmethod
    def _credentials(config: StoreConfig) -> grpc.ChannelCredentials | None:
        if config.tls is None:
            return None
        try:

            def read(path: Any) -> bytes | None:
                return path.read_bytes() if path else None

            return grpc.ssl_channel_credentials(
                read(config.tls.ca), read(config.tls.key), read(config.tls.cert)
            )
        except OSError as exc:
            raise UsageError(f"store TLS file: {exc.filename}: {exc.strerror}") from exc

    @property
    def where(self) -> str:
        return ",".join(str(e) for e in self.config.endpoints)

    def path(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # -- every call through one retry and error policy ---------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """One request, bounded by the store timeout in all: each endpoint in turn (the
        client fails over), again after a short pause while time remains (a member that
        just lost its leader answers once the election is over, usually within a second
        or two). A request that got no answer in that time is StoreUnavailable: without
        quorum an agent knows it within the timeout, not once per endpoint."""
        deadline = time.monotonic() + self.config.timeout
        last: BaseException | None = None
        reauthenticated = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                with self._lock:
                    # a third of the timeout an attempt: a member that lost its leader
                    # drops the proposal, and only an attempt after the election succeeds
                    self.client.timeout = max(MIN_ATTEMPT, min(remaining, self.config.timeout / 3))
                    return fn()
            except etcd_errors.NoServerAvailableError as exc:
                last = exc  # every endpoint failed a moment ago: wait for one to come back
            except _CLIENT_ERRORS as exc:
                last = exc
                if self.config.user and not reauthenticated and _auth_expired(exc):
                    # The client never renews its token: after etcd's --auth-token-ttl
                    # every call fails until it authenticates again; then once more.
                    self.client = self._connect()
                    reauthenticated = True
                    continue
            time.sleep(min(RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
        raise StoreUnavailable(
            f"the store at {self.where} did not answer to {what} within "
            f"{self.config.timeout:g} s: {_describe(last)}"
        ) from last

    # -- reads -----------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        value, meta = self._call(f"read {key}", lambda: self.client.get(key))
        return None if meta is None else _entry(value, meta)

    def get_prefix(self, prefix: str) -> list[Entry]:
        items = self._call(f"read {prefix}", lambda: list(self.client.get_prefix(prefix)))
        return [_entry(value, meta) for value, meta in items]

    def revision(self) -> int:
        response = self._call("read the revision", lambda: self.client.get_response(self.path("")))
        return int(response.header.revision)

    def endpoint_health(self) -> dict[str, str]:
        """Each endpoint asked on its own: 'up (etcd VERSION)' or why it did not answer."""
        health = {}
        for endpoint in self.config.endpoints:
            single = StoreConfig(
                endpoints=(endpoint,),
                prefix=self.config.prefix,
                tls=self.config.tls,
                user=self.config.user,
                password=self.config.password,
                timeout=1.0,
            )
            try:
                one = EtcdKV(single)
                try:
                    status = one._call("report its status", one.client.status)
                finally:
                    one.close()
                health[str(endpoint)] = f"up (etcd {status.version})"
            except StoreUnavailable as exc:
                health[str(endpoint)] = f"unreachable: {_describe(exc.__cause__)}"
        return health

    # -- writes ------------------------------------------------------------------------
    def put(self, key: str, value: bytes, lease: int | None = None) -> None:
        self._call(f"write {key}", lambda: self.client.put(key, value, lease=lease))

    def create(self, key: str, value: bytes, lease: int | None = None) -> bool:
        """Write ``key`` only if it does not exist; True if this call created it."""
        tx = self.client.transactions
        ok, _ = self._call(
            f"create {key}",
            lambda: self.client.transaction(
                compare=[tx.create(key) == 0], success=[tx.put(key, value, lease=lease)], failure=[]
            ),
        )
        return bool(ok)

    def delete(self, key: str, *, prefix: bool = False) -> None:
        if prefix:
            self._call(f"delete {key}", lambda: self.client.delete_prefix(key))
        else:
            self._call(f"delete {key}", lambda: self.client.delete(key))

    def fenced(self, fence: Fence, ops: Sequence[Op]) -> None:
        """Apply ``ops`` at once, only while ``fence`` still holds its lock: else LockLost."""
        tx = self.client.transactions
        requests: list[Any] = []
        for op in ops:
            if isinstance(op, Put):
                requests.append(tx.put(op.key, op.value, lease=op.lease))
            elif op.prefix:
                requests.append(tx.delete(op.key, range_end=_prefix_end(op.key)))
            else:
                requests.append(tx.delete(op.key))
        ok, _ = self._call(
            f"write under the lock {fence.key}",
            lambda: self.client.transaction(
                compare=[tx.create(fence.key) == fence.create_revision],
                success=requests,
                failure=[],
            ),
        )
        if not ok:
            raise LockLost(
                f"the lock {fence.key} is no longer ours (our lease expired and "
                "another instance took it): nothing was written"
            )

    # -- leases ------------------------------------------------------------------------
    def grant(self, ttl: int) -> int:
        lease = self._call("grant a lease", lambda: self.client.lease(ttl))
        return int(lease.id)

    def refresh(self, lease: int) -> bool:
        """Keep ``lease`` alive; False once it has expired (its keys are gone)."""
        responses = self._call("refresh a lease", lambda: list(self.client.refresh_lease(lease)))
        return bool(responses) and int(responses[-1].TTL) > 0

    def revoke(self, lease: int) -> None:
        self._call("revoke a lease", lambda: self.client.revoke_lease(lease))

    # -- watches -----------------------------------------------------------------------
    def watch_prefix(
        self, prefix: str, on_event: Callable[[Any], None], start_revision: int | None = None
    ) -> Callable[[], None]:
        """Call ``on_event`` with each watch response; returns the cancel function."""
        kwargs = {} if start_revision is None else {"start_revision": start_revision}
        watch_id = self._call(
            f"watch {prefix}",
            lambda: self.client.add_watch_prefix_callback(prefix, on_event, **kwargs),
        )

        def cancel() -> None:
            with contextlib.suppress(*_CLIENT_ERRORS):  # on a dead connection: gone already
                self.client.cancel_watch(watch_id)

        return cancel

    def close(self) -> None:
        with contextlib.suppress(*_CLIENT_ERRORS):
            self.client.close()


def _prefix_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode("utf-8"))
    raw[-1] += 1
    return bytes(raw)


def _auth_expired(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    expired = callable(code) and code() == grpc.StatusCode.UNAUTHENTICATED
    return expired or "invalid auth token" in _describe(exc)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no endpoint"
    if isinstance(exc, grpc.RpcError):
        details = getattr(exc, "details", lambda: None)()
        return str(details or exc.code())
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout``; every wait here is bounded."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
