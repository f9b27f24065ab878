"""``acmelb cluster status|add|remove|export|keygen``: the cluster's store, by hand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from acmelb.cli.common import print_json


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "cluster",
        help="inspect and change the certificates a cluster of agents keeps",
        description="The cluster's etcd store: members, certificates, locks, pending orders.",
    )
    actions = parser.add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=type(parser)
    )

    def store_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            type=Path,
            metavar="FILE",
            help="an agent's configuration file (its store settings are used)",
        )
        p.add_argument("--store", metavar="URL", help="etcd://HOST:PORT[,HOST:PORT...]")
        p.add_argument(
            "--store-prefix",
            default="/acmelb",
            metavar="PREFIX",
            help="key prefix in etcd (default /acmelb)",
        )

    status = actions.add_parser("status", help="members, certificates, locks, store health")
    store_options(status)
    status.add_argument("--json", action="store_true", help="acmelb.cluster-status/v1 JSON")
    status.set_defaults(run=run_status)

    add = actions.add_parser("add", help="declare a certificate for NAME... (first names it)")
    store_options(add)
    add.add_argument("names", nargs="+", metavar="NAME")
    add.add_argument(
        "--key-type", choices=("ec256", "ec384", "rsa2048", "rsa4096"), default="ec256"
    )
    add.set_defaults(run=run_add)

    remove = actions.add_parser("remove", help="stop keeping the certificate NAME")
    store_options(remove)
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=run_remove)

    export = actions.add_parser(
        "export", help="write NAME's current version to DIR (certbot layout: DIR/live/NAME/...)"
    )
    store_options(export)
    export.add_argument("name", metavar="NAME")
    export.add_argument("directory", type=Path, metavar="DIR")
    export.add_argument("--store-key-file", type=Path, metavar="FILE")
    export.set_defaults(run=run_export)

    keygen = actions.add_parser("keygen", help="write a new random store key to FILE (0600)")
    keygen.add_argument("file", type=Path, metavar="FILE")
    keygen.set_defaults(run=run_keygen)


def _store(args: argparse.Namespace) -> Any:
    from acmelb.cluster.config import store_config_of

    return store_config_of(args.config, args.store, args.store_prefix)


def run_status(args: argparse.Namespace) -> int:
    from acmelb.cli.render import render_cluster_status
    from acmelb.cluster.status import cluster_status

    store, config = _store(args)
    status = cluster_status(store, config.renew_fraction if config else 2 / 3)
    if args.json:
        print_json(status.to_json())
    else:
        import sys

        render_cluster_status(status, sys.stdout)
    return 0 if status.quorum else 1


def run_add(args: argparse.Namespace) -> int:
    from acmelb.cluster.status import declare

    store, _ = _store(args)
    created = declare(store, tuple(args.names), args.key_type)
    print(f"{args.names[0]}: {'declared' if created else 'already declared'}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from acmelb.cluster.status import undeclare

    store, _ = _store(args)
    missing = [name for name in args.names if not undeclare(store, name)]
    for name in args.names:
        print(f"{name}: {'not declared' if name in missing else 'removed'}")
    return 1 if missing else 0


def run_export(args: argparse.Namespace) -> int:
    from acmelb.cluster.secrets import SecretBox
    from acmelb.cluster.status import export

    store, config = _store(args)
    key_file = args.store_key_file or (config.store_key_file if config else None)
    live = export(store, SecretBox.from_file(key_file), args.name, args.directory)
    print(f"{args.name}: written to {live}")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from acmelb.cluster.secrets import generate_key_file
    from acmelb.errors import UsageError

    try:
        generate_key_file(args.file)
    except FileExistsError as exc:
        raise UsageError(f"{args.file}: exists already; a store key is never overwritten") from exc
    except OSError as exc:
        raise UsageError(f"{args.file}: {exc.strerror or exc}") from exc
    print(f"store key written to {args.file} (mode 0600); give the same file to every agent")
    return 0
