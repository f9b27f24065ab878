"""``acmelb demo``: the main job on the built-in default, the local load-balancer lab."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run acmelb's story on the local lab (root; Pebble, HAProxy, iptables)",
        description="Build real load-balancer topologies in network namespaces with a local "
        "Pebble CA, issue through a TCP LB, diagnose and fix a hairpin-less DNAT LB, catch "
        "an intercepting HTTP LB, and run three agents in cluster mode behind a round-robin "
        "LB. Everything is torn down at the end.",
    )
    parser.add_argument(
        "--chapter",
        type=_chapter,
        action="append",
        metavar="N",
        help="run only chapter N: 1, 2, 3, or 4 or 'cluster' (repeatable)",
    )
    parser.set_defaults(run=run)


CHAPTER_NAMES = {"cluster": 4}


def _chapter(text: str) -> int:
    number = CHAPTER_NAMES.get(text)
    if number is None:
        try:
            number = int(text)
        except ValueError:
            number = 0
    if not 1 <= number <= 4:
        raise argparse.ArgumentTypeError(f"no chapter {text!r} (1, 2, 3, 4 or cluster)")
    return number


def run(args: argparse.Namespace) -> int:
    from acmelb.lab.demo import DemoEvent, run_demo
    from acmelb.lab.netns import require_root

    require_root()
    tty = sys.stdout.isatty()

    def bold(text: str) -> str:
        return f"\033[1m{text}\033[0m" if tty else text

    def show(event: DemoEvent) -> None:
        if event.kind == "chapter":
            print(f"\n{bold('== ' + event.text)}\n")
        elif event.kind == "say":
            note = "" if event.expected else "   <-- not what the demo expected"
            print(f"{event.text}{note}")
        elif event.kind == "quote":
            print(event.text)
            for line in event.output.splitlines():
                print(f"    {line}")
        else:
            print(f"\n[{event.where}] $ {event.text}")
            for line in event.output.splitlines():
                print(f"    {line}")
            note = "" if event.expected else "   <-- not what the demo expected"
            print(f"    (exit {event.exit_code}){note}\n")
        sys.stdout.flush()

    surprises = run_demo(show, chapters=args.chapter or (1, 2, 3, 4))
    return 1 if surprises else 0
