"""OpenNebula's Open vSwitch networks (VN_MAD ovswitch) through the driver scripts, as OpenNebula calls them: post,
traffic and VLAN isolation, update_sg, the ovswitch driver's own changes by the tap's name, update_nic, clean. A real
Open vSwitch on the userspace datapath, real traffic (issue 9)."""

from __future__ import annotations

import json

import pytest

from netfw import api

from .lab import eventually, ping, sh
from .ovs import vsctl
from .. import oned
from .test_opennebula import DATA, Host, shape  # noqa: F401 (the fixture: every test in both shapes)


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


def test_ovswitch_hot_plug_spoofing_and_shutdown(ovs_host, lab):
    """Issue 18: on Open vSwitch, with what oned sends: spoofing dropped, a hot-attached NIC filtered in its VLAN, its
    hot detach, and the VM's end (shutdown, or the source of a migration): the taps die, the ovswitch driver's clean
    deletes the ports by the tap's name (netfw's veth ends), netfw's clean leaves nothing."""
    h, g = ovs_host
    h.ok("post", "one-7", "host-a", doc="e2e_ovswitch.xml")
    sh("ip", "-n", g["vm"], "addr", "add", "10.62.0.99/24", "dev", "eth0")
    assert h.ping(g["vm"], "10.62.0.2") and not h.ping(g["vm"], "10.62.0.2", source="10.62.0.99")

    g1 = lab.vm(7, 1, "10.62.0.17/24", bridge="ovsbr0", mac="02:00:0a:3e:00:11", tag=10)
    h.listen(g1, 22, 8080)
    assert h.tcp(g["p"], "10.62.0.17", 8080)  # before: on the VN bridge, unfiltered
    h.ok("pre", doc="e2e_ovswitch_hot_attach.xml")
    log = h.ok("post", "one-7", "host-a", doc="e2e_ovswitch_hot_attach.xml")
    assert "INFO: netfw post: VM 7 NIC 1: " in log  # the attached NIC alone
    assert api.verify(7) == {0: [], 1: []}
    assert h.tcp(g["p"], "10.62.0.17", 22) and not h.tcp(g["p"], "10.62.0.17", 8080)
    assert ping(g["p"], "10.62.0.17") and not ping(g["q"], "10.62.0.17", wait=0.5)  # VLAN 10 kept

    h.ok("clean", "host-a", doc="e2e_ovswitch_hot_attach.xml")  # hot detach: NIC 1 only
    assert api.verify(7) == {0: []}
    assert h.tcp(g["p"], "10.62.0.17", 8080) and not ping(g["q"], "10.62.0.17", wait=0.5)
    assert h.tcp(g["p"], "10.62.0.7", 22) and not h.tcp(g["p"], "10.62.0.7", 8080)  # NIC 0 still filtered

    for guest, tap in ((g["vm"], "one-7-0"), (g1, "one-7-1")):  # the VM ends: its taps go with QEMU
        h.leave(guest, tap)
    for tap in ("one-7-0", "one-7-1"):  # the ovswitch driver's clean, by the tap's name
        vsctl("--if-exists", "del-port", "ovsbr0", tap)
    h.ok("clean", "host-a", doc="e2e_ovswitch.xml")
    assert h.netfw_left() == []
    assert not {"one-7-0", "one-7-1"} & set(vsctl("list-ports", "ovsbr0").stdout.split())


def test_a_vm_on_linux_and_open_vswitch_through_both_drivers_hooks(lab, ovs, state_dir, shape, tmp_path):
    """Issue 18: oned runs a VM's drivers one after the other (here bridge, then ovswitch), each with the whole
    reduced document, each running its hooks after its own work. netfw's hook in the bridge driver takes both NICs
    (both VN_MADs are handled), the Open vSwitch one before the ovswitch driver has tagged its port; that driver
    then tags the port by the tap's name (netfw's veth end), which works, and netfw's hook there changes nothing."""
    from .test_opennebula import install_hooks, run_clean

    lab.bridge("vnbr0")
    lab.ovs_bridge("ovsbr0")
    vm0 = lab.vm(7, 0, "10.61.0.7/24", bridge="vnbr0", mac="02:00:0a:3d:00:07")
    vm1 = lab.vm(7, 1, "10.62.0.7/24", bridge="ovsbr0", mac="02:00:0a:3e:00:07")  # not tagged yet
    p0 = lab.vm(8, 0, "10.61.0.2/24", bridge="vnbr0")
    p, q = lab.vm(9, 0, "10.62.0.2/24", bridge="ovsbr0", tag=10), lab.vm(10, 0, "10.62.0.3/24", bridge="ovsbr0", tag=20)
    h = Host(state_dir, shape=shape)
    h.listen(vm0, 22, 8080)
    h.listen(vm1, 22, 8080)
    doc = "e2e_two_drivers.xml"
    assert oned.drivers((DATA / doc).read_bytes()) == ["bridge", "ovswitch"]
    delete_port = "#!/bin/sh\ncat > /dev/null\novs-vsctl --if-exists del-port ovsbr0 one-7-1\n"  # its own clean, by name
    folders = {"bridge": install_hooks(tmp_path, "bridge"), "ovswitch": install_hooks(tmp_path, "ovswitch", delete_port)}
    try:
        code, err = oned.run_hooks(folders["bridge"], "post", ["one-7", "host-a"], h.stdin("post", doc), h.env())
        log = oned.vm_log(code, err)[0]
        assert code == 0 and any(line.startswith("INFO post: netfw post: VM 7 NIC 0, 1: ") for line in log), log
        vsctl("set", "Port", "one-7-1", "tag=10")  # the ovswitch driver's post, by the tap's name
        code, err = oned.run_hooks(folders["ovswitch"], "post", ["one-7", "host-a"], h.stdin("post", doc), h.env())
        assert code == 0 and "INFO post: netfw post: VM 7 NIC 0, 1: no change" in oned.vm_log(code, err)[0], err
        eventually(lambda: ping(p, "10.62.0.7") and not ping(q, "10.62.0.7", wait=0.5), "VLAN 10 on netfw's port")
        assert api.verify(7) == {0: [], 1: []}
        assert h.tcp(p, "10.62.0.7", 22) and not h.tcp(p, "10.62.0.7", 8080)
        assert h.tcp(p0, "10.61.0.7", 22) and not h.tcp(p0, "10.61.0.7", 8080)
        sh("ip", "-n", vm1, "addr", "add", "10.62.0.99/24", "dev", "eth0")
        assert h.ping(vm1, "10.62.0.2") and not h.ping(vm1, "10.62.0.2", source="10.62.0.99")

        for guest, tap in ((vm0, "one-7-0"), (vm1, "one-7-1")):  # the VM is shut down: its taps go
            h.leave(guest, tap)
        for driver in ("bridge", "ovswitch"):  # each driver's clean: the chain, netfw's part first
            code, err = run_clean(h, folders[driver], doc)
            assert code == 0, err
        assert h.netfw_left() == []
        assert "one-7-1" not in vsctl("list-ports", "ovsbr0").stdout.split()
    finally:
        h.stop()


def test_ovswitch_clean_of_a_port_whose_records_hold_line_separators(ovs_host):
    """Issue 19: `ovs-vsctl set Interface one-7-0 'external_ids:note="a\\u2028b"'` made every netfw call that read the
    port fail (a JSONDecodeError): the VM could not be cleaned. The driver's clean detaches it, the tap gets it."""
    h, g = ovs_host
    h.ok("post", "one-7", "host-a", doc="e2e_ovswitch.xml")
    vsctl("set", "Interface", "one-7-0", 'external_ids:note="a\\u2028b\\u2029c\\u0085d"')  # on the veth end
    vsctl("set", "Port", "one-7-0", 'external_ids:note="\\u2028"')
    assert api.verify(7) == {0: []}
    before = records("one-7-0")
    assert dict(before["external_ids"][1])["note"] == "a\u2028b\u2029c\u0085d"
    h.ok("clean", "host-a", doc="e2e_ovswitch.xml")
    assert "ifalias" not in json.loads(sh("ip", "-j", "link", "show", "one-7-0").stdout)[0]  # the tap itself
    assert records("one-7-0") == before
    port = json.loads(vsctl("--format=json", "--columns=external_ids", "list", "Port", "one-7-0").stdout)
    assert port["data"][0][0] == ["map", [["note", "\u2028"]]]
    eventually(lambda: ping(g["p"], "10.62.0.7"), "the peer reaching the VM after the clean")
    assert h.netfw_left() == []
