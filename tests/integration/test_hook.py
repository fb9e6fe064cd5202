"""The libvirt qemu hook with real kernel objects, without libvirt: a real tap made with /dev/net/tun and held open by
the test as libvirtd holds it before QEMU starts, on a real VN bridge; the hook run through its wrapper
(scripts/libvirt/qemu.d/netfw) as libvirt runs it, the pending record written by OpenNebula's `pre` (netfw one pre).
What QEMU would hand the guest is what the test reads from the tap's descriptor. The real-libvirt flows are in
tests/integration/test_libvirt_netfw.py.

Addresses: 10.61.0.0/24 on vnbr0, 10.61.1.0/24 on vnbr1, 10.62.0.0/24 on VLAN 10 of ovsbr0 (tests/data/one/e2e_*).
IPv6 is off on the peers and the VN bridges (the sandbox's own objects), so that every frame the guest gets is one
the test sent or the tap's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from netfw import api
from netfw.model import names

from .. import oned
from .lab import eventually, links, ping, sh, snapshot
from .ovs import vsctl
from .tap import Tap, is_arp_reply, udp_port

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "scripts" / "libvirt" / "qemu.d" / "netfw"
DATA = ROOT / "tests" / "data" / "one"
NETFW = ROOT / ".venv" / "bin" / "netfw"
P0, P1 = "g20-0", "g21-0"  # the peers on vnbr0 and vnbr1 (lab.vm names its namespace g<VM>-<NIC>)
MACS = {0: "02:00:0a:3d:00:07", 1: "02:00:0a:3d:01:07"}
BRIDGES = {0: "vnbr0", 1: "vnbr1"}


class Host:
    """The sandbox as a hypervisor with netfw's hook installed: OpenNebula's actions and libvirt's hook calls."""

    def __init__(self, state_dir: Path, tmp: Path):
        self.state_dir = state_dir
        state_dir.mkdir(mode=0o700, exist_ok=True)
        self.conf = tmp / "netfw.conf"
        self.conf.write_text(f"NETFW_BIN={NETFW}\nNETFW_STATE_DIR={state_dir}\n")

    def one(self, action: str, *args: str, doc: str = "e2e_two_nics.xml", env: dict | None = None):
        stdin = oned.stdin_for(action, (DATA / doc).read_bytes(), "oned").decode()
        return subprocess.run([str(NETFW), "one", "--state-dir", str(self.state_dir), action, *args], input=stdin,
                              capture_output=True, text=True, env=env)

    def hook(self, operation: str, sub: str, xml: str, domain: str = "one-7", path: str | None = None):
        env = {**os.environ, "NETFW_CONF": str(self.conf)}
        if path:
            env["PATH"] = path
        return subprocess.run([str(HOOK), domain, operation, sub, "-"], input=xml, capture_output=True, text=True,
                              env=env)

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.state_dir)) for p in self.state_dir.rglob("*") if p.is_file()
                      and not p.name.endswith(".lock"))


def domain_xml(nics=(0, 1), vm: int = 7, macs=MACS, bridges=BRIDGES) -> str:
    """The domain XML libvirt hands the hook at start begin (what matters of it)."""
    ifaces = "".join(f"<interface type='bridge'><mac address='{macs[n]}'/><source bridge='{bridges[n]}'/>"
                     f"<target dev='one-{vm}-{n}'/><model type='virtio'/><alias name='net{n}'/></interface>"
                     for n in nics)
    return f"<domain type='qemu' id='1'><name>one-{vm}</name><devices>{ifaces}</devices></domain>"


def quiet(*names: str) -> None:
    """No IPv6 of the sandbox's own objects (peers, bridges): the frames the guest gets are the test's."""
    for name in names:
        if name.startswith("g"):  # a peer's namespace (tests/integration/lab.py)
            sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
        else:
            sh("sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")


def send_udp(peer: str, address: str, port: int, count: int, broadcast: bool = False) -> None:
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n"
            f"[s.sendto(b'netfw-before-%d' % i, ({address!r}, {port})) for i in range({count})]\n")
    sh("ip", "netns", "exec", peer, "python3", "-c", code)


@pytest.fixture
def host(lab, state_dir, tmp_path):
    lab.bridge("vnbr0")
    lab.bridge("vnbr1")
    peers = {"p0": lab.vm(20, 0, "10.61.0.2/24"), "p1": lab.vm(21, 0, "10.61.1.2/24", bridge="vnbr1")}
    quiet("vnbr0", "vnbr1", *peers.values())
    sh("ip", "-n", P0, "neigh", "replace", "10.61.0.7", "lladdr", MACS[0], "dev", "eth0", "nud", "permanent")
    sh("ip", "-n", P1, "neigh", "replace", "10.61.1.7", "lladdr", MACS[1], "dev", "eth0", "nud", "permanent")
    h = Host(state_dir, tmp_path)
    taps: list[Tap] = []
    h.taps, h.peers = taps, peers
    yield h
    for tap in taps:
        tap.close()


def taps(h: Host, nics=(0, 1)) -> dict[int, Tap]:
    made = {n: Tap(f"one-7-{n}", BRIDGES[n], MACS[n]) for n in nics}
    h.taps += made.values()
    return made


#: An address the test gives each tap before the move, the source of IPv6 packets of the tap's own: they are told
#: apart from anything later by it (netfw's veth end carries the tap's MAC, so its own link-local address too).
MARK = "fe80::aa:bbcc"
MARKS = (socket.inet_pton(socket.AF_INET6, MARK), socket.inet_pton(socket.AF_INET6, "ff02::1:ffaa:bbcc"))


def unfiltered_before_the_move(h: Host, peer: str = P0, address: str = "10.61.0", nics=(0, 1)) -> None:
    """What reaches a tap while it sits on the VN bridge: the tap's own IPv6 packets (beside those the kernel sends
    by itself, two datagrams from MARK, an address of its own, out of the tap: queued when sendto returns), the
    peer's unicast to a port no rule allows and its broadcasts."""
    for nic in nics:
        tap = f"one-7-{nic}"
        sh("ip", "addr", "add", f"{MARK}/64", "dev", tap, "nodad")
        index = socket.if_nametoindex(tap)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((MARK, 0, 0, index))
            for _ in range(2):
                s.sendto(b"the tap's own", ("ff02::1", 9, 0, index))
    send_udp(peer, f"{address}.7", 5001, 10)
    send_udp(peer, f"{address}.255", 5001, 10, broadcast=True)
    time.sleep(0.5)  # the bridge forwards in softirq, right after the peer's sendto


def of_before(frame: bytes) -> bool:
    """A frame sent before the move: the peer's UDP to port 5001, or one of the tap's own naming MARK."""
    return udp_port(frame) == 5001 or any(m in frame for m in MARKS)


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0 and "ERROR" not in res.stderr, res.stderr
    assert res.stdout == ""  # libvirt reads a migrate or restore hook's stdout as a domain XML
    return res.stderr


# --- start begin ----------------------------------------------------------------------------------------------------


def test_start_begin_moves_the_held_taps_and_no_frame_from_before_reaches_the_guest(host):
    ok(host.one("pre"))
    tap = taps(host)
    unfiltered_before_the_move(host)
    err = ok(host.hook("start", "begin", domain_xml()))
    assert "INFO: netfw hook: VM 7 NIC 0, 1: attached before QEMU starts" in err
    first = {n: t.frames() for n, t in tap.items()}  # what QEMU would hand the guest first
    later = {n: t.collect(1.0) for n, t in tap.items()}
    assert api.verify(7) == {0: [], 1: []}
    # nothing of before; with the peers silent, what comes is netfw's own objects' (the firewall bridge's IGMP
    # report as the tap joins it, the veth end's IPv6 neighbour discovery), and only after the move
    for n in (0, 1):
        own = {bytes.fromhex(m.replace(":", "")) for m in ("fe" + MACS[n][2:], names.bridge_mac(7, n))}
        assert not any(of_before(f) for f in first[n] + later[n])
        assert all(f[6:12] in own for f in first[n] + later[n]), [f[:64].hex() for f in first[n] + later[n]]
    # then the rules hold: ICMP echo from 10.61.0.0/24 in (SG 100), UDP 5001 not; ARP both ways
    sh("ip", "netns", "exec", P0, "ping", "-c", "1", "-W", "0.5", "10.61.0.7", check=False)
    send_udp(P0, "10.61.0.7", 5001, 5)
    got = tap[0].collect(1.0)
    assert any(f[12:14] == b"\x08\x00" and f[23] == 1 for f in got), got
    assert not any(udp_port(f) == 5001 for f in got)

    def answered() -> bool:
        tap[0].send(_arp_request(MACS[0], "10.61.0.7", "10.61.0.2"))
        return any(is_arp_reply(f, socket.inet_aton("10.61.0.2")) for f in tap[0].collect(0.5))

    eventually(answered, "the peer's ARP reply through the firewall")


def _arp_request(mac: str, ip: str, target: str) -> bytes:
    sha = bytes.fromhex(mac.replace(":", ""))
    return (b"\xff" * 6 + sha + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + sha + socket.inet_aton(ip)
            + b"\x00" * 6 + socket.inet_aton(target))


def test_without_the_hook_the_frames_of_before_reach_the_guest(host):
    """The control (post attaches the tap as before, the queue kept): what the hook's emptied queue prevents."""
    ok(host.one("pre"))
    tap = taps(host, (0,))
    unfiltered_before_the_move(host, nics=(0,))
    assert host.one("post", "one-7", "host-a", env={**os.environ, "NETFW_VN_MADS": "fw"}).returncode == 0
    stale = tap[0].frames()
    assert sum(udp_port(f) == 5001 for f in stale) == 20, [f[:40].hex() for f in stale]
    assert any(of_before(f) and udp_port(f) is None for f in stale)  # the tap's own IPv6 packets too


def test_post_after_the_hook_changes_nothing(host):
    ok(host.one("pre"))
    taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    before, files = snapshot(), host.files()
    res = host.one("post", "one-7", "host-a")
    assert res.returncode == 0 and "netfw post: VM 7 NIC 0, 1: no change" in res.stderr, res.stderr
    assert snapshot() == before and host.files() == files


@pytest.mark.parametrize("tool", ["ebtables-restore", "bridge"])
def test_a_failure_mid_transaction_leaves_the_host_as_before_and_exits_non_zero(host, tmp_path, tool):
    """ebtables-restore fails before the cut-over; `bridge fdb del` right after the tap moved: either way the taps
    are back on their VN bridges as they were, with the queue the test still reads from."""
    ok(host.one("pre"))
    tap = taps(host)
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / tool).write_text("#!/bin/sh\necho injected failure >&2\nexit 1\n")
    (folder / tool).chmod(0o755)
    before, files = snapshot(), host.files()
    res = host.hook("start", "begin", domain_xml(), path=f"{folder}:{os.environ['PATH']}")
    assert res.returncode == 1 and res.stdout == "" and "(rolled back)" in res.stderr.splitlines()[-1], res.stderr
    assert snapshot() == before and host.files() == files == ["vm-7/pending.json"]
    tap[0].frames()
    assert ping(P0, "10.61.0.7", wait=0.3) is False  # nobody answers, but the frame reaches the tap unfiltered:
    eventually(lambda: any(f[12:14] == b"\x08\x00" for f in tap[0].frames()), "the tap is on vnbr0 again")


def test_a_nic_that_does_not_match_its_record_is_refused_and_nothing_changes(host):
    ok(host.one("pre"))
    taps(host)
    before = snapshot()
    res = host.hook("start", "begin", domain_xml(macs={**MACS, 1: "02:00:0a:3d:01:99"}))
    assert res.returncode == 2 and res.stderr.startswith("ERROR: VM 7 NIC 1: the domain's interface one-7-1 has MAC")
    assert len(res.stderr.splitlines()) == 1 and snapshot() == before


def test_a_domain_without_a_pending_record_is_untouched(host):
    taps(host, (0,))  # VM 7's tap, but OpenNebula's pre never ran for it (netfw not hooked into its drivers)
    before = snapshot()
    err = ok(host.hook("start", "begin", domain_xml((0,))))
    assert err == "INFO: netfw hook: VM 7: no pending record: left alone\n"
    assert snapshot() == before and host.files() == []


# --- stopped end, release end, prepare begin ------------------------------------------------------------------------


def _gone(host: Host) -> None:
    assert "one-7" not in snapshot() and not any(l["ifname"].startswith("one-7-") for l in links(None))
    assert host.files() == ["vm-7/pending.json"]


@pytest.mark.parametrize("phase", [("stopped", "end"), ("release", "end")])
def test_when_the_domain_stops_the_hook_removes_what_netfw_keeps_and_it_starts_again_at_once(host, phase):
    ok(host.one("pre"))
    tap = taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    for t in tap.values():
        t.close()  # QEMU exits: the taps die with it
    err = ok(host.hook(*phase, domain_xml()))
    assert f"netfw hook: VM 7 {' '.join(phase)}: released NIC 0, 1" in err
    _gone(host)
    ok(host.hook("release", "end", domain_xml()))  # libvirt calls both: the second finds nothing
    ok(host.hook("prepare", "begin", domain_xml()))  # a new start (virsh start, restore, a migration back)
    tap = taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    assert api.verify(7) == {0: [], 1: []}
    eventually(lambda: ping(P0, "10.61.0.7", wait=0.3) or any(f[23:24] == b"\x01" for f in tap[0].frames()),
               "ICMP echo through the firewall after the second start")
    res = host.one("clean", "host-a")  # OpenNebula's clean after a stop: what is left goes, the pending record too
    assert res.returncode == 0, res.stderr
    assert host.files() == [] and "one-7" not in snapshot()


def _echo_reaches(tap: Tap, peer: str, address: str) -> bool:
    """The peer's ICMP echo request reaches the guest within a second (nobody answers: the tap is the test's)."""
    tap.frames()
    sh("ip", "netns", "exec", peer, "ping", "-c", "1", "-W", "0.3", address, check=False)
    return any(f[12:14] == b"\x08\x00" and f[23] == 1 for f in tap.collect(0.7))


def test_a_start_after_update_sg_gets_the_current_rules(host):
    """update_sg puts the NICs it updated into the pending record: the next start attaches them as updated, not
    with the rules of the last pre (SG 101 of NIC 1 allows ICMP echo only after the update)."""
    ok(host.one("pre"))
    tap = taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    assert not _echo_reaches(tap[1], P1, "10.61.1.7")
    res = host.one("update_sg", "one-7", doc="e2e_sg_changed.xml")
    assert res.returncode == 0 and "; pending record updated" in res.stderr, res.stderr
    assert _echo_reaches(tap[1], P1, "10.61.1.7")
    for t in tap.values():
        t.close()
    ok(host.hook("stopped", "end", domain_xml()))
    ok(host.hook("prepare", "begin", domain_xml()))
    tap = taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    assert _echo_reaches(tap[1], P1, "10.61.1.7")
    res = host.one("post", "one-7", "host-a", doc="e2e_sg_changed.xml")
    assert res.returncode == 0 and "no change" in res.stderr, res.stderr


def test_a_stale_veth_end_of_netfws_is_removed_at_prepare_begin(host):
    """The domain died without a stopped hook (the hook was not installed yet, libvirtd was killed): netfw's veth
    end holds the tap's name on the VN bridge, and libvirt could not make the tap again."""
    ok(host.one("pre"))
    tap = taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    for t in tap.values():
        t.close()
    with pytest.raises(OSError):
        Tap("one-7-0", "vnbr0", MACS[0])  # "The one-7-0 interface already exists"
    err = ok(host.hook("prepare", "begin", domain_xml()))
    assert "released NIC 0, 1" in err
    _gone(host)
    taps(host)
    ok(host.hook("start", "begin", domain_xml()))
    assert api.verify(7) == {0: [], 1: []}


def test_a_link_with_netfws_alias_but_no_record_is_never_removed(host):
    """Never by name alone: a veth that calls itself netfw's, without netfw's record or journal, stays."""
    sh("ip", "link", "add", "one-7-0", "type", "veth", "peer", "name", "x7")
    sh("ip", "link", "set", "one-7-0", "alias", "netfw vm=7 nic=0 role=h", "master", "vnbr0", "up")
    before = snapshot()
    for phase in (("prepare", "begin"), ("stopped", "end"), ("release", "end")):
        assert ok(host.hook(*phase, domain_xml())) == "INFO: netfw hook: VM 7 " + " ".join(phase) + \
            ": netfw keeps nothing for it\n"
    assert snapshot() == before


# --- Open vSwitch ---------------------------------------------------------------------------------------------------


@pytest.fixture
def ovs_host(lab, ovs, state_dir, tmp_path):
    lab.ovs_bridge("ovsbr0")
    peer = lab.vm(20, 0, "10.62.0.2/24", bridge="ovsbr0", tag=10)
    quiet(peer)
    sh("ip", "-n", peer, "neigh", "replace", "10.62.0.7", "lladdr", "02:00:0a:3e:00:07", "dev", "eth0", "nud",
       "permanent")
    h = Host(state_dir, tmp_path)
    h.taps = []
    yield h
    for tap in h.taps:
        tap.close()


def _ovs_tap(h: Host) -> Tap:
    """The tap as libvirt makes it on Open vSwitch: a port of ovsbr0 (OpenNebula's ovswitch driver tags it)."""
    tap = Tap("one-7-0", None, "02:00:0a:3e:00:07")
    vsctl("add-port", "ovsbr0", "one-7-0", "--", "set", "Port", "one-7-0", "tag=10")
    h.taps.append(tap)
    return tap


@pytest.mark.parametrize("with_hook", [True, False])
def test_open_vswitch_frames_of_before_reach_the_guest_only_without_the_hook(ovs_host, with_hook):
    h = ovs_host
    ok(h.one("pre", doc="e2e_ovswitch.xml"))
    tap = _ovs_tap(h)
    unfiltered_before_the_move(h, peer="g20-0", address="10.62.0", nics=(0,))
    if with_hook:
        xml = domain_xml((0,), macs={0: "02:00:0a:3e:00:07"}, bridges={0: "ovsbr0"})
        ok(h.hook("start", "begin", xml))
        got = tap.frames() + tap.collect(1.0)
        assert not any(of_before(f) for f in got), [f[:64].hex() for f in got]
        assert api.verify(7) == {0: []}
    else:
        assert h.one("post", "one-7", "host-a", doc="e2e_ovswitch.xml").returncode == 0
        stale = tap.frames()
        assert sum(udp_port(f) == 5001 for f in stale) == 20 and any(of_before(f) for f in stale)
