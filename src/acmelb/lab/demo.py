"""The README's main job: acmelb's story told on real lab topologies.

1. A TCP load balancer (HAProxy in TCP mode): ``acmelb issue`` on a backend
   checks the path from inside and from the internet, then gets a certificate
   from Pebble through the VIP.
2. A DNAT load balancer without NAT loopback: the self-check names
   ``nat-loopback`` and refuses to answer (the CA counts no failure);
   ``acmelb fix nat-loopback --apply`` on the LB adds the hairpin rules; the
   same ``acmelb issue`` then succeeds.
3. An HTTP-mode HAProxy that answers ACME challenges itself: the self-check
   names ``lb-intercepts-challenge``; ``acmelb fix lb-tcp`` prints the TCP
   pass-through configuration.
4. Cluster mode: three instances start ``acmelb agent`` at once behind a
   round-robin TCP HAProxy (80 and 443) with a 3-member etcd; Pebble's log
   counts one order; the CA's requests land on several instances, whose
   responders answer them; the same certificate is served on 443 through the
   VIP and by each instance; ``acmelb cluster status`` shows three members on
   one version.

Every step runs the real ``acmelb`` command in the namespace it names, so
the output shown is exactly what a user would see there. Labs are torn down
at the end, whatever happens.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acmelb.lab import cluster
from acmelb.lab.scenarios import ADDRESSES, Scenario
from acmelb.lab.topology import Lab, build

# Labs live in 198.18.0.0/15 (RFC 2544, reserved): tell the self-check to treat it as public.
LAB_PUBLIC = cluster.LAB_PUBLIC
CHECK_TIMEOUT = "2"
CLUSTER_BACKENDS = ("b1", "b2", "b3")
CLUSTER_CONVERGE_BOUND = 60.0  # seconds from the agents started to three instances serving


@dataclass(frozen=True)
class DemoEvent:
    kind: str  # "chapter" | "say" | "quote" (text, then output's lines quoted) | "command"
    text: str
    where: str = ""
    output: str = ""
    exit_code: int | None = None
    expected: bool = True  # did the command (or the check said) end as the story expects?


Emit = Callable[[DemoEvent], None]


class _Story:
    def __init__(self, emit: Emit, workdir: Path) -> None:
        self.emit = emit
        self.workdir = workdir
        self.surprises = 0

    def chapter(self, text: str) -> None:
        self.emit(DemoEvent("chapter", text))

    def say(self, text: str) -> None:
        self.emit(DemoEvent("say", text))

    def check(self, ok: bool, text: str) -> None:
        """Say ``text``, a fact the story relies on; count a surprise if it is not so."""
        self.surprises += not ok
        self.emit(DemoEvent("say", text, expected=ok))

    def quote(self, text: str, lines: Sequence[str]) -> None:
        self.emit(DemoEvent("quote", text, output="\n".join(lines)))

    def acmelb(self, lab: Lab, role: str, args: Sequence[str], *, expect: int) -> str:
        argv = [*lab.exec_prefix(role), sys.executable, "-m", "acmelb", *args]
        # One stream, in the order a person at that shell would see it.
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=180,
            check=False,
        )
        output = proc.stdout.rstrip()
        ok = proc.returncode == expect
        self.surprises += not ok
        shown = "acmelb " + shlex.join(args)
        self.emit(
            DemoEvent(
                "command",
                shown,
                where=f"{role} ({lab.ns(role)})",
                output=output,
                exit_code=proc.returncode,
                expected=ok,
            )
        )
        return output

    def issue_args(self, lab: Lab, state: Path) -> list[str]:
        assert lab.ca_directory_url and lab.ca_bundle
        return [
            "issue",
            lab.scenario.name,
            "--directory",
            lab.ca_directory_url,
            "--ca-bundle",
            str(lab.ca_bundle),
            "--state-dir",
            str(state),
            "--here",
            "inside",
            "--outside",
            lab.vantage("pub"),
            "--assume-public",
            LAB_PUBLIC,
            "--timeout",
            CHECK_TIMEOUT,
        ]


def _tcp_chapter(story: _Story) -> None:
    story.chapter("1. HAProxy in TCP mode: the certificate is issued through the VIP")
    with build(Scenario.parse("haproxy-tcp:none", ca=True)) as lab:
        story.say(
            f"Pebble and DNS on the 'internet' ({ADDRESSES.public_host}); HAProxy "
            f"forwards {ADDRESSES.vip}:80 as TCP to backend b1, where acmelb runs."
        )
        story.acmelb(lab, "b1", story.issue_args(lab, story.workdir / "tcp"), expect=0)


def _hairpin_chapter(story: _Story) -> None:
    story.chapter(
        "2. DNAT without NAT loopback: refused before the CA sees a failure, fixed, issued"
    )
    with build(Scenario.parse("dnat:none", ca=True)) as lab:
        story.say(
            "The LB DNATs the VIP to b1 but does not masquerade hairpin traffic, so b1 "
            "cannot reach its own public name."
        )
        args = story.issue_args(lab, story.workdir / "dnat")
        story.acmelb(lab, "b1", args, expect=1)
        story.say(
            "acmelb refused to answer the challenge and deactivated the "
            "authorization. Apply the NAT loopback rules on the LB:"
        )
        fix = [
            "fix",
            "nat-loopback",
            "--vip",
            lab.vip,
            "--backend",
            lab.backend_address("b1"),
            "--subnet",
            ADDRESSES.backend_subnet,
        ]
        story.acmelb(lab, "lb", [*fix, "--apply"], expect=0)
        story.acmelb(lab, "b1", args, expect=0)


def _intercept_chapter(story: _Story) -> None:
    story.chapter("3. HAProxy in HTTP mode answering ACME challenges itself")
    with build(Scenario.parse("haproxy-http-intercept:none", ca=True)) as lab:
        story.say(
            "The LB answers /.well-known/acme-challenge/<token> with another "
            "account's key authorization, as LBs with built-in Let's Encrypt do."
        )
        story.acmelb(lab, "b1", story.issue_args(lab, story.workdir / "intercept"), expect=1)
        story.say("The fix: pass port 80 (and 443) through as TCP:")
        story.acmelb(
            lab,
            "lb",
            [
                "fix",
                "lb-tcp",
                "--haproxy",
                "--vip",
                lab.vip,
                "--backend",
                lab.backend_address("b1"),
            ],
            expect=0,
        )


def _served_everywhere(lab: Lab, name: str) -> dict[str, str | None] | None:
    """Where the certificate for ``name`` is served on 443 and its fingerprint, once every
    instance has installed the same one; None before."""
    chains = {r: lab.agent_state_dir(r) / "live" / name / "fullchain.pem" for r in CLUSTER_BACKENDS}
    if not all(path.exists() for path in chains.values()):
        return None
    if len({path.read_bytes() for path in chains.values()}) != 1:
        return None
    # Round robin: three connections through the VIP reach the three instances in turn.
    seen: dict[str, str | None] = {}
    for turn in (1, 2, 3):
        seen[f"through the VIP {lab.vip}:443, connection {turn}"] = lab.tls_fingerprint("vip", name)
    for role in CLUSTER_BACKENDS:
        seen[f"directly {role} {lab.backend_address(role)}:443"] = lab.tls_fingerprint(role, name)
    return seen if None not in seen.values() else None


def _wait(condition: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def _converged(lab: Lab) -> bool:
    proc = lab.run(
        "b1",
        [
            sys.executable,
            "-m",
            "acmelb",
            "cluster",
            "status",
            "--store",
            cluster.store_url(lab),
            "--json",
        ],
        timeout=60,
    )
    try:
        return proc.returncode == 0 and bool(json.loads(proc.stdout).get("converged"))
    except ValueError:
        return False


_RESPONDER = "responder: "
_ANSWERED = "-> 200 (key authorization)"
_PROBE_UA = "UA='acmelb-probe/"
_PEBBLE_UA = "LetsEncrypt-Pebble-VA"
_HOLDER = "this member holds the lock"


def _agent_logs(lab: Lab) -> tuple[list[str], list[tuple[str, str]], dict[str, int]]:
    """The agents' log lines: the others (the lock holder's first, then each agent's in
    turn: the logs' clocks count whole seconds, interleaving them would mislead), the
    CA's requests to the responders (role, line), and how many self-check probes each
    responder answered."""
    own: dict[str, list[str]] = {}
    ca_requests: list[tuple[str, str]] = []
    probes: dict[str, int] = {}
    for role in CLUSTER_BACKENDS:
        own[role], probes[role] = [], 0
        for line in lab.agent_log(role).read_text(errors="replace").splitlines():
            if _RESPONDER not in line:
                own[role].append(line)
            elif _PROBE_UA in line:
                probes[role] += _ANSWERED in line
            else:
                ca_requests.append((role, line))
    holder_first = sorted(
        CLUSTER_BACKENDS, key=lambda r: not any(_HOLDER in line for line in own[r])
    )
    return [line for r in holder_first for line in own[r]], ca_requests, probes


def _cluster_chapter(story: _Story) -> None:
    story.chapter(
        "4. Cluster mode: three instances behind a round-robin LB, one order, "
        "the same certificate everywhere"
    )
    with build(Scenario.cluster_preset(len(CLUSTER_BACKENDS))) as lab:
        name = lab.scenario.name
        started = _start_cluster_agents(story, lab)
        served = _wait(lambda: _served_everywhere(lab, name), CLUSTER_CONVERGE_BOUND)
        took = time.monotonic() - started
        story.check(
            bool(served),
            f"Every instance serves a certificate {took:.0f} s after the agents started."
            if served
            else f"Not every instance serves the certificate after {took:.0f} s.",
        )
        _tell_one_order(story, lab)
        _tell_ca_requests(story, lab)
        if isinstance(served, dict):
            _tell_same_certificate(story, lab, served)
        _wait(lambda: _converged(lab), 20)
        story.acmelb(lab, "b1", ["cluster", "status", "--store", cluster.store_url(lab)], expect=0)


def _start_cluster_agents(story: _Story, lab: Lab) -> float:
    """Show the cluster lab, give every instance the store key, start the three agents at
    once; return when they were started (``time.monotonic``)."""
    etcd = ", ".join(e.split("//", 1)[1] for e in lab.etcd_endpoints)
    story.say(
        f"HAProxy forwards {lab.vip}:80 and :443 as TCP, round robin, to b1, b2 "
        f"and b3; each runs nginx on 443 for {lab.scenario.name}, and nothing yet on 80. "
        f"etcd has 3 members ({etcd}). Every instance gets the same store key:"
    )
    key = cluster.store_key_path(lab)
    story.acmelb(lab, "b1", ["cluster", "keygen", str(key)], expect=0)
    config = cluster.write_agent_config(lab, "b1")
    story.quote(
        f"and an agent.toml like b1's ({config}):",
        [line for line in config.read_text().splitlines() if line.strip()],
    )
    started = time.monotonic()
    cluster.start_agents(lab, CLUSTER_BACKENDS)
    argv = shlex.join(
        ["acmelb", *cluster.agent_argv(lab, lab.state_dir / "bI-agent" / "agent.toml", key)[3:]]
    )
    story.say(
        f"Started at once in b1, b2 and b3: {argv} (each its own agent.toml). "
        "Waiting for 443 to serve the certificate everywhere..."
    )
    return started


def _tell_one_order(story: _Story, lab: Lab) -> None:
    """Pebble's log: one order, one certificate for the whole cluster."""
    counts = lab.pebble_counts()
    story.check(
        counts.orders == 1 and counts.issued == 1,
        f"Pebble's log ({lab.pebble_log.name}): {counts.orders} order "
        f'("Added order" lines), {counts.issued} certificate issued: the agents '
        "agreed through etcd on one instance ordering for all.",
    )


def _tell_ca_requests(story: _Story, lab: Lab) -> None:
    """The agents' logs, and the CA's validation requests answered by several instances."""
    events, ca_requests, probes = _agent_logs(lab)
    story.quote(
        "The agents' logs (their responders' lines apart), the lock holder's first:", events
    )
    story.quote(
        f"The CA's validation requests (UA {_PEBBLE_UA!r}), as the agents' "
        f"responders logged them; the client {ADDRESSES.lb_backend} is "
        "HAProxy's side of the backend network:",
        [line for _, line in ca_requests],
    )
    answered = sorted({role for role, line in ca_requests if _ANSWERED in line})
    probed = ", ".join(f"{n} on {r}" for r, n in probes.items())
    story.check(
        len(answered) >= 2,
        f"{len(answered)} instances answered the CA ({', '.join(answered)}), "
        "although only the lock holder ordered: every instance serves every "
        f"pending token of the cluster. (The self-check's probes, {probed}, "
        "were answered the same way.)",
    )


def _tell_same_certificate(story: _Story, lab: Lab, served: dict[str, str | None]) -> None:
    """The fingerprints served on 443 (``_served_everywhere``), all of the installed one."""
    name = lab.scenario.name
    reference = cluster.file_fingerprint(
        lab.agent_state_dir("b1") / "live" / name / "fullchain.pem"
    )
    width = max(len(where) for where in served) + 1
    story.quote(
        f"SHA-256 of the certificate served for {name} on 443 (openssl s_client):",
        [f"{where + ':':<{width}} {fp}" for where, fp in served.items()],
    )
    same = set(served.values()) == {reference}
    story.check(
        same,
        f"The same certificate everywhere, the one in each live/{name}/fullchain.pem."
        if same
        else "The instances serve different certificates.",
    )


CHAPTERS = (_tcp_chapter, _hairpin_chapter, _intercept_chapter, _cluster_chapter)


def run_demo(emit: Emit, *, chapters: Sequence[int] = (1, 2, 3, 4)) -> int:
    """Tell the story; return how many commands did not end as the story expects."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="acmelb-demo-") as tmp:
        story = _Story(emit, Path(tmp))
        for number in chapters:
            CHAPTERS[number - 1](story)
    story.say(
        f"Done in {time.monotonic() - started:.0f} s; every namespace and process of "
        "the demo is gone."
    )
    return story.surprises
