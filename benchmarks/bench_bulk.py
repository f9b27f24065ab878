#!/usr/bin/env python3
"""Benchmark 2: bulk issuance, acmelb in one invocation vs certbot once per name.

``acmelb issue --from-file NAMES --concurrency N`` (one account, concurrent orders,
one shared standalone responder) against ``certbot certonly --standalone -d NAME``
run once per name, sequentially, on the same local Pebble (PEBBLE_VA_NOSLEEP=1),
both with an account registered beforehand. Every name is distinct.

Pebble 2.4 (Debian) can deadlock under concurrent orders: a run that does not finish
in time (or fails) while Pebble's directory answers and its nonce endpoint hangs is a
hung Pebble; the benchmark says so, restarts Pebble, registers again and repeats the
run (at most three times).

    .venv/bin/python benchmarks/bench_bulk.py [--names 100] [--runs 3] [--certbot-runs 1]

certbot takes about 3 s a name, so by default it runs once (its median is then that
run) and acmelb ``--runs`` times; every acmelb run is divided by the certbot run of
the same round, or by the last one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=100, help="certificates per run (default 100)")
    p.add_argument("--runs", type=int, default=3, help="acmelb runs (default 3)")
    p.add_argument("--certbot-runs", type=int, default=1, help="certbot loops (default 1)")
    p.add_argument("--concurrency", type=int, default=16, help="acmelb --concurrency")
    p.add_argument("--no-certbot", action="store_true", help="skip certbot")
    args = p.parse_args(argv)

    b.header(
        f"bulk issuance of {args.names} names: acmelb issue --from-file "
        f"--concurrency {args.concurrency} vs certbot once per name"
    )
    exe: Path | None = None
    if not args.no_certbot and args.certbot_runs > 0:
        try:
            exe = b.certbot()
        except b.Unavailable as exc:
            b.note(f"certbot skipped: {exc}")
    with b.bench_ca() as ca, tempfile.TemporaryDirectory(prefix="acmelb-bench-") as tmp:
        work = Path(tmp)
        state = {"acmelb": work / "acmelb0", "certbot": work / "certbot0"}

        def setup() -> None:
            state["acmelb"] = work / f"acmelb{ca.restarts}"
            state["certbot"] = work / f"certbot{ca.restarts}"
            b.acmelb_register(ca, state["acmelb"])
            if exe is not None:
                b.certbot_register(exe, ca, state["certbot"])

        setup()
        # generous, yet far below a hang: ~0.3 s a name at concurrency 1
        budget = 30 + args.names * 0.5

        def acmelb_run(tag: str) -> b.Run:
            for _ in range(3):
                names = work / f"names-{tag}-{ca.restarts}.txt"
                names.write_text(
                    "".join(f"n{i}-{tag}-{ca.restarts}.bulk.test\n" for i in range(args.names))
                )
                r = b.run(
                    [
                        *b.ACMELB,
                        "issue",
                        "--from-file",
                        str(names),
                        "--concurrency",
                        str(args.concurrency),
                        *b.acmelb_ca_args(ca, state["acmelb"]),
                        "--http-port",
                        str(ca.http_port),
                        "--http-address",
                        "127.0.0.1",
                    ],
                    timeout=budget,
                )
                if r.returncode == 0 and not r.timed_out:
                    return r
                if ca.hung() or "looks hung" in r.stderr + r.stdout or r.timed_out:
                    ca.restart(
                        "hung during acmelb issue --from-file"
                        + (f" (the run was stopped after {budget:.0f} s)" if r.timed_out else "")
                    )
                    setup()
                    continue
                r.check()
            raise RuntimeError("Pebble kept hanging")

        def certbot_run(tag: str) -> float:
            assert exe is not None
            total = 0.0
            for i in range(args.names):
                for _ in range(3):
                    r = b.certbot_certonly(
                        exe, ca, state["certbot"], f"n{i}-{tag}-{ca.restarts}.bulk.test"
                    )
                    if r.returncode == 0 and not r.timed_out:
                        break
                    if ca.hung():
                        ca.restart("hung during certbot")
                        setup()
                        continue
                    r.check()
                total += r.seconds
            return total

        s_acmelb = b.Series("acmelb (one run)", "s")
        s_certbot = b.Series("certbot (once per name)", "s")
        acmelb_run("warm")  # not counted
        pairs = b.Series("acmelb / certbot", "x")
        for i in range(max(args.runs, args.certbot_runs if exe else 0)):
            if i < args.runs:
                s_acmelb.add(acmelb_run(f"a{i}").seconds)
            if exe is not None and i < args.certbot_runs:
                s_certbot.add(certbot_run(f"c{i}"))
            if s_certbot.values and i < args.runs:
                pairs.add(s_acmelb.values[i] / s_certbot.values[min(i, len(s_certbot.values) - 1)])
        per_name = b.Series("acmelb per name", "ms")
        per_name.values = [v / args.names * 1000 for v in s_acmelb.values]
        certbot_per_name = b.Series("certbot per name", "ms")
        certbot_per_name.values = [v / args.names * 1000 for v in s_certbot.values]
        b.show(s_acmelb, s_certbot, per_name, certbot_per_name, pairs)
        b.goal("acmelb <= 0.05 x certbot", pairs.median <= 0.05 if pairs.values else None)
        if ca.restarts:
            b.note(
                f"Pebble hung and was restarted {ca.restarts} time(s); the runs it "
                "spoiled were repeated"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
