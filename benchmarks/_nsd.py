"""A real authoritative DNS server for the benchmarks: Debian's NSD, on 127.0.0.1.

The Python server in ``_dns.py`` spends about a third of a millisecond of CPU per
answer, on the same two cores as the client it serves: at 3,000 questions a run it
takes a core-second from the program measured. NSD answers in microseconds. The
zone is ``ORIGIN`` with one A (and/or AAAA) record per name; other types of those
names get NOERROR with no answer, as from a real zone.

    proc = start_nsd(workdir, port, "fleet.test", {"n1.fleet.test": {"A": ["127.0.10.1"]}})
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

CONF = """server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    database: ""
    zonesdir: "{dir}"
    pidfile: "{dir}/nsd.pid"
    xfrdfile: "{dir}/xfrd.state"
    zonelistfile: "{dir}/zone.list"
    logfile: "{dir}/nsd.log"
    username: ""
    chroot: ""
    server-count: 1
    # no response rate limiting: it is on by default (200 answers/s to one network) and
    # would turn a fleet's burst of questions into timeouts
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
    # answers without the NS and glue records a resolver does not need (as large
    # authoritative servers answer)
    minimal-responses: yes
    verbosity: 0
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "{origin}"
    zonefile: "{origin}.zone"
"""


def nsd_path() -> str | None:
    return shutil.which("nsd") or ("/usr/sbin/nsd" if Path("/usr/sbin/nsd").exists() else None)


def zone_text(origin: str, names: dict[str, dict[str, list[str]]]) -> str:
    lines = [
        f"$ORIGIN {origin}.",
        "$TTL 300",
        f"@ IN SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300",
        f"@ IN NS ns.{origin}.",
        "ns IN A 127.0.0.1",
    ]
    for name, records in names.items():
        owner = name.rstrip(".") + "."
        for rtype in ("A", "AAAA"):
            lines += [f"{owner} IN {rtype} {address}" for address in records.get(rtype, ())]
    return "\n".join(lines) + "\n"


def start_nsd(
    work: Path, port: int, origin: str, names: dict[str, dict[str, list[str]]]
) -> subprocess.Popen[bytes]:
    """NSD in the foreground serving ``origin``; returns once it answers."""
    nsd = nsd_path()
    if nsd is None:
        raise FileNotFoundError("nsd (Debian package nsd)")
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{origin}.zone").write_text(zone_text(origin, names))
    conf = work / "nsd.conf"
    conf.write_text(CONF.format(port=port, dir=work, origin=origin))
    proc = subprocess.Popen(
        [nsd, "-d", "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_answering(port, f"ns.{origin}", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def _wait_answering(port: int, name: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    query = _a_query(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"nsd exited {proc.returncode}: {err.strip()[-300:]}")
            sock.sendto(query, ("127.0.0.1", port))
            try:
                data, _ = sock.recvfrom(512)
            except OSError:
                continue
            if data[:2] == query[:2]:
                return
    raise RuntimeError("nsd did not answer within 30 s")


def _a_query(name: str) -> bytes:
    header = struct.pack("!HHHHHH", 0x5A5A, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)
