"""Options shared by the commands that talk to a CA or use the state directory."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def default_state_dir() -> Path:
    if os.environ.get("ACMELB_STATE_DIR"):
        return Path(os.environ["ACMELB_STATE_DIR"])
    if os.geteuid() == 0:
        return Path("/var/lib/acmelb")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "acmelb"


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where accounts and certificates live (default: $ACMELB_STATE_DIR, "
        "/var/lib/acmelb as root, else ~/.local/state/acmelb)",
    )


def add_ca_options(parser: argparse.ArgumentParser, *, directory_required: bool) -> None:
    parser.add_argument(
        "--directory",
        required=directory_required,
        metavar="URL",
        help="ACME directory URL, or 'letsencrypt' / 'letsencrypt-staging'",
    )
    parser.add_argument(
        "--ca-bundle",
        type=Path,
        metavar="PEM",
        help="trust this CA certificate for the ACME server's TLS",
    )
    parser.add_argument("--email", help="contact address for the account")
    add_state_dir(parser)


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else default_state_dir()


def ca_config(args: argparse.Namespace) -> Any:
    from acmelb.acme.ca import CAConfig, resolve_directory

    return CAConfig(
        directory_url=resolve_directory(args.directory),
        ca_bundle=args.ca_bundle.resolve() if args.ca_bundle else None,
        email=args.email,
    )


def progress_printer(args: argparse.Namespace) -> Any:
    """Progress lines on stderr; --json keeps only the warnings (stdout stays JSON),
    --quiet none."""
    json_output, quiet = getattr(args, "json", False), getattr(args, "quiet", False)

    def show(message: str) -> None:
        if quiet or (json_output and not message.startswith("warning:")):
            return
        print(f"acmelb: {message}", file=sys.stderr, flush=True)

    return show


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def read_input(path: str, what: str) -> str:
    """The text of FILE, or of stdin for '-'; a UsageError naming the option otherwise."""
    from acmelb.errors import UsageError

    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc


def resolve_map(items: list[str]) -> dict[str, list[str]]:
    """--resolve values as a name -> addresses map; the parsing lives in ``acmelb.doctor.vantage``
    (imported here only when called: start-up of the commands that never probe)."""
    from acmelb.doctor.vantage import resolve_map as parse

    return parse(items)


def add_vantage_options(parser: Any, *, fleet: bool = False) -> None:
    """Where and how to probe: the options of diagnose and of issue's self-check."""
    parser.add_argument(
        "--here",
        choices=("inside", "outside"),
        default="outside",
        help="where this process stands (default: outside)",
    )
    parser.add_argument(
        "--inside",
        action="append",
        default=[],
        metavar="CMD",
        help="a vantage behind the LB, as a command prefix ('ssh node1')",
    )
    parser.add_argument(
        "--outside",
        action="append",
        default=[],
        metavar="CMD",
        help="a vantage on the public side, as a command prefix",
    )
    parser.add_argument(
        "--resolve",
        action="append",
        default=[],
        metavar="NAME:ADDRESS",
        help="like curl --resolve, for this process's probes",
    )
    parser.add_argument("--dns-server", metavar="ADDRESS[:PORT]", help="DNS server to ask")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per connection attempt (default 10, as Let's Encrypt's); the whole "
        "validation, redirects included, gets 1.5 times that (15 s, the CA's deadline)",
    )
    parser.add_argument(
        "--assume-public",
        action="append",
        default=[],
        metavar="CIDR|SUFFIX",
        help="treat addresses in CIDR, or names under SUFFIX (e.g. test), as public "
        "(labs, test networks)",
    )
    if fleet:
        parser.add_argument(
            "--repeat", type=int, default=3, metavar="N", help="probes per address (default 3)"
        )
        parser.add_argument(
            "--ca-identity",
            default="letsencrypt.org",
            metavar="DOMAIN",
            help="the CA's CAA identity (default letsencrypt.org)",
        )


def probe_settings(args: argparse.Namespace) -> Any:
    """The ProbeSettings of the options ``add_vantage_options`` declared."""
    from acmelb.doctor.vantage import ProbeSettings

    extra = (
        {"repeat": args.repeat, "ca_identity": args.ca_identity} if hasattr(args, "repeat") else {}
    )
    return ProbeSettings.from_cli(
        here=args.here,
        inside=args.inside,
        outside=args.outside,
        resolve=args.resolve,
        dns_server=args.dns_server,
        timeout=args.timeout,
        assume_public=args.assume_public,
        **extra,
    )
