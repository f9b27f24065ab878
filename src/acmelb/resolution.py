"""Name resolution the way a CA does it: A, AAAA and CAA with dnspython.

``lookup(name, dns_server)`` returns a ``DnsResult`` (addresses, CAA set and
the errors met on the way) and never raises for DNS trouble: DNS trouble is
evidence. ``lookup_async`` is the same lookup for an asyncio event loop: both run one
I/O-free description of the lookup (``_lookup_steps``). Reserved-range classification
and CAA (RFC 8659) evaluation live here too.

dnspython (~60 ms to import) is imported when a lookup first needs it: a run whose
names are all given with ``--resolve`` never does.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast

from acmelb.errors import UsageError

if TYPE_CHECKING:
    import asyncio

    import dns.asyncresolver
    import dns.exception
    import dns.message
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


class _Server:
    """Questions to one DNS server, asked the way ``dns.resolver.Resolver`` asks a single
    nameserver (the same query, UDP then TCP on truncation, the same retries, the same
    exceptions and messages), without its per-question machinery: one UDP socket for
    all the questions of a lookup, and a blocking receive instead of a new selector
    per wait. Not thread-safe: one per lookup."""

    def __init__(self, server: tuple[str, int], timeout: float) -> None:
        import dns.inet
        import dns.nameserver

        self.address, self.port = server
        self.timeout = timeout
        self.family = dns.inet.af_for_address(self.address)
        self.destination = dns.inet.low_level_address_tuple(server, self.family)
        self.label = str(dns.nameserver.Do53Nameserver(self.address, self.port))
        self.sock: socket.socket | None = None
        # first UDP attempts made ahead by prefetch(): (name, rdtype) -> (qname, request,
        # start, response or the exception the attempt raised)
        self._first: dict[tuple[str, str], tuple[Any, dns.message.Message, float, Any]] = {}

    def prefetch(self, questions: list[tuple[str, str]]) -> None:
        """Make the first UDP attempt of several questions at once (one round trip instead
        of one each); ``ask`` then goes on from each attempt's outcome as if it had just
        made it (retries, TCP on truncation, errors: all as without it)."""
        import dns.exception
        import dns.message
        import dns.name
        import dns.rdataclass

        start = time.time()
        pending: dict[tuple[str, str], tuple[Any, dns.message.Message]] = {}
        for name, rdtype in questions:
            try:
                qname = dns.name.from_text(name, None)
                if not qname.is_absolute():
                    qname = qname.concatenate(dns.name.root)
                request = dns.message.make_query(qname, rdtype, dns.rdataclass.IN)
            except Exception:
                continue  # ask() meets (and raises) it itself
            try:
                if self.sock is None:
                    self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
                self.sock.settimeout(max(self.timeout, 0.0))
                self.sock.sendto(request.to_wire(), self.destination)
            except Exception as ex:
                self._first[(name, rdtype)] = (qname, request, start, ex)
                continue
            pending[(name, rdtype)] = (qname, request)
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
                for key, (qn, req) in pending.items():
                    self._first[key] = (qn, req, start, ex)
                pending.clear()
                break
            if not from_destination(source, self.destination):
                continue  # a stray datagram
            outcome: Any = None
            try:
                outcome = dns.message.from_wire(data, raise_on_truncation=True)
                answered = outcome
            except dns.message.Truncated as e:
                outcome, answered = e, e.message()  # type: ignore[no-untyped-call]
            except Exception:
                continue
            for key, (qn, req) in pending.items():
                if req.is_response(answered):
                    self._first[key] = (qn, req, start, outcome)
                    del pending[key]
                    break
        for key, (qn, req) in pending.items():
            self._first[key] = (qn, req, start, dns.exception.Timeout())  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def ask(self, name: str, rdtype: str) -> dns.rrset.RRset | None:
        import dns.exception
        import dns.message
        import dns.name
        import dns.query
        import dns.rcode
        import dns.rdataclass
        import dns.resolver

        made = self._first.pop((name, rdtype), None)
        outcome: Any = None
        if made is not None:  # the first attempt, made by prefetch()
            qname, request, start, outcome = made
        else:
            qname = dns.name.from_text(name, None)
            if not qname.is_absolute():
                qname = qname.concatenate(dns.name.root)
            request = dns.message.make_query(qname, rdtype, dns.rdataclass.IN)
            start = time.time()
        errors: list[Any] = []
        backoff = 0.10
        tcp = False
        first = True
        while True:
            if not first:  # make_query gave the first attempt its random id
                if not tcp:  # the resolver's pause before asking again
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 2)
                request.set_random_id()  # type: ignore[no-untyped-call]
            prefetched = first and made is not None
            first = False
            duration = 0.0 if prefetched else time.time() - start
            if duration < 0:
                if duration < -1:
                    raise dns.resolver.LifetimeTimeout(  # type: ignore[no-untyped-call]
                        timeout=duration, errors=errors
                    )
                duration = 0
            if duration >= self.timeout:
                raise dns.resolver.LifetimeTimeout(  # type: ignore[no-untyped-call]
                    timeout=duration, errors=errors
                )
            attempt_tcp = tcp
            tcp = False
            try:
                if prefetched:
                    if isinstance(outcome, BaseException):
                        raise outcome
                    response = outcome
                elif attempt_tcp:
                    response = dns.query.tcp(
                        request, self.address, timeout=self.timeout - duration, port=self.port
                    )
                else:
                    response = self._udp(request, self.timeout - duration)
            except Exception as ex:
                errors.append((self.label, attempt_tcp, self.port, ex, None))
                if isinstance(
                    ex, dns.exception.FormError | EOFError | OSError | NotImplementedError
                ):
                    raise _no_nameservers(request, errors) from ex
                if isinstance(ex, dns.message.Truncated):
                    if attempt_tcp:
                        raise _no_nameservers(request, errors) from ex
                    tcp = True
                continue
            assert isinstance(response, dns.message.QueryMessage)  # as the resolver does
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR or rcode == dns.rcode.NXDOMAIN:
                try:
                    chained = response.resolve_chaining()
                except Exception as e:
                    errors.append((self.label, attempt_tcp, self.port, e, response))
                    raise _no_nameservers(request, errors) from e
                if rcode == dns.rcode.NXDOMAIN:
                    raise dns.resolver.NXDOMAIN(  # type: ignore[no-untyped-call]
                        qnames=[qname], responses={qname: response}
                    )
                answer: dns.rrset.RRset | None = chained.answer
                return answer
            if rcode == dns.rcode.YXDOMAIN:
                raise dns.resolver.YXDOMAIN
            errors.append((self.label, attempt_tcp, self.port, dns.rcode.to_text(rcode), response))
            raise _no_nameservers(request, errors)

    def _udp(self, request: dns.message.Message, timeout: float) -> dns.message.Message:
        """``dns.query.udp(..., raise_on_truncation=True, ignore_errors=True,
        ignore_unexpected=True)`` on this lookup's socket."""
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
            try:
                r = dns.message.from_wire(
                    data, keyring=request.keyring, request_mac=request.mac, raise_on_truncation=True
                )
            except dns.message.Truncated as e:
                if not request.is_response(e.message()):  # type: ignore[no-untyped-call]
                    continue
                raise
            except Exception:
                continue
            if not request.is_response(r):
                continue
            return r


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

# Questions in flight at once in one event loop, all lookups together: a thousand lookups
# of three questions each overflow a DNS server's receive buffer (the benchmark's
# dropped queries with 1,024 in flight), and a dropped query costs a timeout. 128 was
# the fastest of 32..256 in benchmarks/bench_dns.py.
MAX_QUESTIONS_IN_FLIGHT = 128
_in_flight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)
# Resolvers are stateless between questions (no cache): one per server and timeout,
# not one per lookup (the system one reads resolv.conf when made).
_async_resolvers: dict[tuple[tuple[str, int] | None, float], dns.asyncresolver.Resolver] = {}


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


def _ask_shared(
    res: dns.asyncresolver.Resolver,
    question: Question,
    cache: CaaCache,
    server: tuple[str, int] | None,
    mine: list[tuple[str, asyncio.Future[Outcome]]],
) -> Awaitable[Outcome]:
    """A CAA question asked once for all the lookups of the loop that need it now; the
    asker records its claim in ``mine``, released once its steps stored the answer.
    Not a coroutine: the claim is made at once, in the same turn of the loop as the
    step's cache miss, so no asker's release can slip in between."""
    import asyncio

    future, asker = cache.asking(server, question[0], asyncio.get_running_loop())
    if asker:
        mine.append((question[0], future))
        return _ask_for_all(res, question, future)
    return _wait_for_asker(res, question, future)


async def _ask_for_all(
    res: dns.asyncresolver.Resolver, question: Question, future: asyncio.Future[Outcome]
) -> Outcome:
    import asyncio

    try:
        outcome = await _ask_async(res, question)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)  # the waiters meet the same bug
        raise
    future.set_result(outcome)
    return outcome


async def _wait_for_asker(
    res: dns.asyncresolver.Resolver, question: Question, future: asyncio.Future[Outcome]
) -> Outcome:
    import asyncio

    try:
        return await asyncio.shield(future)  # a waiter's cancellation must not cancel it
    except asyncio.CancelledError:
        if not future.cancelled():
            raise  # this waiter was cancelled
        return await _ask_async(res, question)  # the asker was: ask it here


async def _drive_async(
    steps: Steps[T],
    ask: Callable[[Question, list[tuple[str, asyncio.Future[Outcome]]]], Awaitable[Outcome]],
    release: Callable[[list[tuple[str, asyncio.Future[Outcome]]]], None],
) -> T:
    import asyncio

    try:
        batch = next(steps)
        while True:
            mine: list[tuple[str, asyncio.Future[Outcome]]] = []
            try:
                # ask() runs now, in the turn that ran the steps (see _ask_shared)
                outcomes = await asyncio.gather(*[ask(q, mine) for q in batch])
                batch = steps.send(list(outcomes))
            finally:  # after the steps stored the answers in the cache
                release(mine)
    except StopIteration as stop:
        return cast(T, stop.value)


async def lookup_async(
    name: str,
    server: tuple[str, int] | None,
    timeout: float = 5.0,
    caa: bool = True,
    caa_cache: CaaCache | None = None,
) -> DnsResult:
    """``lookup`` for an asyncio event loop, with the same results: the questions of a
    batch asked at once, a given ``server`` asked directly, without one the system's
    resolver configuration. Many lookups may run at once in one loop: questions in
    flight are bounded (``MAX_QUESTIONS_IN_FLIGHT``) and with ``caa_cache`` a parent's
    CAA set is asked once for all of them."""
    res = _async_resolver(server, timeout)

    def ask(
        question: Question, mine: list[tuple[str, asyncio.Future[Outcome]]]
    ) -> Awaitable[Outcome]:
        if caa_cache is not None and question[1] == "CAA":
            return _ask_shared(res, question, caa_cache, server, mine)
        return _ask_async(res, question)

    def release(mine: list[tuple[str, asyncio.Future[Outcome]]]) -> None:
        for asked_name, future in mine:
            assert caa_cache is not None
            caa_cache.asked(server, asked_name, future)

    return await _drive_async(_lookup_steps(name, server, caa, caa_cache), ask, release)


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
    if ip.is_private:
        return "private (RFC 1918)" if ip.version == 4 else "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None
