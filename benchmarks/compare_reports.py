#!/usr/bin/env python3
"""Behaviour check for refactorings: the same fleet run on two trees must give equal JSON.

Starts one set of little servers (``tests/diagnose/servers.py``) on 127.0.40.x port 80,
each failing in its own way (404, 503, wrong content, whitespace, a large body,
another account's key, an empty reply, a reset, redirects good and bad, PROXY
protocol, a refused port, a read timeout, a CDN 403, a TLS port, chunked), and a
DNS server (``_dns.py``) publishing N names spread over them, plus names that are
NXDOMAIN, invalid, or resolve to an address not assumed public. Then runs
``acmelb diagnose --from-file NAMES --dns-server ... --json`` once with the package
from each tree (``PYTHONPATH=TREE/src``), strips timings, and compares the reports
name by name.

    # the tree before the change, as a worktree
    git worktree add --detach /tmp/before <commit>
    .venv/bin/python benchmarks/compare_reports.py --before /tmp/before [--after .]

Exit 0 when every report is equal, 1 with the first differences printed. Each tree
is run twice when ``--self-test`` is given, to show the fleet is deterministic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench as b

sys.path.insert(0, str(b.REPO))

from tests.diagnose import servers as s

TOKEN, KEY = s.KEYAUTH_TOKEN, s.KEYAUTH
NET = "127.0.40"
REFUSED = f"{NET}.250"  # nothing listens there
NOT_PUBLIC = "127.0.41.1"  # outside --assume-public: dns-reserved-address
# Keys that change from run to run without a change of behaviour.
TIMINGS = {"elapsed_ms"}


def behaviours() -> dict[str, Callable[[str], s.Handler]]:
    """One handler per behaviour; each gets the address it serves (for redirects)."""
    path = f"/.well-known/acme-challenge/{TOKEN}"
    ok = s.http_response(200, KEY)

    def redirect(status: int, location: str) -> bytes:
        return s.http_response(status, "", {"Location": location})

    return {
        "ok": lambda a: s.answer(200, KEY),
        "not-found": lambda a: s.answer(404, "not found"),
        "unavailable": lambda a: s.answer(503, "no healthy upstream"),
        "html": lambda a: s.answer(200, "<html><body>welcome</body></html>"),
        "whitespace": lambda a: s.answer(200, KEY + "\n"),
        "large": lambda a: s.answer(200, KEY + "x" * 300),
        "other-account": lambda a: s.answer(200, f"{TOKEN}.{s.OTHER_THUMB}"),
        "empty-reply": lambda a: s.close_at_once,
        "reset": lambda a: s.reset,
        "redirect-ok": lambda a: s.by_path({"/final": ok}, redirect(302, "/final")),
        "redirect-port": lambda a: s.answer(301, "", {"Location": f"http://{a}:8080{path}"}),
        "redirect-loop": lambda a: s.answer(302, "", {"Location": path}),
        "redirect-303": lambda a: s.by_path({"/final": ok}, redirect(303, "/final")),
        "redirect-https": lambda a: s.answer(301, "", {"Location": f"https://{a}{path}"}),
        "proxy": lambda a: s.proxy_required(s.answer(200, KEY)),
        "slow": lambda a: s.hang(2.5),
        "cdn-403": lambda a: s.answer(
            403, "Forbidden", {"Server": "cloudflare", "CF-RAY": "8a1b2c3d4e5f-FRA"}
        ),
        "tls-port": lambda a: s.answer(
            400, "The plain HTTP request was sent to HTTPS port", {"Server": "nginx"}
        ),
        "chunked": lambda a: s.chunked(KEY.encode()),
    }


@contextmanager
def fleet(count: int) -> Iterator[tuple[list[str], str]]:
    """The servers and the DNS server; yields (names, dns server address)."""
    kinds = list(behaviours().items())
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="acmelb-cmp-") as tmp:
        addresses: dict[str, str] = {}
        for i, (kind, make) in enumerate(kinds):
            address = f"{NET}.{i + 1}"
            stack.callback(s.Server(make(address), address=address).close)
            addresses[kind] = address
        stack.callback(s.Server(s.answer(200, KEY), address=NOT_PUBLIC).close)
        addresses["refused"] = REFUSED
        addresses["not-public"] = NOT_PUBLIC
        kinds_all = list(addresses)
        names, zone = [], {}
        special = ["nxdomain", "bad_label", "*.wild"]
        for i in range(count):
            if i % 25 < len(special):
                kind = special[i % 25]
                name = f"n{i}.{kind}.cmp.test"
            else:
                kind = kinds_all[i % len(kinds_all)]
                name = f"n{i}.{kind}.cmp.test"
                zone[name] = {"A": [addresses[kind]]}
            if kind == "*.wild":
                name = f"*.n{i}.cmp.test"
            names.append(name)
        zone_file = Path(tmp) / "zone.json"
        zone_file.write_text(json.dumps({"names": zone}))
        port = b.free_port()
        dns = subprocess.Popen(
            [
                b.PYTHON,
                str(b.HERE / "_dns.py"),
                "--listen",
                f"127.0.0.1:{port}",
                "--zone",
                str(zone_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        stack.callback(b.stop, dns)
        assert dns.stdout is not None
        if dns.stdout.readline().strip() != b"ready":
            raise RuntimeError("the DNS server did not start")
        yield names, f"127.0.0.1:{port}"


def run_tree(tree: Path, names: list[str], dns: str) -> list[dict[str, Any]]:
    """``acmelb diagnose`` with the package of ``tree``; the reports, timings stripped."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as fh:
        fh.write("".join(n + "\n" for n in names))
        fh.flush()
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        cmd = [
            b.PYTHON,
            "-m",
            "acmelb",
            "diagnose",
            "--from-file",
            fh.name,
            "--token",
            TOKEN,
            "--key",
            KEY,
            "--dns-server",
            dns,
            "--assume-public",
            f"{NET}.0/24",
            "--timeout",
            "1",
            "--repeat",
            "2",
            "--json",
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tree)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{tree}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return [
        strip(d) for d in sorted(parse_reports(proc.stdout), key=lambda d: names.index(d["name"]))
    ]


def parse_reports(text: str) -> list[dict[str, Any]]:
    """An array of reports (the engine before issue 13), or JSON Lines (after)."""
    try:
        docs: list[dict[str, Any]] = json.loads(text)
        return docs
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def differences(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    if len(before) != len(after):
        return [f"{len(before)} reports before, {len(after)} after"]
    out = []
    for x, y in zip(before, after, strict=True):
        if x != y:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            out.append(
                f"{x.get('name')}: differs in {', '.join(keys)}\n"
                + "\n".join(
                    f"  {k} before: {json.dumps(x.get(k))[:600]}\n"
                    f"  {k} after:  {json.dumps(y.get(k))[:600]}"
                    for k in keys
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the tree before the change")
    p.add_argument("--after", type=Path, default=b.REPO, help="the tree after (default: this)")
    p.add_argument("--names", type=int, default=200, help="names in the fleet (200)")
    p.add_argument("--save", type=Path, help="write both runs' reports to this directory")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="also run each tree twice: the fleet itself must be deterministic",
    )
    args = p.parse_args(argv)
    with fleet(args.names) as (names, dns):
        before = run_tree(args.before.resolve(), names, dns)
        after = run_tree(args.after.resolve(), names, dns)
        problems = differences(before, after)
        if args.self_test:
            problems += [
                f"before vs before: {d}"
                for d in differences(before, run_tree(args.before.resolve(), names, dns))
            ]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / "before.json").write_text(json.dumps(before, indent=1))
        (args.save / "after.json").write_text(json.dumps(after, indent=1))
    codes = sorted({f["code"] for d in before for f in d["findings"]})
    print(f"{len(before)} reports; finding codes seen: {', '.join(codes)}")
    for line in problems[:20]:
        print(line)
    print(f"{len(problems)} report(s) differ" if problems else "all reports equal")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
