"""Certificate and account storage, laid out like certbot's.

::

    STATE/
      accounts/<host[_port]>/<path>/   private_key.json (0600), regr.json, meta.json
      archive/NAME/                    cert1.pem chain1.pem fullchain1.pem privkey1.pem ...
      live/NAME/          {cert,chain,fullchain,privkey}.pem -> ../../archive/NAME/*N.pem
      renewal/NAME.json                how to renew NAME (names, directory, solver, ...)
      locks/NAME.lock                  one issuance or renewal per name at a time

NAME is the certificate's first name as normalised (``acmelb.names``): a DNS name, or
for an IP-address certificate the address itself, as certbot names it (IPv6 in its
compressed form, colons and all: ``live/2001:db8::1/``; a Linux file name may hold ':').

Every file is written to a temporary name, fsynced and renamed; keys and
directories are created 0600/0700 from the first byte. A new version goes to
``archive/`` completely before ``live/`` moves, so a failed or killed run
never replaces a good certificate with a partial one. ``live/NAME`` moves to
the new version in one atomic step (its four links are made in a staging
directory that takes its place), so nobody ever sees the certificate of one
version with the key of another. What a killed run leaves behind (temp files,
a staging directory) is dropped by the next run under the lock (``repair``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acmelb.errors import StateError

KINDS = ("cert", "chain", "fullchain", "privkey")
_VERSIONED = re.compile(r"^(cert|chain|fullchain|privkey)(\d+)\.pem$")
_SWITCH_MARKER = ".switching"
TMP_SUFFIX = ".acmelb-tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700; tighten an existing one."""
    old_umask = os.umask(0o077)
    try:
        path.mkdir(parents=True, exist_ok=True)
    finally:
        os.umask(old_umask)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never a part.

    The temporary file is created with its final mode, so a key is never
    readable by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened it
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _atomic_symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _temp_name(path: Path) -> re.Pattern[str]:
    """What ``atomic_write`` and ``Store._switch`` call their temporary ``path``."""
    return re.compile(rf"\.{re.escape(path.name)}\.\d+{re.escape(TMP_SUFFIX)}")


def remove_stale_temps(directory: Path, only: re.Pattern[str] | None = None) -> None:
    """Temp files (and staging directories) of killed runs: never read by anyone, safe
    to drop under the lock that guards ``directory`` (or, with ``only``, the names
    that match it)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in directory.iterdir():
            if entry.name.endswith(TMP_SUFFIX) and (only is None or only.fullmatch(entry.name)):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directory entries atomically (Linux renameat2); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # this file system (or kernel) cannot exchange
    raise OSError(err, os.strerror(err), str(b))


@dataclass(frozen=True)
class Lineage:
    """One certificate name in the store."""

    name: str
    live_dir: Path
    archive_dir: Path
    renewal_path: Path

    def path(self, kind: str) -> Path:
        return self.live_dir / f"{kind}.pem"

    def current_version(self) -> int | None:
        versions = {self._linked_version(kind) for kind in KINDS}
        if len(versions) == 1:
            return versions.pop()
        return None

    def _linked_version(self, kind: str) -> int | None:
        try:
            target = os.readlink(self.path(kind))
        except OSError:
            return None
        match = _VERSIONED.match(Path(target).name)
        return int(match.group(2)) if match else None

    def exists(self) -> bool:
        return self.current_version() is not None

    def read(self, kind: str) -> bytes:
        return self.path(kind).read_bytes()


class Store:
    """The state directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------
    def lineage(self, name: str) -> Lineage:
        return Lineage(
            name=name,
            live_dir=self.root / "live" / name,
            archive_dir=self.root / "archive" / name,
            renewal_path=self.root / "renewal" / f"{name}.json",
        )

    def lineages(self) -> list[Lineage]:
        live = self.root / "live"
        if not live.is_dir():
            return []
        return [
            self.lineage(p.name)
            for p in sorted(live.iterdir())
            if p.is_dir() and not p.name.startswith(".")
        ]

    def account_dir(self, directory_url: str) -> Path:
        parsed = urllib.parse.urlsplit(directory_url)
        host = (parsed.hostname or "unknown").replace(":", "_")
        if parsed.port:
            host = f"{host}_{parsed.port}"
        parts = [p for p in parsed.path.split("/") if p and p not in (".", "..")]
        return self.root.joinpath("accounts", host, *parts)

    def prepare(self) -> None:
        try:
            ensure_private_dir(self.root)
            for sub in ("accounts", "archive", "live", "renewal", "locks"):
                ensure_private_dir(self.root / sub)
        except OSError as exc:
            raise StateError(
                f"state directory {self.root} is not usable: {exc.strerror or exc}"
            ) from exc

    # -- locking --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 120.0) -> Iterator[None]:
        """Hold the per-name lock; wait up to ``timeout`` seconds for another run."""
        self.prepare()
        path = self.root / "locks" / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise StateError(
                            f"another acmelb run holds the lock for {name} ({path}); "
                            f"waited {timeout:.0f} s"
                        ) from exc
                    time.sleep(0.05)
            self.repair(name)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    # -- certificates ---------------------------------------------------------
    def _versions(self, lineage: Lineage) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in lineage.archive_dir.iterdir():
                match = _VERSIONED.match(entry.name)
                if match:
                    found.setdefault(int(match.group(2)), set()).add(match.group(1))
        return found

    def repair(self, name: str) -> None:
        """Finish a live/ switch that a killed run left half done (call under the lock)."""
        lineage = self.lineage(name)
        remove_stale_temps(lineage.archive_dir)
        remove_stale_temps(lineage.live_dir)
        # Staging directories of a killed switch, and the old live/ a switch left behind.
        remove_stale_temps(lineage.live_dir.parent, _temp_name(lineage.live_dir))
        remove_stale_temps(lineage.renewal_path.parent, _temp_name(lineage.renewal_path))
        marker = lineage.live_dir / _SWITCH_MARKER
        if marker.exists():
            try:
                version = int(marker.read_text().strip())
            except ValueError:
                version = -1
            if self._versions(lineage).get(version) == set(KINDS):
                self._link_version(lineage, version)
            marker.unlink(missing_ok=True)

    def _link_version(self, lineage: Lineage, version: int) -> None:
        for kind in KINDS:
            target = os.path.relpath(lineage.archive_dir / f"{kind}{version}.pem", lineage.live_dir)
            _atomic_symlink(target, lineage.path(kind))
        _fsync_dir(lineage.live_dir)

    def save(
        self,
        name: str,
        *,
        privkey_pem: bytes,
        cert_pem: bytes,
        chain_pem: bytes,
        renewal: dict[str, Any],
    ) -> Lineage:
        """Store a new version of ``name`` and point live/ at it (call under the lock)."""
        self.prepare()
        lineage = self.lineage(name)
        ensure_private_dir(lineage.archive_dir)
        versions = self._versions(lineage)
        version = max(versions, default=0) + 1
        contents = {
            "cert": (cert_pem, 0o644),
            "chain": (chain_pem, 0o644),
            "fullchain": (cert_pem + chain_pem, 0o644),
            "privkey": (privkey_pem, 0o600),
        }
        for kind, (data, mode) in contents.items():
            atomic_write(lineage.archive_dir / f"{kind}{version}.pem", data, mode)
        ensure_private_dir(lineage.renewal_path.parent)
        atomic_write(
            lineage.renewal_path,
            json.dumps(renewal, indent=2, sort_keys=True).encode() + b"\n",
            0o600,
        )
        self._switch(lineage, version)
        return lineage

    def _switch(self, lineage: Lineage, version: int) -> None:
        """Point live/NAME at ``version``: all four links at once.

        The links are made in a staging directory next to live/NAME, which then
        takes its place in one atomic step (a rename, or renameat2's exchange when
        live/NAME exists), so a reader or a kill sees the old set or the new set,
        never a certificate of one version with the key of another.
        """
        live_root = lineage.live_dir.parent
        staging = live_root / f".{lineage.name}.{os.getpid()}{TMP_SUFFIX}"
        shutil.rmtree(staging, ignore_errors=True)
        ensure_private_dir(staging)
        for kind in KINDS:
            target = os.path.relpath(lineage.archive_dir / f"{kind}{version}.pem", lineage.live_dir)
            os.symlink(target, staging / f"{kind}.pem")
        _fsync_dir(staging)
        if not lineage.live_dir.exists():
            os.rename(staging, lineage.live_dir)
        elif _exchange(staging, lineage.live_dir):
            shutil.rmtree(staging)  # now the previous live/NAME
        else:
            # No atomic exchange here: switch link by link; the marker makes a switch
            # interrupted between two links resumable (``repair``).
            shutil.rmtree(staging)
            atomic_write(lineage.live_dir / _SWITCH_MARKER, str(version).encode(), 0o600)
            self._link_version(lineage, version)
            (lineage.live_dir / _SWITCH_MARKER).unlink()
        _fsync_dir(live_root)
