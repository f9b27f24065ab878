"""Run acmelb's command line and SIGKILL it just before its Nth change to the state dir.

    python killer.py STATE_DIR N COUNT_FILE -- ARGS...

An audit hook (PEP 578) sees every file-system change acmelb makes (opening a
file for writing, rename/replace, symlink, unlink, mkdir, chmod) under
STATE_DIR. Just before the Nth one, the process kills itself with SIGKILL: no
handler, no ``finally``, no flush, like ``kill -9``. With N = 0 nothing is
killed and the number of changes is written to COUNT_FILE at exit, so a test
can aim at every one of them. Each change is also appended to COUNT_FILE.log.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_EVENTS = {
    "os.rename",
    "os.symlink",
    "os.remove",
    "os.mkdir",
    "os.chmod",
    "os.rmdir",
    "os.link",
    "os.truncate",
}


def main() -> None:
    state, kill_at, count_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert sys.argv[4] == "--"
    args = sys.argv[5:]
    root = os.path.realpath(state)
    seen: list[str] = []

    def under(value: object) -> bool:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        return isinstance(value, str) and os.path.abspath(value).startswith(root)

    def hook(event: str, hook_args: tuple[object, ...]) -> None:
        if event == "open":
            if (
                len(hook_args) < 3
                or not isinstance(hook_args[2], int)
                or not hook_args[2] & _WRITE_FLAGS
                or not under(hook_args[0])
            ):
                return
        elif event not in _EVENTS or not any(under(a) for a in hook_args):
            return
        elif event == "os.mkdir" and os.path.isdir(os.fspath(hook_args[0])):  # type: ignore[arg-type]
            return  # exist_ok: changes nothing
        elif event == "os.remove" and not os.path.lexists(os.fspath(hook_args[0])):  # type: ignore[arg-type]
            return  # missing_ok: changes nothing
        seen.append(f"{event} {hook_args!r}")
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def write_count() -> None:
        with open(count_file, "w") as out:
            out.write(str(len(seen)))
        with open(count_file + ".log", "w") as out:
            out.write("\n".join(seen) + "\n")

    import atexit

    if kill_at == 0:
        atexit.register(write_count)
    sys.addaudithook(hook)
    sys.argv = ["acmelb", *args]
    try:
        runpy.run_module("acmelb", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if kill_at == 0:
            write_count()
            atexit.unregister(write_count)
        os._exit(code)


if __name__ == "__main__":
    main()
