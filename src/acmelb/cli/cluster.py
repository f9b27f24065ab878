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
    for add_action in (_add_status, _add_add, _add_renew, _add_remove, _add_export, _add_keygen):
        add_action(actions)


def _store_options(p: argparse.ArgumentParser) -> None:
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


def _add_status(actions: Any) -> None:
    status = actions.add_parser(
        "status",
        help="members, certificates, locks, back-offs, deploy hooks, store health",
        description="Exit status: 0 healthy, 1 no quorum or a member's deploy hook failed.",
    )
    _store_options(status)
    status.add_argument("--json", action="store_true", help="acmelb.cluster-status/v1 JSON")
    status.set_defaults(run=run_status)


def _add_add(actions: Any) -> None:
    add = actions.add_parser("add", help="declare a certificate for NAME... (first names it)")
    _store_options(add)
    add.add_argument("names", nargs="+", metavar="NAME")
    add.add_argument(
        "--key-type", choices=("ec256", "ec384", "rsa2048", "rsa4096"), default="ec256"
    )
    add.add_argument(
        "--deploy-hook",
        metavar="CMD",
        help="run on every member after it installs a new version (RENEWED_LINEAGE, "
        "RENEWED_DOMAINS, as certbot); a member's own [[certificate]] deploy_hook wins, and "
        "without either the top-level deploy_hook of its agent.toml runs",
    )
    add.add_argument(
        "--profile", metavar="NAME", help="the CA's certificate profile (e.g. shortlived)"
    )
    add.set_defaults(run=run_add)


def _add_renew(actions: Any) -> None:
    renew = actions.add_parser(
        "renew",
        help="ask the agents for a new version of NAME now (one order for the cluster)",
        description="The next agent to check orders a new version of each NAME, due or not "
        "(a key compromise, a changed key type). A back-off after failed attempts still "
        "holds unless --now is given.",
    )
    _store_options(renew)
    renew.add_argument("names", nargs="+", metavar="NAME")
    renew.add_argument(
        "--now",
        action="store_true",
        help="also past the back-off after failed attempts (once their cause is fixed)",
    )
    renew.set_defaults(run=run_renew)


def _add_remove(actions: Any) -> None:
    remove = actions.add_parser(
        "remove",
        help="stop keeping the certificate NAME",
        description="The agents stop renewing and installing NAME. Its files stay in "
        "STATE/live/NAME on every instance (a server may still use them); each agent logs "
        "where they are. Delete them by hand once nothing uses them.",
    )
    _store_options(remove)
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=run_remove)


def _add_export(actions: Any) -> None:
    export = actions.add_parser(
        "export", help="write NAME's current version to DIR (certbot layout: DIR/live/NAME/...)"
    )
    _store_options(export)
    export.add_argument("name", metavar="NAME")
    export.add_argument("directory", type=Path, metavar="DIR")
    export.add_argument("--store-key-file", type=Path, metavar="FILE")
    export.set_defaults(run=run_export)


def _add_keygen(actions: Any) -> None:
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
    return 0 if status.healthy else 1


def run_add(args: argparse.Namespace) -> int:
    from acmelb.cluster.status import declare

    store, _ = _store(args)
    created = declare(store, tuple(args.names), args.key_type, args.deploy_hook, args.profile)
    print(f"{args.names[0]}: {'declared' if created else 'already declared'}")
    return 0


def run_renew(args: argparse.Namespace) -> int:
    from acmelb.cluster.status import request_renewal

    store, _ = _store(args)
    missing = request_renewal(store, args.names, now=args.now)
    for name in args.names:
        said = "not declared" if name in missing else "renewal requested"
        print(f"{name}: {said}{' (past any back-off)' if args.now and name not in missing else ''}")
    return 1 if missing else 0


def run_remove(args: argparse.Namespace) -> int:
    from acmelb.cluster.status import undeclare

    store, _ = _store(args)
    missing = [name for name in args.names if not undeclare(store, name)]
    for name in args.names:
        said = "not declared" if name in missing else "removed (its files stay on each instance)"
        print(f"{name}: {said}")
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
