#!/usr/bin/env python3
"""Benchmark 1: one certificate, acmelb vs certbot vs the protocol floor.

All three against the same local Pebble (PEBBLE_VA_NOSLEEP=1) with an account
registered beforehand, each as a whole process, one after the other in every round:

* ``acmelb issue NAME`` (standalone responder on Pebble's validation port);
* ``certbot certonly --standalone`` (certbot from PyPI in benchmarks/.cache/);
* the protocol floor (``_floor.py``): the same ACME requests with the bare ``acme``
  library, 20 ms polling, no retries, no storage; its in-process protocol time
  (no process start-up, no imports) is printed too.

    .venv/bin/python benchmarks/bench_issue.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b


def attempt(ca: b.BenchCA, what: str, fn: Callable[[], b.Run], setup: Callable[[], None]) -> b.Run:
    """Run ``fn``; when it fails and Pebble is hung, restart Pebble, ``setup`` again, retry."""
    for _ in range(3):
        result = fn()
        if result.returncode == 0 and not result.timed_out:
            return result
        if ca.hung():
            ca.restart(f"hung during {what}")
            setup()
            continue
        return result.check()
    raise RuntimeError(f"{what}: Pebble kept hanging")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument("--no-certbot", action="store_true", help="skip certbot")
    args = p.parse_args(argv)

    b.header("single issuance: acmelb vs certbot certonly --standalone vs the protocol floor")
    exe: Path | None = None
    if not args.no_certbot:
        try:
            exe = b.certbot()
        except b.Unavailable as exc:
            b.note(f"certbot skipped: {exc}")
    with b.bench_ca() as ca, tempfile.TemporaryDirectory(prefix="acmelb-bench-") as tmp:
        work = Path(tmp)

        def setup() -> None:
            for d in ("acmelb", "certbot"):
                (work / d).mkdir(exist_ok=True)
            b.acmelb_register(ca, work / "acmelb")
            if exe is not None:
                b.certbot_register(exe, ca, work / f"certbot{ca.restarts}")

        setup()
        from acmelb.acme.store import Store

        def acmelb(name: str) -> b.Run:
            return b.run(
                [
                    *b.ACMELB,
                    "issue",
                    name,
                    *b.acmelb_ca_args(ca, work / "acmelb"),
                    "--http-port",
                    str(ca.http_port),
                    "--http-address",
                    "127.0.0.1",
                ],
                timeout=120,
            )

        def floor(name: str) -> b.Run:
            account = Store(work / "acmelb").account_dir(ca.directory)
            return b.run(
                [
                    b.PYTHON,
                    str(b.HERE / "_floor.py"),
                    "--directory",
                    ca.directory,
                    "--bundle",
                    str(ca.bundle),
                    "--key",
                    str(account / "private_key.json"),
                    "--regr",
                    str(account / "regr.json"),
                    "--port",
                    str(ca.http_port),
                    name,
                ],
                timeout=120,
            )

        def cb(name: str) -> b.Run:
            assert exe is not None
            return b.certbot_certonly(exe, ca, work / f"certbot{ca.restarts}", name)

        s_acmelb = b.Series("acmelb issue", "s")
        s_certbot = b.Series("certbot certonly", "s")
        s_floor = b.Series("protocol floor (process)", "s")
        s_proto = b.Series("protocol floor (in-process)", "s")
        for i in range(args.runs + 1):  # round 0 warms caches up and is not counted
            r = attempt(ca, "acmelb issue", lambda i=i: acmelb(f"a{i}.issue.test"), setup)
            f = attempt(ca, "the floor", lambda i=i: floor(f"f{i}.issue.test"), setup)
            c = (
                attempt(ca, "certbot", lambda i=i: cb(f"c{i}.issue.test"), setup)
                if exe is not None
                else None
            )
            if i == 0:
                continue
            s_acmelb.add(r.seconds)
            s_floor.add(f.seconds)
            s_proto.add(json.loads(f.stdout.strip().splitlines()[-1])["protocol_s"])
            if c is not None:
                s_certbot.add(c.seconds)
        vs_certbot = b.ratios(s_acmelb, s_certbot)
        vs_floor = b.ratios(s_acmelb, s_floor)
        b.show(s_acmelb, s_certbot, s_floor, s_proto, vs_certbot, vs_floor)
        b.goal("acmelb <= 0.25 x certbot", vs_certbot.median <= 0.25 if vs_certbot.values else None)
        b.goal("acmelb <= 1.3 x the floor", vs_floor.median <= 1.3)
        if ca.restarts:
            b.note(f"Pebble hung and was restarted {ca.restarts} time(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
