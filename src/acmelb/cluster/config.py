"""The agent's configuration file (TOML, read with the standard library's tomllib).

::

    member = "node1"                       # default: this host's name
    state_dir = "/var/lib/acmelb"          # where this instance installs live/ copies
    store = "etcd://198.18.3.1:2379,198.18.3.2:2379,198.18.3.3:2379"
    store_prefix = "/acmelb"
    store_key_file = "/etc/acmelb/store.key"   # or --store-key-file
    http_port = 80                         # the responder for every pending token
    http_addresses = []                    # default: all IPv4 and IPv6
    metrics_listen = "127.0.0.1:9108"      # or --metrics-listen; empty: no metrics
    lease_ttl = 10                         # seconds: lock, tokens and member keys
    renew_fraction = 0.6667                # renew at 2/3 of the lifetime
    check_interval = 60                    # seconds between renewal checks (jittered)

    [store_tls]            # optional: etcd client TLS
    ca = "/etc/acmelb/etcd-ca.pem"
    cert = "/etc/acmelb/etcd-client.pem"
    key = "/etc/acmelb/etcd-client-key.pem"

    [store_auth]           # optional: etcd user and password
    user = "acmelb"
    password_file = "/etc/acmelb/etcd-password"

    [ca]
    directory = "letsencrypt"
    email = "ops@example.com"
    ca_bundle = "/path/to/test-ca.pem"     # optional

    [self_check]           # for every certificate unless it has its own
    mode = "strict"        # strict | tolerant | off
    outside = ["ssh probe@outside.example.net"]
    timeout = 5
    assume_public = []
    dns_server = "192.0.2.53"
    total_timeout = 60

    [[certificate]]
    names = ["app.example.com", "www.app.example.com"]
    key_type = "ec256"
    deploy_hook = "systemctl reload haproxy"

Unknown keys, missing keys and values of the wrong type are one-line
``UsageError``s naming the file and the key.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acmelb.acme.selfcheck import MODES, SelfCheckOptions
from acmelb.doctor.vantage import ProbeSettings, Role
from acmelb.errors import UsageError
from acmelb.names import normalize_name

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa4096")


@dataclass(frozen=True)
class StoreEndpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class StoreTLS:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class StoreConfig:
    endpoints: tuple[StoreEndpoint, ...]
    prefix: str = "/acmelb"
    tls: StoreTLS | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 3.0  # per store request


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate the cluster keeps: its names are its identity; the first names it."""

    names: tuple[str, ...]
    key_type: str = "ec256"
    deploy_hook: str | None = None
    self_check: SelfCheckOptions | None = None

    @property
    def name(self) -> str:
        return self.names[0]

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "key_type": self.key_type}


@dataclass(frozen=True)
class AgentConfig:
    member: str
    state_dir: Path
    store: StoreConfig
    directory: str
    email: str | None = None
    ca_bundle: Path | None = None
    store_key_file: Path | None = None
    http_port: int = 80
    http_addresses: tuple[str, ...] = ()
    metrics_listen: str | None = None
    lease_ttl: int = 10
    renew_fraction: float = 2 / 3
    check_interval: float = 60.0
    certificates: tuple[CertificateSpec, ...] = field(default_factory=tuple)
    # the [self_check] table: for certificates declared in the store but not in this file
    self_check: SelfCheckOptions | None = None


def parse_store_url(url: str) -> tuple[StoreEndpoint, ...]:
    """``etcd://h1:2379,h2:2379`` (the port defaults to 2379; IPv6 in brackets)."""
    if not url.startswith("etcd://"):
        raise UsageError(f"store {url!r}: expected etcd://HOST[:PORT][,HOST[:PORT]...]")
    endpoints = []
    for part in url[len("etcd://") :].rstrip("/").split(","):
        part = part.strip()
        host, port = part, "2379"
        if part.startswith("["):
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":") or "2379"
        elif part.count(":") == 1:
            host, port = part.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"store {url!r}: {part!r} is not HOST[:PORT]")
        endpoints.append(StoreEndpoint(host, int(port)))
    return tuple(endpoints)


class _Table:
    """One TOML table being read: every key taken is checked off, the rest are unknown."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data, self.where, self.taken = data, where, set[str]()

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        self.taken.add(key)
        if key not in self.data:
            if required:
                raise UsageError(f"{self.where}: missing key {key!r}")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise UsageError(f"{self.where}: {key!r} must be a {names}, not {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise UsageError(f"{self.where}: {key!r} must be a list of strings")
        return tuple(values)

    def table(self, key: str) -> _Table | None:
        value = self.get(key, dict)
        return None if value is None else _Table(value, f"{self.where} [{key}]")

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise UsageError(f"{self.where}: unknown key {unknown[0]!r}")


def _self_check(table: _Table | None, default: SelfCheckOptions | None) -> SelfCheckOptions | None:
    if table is None:
        return default
    mode = table.get("mode", str, "strict")
    if mode not in MODES:
        raise UsageError(f"{table.where}: mode must be one of {', '.join(MODES)}")
    dns = table.get("dns_server", str)
    probe = ProbeSettings.from_cli(
        here=Role.INSIDE.value,  # an agent runs on an instance behind the load balancer
        inside=table.strings("inside"),
        outside=table.strings("outside"),
        resolve=table.strings("resolve"),
        dns_server=dns,
        timeout=table.get("timeout", float, 5.0),
        assume_public=table.strings("assume_public"),
    )
    options = SelfCheckOptions(
        mode=mode, probe=probe, total_timeout=table.get("total_timeout", float, 60.0)
    )
    table.done()
    return None if mode == "off" else options


def _certificate(table: _Table, default_check: SelfCheckOptions | None) -> CertificateSpec:
    raw = table.strings("names")
    if not raw:
        raise UsageError(f"{table.where}: 'names' must list at least one name")
    names = tuple(dict.fromkeys(normalize_name(n) for n in raw))
    key_type = table.get("key_type", str, "ec256")
    if key_type not in KEY_TYPES:
        raise UsageError(f"{table.where}: key_type must be one of {', '.join(KEY_TYPES)}")
    spec = CertificateSpec(
        names=names,
        key_type=key_type,
        deploy_hook=table.get("deploy_hook", str),
        self_check=_self_check(table.table("self_check"), default_check),
    )
    table.done()
    return spec


def _store(top: _Table) -> StoreConfig:
    endpoints = parse_store_url(top.get("store", str, required=True))
    tls_table = top.table("store_tls")
    tls = None
    if tls_table is not None:
        paths = {k: tls_table.get(k, str) for k in ("ca", "cert", "key")}
        tls_table.done()
        tls = StoreTLS(**{k: Path(v) if v else None for k, v in paths.items()})
    auth = top.table("store_auth")
    user = password = None
    if auth is not None:
        user = auth.get("user", str, required=True)
        password_file = auth.get("password_file", str, required=True)
        auth.done()
        try:
            password = Path(password_file).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"{auth.where}: password_file {password_file}: {exc.strerror or exc}"
            ) from exc
    prefix = "/" + top.get("store_prefix", str, "/acmelb").strip("/")
    return StoreConfig(endpoints=endpoints, prefix=prefix, tls=tls, user=user, password=password)


def parse_config(text: str, where: str) -> AgentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML: {exc}") from exc
    top = _Table(data, where)
    ca = top.table("ca")
    if ca is None:
        raise UsageError(f"{where}: missing table [ca] (its 'directory' at least)")
    from acmelb.acme.ca import resolve_directory  # 'letsencrypt' and the other aliases

    directory = resolve_directory(ca.get("directory", str, required=True))
    email = ca.get("email", str)
    bundle = ca.get("ca_bundle", str)
    ca.done()
    default_check = _self_check(
        top.table("self_check"), SelfCheckOptions(probe=ProbeSettings(here=Role.INSIDE))
    )
    certificates = tuple(
        _certificate(_Table(t, f"{where} [[certificate]] #{i}"), default_check)
        for i, t in enumerate(top.get("certificate", list, []), 1)
    )
    seen = [c.name for c in certificates]
    if len(seen) != len(set(seen)):
        raise UsageError(f"{where}: two [[certificate]] tables name the same first name")
    store_key = top.get("store_key_file", str)
    config = AgentConfig(
        member=top.get("member", str, socket.gethostname()),
        state_dir=Path(top.get("state_dir", str, "/var/lib/acmelb")),
        store=_store(top),
        directory=directory,
        email=email,
        ca_bundle=Path(bundle) if bundle else None,
        store_key_file=Path(store_key) if store_key else None,
        http_port=top.get("http_port", int, 80),
        http_addresses=top.strings("http_addresses"),
        metrics_listen=top.get("metrics_listen", str) or None,
        lease_ttl=top.get("lease_ttl", int, 10),
        renew_fraction=top.get("renew_fraction", float, 2 / 3),
        check_interval=top.get("check_interval", float, 60.0),
        certificates=certificates,
        self_check=default_check,
    )
    top.done()
    _validate(config, where)
    return config


def _validate(config: AgentConfig, where: str) -> None:
    if not config.member or "/" in config.member:
        raise UsageError(f"{where}: member {config.member!r}: a name without '/'")
    if not 0 < config.http_port < 65536:
        raise UsageError(f"{where}: http_port {config.http_port}: not a TCP port")
    if not 2 <= config.lease_ttl <= 300:
        raise UsageError(f"{where}: lease_ttl must be between 2 and 300 seconds")
    if not 0.1 <= config.renew_fraction <= 0.95:
        raise UsageError(f"{where}: renew_fraction must be between 0.1 and 0.95")
    if not 0.1 <= config.check_interval <= 86400:
        raise UsageError(f"{where}: check_interval must be between 0.1 and 86400 seconds")


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return parse_config(text, str(path))


def store_config_of(
    config_path: Path | None, store_url: str | None, prefix: str = "/acmelb"
) -> tuple[StoreConfig, AgentConfig | None]:
    """The store to talk to: from an agent's configuration file, or from a bare URL."""
    if (config_path is None) == (store_url is None):
        raise UsageError("give --config FILE (an agent's configuration) or --store URL")
    if config_path is not None:
        config = load_config(config_path)
        return config.store, config
    assert store_url is not None
    return StoreConfig(endpoints=parse_store_url(store_url), prefix="/" + prefix.strip("/")), None
