"""``acmelb agent``: keep the cluster's certificates, on one instance behind the LB."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acmelb.cli.logs import FORMATS

if TYPE_CHECKING:
    from acmelb.cluster.config import AgentConfig


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run one instance of a cluster that shares certificates through etcd",
        description="Run until stopped: answer every pending HTTP-01 token of the cluster on "
        "port 80, renew the certificates of the configuration file (one order per "
        "certificate for the whole cluster, under an etcd lock), install every new version "
        "into STATE/live/NAME and run the deploy hook. SIGHUP reloads the configuration "
        "file; SIGTERM stops. Under systemd (Type=notify) it reports readiness and pets "
        "the watchdog. See docs/cluster.md and docs/operations.md.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="FILE",
        help="the agent's TOML configuration (docs/cluster.md)",
    )
    parser.add_argument(
        "--store-key-file",
        type=Path,
        metavar="FILE",
        help="the key that seals private keys in the store (32 bytes, raw, "
        "base64 or hex; overrides store_key_file in the configuration)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="ADDRESS:PORT",
        help="serve Prometheus metrics there (overrides metrics_listen)",
    )
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="read the configuration and the store key, then exit",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="auto",
        help="human (time, level, message), journal (syslog priority prefixes, for "
        "systemd), json (one object per line: time, level, member, certificate, event "
        "and its fields); auto: journal when stderr is the journal, else human",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="the least severe events written (default: info)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import signal

    # A reload asked before the agent runs would kill it (SIGHUP's default): the file is
    # being read anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from acmelb.cli.logs import configure
    from acmelb.cluster.agent import Agent
    from acmelb.cluster.sdnotify import Notifier
    from acmelb.cluster.secrets import SecretBox

    config = _config(args)
    box = SecretBox.from_file(config.store_key_file)
    if args.check_config:
        print(_checked(args.config, config))
        return 0
    configure(args.log_format, args.log_level)
    agent = Agent(config, box, notifier=Notifier.from_environment())
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: agent.request_reload())
    try:
        agent.start()
        agent.wait(lambda: _config(args))
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    if agent.fatal is not None:
        return 1  # said in the log; systemd's Restart=on-failure starts it again
    agent.log.info("stopped", "stopped")
    return 0


def _checked(path: Path, config: AgentConfig) -> str:
    return (
        f"{path}: member {config.member}, {len(config.certificates)} "
        f"certificate(s), store {config.store.prefix} on "
        f"{','.join(str(e) for e in config.store.endpoints)}: OK"
    )


def _config(args: argparse.Namespace) -> AgentConfig:
    """The configuration file, with the command line's overrides."""
    import dataclasses

    from acmelb.cluster.config import load_config

    config = load_config(args.config)
    if args.store_key_file:
        config = dataclasses.replace(config, store_key_file=args.store_key_file)
    if args.metrics_listen:
        config = dataclasses.replace(config, metrics_listen=args.metrics_listen)
    return config
