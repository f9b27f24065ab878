"""``acmelb agent``: keep the cluster's certificates, on one instance behind the LB."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acmelb.cluster.config import AgentConfig


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="run one instance of a cluster that shares certificates through etcd",
        description="Run until stopped: answer every pending HTTP-01 token of the cluster on "
        "port 80, renew the certificates of the configuration file (one order per "
        "certificate for the whole cluster, under an etcd lock), install every new version "
        "into STATE/live/NAME and run the deploy hook. See docs/cluster.md.",
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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from acmelb.cluster.agent import Agent
    from acmelb.cluster.secrets import SecretBox

    config = _config(args)
    box = SecretBox.from_file(config.store_key_file)
    if args.check_config:
        print(
            f"{args.config}: member {config.member}, {len(config.certificates)} "
            f"certificate(s), store {config.store.prefix} on "
            f"{','.join(str(e) for e in config.store.endpoints)}: OK"
        )
        return 0
    log = _logger(config.member)
    agent = Agent(config, box, log=log)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    try:
        agent.start()
        agent.wait()
    except KeyboardInterrupt:
        pass
    finally:
        agent.stop()
    log("stopped")
    return 0


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


def _logger(member: str) -> Callable[[str], None]:
    import sys
    import time

    def log(message: str) -> None:
        print(
            f"{time.strftime('%H:%M:%S')} acmelb agent[{member}]: {message}",
            file=sys.stderr,
            flush=True,
        )

    return log
