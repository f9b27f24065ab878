"""Property tests: odd input never escapes as an exception, output always fits the schema."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from acmelb.doctor.checks.base import Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.doctor.explain import explain
from acmelb.errors import UsageError
from acmelb.kube.challenges import parse_challenges

REC = Path(__file__).with_name("recordings")
NAMES = sorted(p.stem for p in REC.glob("*.json"))
EXPLAIN = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/explain-v1.json").read_text()
)
DIAG = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)

fragments = st.sampled_from(
    [
        "failed to perform self check GET request",
        "http://a.example.com/.well-known/acme-challenge/tok",
        "Invalid response from",
        ": 404",
        'expected "',
        '" but got: ',
        "Timeout during connect",
        "EOF",
        "dial tcp [::1]:80",
        'Expected "',
        '(got "',
        '")',
        "Waiting for HTTP-01 challenge propagation: ",
        "DNS problem: ",
        "CAA record for ",
        "acme: error: 403 :: ",
        "Certbot failed",
        "\n",
        "\\n",
        "wrong status code '",
    ]
)


@given(st.lists(st.one_of(fragments, st.text(max_size=30)), max_size=12))
@settings(max_examples=150, deadline=None)
def test_explain_never_raises(parts: list[str]) -> None:
    e = explain("".join(parts))
    jsonschema.validate(e.to_json(), EXPLAIN)
    assert e.recognised == (e.source != "unknown")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "kind",
                    "items",
                    "spec",
                    "metadata",
                    "status",
                    "dnsName",
                    "type",
                    "token",
                    "key",
                    "state",
                    "reason",
                    "name",
                    "namespace",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(json_values)
@settings(max_examples=150, deadline=None)
def test_challenge_lists_parse_or_usage_error(value: object) -> None:
    try:
        result = parse_challenges(json.dumps(value))
    except UsageError:
        return
    assert isinstance(result, list)


@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(["inside", "outside"])),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(["key", "random", "none"]),
)
@settings(max_examples=150, deadline=None)
def test_any_mix_of_recordings_gives_a_valid_report(runs: list[tuple[str, str]], mode: str) -> None:
    vantage_runs = [
        VantageRun(
            f"{role}:v{i}", role, role == "inside", json.loads((REC / f"{name}.json").read_text())
        )
        for i, (name, role) in enumerate(runs)
    ]
    token = "tok_" + "T" * 39
    key = None if mode != "key" else f"{token}.{'A' * 43}"
    target = Target("app.example.com", token, key, random_token=mode == "random")
    report = analyse(target, vantage_runs)
    doc = report.to_json()
    jsonschema.validate(doc, DIAG)
    assert doc["ok"] == (not any(f["severity"] in ("error", "fatal") for f in doc["findings"]))
    if report.verdicts["acme-ca"] == "fail" or report.verdicts["cert-manager-self-check"] == "fail":
        assert doc["findings"], "a failing verdict comes with at least one finding"
