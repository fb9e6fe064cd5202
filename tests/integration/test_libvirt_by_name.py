"""Issue 21, item 6: what libvirt does by the tap's name once netfw's hook holds the NIC (its veth end carries the
name on the VN bridge), on a Linux bridge and on Open vSwitch, with a real guest: `domifstat`, `domiftune --live`,
a libvirtd restart (reconnect), `update-device` to another bridge, `detach-interface`, `destroy`. Each works or is
refused cleanly: the guest stays behind its firewall, and what netfw keeps goes when the domain ends."""

from __future__ import annotations

import json

import pytest

from netfw import api

from .lab import eventually, ping, sh
from .libvirt_fixtures import assets, libvirt, vlab  # noqa: F401  (fixtures)
from .libvirt_guest import Nic
from .libvirt_lab import VirshError, qemu_pids
from .libvirt_one import OVS_NIC, TWO_NICS, hooked, one  # noqa: F401
from .ovs import vsctl
from .test_opennebula import VM

KINDS = {  # NIC, its document, a peer's address, the other bridge (with a peer) for update-device
    "linux": (TWO_NICS[0], "e2e_two_nics.xml", "10.61.0.2/24", "vnbr9", "10.61.0.3/24"),
    "ovs": (OVS_NIC, "e2e_ovswitch.xml", "10.62.0.2/24", "ovsbr1", "10.62.0.3/24"),
}


def master(kind: str, link: str) -> str | None:
    """The bridge link is a port of (Open vSwitch: from OVSDB; Linux: its kernel master)."""
    if kind == "ovs":
        res = vsctl("port-to-br", link, check=False)
        return res.stdout.strip() or None
    return json.loads(sh("ip", "-j", "link", "show", link).stdout)[0].get("master")


def tcp_in(guest) -> int:
    """TCP segments the guest's kernel received (Tcp InSegs)."""
    lines = [line.split() for line in guest.check("cat /proc/net/snmp").splitlines() if line.startswith("Tcp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))["InSegs"]


def reaches(one, guest, peer: str, address: str, port: int) -> bool:
    """A peer's TCP connection attempt to port reaches the guest (counted there: on the userspace datapath the
    guest's own replies carry a checksum left to offload, KERNEL.md, so the peer's verdict would say nothing)."""
    before = tcp_in(guest)
    one.tcp(peer, address, port)
    return tcp_in(guest) > before


def filtered(one, guest, peer: str, address: str) -> bool:
    """Both security groups allow TCP 22 and ICMP echo in, not TCP 8080."""
    return (ping(peer, address) and reaches(one, guest, peer, address, 22)
            and not reaches(one, guest, peer, address, 8080))


def virsh_either(libvirt, *args: str, stdin: str | None = None) -> str:
    """Run virsh: "works", else its last error line (a clean refusal: libvirt's message, nothing else)."""
    try:
        libvirt.virsh(*args, stdin=stdin)
        return "works"
    except VirshError as e:
        lines = [line for line in e.stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), e
        return lines[-1]


@pytest.mark.parametrize("kind", ["linux", "ovs"])
def test_what_libvirt_does_by_name_with_netfw_holding_the_nic(one, vlab, kind, request, capsys):
    nic, doc, peer_ip, other, other_ip = KINDS[kind]
    if kind == "ovs":
        request.getfixturevalue("ovs")
    bridge, second = vlab.bridge(kind, nic.bridge), vlab.bridge(kind, other)
    peer, peer2 = vlab.peer(bridge, peer_ip), vlab.peer(second, other_ip)
    address, tap = nic.address.split("/")[0], nic.target
    one.ok("pre", doc=doc)
    guest = vlab.guest(VM, [nic]).create()
    guest.check("for p in 22 8080; do httpd -p $p -h /tmp || exit 1; done")
    assert api.verify(VM) == {0: []} and filtered(one, guest, peer, address)
    seen = {}

    stats = vlab.libvirt.virsh("domifstat", guest.name, tap)  # the veth end's counters: what passed the firewall
    assert f"{tap} rx_bytes" in stats and f"{tap} tx_packets" in stats
    seen["domifstat"] = "works"

    seen["domiftune --inbound 100,200,64"] = virsh_either(
        vlab.libvirt, "domiftune", guest.name, tap, "--live", "--inbound", "100,200,64")
    seen["domiftune --inbound 0 --outbound 0"] = virsh_either(
        vlab.libvirt, "domiftune", guest.name, tap, "--live", "--inbound", "0", "--outbound", "0")
    assert filtered(one, guest, peer, address)

    vlab.libvirt.restart()  # reconnect: libvirt checks the tap's name is on the configured bridge
    assert vlab.libvirt.domains() == [guest.name] and master(kind, tap) == bridge
    assert filtered(one, guest, peer, address)
    seen["libvirtd restart"] = "works"

    moved = Nic(nic.vm, nic.nic_id, nic.mac, second, nic.address, ovs=nic.ovs)
    seen["update-device"] = virsh_either(vlab.libvirt, "update-device", guest.name, "/dev/stdin", "--live",
                                         stdin=moved.xml())
    if seen["update-device"] == "works":  # the veth end moved: the guest is on the other network, still filtered
        eventually(lambda: master(kind, tap) == second, f"{tap} on {second}")
        eventually(lambda: ping(peer2, address), "the guest answers on the other bridge")
        assert filtered(one, guest, peer2, address)
    seen["verify after update-device"] = api.verify(VM)

    seen["detach-interface"] = virsh_either(vlab.libvirt, "detach-interface", guest.name, "bridge", "--mac",
                                            nic.mac, "--live")
    eventually(lambda: nic.mac not in guest.check("ip -o link"), "the guest lost its NIC")
    assert not ping(peer, address) and not ping(peer2, address)

    # what this libvirt (9.0) does, pinned: domiftune with limits depends on the kernel's qdiscs (no sfq here)
    assert seen["update-device"] == ("works" if kind == "linux" else
                                     "error: Operation not supported: unable to change config on 'bridge' network type")
    assert seen["domiftune --inbound 0 --outbound 0"] == seen["detach-interface"] == "works"

    guest.destroy()  # the hook releases what netfw keeps; on Open vSwitch libvirt deletes the port by name
    eventually(lambda: [x for x in one.netfw_left() if not x.endswith("pending.json")] == [],
               "netfw's objects gone after destroy")
    assert not qemu_pids()
    if kind == "ovs":
        assert vsctl("--if-exists", "port-to-br", tap, check=False).stdout.strip() == ""
    one.ok("clean", "host-a", doc=doc)
    assert one.netfw_left() == []
    with capsys.disabled():
        print(f"\nby name on {kind}: " + "; ".join(f"{k}: {v}" for k, v in seen.items()))

