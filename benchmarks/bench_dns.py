"""DNS lookups for a fleet: the blocking ``lookup()`` against ``lookup_async()``.

Starts a DNS server on 127.0.0.1 with N names (A records, a third without AAAA; CAA
answered empty: three questions a name and one for the run's shared parent), then times
in the same run, each mode over the same names with a fresh ``CaaCache``:

- blocking ``lookup()``, sequentially and on a pool of 64 threads (its ``_Server``
  transport: one socket a lookup, A/AAAA/CAA in one round trip);
- the blocking driver over ``dns.resolver.Resolver`` instead of ``_Server``, both ways;
- ``lookup_async()`` with all N lookups in flight in one event loop: its ``_Endpoint``
  transport (one socket for the loop, answers matched by id and question), and the same
  lookups through dnspython's ``dns.asyncresolver`` (what ``lookup_async`` did before,
  and still does without a given server).

The server: ``--server python`` (default) is the benchmark's ``_dns.py``, a Python
process sharing the machine's cores with the client; ``--server nsd`` is Debian's
``nsd`` (``apt-get install nsd``), run in the foreground from a generated zone and
configuration in a temporary directory, so that the server's own CPU distorts the
figures less.

Prints names/s, client CPU milliseconds a name (this process only: the server runs
apart) and ratios against the blocking modes, and checks that every mode's results are
equal.

    python benchmarks/bench_dns.py [--names 1000] [--runs 3] [--server python|nsd]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import _bench as b
import _nsd

from acmelb.doctor import resolution
from acmelb.doctor.resolution import CaaCache, DnsResult, lookup, lookup_async

Server = tuple[str, int]
Mode = Callable[[list[str], Server], list[DnsResult]]
TIMEOUT = 5.0


@dataclass
class Timing:
    seconds: float
    cpu: float


def start_dns(work: Path, names: list[str]) -> tuple[subprocess.Popen[bytes], Server]:
    """The benchmark's DNS server on 127.0.0.1, answering ``names`` (some with AAAA)."""
    zone = {
        "names": {
            n: {"A": [f"198.51.100.{i % 250 + 1}"]} | ({"AAAA": ["2001:db8::1"]} if i % 3 else {})
            for i, n in enumerate(names)
        }
    }
    zone_file = work / "zone.json"
    zone_file.write_text(json.dumps(zone))
    port = b.free_port()
    cmd = [b.PYTHON, str(b.HERE / "_dns.py"), "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [*cmd, "--zone", str(zone_file)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        b.stop(proc)
        raise RuntimeError("the benchmark's DNS server did not start")
    return proc, ("127.0.0.1", port)


def start_nsd(work: Path, names: list[str]) -> tuple[subprocess.Popen[bytes], Server]:
    """Debian's nsd (``_nsd.py``) answering ``names`` as ``_dns.py`` does (the zone's
    apex, the shared parent, has no CAA set either)."""
    if _nsd.nsd_path() is None:
        raise b.Unavailable("nsd (Debian package nsd) is not installed")
    zone = names[0].split(".", 1)[1]
    records = {
        n: {"A": [f"198.51.100.{i % 250 + 1}"]} | ({"AAAA": ["2001:db8::1"]} if i % 3 else {})
        for i, n in enumerate(names)
    }
    port = b.free_port()
    return _nsd.start_nsd(work / "nsd", port, zone, records), ("127.0.0.1", port)


def via_resolver(name: str, server: Server, cache: CaaCache) -> DnsResult:
    """The blocking driver with ``dns.resolver.Resolver`` asking the server (one question
    at a time): what ``lookup()`` would be without the hand-written transport."""
    ask = resolution._resolver_ask(resolution.make_resolver(server, TIMEOUT))
    steps = resolution._lookup_steps(name, server, True, cache)
    return resolution._drive(steps, resolution._one_by_one(ask))


def sequential(one: Callable[[str, Server, CaaCache], DnsResult]) -> Mode:
    def run(names: list[str], server: Server) -> list[DnsResult]:
        cache = CaaCache()
        return [one(n, server, cache) for n in names]

    return run


def pooled(one: Callable[[str, Server, CaaCache], DnsResult], threads: int = 64) -> Mode:
    def run(names: list[str], server: Server) -> list[DnsResult]:
        cache = CaaCache()
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda n: one(n, server, cache), names))

    return run


def in_one_loop(one: Callable[..., Awaitable[DnsResult]]) -> Mode:
    def run(names: list[str], server: Server) -> list[DnsResult]:
        async def all_names() -> list[DnsResult]:
            cache = CaaCache()
            return list(
                await asyncio.gather(*(one(n, server, TIMEOUT, True, cache) for n in names))
            )

        return asyncio.run(all_names())

    return run


def blocking(name: str, server: Server, cache: CaaCache) -> DnsResult:
    return lookup(name, server, TIMEOUT, True, cache)


MODES: dict[str, Mode] = {
    "a: lookup() sequential (_Server)": sequential(blocking),
    "a: lookup() 64 threads (_Server)": pooled(blocking),
    "c: Resolver sequential": sequential(via_resolver),
    "c: Resolver 64 threads": pooled(via_resolver),
    "b: lookup_async() all in flight": in_one_loop(lookup_async),
    "d: asyncresolver all in flight": in_one_loop(resolution._lookup_async_resolver),
}
BASES = ("a: lookup() sequential (_Server)", "a: lookup() 64 threads (_Server)")
SHORT = dict(zip(BASES, ("a sequential", "a 64 threads"), strict=True))


def timed(mode: Mode, names: list[str], server: Server) -> tuple[Timing, list[DnsResult]]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    results = mode(names, server)
    return Timing(time.perf_counter() - wall0, time.process_time() - cpu0), results


def report(names: int, timings: dict[str, list[Timing]]) -> dict[str, float]:
    median = {k: statistics.median(t.seconds for t in v) for k, v in timings.items()}
    cpu = {k: statistics.median(t.cpu for t in v) for k, v in timings.items()}
    print(f"\n{names} names, median of {len(next(iter(timings.values())))} runs")
    head = f"{'mode':36} {'names/s':>9} {'CPU ms/name':>12}"
    bases = [base for base in BASES if base in timings]
    print(head + "".join(f"  {'vs ' + SHORT[base]:>14}" for base in bases))
    for k in timings:
        rate = names / median[k]
        ratios = "".join(f"  {median[base] / median[k]:13.2f}x" for base in bases)
        print(f"{k:36} {rate:9.0f} {cpu[k] / names * 1e3:12.3f}{ratios}")
    return cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--questions-in-flight",
        type=int,
        default=resolution.MAX_QUESTIONS_IN_FLIGHT,
        help="lookup_async's bound on questions in flight in the loop",
    )
    p.add_argument("--only-async", action="store_true", help="time the asyncio modes (b, d) alone")
    p.add_argument(
        "--server",
        choices=("python", "nsd"),
        default="python",
        help="the DNS server: the benchmark's _dns.py or Debian's nsd",
    )
    args = p.parse_args()
    resolution.MAX_QUESTIONS_IN_FLIGHT = args.questions_in_flight
    modes = {k: v for k, v in MODES.items() if k[0] in "bd" or not args.only_async}
    names = [f"n{i}.fleet.test" for i in range(args.names)]
    with tempfile.TemporaryDirectory(prefix="acmelb-bench-dns-") as tmp:
        start = start_nsd if args.server == "nsd" else start_dns
        proc, server = start(Path(tmp), names)
        print(f"server: {args.server} on {server[0]}:{server[1]} (pid {proc.pid})")
        try:
            for warm in modes.values():  # dnspython imported, resolvers made: not timed
                warm(names[:10], server)
            timings: dict[str, list[Timing]] = {k: [] for k in modes}
            expected: list[DnsResult] | None = None
            for _ in range(args.runs):  # interleaved: the machine's drift hits every mode
                for label, mode in modes.items():
                    timing, results = timed(mode, names, server)
                    timings[label].append(timing)
                    expected = expected if expected is not None else results
                    if results != expected:
                        raise SystemExit(f"{label}: results differ from the first mode's")
        finally:
            b.stop(proc)
    cpu = report(args.names, timings)
    print("results: identical in every mode and run")
    b.goal("every mode gives the same results", True)
    ours, theirs = "a: lookup() sequential (_Server)", "c: Resolver sequential"
    if ours in cpu and theirs in cpu:
        # the hand-written transport stays only while it costs less than dnspython's own
        b.goal("the hand-written _Server costs less CPU than dns.resolver", cpu[ours] < cpu[theirs])


if __name__ == "__main__":
    main()
