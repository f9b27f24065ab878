"""A real etcd cluster in network namespaces, for the cluster-mode tests and demo.

::

                              ale<id>-br (bridge br0, no address)
          +--------------------+--------------------+--------------------+
          | m1                 | m2                 | m3                 | c1, c2 ... (attach)
    ale<id>-m1            ale<id>-m2            ale<id>-m3            any namespace
    eth0 198.18.3.11      eth0 198.18.3.12      eth0 198.18.3.13      etcd0 198.18.3.101 ...
    etcd :2379 :2380      etcd :2379 :2380      etcd :2379 :2380

Each member is Debian's ``etcd`` (3.4) in its own namespace on one segment
(198.18.3.0/24), with a static initial cluster and fast raft timing (heartbeat
50 ms, election 500 ms). Other namespaces reach the members through
``attach(namespace)``: a veth from the segment's bridge into that namespace
(``etcd0``, 198.18.3.101 and up); no route is added, so it is the only traffic
that leaves them by that interface. Nothing is connected to the host's
namespace.

Namespaces are named ``ale<4 hex>-<role>`` (not ``alb``: the load-balancer
lab's sweeps must not take them for its own). State (namespaces, processes
with PID and start time, owner) is in ``/run/acmelb-etcd/<id>/state.json``;
member data and logs are under ``data_root`` (default: that directory, on
tmpfs, so fsync is cheap). ``close()`` stops exactly the recorded processes
(PID and start time must match), deletes the namespaces, and removes the data.

::

    from acmelb.lab.etcd import EtcdCluster

    with EtcdCluster.start(3) as cluster:
        client_ns = cluster.client_namespace()   # a fresh namespace on the etcd segment
        cluster.attach(lab.ns("b1"))             # or a lab backend: b1 reaches the members
        cluster.endpoints                        # ["http://198.18.3.11:2379", ...]
        cluster.kill(0); cluster.restart(0)      # SIGKILL by PID; same data dir
        cluster.cut(client_ns); cluster.heal(client_ns)   # iptables DROP to/from the members
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from acmelb.errors import LabError
from acmelb.lab import netns
from acmelb.lab.processes import (
    ProcessRecord,
    load_state_fields,
    save_state,
    start_ticks,
    stop_processes,
)

ETCD_BINARY = "/usr/bin/etcd"
STATE_ROOT = Path("/run/acmelb-etcd")
NAMESPACE = re.compile(r"^ale[0-9a-f]{4}-[a-z0-9]{1,8}$")
SUBNET = "198.18.3.0/24"
PREFIX = 24
CLIENT_PORT, PEER_PORT = 2379, 2380
BRIDGE = "br0"
ATTACH_IFNAME = "etcd0"  # the interface an attached namespace gets
CUT_CHAIN = "ACMELB-ETCD-CUT"
START_TIMEOUT = 15.0
HEARTBEAT_MS, ELECTION_MS = 50, 500
# What this process started, for the no-leftovers checks of a test run.
_clusters_started_here: list[tuple[str, Path]] = []
_processes_started_here: list[ProcessRecord] = []


def member_address(index: int) -> str:
    """The address of member ``index`` (0-based): 198.18.3.11, .12, ..."""
    return f"198.18.3.{11 + index}"


def attached_address(slot: int) -> str:
    """The address of the ``slot``-th attached namespace (0-based): 198.18.3.101, ..."""
    return f"198.18.3.{101 + slot}"


@dataclass
class EtcdState:
    """What ``state.json`` holds."""

    id: str
    members: int
    data_root: str
    own_data_root: bool
    owner_pid: int | None  # None: detached (``acmelb lab up cluster``), never stale
    owner_start_ticks: int | None
    namespaces: dict[str, str]  # role (br, m1.., c1..) -> namespace, only those we created
    attached: list[str] = field(default_factory=list)  # namespace per attach slot
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> EtcdState:
        return cls(**load_state_fields(path))

    def save(self, path: Path) -> None:
        save_state(self, path)


class EtcdCluster:
    """A running etcd cluster: ``start()`` it, drive its members, ``close()`` it.

    Members are numbered from 0 in every method (``endpoints[i]`` is member
    ``i``, named ``m<i+1>`` in etcd and in its namespace).
    """

    def __init__(self, state: EtcdState, state_dir: Path) -> None:
        self.state = state
        self.state_dir = state_dir
        self._popens: dict[int, subprocess.Popen[bytes]] = {}
        self._member_records: dict[int, ProcessRecord] = {}

    # -- identity and addresses -----------------------------------------------------

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def size(self) -> int:
        return self.state.members

    @property
    def bridge_namespace(self) -> str:
        return self.state.namespaces["br"]

    def namespace(self, index: int) -> str:
        """The namespace of member ``index``."""
        return self.state.namespaces[f"m{self._check(index) + 1}"]

    def address(self, index: int) -> str:
        return member_address(self._check(index))

    @property
    def addresses(self) -> list[str]:
        return [member_address(index) for index in range(self.size)]

    @property
    def endpoints(self) -> list[str]:
        """``http://198.18.3.1X:2379`` for every member, in member order."""
        return [f"http://{address}:{CLIENT_PORT}" for address in self.addresses]

    def data_dir(self, index: int) -> Path:
        return Path(self.state.data_root) / f"m{self._check(index) + 1}"

    def log_path(self, index: int) -> Path:
        return Path(self.state.data_root) / f"m{self._check(index) + 1}.log"

    def pid(self, index: int) -> int | None:
        """The PID of member ``index``'s etcd if it runs (stopped with SIGSTOP counts)."""
        record = self._member_records.get(self._check(index))
        return record.pid if record is not None and record.is_running() else None

    def _check(self, index: int) -> int:
        if not 0 <= index < self.size:
            raise LabError(f"etcd cluster {self.id} has members 0..{self.size - 1}, not {index}")
        return index

    # -- starting -----------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        members: int = 3,
        *,
        data_root: Path | None = None,
        timeout: float = START_TIMEOUT,
        state_root: Path = STATE_ROOT,
        detached: bool = False,
    ) -> EtcdCluster:
        """Create the segment, start ``members`` etcd members, wait until all are healthy.

        ``data_root`` holds one data directory and one log per member (created
        if missing; its ``m<N>`` entries are removed by ``close()``). On any
        failure, everything built so far is removed. A ``detached`` cluster has
        no owner process, so ``down_stale`` never takes it for a leftover.
        """
        netns.require_root()
        if not os.access(ETCD_BINARY, os.X_OK):
            raise LabError(f"{ETCD_BINARY} is missing (Debian: apt-get install etcd-server)")
        if not 1 <= members <= 9:
            raise LabError(f"an etcd lab has 1 to 9 members, not {members}")
        cluster = cls._allocate(members, data_root, state_root, None if detached else os.getpid())
        try:
            cluster._build_network()
            for index in range(members):
                cluster._start_member(index)
            cluster.wait_healthy(timeout)
        except BaseException:
            cluster.close()
            raise
        return cluster

    @classmethod
    def _allocate(
        cls, members: int, data_root: Path | None, state_root: Path, owner: int | None
    ) -> EtcdCluster:
        state_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(20):
            cluster_id = secrets.token_hex(2)
            if any(name.startswith(f"ale{cluster_id}-") for name in netns.existing()):
                continue
            state_dir = state_root / cluster_id
            try:
                state_dir.mkdir(mode=0o755)
            except FileExistsError:
                continue
            root = data_root if data_root is not None else state_dir
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            roles = ["br", *(f"m{index + 1}" for index in range(members))]
            state = EtcdState(
                id=cluster_id,
                members=members,
                data_root=str(root),
                own_data_root=data_root is None,
                owner_pid=owner,
                owner_start_ticks=start_ticks(owner) if owner else None,
                namespaces={role: f"ale{cluster_id}-{role}" for role in roles},
            )
            cluster = cls(state, state_dir)
            cluster._save()
            _clusters_started_here.append((cluster_id, state_dir))
            return cluster
        raise LabError(f"could not allocate a free etcd lab id under {state_root}")

    def _save(self) -> None:
        self.state.save(self.state_dir / "state.json")

    def _build_network(self) -> None:
        bridge_ns = self.bridge_namespace
        for name in self.state.namespaces.values():
            netns.add(name)
        # Both ends of every veth are created inside our namespaces, never in the host's.
        netns.ip(
            [],
            batch="".join(
                f"link add m{index + 1} netns {bridge_ns} type veth peer name eth0 "
                f"netns {self.namespace(index)}\n"
                for index in range(self.size)
            ),
        )
        netns.ip(
            [],
            namespace=bridge_ns,
            batch="".join(
                [
                    "link set lo up\n",
                    f"link add {BRIDGE} type bridge\n",
                    f"link set {BRIDGE} up\n",
                    *(f"link set m{index + 1} master {BRIDGE} up\n" for index in range(self.size)),
                ]
            ),
        )
        for index in range(self.size):
            netns.ip(
                [],
                namespace=self.namespace(index),
                batch=(
                    "link set lo up\nlink set eth0 up\n"
                    f"addr add {member_address(index)}/{PREFIX} dev eth0\n"
                ),
            )

    def _argv(self, index: int) -> list[str]:
        name = f"m{index + 1}"
        address = member_address(index)
        initial = ",".join(
            f"m{i + 1}=http://{member_address(i)}:{PEER_PORT}" for i in range(self.size)
        )
        return [
            ETCD_BINARY,
            "--name",
            name,
            "--data-dir",
            str(self.data_dir(index)),
            "--listen-client-urls",
            f"http://{address}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}",
            "--advertise-client-urls",
            f"http://{address}:{CLIENT_PORT}",
            "--listen-peer-urls",
            f"http://{address}:{PEER_PORT}",
            "--initial-advertise-peer-urls",
            f"http://{address}:{PEER_PORT}",
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"acmelb-{self.id}",
            "--heartbeat-interval",
            str(HEARTBEAT_MS),
            "--election-timeout",
            str(ELECTION_MS),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]

    def _start_member(self, index: int) -> ProcessRecord:
        namespace = self.namespace(index)
        with self.log_path(index).open("ab") as out:
            popen = subprocess.Popen(
                [*netns.exec_prefix(namespace), *self._argv(index)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state.data_root,
            )
        record = ProcessRecord(
            f"m{index + 1}",
            "etcd",
            popen.pid,
            start_ticks(popen.pid) or 0,
            self._argv(index),
            str(self.log_path(index)),
        )
        self._popens[popen.pid] = popen
        self._member_records[index] = record
        self.state.processes.append(record)
        _processes_started_here.append(record)
        self._save()
        return record

    # -- health ---------------------------------------------------------------------------

    def member_health(self, index: int, timeout: float = 1.0) -> bool:
        """Member ``index`` answers ``/health`` with true (it has a leader and can serve)."""
        url = f"http://{self.address(index)}:{CLIENT_PORT}/health"

        def ask() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return bool(json.loads(response.read()).get("health") == "true")
            except (OSError, ValueError, urllib.error.URLError):
                return False

        return netns.call_in(self.namespace(index), ask)

    def healthy_members(self) -> list[int]:
        return [
            index
            for index in range(self.size)
            if self.pid(index) is not None and self.member_health(index)
        ]

    def wait_healthy(
        self, timeout: float = START_TIMEOUT, members: Sequence[int] | None = None
    ) -> None:
        """Wait until ``members`` (default: all) report healthy; LabError after ``timeout``."""
        wanted = list(range(self.size)) if members is None else [self._check(m) for m in members]
        deadline = time.monotonic() + timeout
        while True:
            for index in wanted:
                if self.pid(index) is None:
                    raise LabError(
                        f"etcd member m{index + 1} in {self.namespace(index)} is not "
                        f"running: {self._log_tail(index)}"
                    )
            pending = [index for index in wanted if not self.member_health(index, 0.5)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"m{index + 1}" for index in pending)
                raise LabError(
                    f"etcd member(s) {names} not healthy within {timeout:.0f} s: "
                    f"{self._log_tail(pending[0])}"
                )
            time.sleep(0.05)

    def _log_tail(self, index: int) -> str:
        with contextlib.suppress(OSError):
            lines = self.log_path(index).read_text(errors="replace").strip().splitlines()
            return lines[-1][:300] if lines else "(no output)"
        return "(no log)"

    # -- failures -----------------------------------------------------------------------

    def _signal(self, index: int, signum: signal.Signals) -> ProcessRecord:
        record = self._member_records.get(self._check(index))
        if record is None or not record.is_running():
            raise LabError(f"etcd member m{index + 1} is not running")
        os.kill(record.pid, signum)
        return record

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (by its recorded PID) and reap it."""
        record = self._signal(index, signal.SIGKILL)
        popen = self._popens.pop(record.pid, None)
        if popen is not None:
            popen.wait(5)

    def restart(self, index: int, *, wait: bool = True, timeout: float = START_TIMEOUT) -> None:
        """Start member ``index`` again on its data directory (after ``kill``).

        With ``wait``, return once it listens on its client port (it is healthy
        only when a quorum is up: see ``wait_healthy``).
        """
        if self.pid(index) is not None:
            raise LabError(f"etcd member m{index + 1} still runs (pid {self.pid(index)})")
        record = self._start_member(index)
        if wait and not netns.wait_listening(
            self.namespace(index), {CLIENT_PORT}, time.monotonic() + timeout, record.is_running
        ):
            raise LabError(f"etcd member m{index + 1} did not come back: {self._log_tail(index)}")

    def stop_member(self, index: int) -> None:
        """SIGSTOP member ``index``: it keeps its sockets and answers nothing."""
        self._signal(index, signal.SIGSTOP)

    def cont_member(self, index: int) -> None:
        """SIGCONT member ``index`` after ``stop_member``."""
        self._signal(index, signal.SIGCONT)

    # -- clients ---------------------------------------------------------------------------

    def attach(self, namespace: str) -> str:
        """Connect ``namespace`` to the etcd segment; return the address it got there.

        A veth ``etcd0`` in ``namespace``, its peer on the segment's bridge;
        198.18.3.101 for the first attached namespace, .102 for the next. No
        route is added beyond the segment's own. Attaching twice is an error.
        """
        if namespace in self.state.attached:
            raise LabError(f"{namespace} is already attached to etcd lab {self.id}")
        if not (netns.NETNS_RUN_DIR / namespace).exists():
            raise LabError(f"no namespace {namespace}")
        slot = len(self.state.attached)
        if slot >= 100:
            raise LabError("at most 100 namespaces can be attached to one etcd lab")
        peer = f"c{slot + 1}"
        address = attached_address(slot)
        netns.ip(
            [],
            batch=f"link add {peer} netns {self.bridge_namespace} type veth peer name "
            f"{ATTACH_IFNAME} netns {namespace}\n",
        )
        self.state.attached.append(namespace)
        self._save()
        netns.ip([], namespace=self.bridge_namespace, batch=f"link set {peer} master {BRIDGE} up\n")
        netns.ip(
            [],
            namespace=namespace,
            batch=(
                f"link set lo up\nlink set {ATTACH_IFNAME} up\n"
                f"addr add {address}/{PREFIX} dev {ATTACH_IFNAME}\n"
            ),
        )
        return address

    def client_namespace(self, role: str | None = None) -> str:
        """A new namespace owned by this cluster (removed by ``close``), attached to it."""
        role = role or f"c{sum(1 for r in self.state.namespaces if r.startswith('c')) + 1}"
        if role in self.state.namespaces or not re.fullmatch(r"[a-z0-9]{1,8}", role):
            raise LabError(f"bad or duplicate client role {role!r}")
        name = f"ale{self.id}-{role}"
        self.state.namespaces[role] = name
        self._save()
        netns.add(name)
        self.attach(name)
        return name

    def attached_address(self, namespace: str) -> str:
        try:
            return attached_address(self.state.attached.index(namespace))
        except ValueError as exc:
            raise LabError(f"{namespace} is not attached to etcd lab {self.id}") from exc

    def cut(self, namespace: str, members: Sequence[int] | None = None) -> None:
        """Drop traffic between ``namespace`` and ``members`` (default: all) with iptables.

        Rules go into chain ``ACMELB-ETCD-CUT``, jumped to from INPUT and OUTPUT
        in ``namespace``: packets are dropped, not refused, as in a real
        partition, so a client sees timeouts. ``namespace`` may be a member's
        own namespace (it is then cut from the other members).
        """
        targets = [
            member_address(self._check(index))
            for index in (range(self.size) if members is None else members)
        ]
        own = {member_address(i) for i in range(self.size) if self.namespace(i) == namespace}
        self._iptables(namespace, ["-N", CUT_CHAIN], check=False)
        for hook in ("INPUT", "OUTPUT"):
            if self._iptables(namespace, ["-C", hook, "-j", CUT_CHAIN], check=False):
                continue
            self._iptables(namespace, ["-I", hook, "1", "-j", CUT_CHAIN])
        for address in targets:
            if address in own:
                continue
            self._iptables(namespace, ["-A", CUT_CHAIN, "-s", address, "-j", "DROP"])
            self._iptables(namespace, ["-A", CUT_CHAIN, "-d", address, "-j", "DROP"])

    def heal(self, namespace: str) -> None:
        """Remove every cut of ``namespace`` (flush the chain; the hooks stay, empty)."""
        self._iptables(namespace, ["-F", CUT_CHAIN], check=False)

    @staticmethod
    def _iptables(namespace: str, args: Sequence[str], *, check: bool = True) -> bool:
        proc = netns.run_in(namespace, ["iptables", "-w", *args], timeout=10)
        if check and proc.returncode != 0:
            raise LabError(f"iptables {' '.join(args)} in {namespace}: {proc.stderr.strip()}")
        return proc.returncode == 0

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the members (only our PIDs), delete our namespaces and data; idempotent.

        Namespaces that were only attached keep existing; their ``etcd0`` goes
        away with the bridge namespace and their cut chain is flushed.
        """
        # SIGKILL at once: the data goes anyway, and a member given SIGTERM takes
        # about 2 s to hand over leadership and stop.
        for record in self.state.processes:
            if record.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGKILL)
        stop_processes(self.state.processes, self._popens)
        own = set(self.state.namespaces.values())
        for namespace in self.state.attached:
            if namespace not in own and (netns.NETNS_RUN_DIR / namespace).exists():
                self.heal(namespace)
        for name in self.state.namespaces.values():
            netns.delete(name)
        root = Path(self.state.data_root)
        for index in range(self.size):
            shutil.rmtree(root / f"m{index + 1}", ignore_errors=True)
            with contextlib.suppress(OSError):
                (root / f"m{index + 1}.log").unlink()
        if not self.state.own_data_root:
            with contextlib.suppress(OSError):
                root.rmdir()  # only if now empty: never remove what was there before
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def attach_state(cls, cluster_id: str, *, state_root: Path = STATE_ROOT) -> EtcdCluster:
        """The cluster ``cluster_id`` from its state file (to tear it down from elsewhere)."""
        state_dir = state_root / cluster_id
        try:
            cluster = cls(EtcdState.load(state_dir / "state.json"), state_dir)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise LabError(f"no etcd lab {cluster_id!r} ({exc})") from exc
        for record in cluster.state.processes:
            if record.is_running():
                cluster._member_records[int(record.role[1:]) - 1] = record
        return cluster

    def is_stale(self) -> bool:
        owner = self.state.owner_pid
        return owner is not None and start_ticks(owner) != self.state.owner_start_ticks


def down_stale(*, state_root: Path = STATE_ROOT, only_stale: bool = True) -> list[str]:
    """Tear down etcd labs whose owner process is gone (a killed test run); all of them
    without ``only_stale`` (``acmelb lab down --all``)."""
    removed: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(state_root.iterdir()):
            with contextlib.suppress(LabError):
                cluster = EtcdCluster.attach_state(entry.name, state_root=state_root)
                if cluster.is_stale() or not only_stale:
                    cluster.close()
                    removed.append(cluster.id)
    return removed


def remove_orphan_namespaces(*, state_root: Path = STATE_ROOT) -> list[str]:
    """Delete etcd-lab namespaces (``ale<4 hex>-*``) that no state file accounts for."""
    removed: list[str] = []
    for name in netns.existing():
        if NAMESPACE.match(name) and not (state_root / name[3:7] / "state.json").exists():
            netns.delete(name)
            removed.append(name)
    return removed


def down_clusters_of_this_process() -> None:
    """Tear down whatever the etcd labs started by this process left (after reporting it)."""
    for cluster_id, state_dir in _clusters_started_here:
        if (state_dir / "state.json").exists():
            with contextlib.suppress(LabError):
                EtcdCluster.attach_state(cluster_id, state_root=state_dir.parent).close()
        for name in netns.existing():
            if name.startswith(f"ale{cluster_id}-"):
                netns.delete(name)
    stop_processes([r for r in _processes_started_here if r.is_running()], {})


def leftovers_of_this_process() -> list[str]:
    """What the etcd labs started by this process left: namespaces, state, processes."""
    problems: list[str] = []
    for cluster_id, state_dir in _clusters_started_here:
        problems += [
            f"namespace {name}" for name in netns.existing() if name.startswith(f"ale{cluster_id}-")
        ]
        if state_dir.exists():
            problems.append(f"state directory {state_dir}")
    problems += [
        f"process {record.pid} (etcd {record.role})"
        for record in _processes_started_here
        if record.is_running()
    ]
    return problems
