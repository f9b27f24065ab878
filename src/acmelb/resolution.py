"""Name resolution the way a CA does it: A, AAAA and CAA with dnspython.

``lookup(name, dns_server)`` returns a ``DnsResult`` (addresses, CAA set and
the errors met on the way) and never raises for DNS trouble: DNS trouble is
evidence.  Reserved-range classification and CAA (RFC 8659) evaluation live
here too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from acmelb.errors import UsageError

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
    except ValueError:
        raise UsageError(f"--dns-server {text!r}: not an IP address") from None
    if not 0 < port < 65536:
        raise UsageError(f"--dns-server {text!r}: port out of range")
    return host, port


def make_resolver(server: tuple[str, int] | None, timeout: float) -> dns.resolver.Resolver:
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


def _query(res: dns.resolver.Resolver, name: str, rdtype: str) -> RRsetResult:
    out = RRsetResult(rdtype=rdtype)
    try:
        answer = res.resolve(name, rdtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        out.status, out.error = "nxdomain", f"NXDOMAIN looking up {rdtype} for {name}"
        return out
    except dns.resolver.NoNameservers as exc:
        text = str(exc)
        out.status = "refused" if "REFUSED" in text else "servfail"
        out.error = f"{out.status.upper()} looking up {rdtype} for {name}"
        return out
    except dns.exception.Timeout:
        out.status, out.error = "timeout", f"timeout looking up {rdtype} for {name}"
        return out
    except dns.exception.DNSException as exc:
        out.status, out.error = "error", f"{rdtype} lookup for {name} failed: {exc}"
        return out
    if answer.rrset is None:
        out.status = "nodata"
        return out
    for rdata in answer.rrset:
        if rdtype in ("A", "AAAA"):
            out.addresses.append(rdata.address)
    return out


def _caa_at(res: dns.resolver.Resolver, name: str) -> tuple[list[CaaRecord], str | None]:
    try:
        answer = res.resolve(name, "CAA", raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], None
    except dns.resolver.NoNameservers as exc:
        return [], f"CAA lookup for {name} failed: {exc}"
    except dns.exception.DNSException as exc:
        return [], f"CAA lookup for {name} failed: {exc}"
    records: list[CaaRecord] = []
    if answer.rrset is not None:
        for rdata in answer.rrset:
            value = rdata.value.decode("utf-8", "replace")
            records.append(CaaRecord(int(rdata.flags), rdata.tag.decode("ascii").lower(), value,
                                     name))
    return records, None


def lookup_caa(res: dns.resolver.Resolver, name: str) -> CaaResult:
    """RFC 8659 tree climbing: the first name from NAME upwards with a CAA set applies."""
    labels = name.rstrip(".").split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        records, error = _caa_at(res, candidate)
        if error is not None:
            return CaaResult(owner=candidate, error=error)
        if records:
            return CaaResult(owner=candidate, records=records)
    return CaaResult(owner=None)


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
            return False, (f"CAA at {caa.owner} allows {ca_identity} only with "
                           f"validationmethods={methods}, not http-01")
        return True, f"CAA at {caa.owner} allows {ca_identity}"
    return False, (
        f"CAA at {caa.owner} allows only {', '.join(repr(a) for a in allowed)}, "
        f"not {ca_identity!r}"
    )


def _caa_param(params: str, key: str) -> str | None:
    for part in params.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k.strip().lower() == key:
            return v.strip().lower()
    return None


def lookup(
    name: str, server: tuple[str, int] | None, timeout: float = 5.0, caa: bool = True
) -> DnsResult:
    res = make_resolver(server, timeout)
    a = _query(res, name, "A")
    aaaa = _query(res, name, "AAAA")
    caa_result = lookup_caa(res, name) if caa else None
    label = f"{server[0]}:{server[1]}" if server else None
    return DnsResult(name=name, server=label, a=a, aaaa=aaaa, caa=caa_result)


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
        if any(ip in ipaddress.ip_network(n) for n in
               ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")):
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
