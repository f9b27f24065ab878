"""Score a source tree on tests/diagnose/test_differential_responses.py's generator.

    .venv/bin/python benchmarks/differential_score.py [--src DIR] [--count N] [--seed S]

Draws N server behaviours (the test's own strategies, with ``random`` instead of
hypothesis so that every behaviour is counted, not only the first failure), plays each on a
real server on 127.x, runs the probe and ``analyse`` of the tree in ``--src`` (default:
this checkout) and counts where the ``acme-ca`` verdict disagrees with the rule table, and
where the report breaks the invariant (a failing verdict with ``ok`` true, no error finding
or no root cause). Run it on an older commit's ``src`` (``git worktree add``) to compare.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sys.path[:0] = [str(args.src), str(ROOT)]
    from tests.diagnose import test_differential_responses as gen

    rng = random.Random(args.seed)
    stage = gen.Stage()
    tally: Counter[str] = Counter()
    examples: dict[str, Any] = {}
    try:
        for _ in range(args.count):
            chain, final = draw(gen, rng)
            outcome = judge(gen, stage, chain, final)
            tally[outcome] += 1
            examples.setdefault(outcome, (chain, final))
    finally:
        stage.server.close()
    print(f"{args.count} behaviours, seed {args.seed}, source {args.src}")
    wrong = sum(n for outcome, n in tally.items() if not outcome.startswith("agree"))
    print(f"goal: 0 disagreements or broken invariants; got {wrong} of {args.count}")
    for outcome, n in sorted(tally.items()):
        print(f"  {outcome}: {n} ({n / args.count:.1%})")
        if outcome.startswith(("disagree", "invariant")):
            print(f"    e.g. {examples[outcome]}")
    return 0


def draw(gen: Any, rng: random.Random) -> tuple[tuple[Any, ...], Any]:
    """One behaviour, drawn from the test's own tables (the same weights)."""

    def hop() -> Any:
        return gen.Redirect(
            rng.choice(gen.REDIRECT_STATUSES),
            rng.choice(gen.REDIRECT_HOSTS),
            rng.choice(gen.TRAILING_DOTS),
            rng.choice(gen.REDIRECT_PORTS),
            rng.random() < 0.5,
        )

    chain = tuple(hop() for _ in range(rng.randrange(gen.MAX_REDIRECTS + 1)))
    final = gen.Final(
        rng.choice(gen.FINAL_STATUSES),
        rng.choice(gen.BODY_CHOICES),
        rng.choice(gen.FRAMINGS),
        rng.choice(gen.INFORMATIONAL_HEADS),
        rng.random() < 0.5,
    )
    return chain, final


def judge(gen: Any, stage: Any, chain: tuple[Any, ...], final: Any) -> str:
    from acmelb.doctor.checks.base import Target, VantageRun
    from acmelb.doctor.diagnose import analyse
    from acmelb.doctor.findings import Severity

    stage.play(chain, final)
    resolve = {host: [stage.server.address] for host in gen.HOSTS}
    result = gen.run([stage.server.address], repeat=1, resolve=resolve)
    target = Target(gen.NAME, gen.KEYAUTH_TOKEN, gen.KEYAUTH)
    report = analyse(target, [VantageRun("outside:local", "outside", False, result)])
    expected = "pass" if gen.boulder_accepts(chain, final) else "fail"
    got = report.verdicts["acme-ca"]
    if got != expected:
        return f"disagree: expected {expected}, got {got}"
    failing = expected == "fail"
    errors = any(f.sev is Severity.ERROR for f in report.findings)
    if failing and (report.ok or not errors or report.root_cause is None):
        return "invariant broken: a failing verdict, but ok / no error / no root cause"
    return f"agree ({expected})"


if __name__ == "__main__":
    raise SystemExit(main())
