"""Keep scripts/bench_scale.py working: one quick run (N = 3, 6) in the sandbox, checking that it writes its tables
and that gc left nothing behind (never timings: those are the table's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.environ.get("NETFW_IN_SANDBOX") != "1",
                                reason="needs the sandbox: scripts/sandbox .venv/bin/pytest tests")


def test_quick_scale_run_writes_its_tables(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    results = json.loads((tmp_path / "scale.json").read_text())
    assert [row["n"] for row in results["rows"]] == [3, 6]
    for row in results["rows"]:
        for key in ("status", "status_vm", "metrics", "gc_dry", "gc_half", "gc_stale"):
            assert row[key]["code"] == 0 and row[key]["rss_mib"] > 0, (key, row[key])
            assert row[key]["lines"], key  # each printed something
        assert row["gc_half"]["left"] == [] and row["gc_stale"]["left"] == []
        assert row["status_inproc"]["procs"] > 0 and row["attach_procs"] > 0
    text = (tmp_path / "scale.md").read_text()
    for heading in ("| N | attach Nth ms", "## Targets", "## Where the time goes"):
        assert heading in text
    assert "Left behind by gc: nothing" in text and "## Targets" in run.stdout
