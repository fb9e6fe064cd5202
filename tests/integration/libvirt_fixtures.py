"""Fixtures of the real-libvirt tests (tests/integration/test_libvirt_*.py, which `make test` runs in
`scripts/sandbox --all-ids`): the guest's assets, a private libvirtd per module, and `vlab`, a lab with VN bridges,
peers and guests whose domains are destroyed before the lab is reset."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from . import guest_assets
from . import lab as lab_mod
from .libvirt_guest import Guest, Nic
from .libvirt_lab import Libvirt, LibvirtUnavailable, unavailable


@pytest.fixture(scope="session")
def assets():
    """The guest's kernel and initramfs (cached under build/guest/), or a skip that says why."""
    try:
        return guest_assets.ensure()
    except guest_assets.AssetsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def libvirt(request):
    """A private libvirtd for the module (after the lab's Open vSwitch, when that can run: libvirtd inherits its
    environment), or a skip that says why. Its work directory is short: it holds the guests' unix sockets."""
    why = unavailable()
    if why:
        pytest.skip(why)
    try:
        lab_ovs = request.getfixturevalue("ovs")
    except pytest.skip.Exception:
        lab_ovs = None  # the Open vSwitch cases skip on their own
    default = Path("/run/openvswitch")  # private to this sandbox (unavailable() checked)
    if lab_ovs is not None and not default.exists():
        # where a hook finds Open vSwitch: libvirt passes it no OVS_RUNDIR, so ovs-vsctl looks at its default
        default.symlink_to(lab_ovs.dir)
    workdir = Path(tempfile.mkdtemp(prefix="nfv-"))
    daemon = Libvirt(workdir)
    try:
        daemon.start()
    except LibvirtUnavailable as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.skip(str(exc))
    yield daemon
    daemon.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    if default.is_symlink():
        default.unlink()


class VLab:
    """VN bridges, peers (namespaces with an address on a VN bridge) and guests, in one test."""

    def __init__(self, lab: lab_mod.Lab, libvirt: Libvirt, assets: guest_assets.Assets):
        self.lab, self.libvirt, self.assets = lab, libvirt, assets
        self.guests: list[Guest] = []
        self.peers = 0

    def bridge(self, kind: str, name: str | None = None) -> str:
        """A Linux bridge (vnbr0) or an Open vSwitch bridge (ovsbr0, userspace datapath)."""
        if kind == "ovs":
            return self.lab.ovs_bridge(name or "ovsbr0")
        return self.lab.bridge(name or "vnbr0")

    def peer(self, bridge: str, address: str, mac: str | None = None) -> str:
        """A namespace with eth0 (address) on bridge, by a veth named peerN: returns the namespace."""
        self.peers += 1
        return self.lab.vm(900 + self.peers, 0, address, bridge=bridge, tap=f"peer{self.peers}", mac=mac)

    def nic(self, vm: int, nic_id: int, bridge: str, address: str, **kw) -> Nic:
        """A NIC with OpenNebula's MAC scheme (02:00 + the IPv4 address)."""
        ip = [int(x) for x in address.split("/")[0].split(".")]
        mac = "02:00:" + ":".join(f"{x:02x}" for x in ip)
        return Nic(vm, nic_id, mac, bridge, address, ovs=bridge in self.lab.ovs_bridges, **kw)

    def guest(self, vm: int, nics: list[Nic]) -> Guest:
        """A guest (not started: create() boots it)."""
        guest = Guest(self.libvirt, self.assets, self.libvirt.dir, vm, nics)
        self.guests.append(guest)
        return guest

    def teardown(self) -> None:
        for guest in self.guests:
            guest.close()
        for name in self.libvirt.domains():
            self.libvirt.virsh("destroy", name, check=False)


@pytest.fixture
def vlab(libvirt, assets, lab):
    """A VLab; its domains are destroyed before the lab's links and namespaces are removed."""
    instance = VLab(lab, libvirt, assets)
    yield instance
    instance.teardown()
