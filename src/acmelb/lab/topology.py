"""Build, drive and tear down one lab: namespaces, links, rules and processes.

::

      alb<id>-pub                 alb<id>-lb                         alb<id>-b1 .. bN
    +-------------+  veth   +-----------------------+  veth   +------------------+
    | 198.18.0.1  |---------| up0 198.18.0.2        |  vbI    | eth0 198.18.1.1I |
    | Pebble, DNS | eth0    |     VIP 198.18.0.10   |---br0---| default via      |
    | (internet)  |         | br0 198.18.1.1        |         |   198.18.1.1     |
    +-------------+         | haproxy / iptables    |         | responder/nginx  |
                            +-----------------------+         +------------------+

The public namespace has no route to the backend segment (it is the
internet); the backends reach the public side through the LB as their NAT
gateway. Nothing is connected to the host's own namespace.

Every process is started through ``ip netns exec`` in a new session and
recorded (PID and start time) in ``/run/acmelb-lab/<id>/state.json``, so any
process can tear a lab down, and ``down_all`` finds exactly the lab's own
processes and namespaces.

A cluster lab adds each backend's TLS server (``tls``) and an etcd cluster
(``etcd``). Within the lab package, this module imports ``processes``,
``netns``, ``configs``, ``scenarios``, ``fetch``, ``tls``, ``etcd`` and
``pebble``; ``cluster`` and ``demo`` import it, never the other way round.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acmelb.errors import LabError, UsageError
from acmelb.lab import configs, netns, tls
from acmelb.lab import etcd as etcd_lab
from acmelb.lab.etcd import EtcdCluster
from acmelb.lab.fetch import FetchResult, curl_fetch
from acmelb.lab.processes import (
    ProcessRecord,
    load_state_fields,
    save_state,
    start_ticks,
    stop_processes,
)
from acmelb.lab.scenarios import ADDRESSES, OTHER_THUMBPRINT, Behaviour, Scenario

if TYPE_CHECKING:
    from acmelb.lab.pebble import LogCounts, PebbleCA

STATE_ROOT = Path("/run/acmelb-lab")
PUBLIC, LB = "pub", "lb"
CA_PORT, CA_MANAGEMENT_PORT, DNS_PORT = 14000, 15000, 53
START_TIMEOUT = 10.0
ETCD_MEMBERS = 3  # the cluster lab's etcd
# What this process built, for the no-leftovers check at the end of a test run.
_labs_built_here: list[tuple[str, Path]] = []
_processes_started_here: list[ProcessRecord] = []


@dataclass
class LabState:
    """What ``state.json`` holds."""

    id: str
    scenario: dict[str, Any]
    namespaces: dict[str, str]
    owner_pid: int | None
    owner_start_ticks: int | None
    created: float
    processes: list[ProcessRecord] = field(default_factory=list)
    etcd_id: str | None = None  # the cluster lab's EtcdCluster (closed by down)

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls(**load_state_fields(path))

    def save(self, path: Path) -> None:
        save_state(self, path)


def _scenario_from_dict(data: Mapping[str, Any]) -> Scenario:
    return Scenario(
        mode=data["mode"],
        backends=tuple(data["backends"]),
        shortcut=tuple(data["shortcut"]),
        name=data["name"],
        token=data["token"],
        thumbprint=data["thumbprint"],
        ipv6=data["ipv6"],
        ca=data["ca"],
        split_horizon=data.get("split_horizon", False),
        extra_tokens=tuple((token, key) for token, key in data.get("extra_tokens", ())),
        cluster=data.get("cluster", False),
        dns_names=tuple(data.get("dns_names", ())),
        cert_validity=data.get("cert_validity"),
        perspectives=data.get("perspectives", 0),
        blocked=tuple(data.get("blocked", ())),
    )


class Lab:
    """One running lab. Build with ``build(scenario)``; find again with ``Lab.attach(id)``."""

    def __init__(self, state: LabState, state_dir: Path) -> None:
        self.state = state
        self.state_dir = state_dir
        self.scenario = _scenario_from_dict(state.scenario)
        self.ca: PebbleCA | None = None  # set only in the process that started it
        self._etcd: EtcdCluster | None = None
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    # -- identity and addresses ------------------------------------------------

    @property
    def id(self) -> str:
        return self.state.id

    @property
    def namespaces(self) -> dict[str, str]:
        """Role (``pub``, ``lb``, ``b1``...) to namespace name."""
        return dict(self.state.namespaces)

    @property
    def backends(self) -> tuple[str, ...]:
        return self.scenario.backend_roles

    def ns(self, role: str) -> str:
        """The namespace name of ``role`` (a role or a full namespace name of this lab)."""
        if role in self.state.namespaces:
            return self.state.namespaces[role]
        if role in self.state.namespaces.values():
            return role
        roles = ", ".join(self.state.namespaces)
        raise LabError(f"lab {self.id} has no namespace {role!r} (roles: {roles})")

    def exec_prefix(self, role: str) -> list[str]:
        """The command prefix that runs a command in ``role``'s namespace."""
        return netns.exec_prefix(self.ns(role))

    def vantage(self, role: str) -> str:
        """The same prefix as one string, for ``acmelb diagnose --inside/--outside``."""
        return " ".join(self.exec_prefix(role))

    @property
    def vip(self) -> str:
        return ADDRESSES.vip

    @property
    def vip6(self) -> str | None:
        return ADDRESSES.vip6 if self.scenario.ipv6 else None

    def backend_address(self, role: str) -> str:
        return ADDRESSES.backend(self.backends.index(role) + 1)

    @property
    def url(self) -> str:
        """The challenge URL of the lab token."""
        return f"http://{self.scenario.name}{self.scenario.challenge_path}"

    @property
    def ca_directory_url(self) -> str | None:
        return f"https://{ADDRESSES.public_host}:{CA_PORT}/dir" if self.scenario.ca else None

    @property
    def ca_bundle(self) -> Path | None:
        """The TLS CA certificate to trust when talking to the lab's Pebble."""
        return self.state_dir / "pebble" / "tls-ca.pem" if self.scenario.ca else None

    @property
    def dns_server(self) -> str:
        return f"{ADDRESSES.public_host}:{DNS_PORT}"

    # -- driving -----------------------------------------------------------------

    def run(
        self,
        role: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float | None = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in ``role``'s namespace and wait for it (exit code not checked)."""
        return netns.run_in(self.ns(role), argv, input=input, timeout=timeout)

    def fetch(
        self,
        role: str,
        url: str | None = None,
        *,
        address: str | None = None,
        proxy_protocol: bool = False,
        connect_timeout: float = 1.0,
        max_time: float = 3.0,
        headers: Sequence[str] = (),
    ) -> FetchResult:
        """One plain HTTP GET (no redirects followed) from ``role``'s namespace.

        ``url`` defaults to the lab's challenge URL, resolved by the namespace's
        hosts file; ``address`` connects there instead (curl ``--resolve``).
        ``proxy_protocol`` sends a PROXY v1 header first.
        """
        return curl_fetch(
            self.exec_prefix(role),
            url or self.url,
            address=address,
            proxy_protocol=proxy_protocol,
            connect_timeout=connect_timeout,
            max_time=max_time,
            headers=headers,
        )

    def start_process(
        self,
        role: str,
        what: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> ProcessRecord:
        """Start a long-running process in ``role``'s namespace, recorded for teardown.

        Its output goes to ``log_path`` (default ``STATE/<role>-<what>.log``), appended.
        """
        log = log_path or self.state_dir / f"{role}-{what}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [*self.exec_prefix(role), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
            )
        ticks = start_ticks(popen.pid)
        record = ProcessRecord(role, what, popen.pid, ticks or 0, list(argv), str(log))
        self._record(record, popen)
        return record

    def _record(self, record: ProcessRecord, popen: subprocess.Popen[bytes] | None) -> None:
        if popen is not None:
            self._popens[popen.pid] = popen
        self.state.processes.append(record)
        _processes_started_here.append(record)
        self._save()

    def processes(self) -> list[ProcessRecord]:
        return list(self.state.processes)

    # -- cluster mode: etcd, agents, TLS, the CA's counts ---------------------------------

    def _require_cluster(self) -> None:
        if not self.scenario.cluster:
            raise LabError(
                f"lab {self.id} is not a cluster lab (Scenario.cluster_preset, "
                "acmelb lab up cluster)"
            )

    @property
    def etcd(self) -> EtcdCluster:
        """The cluster lab's etcd (members 198.18.3.11-13, attached to every backend)."""
        if self._etcd is None:
            self._require_cluster()
            if self.state.etcd_id is None:
                raise LabError(f"lab {self.id} has no etcd cluster")
            self._etcd = EtcdCluster.attach_state(self.state.etcd_id)
        return self._etcd

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.etcd.endpoints

    def agent_state_dir(self, role: str) -> Path:
        """Where ``role``'s agent keeps its state: its TLS server serves ``live/*/``."""
        self._require_backend(role)
        return tls.agent_state_dir(self.state_dir, role)

    def deploy_hook(self, role: str) -> str:
        """The deploy-hook command for ``role``'s agent (run inside ``role``'s namespace):
        re-reads ``live/*/`` into ``role``'s nginx on 443 and reloads it."""
        self._require_cluster()
        self._require_backend(role)
        return str(tls.deploy_hook_path(self.state_dir, role))

    def reload_tls(self, role: str) -> None:
        """Run ``role``'s deploy hook (after placing a certificate by hand); LabError on failure."""
        proc = self.run(role, [self.deploy_hook(role)], timeout=15)
        if proc.returncode != 0:
            raise LabError(
                f"deploy hook in {self.ns(role)} failed: {(proc.stderr or proc.stdout).strip()}"
            )

    def tls_fingerprint(
        self, via: str, name: str | None = None, *, timeout: float = 10.0
    ) -> str | None:
        """SHA-256 (hex) of the certificate served for ``name`` (SNI) on port 443.

        ``via`` is ``"vip"`` (from the public namespace through the LB's 443) or a
        backend role (from the LB's namespace straight to that backend). None if
        no certificate came back (nothing installed for the name, nothing listening).
        """
        if via == "vip":
            role, address = PUBLIC, self.vip
        else:
            self._require_backend(via)
            role, address = LB, self.backend_address(via)
        proc = self.run(
            role,
            [
                "openssl",
                "s_client",
                "-connect",
                f"{address}:443",
                "-servername",
                name or self.scenario.name,
            ],
            input="",
            timeout=timeout,
        )
        return tls.served_fingerprint(proc.stdout)

    def start_agent(
        self,
        role: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> ProcessRecord:
        """Run ``argv`` in backend ``role``'s namespace as its agent (one per backend).

        Output goes to ``log_path`` (default ``STATE/<role>-agent.log``, appended
        across restarts); teardown stops it by PID. ``env`` is added to this
        process's environment.
        """
        self._require_backend(role)
        if self.agent_alive(role):
            raise LabError(f"an agent already runs in {role} (pid {self._agent(role).pid})")
        return self.start_process(role, "agent", argv, env=env, log_path=log_path)

    def _agent(self, role: str) -> ProcessRecord:
        records = [r for r in self.state.processes if r.role == role and r.what == "agent"]
        if not records:
            raise LabError(f"no agent was started in {role}")
        return records[-1]

    def agent_log(self, role: str) -> Path:
        """The log of ``role``'s latest agent."""
        return Path(self._agent(role).log)

    def agent_alive(self, role: str) -> bool:
        """``role``'s latest agent runs (a SIGSTOPped one counts; a zombie does not)."""
        records = [r for r in self.state.processes if r.role == role and r.what == "agent"]
        if not records:
            return False
        popen = self._popens.get(records[-1].pid)
        if popen is not None:
            popen.poll()  # reap our own child, so that it does not stay a zombie
        return records[-1].is_running()

    def signal_agent(self, role: str, sig: int) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT, SIGTERM...) to ``role``'s agent, by PID.

        After SIGKILL it returns once the process is gone (reaped, if it is this
        process's child), so ``agent_alive`` is False at once.
        """
        record = self._agent(role)
        if not record.is_running():
            raise LabError(f"the agent in {role} (pid {record.pid}) is not running")
        os.kill(record.pid, sig)
        if sig != signal.SIGKILL:
            return
        popen = self._popens.get(record.pid)
        if popen is not None:
            popen.wait(5)
        deadline = time.monotonic() + 5.0
        while record.is_running() and time.monotonic() < deadline:
            time.sleep(0.005)

    def _require_backend(self, role: str) -> None:
        if role not in self.backends:
            raise LabError(
                f"{role!r} is not a backend of lab {self.id} ({', '.join(self.backends)})"
            )

    @property
    def pebble_log(self) -> Path:
        return self.state_dir / "pebble" / "pebble.log"

    def pebble_counts(self) -> LogCounts:
        """Orders and certificates Pebble logged since the lab started."""
        from acmelb.lab.pebble import count_log

        if not self.scenario.ca:
            raise LabError(f"lab {self.id} runs no CA")
        return count_log(self.pebble_log)

    def pebble_orders(self) -> int:
        """New orders so far (Pebble's "Added order" lines)."""
        return self.pebble_counts().orders

    def pebble_issued(self) -> int:
        """Certificates issued so far (Pebble's "Issued certificate serial" lines)."""
        return self.pebble_counts().issued

    def log_tail(self, record: ProcessRecord, lines: int = 3) -> str:
        with contextlib.suppress(OSError):
            text = Path(record.log).read_text(errors="replace").strip().splitlines()
            return " | ".join(text[-lines:]) or "(no output)"
        return "(no log)"

    # -- lifecycle -----------------------------------------------------------------

    def _save(self) -> None:
        self.state.save(self.state_dir / "state.json")

    def down(self) -> None:
        """Stop the lab's processes and delete its namespaces; safe to call twice."""
        if self.ca is not None:
            with contextlib.suppress(Exception):
                self.ca.stop()
        if self.state.etcd_id is not None:
            with contextlib.suppress(LabError):
                self.etcd.close()
        stop_processes(self.state.processes, self._popens)
        for name in self.state.namespaces.values():
            netns.delete(name)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.down)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @classmethod
    def attach(cls, lab_id: str, *, state_root: Path = STATE_ROOT) -> Lab:
        """The running lab ``lab_id``, from its state file."""
        state_dir = state_root / lab_id
        try:
            return cls(LabState.load(state_dir / "state.json"), state_dir)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise LabError(
                f"no lab {lab_id!r} (no readable {state_dir}/state.json: {exc})"
            ) from exc

    def summary(self) -> dict[str, Any]:
        """Everything a person or a script needs to use the lab (``acmelb lab status``)."""
        scenario = self.scenario
        return {
            "id": self.id,
            "mode": scenario.mode.value,
            "mode_description": scenario.mode.description,
            "name": scenario.name,
            "vip": self.vip,
            "vip6": self.vip6,
            "split_horizon": scenario.split_horizon,
            "url": self.url,
            "token": scenario.token,
            "key_authorization": scenario.key_authorization,
            "namespaces": self.namespaces,
            "outside": self.vantage(PUBLIC),
            "backends": [
                {
                    "role": role,
                    "behaviour": behaviour.value,
                    "address": self.backend_address(role),
                    "namespace": self.ns(role),
                    "inside": self.vantage(role),
                    "shortcut": role in scenario.shortcut,
                }
                for role, behaviour in zip(self.backends, scenario.backends, strict=True)
            ],
            "ca": None
            if not scenario.ca
            else {
                "directory_url": self.ca_directory_url,
                "ca_bundle": str(self.ca_bundle),
                "dns_server": self.dns_server,
            },
            "detached": self.state.owner_pid is None,
            "owner_pid": self.state.owner_pid,
            "created": self.state.created,
            "state_dir": str(self.state_dir),
            "processes": [
                {
                    "role": record.role,
                    "what": record.what,
                    "pid": record.pid,
                    "running": record.is_running(),
                    "log": record.log,
                }
                for record in self.state.processes
            ],
            "namespaces_present": sorted(set(self.namespaces.values()) & set(netns.existing())),
            "dns_names": list(scenario.dns_names),
            "cluster": None if not scenario.cluster else self._cluster_summary(),
        }

    def _cluster_summary(self) -> dict[str, Any]:
        etcd: dict[str, Any] = {
            "id": self.state.etcd_id,
            "endpoints": [],
            "namespaces": [],
            "running": [],
        }
        with contextlib.suppress(LabError):
            cluster = self.etcd
            etcd.update(
                endpoints=cluster.endpoints,
                namespaces=[cluster.namespace(i) for i in range(cluster.size)],
                running=[cluster.pid(i) is not None for i in range(cluster.size)],
            )
        return {
            "etcd": etcd,
            "tls_port": 443,
            "cert_validity": self.scenario.cert_validity,
            "backends": [
                {
                    "role": role,
                    "agent_state_dir": str(self.agent_state_dir(role)),
                    "deploy_hook": self.deploy_hook(role),
                    "agent_running": self.agent_alive(role),
                    "agent_log": str(self.state_dir / f"{role}-agent.log"),
                }
                for role in self.backends
            ],
        }

    def is_stale(self) -> bool:
        """Owned by a process that is gone (a test run that was killed)."""
        owner = self.state.owner_pid
        return owner is not None and start_ticks(owner) != self.state.owner_start_ticks


# -- building ----------------------------------------------------------------------


def build(scenario: Scenario, *, detached: bool = False, state_root: Path = STATE_ROOT) -> Lab:
    """Create the namespaces, links, rules and processes of ``scenario``.

    ``detached`` labs outlive this process (``acmelb lab up``); the others are
    torn down at exit at the latest. On any failure, what was built is removed.
    """
    netns.require_root()
    lab = _allocate(scenario, state_root, owner=None if detached else os.getpid())
    if not detached:
        atexit.register(lab.down)
    try:
        _build_network(lab)
        _start_services(lab)
    except BaseException:
        lab.down()
        raise
    return lab


def _allocate(scenario: Scenario, state_root: Path, owner: int | None) -> Lab:
    state_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    for _ in range(20):
        lab_id = secrets.token_hex(2)
        if netns.lab_namespaces(f"alb{lab_id}-"):
            continue
        state_dir = state_root / lab_id
        try:
            state_dir.mkdir(mode=0o755)
        except FileExistsError:
            continue
        roles = (PUBLIC, LB, *scenario.backend_roles, *scenario.perspective_roles)
        state = LabState(
            id=lab_id,
            scenario={
                **asdict(scenario),
                "mode": scenario.mode.value,
                "backends": [b.value for b in scenario.backends],
            },
            namespaces={role: f"alb{lab_id}-{role}" for role in roles},
            owner_pid=owner,
            owner_start_ticks=start_ticks(owner) if owner else None,
            created=time.time(),
        )
        lab = Lab(state, state_dir)
        lab._save()
        _labs_built_here.append((lab_id, state_dir))
        return lab
    raise LabError(f"could not allocate a free lab id under {state_root}")


def _build_network(lab: Lab) -> None:
    """The namespaces, the links between them, their addresses, the LB's forwarding and
    the iptables rules: everything of the lab but its processes."""
    _add_namespaces(lab)
    _add_links(lab)
    _configure_interfaces(lab)
    _enable_lb_forwarding(lab)
    _load_rules(lab)


def _add_namespaces(lab: Lab) -> None:
    """Every role's namespace, with its own hosts file and resolv.conf."""
    scenario = lab.scenario
    resolv = configs.resolv_conf(scenario)
    for role, name in lab.namespaces.items():
        netns.add(name)
        inside = role in lab.backends
        netns.write_etc(name, "hosts", configs.hosts_file(scenario, inside=inside))
        netns.write_etc(name, "resolv.conf", resolv)
        if scenario.ipv6:
            # Before any link exists: without duplicate address detection, link-local
            # addresses are usable at once, and the first neighbour discovery does
            # not stall the first connection for a second.
            netns.set_sysctls(
                name, {"net.ipv6.conf.default.accept_dad": "0", "net.ipv6.conf.all.accept_dad": "0"}
            )


def _add_links(lab: Lab) -> None:
    """The veth pairs: public side to LB, LB to every backend and every perspective.

    Both ends of every veth are created directly inside lab namespaces:
    nothing ever appears in the host's namespace.
    """
    pub, lb = lab.ns(PUBLIC), lab.ns(LB)
    links = [f"link add eth0 netns {pub} type veth peer name {configs.UPLINK} netns {lb}"]
    for index, role in enumerate(lab.backends, start=1):
        links.append(f"link add vb{index} netns {lb} type veth peer name eth0 netns {lab.ns(role)}")
    for index, role in enumerate(lab.scenario.perspective_roles, start=1):
        links.append(f"link add vp{index} netns {lb} type veth peer name eth0 netns {lab.ns(role)}")
    netns.ip([], batch="\n".join(links) + "\n")


def _configure_interfaces(lab: Lab) -> None:
    """Addresses and routes, one ``ip -batch`` per namespace."""
    ipv6 = lab.scenario.ipv6
    _ip_batch(lab, PUBLIC, _public_commands(ipv6=ipv6))
    _ip_batch(lab, LB, _lb_commands(lab))
    for index, role in enumerate(lab.backends, start=1):
        _ip_batch(lab, role, _backend_commands(index, ipv6=ipv6))
    for index, role in enumerate(lab.scenario.perspective_roles, start=1):
        _ip_batch(lab, role, _perspective_commands(index))


def _ip_batch(lab: Lab, role: str, commands: Sequence[str]) -> None:
    netns.ip([], namespace=lab.ns(role), batch="\n".join(commands) + "\n")


def _public_commands(*, ipv6: bool) -> list[str]:
    commands = [
        "link set lo up",
        "link set eth0 up",
        f"addr add {ADDRESSES.public_host}/{ADDRESSES.public_prefix} dev eth0",
    ]
    if ipv6:
        # nodad: a tentative address cannot be used for a second or two.
        commands.append(f"addr add {ADDRESSES.public6_host}/64 dev eth0 nodad")
    return commands


def _lb_commands(lab: Lab) -> list[str]:
    """The LB's bridge to the backends, its uplink with the VIP, its perspective links."""
    commands = [
        "link set lo up",
        f"link add {configs.BRIDGE} type bridge",
        f"link set {configs.BRIDGE} up",
        f"addr add {ADDRESSES.lb_backend}/{ADDRESSES.backend_prefix} dev {configs.BRIDGE}",
        f"link set {configs.UPLINK} up",
        f"addr add {ADDRESSES.lb_public}/{ADDRESSES.public_prefix} dev {configs.UPLINK}",
        f"addr add {ADDRESSES.vip}/32 dev {configs.UPLINK}",
    ]
    if lab.scenario.ipv6:
        commands += [
            f"addr add {ADDRESSES.lb_backend6}/64 dev {configs.BRIDGE} nodad",
            f"addr add {ADDRESSES.lb_public6}/64 dev {configs.UPLINK} nodad",
            f"addr add {ADDRESSES.vip6}/128 dev {configs.UPLINK} nodad",
        ]
    for index in range(1, len(lab.backends) + 1):
        commands.append(f"link set vb{index} master {configs.BRIDGE} up")
    for index in range(1, lab.scenario.perspectives + 1):
        commands += [
            f"link set vp{index} up",
            f"addr add {ADDRESSES.lb_perspective(index)}/30 dev vp{index}",
        ]
    return commands


def _backend_commands(index: int, *, ipv6: bool) -> list[str]:
    """Backend ``index`` (from 1) on the backend segment, the LB its default route."""
    commands = [
        "link set lo up",
        "link set eth0 up",
        f"addr add {ADDRESSES.backend(index)}/{ADDRESSES.backend_prefix} dev eth0",
        f"route add default via {ADDRESSES.lb_backend}",
    ]
    if ipv6:
        commands += [
            f"addr add {ADDRESSES.backend6(index)}/64 dev eth0 nodad",
            f"route add default via {ADDRESSES.lb_backend6}",
        ]
    return commands


def _perspective_commands(index: int) -> list[str]:
    """Perspective ``index`` (from 1) on its own /30 with the LB."""
    return [
        "link set lo up",
        "link set eth0 up",
        f"addr add {ADDRESSES.perspective(index)}/30 dev eth0",
        f"route add default via {ADDRESSES.lb_perspective(index)}",
    ]


def _enable_lb_forwarding(lab: Lab) -> None:
    netns.set_sysctls(
        lab.ns(LB),
        {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1" if lab.scenario.ipv6 else "0",
            # Bridged frames must not pass through iptables: with it, conntrack sees
            # the peer's direct reply and un-NATs it, and hairpin "works by accident".
            "net.bridge.bridge-nf-call-iptables": "0",
            "net.bridge.bridge-nf-call-ip6tables": "0",
            "net.bridge.bridge-nf-call-arptables": "0",
        },
    )


def _load_rules(lab: Lab) -> None:
    """The LB's NAT rules, and the shortcut rules of the backends that have them."""
    scenario = lab.scenario
    ipv6 = scenario.ipv6
    _restore(lab, LB, "iptables-restore", configs.lb_iptables(scenario))
    if ipv6:
        _restore(lab, LB, "ip6tables-restore", configs.lb_iptables(scenario, ipv6=True))
    for role in scenario.shortcut:
        index = lab.backends.index(role) + 1
        _restore(lab, role, "iptables-restore", configs.shortcut_iptables(index))
        if ipv6:
            _restore(lab, role, "ip6tables-restore", configs.shortcut_iptables(index, ipv6=True))


def _restore(lab: Lab, role: str, tool: str, rules: str) -> None:
    (lab.state_dir / f"{role}-{tool}.rules").write_text(rules)
    proc = lab.run(role, [tool], input=rules, timeout=10)
    if proc.returncode != 0:
        raise LabError(f"{tool} in {lab.ns(role)} failed: {proc.stderr.strip()}")


def _responder_argv(scenario: Scenario, behaviour: Behaviour, *, behind_nginx: bool) -> list[str]:
    argv = [sys.executable, "-m", "acmelb", "serve", "--quiet"]
    if behind_nginx:
        argv += ["--address", "127.0.0.1", "--port", str(configs.RESPONDER_BEHIND_NGINX_PORT)]
    else:
        argv += ["--address", "0.0.0.0", "--port", "80"]
        if scenario.ipv6:
            argv += ["--address", "::"]
    if behaviour is Behaviour.RESPONDER:
        for token, key in ((scenario.token, scenario.key_authorization), *scenario.extra_tokens):
            argv += [f"--token={token}", f"--key={key}"]  # values may start with "-"
    else:
        thumbprint = scenario.thumbprint if behaviour is Behaviour.STATELESS else OTHER_THUMBPRINT
        argv += ["--stateless", f"--thumbprint={thumbprint}"]
    return argv


def _start_services(lab: Lab) -> None:
    """The lab's processes: the LB, the backends' servers, DNS (and a cluster lab's TLS
    servers), once they all listen the CA, then a cluster lab's etcd."""
    scenario = lab.scenario
    steps = [_start_lb, _start_backends, _start_dns]
    if scenario.cluster:
        steps.append(_start_tls_servers)
    expected: dict[str, set[int]] = {}
    for step in steps:
        for role, ports in step(lab).items():
            expected.setdefault(role, set()).update(ports)
    _wait_for_listeners(lab, expected)
    if scenario.ca:
        _start_ca(lab)
    if scenario.cluster:
        _start_etcd(lab)


def _start_lb(lab: Lab) -> dict[str, set[int]]:
    """HAProxy, in the modes that use it; the ports to wait for, per role."""
    scenario = lab.scenario
    if not scenario.mode.uses_haproxy:
        return {}
    config = lab.state_dir / "haproxy.cfg"
    config.write_text(configs.haproxy_config(scenario))
    lab.start_process(LB, "haproxy", ["haproxy", "-db", "-f", str(config)])
    return {LB: {80, 443} if scenario.cluster else {80}}


def _start_backends(lab: Lab) -> dict[str, set[int]]:
    """Each backend's responder and/or nginx, as its behaviour says; the ports to wait for."""
    scenario = lab.scenario
    expected: dict[str, set[int]] = {}
    for role, behaviour in zip(lab.backends, scenario.backends, strict=True):
        if behaviour is Behaviour.NONE:
            continue
        behind_nginx = scenario.mode.proxy_protocol
        if behaviour.runs_responder:
            lab.start_process(
                role, "responder", _responder_argv(scenario, behaviour, behind_nginx=behind_nginx)
            )
            expected.setdefault(role, set()).add(
                configs.RESPONDER_BEHIND_NGINX_PORT if behind_nginx else 80
            )
        if not behaviour.runs_responder or behind_nginx:
            workdir = lab.state_dir / f"{role}-nginx"
            (workdir / "tmp").mkdir(parents=True)
            config = workdir / "nginx.conf"
            config.write_text(configs.nginx_config(scenario, behaviour, workdir))
            lab.start_process(
                role,
                "nginx",
                ["nginx", "-e", str(workdir / "error.log"), "-c", str(config), "-g", "daemon off;"],
            )
            expected.setdefault(role, set()).add(80)
    return expected


def _start_dns(lab: Lab) -> dict[str, set[int]]:
    """The internet has DNS: every lab serves its name, so diagnosis resolves it like a CA."""
    zone = lab.state_dir / "zone.json"
    zone.write_text(json.dumps(configs.dns_zone(lab.scenario)))
    lab.start_process(
        PUBLIC,
        "dns",
        [
            sys.executable,
            "-m",
            "acmelb.lab.dnsserver",
            "--listen",
            f"{ADDRESSES.public_host}:{DNS_PORT}",
            "--zone",
            str(zone),
        ],
    )
    return {PUBLIC: {DNS_PORT}}


def _start_tls_servers(lab: Lab) -> dict[str, set[int]]:
    """A cluster lab: every backend's agent directory, nginx on 443 and deploy hook."""
    for role in lab.backends:
        argv = tls.write_tls_server(lab.state_dir, role, ipv6=lab.scenario.ipv6)
        lab.start_process(role, "tls", argv)
    return {role: {tls.TLS_PORT} for role in lab.backends}


def _start_etcd(lab: Lab) -> None:
    """A cluster lab: a 3-member etcd cluster, attached to every backend, recorded in the
    lab's state."""
    cluster = EtcdCluster.start(ETCD_MEMBERS, detached=lab.state.owner_pid is None)
    lab._etcd = cluster
    lab.state.etcd_id = cluster.id
    lab._save()
    for role in lab.backends:
        cluster.attach(lab.ns(role))


def _wait_for_listeners(lab: Lab, expected: Mapping[str, set[int]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    for role, ports in expected.items():
        mine = [record for record in lab.state.processes if record.role == role]

        def all_alive(records: Sequence[ProcessRecord] = mine) -> bool:
            return all(record.is_running() for record in records)

        if not netns.wait_listening(lab.ns(role), ports, deadline, all_alive):
            dead = [record for record in mine if not record.is_running()]
            if dead:
                raise LabError(
                    f"{dead[0].what} in {lab.ns(role)} exited at start: {lab.log_tail(dead[0])}"
                )
            raise LabError(
                f"nothing listened on port(s) {sorted(ports)} in {lab.ns(role)} "
                f"within {START_TIMEOUT:.0f} s"
            )


def _start_ca(lab: Lab) -> None:
    from acmelb.lab.pebble import PebbleCA

    workdir = lab.state_dir / "pebble"
    workdir.mkdir()
    ca = PebbleCA(
        host=ADDRESSES.public_host,
        port=CA_PORT,
        management_port=CA_MANAGEMENT_PORT,
        validation_port=80,
        dns_server=f"{ADDRESSES.public_host}:{DNS_PORT}",
        netns_prefix=lab.exec_prefix(PUBLIC),
        workdir=workdir,
        certificate_validity=lab.scenario.cert_validity,
    )
    lab.ca = ca
    try:
        ca.start()
    finally:
        if ca.process is not None:
            # Recorded so that any process (acmelb lab down) can stop it.
            record = ProcessRecord(
                PUBLIC,
                "pebble",
                ca.process.pid,
                start_ticks(ca.process.pid) or 0,
                [],
                str(ca.log_path),
            )
            lab._record(record, None)


# -- finding labs ------------------------------------------------------------------


def running_labs(*, state_root: Path = STATE_ROOT) -> list[Lab]:
    """Every lab with a state file, oldest first."""
    labs: list[Lab] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in state_root.iterdir():
            if (entry / "state.json").exists():
                with contextlib.suppress(LabError):
                    labs.append(Lab.attach(entry.name, state_root=state_root))
    return sorted(labs, key=lambda lab: lab.state.created)


def down_all(*, only_stale: bool = False, state_root: Path = STATE_ROOT) -> list[str]:
    """Tear down every lab with a state file (or only those whose owner process is gone)."""
    removed: list[str] = []
    for lab in running_labs(state_root=state_root):
        if only_stale and not lab.is_stale():
            continue
        lab.down()
        removed.append(lab.id)
    return removed


def down_everything() -> list[str]:
    """Remove every lab, every etcd lab and every namespace of theirs that no state file
    accounts for (``acmelb lab down --all``); what was removed (etcd labs as ``etcd ID``)."""
    removed = down_all() + remove_orphan_namespaces()
    removed += [f"etcd {cluster_id}" for cluster_id in etcd_lab.down_stale(only_stale=False)]
    removed += etcd_lab.remove_orphan_namespaces()
    return removed


def lab_and_role(target: str) -> tuple[Lab, str]:
    """The lab and the role (or namespace name) that ``target`` names: a full namespace
    name (``alb1a2b-b1``), ``ID:ROLE``, or a role of the only lab up (UsageError if none
    or several are up)."""
    if netns.LAB_NAMESPACE.match(target):
        return Lab.attach(target[3:7]), target
    if ":" in target:
        lab_id, _, role = target.partition(":")
        return Lab.attach(lab_id), role
    labs = running_labs()
    if not labs:
        raise UsageError("no lab is up (acmelb lab up SCENARIO)")
    if len(labs) != 1:
        ids = ", ".join(lab.id for lab in labs) or "none"
        raise UsageError(f"{len(labs)} labs are up ({ids}): say which, as ID:{target}")
    return labs[0], target


def remove_orphan_namespaces(
    *, state_root: Path = STATE_ROOT, ids: Collection[str] | None = None
) -> list[str]:
    """Delete lab-named namespaces (``alb<4 hex>-*``) that no state file accounts for.

    A lab writes its state file before creating any namespace and removes it
    after deleting them all, so such a namespace can only be left by a crash or
    by hand. ``ids`` restricts the sweep to those lab ids.
    """
    removed: list[str] = []
    for name in netns.lab_namespaces():
        lab_id = name[3:7]
        if (ids is None or lab_id in ids) and not (state_root / lab_id / "state.json").exists():
            netns.delete(name)
            removed.append(name)
    return removed


def leftovers_of_this_process() -> list[str]:
    """What the labs built by this process left behind: namespaces, files, processes."""
    problems: list[str] = []
    for lab_id, state_dir in _labs_built_here:
        problems += [f"namespace {name}" for name in netns.lab_namespaces(f"alb{lab_id}-")]
        problems += [f"file {path}" for path in netns.NETNS_ETC_DIR.glob(f"alb{lab_id}-*")]
        if state_dir.exists():
            problems.append(f"state directory {state_dir}")
    problems += [
        f"process {record.pid} ({record.what} in {record.role})"
        for record in _processes_started_here
        if record.is_running()
    ]
    return problems


def down_labs_of_this_process() -> None:
    """Tear down whatever the labs built by this process left (after reporting it)."""
    for lab_id, state_dir in _labs_built_here:
        if (state_dir / "state.json").exists():
            with contextlib.suppress(LabError):
                Lab.attach(lab_id, state_root=state_dir.parent).down()
        for name in netns.lab_namespaces(f"alb{lab_id}-"):
            netns.delete(name)
    stop_processes([r for r in _processes_started_here if r.is_running()], {})
