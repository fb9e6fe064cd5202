"""The core workflow on real kernel objects: traffic, idempotence, detach, several NICs, real taps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netfw import api
from netfw.model.spec import NicSpec

from .lab import netns_list, ping, sh, snapshot


def attach(vm, nic, bridge="vnbr0", **kw):
    return api.attach(NicSpec(vm, nic, bridge, **kw))


def test_traffic_passes_before_after_attach_and_after_detach(lab):
    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    assert ping(g1, "10.9.0.2")
    before = snapshot()

    attach(1, 0)
    attach(2, 0)
    assert set(netns_list()) >= {"one-1", "one-2"}
    assert ping(g1, "10.9.0.2") and ping(g2, "10.9.0.1")
    assert api.verify(1) == {0: []} and api.verify(2) == {0: []}
    links = {l["ifname"]: l for l in snapshot()["one-1"]["links"]}
    assert links["one-1-0"]["master"] == "one-br-1-0"  # the tap really sits on the firewall bridge

    api.detach(1, 0)
    api.detach(2, 0)
    assert ping(g1, "10.9.0.2")
    assert snapshot() == before


def test_attach_twice_changes_nothing_and_detach_twice_succeeds(lab):
    lab.bridge()
    lab.vm(1, 0, "10.9.0.1/24")
    first = attach(1, 0)
    assert len(first.changed) == 8  # namespace, bridge, veth, ip (filter+raw), ip6 (filter+raw), eb, cut-over, record
    after_first = snapshot()
    second = attach(1, 0)
    assert second.changed == []
    assert snapshot() == after_first

    assert api.detach(1, 0).changed
    after_detach = snapshot()
    assert api.detach(1, 0).changed == []
    assert snapshot() == after_detach
    assert "one-1" not in netns_list()


def test_firewall_drops_traffic_of_a_tap_without_jump(lab):
    """FORWARD policy DROP: traffic of a NIC whose jumps are gone is dropped, not let through."""
    lab.bridge()
    g1, _ = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    attach(1, 0)
    assert ping(g1, "10.9.0.2")
    sh("nsenter", "--net=/run/netns/one-1", "iptables", "-F", "FORWARD")
    assert not ping(g1, "10.9.0.2")
    assert any("jump" in d for d in api.verify(1, 0)[0])
    attach(1, 0)  # attach repairs what verify found
    assert api.verify(1, 0) == {0: []}
    assert ping(g1, "10.9.0.2")


def test_two_nics_share_the_namespace_which_goes_with_the_last(lab):
    lab.bridge("vnbr0")
    lab.bridge("vnbr1")
    g10 = lab.vm(1, 0, "10.9.0.1/24", bridge="vnbr0")
    g11 = lab.vm(1, 1, "10.8.0.1/24", bridge="vnbr1")
    g20 = lab.vm(2, 0, "10.9.0.2/24", bridge="vnbr0")
    g21 = lab.vm(2, 1, "10.8.0.2/24", bridge="vnbr1")
    before = snapshot()
    for vm in (1, 2):
        for nic, br in ((0, "vnbr0"), (1, "vnbr1")):
            attach(vm, nic, br)
    assert ping(g10, "10.9.0.2") and ping(g11, "10.8.0.2")
    names = {l["ifname"] for l in snapshot()["one-1"]["links"]}
    assert {"one-br-1-0", "one-br-1-1", "one-1-0", "one-1-1", "one-1-0-f", "one-1-1-f"} <= names
    api.detach(1, 0)
    assert "one-1" in netns_list()  # NIC 1 is still in it
    assert api.verify(1, 1) == {1: []}
    assert ping(g11, "10.8.0.2") and ping(g10, "10.9.0.2")
    api.detach(1, 1)
    assert "one-1" not in netns_list()
    for nic in (0, 1):
        api.detach(2, nic)
    assert snapshot() == before
    assert ping(g21, "10.8.0.1") and ping(g20, "10.9.0.1")


def test_mtu_is_copied_from_the_tap(lab):
    lab.bridge(mtu=9000)
    g1, _ = lab.vm(1, 0, "10.9.0.1/24", mtu=9000), lab.vm(2, 0, "10.9.0.2/24", mtu=9000)
    attach(1, 0)
    mtus = {l["ifname"]: l["mtu"] for l in snapshot()["one-1"]["links"]}
    assert mtus["one-br-1-0"] == mtus["one-1-0-f"] == mtus["one-1-0"] == 9000
    assert sh("ip", "netns", "exec", g1, "ping", "-M", "do", "-s", "8900", "-c1", "-W1", "10.9.0.2",
              check=False).returncode == 0


def test_long_ids_use_short_deterministic_names(lab):
    lab.bridge()
    vm, nic = 4294967295, 999
    g = lab.vm(vm, nic, "10.9.0.1/24", tap="tapbig")  # one-4294967295-999 would be 18 characters
    lab.vm(2, 0, "10.9.0.2/24")
    attach(vm, nic, tap="tapbig")
    names = [l["ifname"] for l in snapshot()[f"one-{vm}"]["links"]]
    assert all(len(n) <= 15 for n in names)
    assert api.verify(vm, nic) == {nic: []}
    assert ping(g, "10.9.0.2")
    api.detach(vm, nic)
    assert f"one-{vm}" not in netns_list()


def _tun_usable() -> str | None:
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        return "/dev/net/tun is not usable by this user (root-only on this machine)"
    res = subprocess.run(["ip", "tuntap", "add", "probe-tap", "mode", "tap"], capture_output=True, text=True)
    if res.returncode:
        return f"cannot create a tap here: {res.stderr.strip()}"
    subprocess.run(["ip", "link", "del", "probe-tap"], capture_output=True)
    return None


def test_real_tap_moves_in_and_back(lab):
    reason = _tun_usable()
    if reason:
        pytest.skip(reason)
    lab.bridge()
    sh("ip", "tuntap", "add", "one-7-0", "mode", "tap")
    sh("ip", "link", "set", "one-7-0", "master", "vnbr0", "up")
    ifindex = sh("ip", "-j", "link", "show", "one-7-0").stdout
    attach(7, 0)
    assert api.verify(7, 0) == {0: []}
    kinds = {l["ifname"]: l.get("linkinfo", {}).get("info_kind") for l in snapshot()["one-7"]["links"]}
    assert kinds["one-7-0"] == "tun"
    api.detach(7, 0)
    again = sh("ip", "-j", "link", "show", "one-7-0").stdout
    import json
    assert json.loads(again)[0]["ifindex"] == json.loads(ifindex)[0]["ifindex"]  # the very same tap
    assert json.loads(again)[0]["master"] == "vnbr0"


def test_detach_leaves_alone_a_link_that_only_has_netfw_s_name(lab):
    """Without a state record detach works from names alone: a link of another kind with that name is not netfw's."""
    from netfw.transaction import TransactionError

    sh("ip", "link", "add", "one-3-0-h", "type", "bridge")  # (no dummy module on this kernel)
    with pytest.raises(TransactionError, match="not netfw's veth"):
        api.detach(3, 0)
    assert "one-3-0-h" in {l["ifname"] for l in snapshot()["<hypervisor>"]["links"]}


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_either_iptables_backend_filters_and_is_kept_by_the_nic(lab, monkeypatch, backend):
    """A NIC attached with a backend keeps it: update and detach use it even when the setting changed since."""
    from netfw.model.rules import parse_rules

    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", backend)
    only_ping = parse_rules([{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}])
    api.attach(NicSpec(2, 0, "vnbr0", rules=only_ping))
    saved = sh("nsenter", "--net=/run/netns/one-2", f"iptables-{backend}-save", "-t", "filter").stdout
    assert "-A one-2-0-i -p icmp -m comment --comment \"rule 1\" -j one-2-0-c" in saved
    assert ping(g1, "10.9.0.2")
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", "nft" if backend == "legacy" else "legacy")
    api.update(NicSpec(2, 0, "vnbr0", rules=parse_rules([{"PROTOCOL": "TCP", "RULE_TYPE": "inbound"}])))
    assert not ping(g1, "10.9.0.2")  # the update replaced the rules in the NIC's own backend
    assert api.verify(2, 0) == {0: []}
    other = "nft" if backend == "legacy" else "legacy"
    assert "one-2-0" not in sh("nsenter", "--net=/run/netns/one-2", f"iptables-{other}-save").stdout
    api.detach(2, 0)
    assert ping(g1, "10.9.0.2") and "one-2" not in netns_list()


TAMPERING = {
    "tap off the firewall bridge": (["ip", "-n", "one-1", "link", "set", "one-1-0", "nomaster"],
                                    "tap one-1-0 is not on one-br-1-0"),
    "veth end deleted": (["ip", "-n", "one-1", "link", "del", "one-1-0-f"], "veth end one-1-0-h is missing"),
    "inbound chain flushed": (["nsenter", "--net=/run/netns/one-1", "iptables", "-F", "one-1-0-i"],
                              "iptables chain one-1-0-i differs"),
    "bridge-nf sysctl set to 0": (["nsenter", "--net=/run/netns/one-1", "sysctl", "-qw",
                                   "net.bridge.bridge-nf-call-iptables=0"],
                                  "sysctl net.bridge.bridge-nf-call-iptables is 0, expected 1"),
    "ethertype chain flushed": (["nsenter", "--net=/run/netns/one-1", "ebtables", "-F", "one-1-0-e"],
                                "ebtables chain one-1-0-e differs"),
    "tagged-frame sysctl set to 0": (["nsenter", "--net=/run/netns/one-1", "sysctl", "-qw",
                                      "net.bridge.bridge-nf-filter-vlan-tagged=0"],
                                     "sysctl net.bridge.bridge-nf-filter-vlan-tagged is 0, expected 1"),
    "bridge option nf_call_iptables off": (["ip", "-n", "one-1", "link", "set", "one-br-1-0", "type", "bridge",
                                            "nf_call_iptables", "0"], "bridge one-br-1-0 has nf_call_iptables off"),
    "veth host end off the VN bridge": (["ip", "link", "set", "one-1-0", "nomaster"],
                                        "veth end one-1-0 is not on the VN bridge vnbr0"),
    "tap learning on the firewall bridge": (["ip", "-n", "one-1", "link", "set", "one-1-0", "type", "bridge_slave",
                                             "learning", "on"], "tap one-1-0 learns on one-br-1-0"),
    "firewall bridge mtu changed": (["ip", "-n", "one-1", "link", "set", "one-br-1-0", "mtu", "1400"],
                                    "bridge one-br-1-0 has mtu 1400, expected 1500"),
}


@pytest.mark.parametrize("what", list(TAMPERING))
def test_verify_detects_each_kind_of_tampering_and_attach_repairs_it(lab, what):
    import json
    import subprocess

    lab.bridge()
    g1, _ = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    attach(1, 0)
    cli = [str(Path(sys.executable).with_name("netfw")), "verify", "1", "0", "--json"]  # the venv's, not PATH's
    assert subprocess.run(cli, capture_output=True).returncode == 0
    argv, finding = TAMPERING[what]
    sh(*argv)
    res = subprocess.run(cli, capture_output=True, text=True)
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["ok"] is False
    assert any(finding in d for d in report["nics"]["0"]["drift"]), report
    attach(1, 0)
    assert api.verify(1, 0) == {0: []}
    assert ping(g1, "10.9.0.2")
