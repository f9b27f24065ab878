"""The fleet's shortcuts past dnspython's object model (``resolution._Query``,
``resolution._plain_reply``) decide exactly what dnspython would."""

from __future__ import annotations

import multiprocessing
import os
import time

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from acmelb.doctor import resolution
from acmelb.doctor.resolution import _NO_DATA, _make_query, _plain_reply, _Query, _read


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "CAA", "CNAME", "TXT"])
@pytest.mark.parametrize("name", ["n5.fleet.test", "Mixed.Case.Example", "xn--bcher-kva.test."])
def test_the_query_is_dnspythons(name: str, rdtype: str) -> None:
    query = _make_query(name, rdtype)
    made = dns.message.make_query(name, rdtype)
    assert query.message.question == made.question and query.message.flags == made.flags
    assert query.to_wire() == query.message.to_wire()
    assert query.to_wire()[2:] == made.to_wire()[2:]  # the id apart: a random one each
    for _ in range(5):  # a retry's new id
        query.set_random_id()
        assert query.message.id == query.id
        assert query.to_wire() == query.message.to_wire()


def _reply(query: _Query, *answers: str, **changes: object) -> bytes:
    """A reply to ``query`` in wire form: ``answers`` (record texts of the type asked)
    or no data (the zone's SOA in authority), changed as ``changes`` say."""
    request = query.message
    reply = dns.message.make_response(request)
    rdtype = request.question[0].rdtype
    if answers:
        reply.answer.append(
            dns.rrset.from_text(request.question[0].name, 300, "IN", rdtype, *answers)
        )
    if not answers or changes.get("authority"):
        soa = "ns.fleet.test. h.fleet.test. 1 2 3 4 5"
        reply.authority.append(dns.rrset.from_text("fleet.test.", 300, "IN", "SOA", soa))
    if "rcode" in changes:
        reply.set_rcode(changes["rcode"])  # type: ignore[arg-type]
    if changes.get("edns"):
        reply.use_edns(0)
    return reply.to_wire()


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


Case = tuple[str, bytes, _Query, str | None]


def _no_data_cases() -> list[Case]:
    """(what, datagram, query, what the shortcut reads: "no data", "answer" or None
    for dnspython to read)"""
    request = _make_query("n5.fleet.test", "AAAA")
    plain = _reply(request)
    other = _make_query("n6.fleet.test", "AAAA")
    other.id = request.id
    other_type = _make_query("n5.fleet.test", "A")
    other_type.id = request.id
    two = dns.message.make_response(request.message)
    two.question.append(two.question[0])
    header_flags = int.from_bytes(plain[2:4], "big")
    notify = header_flags & ~0x7800 | dns.opcode.to_flags(dns.opcode.NOTIFY)
    other_id = b"\0\0" if request.id else b"\0\1"
    cases: list[tuple[str, bytes, str | None]] = [
        ("no data, the SOA in authority", plain, "no data"),
        ("the question in other case", plain.replace(b"fleet", b"FLeeT", 1), "no data"),
        ("with EDNS", _reply(request, edns=True), "no data"),
        ("truncated", _patched(plain, 2, bytes([plain[2] | 0x02])), None),
        ("NXDOMAIN", _reply(request, rcode=dns.rcode.NXDOMAIN), None),
        ("SERVFAIL", _reply(request, rcode=dns.rcode.SERVFAIL), None),
        ("another id", _patched(plain, 0, other_id), None),
        ("another name", _reply(other), None),
        ("another type", _reply(other_type), None),
        ("not a response", _patched(plain, 2, bytes([plain[2] & 0x7F])), None),
        ("opcode NOTIFY", _patched(plain, 2, notify.to_bytes(2, "big")), None),
        ("cut short", plain[:20], None),
        ("two questions", two.to_wire(), None),
        ("garbage", b"\0" * 40, None),
    ]
    return [(what, data, request, kind) for what, data, kind in cases]


def _answer_cases() -> list[Case]:
    a_request = _make_query("n5.fleet.test", "A")
    aaaa_request = _make_query("n5.fleet.test", "AAAA")
    caa_request = _make_query("n5.fleet.test", "CAA")
    one = _reply(a_request, "192.0.2.1")
    cname = dns.message.make_response(a_request.message)
    cname.answer.append(dns.rrset.from_text("n5.fleet.test.", 300, "IN", "CNAME", "lb.fleet.test."))
    cname.answer.append(dns.rrset.from_text("lb.fleet.test.", 300, "IN", "A", "192.0.2.9"))
    a_cases: list[tuple[str, bytes, str | None]] = [
        ("one address", one, "answer"),
        ("three addresses", _reply(a_request, "192.0.2.3", "192.0.2.1", "192.0.2.2"), "answer"),
        ("the name in other case", one.replace(b"fleet", b"FLEET", 1), "answer"),
        ("with authority", _reply(a_request, "192.0.2.1", authority=True), None),
        ("with EDNS", _reply(a_request, "192.0.2.1", edns=True), None),
        ("a CNAME first", cname.to_wire(), None),
        ("trailing bytes", one + b"\0", None),
        ("cut short", one[:-1], None),
        ("a longer count", _patched(one, 6, b"\0\2"), None),
    ]
    return [
        *[(what, data, a_request, kind) for what, data, kind in a_cases],
        ("IPv6", _reply(aaaa_request, "2001:db8::1", "2001:db8::a"), aaaa_request, "answer"),
        ("CAA is dnspython's", _reply(caa_request, '0 issue "letsencrypt.org"'), caa_request, None),
    ]


def _dnspython_reads(data: bytes, request: dns.message.Message) -> object:
    """What the lookup takes from dnspython's reading: "no data", the answer RRset, or
    the reply (or None: not an answer) for anything else."""
    reply = _read(data, request)
    if not isinstance(reply, dns.message.QueryMessage) or reply.rcode() != dns.rcode.NOERROR:
        return reply
    if not reply.answer:
        return "no data"
    return reply.resolve_chaining().answer


CASES = _no_data_cases() + _answer_cases()


@pytest.mark.parametrize(("what", "data", "query", "kind"), CASES, ids=[c[0] for c in CASES])
def test_a_plain_reply_reads_as_dnspython_reads_it(
    what: str, data: bytes, query: _Query, kind: str | None
) -> None:
    shortcut = _plain_reply(data, query)
    if kind is None:
        assert shortcut is None, what
    elif kind == "no data":
        assert shortcut is _NO_DATA, what
        assert _dnspython_reads(data, query.message) == "no data", what
    else:
        expected = _dnspython_reads(data, query.message)
        assert isinstance(shortcut, dns.rrset.RRset), what
        assert shortcut == expected, what
        assert [r.address for r in shortcut] == [r.address for r in expected], what  # type: ignore[attr-defined]


def test_the_steps_take_the_shortcut_as_no_data() -> None:
    steps = resolution._question_steps(
        "127.0.0.1@53", 53, 2.0, _make_query("n5.fleet.test", "AAAA"), time.time()
    )
    need = steps.send(None)
    assert need[0] == "udp"
    with pytest.raises(StopIteration) as stop:
        steps.send(resolution._NO_DATA)
    assert stop.value.value is None


def test_query_ids_are_drawn_in_blocks_and_afresh_after_a_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    urandom = os.urandom

    def counted(n: int) -> bytes:
        calls.append(n)
        return urandom(n)

    resolution._forget_ids()
    monkeypatch.setattr(resolution.os, "urandom", counted)
    ids = [_make_query("n5.fleet.test", "A").id for _ in range(resolution._ID_BLOCK)]
    assert len(calls) == 1 and all(0 <= i < 65536 for i in ids) and len(set(ids)) > 400
    monkeypatch.setattr(resolution.os, "urandom", urandom)
    resolution._random_id()  # the pool is primed when the child is forked
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_ids, (8,))
    assert child != _ids(8)  # the child drew its own, not the parent's next ones


def _ids(count: int) -> list[int]:
    return [resolution._random_id() for _ in range(count)]
