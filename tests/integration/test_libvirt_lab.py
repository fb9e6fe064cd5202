"""The real-libvirt lab works on its own, without netfw: a guest boots under a private libvirtd, gets its addresses,
pings and is pinged over a Linux bridge and over Open vSwitch; a qemu hook is called with the documented phases;
libvirtd restarts and reconnects. Few boots: TCG on two busy vCPUs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from . import guest_assets
from . import lab as lab_mod
from .lab import eventually
from .libvirt_fixtures import assets, libvirt, vlab  # noqa: F401  (fixtures)
from .libvirt_guest import Nic
from .libvirt_lab import HOOKS, VirshError, qemu_pids
from .ovs import vsctl

RECORDER = """#!/bin/sh
# the lab's recording hook: each call appends its arguments and its standard input (the domain XML)
{{ echo "@@call $*"; cat; echo; }} >> {log}
"""


def calls(log: Path) -> list[tuple[str, str]]:
    """(arguments, stdin) of each recorded hook call."""
    text = log.read_text() if log.exists() else ""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^@@call ([^\n]*)\n(.*?)(?=^@@call |\Z)", text, re.M | re.S)]


def phases(log: Path) -> list[str]:
    return [" ".join(args.split()[1:3]) for args, _ in calls(log)]


@pytest.fixture
def recorder(libvirt):
    """The recording hook, installed under the sandbox's /etc/libvirt and picked up by a libvirtd restart; removed
    (and libvirtd restarted again) afterwards."""
    log = libvirt.dir / "hook.log"
    libvirt.install_hook("record", RECORDER.format(log=log))
    libvirt.restart()
    yield log
    libvirt.remove_hook("record")
    libvirt.restart()
    log.unlink(missing_ok=True)


def test_guest_boots_and_talks_over_a_linux_bridge_and_open_vswitch(vlab, request):
    request.getfixturevalue("ovs")  # after vlab: without libvirt, its reason to skip comes first
    linux, ovsbr = vlab.bridge("linux"), vlab.bridge("ovs")
    peer_l, peer_o = vlab.peer(linux, "10.0.0.1/24"), vlab.peer(ovsbr, "10.1.0.1/24")
    nics = [vlab.nic(5, 0, linux, "10.0.0.2/24"), vlab.nic(5, 1, ovsbr, "10.1.0.2/24")]
    guest = vlab.guest(5, nics).create()
    print(f"guest boot (virsh create until the channel answers): {guest.boot_seconds:.1f} s")

    eth0, eth1 = guest.ifname(nics[0].mac), guest.ifname(nics[1].mac)
    assert "10.0.0.2/24" in guest.check(f"ip -o -4 addr show dev {eth0}")
    assert "10.1.0.2/24" in guest.check(f"ip -o -4 addr show dev {eth1}")
    assert guest.ping("10.0.0.1") and guest.ping("10.1.0.1")
    assert lab_mod.ping(peer_l, "10.0.0.2") and lab_mod.ping(peer_o, "10.1.0.2")
    assert guest.counter(eth0) > 0 and guest.counter(eth1) > 0

    # libvirt made the taps as LIBVIRT.md says: the guest's MAC with first byte fe, on the VN bridge / OVS port
    tap = json.loads(lab_mod.sh("ip", "-j", "link", "show", "one-5-0").stdout)[0]
    assert tap["master"] == linux and tap["address"] == "fe" + nics[0].mac[2:]
    assert vsctl("port-to-br", "one-5-1").stdout.strip() == ovsbr
    assert nics[1].mac in vsctl("get", "Interface", "one-5-1", "external_ids:attached-mac").stdout

    guest.destroy()
    eventually(lambda: not qemu_pids(), "QEMU gone after virsh destroy")
    assert lab_mod.sh("ip", "link", "show", "one-5-0", check=False).returncode != 0
    assert vsctl("--if-exists", "port-to-br", "one-5-1", check=False).stdout.strip() == ""


def test_the_hook_sees_each_phase_with_the_domain_xml_and_libvirtd_restarts(vlab, recorder):
    bridge = vlab.bridge("linux")
    peer = vlab.peer(bridge, "10.0.0.1/24")
    nic = vlab.nic(7, 0, bridge, "10.0.0.7/24")
    guest = vlab.guest(7, [nic]).create()
    assert phases(recorder) == ["prepare begin", "start begin", "started begin"]
    args, xml = calls(recorder)[1]
    assert args == "one-7 start begin -"
    assert "<target dev='one-7-0'/>" in xml and f"<mac address='{nic.mac}'/>" in xml

    vlab.libvirt.restart()  # libvirtd reconnects to the running QEMU
    assert phases(recorder)[3:] == ["reconnect begin"]
    assert vlab.libvirt.domains() == ["one-7"]
    assert guest.ping("10.0.0.1") and lab_mod.ping(peer, "10.0.0.7")

    guest.destroy()
    eventually(lambda: phases(recorder)[4:] == ["stopped end", "release end"], "stopped and release hooks")
    assert not qemu_pids()


def test_a_failing_hook_aborts_the_start(vlab):
    bridge = vlab.bridge("linux")
    guest = vlab.guest(8, [vlab.nic(8, 0, bridge, "10.0.0.8/24")])
    vlab.libvirt.install_hook("refuse", "#!/bin/sh\n[ \"$2 $3\" != 'start begin' ] || { echo no >&2; exit 1; }\n")
    vlab.libvirt.restart()
    try:
        with pytest.raises(Exception, match="Hook script execution failed"):
            guest.create(wait=False)
        assert vlab.libvirt.domains() == [] and not qemu_pids()
        assert lab_mod.sh("ip", "link", "show", "one-8-0", check=False).returncode != 0
    finally:
        vlab.libvirt.remove_hook("refuse")
        vlab.libvirt.restart()
    assert not HOOKS.joinpath("refuse").exists()


def test_the_guest_assets_come_from_the_cache_once_built(assets):
    start = time.monotonic()
    again = guest_assets.ensure()
    cached = time.monotonic() - start
    print(f"guest assets from the cache: {cached:.2f} s")
    assert again == assets and assets.kernel.stat().st_size > 1_000_000
    assert assets.kernel.parent.name == guest_assets._key(guest_assets.packages())


def test_cpio_is_newc_with_the_files_and_a_trailer():
    data = guest_assets.cpio(("bin",), {"init": (b"#!/bin/sh\n", 0o755)})
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert b"bin\0" in data and b"init\0" in data and b"#!/bin/sh\n" in data and b"TRAILER!!!\0" in data


def sfq_available() -> bool:
    """Whether this kernel has the sfq qdisc, which libvirt puts under a tap's HTB class for <bandwidth>."""
    lab_mod.sh("ip", "link", "add", "sfqprobe", "type", "veth", "peer", "name", "sfqprobe1")
    try:
        return lab_mod.sh("tc", "qdisc", "add", "dev", "sfqprobe", "root", "sfq", check=False).returncode == 0
    finally:
        lab_mod.sh("ip", "link", "del", "sfqprobe")


@pytest.mark.parametrize("kind", ["linux", "ovs"])
def test_bandwidth_in_the_domain(vlab, kind, request):
    """<bandwidth> (OpenNebula's INBOUND_*/OUTBOUND_*): libvirt puts tc (HTB + sfq, ingress + police) on a tap on a
    Linux bridge, which fails at start on a kernel without sfq (this one); on Open vSwitch it sets OVSDB QoS."""
    if kind == "ovs":
        request.getfixturevalue("ovs")
    bridge = vlab.bridge(kind)
    limits = {"inbound": {"average": 1000, "peak": 2000, "burst": 64}, "outbound": {"average": 500}}
    nic = Nic(9, 0, "02:00:0a:00:00:09", bridge, "10.0.0.9/24", ovs=kind == "ovs", bandwidth=limits)
    guest = vlab.guest(9, [nic])
    if kind == "linux" and not sfq_available():
        with pytest.raises(VirshError, match="Specified qdisc kind is unknown"):
            guest.create(wait=False)
        assert vlab.libvirt.domains() == [] and not qemu_pids()
        return
    guest.create()
    if kind == "ovs":
        assert vsctl("get", "Interface", nic.target, "ingress_policing_rate").stdout.strip() != "0"
    else:
        assert "htb" in lab_mod.sh("tc", "qdisc", "show", "dev", nic.target).stdout
