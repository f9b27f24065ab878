"""``acmelb certificates``: list stored certificates."""

from __future__ import annotations

import argparse
import datetime
from typing import TYPE_CHECKING, Any

from acmelb.cli.common import add_state_dir, print_json, state_dir

if TYPE_CHECKING:
    from acmelb.acme.ari import AriState
    from acmelb.acme.issuance import CertificateInfo


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "certificates",
        help="list stored certificates with expiry, renewal timing and paths",
        description="Each stored certificate: its names, expiry, paths, and when it renews: "
        "the window (from the CA's ARI, or from the lifetime when the CA has none), the "
        "moment chosen in it, the next ARI poll and the CA's explanation URL, as of the "
        "last `acmelb renew` (this command asks the CA nothing).",
    )
    parser.add_argument("--json", action="store_true")
    add_state_dir(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from acmelb.acme.issuance import inspect_certificates, stored_timing
    from acmelb.acme.store import Store

    store = Store(state_dir(args))
    infos = inspect_certificates(store)
    timings = {i.name: stored_timing(store, i.name) for i in infos}
    if args.json:
        print_json([_json(i, timings[i.name]) for i in infos])
        return 0
    if not infos:
        print(f"No certificates in {store.root}.")
        return 0
    for info in infos:
        print(f"{info.name}")
        print(f"  names:     {' '.join(info.names)}")
        if info.problem:
            print(f"  problem:   {info.problem}")
        else:
            assert info.not_after is not None and info.days_left is not None
            print(f"  expires:   {info.not_after:%Y-%m-%d %H:%M} UTC ({info.days_left:.0f} days)")
        timing = timings[info.name]
        if timing is not None:
            from acmelb.acme.ari import describe

            print(f"  renewal:   {describe(timing)}")
        print(f"  fullchain: {info.live_dir / 'fullchain.pem'}")
        print(f"  privkey:   {info.live_dir / 'privkey.pem'}")
    return 0


def _json(info: CertificateInfo, timing: AriState | None) -> dict[str, Any]:
    return {
        "name": info.name,
        "names": list(info.names),
        "not_after": info.not_after.isoformat() if info.not_after else None,
        "days_left": round(info.days_left, 2) if info.days_left is not None else None,
        "fullchain": str(info.live_dir / "fullchain.pem"),
        "privkey": str(info.live_dir / "privkey.pem"),
        "problem": info.problem,
        "renewal": None if timing is None else _timing_json(timing),
    }


def _timing_json(timing: AriState) -> dict[str, Any]:
    def iso(epoch: float) -> str:
        return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat()

    return {
        "source": timing.source,
        "window": {"start": iso(timing.window.start), "end": iso(timing.window.end)},
        "renew_after": iso(timing.moment),
        "next_ari_poll": iso(timing.next_poll) if timing.next_poll else None,
        "explanation_url": timing.explanation_url,
        "warning": timing.warning,
        "cert_id": timing.cert_id or None,
    }
