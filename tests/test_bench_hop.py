"""scripts/bench_hop.py's nftables rungs (issue 22, scripts/bench_nft.py): the rules are the other rungs' security
group, a stateless rung never holds conntrack, and a quick run proves every rung filters before it times it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_nft as nft  # noqa: E402
from bench_lab import security_group  # noqa: E402

needs_translate = pytest.mark.skipif(not shutil.which("iptables-restore-translate"),
                                     reason="iptables-restore-translate (Debian iptables) is not installed")
RULES = security_group(20)


@needs_translate
def test_stateful_ruleset_is_the_security_group_translated():
    script = nft.ruleset(2, RULES, "inet", stateful=True).splitlines()
    rules = [l for l in script if l.startswith("add rule inet netfw one-2-0-")]
    _, chains = nft.plain_chains(2, RULES)
    assert len(rules) == sum(len(lines) for lines in chains.values())  # one nft rule per iptables rule
    assert rules[:2] == ["add rule inet netfw one-2-0-i ct state related,established counter accept",
                         "add rule inet netfw one-2-0-i ct state invalid counter drop"]
    assert "add rule inet netfw one-2-0-i ip protocol udp udp dport 5201-5210 counter accept" in rules
    assert rules[-1] == "add rule inet netfw one-2-0-o counter drop"
    assert "add rule inet netfw forward meta nfproto ipv4 oifname one-2-0 jump one-2-0-i" in script
    assert "add rule inet netfw forward meta nfproto ipv4 iifname one-2-0 jump one-2-0-o" in script


@needs_translate
def test_stateless_ruleset_has_no_conntrack_and_says_what_replaces_it():
    stateful = [l for l in nft.ruleset(1, RULES, "bridge", stateful=True).splitlines() if " ct " not in l]
    script = nft.ruleset(1, RULES, "bridge", stateful=False).splitlines()
    assert not any(" ct " in l for l in script)
    standin = [l for l in script if nft.REPLY_STANDIN in l]
    assert standin == [f"add rule bridge netfw one-1-0-{d} {nft.REPLY_STANDIN} counter accept" for d in "io"]
    assert [l for l in script if l not in standin] == stateful  # otherwise the very same rules, in the same order
    assert "add rule bridge netfw forward meta protocol ip oifname one-1-0 jump one-1-0-i" in script


@pytest.mark.skipif(os.environ.get("NETFW_IN_SANDBOX") != "1",
                    reason="needs the sandbox: scripts/sandbox .venv/bin/pytest tests")
@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed (Debian package nftables, in .ci/run)")
def test_quick_run_times_only_proven_rungs(tmp_path):
    out = tmp_path / "hop.json"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_hop.py"), "--quick", "--json", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    r = json.loads(out.read_text())
    assert set(r) == {"legacy", "nft_bridge", "nft_bridge_ct", "nft_routed_ct"}
    for key, stateful in (("nft_bridge", False), ("nft_routed_ct", True)):
        row = r[key]
        assert "error" not in row and row["cpu_us_median"] > 0 and row["cost_vs_legacy"] > 0, row
        assert row["proof"]["allowed_arrived"] == 20 and row["proof"]["dropped_arrived"] == 0
        assert row["proof"]["conntrack_entries"] == ([1, 1] if stateful else [0, 0])
        assert f"(`{key}`) | {row['cpu_us_median']} |" in run.stdout
    # The bridge family with conntrack: measured and proven stateful where the kernel has nf_conntrack_bridge,
    # otherwise refused at load (this kernel: "Protocol error") and shown as not measured, never as a number.
    bridge_ct = r["nft_bridge_ct"]
    if "error" in bridge_ct:
        assert "nft refused the ruleset" in bridge_ct["error"] and "ct state" in bridge_ct["error"]
        assert bridge_ct["cpu_us"] == [None] and "(`nft_bridge_ct`) | not measured: " in run.stdout
    else:
        assert bridge_ct["proof"]["conntrack_entries"] == [1, 1]
