"""Issue 21 with real libvirt and QEMU: OpenNebula's flow as it happens on a hypervisor with netfw's qemu hook.
`pre` (scripts/opennebula/pre, what oned sends) writes the pending record; `virsh create` runs the hook, which puts
the NICs behind their firewall at `start begin`, before QEMU runs; the guest's real traffic obeys the security
groups from then on; `post` changes nothing; `update_sg`; hot attach and detach; destroy releases netfw's objects;
a second start works at once; save and restore. And the unfiltered window: frames a flooding peer gets to the guest
before the rules are in force (0 wanted on a Linux bridge; measured on Open vSwitch)."""

from __future__ import annotations

import json
import time

import pytest

from netfw import api

from .lab import eventually, ping, sh, snapshot
from .libvirt_fixtures import assets, libvirt, vlab  # noqa: F401  (fixtures)
from .libvirt_guest import Guest, Nic
from .libvirt_lab import VirshError, qemu_pids
from .libvirt_one import HOT_NIC, OVS_NIC, TWO_NICS, Flood, hooked, one, udp_received  # noqa: F401
from .test_opennebula import CHANGED, FIRST, VM

VETHS = ("one-7-0", "one-7-1")


def peers(vlab, one) -> dict[str, str]:
    """VM 7's networks (vnbr0, vnbr1, dummybr0) and the peers of test_opennebula: p0 (10.61.0.2) on vnbr0, p1 and p2
    (10.61.1.2, .3) on vnbr1; p1 listens on TCP 22 and 5432."""
    for bridge in ("vnbr0", "vnbr1", "dummybr0"):
        vlab.bridge("linux", bridge)
    g = {"p0": vlab.peer("vnbr0", "10.61.0.2/24"), "p1": vlab.peer("vnbr1", "10.61.1.2/24"),
         "p2": vlab.peer("vnbr1", "10.61.1.3/24")}
    one.listen(g["p1"], 22, 5432)
    return g


def serve(guest: Guest) -> None:
    """TCP listeners in the guest: 22 and 8080 (NIC 0's rules), 80 (NIC 1's), on every address."""
    guest.check("for p in 22 80 8080; do httpd -p $p -h /tmp || exit 1; done")


def tcp_from_guest(guest: Guest, address: str, port: int) -> bool:
    return guest.run(f"timeout 5 nc -w 2 {address} {port} </dev/null", timeout=15)[0] == 0


def matrix(one, g: dict[str, str], guest: Guest) -> dict[str, bool]:
    """test_opennebula.matrix with the real guest in place of the simulated VM."""
    return {
        "p0 -> vm:22": one.tcp(g["p0"], "10.61.0.7", 22),
        "p0 -> vm:8080": one.tcp(g["p0"], "10.61.0.7", 8080),
        "p0 ping vm": one.ping(g["p0"], "10.61.0.7"),
        "vm ping p0": guest.ping("10.61.0.2"),
        "p1 -> vm:80": one.tcp(g["p1"], "10.61.1.7", 80),
        "p2 -> vm:80": one.tcp(g["p2"], "10.61.1.7", 80),
        "p1 ping vm": one.ping(g["p1"], "10.61.1.7"),
        "vm -> p1:5432": tcp_from_guest(guest, "10.61.1.2", 5432),
        "vm -> p1:22": tcp_from_guest(guest, "10.61.1.2", 22),
    }


def same_subnet(guest: Guest, dev: str, address: str) -> None:
    """A second NIC on NIC 0's subnet: it answers ARP for its own address only, and what it sends leaves by it (else
    the guest answers by eth0, whose anti-spoofing rules rightly drop a source address that is not NIC 0's)."""
    ip = address.split("/")[0]
    guest.check("echo 1 > /proc/sys/net/ipv4/conf/all/arp_ignore && echo 2 > /proc/sys/net/ipv4/conf/all/arp_announce"
                f" && ip addr add {address} dev {dev} && ip link set {dev} up && ip rule add from {ip} table 102"
                f" && ip route add 10.61.0.0/24 dev {dev} src {ip} table 102")


def tap_in_vm_namespace(tap: str) -> bool:
    """QEMU's tap (a tun link) is in netfw's namespace one-7."""
    res = sh("ip", "-n", "one-7", "-d", "-j", "link", "show", tap, check=False)
    return res.returncode == 0 and json.loads(res.stdout)[0].get("linkinfo", {}).get("info_kind") == "tun"


def netfw_objects(one) -> list[str]:
    """What netfw keeps for VM 7 on the host (namespace, veth ends, records), the pending record aside."""
    return [x for x in one.netfw_left() if not x.endswith("/pending.json")]


def test_opennebula_flow_with_the_hook_on_real_libvirt(one, vlab):
    g = peers(vlab, one)
    one.ok("pre", doc="e2e_two_nics.xml")
    guest = vlab.guest(VM, TWO_NICS).create()
    assert api.verify(VM) == {0: [], 1: []}  # attached by the hook, before QEMU ran
    assert tap_in_vm_namespace("one-7-0") and tap_in_vm_namespace("one-7-1")
    serve(guest)
    assert matrix(one, g, guest) == FIRST

    before = snapshot()
    one.ok("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert snapshot() == before  # post finds the NICs attached and changes nothing

    one.ok("update_sg", "one-7", doc="e2e_sg_changed.xml")
    assert matrix(one, g, guest) == CHANGED

    vlab.libvirt.virsh("attach-device", guest.name, "/dev/stdin", "--live", stdin=HOT_NIC.xml())  # no hook runs
    one.ok("pre", doc="e2e_hot_attach.xml")
    one.ok("post", "one-7", "host-a", doc="e2e_hot_attach.xml")
    assert api.verify(VM) == {0: [], 1: [], 2: []}
    eventually(lambda: HOT_NIC.mac in guest.check("ip -o link"), "the guest sees the hot-plugged NIC")
    eth2 = guest.ifname(HOT_NIC.mac)
    same_subnet(guest, eth2, HOT_NIC.address)
    eventually(lambda: one.tcp(g["p0"], "10.61.0.17", 8080), "the hot-plugged NIC passes what its rules allow")
    assert not one.tcp(g["p0"], "10.61.0.17", 22)

    vlab.libvirt.virsh("detach-device", guest.name, "/dev/stdin", "--live", stdin=HOT_NIC.xml())
    eventually(lambda: HOT_NIC.mac not in guest.check("ip -o link"), "the guest lost the hot-unplugged NIC")
    one.ok("clean", "host-a", doc="e2e_hot_attach.xml")  # hot detach: NIC 2 only
    assert api.verify(VM) == {0: [], 1: []}
    assert matrix(one, g, guest) == CHANGED

    guest.destroy()  # stopped end, release end: the hook releases the NICs, the pending record stays
    eventually(lambda: netfw_objects(one) == [], "netfw's objects gone after virsh destroy")
    guest.create()  # at once: no veth end holds a tap's name
    assert api.verify(VM) == {0: [], 1: []}
    serve(guest)
    second = matrix(one, g, guest)
    assert second == CHANGED  # the rules of the last update_sg (the pending record follows it), not of the pre

    guest.destroy()
    eventually(lambda: netfw_objects(one) == [], "netfw's objects gone after the second destroy")
    log = one.ok("clean", "host-a", doc="e2e_sg_changed.xml")
    assert one.netfw_left() == [], log
    assert not qemu_pids()


def test_save_and_restore_keep_the_guest_behind_its_firewall(one, vlab, tmp_path):
    g = peers(vlab, one)
    one.ok("pre", doc="e2e_two_nics.xml")
    guest = vlab.guest(VM, TWO_NICS).create()
    serve(guest)
    assert matrix(one, g, guest) == FIRST

    image = tmp_path / "one-7.save"
    guest.close()
    vlab.libvirt.virsh("save", guest.name, str(image))  # stopped end, release end
    eventually(lambda: netfw_objects(one) == [], "netfw's objects gone after virsh save")
    vlab.libvirt.virsh("restore", str(image))  # restore begin, prepare begin, start begin (attach), started begin
    assert api.verify(VM) == {0: [], 1: []}
    assert matrix(one, g, guest) == FIRST  # the same guest (its listeners still run), filtered again


def window(one, vlab, guest: Guest, peer: str, nic) -> tuple[int, int]:
    """Boot the guest while the peer floods it; (UDP datagrams the guest got, frames it received in all)."""
    flood = Flood(peer, nic, "10.61.0.255" if nic.bridge != "ovsbr0" else "10.62.0.255")
    try:
        time.sleep(0.5)
        guest.create()
        time.sleep(1)  # the flood goes on once the guest runs: with the rules in force, none of it arrives
    finally:
        flood.stop()
    eth = guest.ifname(nic.mac)
    return udp_received(guest), guest.counter(eth)


@pytest.mark.parametrize("kind", ["linux", "ovs"])
def test_unfiltered_window_flooded_across_the_start(one, vlab, kind, request):
    if kind == "ovs":
        request.getfixturevalue("ovs")
        vlab.bridge("ovs")
        nic, doc, peer = OVS_NIC, "e2e_ovswitch.xml", vlab.peer("ovsbr0", "10.62.0.2/24")
    else:
        vlab.bridge("linux", "vnbr0")
        nic, doc, peer = TWO_NICS[0], "e2e_two_nics.xml", vlab.peer("vnbr0", "10.61.0.2/24")
    one.ok("pre", doc=doc)
    guest = vlab.guest(VM, [nic])
    udp, frames = window(one, vlab, guest, peer, nic)
    print(f"unfiltered window on {kind}: {udp} flood datagrams reached the guest ({frames} frames received in all)")
    assert api.verify(VM) == {0: []}
    if kind == "linux":
        assert udp == 0
    assert ping(peer, nic.address.split("/")[0])  # what the rules allow passes


def test_without_netfw_the_flood_reaches_the_guest(vlab, libvirt):
    """The measurement's control: no hook, no pending record: the guest gets the flood."""
    vlab.bridge("linux", "vnbr0")
    peer = vlab.peer("vnbr0", "10.61.0.2/24")
    udp, frames = window(None, vlab, vlab.guest(VM, [TWO_NICS[0]]), peer, TWO_NICS[0])
    print(f"without netfw: {udp} flood datagrams reached the guest ({frames} frames)")
    assert udp > 100


def test_hot_plug_window_until_post_is_measured(one, vlab):
    """No hook runs for a hot-plug: the new NIC is on the VN bridge, unfiltered, from `attach-device` until `post`.
    Measured with the flood at the new NIC (the guest brings it up at once); after post none of it arrives."""
    vlab.bridge("linux", "vnbr0")
    peer = vlab.peer("vnbr0", "10.61.0.2/24")
    one.ok("pre", doc="e2e_two_nics.xml")
    guest = vlab.guest(VM, [TWO_NICS[0]]).create()
    flood = Flood(peer, HOT_NIC, "10.61.0.255")
    try:
        start = time.monotonic()
        vlab.libvirt.virsh("attach-device", guest.name, "/dev/stdin", "--live", stdin=HOT_NIC.xml())
        eventually(lambda: HOT_NIC.mac in guest.check("ip -o link"), "the guest sees the hot-plugged NIC")
        eth = guest.ifname(HOT_NIC.mac)
        same_subnet(guest, eth, HOT_NIC.address)
        time.sleep(1)  # OpenNebula's own steps between the attach and post take about as long
        one.ok("pre", doc="e2e_hot_attach.xml")
        one.ok("post", "one-7", "host-a", doc="e2e_hot_attach.xml")
        window = time.monotonic() - start
        udp, frames = udp_received(guest), guest.counter(eth)
        time.sleep(1)
        udp_after, frames_after = udp_received(guest), guest.counter(eth)
    finally:
        flood.stop()
    print(f"hot-plug window: {udp} flood datagrams ({frames} frames) reached the new NIC in the {window:.1f} s "
          f"from attach-device to the end of post; {udp_after - udp} in the second after")
    assert api.verify(VM) == {0: [], 2: []}
    assert udp_after == udp and frames_after - frames <= 1


def test_a_domain_that_does_not_match_its_pending_record_does_not_start(one, vlab):
    """Fail closed: NIC 0's MAC in the domain is not the one pre recorded; netfw's hook refuses at start begin, and
    libvirt starts nothing: no QEMU, no tap, nothing of netfw's."""
    for bridge in ("vnbr0", "vnbr1", "dummybr0"):
        vlab.bridge("linux", bridge)
    one.ok("pre", doc="e2e_two_nics.xml")
    forged = [Nic(VM, 0, "02:00:0a:3d:00:99", "vnbr0", "10.61.0.7/24"), *TWO_NICS[1:]]
    with pytest.raises(VirshError, match="Hook script execution failed"):
        vlab.guest(VM, forged).create(wait=False)
    assert vlab.libvirt.domains() == [] and not qemu_pids()
    assert all(sh("ip", "link", "show", tap, check=False).returncode for tap in ("one-7-0", "one-7-1", "one-7-3"))
    assert netfw_objects(one) == []
