"""Issue 9: a NIC's bandwidth limits hold after attach and after detach, within 20 % of the configured rate in each
direction, measured with iperf3 between the lab's guests (Linux bridge and Open vSwitch)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from netfw import api
from netfw.model.spec import Bandwidth, NicSpec

from .lab import sh, vn_bridge

RATE = 1250  # KB/s: 10 Mbit/s
MBITS = RATE * 8 / 1000
ROOT = Path(__file__).resolve().parents[2]


def iperf(server: str, client: str, address: str, seconds: int = 3) -> float:
    """TCP goodput (Mbit/s) from guest `client` to guest `server` listening at `address`."""
    srv = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(30):
            res = sh("ip", "netns", "exec", client, "iperf3", "-c", address, "-t", str(seconds), "-O", "1", "-J",
                     check=False)
            out = json.loads(res.stdout)
            if "error" not in out:
                return out["end"]["sum_received"]["bits_per_second"] / 1e6
            time.sleep(0.1)
        raise AssertionError(f"iperf3 failed: {out.get('error')}")
    finally:
        srv.kill()
        srv.wait(5)


def within(measured: float, target: float = MBITS) -> bool:
    return abs(measured - target) <= 0.2 * target


def limited(server: str, client: str, address: str, target: float = MBITS, tries: int = 3) -> float:
    """The goodput from client to server when a limit of `target` Mbit/s holds: no run above target + 20%, and the
    best run within 20% of it. A loaded machine can only slow a run down (a starved iperf3 stays below the limit,
    never above), so a slow run is measured again, up to `tries` runs; the best is returned. AssertionError if not."""
    runs = []
    for _ in range(tries):
        runs.append(iperf(server, client, address))
        assert runs[-1] <= 1.2 * target, f"{runs[-1]:.2f} Mbit/s, over the limit {target} (runs: {runs})"
        if within(runs[-1], target):
            return runs[-1]
    raise AssertionError(f"{max(runs):.2f} Mbit/s at best, not within 20% of the limit {target} (runs: {runs})")


def police_supported() -> bool:
    """True when this kernel has tc's police action (act_police), which libvirt's limit from a VM needs."""
    sh("ip", "link", "add", "nfpolice0", "type", "veth", "peer", "name", "nfpolice1")
    try:
        sh("tc", "qdisc", "add", "dev", "nfpolice0", "ingress")
        res = sh("tc", "filter", "add", "dev", "nfpolice0", "parent", "ffff:", "protocol", "all", "u32", "match",
                 "u32", "0", "0", "police", "rate", "1mbit", "burst", "10k", "drop", "flowid", ":1", check=False)
        return res.returncode == 0
    finally:
        sh("ip", "link", "del", "nfpolice0")


@pytest.fixture(params=["linux", "ovs"])
def pair(request, lab):
    """(VM 1's guest, VM 2's guest, the VN bridge): two simulated VMs on a Linux or an Open vSwitch bridge."""
    bridge = vn_bridge(request, lab)
    return lab.vm(1, 0, "10.9.0.1/24", bridge=bridge), lab.vm(2, 0, "10.9.0.2/24", bridge=bridge), bridge


def test_limits_hold_behind_the_firewall_in_both_directions(pair):
    g1, g2, bridge = pair
    assert iperf(g1, g2, "10.9.0.1") > 3 * MBITS  # unlimited before: the probe can tell
    api.attach(NicSpec(1, 0, bridge, bandwidth=Bandwidth(inbound_avg=RATE, outbound_avg=RATE)))
    limited(g1, g2, "10.9.0.1")  # to the VM
    limited(g2, g1, "10.9.0.2")  # from the VM
    assert api.verify(1, 0) == {0: []}
    api.update(NicSpec(1, 0, bridge, bandwidth=Bandwidth(inbound_avg=2 * RATE)))  # a new limit, one way only
    limited(g1, g2, "10.9.0.1", 2 * MBITS)
    assert iperf(g2, g1, "10.9.0.2") > 3 * MBITS  # the other way is free again
    assert api.verify(1, 0) == {0: []}


def test_limits_hold_after_detach(pair):
    g1, g2, bridge = pair
    api.attach(NicSpec(1, 0, bridge, bandwidth=Bandwidth(inbound_avg=RATE, outbound_avg=RATE)))
    api.detach(1, 0)
    limited(g1, g2, "10.9.0.1")  # to the VM, after detach
    if bridge != "vnbr0":
        pytest.skip("from the VM after detach on Open vSwitch: its userspace datapath reads a port before the "
                    "port's ingress qdisc, so no ingress limit can hold here (the kernel datapath is unaffected; "
                    "libvirt's own OVS limits live in OVSDB records, which netfw carries)")
    if not police_supported():
        pytest.skip("from the VM after detach: this kernel has no tc police action (act_police), which libvirt's "
                    "ingress limit on a tap needs; netfw warns and keeps the limit to the VM")
    limited(g2, g1, "10.9.0.2")  # from the VM, after detach


def test_limits_from_the_vm_document_and_a_warning_for_what_cannot_be_rebuilt(lab, state_dir):
    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    sh("tc", "qdisc", "add", "dev", "one-1-0", "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "50ms")
    doc = f"""<VM><ID>1</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID><BRIDGE>vnbr0</BRIDGE><VN_MAD>bridge</VN_MAD>
        <INBOUND_AVG_BW>{RATE}</INBOUND_AVG_BW><OUTBOUND_AVG_BW>{RATE}</OUTBOUND_AVG_BW>
        <OUTBOUND_PEAK_BW>{2 * RATE}</OUTBOUND_PEAK_BW><OUTBOUND_PEAK_KB>64</OUTBOUND_PEAK_KB></NIC></TEMPLATE></VM>"""
    netfw = str(Path(__import__("sys").executable).parent / "netfw")
    res = subprocess.run([netfw, "attach", "1", "0", "--vm-xml", "-"], input=doc, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    warnings = [l for l in res.stderr.splitlines() if l.startswith("WARNING:")]
    assert len(warnings) == 1 and "one-1-0" in warnings[0] and "tbf" in warnings[0], res.stderr
    limited(g1, g2, "10.9.0.1")
    limited(g2, g1, "10.9.0.2")  # peak 2x, but the average holds (HTB's class rate)
