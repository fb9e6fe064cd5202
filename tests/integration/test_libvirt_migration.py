"""Issue 21, item 5: a live migration between two libvirtds with netfw's hook on both, as OpenNebula runs it:
the destination's `pre`, `virsh migrate --live` (the destination's hook attaches at `start begin` before the
incoming QEMU runs; the source's releases at `stopped end`/`release end`), the source's `clean` (nothing left to do),
the destination's `post` (nothing to change). The guest keeps its firewall on the destination."""

from __future__ import annotations

import json

import pytest

from .lab import eventually
from .libvirt_fixtures import assets, libvirt, vlab  # noqa: F401  (fixtures)
from .libvirt_host2 import Host2, qemu_in
from .libvirt_lab import LibvirtUnavailable, qemu_pids
from .libvirt_one import TWO_NICS, hooked, one  # noqa: F401
from .test_opennebula import VM, Host


def vm_namespace(host: Host) -> tuple:
    """The links (name, index, master, MAC, MTU) and rules of netfw's namespace one-7 on a host."""
    links = json.loads(host.sh("ip", "-n", "one-7", "-j", "link", "show").stdout)
    rules = host.sh("ip", "netns", "exec", "one-7", "iptables-save").stdout
    return ([(link["ifname"], link["ifindex"], link.get("master"), link["address"], link["mtu"]) for link in links],
            [line.split(" [")[0] for line in rules.splitlines() if not line.startswith("#")])  # no counters


@pytest.fixture
def destination(hooked, one, tmp_path):
    libvirt, _ = hooked
    state = libvirt.dir / "dst-state"
    state.mkdir(mode=0o700)
    shim = libvirt.dir / "dst-bin"
    shim.mkdir()
    netfw = (libvirt.dir / "bin" / "netfw").read_text().split("exec ", 1)[1].split(" ")[0]
    (shim / "netfw").write_text(f'#!/bin/sh\nNETFW_STATE_DIR={state} exec {netfw} "$@"\n')
    (shim / "netfw").chmod(0o755)
    try:
        host2 = Host2(libvirt.dir / "dst", {"PATH": f"{shim}:{libvirt.env['PATH'].split(':', 1)[1]}"})
    except LibvirtUnavailable as exc:
        pytest.skip(str(exc))
    yield host2, Host(state, enter=host2.enter, shape="oned")
    host2.stop()


def test_live_migration_keeps_the_guest_behind_its_firewall(one, vlab, destination):
    host2, dst = destination
    for bridge in ("vnbr0", "vnbr1", "dummybr0"):
        vlab.bridge("linux", bridge)
        dst.bridge(bridge)
    peer = vlab.peer("vnbr0", "10.61.0.2/24")
    dst_peer = dst.guest("q0", "peerq0", "vnbr0", "10.61.0.2/24")
    one.ok("pre", doc="e2e_two_nics.xml")
    guest = vlab.guest(VM, TWO_NICS).create()
    guest.check("for p in 22 8080; do httpd -p $p -h /tmp || exit 1; done")
    assert one.tcp(peer, "10.61.0.7", 22) and not one.tcp(peer, "10.61.0.7", 8080)

    dst.ok("pre", doc="e2e_two_nics.xml")
    guest.close()
    # the destination's QEMU gets a channel socket of its own: the source's removes its path when it ends
    xml = vlab.libvirt.virsh("dumpxml", "--migratable", guest.name)
    moved = guest.chan_path.with_name("one-7.dst.chan")
    assert str(guest.chan_path) in xml
    (host2.dir / "one-7.xml").write_text(xml.replace(str(guest.chan_path), str(moved)))
    vlab.libvirt.virsh("migrate", "--live", guest.name, host2.uri, "--migrateuri", "tcp://10.99.0.2:49152",
                       "--listen-address", "10.99.0.2", "--xml", str(host2.dir / "one-7.xml"), timeout=300)
    guest.chan_path = moved
    assert vlab.libvirt.domains() == [] and host2.virsh("list", "--name").stdout.split() == [guest.name]
    eventually(lambda: not qemu_pids(), "the source's QEMU gone")
    assert qemu_in(host2)
    eventually(lambda: [x for x in one.netfw_left() if not x.endswith("pending.json")] == [],
               "the source's hook released netfw's objects")
    one.ok("clean", "host-a", doc="e2e_two_nics.xml")
    assert one.netfw_left() == []

    assert dst.sh("ip", "netns", "exec", "one-7", "true").returncode == 0  # attached on the destination
    assert dst.tcp(dst_peer, "10.61.0.7", 22) and dst.ping(dst_peer, "10.61.0.7")
    assert not dst.tcp(dst_peer, "10.61.0.7", 8080)
    assert guest.ping("10.61.0.2")  # the guest itself, through the channel, on the destination
    before = vm_namespace(dst)
    dst.ok("post", "one-7", "host-b", doc="e2e_two_nics.xml")
    assert vm_namespace(dst) == before  # post: nothing to change
