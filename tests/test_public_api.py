"""The public API: every name in ``acmelb.__all__`` resolves, lazily."""

from __future__ import annotations

import subprocess
import sys

import acmelb


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert sorted(acmelb.__all__) == sorted(["__version__", *acmelb._EXPORTS])


def test_every_public_name_resolves() -> None:
    for name in acmelb.__all__:
        assert getattr(acmelb, name) is not None


def test_importing_acmelb_does_not_import_the_acme_client() -> None:
    code = "import sys, acmelb; print('acme.client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "False"


def test_the_version_is_written_once() -> None:
    from importlib.metadata import version

    assert version("acmelb") == acmelb.__version__
