"""The agent's Prometheus metrics, through the maintained ``prometheus_client``.

Served on ``--metrics-listen ADDRESS:PORT`` (text format, ``/metrics``);
``promtool check metrics`` accepts the output (tests/cluster).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from acmelb.errors import UsageError


class AgentMetrics:
    def __init__(self, member: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.not_after = Gauge(
            "acmelb_certificate_not_after_seconds",
            "Expiry of the certificate version installed here (epoch s)",
            ["name"],
            registry=r,
        )
        self.installed_version = Gauge(
            "acmelb_certificate_installed_version",
            "Cluster version of the certificate installed here",
            ["name"],
            registry=r,
        )
        self.renewals = Counter(
            "acmelb_renewals",
            "Issuances this member ran, by outcome",
            ["name", "outcome"],
            registry=r,
        )
        self.orders = Counter(
            "acmelb_orders_started", "ACME orders this member created", ["name"], registry=r
        )
        self.lock_held = Gauge(
            "acmelb_lock_held",
            "1 while this member holds the certificate's lock",
            ["name"],
            registry=r,
        )
        self.members = Gauge("acmelb_cluster_members", "Live members seen in the store", registry=r)
        self.store_up = Gauge(
            "acmelb_store_up",
            "1 if the last store request succeeded (quorum reachable)",
            registry=r,
        )
        self.self_check = Gauge(
            "acmelb_self_check_finding",
            "Failing finding codes of the last self-check (1 = present)",
            ["name", "code"],
            registry=r,
        )
        self.info = Gauge("acmelb_agent_info", "This agent", ["member"], registry=r)
        self.info.labels(member=member).set(1)
        self._codes: dict[str, set[str]] = {}

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--metrics-listen {listen!r}: expected ADDRESS:PORT")
        try:
            start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"--metrics-listen {listen}: {exc.strerror or exc}") from exc

    def last_self_check(self, name: str, codes: Iterable[str]) -> None:
        for code in self._codes.pop(name, set()):
            self.self_check.remove(name, code)
        self._codes[name] = set(codes)
        for code in self._codes[name]:
            self.self_check.labels(name=name, code=code).set(1)
