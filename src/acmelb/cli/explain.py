"""``acmelb explain``: what an HTTP-01 error message says, without touching the network."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from acmelb.doctor.explain import Explanation

HELP = "explain a cert-manager / CA / certbot / lego HTTP-01 error message"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "explain",
        help=HELP,
        description="Read one error message and name the likely causes (finding codes), "
        "what tells them apart, and the `acmelb diagnose` command that settles it.",
        epilog="Exit status: 0 recognised, 1 not recognised, 2 unreadable input.",
    )
    p.add_argument(
        "text", nargs="*", metavar="TEXT", help="the message ('-' or nothing = read standard input)"
    )
    p.add_argument("--json", action="store_true", help="print the acmelb.explain/v1 JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.doctor.explain import explain
    from acmelb.errors import UsageError

    text = _read_message(args.text)
    if not text.strip():
        raise UsageError("empty message")
    e = explain(text)
    if args.json:
        json.dump(e.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(e)
    return 0 if e.recognised else 1


def _read_message(words: list[str]) -> str:
    """The message: the words given, or standard input for '-' or nothing."""
    from acmelb.errors import UsageError

    if words and words != ["-"]:
        return " ".join(words)
    if sys.stdin is None or (sys.stdin.isatty() and not words):
        raise UsageError("give the message as TEXT, or '-' to read it from standard input")
    try:
        return sys.stdin.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read standard input: {exc}") from exc


def _print_text(e: Explanation) -> None:
    print(f"source:     {e.source}")
    for label, value in (
        ("url", e.url),
        ("name", e.name),
        ("token", e.token),
        ("expected", e.expected),
        ("received", e.received),
    ):
        if value is not None:
            print(
                f"{label + ':':<11} {value!r}"
                if label in ("expected", "received")
                else f"{label + ':':<11} {value}"
            )
    for line in e.evidence:
        print(f"read:       {line}")
    if e.candidates:
        print(f"candidates: {', '.join(e.candidates)}")
    for line in textwrap.wrap(e.reasoning, 88):
        print(f"  {line}")
    if e.next:
        print(f"next:       {e.next}")
