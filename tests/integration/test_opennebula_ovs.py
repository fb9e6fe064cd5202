"""OpenNebula's Open vSwitch networks (VN_MAD ovswitch) through the driver scripts, as OpenNebula calls them: post,
traffic and VLAN isolation, update_sg, the ovswitch driver's own changes by the tap's name, update_nic, clean. A real
Open vSwitch on the userspace datapath, real traffic (issue 9)."""

from __future__ import annotations

import json

import pytest

from netfw import api

from .lab import eventually, ping, sh
from .ovs import vsctl
from .test_opennebula import Host, shape  # noqa: F401 (the fixture: every test in both shapes)


@pytest.fixture
def ovs_host(lab, ovs, state_dir, shape):
    lab.ovs_bridge("ovsbr0")
    guests = {
        "vm": lab.vm(7, 0, "10.62.0.7/24", bridge="ovsbr0", mac="02:00:0a:3e:00:07", tag=10, ofport=17),
        "p": lab.vm(8, 0, "10.62.0.2/24", bridge="ovsbr0", tag=10),  # a peer on the same VLAN
        "q": lab.vm(9, 0, "10.62.0.3/24", bridge="ovsbr0", tag=20),  # and one on another
    }
    vsctl("set", "Interface", "one-7-0", "external_ids:iface-id=7-0", "external_ids:attached-mac=02:00:0a:3e:00:07")
    h = Host(state_dir, shape=shape)
    h.listen(guests["vm"], 22, 8080)
    yield h, guests
    h.stop()


def records(name: str) -> dict:
    """The port's VLAN tag and its interface's external_ids and OpenFlow port, as OVSDB has them."""
    out = json.loads(vsctl("--format=json", "--columns=tag", "list", "Port", name).stdout)
    iface = json.loads(vsctl("--format=json", "--columns=external_ids,ofport", "list", "Interface", name).stdout)
    return {"tag": out["data"][0][0], **dict(zip(iface["headings"], iface["data"][0]))}


def test_ovswitch_nic_through_the_driver_actions(ovs_host):
    h, g = ovs_host
    before = records("one-7-0")
    assert ping(g["p"], "10.62.0.7") and not ping(g["q"], "10.62.0.7", wait=0.5)  # VLAN 10 only

    h.ok("pre", doc="e2e_ovswitch.xml")
    h.ok("post", "one-7", "host-a", doc="e2e_ovswitch.xml")
    assert "netfw" in json.loads(sh("ip", "-j", "link", "show", "one-7-0").stdout)[0].get("ifalias", "")
    assert records("one-7-0") == before  # tag, external_ids, OpenFlow port: as the ovswitch driver and libvirt set
    assert api.verify(7) == {0: []}
    assert h.tcp(g["p"], "10.62.0.7", 22) and not h.tcp(g["p"], "10.62.0.7", 8080)
    assert ping(g["p"], "10.62.0.7") and not ping(g["q"], "10.62.0.7", wait=0.5)

    h.ok("update_sg", "one-7", doc="e2e_ovswitch_sg_changed.xml")
    assert h.tcp(g["p"], "10.62.0.7", 8080) and h.tcp(g["p"], "10.62.0.7", 22)

    vsctl("set", "Port", "one-7-0", "tag=20")  # what the ovswitch driver's update_nic does, by the tap's name
    eventually(lambda: ping(g["q"], "10.62.0.7") and not ping(g["p"], "10.62.0.7", wait=0.5),
               "the retag to VLAN 20 (ovs-vswitchd applies it after ovs-vsctl returns)")
    h.ok("update_nic", "one-7", "5", doc="e2e_ovswitch_sg_changed.xml")
    assert api.verify(7) == {0: []}  # the tag is the connection layer's: no drift

    h.ok("clean", "host-a", doc="e2e_ovswitch_sg_changed.xml")  # e.g. netfw taken away while the VM runs
    assert "ifalias" not in json.loads(sh("ip", "-j", "link", "show", "one-7-0").stdout)[0]  # the tap itself
    assert records("one-7-0") == {**before, "tag": 20}
    assert ping(g["q"], "10.62.0.7") and h.tcp(g["q"], "10.62.0.7", 8080)
    assert h.netfw_left() == []
