"""The agent's Prometheus metrics, through the maintained ``prometheus_client``.

Served on ``--metrics-listen ADDRESS:PORT`` (text format, ``/metrics``);
``promtool check metrics`` accepts the output (tests/cluster).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from acmelb.acme.ari import AriState
from acmelb.cluster.backoff import Backoff
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
        self.not_before = Gauge(
            "acmelb_certificate_not_before_seconds",
            "Start of validity of the certificate version installed here (epoch s)",
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
        self._renewal_metrics(r)
        self._hook_and_ari_metrics(r)
        self.info = Gauge("acmelb_agent_info", "This agent", ["member"], registry=r)
        self.info.labels(member=member).set(1)
        self._codes: dict[str, set[str]] = {}

    def _renewal_metrics(self, r: CollectorRegistry) -> None:
        self.failures = Gauge(
            "acmelb_renewal_failures",
            "Consecutive failed attempts of the certificate, cluster-wide (0: none)",
            ["name"],
            registry=r,
        )
        self.next_attempt = Gauge(
            "acmelb_renewal_next_attempt_timestamp_seconds",
            "When the cluster's back-off allows the next attempt (epoch s; 0: no back-off)",
            ["name"],
            registry=r,
        )

    def _hook_and_ari_metrics(self, r: CollectorRegistry) -> None:
        self.hook_failures = Counter(
            "acmelb_deploy_hook_failures",
            "Deploy hook runs on this member that failed (non-zero exit, timeout)",
            ["name"],
            registry=r,
        )
        self.hook_ok = Gauge(
            "acmelb_deploy_hook_ok",
            "1 if the last deploy hook run here for the installed version succeeded, else 0",
            ["name"],
            registry=r,
        )
        self.ari_window_start = Gauge(
            "acmelb_ari_window_start_seconds",
            "Start of the renewal window of the current version (epoch s; ARI or lifetime)",
            ["name"],
            registry=r,
        )
        self.ari_window_end = Gauge(
            "acmelb_ari_window_end_seconds",
            "End of the renewal window of the current version (epoch s)",
            ["name"],
            registry=r,
        )
        self.renewal_moment = Gauge(
            "acmelb_renewal_moment_seconds",
            "The moment chosen in the window to renew (epoch s)",
            ["name"],
            registry=r,
        )
        self.ari_last_poll = Gauge(
            "acmelb_ari_last_poll_seconds",
            "When this member last polled the certificate's ARI for the cluster (epoch s)",
            ["name"],
            registry=r,
        )
        self.ari_polls = Counter(
            "acmelb_ari_polls", "ARI polls this member made for the cluster", ["name"], registry=r
        )
        self.serving_current = Gauge(
            "acmelb_serving_current",
            "1 if this instance serves the current version (serve_check), else 0",
            ["name"],
            registry=r,
        )
        self.ari_early_renewals = Counter(
            "acmelb_ari_early_renewals",
            "Renewals this member ordered because the CA moved the ARI window early",
            ["name"],
            registry=r,
        )

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--metrics-listen {listen!r}: expected ADDRESS:PORT")
        try:
            start_http_server(int(port), addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"--metrics-listen {listen}: {exc.strerror or exc}") from exc

    def backoff(self, name: str, backoff: Backoff | None) -> None:
        self.failures.labels(name=name).set(backoff.failures if backoff else 0)
        self.next_attempt.labels(name=name).set(backoff.next_attempt if backoff else 0)

    def ari_polled(self, name: str, state: AriState) -> None:
        self.ari_window_start.labels(name=name).set(state.window.start)
        self.ari_window_end.labels(name=name).set(state.window.end)
        self.renewal_moment.labels(name=name).set(state.moment)
        self.ari_last_poll.labels(name=name).set_to_current_time()
        self.ari_polls.labels(name=name).inc()

    def hook_ran(self, name: str, ok: bool) -> None:
        self.hook_ok.labels(name=name).set(1 if ok else 0)
        if not ok:
            self.hook_failures.labels(name=name).inc()

    def last_self_check(self, name: str, codes: Iterable[str]) -> None:
        for code in self._codes.pop(name, set()):
            self.self_check.remove(name, code)
        self._codes[name] = set(codes)
        for code in self._codes[name]:
            self.self_check.labels(name=name, code=code).set(1)
