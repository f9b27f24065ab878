"""``acmelb serve``: run the challenge responder in the foreground."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from acmelb.cli.common import add_state_dir, state_dir

if TYPE_CHECKING:
    from acmelb.acme.responder import AnswerSource, RequestLog


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the HTTP-01 challenge responder",
        description="Answer GET/HEAD /.well-known/acme-challenge/<token> with the key "
        "authorization (exact tokens, or any token in --stateless mode); 404 otherwise.",
    )
    parser.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="ADDR",
        help="address to listen on (repeatable; default: all IPv4 and IPv6)",
    )
    parser.add_argument("--port", type=int, default=80, help="TCP port (default 80)")
    parser.add_argument("--token", action="append", default=[], help="a challenge token")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY_AUTHORIZATION",
        help="the key authorization for the --token at the same position",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="answer every base64url token with TOKEN.THUMBPRINT",
    )
    parser.add_argument("--thumbprint", help="the account key thumbprint (acmelb account show)")
    parser.add_argument(
        "--pending",
        action="store_true",
        help="answer the pending tokens of running `acmelb issue --solver serve` "
        "runs that use the same --state-dir",
    )
    add_state_dir(parser)
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from acmelb.acme.responder import Responder
    from acmelb.errors import UsageError

    source = _answer_source(args)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    responder = Responder(
        source, addresses=args.address, port=args.port, log=None if args.quiet else _log
    )

    async def serve() -> None:
        try:
            await responder.start()
        except OSError as exc:
            raise UsageError(str(exc.strerror or exc)) from exc
        where = ", ".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in responder.bound)
        print(f"acmelb serve: listening on {where}", file=sys.stderr, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await responder.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


def _log(entry: RequestLog) -> None:
    print(
        f"{entry.client} {entry.method} {entry.target} host={entry.host or '-'} "
        f"ua={entry.user_agent or '-'!r} -> {entry.status} {entry.answer}",
        file=sys.stderr,
        flush=True,
    )


def _answer_source(args: argparse.Namespace) -> AnswerSource:
    """What the responder answers from: --pending, --stateless or --token/--key."""
    from acmelb.errors import UsageError

    modes = sum((bool(args.stateless), bool(args.pending), bool(args.token)))
    if modes > 1:
        raise UsageError("choose one of --token/--key, --stateless or --pending")
    if args.pending:
        return _pending_directory(args)
    if args.stateless:
        return _stateless(args)
    return _exact_tokens(args)


def _pending_directory(args: argparse.Namespace) -> AnswerSource:
    from acmelb.acme.responder import PendingDirectory
    from acmelb.acme.solvers.serve import pending_dir
    from acmelb.acme.store import Store

    Store(state_dir(args)).prepare()  # a new state dir is 0700 from the start
    directory = pending_dir(state_dir(args))
    directory.mkdir(mode=0o755, exist_ok=True)
    return PendingDirectory(directory)


def _stateless(args: argparse.Namespace) -> AnswerSource:
    from acmelb.acme.responder import Stateless
    from acmelb.errors import UsageError

    if not args.thumbprint or args.token:
        raise UsageError("--stateless needs --thumbprint and takes no --token")
    try:
        return Stateless(args.thumbprint)
    except ValueError as exc:
        raise UsageError(f"--thumbprint: {exc}") from exc


def _exact_tokens(args: argparse.Namespace) -> AnswerSource:
    from acmelb.acme.responder import TOKEN_PATTERN, ExactTokens
    from acmelb.errors import UsageError

    if args.thumbprint:
        raise UsageError("--thumbprint goes with --stateless")
    if len(args.token) != len(args.key):
        raise UsageError("give one --key for each --token")
    if not args.token:
        raise UsageError(
            "nothing to serve: give --token T --key K, --stateless --thumbprint X, or --pending"
        )
    for token, key in zip(args.token, args.key, strict=True):
        if not TOKEN_PATTERN.fullmatch(token) or not key.startswith(token + "."):
            raise UsageError(
                f"--key for token {token!r} must be '{token}.THUMBPRINT' and the token base64url"
            )
    return ExactTokens(zip(args.token, args.key, strict=True))
