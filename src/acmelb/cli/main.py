"""The ``acmelb`` command line: parsing, printing and exit codes, no logic.

Each sub-command lives in ``acmelb.cli.<name>`` and registers its own
parser; heavy imports happen inside the command's ``run`` so that
``acmelb --version`` stays fast.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import re
import sys
from collections.abc import Sequence

from acmelb.errors import AcmelbError
from acmelb.version import __version__

# Order is the order shown in --help.
COMMANDS = (
    "issue",
    "renew",
    "revoke",
    "certificates",
    "account",
    "serve",
    "agent",
    "cluster",
    "diagnose",
    "explain",
    "fix",
    "lab",
    "demo",
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


# Options whose values are base64url (a thumbprint, a token, TOKEN.THUMBPRINT): one in
# 64 begins with "-", which argparse takes for an option ("expected one argument").
BASE64URL_VALUE_OPTIONS = frozenset({"--thumbprint", "--token", "--key"})
# At least 128 bits (RFC 8555 section 8.3: 22 characters); an option name is lower case.
_BASE64URL_VALUE = re.compile(r"-[A-Za-z0-9_-]{21,}(\.[A-Za-z0-9_-]+)?")
_OPTION_NAME = re.compile(r"--?[a-z0-9-]+")


def with_base64url_values_attached(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--thumbprint -Abc…`` written ``--thumbprint=-Abc…``, so that a
    base64url value that happens to begin with "-" reaches its option."""
    joined: list[str] = []
    for arg in argv:
        previous = joined[-1] if joined else ""
        if (
            previous in BASE64URL_VALUE_OPTIONS
            and _BASE64URL_VALUE.fullmatch(arg)
            and not _OPTION_NAME.fullmatch(arg)
        ):
            joined[-1] = f"{previous}={arg}"
            continue
        joined.append(arg)
    return joined


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named on the command line (its first word not an option)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"acmelb: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``command`` (one of ``COMMANDS``) only that
    sub-command under it: a run needs no other, and each costs start-up time."""
    parser = _Parser(
        prog="acmelb",
        description="ACME HTTP-01 certificates behind external load balancers.",
    )
    parser.add_argument("--version", action="version", version=f"acmelb {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in (command,) if command in COMMANDS else COMMANDS:
        try:
            module = importlib.import_module(f"acmelb.cli.{name}")
        except ModuleNotFoundError:
            continue  # a command still under construction on this branch
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_given = with_base64url_values_attached(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_in(args_given))
    try:
        args = parser.parse_args(args_given)
    except SystemExit as exc:  # --help, --version and usage errors end here
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except AcmelbError as exc:
        if args.debug:  # the chain: what happened underneath (raise ... from exc)
            import traceback

            traceback.print_exc()
        print(f"acmelb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("acmelb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug in acmelb: say so without a traceback wall
        if args.debug:
            import traceback

            traceback.print_exc()
        print(
            f"acmelb: internal error: {type(exc).__name__}: {exc} "
            "(please report it; rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def run() -> int:
    """The ``acmelb`` program: ``main`` on the process's arguments. What the run made is
    then kept out of the collector's way: the interpreter's teardown would walk all of
    it (60 ms after a fleet diagnosis) only to free memory the exit frees anyway.
    Exit handlers run as ever."""
    code = main()
    gc.freeze()
    return code
