"""A fast authoritative DNS server for the fleet benchmark (UDP, one event loop, dnslib).

acmelb.lab.dnsserver re-reads its zone and rebuilds its name index on every query and
starts a thread per packet: right for tests that rewrite records, too slow to stand for
a real resolver under a 1,000-name fleet (it became the bottleneck). This one loads the
zone once: ``{"names": {"NAME": {"A": [...], "AAAA": [...]}}}``; names not in it are
NXDOMAIN, other types of a known name are NOERROR with no answer.

    python benchmarks/_dns.py --listen 127.0.0.1:PORT --zone zone.json   # prints "ready"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord


class Server(asyncio.DatagramProtocol):
    def __init__(self, zone: dict[str, Any]) -> None:
        self.names = {k.rstrip(".").lower(): v for k, v in zone.get("names", {}).items()}
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # a malformed packet gets no answer
            return
        reply = request.reply()
        reply.header.aa = 1
        qname = str(request.q.qname)
        entry = self.names.get(qname.rstrip(".").lower())
        qtype = QTYPE[request.q.qtype]
        if entry is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif qtype in ("A", "AAAA"):
            for address in entry.get(qtype, []):
                rdata = A(address) if qtype == "A" else AAAA(address)
                reply.add_answer(RR(qname, getattr(QTYPE, qtype), rdata=rdata, ttl=60))
        self.transport.sendto(reply.pack(), addr)


async def serve(host: str, port: int, zone: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Server(zone), local_addr=(host, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--zone", required=True)
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    with open(a.zone) as fh:
        zone = json.load(fh)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), zone))


if __name__ == "__main__":
    main()
