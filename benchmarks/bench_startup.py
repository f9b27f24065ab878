#!/usr/bin/env python3
"""Benchmark 4: start-up, ``acmelb --version`` and ``acmelb --help`` vs ``certbot --version``.

Each command runs as a whole process, interleaved round by round (certbot from PyPI in
benchmarks/.cache/certbot-venv). The ratio divides each acmelb run by the certbot run
of the same round.

    .venv/bin/python benchmarks/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15, help="measured rounds (default 15)")
    p.add_argument("--no-certbot", action="store_true", help="skip certbot")
    args = p.parse_args(argv)

    b.header("start-up: acmelb --version / --help vs certbot --version")
    commands = {
        "acmelb --version": [*b.ACMELB, "--version"],
        "acmelb --help": [*b.ACMELB, "--help"],
        "acmelb diagnose --help": [*b.ACMELB, "diagnose", "--help"],
    }
    if not args.no_certbot:
        try:
            commands["certbot --version"] = [str(b.certbot()), "--version"]
        except b.Unavailable as exc:
            b.note(f"certbot skipped: {exc}")
    series = {k: b.Series(k, "s") for k in commands}
    for i in range(args.runs + 1):  # round 0 warms the page cache, not counted
        for label, cmd in commands.items():
            r = b.run(cmd, timeout=60).check()
            if i:
                series[label].add(r.seconds)
    b.show(*series.values())
    if "certbot --version" in series:
        b.show(
            *(
                b.ratios(series[k], series["certbot --version"])
                for k in commands
                if k.startswith("acmelb")
            )
        )
    for k in ("acmelb --version", "acmelb --help"):
        b.goal(f"{k} <= 0.15 s median", series[k].median <= 0.15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
