"""The human form of ``acmelb cluster status`` (the CLI chooses where it goes)."""

from __future__ import annotations

import datetime
import time
from typing import TextIO

from acmelb.cluster.status import ClusterStatus


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return f"{datetime.datetime.fromtimestamp(epoch, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _ago(epoch: float) -> str:
    seconds = max(0.0, time.time() - epoch)
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def render_cluster_status(status: ClusterStatus, out: TextIO) -> None:
    print("store:", file=out)
    for endpoint, health in status.store.items():
        print(f"  {endpoint}  {health}", file=out)
    if not status.quorum:
        print(f"  NO QUORUM: {status.error}", file=out)
        return
    print(f"members ({len(status.members)} live):", file=out)
    for m in status.members:
        installed = ", ".join(f"{n} v{v}" for n, v in sorted(m.installed.items())) or "nothing"
        health = (
            "ok"
            if m.store_ok and not m.problems
            else "; ".join(f"{n}: {p}" for n, p in m.problems.items()) or "store unreachable"
        )
        print(
            f"  {m.member}  last seen {_ago(m.last_seen)}  installed: {installed}  "
            f"health: {health}",
            file=out,
        )
    print(f"certificates ({len(status.certificates)}):", file=out)
    for c in status.certificates:
        version = f"v{c.version}" if c.version is not None else "not issued yet"
        print(
            f"  {c.name} ({', '.join(c.names)})  {version}  not after {_when(c.not_after)}",
            file=out,
        )
        if c.renewal_window:
            print(
                f"    renewal window {_when(c.renewal_window[0])} .. {_when(c.renewal_window[1])}",
                file=out,
            )
        if c.lock_holder:
            print(f"    lock held by {c.lock_holder}", file=out)
        if c.pending_order:
            o = c.pending_order
            print(
                f"    pending order {o['order_url']} at step {o['step']}, started by "
                f"{o['started_by']} {_ago(o['started_at'])}",
                file=out,
            )
        behind = [m for m in status.members if m.installed.get(c.name) != c.version]
        if c.version is not None and behind:
            print(f"    not yet installed on: {', '.join(m.member for m in behind)}", file=out)
    print(
        "converged: every member serves every current version"
        if status.converged
        else "not converged yet",
        file=out,
    )
