"""Name resolution the way a CA does it: A, AAAA and CAA with dnspython.

``lookup(name, dns_server)`` returns a ``DnsResult`` (addresses, CAA set and
the errors met on the way) and never raises for DNS trouble: DNS trouble is
evidence. ``lookup_async`` is the same lookup for an asyncio event loop: both run one
I/O-free description of the lookup (``_lookup_steps``). Reserved-range classification
and CAA (RFC 8659) evaluation live here too.

dnspython (~60 ms to import) is imported when a lookup first needs it: a run whose
names are all given with ``--resolve`` never does. dnspython makes the names, the
records and the resolver's exceptions and reads every reply but the plainest: a reply
saying "no data", or holding only addresses at the name asked, is read on its bytes
(``_plain_reply``), and a query is rendered from its question's bytes (``_Query``);
both conclude what dnspython's reading does (tests/diagnose/test_dns_wire.py) at a
fraction of the cost, which is most of a fleet's DNS work (benchmarks/README.md).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import os
import socket
import struct
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast

from acmelb.errors import UsageError

if TYPE_CHECKING:
    import asyncio

    import dns.asyncresolver
    import dns.exception
    import dns.message
    import dns.name
    import dns.resolver
    import dns.rrset

DEFAULT_CA_IDENTITY = "letsencrypt.org"


@dataclass
class RRsetResult:
    rdtype: str
    addresses: list[str] = field(default_factory=list)
    status: str = "ok"  # ok | nxdomain | nodata | servfail | refused | timeout | error
    error: str | None = None


@dataclass
class CaaRecord:
    flags: int
    tag: str
    value: str
    owner: str


@dataclass
class CaaResult:
    owner: str | None  # the name whose CAA set applies (NAME or the closest parent)
    records: list[CaaRecord] = field(default_factory=list)
    error: str | None = None


@dataclass
class DnsResult:
    name: str
    server: str | None
    a: RRsetResult
    aaaa: RRsetResult
    caa: CaaResult | None

    @property
    def addresses(self) -> list[str]:
        return self.aaaa.addresses + self.a.addresses


def parse_dns_server(text: str) -> tuple[str, int]:
    """``ADDRESS[:PORT]`` (IPv6 as ``[ADDR]:PORT`` or bare) -> (address, port)."""
    raw = text.strip()
    host, port = raw, 53
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise UsageError(f"--dns-server {text!r}: missing ']'")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise UsageError(f"--dns-server {text!r}: expected [ADDRESS]:PORT")
            port = int(rest[1:])
    elif raw.count(":") == 1:
        host, p = raw.split(":")
        if not p.isdigit():
            raise UsageError(f"--dns-server {text!r}: port must be a number")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise UsageError(f"--dns-server {text!r}: not an IP address") from exc
    if not 0 < port < 65536:
        raise UsageError(f"--dns-server {text!r}: port out of range")
    return host, port


def make_resolver(server: tuple[str, int] | None, timeout: float) -> dns.resolver.Resolver:
    import dns.resolver

    if server is None:
        try:
            res = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = ["127.0.0.1"]
    else:
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [server[0]]
        res.port = server[1]
    res.lifetime = timeout
    res.timeout = timeout
    return res


# A question's answer RRset (None: no answer), or the exception dns.resolver.Resolver's
# resolve() raises for it.
Ask = Callable[[str, str], "dns.rrset.RRset | None"]


def _resolver_ask(res: dns.resolver.Resolver) -> Ask:
    def ask(name: str, rdtype: str) -> dns.rrset.RRset | None:
        return res.resolve(name, rdtype, raise_on_no_answer=False).rrset

    return ask


# -- one question, without I/O -----------------------------------------------------------------
#
# How ``dns.resolver.Resolver`` asks one nameserver, as steps: the steps yield an I/O need,
#   ("udp", request, timeout)  one UDP attempt: sent back the response, or the exception
#                              the attempt raised (``dns.exception.Timeout`` when none came,
#                              ``dns.message.Truncated`` for a truncated one)
#   ("tcp", request, timeout)  the same over TCP
#   ("sleep", seconds)         the pause before asking again: sent back None
# and return the answer RRset (None: no answer) or raise the resolver's exception. The
# blocking ``_Server`` and the asyncio ``_Endpoint`` do the I/O; the retries, the lifetime,
# TCP on truncation and the rcode mapping are written here once for both.

Need = tuple[Any, ...]
QuestionSteps = Generator[Need, Any, "dns.rrset.RRset | None"]
_NOT_MADE: Any = object()  # no first attempt made ahead of the steps
# An attempt's reply that says no data in its plainest form (``_plain_reply``): the
# drivers send it to the steps in place of the message dnspython would have read.
_NO_DATA: Any = object()


def parse_reply(data: bytes, request: dns.message.Message | None = None) -> dns.message.Message:
    """A reply as dnspython reads it (raising ``Truncated`` as the resolver asks). A
    NOERROR reply without answer records (no data) says all a lookup uses in its header
    and question: its authority section, the zone's SOA and the costliest record of a
    fleet's lookups to parse, is not read."""
    import dns.message

    nodata = len(data) >= 12 and not data[2] & 0x02 and not data[3] & 0x0F and data[6:8] == b"\0\0"
    keys = {"keyring": request.keyring, "request_mac": request.mac} if request is not None else {}
    return dns.message.from_wire(data, raise_on_truncation=True, question_only=nodata, **keys)


def _make_query(name: str, rdtype: str) -> _Query:
    """The resolver's query for a question (raises a DNS exception for a bad name)."""
    qname, name_wire = _query_name(name)
    code = _rdtype(rdtype)
    return _Query(qname, code, name_wire + _QUESTION_TAIL.pack(code, _IN))


@functools.lru_cache(maxsize=1024)
def _query_name(name: str) -> tuple[dns.name.Name, bytes]:
    """NAME as an absolute dnspython name and its wire form: made once for the three
    questions of a lookup."""
    import dns.name

    qname = dns.name.from_text(name, None)
    if not qname.is_absolute():
        qname = qname.concatenate(dns.name.root)
    wire = qname.to_wire()
    assert wire is not None  # no file given: the bytes
    return qname, wire


@functools.cache
def _rdtype(text: str) -> dns.rdatatype.RdataType:
    import dns.rdatatype

    return dns.rdatatype.RdataType.make(text)


_HEADER = struct.Struct("!HHHHHH")
_QUESTION_TAIL = struct.Struct("!HH")
_IN = 1  # dns.rdataclass.IN


# Query ids from the system's randomness (dnspython draws each from SystemRandom: a
# getrandom call a question), read 512 at a time; a forked process draws its own.
_ID_BLOCK = 512
_ids: Iterator[int] = iter(())


def _random_id() -> int:
    global _ids
    for query_id in _ids:
        return query_id
    _ids = iter(memoryview(os.urandom(2 * _ID_BLOCK)).cast("H").tolist())
    return next(_ids)


def _forget_ids() -> None:
    global _ids
    _ids = iter(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_ids)


class _Query:
    """A question's query as ``dns.message.make_query`` makes it (a random id, RD, one
    question; no EDNS, no TSIG), kept as its id and question bytes: a fleet sends three
    a name and reads most answers on the bytes (``_plain_reply``), so dnspython's
    message is made only when something needs it (``message``: TCP, a reply dnspython
    must read, the resolver's exceptions). ``to_wire`` gives the message's very bytes
    (tested), at a twentieth of its renderer's cost."""

    __slots__ = ("_message", "id", "qname", "question", "rdtype")
    flags = 0x0100  # dns.flags.RD, make_query's

    def __init__(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, question: bytes):
        self.qname, self.rdtype, self.question = qname, rdtype, question
        self._message: dns.message.QueryMessage | None = None
        self.id = 0
        self.set_random_id()

    def set_random_id(self) -> None:
        """A new id from the system's randomness, as ``Message.set_random_id`` draws it."""
        self.id = _random_id()

    def to_wire(self) -> bytes:
        return _HEADER.pack(self.id, self.flags, 1, 0, 0, 0) + self.question

    @property
    def message(self) -> dns.message.QueryMessage:
        """dnspython's message of this query, with its current id."""
        import dns.message
        import dns.rdataclass

        if self._message is None:
            self._message = dns.message.make_query(
                self.qname, self.rdtype, dns.rdataclass.IN, id=self.id
            )
        self._message.id = self.id
        return self._message


def _plain_reply(data: bytes, request: _Query) -> Any:
    """What the lookup needs from a reply in its plainest form, read on the bytes:
    ``_NO_DATA`` for no data, the answer RRset for addresses straight at the name asked,
    None for anything else (dnspython reads it). Most of a fleet's replies are plain;
    both readings conclude the same (tests/diagnose/test_dns_wire.py)."""
    if not _plain_header(data, request):
        return None
    if data[6:8] == b"\0\0":
        return _NO_DATA
    return _plain_addresses(data, request)


def _plain_header(data: bytes, request: _Query) -> bool:
    """The id, QR, opcode QUERY, not truncated, NOERROR, and the same single question
    (names compare without case) as ``request``: what ``parse_reply`` and
    ``is_response`` check."""
    question = request.question
    end = 12 + len(question)
    return (
        len(data) >= end
        and int.from_bytes(data[:2], "big") == request.id
        and data[2] & 0xFA == 0x80  # QR, opcode 0, TC clear
        and not data[3] & 0x0F  # NOERROR
        and data[4:6] == b"\0\1"  # one question
        and data[12:end].lower() == question.lower()  # label lengths are below b"A"
    )


# The record data size of the address types: A, AAAA.
_ADDRESS_SIZES = {1: 4, 28: 16}


def _plain_addresses(data: bytes, request: _Query) -> dns.rrset.RRset | None:
    """The A or AAAA RRset of a reply whose every record is an answer of the type asked
    at the name asked (its owner a pointer to the question), nothing else in it: the
    answer ``resolve_chaining`` gives. None for any other reply."""
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    question, rdtype = request.question, request.rdtype
    size = _ADDRESS_SIZES.get(rdtype)
    if size is None or data[8:12] != b"\0\0\0\0":  # an authority or additional record
        return None
    owner_type_class = b"\xc0\x0c" + question[-4:]
    rdlength = size.to_bytes(2, "big")
    records = []
    at = 12 + len(question)
    for _ in range(int.from_bytes(data[6:8], "big")):
        if data[at : at + 6] != owner_type_class or data[at + 10 : at + 12] != rdlength:
            return None
        records.append(
            (int.from_bytes(data[at + 6 : at + 10], "big"), data[at + 12 : at + 12 + size])
        )
        at += 12 + size
    if at != len(data):  # trailing bytes or a record cut short
        return None
    rdclass = dns.rdataclass.IN
    cls = dns.rdata.get_rdata_class(rdclass, rdtype)  # type: ignore[no-untyped-call]
    answer = dns.rrset.RRset(request.qname, rdclass, rdtype)
    for ttl, address in records:  # as the wire reader: the type's class from the bytes
        answer.add(cls(rdclass, rdtype, address), ttl)
    return answer


def _question_steps(
    label: str,
    port: int,
    timeout: float,
    request: _Query,
    start: float,
    first: Any = _NOT_MADE,
) -> QuestionSteps:
    """``request`` asked of one nameserver (``label``, ``port``) the way the resolver asks
    it, within ``timeout`` seconds from ``start``. ``first``: the outcome of a first UDP
    attempt already made (a response or an exception); the steps go on from it."""
    errors: list[Any] = []
    backoff = 0.10
    tcp = False
    attempts = 0
    while True:
        if attempts:  # make_query gave the first attempt its random id
            if not tcp:  # the resolver's pause before asking again
                yield ("sleep", backoff)
                backoff = min(backoff * 2, 2)
            request.set_random_id()
        made_ahead = not attempts and first is not _NOT_MADE
        attempts += 1
        duration = _lifetime_used(0.0 if made_ahead else time.time() - start, timeout, errors)
        attempt = (label, tcp, port)
        tcp = False
        if made_ahead:
            response = first
        else:
            response = yield ("tcp" if attempt[1] else "udp", request, timeout - duration)
        if isinstance(response, Exception):
            tcp = _after_failed_attempt(response, request, errors, attempt)
            continue
        return _answer_of(response, request, errors, attempt)


# Who an attempt asked, as the resolver's errors name it: (label, over TCP, port).
_Attempt = tuple[str, bool, int]


def _lifetime_used(duration: float, timeout: float, errors: list[Any]) -> float:
    """``duration``, the seconds of the question's lifetime used before an attempt (a
    clock stepped back by up to a second counts as none); the resolver's
    ``LifetimeTimeout`` once ``timeout`` is used up, or if the clock went back further."""
    import dns.resolver

    if duration < 0:
        if duration < -1:
            raise dns.resolver.LifetimeTimeout(  # type: ignore[no-untyped-call]
                timeout=duration, errors=errors
            )
        duration = 0
    if duration >= timeout:
        raise dns.resolver.LifetimeTimeout(  # type: ignore[no-untyped-call]
            timeout=duration, errors=errors
        )
    return duration


def _after_failed_attempt(
    failure: Exception, request: _Query, errors: list[Any], attempt: _Attempt
) -> bool:
    """Record the exception an attempt ended with in ``errors``; raise the resolver's
    ``NoNameservers`` if it ends the question, else return whether the next attempt
    goes over TCP (after a truncated UDP reply)."""
    import dns.exception
    import dns.message

    errors.append((*attempt, failure, None))
    if isinstance(failure, dns.exception.FormError | EOFError | OSError | NotImplementedError):
        raise _no_nameservers(request.message, errors) from failure
    if isinstance(failure, dns.message.Truncated):
        if attempt[1]:
            raise _no_nameservers(request.message, errors) from failure
        return True
    return False


def _answer_of(
    response: Any, request: _Query, errors: list[Any], attempt: _Attempt
) -> dns.rrset.RRset | None:
    """The answer RRset (None: no data) of an attempt's reply, as the resolver maps its
    rcode; NXDOMAIN, YXDOMAIN or ``NoNameservers`` (recorded in ``errors``) raised."""
    import dns.message
    import dns.rcode
    import dns.resolver
    import dns.rrset

    if response is _NO_DATA:
        return None
    if isinstance(response, dns.rrset.RRset):  # a plain answer, read on the bytes
        return response
    assert isinstance(response, dns.message.QueryMessage)  # as the resolver does
    rcode = response.rcode()
    if rcode == dns.rcode.NOERROR and not response.answer:
        return None  # no data: nothing to follow (what resolve_chaining finds, cheaper)
    if rcode == dns.rcode.NOERROR or rcode == dns.rcode.NXDOMAIN:
        try:
            chained = response.resolve_chaining()
        except Exception as e:
            errors.append((*attempt, e, response))
            raise _no_nameservers(request.message, errors) from e
        if rcode == dns.rcode.NXDOMAIN:
            raise dns.resolver.NXDOMAIN(  # type: ignore[no-untyped-call]
                qnames=[request.qname], responses={request.qname: response}
            )
        answer: dns.rrset.RRset | None = chained.answer
        return answer
    if rcode == dns.rcode.YXDOMAIN:
        raise dns.resolver.YXDOMAIN
    errors.append((*attempt, dns.rcode.to_text(rcode), response))
    raise _no_nameservers(request.message, errors)


def _nameserver(server: tuple[str, int]) -> tuple[int, tuple[Any, ...], str]:
    """A DNS server asked directly: its address family, its socket address, and its
    label in the resolver's errors ("Do53:ADDRESS@PORT")."""
    import dns.inet
    import dns.nameserver

    family = dns.inet.af_for_address(server[0])
    destination = dns.inet.low_level_address_tuple(server, family)
    return family, destination, str(dns.nameserver.Do53Nameserver(*server))


class _Server:
    """Questions to one DNS server, asked the way ``dns.resolver.Resolver`` asks a single
    nameserver (``_question_steps``: the same query, UDP then TCP on truncation, the same
    retries, exceptions and messages), without its per-question machinery: one UDP socket
    for all the questions of a lookup, and a blocking receive instead of a new selector
    per wait. Not thread-safe: one per lookup. The blocking twin of ``_Endpoint``."""

    def __init__(self, server: tuple[str, int], timeout: float) -> None:
        self.address, self.port = server
        self.timeout = timeout
        self.family, self.destination, self.label = _nameserver(server)
        self.sock: socket.socket | None = None
        # first UDP attempts made ahead by prefetch(): (name, rdtype) -> (request, start,
        # response or the exception the attempt raised)
        self._first: dict[tuple[str, str], tuple[_Query, float, Any]] = {}

    def prefetch(self, questions: list[tuple[str, str]]) -> None:
        """Make the first UDP attempt of several questions at once (one round trip instead
        of one each); ``ask`` then goes on from each attempt's outcome as if it had just
        made it (retries, TCP on truncation, errors: all as without it)."""
        import dns.exception
        import dns.message

        start = time.time()
        pending: dict[tuple[str, str], _Query] = {}
        for name, rdtype in questions:
            try:
                request = _make_query(name, rdtype)
            except Exception:
                continue  # ask() meets (and raises) it itself
            try:
                if self.sock is None:
                    self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
                self.sock.settimeout(max(self.timeout, 0.0))
                self.sock.sendto(request.to_wire(), self.destination)
            except Exception as ex:
                self._first[(name, rdtype)] = (request, start, ex)
                continue
            pending[(name, rdtype)] = request
        expiration = start + self.timeout
        sock = self.sock
        while pending and sock is not None:
            remaining = expiration - time.time()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                break
            except Exception as ex:
                for key, req in pending.items():
                    self._first[key] = (req, start, ex)
                pending.clear()
                break
            if not from_destination(source, self.destination):
                continue  # a stray datagram
            outcome: Any = None
            try:
                outcome = parse_reply(data)
                answered = outcome
            except dns.message.Truncated as e:
                outcome, answered = e, e.message()  # type: ignore[no-untyped-call]
            except Exception:
                continue
            for key, req in pending.items():
                if req.message.is_response(answered):
                    self._first[key] = (req, start, outcome)
                    del pending[key]
                    break
        for key, req in pending.items():
            self._first[key] = (req, start, dns.exception.Timeout())  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def ask(self, name: str, rdtype: str) -> dns.rrset.RRset | None:
        """One question: ``_question_steps`` (the resolver's retries, TCP on truncation,
        exceptions), their I/O done here, blocking, on this lookup's socket."""
        import dns.query

        made = self._first.pop((name, rdtype), None)
        if made is not None:  # the first attempt, made by prefetch()
            request, start, first = made
        else:
            request = _make_query(name, rdtype)
            start, first = time.time(), _NOT_MADE
        steps = _question_steps(self.label, self.port, self.timeout, request, start, first)
        reply: Any = None
        try:
            while True:
                need = steps.send(reply)
                if need[0] == "sleep":
                    time.sleep(need[1])
                    reply = None
                    continue
                try:
                    if need[0] == "tcp":
                        reply = dns.query.tcp(
                            need[1].message, self.address, timeout=need[2], port=self.port
                        )
                    else:
                        reply = self._udp(need[1], need[2])
                except Exception as ex:  # the attempt's outcome: the steps decide
                    reply = ex
        except StopIteration as stop:
            return cast("dns.rrset.RRset | None", stop.value)

    def _udp(self, request: _Query, timeout: float) -> Any:
        """``dns.query.udp(..., raise_on_truncation=True, ignore_errors=True,
        ignore_unexpected=True)`` on this lookup's socket (``_NO_DATA`` for a plain
        no-data reply)."""
        import dns.exception
        import dns.message

        wire = request.to_wire()
        expiration = time.time() + timeout
        if self.sock is None:
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        sock = self.sock
        sock.settimeout(max(timeout, 0.0))
        sock.sendto(wire, self.destination)
        while True:
            remaining = expiration - time.time()
            if remaining <= 0:
                raise dns.exception.Timeout
            sock.settimeout(remaining)
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                raise dns.exception.Timeout from None  # the same event, in dnspython's terms
            if not from_destination(source, self.destination):
                continue  # a stray datagram, as dnspython ignores them
            reply = _plain_reply(data, request)
            if reply is not None:
                return reply
            reply = _read(data, request.message)
            if reply is None:
                continue
            if isinstance(reply, dns.message.Truncated):
                raise reply
            return reply


def _read(data: bytes, request: dns.message.Message) -> Any:
    """A datagram as dnspython reads it, if it answers ``request``: the reply (a
    ``Truncated`` exception when truncated); None for garbage or another message (which
    the attempt ignores and waits on, as dnspython's ``ignore_errors``)."""
    import dns.message

    try:
        reply = parse_reply(data, request)
    except dns.message.Truncated as e:
        return e if request.is_response(e.message()) else None  # type: ignore[no-untyped-call]
    except Exception:
        return None
    return reply if request.is_response(reply) else None


def from_destination(source: tuple[Any, ...], destination: tuple[Any, ...]) -> bool:
    """Did a datagram come from the server asked (address and port)? What dnspython's
    private ``dns.query._matches_destination`` checks, for unicast servers."""
    try:
        same = ipaddress.ip_address(str(source[0]).split("%", 1)[0]) == ipaddress.ip_address(
            str(destination[0]).split("%", 1)[0]
        )
    except ValueError:
        return False
    return same and source[1] == destination[1]


def _no_nameservers(request: dns.message.Message, errors: list[Any]) -> Exception:
    import dns.resolver

    exc: Exception = dns.resolver.NoNameservers(  # type: ignore[no-untyped-call]
        request=request, errors=errors
    )
    return exc


class CaaCache:
    """CAA sets of parent names found during one run, shared by its lookups (the zone's
    set is the same for all its names): ``(server, name) -> records``. Only answers are
    kept, never a failure. Thread-safe; a forked worker process has its own.

    For the asyncio driver it also knows the parent questions being asked right now, so
    that a thousand lookups in flight under one zone ask its parent once and the others
    wait for that answer instead of all missing the cache at the same moment."""

    def __init__(self) -> None:
        self._sets: dict[tuple[tuple[str, int] | None, str], list[CaaRecord]] = {}
        self._asking: dict[tuple[tuple[str, int] | None, str], asyncio.Future[Outcome]] = {}
        self._lock = threading.Lock()

    def get(self, server: tuple[str, int] | None, name: str) -> list[CaaRecord] | None:
        with self._lock:
            return self._sets.get((server, name))

    def put(self, server: tuple[str, int] | None, name: str, records: list[CaaRecord]) -> None:
        with self._lock:
            self._sets[(server, name)] = records

    def asking(
        self, server: tuple[str, int] | None, name: str, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.Future[Outcome], bool]:
        """The future of the CAA question at ``name`` in this loop, and whether the caller
        is the one to ask it (False: another lookup is asking, await its answer)."""
        with self._lock:
            pending = self._asking.get((server, name))
            if pending is not None and pending.get_loop() is loop:
                return pending, False
            mine: asyncio.Future[Outcome] = loop.create_future()
            self._asking[(server, name)] = mine
            return mine, True

    def asked(
        self, server: tuple[str, int] | None, name: str, future: asyncio.Future[Outcome]
    ) -> None:
        """The asker has stored the answer (``put``): later lookups use the set, or ask
        again after a failure."""
        with self._lock:
            if self._asking.get((server, name)) is future:
                del self._asking[(server, name)]


# -- the lookup, once, without I/O -----------------------------------------------------------
#
# The lookup is written as generator "steps": a step yields a batch of questions
# (name, rdtype), asked at the same time, and is sent back their outcomes in the same
# order: the answer RRset (None: no answer) or the DNS exception asking raised. A
# blocking driver (``lookup``) and an asyncio driver (``lookup_async``) run the same steps,
# so the two cannot differ in anything but how the questions travel.

Question = tuple[str, str]
Outcome = Union["dns.rrset.RRset", None, "dns.exception.DNSException"]
T = TypeVar("T")
Steps = Generator[list[Question], list[Outcome], T]


def _rrset_result(name: str, rdtype: str, outcome: Outcome) -> RRsetResult:
    """An A or AAAA outcome as the report states it: failures are data."""
    import dns.exception
    import dns.resolver

    out = RRsetResult(rdtype=rdtype)
    if isinstance(outcome, dns.resolver.NXDOMAIN):
        out.status, out.error = "nxdomain", f"NXDOMAIN looking up {rdtype} for {name}"
    elif isinstance(outcome, dns.resolver.NoNameservers):
        out.status = "refused" if "REFUSED" in str(outcome) else "servfail"
        out.error = f"{out.status.upper()} looking up {rdtype} for {name}"
    elif isinstance(outcome, dns.exception.Timeout):
        out.status, out.error = "timeout", f"timeout looking up {rdtype} for {name}"
    elif isinstance(outcome, dns.exception.DNSException):
        out.status, out.error = "error", f"{rdtype} lookup for {name} failed: {outcome}"
    elif outcome is None:
        out.status = "nodata"
    else:
        out.addresses = [rdata.address for rdata in outcome]
    return out


def _caa_records(name: str, outcome: Outcome) -> tuple[list[CaaRecord], str | None]:
    """The CAA set at ``name`` (empty: none there) or why it could not be read."""
    import dns.exception
    import dns.resolver

    if isinstance(outcome, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        return [], None
    if isinstance(outcome, dns.exception.DNSException):
        return [], f"CAA lookup for {name} failed: {outcome}"
    records: list[CaaRecord] = []
    for rdata in outcome or ():
        value = rdata.value.decode("utf-8", "replace")
        records.append(CaaRecord(int(rdata.flags), rdata.tag.decode("ascii").lower(), value, name))
    return records, None


def _climb_names(name: str) -> list[str]:
    """The names RFC 8659 looks at for NAME's CAA set, NAME first (never the TLD)."""
    labels = name.rstrip(".").split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _caa_steps(
    name: str,
    cache: CaaCache | None,
    server: tuple[str, int] | None,
    known: dict[Question, Outcome],
) -> Steps[CaaResult]:
    """RFC 8659 tree climbing: the first name from NAME upwards with a CAA set applies.
    ``known``: outcomes already asked (the lookup asks NAME's CAA with its addresses)."""
    for i, candidate in enumerate(_climb_names(name)):
        cached = cache.get(server, candidate) if cache is not None and i else None
        if cached is not None:
            records, error = list(cached), None
        else:
            question = (candidate, "CAA")
            outcome = known.pop(question) if question in known else (yield [question])[0]
            records, error = _caa_records(candidate, outcome)
            if cache is not None and i and error is None:
                cache.put(server, candidate, list(records))
        if error is not None:
            return CaaResult(owner=candidate, error=error)
        if records:
            return CaaResult(owner=candidate, records=records)
    return CaaResult(owner=None)


def _lookup_steps(
    name: str, server: tuple[str, int] | None, caa: bool, cache: CaaCache | None
) -> Steps[DnsResult]:
    """A and AAAA, and NAME's own CAA, in one batch (the questions asked in any case);
    then the climb to the parents, one name at a time."""
    batch = [(name, "A"), (name, "AAAA")]
    if caa and _climb_names(name):
        batch.append((name, "CAA"))
    outcomes = yield batch
    known = dict(zip(batch[2:], outcomes[2:], strict=True))
    caa_result = (yield from _caa_steps(name, cache, server, known)) if caa else None
    label = f"{server[0]}:{server[1]}" if server else None
    a, aaaa = _rrset_result(name, "A", outcomes[0]), _rrset_result(name, "AAAA", outcomes[1])
    return DnsResult(name=name, server=label, a=a, aaaa=aaaa, caa=caa_result)


# -- the blocking driver ---------------------------------------------------------------------

# Asks a batch of questions, returns their outcomes in order.
AskBatch = Callable[[list[Question]], list[Outcome]]


def _drive(steps: Steps[T], ask: AskBatch) -> T:
    try:
        batch = next(steps)
        while True:
            batch = steps.send(ask(batch))
    except StopIteration as stop:
        return cast(T, stop.value)


def _outcome(ask: Ask, question: Question) -> Outcome:
    """Ask one question; a DNS exception is an outcome, anything else a bug to raise."""
    import dns.exception

    try:
        return ask(*question)
    except dns.exception.DNSException as exc:
        return exc


def _one_by_one(ask: Ask) -> AskBatch:
    return lambda batch: [_outcome(ask, q) for q in batch]


def _prefetching(direct: _Server) -> AskBatch:
    def ask_batch(batch: list[Question]) -> list[Outcome]:
        if len(batch) > 1:  # one round trip for the batch
            direct.prefetch(batch)
        return [_outcome(direct.ask, q) for q in batch]

    return ask_batch


def lookup_caa(
    res: dns.resolver.Resolver | Ask,
    name: str,
    cache: CaaCache | None = None,
    server: tuple[str, int] | None = None,
) -> CaaResult:
    """RFC 8659 tree climbing: the first name from NAME upwards with a CAA set applies.

    With ``cache``, the sets found at parent names (``server``'s answers) are kept and
    reused by the other names of the run."""
    import dns.resolver

    ask = _resolver_ask(res) if isinstance(res, dns.resolver.Resolver) else res
    return _drive(_caa_steps(name, cache, server, {}), _one_by_one(ask))


def caa_permits(caa: CaaResult, ca_identity: str, wildcard: bool = False) -> tuple[bool, str]:
    """Evaluate a CAA set for ``ca_identity`` (RFC 8659 section 4). Returns (ok, why)."""
    if caa.owner is None or not caa.records:
        return True, "no CAA records: any CA may issue"
    for rec in caa.records:
        if rec.flags & 128 and rec.tag not in ("issue", "issuewild", "iodef"):
            return False, f"critical CAA tag {rec.tag!r} at {rec.owner} that CAs must refuse"
    issue = [r for r in caa.records if r.tag == "issue"]
    relevant = issue
    if wildcard:
        wild = [r for r in caa.records if r.tag == "issuewild"]
        relevant = wild or issue
    if not relevant:
        return True, f"CAA at {caa.owner} has no issue property"
    allowed = []
    for rec in relevant:
        domain, _, params = rec.value.partition(";")
        domain = domain.strip().lower()
        allowed.append(domain or ";")
        if domain != ca_identity.lower():
            continue
        methods = _caa_param(params, "validationmethods")
        if methods is not None and "http-01" not in methods.split(","):
            return False, (
                f"CAA at {caa.owner} allows {ca_identity} only with "
                f"validationmethods={methods}, not http-01"
            )
        return True, f"CAA at {caa.owner} allows {ca_identity}"
    return False, (
        f"CAA at {caa.owner} allows only {', '.join(repr(a) for a in allowed)}, not {ca_identity!r}"
    )


def _caa_param(params: str, key: str) -> str | None:
    for part in params.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k.strip().lower() == key:
            return v.strip().lower()
    return None


def lookup(
    name: str,
    server: tuple[str, int] | None,
    timeout: float = 5.0,
    caa: bool = True,
    caa_cache: CaaCache | None = None,
) -> DnsResult:
    """A, AAAA and (``caa``) the CAA climb for ``name``. A given ``server`` is asked
    directly (one socket for the lookup); without one, the system's resolver
    configuration applies. ``caa_cache`` shares parent names' CAA sets within a run."""
    steps = _lookup_steps(name, server, caa, caa_cache)
    if server is None:
        return _drive(steps, _one_by_one(_resolver_ask(make_resolver(None, timeout))))
    direct = _Server(server, timeout)
    try:
        return _drive(steps, _prefetching(direct))
    finally:
        direct.close()


# -- the asyncio driver ----------------------------------------------------------------------

# Questions in flight at once to one server in one event loop, all lookups together: a
# thousand lookups of three questions each overflow a DNS server's receive buffer (the
# benchmark's dropped queries with 1,024 in flight), and a dropped query costs a timeout.
# 128 was the fastest of 32..256 in benchmarks/bench_dns.py. (Without a given server, the
# bound is on the loop's questions to the system's resolvers.)
MAX_QUESTIONS_IN_FLIGHT = 128
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
# Resolvers are stateless between questions (no cache): one per server and timeout,
# not one per lookup (the system one reads resolv.conf when made).
_async_resolvers: dict[tuple[tuple[str, int] | None, float], dns.asyncresolver.Resolver] = {}
# The endpoints open in each loop: (address, port) -> endpoint.
_endpoints: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], _Endpoint]
] = weakref.WeakKeyDictionary()

# A lookup's claims on shared CAA questions: (name, the future its answer goes to).
Claims = list[tuple[str, "asyncio.Future[Outcome]"]]
# Asks a question: its outcome goes to ``into`` (a new future when None), returned.
AskOne = Callable[[Question, "asyncio.Future[Outcome] | None"], "asyncio.Future[Outcome]"]


class _Question:
    """A question asked through an ``_Endpoint``: its steps and the attempt in flight."""

    __slots__ = ("future", "key", "question", "request", "steps", "task", "timeout", "timer")

    def __init__(self, future: asyncio.Future[Outcome], question: Question, timeout: float):
        self.future = future
        self.question = question
        self.timeout = timeout
        self.steps: QuestionSteps | None = None
        self.request: _Query | None = None  # the UDP attempt awaiting an answer
        self.key = -1  # ... under this id in the endpoint's table
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None  # a TCP attempt


class _Endpoint:
    """One UDP socket of an event loop to one DNS server, shared by every lookup in
    flight there: the questions' ``_question_steps`` (the resolver's ways, as ``_Server``)
    with their I/O done by callbacks, no task per question or per wait. An answer is
    matched to its attempt by id (unique among the attempts in flight) and question
    (``request.is_response``); datagrams from other sources, strays and late answers are
    dropped. Attempts time out by ``loop.call_later``; TCP (after truncation) goes through
    ``dns.asyncquery.tcp``. At most ``MAX_QUESTIONS_IN_FLIGHT`` questions are in flight;
    the others wait their turn, and the wait is not part of their timeout. Open while
    lookups use it: the last one out closes it."""

    def __init__(self, server: tuple[str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.address, self.port = server
        self.loop = loop
        self.family, self.destination, self.label = _nameserver(server)
        self.sock: socket.socket | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.broken: Exception | None = None  # the socket could not be made: every attempt's
        self.opened: asyncio.Future[None] | None = None
        self.opening: asyncio.Task[None] | None = None
        self.users = 0  # lookups using it
        self.attempts: dict[int, _Question] = {}  # UDP attempts awaiting an answer, by id
        self.active: set[_Question] = set()  # questions in flight (holding a slot)
        self.waiting: collections.deque[_Question] = collections.deque()
        self.pumping = False
        self.pump_soon = False  # a _pump_now is scheduled

    # -- lifetime

    @classmethod
    async def enter(cls, server: tuple[str, int]) -> _Endpoint:
        """This loop's endpoint to ``server``, open, counted as used by the caller."""
        import asyncio

        loop = asyncio.get_running_loop()
        mine = _endpoints.get(loop)
        if mine is None:
            mine = _endpoints[loop] = {}
        endpoint = mine.get(server)
        if endpoint is None:
            endpoint = mine[server] = cls(server, loop)
            endpoint.opened = loop.create_future()
            endpoint.opening = loop.create_task(endpoint._open())
        endpoint.users += 1
        if endpoint.opened is not None and not endpoint.opened.done():
            try:
                await asyncio.shield(endpoint.opened)
            except BaseException:
                endpoint.leave()
                raise
        return endpoint

    async def _open(self) -> None:
        assert self.opened is not None
        sock: socket.socket | None = None
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):  # answers to many lookups queue here
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
            self.transport, _ = await self.loop.create_datagram_endpoint(
                lambda: cast("asyncio.DatagramProtocol", _Receiver(self)), sock=sock
            )
            self.sock = sock
        except Exception as exc:  # as the blocking driver's socket(): the attempts' outcome
            self.broken = exc
            if sock is not None:
                sock.close()
        finally:
            if not self.opened.done():
                self.opened.set_result(None)
        if self.users == 0:  # all left while it opened
            self._close()

    def leave(self) -> None:
        self.users -= 1
        if self.users == 0 and self.opened is not None and self.opened.done():
            self._close()

    def _close(self) -> None:
        mine = _endpoints.get(self.loop)
        if mine is not None and mine.get(self.server) is self:
            del mine[self.server]
        for q in list(self.active) + list(self.waiting):  # of lookups that were cancelled
            self._drop(q)
        self.active.clear()
        self.waiting.clear()
        self.attempts.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.sock = None

    # -- questions

    def ask_within(self, timeout: float) -> AskOne:
        """Asks questions with ``timeout`` each: a question's outcome (answer RRset, None
        or the DNS exception) goes to ``into`` (a new future when None), returned; cancel
        it to give up."""

        def ask(question: Question, into: asyncio.Future[Outcome] | None) -> Any:
            future = self.loop.create_future() if into is None else into
            self.waiting.append(_Question(future, question, timeout))
            if not self.pump_soon:  # the questions of this turn of the loop go out together
                self.pump_soon = True
                self.loop.call_soon(self._pump_now)
            return future

        return ask

    def _pump_now(self) -> None:
        self.pump_soon = False
        self._pump()

    def _pump(self) -> None:
        """Start waiting questions while there are free slots."""
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.waiting and len(self.active) < MAX_QUESTIONS_IN_FLIGHT:
                q = self.waiting.popleft()
                if q.future.done():  # given up while it waited
                    continue
                self.active.add(q)
                try:
                    request = _make_query(*q.question)
                except Exception as exc:
                    self._finish(q, exc)
                    continue
                q.steps = _question_steps(self.label, self.port, q.timeout, request, time.time())
                self._advance(q, None)
        finally:
            self.pumping = False

    def _advance(self, q: _Question, reply: Any) -> None:
        """Send the steps the outcome of their last need, and meet the next one."""
        steps = q.steps
        assert steps is not None
        if q.future.done():  # its lookup gave up
            steps.close()
            self._finish(q, None)
            return
        try:
            need = steps.send(reply)
        except StopIteration as stop:
            self._finish(q, stop.value)
            return
        except Exception as exc:  # a DNS exception is the outcome; another, a bug to raise
            self._finish(q, exc)
            return
        if need[0] == "udp":
            self._send(q, need[1], need[2])
        elif need[0] == "sleep":
            q.timer = self.loop.call_later(need[1], self._advance, q, None)
        else:
            self._tcp(q, need[1], need[2])

    def _finish(self, q: _Question, outcome: Any) -> None:
        import dns.exception

        self.active.discard(q)
        future = q.future
        if not future.done():
            if outcome is None or isinstance(outcome, dns.exception.DNSException):
                future.set_result(outcome)
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self.waiting:
            self._pump()

    def _drop(self, q: _Question) -> None:
        if q.timer is not None:
            q.timer.cancel()
        if q.task is not None:
            q.task.cancel()
        if q.steps is not None:
            q.steps.close()
        if not q.future.done():
            q.future.cancel()

    # -- I/O

    def _send(self, q: _Question, request: _Query, timeout: float) -> None:
        """A UDP attempt: ``_Server._udp``'s, on the shared socket."""
        attempts = self.attempts
        while request.id in attempts:  # ids unique among the attempts in flight
            request.set_random_id()
        try:
            if self.broken is not None:
                raise self.broken
            wire = request.to_wire()
            sock = self.sock
            assert sock is not None and self.transport is not None
            try:
                sock.sendto(wire, self.destination)
            except BlockingIOError:  # the send buffer is full: the transport queues it
                cast("asyncio.DatagramTransport", self.transport).sendto(wire, self.destination)
        except Exception as exc:
            self._advance(q, exc)
            return
        key = request.id
        attempts[key] = q
        q.request, q.key = request, key
        q.timer = self.loop.call_later(timeout, self._timed_out, q)

    def _timed_out(self, q: _Question) -> None:
        import dns.exception

        if self.attempts.get(q.key) is q:
            del self.attempts[q.key]
        q.request = None
        self._advance(q, dns.exception.Timeout())  # type: ignore[no-untyped-call]

    def received(self, data: bytes, source: tuple[Any, ...]) -> None:
        q = self.attempts.get(int.from_bytes(data[:2], "big"))
        if q is None:  # no attempt in flight with its id: a stray or a late answer
            return
        if source != self.destination and not from_destination(source, self.destination):
            return  # not from the server asked
        request = q.request
        assert request is not None
        reply = _plain_reply(data, request)
        if reply is None:
            reply = _read(data, request.message)
        if reply is None:
            return  # not an answer to the attempt: wait on
        del self.attempts[q.key]
        q.request = None
        if q.timer is not None:
            q.timer.cancel()
        self._advance(q, reply)

    def failed(self, exc: Exception) -> None:
        """The socket reported an error: every UDP attempt in flight meets it, as a
        blocking receive would raise it."""
        attempts = list(self.attempts.values())
        self.attempts.clear()
        for q in attempts:
            if q.timer is not None:
                q.timer.cancel()
            q.request = None
            self._advance(q, exc)

    def _tcp(self, q: _Question, request: _Query, timeout: float) -> None:
        import dns.asyncquery

        task = self.loop.create_task(
            dns.asyncquery.tcp(request.message, self.address, timeout=timeout, port=self.port)
        )
        q.task = task

        def done(t: asyncio.Task[Any]) -> None:
            q.task = None
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                self._advance(q, t.result())
            elif isinstance(exc, Exception):
                self._advance(q, _worded_as_blocking_attempt(exc))
            else:
                self._finish(q, exc)

        task.add_done_callback(done)


def _worded_as_blocking_attempt(exc: Exception) -> Exception:
    """An asyncio TCP attempt's failure as the blocking ``dns.query.tcp`` words it:
    a plain timeout ("timed out after N seconds" there), a connect error with the
    system's message (asyncio says "Connect call failed (ADDRESS)")."""
    import dns.exception

    if isinstance(exc, dns.exception.Timeout):
        plain: Exception = dns.exception.Timeout()  # type: ignore[no-untyped-call]
        return plain
    if isinstance(exc, OSError) and exc.errno and exc.strerror != os.strerror(exc.errno):
        return OSError(exc.errno, os.strerror(exc.errno))
    return exc


# The endpoint socket's receive buffer: the answers to every question in flight may
# arrive at once (the kernel caps it at net.core.rmem_max).
_RCVBUF = 1 << 20
_BURST = 31  # datagrams read in one turn after the one asyncio read


class _Receiver:
    """The datagram protocol of an ``_Endpoint``'s socket (asyncio's callbacks)."""

    def __init__(self, endpoint: _Endpoint) -> None:
        self.endpoint = endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        endpoint = self.endpoint
        endpoint.received(data, addr)
        # the answers queued behind it too, up to a burst: one turn of the loop (and one
        # poll) for many datagrams instead of one each
        sock = endpoint.sock
        for _ in range(_BURST):
            if sock is None or endpoint.sock is not sock:
                return
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                endpoint.failed(exc)
                return
            endpoint.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.endpoint.failed(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _async_resolver(server: tuple[str, int] | None, timeout: float) -> dns.asyncresolver.Resolver:
    import dns.asyncresolver
    import dns.resolver

    res = _async_resolvers.get((server, timeout))
    if res is not None:
        return res
    if server is None:
        try:
            res = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            res = dns.asyncresolver.Resolver(configure=False)
            res.nameservers = ["127.0.0.1"]
    else:  # asked directly: the given server is the only nameserver
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [server[0]]
        res.port = server[1]
    res.lifetime = timeout
    res.timeout = timeout
    _async_resolvers[(server, timeout)] = res
    return res


def _limit() -> asyncio.Semaphore:
    """This loop's bound on questions in flight (asyncio primitives belong to one loop)."""
    import asyncio

    loop = asyncio.get_running_loop()
    sem = _in_flight.get(loop)
    if sem is None:
        sem = _in_flight[loop] = asyncio.Semaphore(MAX_QUESTIONS_IN_FLIGHT)
    return sem


async def _ask_async(res: dns.asyncresolver.Resolver, question: Question) -> Outcome:
    """One question through dnspython's asyncio resolver: its retries, TCP on truncation,
    exceptions and messages, the same as the blocking resolver's. The wait for a slot
    is not part of the question's timeout."""
    import dns.exception

    async with _limit():
        try:
            answer = await res.resolve(question[0], question[1], raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            return _worded_as_blocking(exc)
    return answer.rrset


def _worded_as_blocking(exc: dns.exception.DNSException) -> dns.exception.DNSException:
    """dnspython's asyncio backend words an attempt's timeout "timed out after N
    seconds", the blocking one "timed out.": a CAA error quotes the attempts, and a
    report must not depend on the driver that made it."""
    import dns.exception

    errors = exc.kwargs.get("errors")
    if not errors or not any(isinstance(e[3], dns.exception.Timeout) for e in errors):
        return exc
    plain_timeout: Exception = dns.exception.Timeout()  # type: ignore[no-untyped-call]
    plain = [
        (*e[:3], plain_timeout if isinstance(e[3], dns.exception.Timeout) else e[3], *e[4:])
        for e in errors
    ]
    return type(exc)(**{**exc.kwargs, "errors": plain})


def _resolver_asks(res: dns.asyncresolver.Resolver) -> AskOne:
    """``AskOne`` through dnspython's asyncio resolver (a task per question)."""

    def ask(question: Question, into: asyncio.Future[Outcome] | None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future() if into is None else into
        task = loop.create_task(_ask_async(res, question))
        task.add_done_callback(lambda t: _copy_outcome(t, future))
        future.add_done_callback(lambda f: task.cancel() if f.cancelled() else None)
        return future

    return ask


def _copy_outcome(source: asyncio.Future[Outcome], target: asyncio.Future[Outcome]) -> None:
    if source.cancelled():
        if not target.done():
            target.cancel()
        return
    exc = source.exception()  # retrieved in any case (no "never retrieved" warning)
    if target.done():
        return
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(source.result())


def _shared_asks(
    ask_one: AskOne, cache: CaaCache, server: tuple[str, int] | None
) -> Callable[[Question, Claims], asyncio.Future[Outcome]]:
    """CAA questions asked once for all the lookups of the loop that need them now: the
    first asker's future is the one the others wait on. The asker records its claim in
    its ``Claims``, released once its steps stored the answer; the claim is made at
    once, in the turn of the loop that ran the steps' cache miss, so that no asker's
    release can slip in between. A waiter whose asker was cancelled asks itself."""

    def ask(question: Question, claims: Claims) -> asyncio.Future[Outcome]:
        import asyncio

        if question[1] != "CAA":
            return ask_one(question, None)
        loop = asyncio.get_running_loop()
        shared, asker = cache.asking(server, question[0], loop)
        if asker:
            claims.append((question[0], shared))
            return ask_one(question, shared)
        mine: asyncio.Future[Outcome] = loop.create_future()

        def answered(f: asyncio.Future[Outcome]) -> None:
            if mine.done():  # this waiter gave up
                return
            if f.cancelled():  # the asker did: ask here
                ask_one(question, mine)
            else:
                _copy_outcome(f, mine)

        shared.add_done_callback(answered)
        return mine

    return ask


async def _drive_async(
    steps: Steps[T],
    ask: Callable[[Question, Claims], asyncio.Future[Outcome]],
    release: Callable[[Claims], None],
) -> T:
    """The lookup's steps, each batch's questions asked at once (futures, no task each);
    the lookup given up (cancelled), its questions are too."""
    try:
        batch = next(steps)
        while True:
            claims: Claims = []
            futures: list[asyncio.Future[Outcome]] = []
            try:
                for question in batch:  # asked now, in the turn that ran the steps
                    futures.append(ask(question, claims))
                outcomes = [await future for future in futures]
                batch = steps.send(outcomes)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:  # after the steps stored the answers in the cache
                release(claims)
    except StopIteration as stop:
        return cast(T, stop.value)


async def _lookup_async_with(
    ask_one: AskOne,
    name: str,
    server: tuple[str, int] | None,
    caa: bool,
    caa_cache: CaaCache | None,
) -> DnsResult:
    def release(claims: Claims) -> None:
        for asked_name, future in claims:
            assert caa_cache is not None
            caa_cache.asked(server, asked_name, future)

    def ask_alone(question: Question, claims: Claims) -> asyncio.Future[Outcome]:
        return ask_one(question, None)

    ask = ask_alone if caa_cache is None else _shared_asks(ask_one, caa_cache, server)
    return await _drive_async(_lookup_steps(name, server, caa, caa_cache), ask, release)


async def lookup_async(
    name: str,
    server: tuple[str, int] | None,
    timeout: float = 5.0,
    caa: bool = True,
    caa_cache: CaaCache | None = None,
) -> DnsResult:
    """``lookup`` for an asyncio event loop, with the same results: the questions of a
    batch asked at once. A given ``server`` is asked directly, through the loop's one
    socket to it (``_Endpoint``) shared by every lookup in flight; without one, through
    dnspython's asyncio resolver and the system's configuration. Many lookups may run
    at once in one loop: questions in flight are bounded (``MAX_QUESTIONS_IN_FLIGHT``)
    and with ``caa_cache`` a parent's CAA set is asked once for all of them."""
    if server is None:
        return await _lookup_async_resolver(name, None, timeout, caa, caa_cache)
    endpoint = await _Endpoint.enter(server)
    try:
        return await _lookup_async_with(endpoint.ask_within(timeout), name, server, caa, caa_cache)
    finally:
        endpoint.leave()


async def _lookup_async_resolver(
    name: str,
    server: tuple[str, int] | None,
    timeout: float,
    caa: bool,
    caa_cache: CaaCache | None,
) -> DnsResult:
    """``lookup_async`` through dnspython's asyncio resolver (``server`` its only
    nameserver, or the system's configuration): the path without a server, and the
    benchmark's yardstick for ``_Endpoint``."""
    res = _async_resolver(server, timeout)
    return await _lookup_async_with(_resolver_asks(res), name, server, caa, caa_cache)


def preload() -> None:
    """Import now what lookups use (dnspython and the record classes it loads on first
    sight): worker processes forked afterwards share it instead of each importing it."""
    import dns.inet
    import dns.message
    import dns.nameserver
    import dns.rdata
    import dns.rdataclass
    import dns.rdatatype
    import dns.resolver
    import dns.rrset

    for rdtype in ("A", "AAAA", "CAA", "CNAME", "SOA", "NS"):
        dns.rdata.get_rdata_class(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
        )


def reserved_reason(address: str) -> str | None:
    """Why a CA will not connect to ``address``, or None for a public address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if isinstance(ip, ipaddress.IPv4Address):
        if ip in ipaddress.ip_network("100.64.0.0/10"):
            return "carrier-grade NAT (RFC 6598)"
        if ip in ipaddress.ip_network("198.18.0.0/15"):
            return "benchmarking range (RFC 2544)"
        if any(
            ip in ipaddress.ip_network(n)
            for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
        ):
            return "documentation range (RFC 5737)"
    elif ip in ipaddress.ip_network("2001:db8::/32"):
        return "documentation range (RFC 3849)"
    elif ip in ipaddress.ip_network("fc00::/7"):
        return "unique local address (RFC 4193)"
    if any(ip in net for net in _RFC1918):
        return "private (RFC 1918)"
    if ip in _FUTURE_USE:
        return "reserved for future use (240.0.0.0/4, RFC 1112)"
    special = next((why for net, why in _IANA_SPECIAL if ip in net), None)
    if special is not None:
        return special
    if ip.is_private:
        return "private" if ip.version == 6 else "special-purpose (IANA registry)"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_FUTURE_USE = ipaddress.ip_network("240.0.0.0/4")
# Boulder refuses every block of IANA's special-purpose registries (iana/ip.go,
# IsReservedAddr), also those the registry marks globally reachable, which Python's
# ipaddress counts as global
_IANA_SPECIAL = tuple(
    (ipaddress.ip_network(net), f"IANA special-purpose ({why})")
    for net, why in (
        ("192.0.0.9/32", "Port Control Protocol anycast, RFC 7723"),
        ("192.0.0.10/32", "TURN anycast, RFC 8155"),
        ("192.31.196.0/24", "AS112-v4, RFC 7535"),
        ("192.52.193.0/24", "AMT, RFC 7450"),
        ("192.88.99.0/24", "deprecated 6to4 relay anycast, RFC 7526"),
        ("192.175.48.0/24", "Direct Delegation AS112 Service, RFC 7534"),
        ("2002::/16", "6to4, RFC 3056"),
        ("2620:4f:8000::/48", "Direct Delegation AS112 Service, RFC 7534"),
        ("3fff::/20", "documentation, RFC 9637"),
        ("2001::/23", "IETF protocol assignments, RFC 2928"),
    )
)
