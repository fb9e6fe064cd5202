"""A VM reaches the host's address on a VN bridge without an uplink (issue 19, finding 9; sandbox only).

A private network with the host's address on the VN bridge (NAT, single-host clouds) has only taps on its bridge. A
Linux bridge without a set MAC then takes its lowest port's MAC: a tap's (libvirt's `fe:54:...`). The veth end that
replaces the tap carries that MAC, and inside the VM namespace the tap's own MAC was a local entry of the firewall
bridge, so the guest's frames to the host's address went up to the firewall bridge's own device and never left the
VM namespace: ping to the host passed before `netfw attach` and failed after.

The same with Open vSwitch: its internal port (the bridge's own device, where the host's address is) carries the
tap's MAC. Open vSwitch picks only universally administered port MACs itself, so the lab sets it, as
`other_config:hwaddr` does.

Lab: VN bridge with VM 7's tap (the lowest MAC) and VM 8's tap (a bystander, never attached), the host's address on
the bridge. Every ping waits with a deadline (`reaches`). Addresses: 10.66.0.0/24 only.
"""

from __future__ import annotations

import json
import time

import pytest

from netfw import api
from netfw.model.spec import NicSpec

from .lab import ping, sh, vn_bridge
from .ovs import vsctl

HOST = "10.66.0.254"
IP4 = {7: "10.66.0.7", 8: "10.66.0.8"}
TAP_MAC = {7: "fe:54:00:aa:bb:01", 8: "fe:54:00:aa:bb:02"}  # libvirt's style: the guest's MAC with first byte fe
GUEST_MAC = {7: "52:54:00:aa:bb:01", 8: "52:54:00:aa:bb:02"}


def reaches(guest: str, address: str, timeout: float = 10) -> bool:
    """True once guest gets an echo reply from address, trying until the deadline."""
    deadline = time.monotonic() + timeout
    while not ping(guest, address):
        if time.monotonic() > deadline:
            return False
    return True


def mac(name: str, ns: str | None = None) -> str:
    where = ["-n", ns] if ns else []
    return json.loads(sh("ip", *where, "-j", "link", "show", "dev", name).stdout)[0]["address"]


@pytest.fixture(params=["linux", "ovs"])
def vn(request, lab):
    """(VN bridge, {VM: guest namespace}): only taps on the bridge, the host's address on it, its MAC VM 7's tap's."""
    bridge = vn_bridge(request, lab)
    guests = {vm: lab.vm(vm, 0, f"{IP4[vm]}/24", bridge=bridge, mac=GUEST_MAC[vm], tap_mac=TAP_MAC[vm])
              for vm in (7, 8)}
    if request.param == "ovs":
        vsctl("set", "Bridge", bridge, f"other_config:hwaddr={TAP_MAC[7]}")
    sh("ip", "addr", "add", f"{HOST}/24", "dev", bridge)
    sh("ip", "link", "set", bridge, "up")
    assert mac(bridge) == TAP_MAC[7]  # the situation of the finding
    return bridge, guests


def everyone_reaches_everyone(guests: dict[int, str]) -> None:
    g7, g8 = guests[7], guests[8]
    assert reaches(g7, HOST), "VM 7 does not reach the host's address"
    assert reaches(g8, HOST), "VM 8 (not attached) does not reach the host's address"
    assert reaches(g7, IP4[8]) and reaches(g8, IP4[7])


def test_a_vm_reaches_the_host_on_a_vn_bridge_that_took_its_taps_mac(vn):
    bridge, guests = vn
    everyone_reaches_everyone(guests)

    api.attach(NicSpec(7, 0, bridge))
    assert mac("one-7-0", "one-7") == TAP_MAC[7]  # the tap keeps its MAC (the connection layer cannot tell)
    assert mac("one-7-0") == TAP_MAC[7] and mac(bridge) == TAP_MAC[7]  # so do the veth end and the VN bridge
    everyone_reaches_everyone(guests)
    assert api.verify(7, 0) == {0: []}

    # the tap's MAC made local to the firewall bridge again (as joining it does): drift, and attach repairs it
    sh("bridge", "-n", "one-7", "fdb", "add", TAP_MAC[7], "dev", "one-7-0", "master", "permanent")
    assert any("is a local entry of one-br-7-0" in d for d in api.verify(7, 0)[0])
    assert api.attach(NicSpec(7, 0, bridge)).changed == \
        [f"cut-over of tap one-7-0: {bridge} <-> one-7/one-br-7-0"]
    assert api.verify(7, 0) == {0: []}
    everyone_reaches_everyone(guests)

    api.detach(7, 0)
    assert mac("one-7-0") == TAP_MAC[7] and mac(bridge) == TAP_MAC[7]
    everyone_reaches_everyone(guests)
