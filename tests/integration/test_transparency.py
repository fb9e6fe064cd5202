"""Issue 9: the connection layer cannot tell that netfw is there, on a Linux bridge and on Open vSwitch.

After attach the hypervisor namespace holds a link with the tap's exact name on the same VN bridge, carrying what the
tap carried (MAC, bridge-port settings; OVS records and OpenFlow port); what the connection layer does by that name
acts on the VM's traffic; verify does not call its settings drift and attach does not fight them; detach gives the tap
back what the link carries then. Real links, real traffic, a real Open vSwitch (userspace datapath).
"""

from __future__ import annotations

import json

import pytest

from netfw import api
from netfw.observe import health
from netfw.errors import InputError
from netfw.model.spec import NicSpec
from netfw.model.rules import load_rules_json

from .lab import eventually, ping, sh, snapshot
from .ovs import add_flow, del_flows, settle, vsctl

FLAGS = ("hairpin", "learning", "isolated", "priority", "cost", "mcast_flood", "bcast_flood", "neigh_suppress",
         "guard", "root_block", "fastleave", "flood")


def link(name: str, ns: str | None = None) -> dict:
    where = ["-n", ns] if ns else []
    return json.loads(sh("ip", *where, "-d", "-j", "link", "show", "dev", name).stdout)[0]


def port_flags(name: str) -> dict:
    data = link(name)["linkinfo"]["info_slave_data"]
    return {k: data[k] for k in FLAGS}


def stats(name: str) -> tuple[int, int]:
    s = json.loads(sh("ip", "-s", "-j", "link", "show", "dev", name).stdout)[0]["stats64"]
    return s["rx"]["packets"], s["tx"]["packets"]


# --- Linux bridge ---------------------------------------------------------------------------------------------------


def test_linux_the_veth_end_takes_the_taps_name_mac_and_port_settings_and_gives_them_back(lab):
    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    sh("ip", "link", "set", "one-1-0", "type", "bridge_slave", "hairpin", "on", "learning", "off", "priority", "7",
       "cost", "50", "mcast_flood", "off", "neigh_suppress", "on")
    tap_before, flags_before = link("one-1-0"), port_flags("one-1-0")
    bridge_mac = link("vnbr0")["address"]

    api.attach(NicSpec(1, 0, "vnbr0"))
    host = link("one-1-0")
    assert host["linkinfo"]["info_kind"] == "veth" and host["ifalias"] == "netfw vm=1 nic=0 role=h"
    assert host["master"] == "vnbr0" and host["address"] == tap_before["address"]
    assert port_flags("one-1-0") == flags_before  # the settings the tap had, on the link that replaced it
    assert link("vnbr0")["address"] == bridge_mac  # the VN bridge keeps its MAC
    assert link("one-1-0", "one-1")["master"] == "one-br-1-0"  # the tap itself, behind the firewall
    assert ping(g1, "10.9.0.2") and ping(g2, "10.9.0.1")

    # the connection layer changes the port by its name; netfw's verify and attach leave it alone
    sh("ip", "link", "set", "one-1-0", "type", "bridge_slave", "hairpin", "off", "isolated", "on", "cost", "9")
    changed = port_flags("one-1-0")
    assert api.verify(1, 0) == {0: []}
    assert api.attach(NicSpec(1, 0, "vnbr0")).changed == []
    assert port_flags("one-1-0") == changed

    api.detach(1, 0)
    tap = link("one-1-0")
    assert tap["address"] == tap_before["address"] and "ifalias" not in tap  # the tap itself is back
    assert port_flags("one-1-0") == changed  # with what the link carried at that moment
    assert ping(g1, "10.9.0.2")


def test_linux_what_the_connection_layer_does_by_the_taps_name_acts_on_the_vms_traffic(lab):
    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24")
    api.attach(NicSpec(1, 0, "vnbr0"))
    assert ping(g1, "10.9.0.2")
    rx, tx = stats("one-1-0")
    assert ping(g1, "10.9.0.2", count=3)
    rx2, tx2 = stats("one-1-0")
    assert rx2 - rx >= 3 and tx2 - tx >= 3  # `ip -s link show one-1-0` counts the VM's traffic

    for tap in ("one-1-0", "one-2-0"):  # two isolated ports may not talk to each other
        sh("bridge", "link", "set", "dev", tap, "isolated", "on")
    assert not ping(g1, "10.9.0.2")
    assert api.verify(1, 0) == {0: []}  # the connection layer's setting is not netfw's drift
    sh("bridge", "link", "set", "dev", "one-1-0", "isolated", "off")
    assert ping(g1, "10.9.0.2")

    sh("ip", "link", "set", "one-1-0", "down")  # and `ip link set one-1-0 down` cuts the VM off, as with a tap
    assert not ping(g1, "10.9.0.2")
    assert any("veth end one-1-0 is down" in d for d in api.verify(1, 0)[0])
    api.attach(NicSpec(1, 0, "vnbr0"))  # a repair, as for any of netfw's own objects
    assert ping(g1, "10.9.0.2")


# --- Open vSwitch ---------------------------------------------------------------------------------------------------


def ovs_records(name: str) -> dict:
    """The Port and Interface columns netfw carries, and the OpenFlow port, as OVSDB has them."""
    port = json.loads(vsctl("--format=json", "--columns=tag,trunks,vlan_mode,other_config,external_ids",
                            "list", "Port", name).stdout)
    iface = json.loads(vsctl("--format=json", "--columns=external_ids,other_config,mtu_request,ofport,"
                             "ingress_policing_rate", "list", "Interface", name).stdout)
    return {"port": dict(zip(port["headings"], port["data"][0])),
            "iface": dict(zip(iface["headings"], iface["data"][0]))}


@pytest.fixture
def ovs_lab(lab, ovs):
    lab.ovs_bridge("ovsbr0")
    guests = {
        "a": lab.vm(1, 0, "10.7.0.1/24", bridge="ovsbr0", tag=10, ofport=11),
        "b": lab.vm(2, 0, "10.7.0.2/24", bridge="ovsbr0", tag=10, ofport=12),
        "c": lab.vm(3, 0, "10.7.0.3/24", bridge="ovsbr0", tag=20, ofport=13),
    }
    vsctl("set", "Interface", "one-1-0", "external_ids:iface-id=vm1-nic0", "external_ids:attached-mac=02:00:0a:07:00:01",
          "other_config:foo=bar", "mtu_request=1400")
    vsctl("set", "Port", "one-1-0", "other_config:priority-tags=true", "external_ids:vm-id=one-1")
    for g in guests.values():
        sh("ip", "-n", g, "link", "set", "eth0", "mtu", "1400")
    return guests


def vlans_as(guests: dict, a_reaches: set[str]) -> bool:
    """True when guest a reaches exactly the guests named (by ping)."""
    reached = {name for name, addr in (("b", "10.7.0.2"), ("c", "10.7.0.3")) if ping(guests["a"], addr)}
    return reached == a_reaches


def test_ovs_records_ofport_and_vlan_isolation_before_during_and_after(ovs_lab):
    g = ovs_lab
    assert vlans_as(g, {"b"})  # before: VLAN 10 reaches VLAN 10 only
    before = ovs_records("one-1-0")
    assert before["iface"]["ofport"] == 11

    out = api.attach(NicSpec(1, 0, "ovsbr0"))
    assert out.changed
    assert ovs_records("one-1-0") == before  # the veth end carries the tap's records and OpenFlow port
    host = link("one-1-0")
    assert host["linkinfo"]["info_kind"] == "veth" and host["ifalias"] == "netfw vm=1 nic=0 role=h"
    assert link("one-1-0", "one-1")["master"] == "one-br-1-0"
    assert vlans_as(g, {"b"})  # during: the same isolation
    assert api.verify(1, 0) == {0: []}

    vsctl("set", "Port", "one-1-0", "tag=20")  # the ovswitch driver's update_nic, by the tap's name
    eventually(lambda: vlans_as(g, {"c"}), "the retag to VLAN 20 (ovs-vswitchd applies it after ovs-vsctl returns)")
    assert api.verify(1, 0) == {0: []}  # a connection-layer setting, not drift
    assert api.attach(NicSpec(1, 0, "ovsbr0")).changed == []  # and attach does not fight it
    moved = ovs_records("one-1-0")
    assert moved["port"]["tag"] == 20

    api.detach(1, 0)
    assert "ifalias" not in link("one-1-0")  # the tap itself
    assert ovs_records("one-1-0") == moved  # with what the veth end carried at that moment
    assert vlans_as(g, {"c"})  # after


def test_ovs_flows_keyed_by_in_port_keep_applying(ovs_lab):
    g = ovs_lab
    api.attach(NicSpec(1, 0, "ovsbr0"))
    assert ping(g["a"], "10.7.0.2")
    add_flow("ovsbr0", "priority=200,in_port=11,actions=drop")  # like the ovswitch driver's table-0 flows
    assert not ping(g["a"], "10.7.0.2")
    del_flows("ovsbr0", "in_port=11")
    settle()
    assert ping(g["a"], "10.7.0.2")


def test_ovs_security_groups_and_spoofing_filters_hold(ovs_lab):
    g = ovs_lab
    rules = load_rules_json('[{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "ICMP_TYPE": "8", "IP": "10.7.0.2",'
                            ' "SIZE": "1"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]')
    mac = link("eth0", g["a"])["address"]
    api.attach(NicSpec(1, 0, "ovsbr0", rules=rules, mac=mac, ips=("10.7.0.1",), filter_mac=True, filter_ip=True))
    assert ping(g["b"], "10.7.0.1")  # allowed peer
    sh("ip", "-n", g["b"], "addr", "add", "10.7.0.9/24", "dev", "eth0")
    res = sh("ip", "netns", "exec", g["b"], "ping", "-c1", "-W1", "-I", "10.7.0.9", "10.7.0.1", check=False)
    assert res.returncode != 0  # another peer: dropped by the security group
    sh("ip", "-n", g["a"], "addr", "add", "10.7.0.99/24", "dev", "eth0")
    spoof = sh("ip", "netns", "exec", g["a"], "ping", "-c1", "-W1", "-I", "10.7.0.99", "10.7.0.2", check=False)
    assert spoof.returncode != 0  # a foreign source address from the VM: dropped
    assert ping(g["a"], "10.7.0.2")  # its own address passes


def test_ovs_every_command_of_attach_and_detach_fails_cleanly(ovs_lab, monkeypatch):
    """A failure injected at every command of attach, then of detach, on an OVS bridge leaves links, rules, OVSDB
    records and flows exactly as before (lab.snapshot includes the lab's OVS)."""
    from netfw import runner
    from netfw.transaction import TransactionError

    from .test_rollback import FailAt

    add_flow("ovsbr0", "priority=100,in_port=11,actions=normal")
    spec = NicSpec(1, 0, "ovsbr0")
    counter = FailAt(None)
    monkeypatch.setattr(runner, "_execute", counter)
    api.attach(spec)
    monkeypatch.setattr(runner, "_execute", counter.real)
    total = len(counter.seen)
    api.detach(1, 0)
    before = snapshot()
    for n in range(1, total + 1):
        fault = FailAt(n)
        monkeypatch.setattr(runner, "_execute", fault)
        with pytest.raises((TransactionError, runner.CommandError)):
            api.attach(spec)
        monkeypatch.setattr(runner, "_execute", fault.real)
        assert snapshot() == before, f"attach failing at command {n} ({fault.failed}) left something behind"

    api.attach(spec)
    counter = FailAt(None)
    monkeypatch.setattr(runner, "_execute", counter)
    api.detach(1, 0)
    monkeypatch.setattr(runner, "_execute", counter.real)
    total = len(counter.seen)
    assert snapshot() == before  # detach leaves the host as it was before attach
    api.attach(spec)
    attached = snapshot()  # (a new veth pair: new random MACs, so a snapshot of its own)
    for n in range(1, total + 1):
        fault = FailAt(n)
        monkeypatch.setattr(runner, "_execute", fault)
        with pytest.raises((TransactionError, runner.CommandError)):
            api.detach(1, 0)
        monkeypatch.setattr(runner, "_execute", fault.real)
        assert snapshot() == attached, f"detach failing at command {n} ({fault.failed}) left something behind"
    assert ping(ovs_lab["a"], "10.7.0.2")


#: Strings OVSDB holds (any but NUL): line and paragraph separators and NEL (which str.splitlines() takes for line
#: breaks, issue 19), quotes, backslashes, what looks like escapes and ovs-vsctl syntax, non-ASCII, astral and control
#: characters, the empty string, and the longest netfw carries (ovs.py: 4096 characters), as values and as keys.
HOSTILE = {"sep": "a\u2028b", "para\u2029key": "\u2029", "nel\u0085": "x\u0085y", "quote": 'q"uote\\back\\\\slash',
           "escapes": "\\u2028 \\n \\\"", "ctl": "line\nfeed\r\t\x01\x1f\x7f", "utf-é": "é漢😀", "k:e=y, {a}[b]": "=,{}[]: ",
           'q"k\\': "", "longest": "😀" * 4096, "\u2028" * 4096: "\u2028" * 4096}
#: Many long values: 10 of 4096 astral characters, 49 KiB each as JSON escapes (the add-port writes a map key by key).
MANY = {f"m{i}": chr(0x1F600 + i) * 4096 for i in range(10)}


def ids(values: dict) -> list[str]:
    return [f"{json.dumps(k)}={json.dumps(v)}" for k, v in values.items()]


def test_ovs_every_string_ovsdb_holds_is_carried_to_the_veth_end_and_back(ovs_lab):
    vsctl("set", "Interface", "one-1-0", *(f"external_ids:{p}" for p in ids(HOSTILE)),
          *(f"other_config:{p}" for p in ids(MANY)))
    vsctl("set", "Port", "one-1-0", *(f"external_ids:{p}" for p in ids(HOSTILE)))
    before = ovs_records("one-1-0")
    # OVSDB holds the very strings (the lab set them right)
    assert dict(before["port"]["external_ids"][1]) == {"vm-id": "one-1", **HOSTILE}
    assert dict(before["iface"]["external_ids"][1]) == {"iface-id": "vm1-nic0", "attached-mac": "02:00:0a:07:00:01",
                                                        **HOSTILE}
    assert dict(before["iface"]["other_config"][1]) == {"foo": "bar", **MANY}

    api.attach(NicSpec(1, 0, "ovsbr0"))
    assert link("one-1-0")["ifalias"] == "netfw vm=1 nic=0 role=h"
    assert ovs_records("one-1-0") == before  # the veth end has them
    assert health.survey()[0].health == "attached" and api.verify(1, 0) == {0: []}
    eventually(lambda: ping(ovs_lab["a"], "10.7.0.2"), "VM 1 reaching VM 2 after the cut-over")

    api.detach(1, 0)
    assert "ifalias" not in link("one-1-0")  # the tap itself
    assert ovs_records("one-1-0") == before  # has them again
    eventually(lambda: ping(ovs_lab["a"], "10.7.0.2"), "VM 1 reaching VM 2 after the detach")


@pytest.mark.parametrize("values, message", [
    ({"big": "x" * 4097}, "longer than 4096"),
    ({f"m{i}": chr(0x1F600 + i) * 4096 for i in range(24)}, "more than the 1048576 netfw can write back"),
])
def test_ovs_records_netfw_refuses_stop_attach_before_anything_changes(ovs_lab, values, message):
    for chunk in (dict(list(values.items())[:12]), dict(list(values.items())[12:])):
        if chunk:
            vsctl("set", "Interface", "one-1-0", *(f"external_ids:{p}" for p in ids(chunk)))
    before = snapshot()
    with pytest.raises(InputError, match=message):
        api.attach(NicSpec(1, 0, "ovsbr0"))
    assert snapshot() == before


def test_ovs_a_value_netfw_refuses_on_one_veth_end_is_that_nic_s_error_only(ovs_lab):
    api.attach(NicSpec(1, 0, "ovsbr0"))
    api.attach(NicSpec(2, 0, "ovsbr0"))
    vsctl("set", "Interface", "one-1-0", f"external_ids:big={json.dumps('x' * 4097)}")  # by the tap's name
    found = {(h.vm, h.nic): h for h in health.survey()}
    assert found[(1, 0)].health == "error" and "longer than 4096" in found[(1, 0)].problems[0]
    assert found[(2, 0)].health == "attached"
    api.detach(2, 0)  # every other NIC's detach works
    assert "ifalias" not in link("one-2-0")
    with pytest.raises(InputError, match="longer than 4096"):  # its own is refused, nothing touched
        api.detach(1, 0)
    vsctl("remove", "Interface", "one-1-0", "external_ids", "big")
    api.detach(1, 0)
    assert "ifalias" not in link("one-1-0")
    eventually(lambda: ping(ovs_lab["a"], "10.7.0.2"), "VM 1 reaching VM 2 after its detach")
