"""Shared helpers of the benchmarks: timing child processes, statistics, the local CA,
the certbot venv, and the tools (wrk, nginx) found on this machine.

Every benchmark starts what it needs, talks only to 127.0.0.0/8, stops only the
processes it started (by PID) and prints medians over several runs with min/max and
the acmelb/baseline ratio measured pair by pair (run i of acmelb against run i of the
baseline, taken one after the other).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = Path(os.environ.get("ACMELB_BENCH_CACHE") or HERE / ".cache")
PYTHON = sys.executable
BIN = Path(PYTHON).parent
# What users run: the console script of the venv acmelb is installed in.
ACMELB = [str(BIN / "acmelb")] if (BIN / "acmelb").exists() else [PYTHON, "-m", "acmelb"]

if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))


class Unavailable(Exception):
    """A tool the benchmark compares against cannot be found or installed."""


# -- running and timing ---------------------------------------------------------------------


@dataclass
class Run:
    cmd: list[str]
    seconds: float
    returncode: int
    maxrss_kib: int  # peak resident memory of the child (ru_maxrss)
    stdout: str
    stderr: str
    timed_out: bool = False
    tree_peak_kib: int = 0  # with sample_tree: peak of the summed PSS of the process tree
    cpu_seconds: float = 0.0  # user + system time of the child and what it waited for

    @property
    def peak_mib(self) -> float:
        """The larger of ru_maxrss and the sampled tree peak (worker processes count)."""
        return max(self.maxrss_kib, self.tree_peak_kib) / 1024

    def check(self) -> Run:
        if self.returncode != 0 or self.timed_out:
            what = "timed out" if self.timed_out else f"exited {self.returncode}"
            tail = (self.stderr.strip() or self.stdout.strip())[-2000:]
            raise RuntimeError(f"{' '.join(self.cmd[:6])} ... {what}: {tail}")
        return self


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (a forked worker's) counted once overall."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss_kib(pid)


def run(
    cmd: Sequence[str],
    *,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin_text: str | None = None,
    sample_tree: bool = False,
) -> Run:
    """Run ``cmd`` to completion: wall time, exit code, peak RSS (os.wait4), output.

    ``sample_tree``: also sample the summed PSS of the child and its descendants every
    20 ms (ru_maxrss sees one process; a fleet diagnosis forks workers).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryFile() as inp,
    ):
        if stdin_text is not None:
            inp.write(stdin_text.encode())
            inp.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            stdin=inp,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started

        timer = threading.Timer(timeout, kill)
        timer.start()
        peak = [0]
        finished = threading.Event()

        def sample() -> None:
            while not finished.wait(0.02):
                peak[0] = max(peak[0], sum(pss_kib(p) for p in tree(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        if sample_tree:
            sampler.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            finished.set()
            if sample_tree:
                sampler.join()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            list(cmd),
            seconds,
            proc.returncode,
            int(usage.ru_maxrss),
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            timed_out.is_set(),
            peak[0],
            usage.ru_utime + usage.ru_stime,
        )


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    """Stop one process this benchmark started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kib(pid: int) -> int:
    """Resident memory of one process now (VmRSS), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def can_bind(host: str, port: int) -> bool:
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        return True
    except OSError:
        return False


# -- statistics and printing ---------------------------------------------------------------


@dataclass
class Series:
    label: str
    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def text(self) -> str:
        if not self.values:
            return "n/a"
        return (
            f"{fmt(self.median)} {self.unit} (min {fmt(min(self.values))}, "
            f"max {fmt(max(self.values))}, n={len(self.values)})"
        )


def fmt(value: float) -> str:
    if value != value:  # nan
        return "n/a"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratios(a: Series, b: Series) -> Series:
    """a[i] / b[i] for every pair measured one after the other."""
    out = Series(f"{a.label} / {b.label}", "x")
    for x, y in zip(a.values, b.values, strict=False):
        if y:
            out.add(x / y)
    return out


def header(title: str) -> None:
    print(f"\n== {title}", flush=True)


def show(*series: Series) -> None:
    width = max(len(s.label) for s in series)
    for s in series:
        print(f"  {s.label.ljust(width)}  {s.text()}", flush=True)


def goal(text: str, met: bool | None) -> None:
    state = "n/a" if met is None else ("MET" if met else "NOT MET")
    print(f"  goal: {text}: {state}", flush=True)


def note(text: str) -> None:
    print(f"  note: {text}", flush=True)


# -- the local CA -----------------------------------------------------------------------------


class BenchCA:
    """Pebble (PEBBLE_VA_NOSLEEP=1) and its DNS on 127.0.0.1; every name -> 127.0.0.1.

    Pebble 2.4 can deadlock under concurrent orders: ``hung()`` tells, ``restart()``
    starts a fresh one (its accounts are gone: register again).
    """

    def __init__(self, workdir: Path) -> None:
        from acmelb.lab.dnsserver import DnsServer
        from acmelb.lab.pebble import PebbleCA, pebble_binary

        if pebble_binary() is None:
            raise Unavailable("pebble is not installed (apt-get install pebble)")
        self.workdir = workdir
        self.http_port = free_port()
        dns_port = free_port()
        self.dns = DnsServer(
            {"default": {"A": ["127.0.0.1"]}}, listen=f"127.0.0.1:{dns_port}", workdir=workdir
        ).start()
        try:
            self.pebble = PebbleCA(
                port=0,
                management_port=0,
                validation_port=self.http_port,
                dns_server=f"127.0.0.1:{dns_port}",
                workdir=workdir,
            ).start()
        except BaseException:
            self.dns.stop()
            raise
        self.restarts = 0

    @property
    def directory(self) -> str:
        return self.pebble.directory_url

    @property
    def bundle(self) -> Path:
        return self.pebble.ca_bundle

    def hung(self) -> bool:
        return self.pebble.is_hung()

    def restart(self, why: str) -> None:
        self.restarts += 1
        print(f"  !! Pebble {why}: restarting it (restart #{self.restarts})", flush=True)
        self.pebble.restart()

    def close(self) -> None:
        self.pebble.stop()
        self.dns.stop()


@contextlib.contextmanager
def bench_ca() -> Iterator[BenchCA]:
    with tempfile.TemporaryDirectory(prefix="acmelb-bench-ca-") as tmp:
        ca = BenchCA(Path(tmp))
        try:
            yield ca
        finally:
            ca.close()


def acmelb_ca_args(ca: BenchCA, state: Path) -> list[str]:
    return ["--directory", ca.directory, "--ca-bundle", str(ca.bundle), "--state-dir", str(state)]


# -- certbot in its own venv -----------------------------------------------------------------

CERTBOT_VENV = CACHE / "certbot-venv"


def certbot(install: bool = True) -> Path:
    """certbot from PyPI in benchmarks/.cache/certbot-venv (installed on first use)."""
    exe = CERTBOT_VENV / "bin" / "certbot"
    if exe.exists():
        return exe
    if not install:
        raise Unavailable(f"certbot is not installed in {CERTBOT_VENV}")
    base = shutil.which("python3") or PYTHON
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"  (installing certbot from PyPI into {CERTBOT_VENV}, once)", flush=True)
    steps = [
        [base, "-m", "venv", str(CERTBOT_VENV)],
        [
            str(CERTBOT_VENV / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "certbot",
        ],
    ]
    for step in steps:
        result = run(step, timeout=600)
        if result.returncode != 0:
            shutil.rmtree(CERTBOT_VENV, ignore_errors=True)
            raise Unavailable(f"cannot install certbot: {(result.stderr or result.stdout)[-300:]}")
    return exe


def certbot_dirs(root: Path) -> list[str]:
    return [
        "--config-dir",
        str(root / "config"),
        "--work-dir",
        str(root / "work"),
        "--logs-dir",
        str(root / "logs"),
    ]


def certbot_env(ca: BenchCA) -> dict[str, str]:
    return {"REQUESTS_CA_BUNDLE": str(ca.bundle)}


def certbot_register(exe: Path, ca: BenchCA, root: Path) -> None:
    run(
        [
            str(exe),
            "register",
            "--non-interactive",
            "--agree-tos",
            "--register-unsafely-without-email",
            "--server",
            ca.directory,
            *certbot_dirs(root),
        ],
        env=certbot_env(ca),
        timeout=120,
    ).check()


def certbot_certonly(exe: Path, ca: BenchCA, root: Path, name: str, timeout: float = 120) -> Run:
    return run(
        [
            str(exe),
            "certonly",
            "--standalone",
            "--non-interactive",
            "--agree-tos",
            "--server",
            ca.directory,
            "--http-01-port",
            str(ca.http_port),
            "--http-01-address",
            "127.0.0.1",
            "--preferred-challenges",
            "http",
            "-d",
            name,
            *certbot_dirs(root),
        ],
        env=certbot_env(ca),
        timeout=timeout,
    )


def acmelb_register(ca: BenchCA, state: Path) -> None:
    run([*ACMELB, "account", "register", *acmelb_ca_args(ca, state)], timeout=60).check()


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )
    if path is None:
        raise Unavailable(f"{name} is not installed (apt-get install {package})")
    return path
