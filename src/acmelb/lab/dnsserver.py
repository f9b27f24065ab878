"""A small authoritative DNS server for the lab and the tests (dnslib).

Pebble needs a resolver (``-dnsserver``); so do diagnosis tests of NXDOMAIN,
SERVFAIL, CAA and split horizon. The zone is a JSON file, re-read whenever it
changes, so a test can rewrite records while the server runs::

    {
      "default": {"A": ["127.0.0.1"]},          # answer for names not listed (optional)
      "names": {
        "app.test": {"A": ["198.18.0.10"], "AAAA": ["2001:db8::10"],
                      "CAA": ["0 issue \\"letsencrypt.org\\""]},
        "gone.test": {"rcode": "NXDOMAIN"},
        "broken.test": {"rcode": "SERVFAIL"},
        "*.fleet.test": {"A": ["198.18.0.10"]}    # every name below fleet.test
      }
    }

Run it as ``python -m acmelb.lab.dnsserver --listen 127.0.0.1:8053 --zone zone.json``
(UDP and TCP); ``DnsServer`` starts that as a child process, optionally inside a
network namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from acmelb.errors import LabError

Zone = Mapping[str, Any]


class _ZoneFile:
    """The zone, reloaded when the file's mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = -1.0
        self._zone: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self) -> dict[str, Any]:
        with self._lock:
            try:
                stamp = self.path.stat().st_mtime_ns
            except OSError:
                return self._zone
            if stamp != self._stamp:
                try:
                    self._zone = json.loads(self.path.read_text())
                    self._stamp = stamp
                except (OSError, ValueError):
                    pass  # a half-written file: keep serving the previous zone
            return self._zone


def _lookup(zone: dict[str, Any], name: str) -> dict[str, Any] | None:
    names = {k.rstrip(".").lower(): v for k, v in zone.get("names", {}).items()}
    key = name.rstrip(".").lower()
    if key in names:
        return dict(names[key])
    # "*.zone" answers every name below zone (the closest wildcard wins).
    labels = key.split(".")
    for start in range(1, len(labels)):
        wildcard = "*." + ".".join(labels[start:])
        if wildcard in names:
            return dict(names[wildcard])
    default = zone.get("default")
    return dict(default) if default is not None else None


def answer_query(zone: dict[str, Any], packet: bytes) -> bytes:
    """Build the reply for one DNS query packet."""
    from dnslib import AAAA, CAA, QTYPE, RCODE, RR, A, DNSRecord

    request = DNSRecord.parse(packet)
    reply = request.reply()
    reply.header.aa = 1
    qname = str(request.q.qname)
    qtype = QTYPE[request.q.qtype]
    entry = _lookup(zone, qname)
    if entry is None:
        reply.header.rcode = RCODE.NXDOMAIN
        return bytes(reply.pack())
    rcode = entry.get("rcode")
    if rcode:
        reply.header.rcode = getattr(RCODE, rcode)
        return bytes(reply.pack())
    ttl = int(entry.get("ttl", 5))
    if qtype == "A":
        for address in entry.get("A", []):
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=ttl))
    elif qtype == "AAAA":
        for address in entry.get("AAAA", []):
            reply.add_answer(RR(qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ttl))
    elif qtype == "CAA":
        for text in entry.get("CAA", []):
            flags, tag, value = text.split(" ", 2)
            reply.add_answer(
                RR(qname, QTYPE.CAA, rdata=CAA(int(flags), tag, value.strip('"')), ttl=ttl)
            )
    return bytes(reply.pack())


def serve(listen_host: str, port: int, zone_path: Path) -> None:
    zone = _ZoneFile(zone_path)
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET

    class UDPHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            # A malformed packet gets no answer, like real servers.
            with contextlib.suppress(Exception):
                sock.sendto(answer_query(zone.get(), data), self.client_address)

    class TCPHandler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            size = self.rfile.read(2)
            if len(size) != 2:
                return
            data = self.rfile.read(int.from_bytes(size, "big"))
            try:
                out = answer_query(zone.get(), data)
            except Exception:
                return
            self.wfile.write(len(out).to_bytes(2, "big") + out)

    class UDPServer(socketserver.ThreadingUDPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True

    class TCPServer(socketserver.ThreadingTCPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True

    udp = UDPServer((listen_host, port), UDPHandler)
    tcp = TCPServer((listen_host, port), TCPHandler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    print("ready", flush=True)
    udp.serve_forever()


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class DnsServer:
    """The DNS server as a child process; a context manager that always stops it."""

    def __init__(
        self,
        zone: Zone,
        *,
        listen: str = "127.0.0.1:8053",
        netns_prefix: Sequence[str] = (),
        workdir: Path | None = None,
    ) -> None:
        self.listen = listen
        self._prefix = list(netns_prefix)
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="acmelb-dns-"))
        self.zone_path = self.workdir / "zone.json"
        self.set_zone(zone)
        self.process: subprocess.Popen[str] | None = None

    def set_zone(self, zone: Zone) -> None:
        """Replace the zone atomically; the server picks it up on its next query."""
        tmp = self.zone_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(zone))
        os.replace(tmp, self.zone_path)
        # Make the change visible even within the file system's mtime granularity.
        now = time.time_ns()
        os.utime(self.zone_path, ns=(now, now))

    def start(self) -> DnsServer:
        cmd = [
            *self._prefix,
            sys.executable,
            "-m",
            "acmelb.lab.dnsserver",
            "--listen",
            self.listen,
            "--zone",
            str(self.zone_path),
        ]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            err = self.process.stderr.read() if self.process.stderr else ""
            self.stop()
            raise LabError(
                f"DNS server on {self.listen} did not start: "
                f"{err.strip().splitlines()[-1:] or shlex.join(cmd)}"
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        if self._own_dir:
            for path in self.workdir.glob("*"):
                path.unlink(missing_ok=True)
            self.workdir.rmdir()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acmelb.lab.dnsserver")
    parser.add_argument("--listen", default="127.0.0.1:8053", help="HOST:PORT (UDP and TCP)")
    parser.add_argument("--zone", required=True, type=Path, help="zone JSON file")
    args = parser.parse_args(argv)
    host, port = _split_hostport(args.listen)
    try:
        serve(host, port, args.zone)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"cannot listen on {args.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
