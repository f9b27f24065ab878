"""``lookup_async`` gives what ``lookup`` gives, case by case, against a DNS server on
127.x; and a run's CAA cache asks a parent once for many lookups in flight."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from dnslib import CNAME, QTYPE, RR, DNSRecord
from dnslib import A as A_

from acmelb.doctor import resolution
from acmelb.doctor.resolution import CaaCache, DnsResult, lookup, lookup_async
from tests.diagnose.dnsserver import DnsServer, Zone


class RichDnsServer(DnsServer):
    """The test server, plus CNAME chains, truncated UDP answers (the full one over TCP,
    on the same port) and dropped queries."""

    def __init__(self, zone: Zone) -> None:
        super().__init__(zone)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind((self.address, self.port))
        self.tcp.listen(16)
        self.tcp_queries = 0
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                reply = self.answer_udp(data)
                if reply is not None:
                    self.sock.sendto(reply, peer)
            except Exception:
                continue

    def answer_udp(self, data: bytes) -> bytes | None:
        entry = self.zone.get(str(DNSRecord.parse(data).q.qname).rstrip(".").lower(), {})
        if entry.get("drop"):
            self.queries.append(("dropped", ""))
            return None
        if entry.get("truncate"):
            req = DNSRecord.parse(data)
            self.queries.append((str(req.q.qname).rstrip(".").lower(), QTYPE[req.q.qtype]))
            reply = req.reply()
            reply.header.tc = 1
            return bytes(reply.pack())
        return self.answer(data)

    def answer(self, data: bytes) -> bytes:
        req = DNSRecord.parse(data)
        qname = str(req.q.qname).rstrip(".").lower()
        target = self.zone.get(qname, {}).get("CNAME")
        if target is None:
            return super().answer(data)
        self.queries.append((qname, QTYPE[req.q.qtype]))
        reply = req.reply()
        reply.add_answer(RR(qname, QTYPE.CNAME, rdata=CNAME(target), ttl=60))
        followed = DNSRecord.question(target, QTYPE[req.q.qtype]).pack()
        for rr in DNSRecord.parse(self.answer(followed)).rr:  # the chain, as authority
            reply.add_answer(rr)
        return bytes(reply.pack())

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                self._answer_tcp(conn)

    def _answer_tcp(self, conn: socket.socket) -> None:
        try:
            (size,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
            reply = self.answer(conn.recv(size, socket.MSG_WAITALL))
            self.tcp_queries += 1
            conn.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, struct.error):
            return

    def close(self) -> None:
        super().close()
        self.tcp.close()


ZONE: Zone = {
    "www.shop.test": {"A": ["198.51.100.7"], "AAAA": ["2001:db8::7"]},
    "shop.test": {"CAA": [(0, "issue", "pki.goog"), (0, "issuewild", "letsencrypt.org")]},
    "deep.a.b.ok.test": {"A": ["198.51.100.8"]},
    "ok.test": {"CAA": [(0, "issue", "letsencrypt.org")]},
    "crit.test": {"A": ["198.51.100.9"], "CAA": [(128, "tbs", "x")]},
    "broken.test": {"rcode": "SERVFAIL"},
    "refused.test": {"rcode": "REFUSED"},
    "notimp.test": {"rcode": "NOTIMP"},
    "alias.ok.test": {"CNAME": "hop.ok.test"},
    "hop.ok.test": {"CNAME": "deep.a.b.ok.test"},
    "big.ok.test": {"truncate": True},
    "silent.test": {"drop": True},
    "caa-fails.test": {"A": ["198.51.100.10"]},
    "x.caa-fails.test": {"A": ["198.51.100.11"]},
}

# each case: the name, and what the blocking lookup must show for it
CASES: list[tuple[str, str]] = [
    ("www.shop.test", "caa at the parent"),
    ("deep.a.b.ok.test", "caa three levels up"),
    ("crit.test", "caa at the name"),
    ("gone.test", "nxdomain"),
    ("broken.test", "servfail"),
    ("refused.test", "refused"),
    ("notimp.test", "servfail"),
    ("ok.test", "nodata"),
    ("alias.ok.test", "cname chain"),
    ("big.ok.test", "truncated: tcp"),
    ("silent.test", "timeout"),
    ("a..b.test", "invalid name"),
    ("x" * 64 + ".test", "invalid name"),
    ("localhost", "one label: no caa"),
    ("www.shop.test.", "absolute name"),
]


@pytest.fixture
def dns() -> Iterator[RichDnsServer]:
    d = RichDnsServer(ZONE)
    yield d
    d.close()


def same(r: DnsResult) -> str:
    """Timings out of the error texts (a timeout's message says how long it waited)."""
    return re.sub(r"\d+\.\d+ seconds", "N seconds", repr(r))


def check_case(r: DnsResult, what: str) -> None:
    """The case does exercise what it claims (else the comparison proves little)."""
    if what.startswith("caa"):
        assert r.caa is not None and r.caa.records and not r.caa.error
    elif what in ("nxdomain", "servfail", "refused", "nodata", "timeout"):
        assert r.a.status == what and r.aaaa.status == what
    elif what == "cname chain":
        assert r.a.addresses == ["198.51.100.8"] and r.caa is not None
        assert r.caa.owner == "ok.test"
    elif what == "truncated: tcp":
        assert r.a.status == "nodata"  # answered over TCP, not an error
    elif what == "invalid name":
        assert r.a.status == "error" and r.a.error
    elif what == "one label: no caa":
        assert r.caa is not None and r.caa.owner is None


@pytest.mark.parametrize(("name", "what"), CASES)
def test_async_lookup_is_the_blocking_lookup(dns: RichDnsServer, name: str, what: str) -> None:
    server = (dns.address, dns.port)
    blocking = lookup(name, server, timeout=0.3)
    check_case(blocking, what)
    assert same(asyncio.run(lookup_async(name, server, timeout=0.3))) == same(blocking)
    if what == "truncated: tcp":
        assert dns.tcp_queries == 2 * 3  # A, AAAA, CAA: each way


def test_both_without_caa_and_with_a_cache(dns: RichDnsServer) -> None:
    server = (dns.address, dns.port)
    for name in ("www.shop.test", "deep.a.b.ok.test", "broken.test"):
        blocking = lookup(name, server, timeout=0.3, caa=False)
        assert blocking.caa is None
        assert asyncio.run(lookup_async(name, server, timeout=0.3, caa=False)) == blocking
    blocking_cache, async_cache = CaaCache(), CaaCache()
    for name in ("deep.a.b.ok.test", "alias.ok.test", "www.shop.test"):
        blocking = lookup(name, server, timeout=0.3, caa_cache=blocking_cache)
        async_result = lookup_async(name, server, timeout=0.3, caa_cache=async_cache)
        assert asyncio.run(async_result) == blocking


def test_caa_failure_at_a_parent_is_the_same(dns: RichDnsServer) -> None:
    server = (dns.address, dns.port)
    dns.zone["caa-fails.test"]["rcode"] = "SERVFAIL"  # the parent's CAA set cannot be read
    blocking = lookup("x.caa-fails.test", server, timeout=0.3)
    assert blocking.caa is not None and blocking.caa.error
    assert blocking.caa.owner == "caa-fails.test" and "SERVFAIL" in blocking.caa.error
    assert asyncio.run(lookup_async("x.caa-fails.test", server, timeout=0.3)) == blocking


@pytest.fixture
def system_resolver(dns: RichDnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The system's resolver configuration names the test server (never the network)."""
    from dns.resolver import BaseResolver

    def read(res: BaseResolver, f: Any) -> None:
        res.nameservers = [dns.address]
        res.port = dns.port

    monkeypatch.setattr(BaseResolver, "read_resolv_conf", read)
    monkeypatch.setattr(resolution, "_async_resolvers", {})


@pytest.mark.parametrize(
    "name", ["www.shop.test", "gone.test", "broken.test", "alias.ok.test", "a..b.test"]
)
def test_no_server_uses_the_system_configuration(
    dns: RichDnsServer, system_resolver: None, name: str
) -> None:
    blocking = lookup(name, None, timeout=0.3)
    assert blocking.server is None
    assert asyncio.run(lookup_async(name, None, timeout=0.3)) == blocking
    assert any(q[0] == name.lower() for q in dns.queries) or ".." in name


@pytest.fixture
def fleet() -> Iterator[DnsServer]:
    zone: Zone = {f"n{i}.shared.test": {"A": [f"198.51.100.{i + 1}"]} for i in range(200)}
    zone["shared.test"] = {"CAA": [(0, "issue", "letsencrypt.org")]}
    d = DnsServer(zone)
    yield d
    d.close()


def fleet_names() -> list[str]:
    return [f"n{i}.shared.test" for i in range(200)]


async def all_at_once(server: tuple[str, int], cache: CaaCache | None) -> list[DnsResult]:
    return list(
        await asyncio.gather(*(lookup_async(n, server, 2.0, True, cache) for n in fleet_names()))
    )


def test_a_parent_is_asked_once_for_lookups_in_flight(fleet: DnsServer) -> None:
    server = (fleet.address, fleet.port)
    results = asyncio.run(all_at_once(server, CaaCache()))
    assert fleet.queries.count(("shared.test", "CAA")) == 1
    assert len(fleet.queries) == 200 * 3 + 1  # A, AAAA, own CAA a name; the parent once
    assert all(r.caa is not None and r.caa.owner == "shared.test" for r in results)
    assert results == [lookup(n, server, 2.0) for n in fleet_names()]  # no cache: same results


def test_without_a_cache_every_lookup_asks_the_parent(fleet: DnsServer) -> None:
    asyncio.run(all_at_once((fleet.address, fleet.port), None))
    assert fleet.queries.count(("shared.test", "CAA")) == 200


def test_a_failed_parent_is_asked_again_by_later_lookups(fleet: DnsServer) -> None:
    server = (fleet.address, fleet.port)
    fleet.zone["shared.test"]["rcode"] = "SERVFAIL"
    cache = CaaCache()
    results = asyncio.run(all_at_once(server, cache))
    assert all(r.caa is not None and r.caa.error for r in results)
    asked = fleet.queries.count(("shared.test", "CAA"))
    assert asked < 200  # lookups in flight together share even a failure ...
    asyncio.run(lookup_async("n0.shared.test", server, 2.0, True, cache))
    assert fleet.queries.count(("shared.test", "CAA")) == asked + 1  # ... later ones do not


def test_the_cache_is_shared_by_threads_too(fleet: DnsServer) -> None:
    server = (fleet.address, fleet.port)
    cache = CaaCache()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda n: lookup(n, server, 2.0, True, cache), fleet_names()))
    assert fleet.queries.count(("shared.test", "CAA")) <= 16  # at most one per thread
    assert results == asyncio.run(all_at_once(server, CaaCache()))


# -- the asyncio transport: one socket for the lookups in flight -----------------------------


class PeerDnsServer(DnsServer):
    """The test server, recording each query's source (address, port) and id; answers
    can be held back (``delay``: name -> seconds) and preceded by ``extra(data, peer)``
    datagrams."""

    def __init__(self, zone: Zone) -> None:
        super().__init__(zone)
        self.peers: list[tuple[str, int]] = []
        self.ids: list[int] = []
        self.delay: dict[str, float] = {}
        self.sent_late: list[str] = []

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            try:
                self.peers.append(peer)
                self.ids.append(DNSRecord.parse(data).header.id)
                self.extra(data, peer)
                reply = self.answer(data)
                qname = str(DNSRecord.parse(data).q.qname).rstrip(".").lower()
                if qname in self.delay:
                    threading.Timer(self.delay[qname], self._late, (reply, peer, qname)).start()
                else:
                    self.sock.sendto(reply, peer)
            except Exception:
                continue

    def _late(self, reply: bytes, peer: tuple[str, int], qname: str) -> None:
        try:
            self.sock.sendto(reply, peer)
            self.sent_late.append(qname)
        except OSError:
            pass

    def extra(self, data: bytes, peer: tuple[str, int]) -> None:
        pass


@pytest.fixture
def peers() -> Iterator[PeerDnsServer]:
    zone: Zone = {f"n{i}.shared.test": {"A": [f"198.51.100.{i + 1}"]} for i in range(200)}
    zone["shared.test"] = {"CAA": [(0, "issue", "letsencrypt.org")]}
    d = PeerDnsServer(zone)
    yield d
    d.close()


def test_lookups_in_flight_share_one_socket(peers: PeerDnsServer) -> None:
    server = (peers.address, peers.port)
    results = asyncio.run(all_at_once(server, CaaCache()))
    assert len(peers.peers) == 200 * 3 + 1
    assert len(set(peers.peers)) == 1  # one socket for the 200 lookups
    assert results == [lookup(n, server, 2.0) for n in fleet_names()]
    assert not any(resolution._endpoints.values())  # the last lookup out closed it


def test_questions_in_flight_are_bounded(
    peers: PeerDnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resolution, "MAX_QUESTIONS_IN_FLIGHT", 5)
    server = (peers.address, peers.port)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            for endpoints in resolution._endpoints.values():
                for endpoint in endpoints.values():
                    most = max(most, len(endpoint.active))
            await asyncio.sleep(0)

    async def run() -> list[DnsResult]:
        watcher = asyncio.create_task(watch())
        try:
            return await all_at_once(server, None)
        finally:
            watcher.cancel()

    results = asyncio.run(run())
    assert 0 < most <= 5
    assert results == [lookup(n, server, 2.0) for n in fleet_names()]


def test_strays_and_other_sources_are_ignored(
    peers: PeerDnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each answer: the same answer with another address from another port of the
    server's host (a spoofing attempt), one with another id, and garbage. (Fewer
    questions in flight: four datagrams an answer must fit the socket's buffer.)"""
    monkeypatch.setattr(resolution, "MAX_QUESTIONS_IN_FLIGHT", 32)
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind((peers.address, 0))

    def extra(data: bytes, peer: tuple[str, int]) -> None:
        request = DNSRecord.parse(data)
        forged = request.reply()
        forged.add_answer(RR(request.q.qname, QTYPE.A, rdata=A_("203.0.113.66"), ttl=60))
        if request.q.qtype == QTYPE.A:
            forger.sendto(forged.pack(), peer)  # the right id and question, another source
        stray = DNSRecord.parse(peers.answer(data))
        stray.header.id = (request.header.id + 1) % 65536
        peers.sock.sendto(stray.pack(), peer)  # the server's, with an id nobody asked
        peers.sock.sendto(data[:2] + b"\x80garbage", peer)  # the id asked, not a message

    peers.extra = extra  # type: ignore[method-assign]
    server = (peers.address, peers.port)
    try:
        results = asyncio.run(all_at_once(server, CaaCache()))
        assert [(r.a.addresses, r.a.status) for r in results] == [
            ([f"198.51.100.{i + 1}"], "ok") for i in range(200)
        ]
        peers.queries.clear()
        assert results == [lookup(n, server, 2.0) for n in fleet_names()]
    finally:
        forger.close()


def test_a_late_answer_after_a_timeout_is_dropped(peers: PeerDnsServer) -> None:
    """n0's answers come after its lookup timed out, while n1's lookup is still in flight
    on the same socket: the late datagrams are read and dropped."""
    server = (peers.address, peers.port)
    peers.delay = {"n0.shared.test": 0.4, "n1.shared.test": 0.8}

    async def both() -> list[DnsResult]:
        return list(
            await asyncio.gather(
                lookup_async("n0.shared.test", server, 0.2, caa=False),
                lookup_async("n1.shared.test", server, 2.0, caa=False),
            )
        )

    slow, later = asyncio.run(both())
    assert peers.sent_late[:2] == ["n0.shared.test", "n0.shared.test"]  # before n1's
    assert slow.a.status == "timeout" and slow.aaaa.status == "timeout"
    assert later.a.addresses == ["198.51.100.2"]
    peers.delay = {"n0.shared.test": 0.4}
    assert same(slow) == same(lookup("n0.shared.test", server, 0.2, caa=False))


def test_ids_are_unique_among_the_questions_in_flight(
    peers: PeerDnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every query is given id 7 at first (the same name three times, without a cache:
    the same questions too): the endpoint gives each question in flight its own id."""
    ids = iter([7] * 40 + list(range(100, 1000)))
    monkeypatch.setattr(resolution, "_random_id", lambda: next(ids))
    server = (peers.address, peers.port)
    names = ["n0.shared.test"] * 3 + [f"n{i}.shared.test" for i in range(1, 6)]

    async def run() -> list[DnsResult]:
        return list(await asyncio.gather(*(lookup_async(n, server, 2.0) for n in names)))

    results = asyncio.run(run())
    first = len(names) * 3  # A, AAAA and own CAA of each, all sent before any answer
    assert len(set(peers.ids[:first])) == first
    assert 7 in peers.ids
    monkeypatch.undo()
    assert results == [lookup(n, server, 2.0) for n in names]
