"""Hostile VM documents of up to 4 MiB (scripts/bench_adversarial.py makes them): each is refused by the cap it
aims at, with exit 2 and one line. Never timed (the script prints the times); only the refusal is asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from netfw.opennebula import one

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_adversarial.py"
_spec = importlib.util.spec_from_file_location("bench_adversarial", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("name", list(bench.DOCUMENTS))
def test_adversarial_document_is_refused_by_its_cap(name):
    make, expected = bench.DOCUMENTS[name]
    doc = make()
    assert len(doc) <= one.MAX_INPUT and len(doc) >= one.MAX_DOCUMENT * 9 // 10  # near the largest read
    outcome = bench.refuse(doc)
    if expected is None:
        assert outcome is None  # within every cap: accepted
    else:
        assert outcome is not None and expected in outcome, outcome
        assert "\n" not in outcome and len(outcome) <= 1100
