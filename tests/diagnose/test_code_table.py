"""Every place that names finding codes agrees with the one table, ``acmelb.doctor.codes.CODES``.

Run as a script with ``--write`` to regenerate the generated parts (the schemas'
code lists, the table in docs/diagnose.md, the list in README.md) after adding a row:

    .venv/bin/python tests/diagnose/test_code_table.py --write
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script: the package from this tree
    sys.path.insert(0, str(ROOT / "src"))

import acmelb.kube.plan  # noqa: E402, F401 - registers the KUBE stage's checks
from acmelb.doctor.checks import DEFAULT_RUNNER  # noqa: E402 - after the script's path set-up
from acmelb.doctor.codes import CODES, Code, code_values, markdown_table, readme_list  # noqa: E402
from acmelb.doctor.explain import _RULES as EXPLAIN_RULES  # noqa: E402
from acmelb.doctor.findings import DEFAULT_SEVERITY  # noqa: E402

# the doctor's checks and those acmelb.kube registers (importing acmelb.kube.plan)
ALL_CHECKS = DEFAULT_RUNNER.registered

DIAGNOSIS_SCHEMA = ROOT / "src/acmelb/schemas/diagnosis-v1.json"
EXPLAIN_SCHEMA = ROOT / "src/acmelb/schemas/explain-v1.json"
DOCS = ROOT / "docs/diagnose.md"
README = ROOT / "README.md"
DOCS_BEGIN = "<!-- codes: generated from src/acmelb/doctor/codes.py -->"
DOCS_END = "<!-- codes: end -->"
README_LEAD = "The finding codes (the contract in `docs/diagnose.md`): "


# -- the generated parts, and how to write them -------------------------------------------


def diagnosis_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema["$defs"]["knownCodes"] = {"enum": code_values()}
    return schema


def explain_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema["properties"]["candidates"]["items"] = {"enum": code_values()}
    return schema


def docs_text(text: str) -> str:
    head, _, rest = text.partition(DOCS_BEGIN)
    _, _, tail = rest.partition(DOCS_END)
    return f"{head}{DOCS_BEGIN}\n{markdown_table()}\n{DOCS_END}{tail}"


def readme_text(text: str) -> str:
    head, _, rest = text.partition(README_LEAD)
    _, _, tail = rest.partition(".\n")
    # the list wraps at 80 columns like the paragraphs around it
    words = (README_LEAD + readme_list() + ".").split(" ")
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > 80:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return head + "\n".join([*lines, line]) + "\n" + tail


def dump(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


GENERATED = {
    DIAGNOSIS_SCHEMA: lambda text: dump(diagnosis_schema(json.loads(text))),
    EXPLAIN_SCHEMA: lambda text: dump(explain_schema(json.loads(text))),
    DOCS: docs_text,
    README: readme_text,
}


# -- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(GENERATED), ids=lambda p: p.name)
def test_generated_parts_are_current(path: Path) -> None:
    text = path.read_text("utf-8")
    assert GENERATED[path](text) == text, (
        f"{path.relative_to(ROOT)} disagrees with acmelb.doctor.codes: run "
        "`.venv/bin/python tests/diagnose/test_code_table.py --write`"
    )


def test_every_code_has_one_row_and_the_severities_come_from_it() -> None:
    assert list(CODES) == list(Code)
    assert {code: row.severity for code, row in CODES.items()} == DEFAULT_SEVERITY
    assert all(row.title and row.explanation and row.remedy for row in CODES.values())


def test_the_schemas_reference_the_code_lists() -> None:
    diagnosis = json.loads(DIAGNOSIS_SCHEMA.read_text())
    finding_code = diagnosis["$defs"]["finding"]["properties"]["code"]
    assert finding_code == {"$ref": "#/$defs/knownCodes"}
    assert diagnosis["$defs"]["knownCodes"]["enum"] == code_values()


def test_the_readme_and_docs_name_every_code() -> None:
    readme = README.read_text().split(README_LEAD, 1)[1].split(".\n", 1)[0]
    assert re.findall(r"`([a-z0-9-]+)`", readme) == code_values()
    docs = DOCS.read_text().split(DOCS_BEGIN, 1)[1].split(DOCS_END, 1)[0]
    assert re.findall(r"^\| `([a-z0-9-]+)`", docs, re.M) == code_values()


def test_every_check_declares_codes_of_the_table_in_their_stage() -> None:
    declared: set[Code] = set()
    for check in ALL_CHECKS:
        assert check.codes, f"{type(check).__name__} declares no code"
        assert set(check.codes) <= set(CODES)
        declared |= set(check.codes)
        # a check's codes belong to its stage, or to an earlier one (the inside-only
        # failures of COMPARE repeat the HTTP stage's codes)
        for code in check.codes:
            stage = CODES[code].stage
            assert stage is not None and stage <= check.stage, (type(check).__name__, code)
    owned_by_checks = {code for code, row in CODES.items() if row.stage is not None}
    assert declared == owned_by_checks, "a code of the table that no check raises, or back"


def test_explain_candidates_are_codes() -> None:
    for _pattern, candidates, _why, _sources in EXPLAIN_RULES:
        assert candidates is None or all(isinstance(c, Code) for c in candidates)


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print(__doc__)
        return 2
    for path, generate in GENERATED.items():
        text = path.read_text("utf-8")
        new = generate(text)
        if new != text:
            path.write_text(new, "utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
