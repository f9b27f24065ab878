"""Runs last in tests/lab: the labs built so far left nothing behind.

(conftest.py checks the same again when the whole session ends, for lab tests
elsewhere in the suite.)
"""

from __future__ import annotations

import pytest

from acmelb.lab.topology import leftovers_of_this_process

pytestmark = pytest.mark.lab


def test_no_namespace_process_or_file_is_left_behind(lab_available: None) -> None:
    assert leftovers_of_this_process() == []
