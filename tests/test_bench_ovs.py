"""scripts/bench_ovs.py: reading a ping stream (lost requests, the outage) and its section of the report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_ovs import CAVEAT, IN_FLIGHT, lost_echoes, table  # noqa: E402


def _ping(replies: list[tuple[int, float]], sent: int) -> str:
    """`ping -D` output (iputils) with these (icmp_seq, time) replies and `sent` requests in all."""
    lines = ["PING 10.79.0.12 (10.79.0.12) 56(84) bytes of data."]
    lines += [f"[{1764634000 + t:.6f}] 64 bytes from 10.79.0.12: icmp_seq={seq} ttl=64 time=0.05 ms"
              for seq, t in replies]
    lines += ["", "--- 10.79.0.12 ping statistics ---",
              f"{sent} packets transmitted, {len(replies)} received, 1% packet loss, time 500ms"]
    return "\n".join(lines) + "\n"


def test_a_gap_counts_its_lost_requests_and_its_silence_but_not_the_requests_in_flight():
    # 1..100 every 2 ms, 101..104 lost (ping slows to one per 10 ms), 105.. back 40 ms later; 3 unanswered at the end
    replies = [(s, s * 0.002) for s in range(1, 101)] + [(s, 0.240 + (s - 105) * 0.002) for s in range(105, 201)]
    r = lost_echoes(_ping(replies, sent=203))
    assert r["lost"] == 4
    assert r["silence_ms"] == 40.0
    assert r["recovered"] is True


def test_a_stream_that_never_came_back_is_not_recovered():
    replies = [(s, s * 0.002) for s in range(1, 101)]
    assert lost_echoes(_ping(replies, sent=100 + IN_FLIGHT + 1))["recovered"] is False
    assert lost_echoes(_ping(replies, sent=100 + IN_FLIGHT))["recovered"] is True


def test_no_reply_at_all_is_an_error_never_zero_lost():
    with pytest.raises(RuntimeError, match="ping answered nothing"):
        lost_echoes("PING 10.79.0.12 56(84) bytes of data.\n\n4 packets transmitted, 0 received, 100% packet loss\n")


def _measured() -> dict:
    cut = {"lost": [3], "silence_ms": [33.0], "lost_median": 3, "lost_max": 3, "silence_ms_median": 33.0,
           "silence_ms_max": 33.0}
    return {
        "version": "ovs-vswitchd (Open vSwitch) 3.1.0", "config": {"rounds": 1, "cutover_rounds": 1},
        "dataplane": {"plain": {"tcp_gbps": 0.8, "udp_kpps": 90.0}, "one": {"tcp_gbps": 0.6, "udp_kpps": 60.0},
                      "both": {"tcp_gbps": 0.4, "udp_kpps": 45.0}},
        "control": {f"{k}_{v}_{a}": 100.0 if k == "linux" else 150.0 for k in ("ovs", "linux") for v in ("api", "cli")
                    for a in ("attach", "detach")} | {"ovs_api_attach_procs": 17, "linux_api_attach_procs": 13,
                                                      "ovs_api_detach_procs": 12, "linux_api_detach_procs": 9,
                                                      "rounds": 1},
        "cutover": {k: {a: cut for a in ("attach", "detach", "other_attach", "other_detach")} | {"not_recovered": 0}
                    for k in ("ovs", "linux")} | {"rounds": 1, "interval_ms": 2.0},
    }


def test_the_section_carries_the_caveat_and_the_ratios():
    text = table(_measured())
    assert text.startswith("### Open vSwitch (userspace datapath)\n")
    assert text.count(CAVEAT) == 1 and text.count("userspace datapath:") == 3  # every table's header says it
    assert "| netfw on the receiving VM | 0.6 | 0.75 | 60 | 0.67 |" in text
    assert "| netfw on both VMs | 0.4 | 0.5 | 45 | 0.5 |" in text
    assert "| netfw API, 20 rules | 150 | 100 | 1.5 | 150 | 100 | 1.5 |" in text
    assert "| Linux bridge | VM 12's NIC (its cut-over) | 3 (3) | 33 (33) | 3 (3) | 33 (33) |" in text


def test_a_skipped_or_failed_run_says_why():
    skipped = table({"skipped": "Open vSwitch cannot start in this sandbox: no /dev/net/tun\nlog lines"})
    assert skipped == ("### Open vSwitch (userspace datapath)\n\n"
                       "Not measured in this run: Open vSwitch cannot start in this sandbox: no /dev/net/tun\n")
    assert "Failed in this run: `RuntimeError: boom`" in table({"error": "RuntimeError: boom"})


def test_without_open_vswitch_the_rows_are_skipped_with_the_reason_and_nothing_is_touched(monkeypatch):
    import shutil

    import bench_ovs

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name.startswith("ovs") else real(name))
    result = bench_ovs.measure(bench_ovs.MODES["quick"], (), "/nonexistent/state")
    assert result == {"skipped": "Open vSwitch is not installed: ovsdb-tool, ovsdb-server, ovs-vswitchd, ovs-vsctl, "
                                 "ovs-ofctl, ovs-appctl not on PATH (Debian: openvswitch-switch)"}
    assert "Not measured in this run: Open vSwitch is not installed" in table(result)
