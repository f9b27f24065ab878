"""`acmelb explain` on real messages: tests/diagnose/fixtures/explain_corpus.json holds error
messages from public issue threads (names and public addresses replaced with documentation
ones), each with the thread and the root cause the thread established.  Every entry must be
recognised; the hit rates (the established cause first, or among the first three
candidates) are measured over the whole corpus and must stay above the stated floors."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from acmelb.doctor.codes import Code
from acmelb.doctor.explain import explain

CORPUS = json.loads(
    (Path(__file__).with_name("fixtures") / "explain_corpus.json").read_text("utf-8")
)["entries"]
SCHEMA = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/explain-v1.json").read_text()
)
# measured 33/40 top-1 and 40/40 top-3 (docs/diagnose.md); the floors leave no room to regress.
# 32/40 since issue 23: "During secondary validation" ranks perspective-blocked first, and
# win-acme#1465 (a firewall rule blocking some address ranges, seen by a secondary
# perspective) is labelled port-80-timeout here, now second.
TOP1_FLOOR = 0.8
TOP3_FLOOR = 1.0


@pytest.mark.parametrize("entry", CORPUS, ids=[e["thread"].split("github.com/")[1] for e in CORPUS])
def test_corpus_entry_is_recognised(entry: dict[str, Any]) -> None:
    assert entry["cause"] in {code.value for code in Code}
    e = explain(entry["message"])
    assert e.recognised and e.next, entry["thread"]
    jsonschema.validate(e.to_json(), SCHEMA)


def test_corpus_hit_rates() -> None:
    ranked = [explain(entry["message"]).candidates for entry in CORPUS]
    top1 = sum(c[:1] == [entry["cause"]] for c, entry in zip(ranked, CORPUS, strict=True))
    top3 = sum(entry["cause"] in c[:3] for c, entry in zip(ranked, CORPUS, strict=True))
    assert top1 / len(CORPUS) >= TOP1_FLOOR, (top1, len(CORPUS))
    assert top3 / len(CORPUS) >= TOP3_FLOOR, (top3, len(CORPUS))


def test_corpus_threads_are_distinct_and_public() -> None:
    threads = [entry["thread"] for entry in CORPUS]
    assert len(set(threads)) == len(threads)
    assert all(t.startswith("https://github.com/") for t in threads)


def test_corpus_has_at_least_forty_entries() -> None:
    assert len(CORPUS) >= 40
