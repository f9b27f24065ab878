"""NAT loopback (hairpin) rules for a DNAT load balancer or router.

Without them a host behind the LB that connects to the public VIP is DNATed
to a backend on its own segment; the backend answers directly, the client
drops (or RSTs) a reply from an address it never called, and the connection
times out. The fix has two parts, both limited to traffic from the inside
subnet to the VIP's port:

* DNAT the VIP to the backend(s) for traffic arriving from the inside, in
  case the existing DNAT only matches the outside interface;
* masquerade that traffic, so replies go back through the LB.

Everything acmelb adds lives in its own chains (iptables) or its own table
(nft), so ``undo`` removes exactly that and nothing else, and ``apply`` can be
run any number of times.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from acmelb.errors import FixError, UsageError

PRE_CHAIN = "ACMELB-HAIRPIN-PRE"
POST_CHAIN = "ACMELB-HAIRPIN-POST"
NFT_TABLE = "acmelb_hairpin"
COMMENT = "acmelb nat-loopback"
TOOLS = ("iptables", "nft")


@dataclass(frozen=True)
class Backend:
    address: str
    port: int

    def __str__(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


@dataclass(frozen=True)
class LoopbackPlan:
    vip: str
    port: int
    backends: tuple[Backend, ...]
    subnet: str
    tool: str = "iptables"

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.vip).version


def parse_plan(
    vip: str, port: int, backends: Sequence[str], subnet: str, tool: str = "iptables"
) -> LoopbackPlan:
    """Check every input; raise UsageError with the offending value."""
    try:
        vip_ip = ipaddress.ip_address(vip)
    except ValueError as exc:
        raise UsageError(f"--vip {vip!r}: not an IP address") from exc
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: not a TCP port")
    try:
        net = ipaddress.ip_network(subnet, strict=False)
    except ValueError as exc:
        raise UsageError(f"--subnet {subnet!r}: not a CIDR block like 198.18.1.0/24") from exc
    if net.version != vip_ip.version:
        raise UsageError("--subnet and --vip must be the same IP version")
    if tool not in TOOLS:
        raise UsageError(f"--backend-tool {tool!r}: choose iptables or nft")
    if not backends:
        raise UsageError("give at least one --backend IP[:PORT]")
    parsed = [parse_backend(text, port, vip_ip.version) for text in backends]
    return LoopbackPlan(str(vip_ip), port, tuple(parsed), str(net), tool)


def parse_backend(text: str, default_port: int, version: int) -> Backend:
    """IP, IP:PORT, [IPv6] or [IPv6]:PORT."""
    address, port_text = text, ""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        address, port_text = text.split(":")
    try:
        ip = ipaddress.ip_address(address)
        port = int(port_text) if port_text else default_port
    except ValueError as exc:
        raise UsageError(f"--backend {text!r}: not IP[:PORT]") from exc
    if ip.version != version:
        raise UsageError(f"--backend {text!r}: not the VIP's IP version")
    if not 0 < port < 65536:
        raise UsageError(f"--backend {text!r}: bad port")
    return Backend(str(ip), port)


# -- rendering ----------------------------------------------------------------


def _iptables_binary(plan: LoopbackPlan) -> str:
    return "ip6tables" if plan.family == 6 else "iptables"


def iptables_rules(plan: LoopbackPlan) -> list[list[str]]:
    """The rule arguments (after ``iptables -t nat``) that apply the fix."""
    rules: list[list[str]] = [
        ["-N", PRE_CHAIN],
        ["-N", POST_CHAIN],
    ]
    count = len(plan.backends)
    for index, backend in enumerate(plan.backends):
        balance: list[str] = []
        if count > 1 and index < count - 1:
            # Spread inside clients like the LB spreads outside ones: nth of the remaining.
            balance = [
                "-m",
                "statistic",
                "--mode",
                "nth",
                "--every",
                str(count - index),
                "--packet",
                "0",
            ]
        rules.append(
            [
                "-A",
                PRE_CHAIN,
                "-s",
                plan.subnet,
                "-d",
                plan.vip,
                "-p",
                "tcp",
                "--dport",
                str(plan.port),
                *balance,
                "-m",
                "comment",
                "--comment",
                COMMENT,
                "-j",
                "DNAT",
                "--to-destination",
                str(backend),
            ]
        )
    for target in dict.fromkeys(plan.backends):
        rules.append(
            [
                "-A",
                POST_CHAIN,
                "-s",
                plan.subnet,
                "-d",
                target.address,
                "-p",
                "tcp",
                "--dport",
                str(target.port),
                "-m",
                "comment",
                "--comment",
                COMMENT,
                "-j",
                "MASQUERADE",
            ]
        )
    rules.append(["-A", "PREROUTING", "-m", "comment", "--comment", COMMENT, "-j", PRE_CHAIN])
    rules.append(["-A", "POSTROUTING", "-m", "comment", "--comment", COMMENT, "-j", POST_CHAIN])
    return rules


def nft_script(plan: LoopbackPlan) -> str:
    family = "ip6" if plan.family == 6 else "ip"
    addr = "ip6" if plan.family == 6 else "ip"
    targets = [str(b) for b in plan.backends]
    if len(targets) == 1:
        dnat = f"dnat to {targets[0]}"
    else:
        mapping = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
        dnat = f"dnat to numgen inc mod {len(targets)} map {{ {mapping} }}"
    post = "\n".join(
        f"    {addr} saddr {plan.subnet} {addr} daddr {b.address} tcp dport {b.port} "
        f'masquerade comment "{COMMENT}"'
        for b in dict.fromkeys(plan.backends)
    )
    return (
        f"table {family} {NFT_TABLE} {{\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat + 10; policy accept;\n"
        f"    {addr} saddr {plan.subnet} {addr} daddr {plan.vip} tcp dport {plan.port} "
        f'{dnat} comment "{COMMENT}"\n'
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"{post}\n"
        "  }\n"
        "}\n"
    )


def render(plan: LoopbackPlan) -> str:
    """The commands a person would run on the LB, as text."""
    if plan.tool == "nft":
        return (
            "# On the load balancer (nftables). Undo: nft delete table "
            f"{'ip6' if plan.family == 6 else 'ip'} {NFT_TABLE}\n"
            f"nft -f - <<'EOF'\n{nft_script(plan)}EOF\n"
        )
    binary = _iptables_binary(plan)
    lines = [
        f"# On the load balancer (iptables). Hairpin for {plan.subnet} -> "
        f"{plan.vip}:{plan.port}; also enable forwarding: sysctl -w "
        f"net.ipv{'6.conf.all.forwarding' if plan.family == 6 else '4.ip_forward'}=1"
    ]
    lines += [shlex.join([binary, "-t", "nat", *rule]) for rule in iptables_rules(plan)]
    return "\n".join(lines) + "\n"


# -- applying -----------------------------------------------------------------

Runner = Callable[[Sequence[str], str | None], subprocess.CompletedProcess[str]]


def _run(cmd: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(cmd), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError as exc:
        raise FixError(f"{cmd[0]} is not installed here") from exc


def _must(cmd: Sequence[str], stdin: str | None = None) -> str:
    proc = _run(cmd, stdin)
    if proc.returncode != 0:
        raise FixError(f"{shlex.join(cmd)} failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTERS = re.compile(r"counter packets \d+ bytes \d+")


@dataclass(frozen=True)
class Snapshot:
    """The ruleset as the tool in use sees it and, on an nf_tables kernel, as nft sees it.

    iptables-nft keeps state that iptables-save cannot show (base chains it created,
    where a table sits in the ruleset), so a rollback is judged in both views.
    """

    iptables: str | None
    nft: str | None
    nft_chains: frozenset[tuple[str, str, str]] = frozenset()  # (family, table, chain)


def _iptables_uses_nft(plan: LoopbackPlan) -> bool:
    return "nf_tables" in _run([_iptables_binary(plan), "-V"]).stdout


def _nft_objects(kind: str) -> list[dict[str, Any]]:
    out = _run(["nft", "-j", "list", kind])
    if out.returncode != 0:
        return []
    try:
        items = json.loads(out.stdout).get("nftables", [])
    except ValueError:
        return []
    return [item[kind[:-1]] for item in items if kind[:-1] in item]


def _nft_chains() -> frozenset[tuple[str, str, str]]:
    return frozenset((c["family"], c["table"], c["name"]) for c in _nft_objects("chains"))


def snapshot(plan: LoopbackPlan) -> Snapshot:
    """The whole ruleset, normalised only where it changes by itself (counters)."""
    if plan.tool == "nft":
        return Snapshot(None, _nft_ruleset_without_counters())
    saved = normalize_iptables_save(_must([f"{_iptables_binary(plan)}-save"]))
    if _iptables_uses_nft(plan) and _run(["nft", "--version"]).returncode == 0:
        return Snapshot(saved, _nft_ruleset_without_counters(), _nft_chains())
    return Snapshot(saved, None)


def _nft_ruleset_without_counters() -> str:
    return _NFT_COUNTERS.sub("counter packets 0 bytes 0", _must(["nft", "list", "ruleset"]))


def normalize_iptables_save(text: str) -> str:
    """iptables-save output without what changes by itself: time stamps and counters."""
    lines = [_COUNTERS.sub("[0:0]", line) for line in text.splitlines() if not line.startswith("#")]
    return "\n".join(lines) + "\n"


def is_applied(plan: LoopbackPlan) -> bool:
    if plan.tool == "nft":
        return (
            _run(
                ["nft", "list", "table", "ip6" if plan.family == 6 else "ip", NFT_TABLE]
            ).returncode
            == 0
        )
    return _run([_iptables_binary(plan), "-t", "nat", "-S", PRE_CHAIN]).returncode == 0


def apply(plan: LoopbackPlan) -> list[list[str]]:
    """Add the rules unless present; return the commands that changed something.

    If a command fails half way, the ones before it are reversed (and only those:
    a chain of the same name that was already there stays) and FixError is raised.
    """
    if is_applied(plan):
        return []
    if plan.tool == "nft":
        _must(["nft", "-f", "-"], nft_script(plan))
        return [["nft", "add", "table", NFT_TABLE]]
    binary = _iptables_binary(plan)
    done: list[list[str]] = []
    try:
        for rule in iptables_rules(plan):
            command = [binary, "-t", "nat", *rule]
            _must(command)
            done.append(command)
    except FixError:
        _reverse(done)
        raise
    return done


def _reverse(commands: Sequence[Sequence[str]]) -> None:
    """Undo iptables commands, last first: -A becomes -D, -N becomes -X."""
    inverse = {"-A": "-D", "-N": "-X", "-I": "-D"}
    for command in reversed(commands):
        flag = command[3]
        if flag in inverse:
            _run([*command[:3], inverse[flag], *command[4:]])


def _drop_new_base_chains(before: Snapshot) -> None:
    """iptables-nft creates a base chain on first use and never removes it: drop the
    empty ones that the snapshot did not have."""
    for family, table, name in sorted(_nft_chains() - before.nft_chains):
        listing = _run(["nft", "-j", "list", "chain", family, table, name])
        if listing.returncode == 0 and '"rule"' not in listing.stdout:
            _run(["nft", "delete", "chain", family, table, name])


def undo(plan: LoopbackPlan) -> bool:
    """Remove what acmelb added (its chains and the jumps to them, or its table)."""
    if plan.tool == "nft":
        family = "ip6" if plan.family == 6 else "ip"
        return _run(["nft", "delete", "table", family, NFT_TABLE]).returncode == 0
    binary = _iptables_binary(plan)
    removed = False
    for builtin, chain in (("PREROUTING", PRE_CHAIN), ("POSTROUTING", POST_CHAIN)):
        jump = [builtin, "-m", "comment", "--comment", COMMENT, "-j", chain]
        while _run([binary, "-t", "nat", "-D", *jump]).returncode == 0:
            removed = True
        if _run([binary, "-t", "nat", "-F", chain]).returncode == 0:
            _run([binary, "-t", "nat", "-X", chain])
            removed = True
    return removed


def _restore(plan: LoopbackPlan, before: Snapshot, added: Sequence[Sequence[str]]) -> None:
    """Take back exactly what this run added; if the ruleset still differs, restore the
    snapshot whole with the tool's own restore."""
    if plan.tool == "nft":
        undo(plan)
    else:
        _reverse(added)
        if before.nft is not None:
            _drop_new_base_chains(before)
    if snapshot(plan) == before:
        return
    if plan.tool == "nft":
        assert before.nft is not None
        # One nft transaction: it applies whole or not at all.
        _must(["nft", "-f", "-"], "flush ruleset\n" + before.nft)
    else:
        assert before.iptables is not None
        _must([f"{_iptables_binary(plan)}-restore"], before.iptables)
    after = snapshot(plan)
    if after.iptables != before.iptables or (plan.tool == "nft" and after.nft != before.nft):
        raise FixError(
            "could not restore the previous ruleset exactly; compare it with the snapshot by hand"
        )
    if after.nft != before.nft:
        raise FixError(
            "restored the previous ruleset as iptables-save shows it, but nft list "
            "ruleset still differs (iptables-nft rebuilt a table); check it by hand"
        )


@dataclass(frozen=True)
class ApplyOutcome:
    changed: bool
    verified: bool | None  # None when no verification was asked for
    detail: str


Verifier = Callable[[], tuple[bool, str]]


def apply_and_verify(plan: LoopbackPlan, verify: Verifier | None) -> ApplyOutcome:
    """Apply idempotently; if ``verify`` fails, roll back to the identical ruleset."""
    before = snapshot(plan)
    added = apply(plan)  # takes back its own partial work if it fails
    changed = bool(added)
    if verify is None:
        return ApplyOutcome(changed, None, "rules in place (not verified)")
    try:
        ok, detail = verify()
    except BaseException:
        if changed:
            _restore(plan, before, added)
        raise
    if ok:
        return ApplyOutcome(changed, True, detail)
    if changed:
        _restore(plan, before, added)
        raise FixError(f"verification failed ({detail}); the previous ruleset was restored")
    raise FixError(f"the rules were already in place but verification fails: {detail}")
