"""OpenNebula on a real libvirt, for tests/integration/test_libvirt_netfw.py and test_libvirt_by_name.py: netfw's
qemu hook installed by `netfw hook install` into the sandbox's /etc/libvirt, the driver actions run as oned runs
them (test_opennebula.Host: scripts/opennebula/<action>, the document tests/oned.py builds), VM 7's domain as
OpenNebula's KVM driver writes it for the documents under tests/data/one/, and a peer that floods the guest.

libvirt passes its hooks only PATH (and HOME, USER, LOGNAME, TMPDIR, LD_*) of its environment, so the hook script
cannot be told the state directory by a variable; on a hypervisor that is a line of /etc/netfw/opennebula.conf, which
is the host's own here. In its place, libvirtd's PATH starts with a directory whose `netfw` runs the venv's netfw
with NETFW_STATE_DIR set: the hook script itself is the one `netfw hook install` puts there, unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .libvirt_guest import Nic
from .test_opennebula import NETFW, VM, Host

HOOKS = Path("/etc/libvirt/hooks")

#: VM 7 of e2e_two_nics.xml / e2e_sg_changed.xml: NIC 0 on vnbr0, NIC 1 on vnbr1, NIC 3 (VN_MAD dummy) on dummybr0
TWO_NICS = [Nic(VM, 0, "02:00:0a:3d:00:07", "vnbr0", "10.61.0.7/24"),
            Nic(VM, 1, "02:00:0a:3d:01:07", "vnbr1", "10.61.1.7/24"),
            Nic(VM, 3, "02:00:0a:3d:03:07", "dummybr0", None)]
#: NIC 2 of e2e_hot_attach.xml (hot-plugged on vnbr0)
HOT_NIC = Nic(VM, 2, "02:00:0a:3d:00:11", "vnbr0", "10.61.0.17/24")
#: VM 7 of e2e_ovswitch.xml: NIC 0 on the Open vSwitch bridge ovsbr0
OVS_NIC = Nic(VM, 0, "02:00:0a:3e:00:07", "ovsbr0", "10.62.0.7/24", ovs=True)


@pytest.fixture(scope="module")
def hooked(libvirt):
    """The module's libvirtd with netfw's hook installed (`netfw hook install`) and a state directory for it."""
    state = libvirt.dir / "state"
    state.mkdir(mode=0o700)
    shim = libvirt.dir / "bin"
    shim.mkdir()
    (shim / "netfw").write_text(f'#!/bin/sh\nNETFW_STATE_DIR={state} exec {NETFW} "$@"\n')
    (shim / "netfw").chmod(0o755)
    HOOKS.mkdir(exist_ok=True)  # libvirt-daemon-system's, which the lab does without
    res = subprocess.run([str(NETFW), "hook", "install", "--hooks-dir", str(HOOKS)], capture_output=True, text=True)
    assert res.returncode == 0, f"netfw hook install: exit {res.returncode}: {res.stderr}"
    libvirt.env = {"PATH": f"{shim}:{os.environ['PATH']}"}
    libvirt.restart()
    yield libvirt, state
    subprocess.run([str(NETFW), "hook", "uninstall", "--hooks-dir", str(HOOKS)], capture_output=True)
    libvirt.env = {}
    libvirt.restart()


@pytest.fixture
def one(hooked, vlab, monkeypatch):
    """A Host running OpenNebula's driver actions against the hook's state directory (api calls in this process
    see it too); afterwards the domains are destroyed (the hook releases their NICs) and the directory emptied."""
    libvirt, state = hooked
    monkeypatch.setenv("NETFW_STATE_DIR", str(state))
    host = Host(state, shape="oned")
    yield host
    host.stop()
    vlab.teardown()
    for path in state.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


FLOOD = """
import socket, sys, time
dst, bcast, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
n = 0
while True:
    for to in (dst, bcast):
        try:
            s.sendto(b"netfw-flood %d" % n, (to, port))
            n += 1
        except OSError:
            pass
    time.sleep(0.002)
"""


class Flood:
    """A peer sending UDP to port 9 at the guest's address (unicast to its MAC: a permanent neighbour, no ARP) and
    to the subnet's broadcast, ~1,000 frames a second, until stop()."""

    def __init__(self, peer: str, nic: Nic, broadcast: str):
        subprocess.run(["ip", "-n", peer, "neigh", "replace", nic.address.split("/")[0], "lladdr", nic.mac,
                        "dev", "eth0", "nud", "permanent"], check=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", peer, "python3", "-c", FLOOD,
                                      nic.address.split("/")[0], broadcast, "9"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def udp_received(guest) -> int:
    """UDP datagrams the guest's kernel got without a listener: unicast (NoPorts) and broadcast (IgnoredMulti).
    Only the flood sends the guest UDP."""
    lines = [line.split() for line in guest.check("cat /proc/net/snmp").splitlines() if line.startswith("Udp:")]
    fields = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return fields["NoPorts"] + fields["IgnoredMulti"]
