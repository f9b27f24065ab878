"""The fleet's two shortcuts past dnspython's object model (``resolution._query_wire``,
``resolution._plain_no_data``) decide exactly what dnspython would."""

from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import pytest

from acmelb import resolution
from acmelb.resolution import _make_query, _plain_no_data, _query_wire, _read


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "CAA", "CNAME", "TXT"])
@pytest.mark.parametrize("name", ["n5.fleet.test", "Mixed.Case.Example", "xn--bcher-kva.test."])
def test_the_query_wire_is_dnspythons(name: str, rdtype: str) -> None:
    _qname, request, question = _make_query(name, rdtype)
    assert _query_wire(request, question) == request.to_wire()
    for _ in range(5):  # a retry's new id
        request.set_random_id()
        assert _query_wire(request, question) == request.to_wire()


def _reply(request: dns.message.Message, **changes: object) -> bytes:
    """A reply to ``request`` in wire form: no data (the zone's SOA in authority) unless
    ``changes`` say otherwise."""
    reply = dns.message.make_response(request)
    reply.authority.append(
        dns.rrset.from_text(
            "fleet.test.", 300, "IN", "SOA", "ns.fleet.test. h.fleet.test. 1 2 3 4 5"
        )
    )
    if changes.get("answer"):
        reply.answer.append(
            dns.rrset.from_text(request.question[0].name, 300, "IN", "A", "192.0.2.1")
        )
    if "rcode" in changes:
        reply.set_rcode(changes["rcode"])  # type: ignore[arg-type]
    if changes.get("edns"):
        reply.use_edns(0)
    return reply.to_wire()


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _dnspython_says_no_data(data: bytes, request: dns.message.Message) -> bool:
    reply = _read(data, request)
    return (
        isinstance(reply, dns.message.Message)
        and reply.rcode() == dns.rcode.NOERROR
        and not reply.answer
    )


def _cases() -> list[tuple[str, bytes, dns.message.Message, bytes, bool]]:
    """(what, datagram, request, question, the plain no-data reply?)"""
    _q, request, question = _make_query("n5.fleet.test", "AAAA")
    plain = _reply(request)
    other = _make_query("n6.fleet.test", "AAAA")[1]
    other.id = request.id
    other_type = _make_query("n5.fleet.test", "A")[1]
    other_type.id = request.id
    two = dns.message.make_response(request)
    two.question.append(two.question[0])
    header_flags = int.from_bytes(plain[2:4], "big")
    notify = header_flags & ~0x7800 | dns.opcode.to_flags(dns.opcode.NOTIFY)
    return [
        ("no data, the SOA in authority", plain, request, question, True),
        (
            "the question in other case",
            plain.replace(b"fleet", b"FLeeT", 1),
            request,
            question,
            True,
        ),
        ("with EDNS", _reply(request, edns=True), request, question, True),
        ("an answer", _reply(request, answer=True), request, question, False),
        ("truncated", _patched(plain, 2, bytes([plain[2] | 0x02])), request, question, False),
        ("NXDOMAIN", _reply(request, rcode=dns.rcode.NXDOMAIN), request, question, False),
        ("SERVFAIL", _reply(request, rcode=dns.rcode.SERVFAIL), request, question, False),
        (
            "another id",
            _patched(plain, 0, b"\0\0" if request.id else b"\0\1"),
            request,
            question,
            False,
        ),
        ("another name", _reply(other), request, question, False),
        ("another type", _reply(other_type), request, question, False),
        ("not a response", _patched(plain, 2, bytes([plain[2] & 0x7F])), request, question, False),
        ("opcode NOTIFY", _patched(plain, 2, notify.to_bytes(2, "big")), request, question, False),
        ("cut short", plain[:20], request, question, False),
        ("two questions", two.to_wire(), request, question, False),
        ("garbage", b"\0" * 40, request, question, False),
    ]


@pytest.mark.parametrize(
    ("what", "data", "request_", "question", "plain"),
    _cases(),
    ids=lambda c: c if isinstance(c, str) else "",
)
def test_a_plain_no_data_reply_is_what_dnspython_reads(
    what: str, data: bytes, request_: dns.message.Message, question: bytes, plain: bool
) -> None:
    assert _plain_no_data(data, request_, question) is plain, what
    if plain:  # the shortcut concludes what dnspython's reading does
        assert _dnspython_says_no_data(data, request_), what


def test_the_steps_take_the_shortcut_as_no_data() -> None:
    qname, request, _question = _make_query("n5.fleet.test", "AAAA")
    steps = resolution._question_steps("127.0.0.1@53", 53, 2.0, qname, request, time.time())
    need = steps.send(None)
    assert need[0] == "udp"
    with pytest.raises(StopIteration) as stop:
        steps.send(resolution._NO_DATA)
    assert stop.value.value is None
