"""Stage DNS: addresses and CAA as the CA sees them (dnspython, not the system resolver)."""

from __future__ import annotations

import ipaddress

from acmelb.doctor.checks.base import Context
from acmelb.doctor.codes import Stage
from acmelb.doctor.findings import Code, Finding, Severity
from acmelb.doctor.resolution import caa_permits, reserved_reason

_FAILED = ("servfail", "refused", "timeout", "error")


def _server(ctx: Context) -> str:
    return ctx.dns.server if ctx.dns and ctx.dns.server else "the system resolver"


class DnsAddresses:
    codes = (Code.DNS_NO_ADDRESS, Code.DNS_LOOKUP_FAILED)
    stage = Stage.DNS
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return ctx.dns is not None

    def run(self, ctx: Context) -> list[Finding]:
        assert ctx.dns is not None
        dns = ctx.dns
        evidence = [
            f"A: {', '.join(dns.a.addresses) or dns.a.error or dns.a.status} (via {_server(ctx)})",
            f"AAAA: {', '.join(dns.aaaa.addresses) or dns.aaaa.error or dns.aaaa.status}",
        ]
        failed = [r for r in (dns.a, dns.aaaa) if r.status in _FAILED]
        if dns.addresses:
            if failed:
                return [
                    Finding(
                        Code.DNS_LOOKUP_FAILED,
                        f"the {failed[0].rdtype} lookup fails while the other works",
                        f"{failed[0].error}. Let's Encrypt asks for both A and AAAA; a failing "
                        "lookup can make validation fail or flap.",
                        "Fix the authoritative DNS servers for the zone so that every query type "
                        "answers (NOERROR with an empty answer when there is no record).",
                        severity=Severity.WARNING,
                        evidence=evidence,
                    )
                ]
            return []
        if failed:
            return [
                Finding(
                    Code.DNS_LOOKUP_FAILED,
                    f"DNS lookups for {ctx.target.name} fail",
                    f"{failed[0].error}. The CA cannot find where to connect.",
                    "Check the zone's delegation and its authoritative servers (dig +trace "
                    f"{ctx.target.name}); SERVFAIL often means broken DNSSEC or a lame delegation.",
                    evidence=evidence,
                )
            ]
        why = "NXDOMAIN" if "nxdomain" in (dns.a.status, dns.aaaa.status) else "no A or AAAA"
        return [
            Finding(
                Code.DNS_NO_ADDRESS,
                f"{ctx.target.name} has no address ({why})",
                f"The name resolves to no A and no AAAA record ({why}), so the CA has nothing "
                "to connect to.",
                f"Publish an A (and/or AAAA) record for {ctx.target.name} pointing at the load "
                "balancer's public address.",
                evidence=evidence,
            )
        ]


class DnsReserved:
    """Reserved addresses the CA will not connect to: those the name resolves to, or the
    target itself when it is an IP address (unless --assume-public covers them)."""

    codes = (Code.DNS_RESERVED_ADDRESS,)
    stage = Stage.DNS
    after: tuple[type, ...] = ()

    def applies(self, ctx: Context) -> bool:
        return ctx.address is not None or (ctx.dns is not None and bool(ctx.dns.addresses))

    def run(self, ctx: Context) -> list[Finding]:
        addresses = [ctx.address] if ctx.address is not None else _resolved(ctx)
        nets = ctx.options.public_networks
        bad: list[str] = []
        for addr in addresses:
            if any(ipaddress.ip_address(addr) in n for n in nets):
                continue
            why = reserved_reason(addr)
            if why:
                bad.append(f"{addr}: {why}")
        if not bad:
            return []
        if ctx.address is not None:
            return [_reserved_target(ctx, bad)]
        only = len(bad) == len(addresses)
        return [
            Finding(
                Code.DNS_RESERVED_ADDRESS,
                f"{ctx.target.name} resolves {'only' if only else 'also'} to reserved addresses",
                "Public CAs refuse to connect to private, loopback, link-local and other "
                "reserved addresses"
                + (
                    ", and that is all this name has."
                    if only
                    else "; such records make validation fail."
                ),
                f"Publish only the load balancer's public address for {ctx.target.name} in "
                "public DNS; keep internal addresses in an internal (split-horizon) zone.",
                evidence=bad,
            )
        ]


def _resolved(ctx: Context) -> list[str]:
    assert ctx.dns is not None
    return ctx.dns.addresses


def _reserved_target(ctx: Context, bad: list[str]) -> Finding:
    """The target is itself a reserved IP address (an IP-address certificate, RFC 8738)."""
    return Finding(
        Code.DNS_RESERVED_ADDRESS,
        f"{ctx.target.name} is a reserved address",
        "Public CAs refuse to validate or connect to private, loopback, link-local and "
        "other reserved addresses, and this target is one: no public CA issues a "
        "certificate for it.",
        "Ask for a certificate for the load balancer's public address (or its DNS name); "
        "for an internal address use an internal CA, or --assume-public in a lab.",
        evidence=bad,
    )


class Caa:
    codes = (Code.CAA_FORBIDS, Code.DNS_LOOKUP_FAILED)
    stage = Stage.DNS
    # a failed A/AAAA lookup already reports the broken zone; a failed CAA lookup is then quiet
    after: tuple[type, ...] = (DnsAddresses,)

    def applies(self, ctx: Context) -> bool:
        return ctx.dns is not None and ctx.dns.caa is not None

    def run(self, ctx: Context) -> list[Finding]:
        assert ctx.dns is not None and ctx.dns.caa is not None
        caa = ctx.dns.caa
        if caa.error:
            if ctx.has(Code.DNS_LOOKUP_FAILED):
                return []  # the same broken zone, already reported
            return [
                Finding(
                    Code.DNS_LOOKUP_FAILED,
                    "the CAA lookup fails",
                    f"{caa.error}. A CA must check CAA before issuing and refuses when the "
                    "lookup fails.",
                    "Make the authoritative servers answer CAA queries (NOERROR, empty answer "
                    "if there are no CAA records).",
                    evidence=[caa.error],
                )
            ]
        ok, why = caa_permits(caa, ctx.options.ca_identity)
        if ok:
            return []
        records = [f'{r.owner} CAA {r.flags} {r.tag} "{r.value}"' for r in caa.records]
        return [
            Finding(
                Code.CAA_FORBIDS,
                f"CAA records forbid {ctx.options.ca_identity}",
                f"{why}. The CA will refuse to issue for {ctx.target.name}.",
                f'Add a record: {caa.owner}. CAA 0 issue "{ctx.options.ca_identity}"',
                evidence=records,
            )
        ]
