"""A tiny in-process authoritative DNS server (dnslib) on a 127.x address, for tests."""

from __future__ import annotations

import socket
import threading
from typing import Any

from dnslib import AAAA, CAA, QTYPE, RCODE, RR, A, DNSRecord

from tests.diagnose.servers import loop_address

Zone = dict[str, dict[str, Any]]  # name -> {"A": [...], "AAAA": [...], "CAA": [(f, tag, v)],
#                                            "rcode": "NXDOMAIN" | "SERVFAIL" | "REFUSED"}


class DnsServer:
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.address = loop_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.address, 0))
        self.port: int = self.sock.getsockname()[1]
        self.queries: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def spec(self) -> str:
        return f"{self.address}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.sock.sendto(self.answer(data), peer)
            except Exception:  # a malformed packet: ignore it, like a real server would
                continue

    def answer(self, data: bytes) -> bytes:
        req = DNSRecord.parse(data)
        reply = req.reply()
        qname = str(req.q.qname).rstrip(".").lower()
        qtype = QTYPE[req.q.qtype]
        self.queries.append((qname, qtype))
        entry = self.zone.get(qname)
        if entry is None:
            # the parent exists (empty non-terminal) when a child is in the zone
            if not any(k.endswith("." + qname) for k in self.zone):
                reply.header.rcode = RCODE.NXDOMAIN
            return bytes(reply.pack())
        if "rcode" in entry:
            reply.header.rcode = getattr(RCODE, entry["rcode"])
            return bytes(reply.pack())
        for addr in entry.get("A", []) if qtype == "A" else []:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(addr), ttl=60))
        for addr in entry.get("AAAA", []) if qtype == "AAAA" else []:
            reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA(addr), ttl=60))
        for flags, tag, value in entry.get("CAA", []) if qtype == "CAA" else []:
            reply.add_answer(RR(qname, QTYPE.CAA, rdata=CAA(flags, tag, value), ttl=60))
        return bytes(reply.pack())

    def close(self) -> None:
        self.sock.close()
