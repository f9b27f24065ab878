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

Every step runs the real ``acmelb`` command in the namespace it names, so
the output shown is exactly what a user would see there. Labs are torn down
at the end, whatever happens.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from acmelb.lab.scenarios import ADDRESSES, Scenario
from acmelb.lab.topology import Lab, build

# Labs live in 198.18.0.0/15 (RFC 2544, reserved): tell the self-check to treat it as public.
LAB_PUBLIC = "198.18.0.0/15"
CHECK_TIMEOUT = "2"


@dataclass(frozen=True)
class DemoEvent:
    kind: str  # "chapter" | "say" | "command"
    text: str
    where: str = ""
    output: str = ""
    exit_code: int | None = None
    expected: bool = True  # did the command end the way the story says it should?


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

    def acmelb(self, lab: Lab, role: str, args: Sequence[str], *, expect: int) -> str:
        argv = [*lab.exec_prefix(role), sys.executable, "-m", "acmelb", *args]
        # One stream, in the order a person at that shell would see it.
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, timeout=180, check=False)
        output = proc.stdout.rstrip()
        ok = proc.returncode == expect
        self.surprises += not ok
        shown = "acmelb " + shlex.join(args)
        self.emit(DemoEvent("command", shown, where=f"{role} ({lab.ns(role)})", output=output,
                            exit_code=proc.returncode, expected=ok))
        return output

    def issue_args(self, lab: Lab, state: Path) -> list[str]:
        assert lab.ca_directory_url and lab.ca_bundle
        return ["issue", lab.scenario.name, "--directory", lab.ca_directory_url,
                "--ca-bundle", str(lab.ca_bundle), "--state-dir", str(state),
                "--here", "inside", "--outside", lab.vantage("pub"),
                "--assume-public", LAB_PUBLIC, "--timeout", CHECK_TIMEOUT]


def _tcp_chapter(story: _Story) -> None:
    story.chapter("1. HAProxy in TCP mode: the certificate is issued through the VIP")
    with build(Scenario.parse("haproxy-tcp:none", ca=True)) as lab:
        story.say(f"Pebble and DNS on the 'internet' ({ADDRESSES.public_host}); HAProxy "
                  f"forwards {ADDRESSES.vip}:80 as TCP to backend b1, where acmelb runs.")
        story.acmelb(lab, "b1", story.issue_args(lab, story.workdir / "tcp"), expect=0)


def _hairpin_chapter(story: _Story) -> None:
    story.chapter("2. DNAT without NAT loopback: refused before the CA sees a failure, "
                  "fixed, issued")
    with build(Scenario.parse("dnat:none", ca=True)) as lab:
        story.say("The LB DNATs the VIP to b1 but does not masquerade hairpin traffic, so b1 "
                  "cannot reach its own public name.")
        args = story.issue_args(lab, story.workdir / "dnat")
        story.acmelb(lab, "b1", args, expect=1)
        story.say("acmelb refused to answer the challenge and deactivated the "
                  "authorization. Apply the NAT loopback rules on the LB:")
        fix = ["fix", "nat-loopback", "--vip", lab.vip, "--backend",
               lab.backend_address("b1"), "--subnet", ADDRESSES.backend_subnet]
        story.acmelb(lab, "lb", [*fix, "--apply"], expect=0)
        story.acmelb(lab, "b1", args, expect=0)


def _intercept_chapter(story: _Story) -> None:
    story.chapter("3. HAProxy in HTTP mode answering ACME challenges itself")
    with build(Scenario.parse("haproxy-http-intercept:none", ca=True)) as lab:
        story.say("The LB answers /.well-known/acme-challenge/<token> with another "
                  "account's key authorization, as LBs with built-in Let's Encrypt do.")
        story.acmelb(lab, "b1", story.issue_args(lab, story.workdir / "intercept"), expect=1)
        story.say("The fix: pass port 80 (and 443) through as TCP:")
        story.acmelb(lab, "lb", ["fix", "lb-tcp", "--haproxy", "--vip", lab.vip, "--backend",
                                 lab.backend_address("b1")], expect=0)


CHAPTERS = (_tcp_chapter, _hairpin_chapter, _intercept_chapter)


def run_demo(emit: Emit, *, chapters: Sequence[int] = (1, 2, 3)) -> int:
    """Tell the story; return how many commands did not end as the story expects."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="acmelb-demo-") as tmp:
        story = _Story(emit, Path(tmp))
        for number in chapters:
            CHAPTERS[number - 1](story)
    story.say(f"Done in {time.monotonic() - started:.0f} s; every namespace and process of "
              "the demo is gone.")
    return story.surprises
