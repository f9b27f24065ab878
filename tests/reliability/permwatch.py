"""Run acmelb's command line with umask 0 and check the state dir's modes at every change.

    python permwatch.py STATE_DIR REPORT -- ARGS...

Just before every file-system change acmelb makes under STATE_DIR (an audit
hook, PEP 578), and once at exit, every directory there must be 0700 and every
file 0600, except the public certificate files (cert/chain/fullchain, 0644).
So a file created wider and narrowed afterwards is caught at the very next
step. REPORT gets one JSON object: the number of checks and the violations.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import stat
import sys

_PUBLIC = re.compile(r"^\.?(cert|chain|fullchain)\d*\.pem(\.\d+\.acmelb-tmp)?$")
_EVENTS = {"open", "os.rename", "os.symlink", "os.remove", "os.mkdir", "os.chmod", "os.rmdir"}


def main() -> None:
    state, report = os.path.abspath(sys.argv[1]), sys.argv[2]
    assert sys.argv[3] == "--"
    checks = 0
    violations: list[str] = []
    busy = False

    def check() -> None:
        nonlocal checks
        checks += 1
        if not os.path.lexists(state):
            return
        for root, dirs, files in os.walk(state):
            for name in dirs:
                path = os.path.join(root, name)
                mode = stat.S_IMODE(os.lstat(path).st_mode)
                if not os.path.islink(path) and mode != 0o700:
                    violations.append(f"dir {path} {mode:o}")
            for name in files:
                path = os.path.join(root, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                mode = stat.S_IMODE(st.st_mode)
                allowed = {0o600, 0o644} if _PUBLIC.match(name) else {0o600}
                if mode not in allowed:
                    violations.append(f"file {path} {mode:o}")
        mode = stat.S_IMODE(os.lstat(state).st_mode)
        if mode != 0o700:
            violations.append(f"state dir {state} {mode:o}")

    def hook(event: str, args: tuple[object, ...]) -> None:
        nonlocal busy
        if busy or event not in _EVENTS or not args:
            return
        first = args[0]
        if isinstance(first, os.PathLike):
            first = os.fspath(first)
        # fchmod (an fd, no path) may be narrowing a file just created too wide: look now.
        by_fd = event == "os.chmod" and isinstance(first, int)
        if not by_fd and (
            not isinstance(first, str) or not os.path.abspath(first).startswith(state)
        ):
            return
        busy = True
        try:
            check()
        finally:
            busy = False

    def finish(code: int) -> None:
        nonlocal busy
        busy = True
        check()
        with open(report, "w") as out:
            json.dump({"checks": checks, "violations": violations, "exit": code}, out)
        os._exit(code)

    os.umask(0)  # the widest umask a caller could have
    sys.addaudithook(hook)
    sys.argv = ["acmelb", *sys.argv[4:]]
    try:
        runpy.run_module("acmelb", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        finish(exc.code if isinstance(exc.code, int) else 1)
    finish(0)


if __name__ == "__main__":
    main()
