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
    timeout = 10           # per dial; the whole validation gets 1.5 x (the CA's 15 s)
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

import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acmelb.acme.selfcheck import MODES, SelfCheckOptions
from acmelb.cluster.backoff import RETRY_SCHEDULE
from acmelb.doctor.vantage import ProbeSettings, Role, build_vantages
from acmelb.errors import UsageError
from acmelb.names import normalize_identifier

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
    profile: str | None = None  # the CA's profile (None: its default)

    @property
    def name(self) -> str:
        return self.names[0]

    def to_json(self) -> dict[str, Any]:
        """The declaration in the store; the deploy hook only when ``cluster add
        --deploy-hook`` gave one (a member's own ``[[certificate]]`` hook stays its own)."""
        data: dict[str, Any] = {"names": list(self.names), "key_type": self.key_type}
        if self.deploy_hook:
            data["deploy_hook"] = self.deploy_hook
        if self.profile:
            data["profile"] = self.profile
        return data


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
    # seconds to wait after the 1st, 2nd, ... consecutive failure (the last repeats)
    retry_schedule: tuple[float, ...] = RETRY_SCHEDULE
    # the deploy hook of every certificate that has none of its own (see CertificateSpec)
    deploy_hook: str | None = None
    # at most this long between two ARI polls of a certificate (None: the CA's Retry-After)
    ari_poll_max: float | None = None
    # HOST:PORT where this instance serves TLS: checked after each deploy (stragglers)
    serve_check: str | None = None
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
    """One TOML table being read: every key taken is checked off, the rest are unknown.

    Errors speak the file's language: ``FILE: [table] key: problem``."""

    def __init__(self, data: Mapping[str, Any], file: str, label: str | None = None) -> None:
        # label: how the table is written in the file ("[ca]", "[[certificate]] #2")
        self.data, self.file, self.label, self.taken = data, file, label, set[str]()

    def error(self, key: str, problem: str) -> UsageError:
        place = f"{self.label} {key}" if self.label else key
        return UsageError(f"{self.file}: {place}: {problem}")

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
                raise self.error(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(key, f"must be a {names}, not {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise self.error(key, "must be a list of strings")
        return tuple(values)

    def numbers(self, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        values = self.get(key, list, list(default))
        if not values or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise self.error(key, "must be a list of positive numbers (seconds)")
        return tuple(float(v) for v in values)

    def path(self, key: str, *, must_exist: bool) -> Path | None:
        """A file named by ``key``: with ``must_exist``, checked now (not at first use)."""
        value = self.get(key, str)
        if value is None:
            return None
        path = Path(value)
        if must_exist and not path.is_file():
            problem = "not a file" if path.exists() else "no such file"
            raise self.error(key, f"{value}: {problem}")
        return path

    def table_of(self, key: str) -> _Table | None:
        value = self.get(key, dict)
        if value is None:
            return None
        return _Table(value, self.file, f"{self.label} [{key}]" if self.label else f"[{key}]")

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise self.error(unknown[0], "unknown key (every key is in docs/cluster.md)")


def _probe_settings(table: _Table) -> ProbeSettings:
    """The self-check's vantages and probe settings, checked now (a command that is not
    installed is found at start, not at the first renewal); an error names the key."""
    try:
        settings = ProbeSettings.from_cli(
            here=Role.INSIDE.value,  # an agent runs on an instance behind the load balancer
            inside=table.strings("inside"),
            outside=table.strings("outside"),
            resolve=table.strings("resolve"),
            dns_server=table.get("dns_server", str),
            timeout=table.get("timeout", float, 10.0),
            assume_public=table.strings("assume_public"),
        )
        build_vantages(settings)
        return settings
    except UsageError as exc:
        found = re.match(r"--([a-z-]+):? ?(.*)", str(exc))
        if found is None:
            raise table.error("probe settings", str(exc)) from exc
        raise table.error(found.group(1).replace("-", "_"), found.group(2)) from exc


def _self_check(table: _Table | None, default: SelfCheckOptions | None) -> SelfCheckOptions | None:
    if table is None:
        return default
    mode = table.get("mode", str, "strict")
    if mode not in MODES:
        raise table.error("mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    options = SelfCheckOptions(
        mode=mode,
        probe=_probe_settings(table),
        total_timeout=table.get("total_timeout", float, 60.0),
    )
    table.done()
    return None if mode == "off" else options


def _certificate(table: _Table, default_check: SelfCheckOptions | None) -> CertificateSpec:
    raw = table.strings("names")
    if not raw:
        raise table.error("names", "must list at least one name")
    try:
        names = tuple(dict.fromkeys(normalize_identifier(n) for n in raw))
    except UsageError as exc:
        raise table.error("names", str(exc)) from exc
    key_type = table.get("key_type", str, "ec256")
    if key_type not in KEY_TYPES:
        raise table.error("key_type", f"must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")
    spec = CertificateSpec(
        names=names,
        key_type=key_type,
        deploy_hook=table.get("deploy_hook", str),
        self_check=_self_check(table.table_of("self_check"), default_check),
        profile=table.get("profile", str),
    )
    table.done()
    return spec


def _store(top: _Table) -> StoreConfig:
    try:
        endpoints = parse_store_url(top.get("store", str, required=True))
    except UsageError as exc:
        raise top.error("store", str(exc).removeprefix("store ")) from exc
    tls_table = top.table_of("store_tls")
    tls = None
    if tls_table is not None:
        paths = {k: tls_table.path(k, must_exist=True) for k in ("ca", "cert", "key")}
        tls_table.done()
        tls = StoreTLS(**paths)
    auth = top.table_of("store_auth")
    user = password = None
    if auth is not None:
        user = auth.get("user", str, required=True)
        password_file = auth.path("password_file", must_exist=True)
        if password_file is None:
            raise auth.error("password_file", "missing (required)")
        auth.done()
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise auth.error("password_file", f"{password_file}: {exc.strerror or exc}") from exc
    prefix = "/" + top.get("store_prefix", str, "/acmelb").strip("/")
    return StoreConfig(endpoints=endpoints, prefix=prefix, tls=tls, user=user, password=password)


def _ca(top: _Table) -> tuple[str, str | None, Path | None]:
    """The [ca] table: the directory URL (aliases resolved), the email, the CA bundle."""
    from acmelb.acme.ca import resolve_directory  # 'letsencrypt' and the other aliases

    ca = top.table_of("ca")
    if ca is None:
        raise UsageError(f"{top.file}: [ca]: missing table (its 'directory' at least)")
    try:
        directory = resolve_directory(ca.get("directory", str, required=True))
    except UsageError as exc:
        if "directory: missing" in str(exc):
            raise
        raise ca.error("directory", str(exc)) from exc
    email = ca.get("email", str)
    bundle = ca.path("ca_bundle", must_exist=True)
    ca.done()
    return directory, email, bundle


def _certificates(
    top: _Table, default_check: SelfCheckOptions | None
) -> tuple[CertificateSpec, ...]:
    tables = top.get("certificate", list, [])
    if not all(isinstance(t, dict) for t in tables):
        raise top.error("certificate", "must be [[certificate]] tables")
    certificates = tuple(
        _certificate(_Table(t, top.file, f"[[certificate]] #{i}"), default_check)
        for i, t in enumerate(tables, 1)
    )
    seen = [c.name for c in certificates]
    if len(seen) != len(set(seen)):
        raise UsageError(f"{top.file}: [[certificate]]: two tables name the same first name")
    return certificates


def parse_config(text: str, where: str) -> AgentConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML: {exc}") from exc
    top = _Table(data, where)
    directory, email, bundle = _ca(top)
    default_check = _self_check(
        top.table_of("self_check"), SelfCheckOptions(probe=ProbeSettings(here=Role.INSIDE))
    )
    store_key = top.get("store_key_file", str)
    config = AgentConfig(
        member=top.get("member", str, socket.gethostname()),
        state_dir=Path(top.get("state_dir", str, "/var/lib/acmelb")),
        store=_store(top),
        directory=directory,
        email=email,
        ca_bundle=bundle,
        store_key_file=Path(store_key) if store_key else None,
        http_port=top.get("http_port", int, 80),
        http_addresses=top.strings("http_addresses"),
        metrics_listen=top.get("metrics_listen", str) or None,
        lease_ttl=top.get("lease_ttl", int, 10),
        renew_fraction=top.get("renew_fraction", float, 2 / 3),
        check_interval=top.get("check_interval", float, 60.0),
        retry_schedule=top.numbers("retry_schedule", RETRY_SCHEDULE),
        deploy_hook=top.get("deploy_hook", str),
        ari_poll_max=top.get("ari_poll_max", float),
        serve_check=top.get("serve_check", str),
        certificates=_certificates(top, default_check),
        self_check=default_check,
    )
    top.done()
    _validate(config, top)
    return config


def _validate(config: AgentConfig, top: _Table) -> None:
    if not config.member or "/" in config.member:
        raise top.error("member", f"{config.member!r}: a name without '/'")
    if not 0 < config.http_port < 65536:
        raise top.error("http_port", f"{config.http_port}: not a TCP port")
    if not 2 <= config.lease_ttl <= 300:
        raise top.error("lease_ttl", "must be between 2 and 300 seconds")
    if not 0.1 <= config.renew_fraction <= 0.95:
        raise top.error("renew_fraction", "must be between 0.1 and 0.95")
    if not 0.1 <= config.check_interval <= 86400:
        raise top.error("check_interval", "must be between 0.1 and 86400 seconds")
    if config.serve_check is not None and not re.fullmatch(
        r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):\d{1,5}", config.serve_check
    ):
        raise top.error("serve_check", f"{config.serve_check!r}: expected HOST:PORT")
    if config.ari_poll_max is not None and not 1 <= config.ari_poll_max <= 86400:
        raise top.error("ari_poll_max", "must be between 1 and 86400 seconds")


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
