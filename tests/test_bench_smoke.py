"""Keep scripts/bench.py working: one quick run in the sandbox, checking that it writes its tables (never timings)."""

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


def test_quick_benchmark_writes_its_tables(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["dataplane"]) == {"0", "5"}
    assert {"netfw", "legacy_last", "legacy_first"} <= set(results["dataplane"]["0"])
    readme = (tmp_path / "README.md").read_text()
    for heading in ("### Targets", "### Data plane", "### Control plane", "### Memory"):
        assert heading in readme
    assert "| K other VMs | netfw |" in readme
    assert "### Targets" in run.stdout  # the tables are printed too

    # Open vSwitch: measured on the userspace datapath, or skipped with the reason (never failed, never silent).
    ovs = results["ovs"]
    assert "error" not in ovs, ovs.get("error")
    assert "### Open vSwitch (userspace datapath)" in readme
    if "skipped" in ovs:
        assert ovs["skipped"].strip() and f"Not measured in this run: {ovs['skipped'].splitlines()[0]}" in readme
        return
    for layout in ("plain", "one", "both"):  # traffic crossed the OVS bridge with netfw on none, one, both VMs
        assert ovs["dataplane"][layout]["tcp_gbps"] and ovs["dataplane"][layout]["udp_kpps"], ovs["dataplane"]
    assert "errors" not in ovs["dataplane"]
    for kind in ("ovs", "linux"):
        assert ovs["control"][f"{kind}_api_attach"] > 0 and ovs["control"][f"{kind}_cli_detach"] > 0
        assert len(ovs["cutover"][kind]["attach"]["lost"]) == ovs["cutover"]["rounds"]
    assert "| netfw on both VMs |" in readme and "userspace datapath: ovs-vswitchd forwards every packet" in readme
