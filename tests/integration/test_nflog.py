"""netfw.observe.nflog against the real kernel: NFLOG rules in a namespace, real traffic, the reader in-process.

The bridged lab is shaped like a netfw VM namespace: namespace `fw` holds bridge br0 (br_netfilter on) with two
ports, `pv` (towards the guest `peer`, as netfw's veth end) and `tap` (towards the guest `vm`); packets to the VM
are logged in FORWARD and dropped by the policy. Every probe leaves the sender from a known port, so each logged
field is compared with what was sent, not with what the parser says.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from netfw.observe.nflog import NflogError, in_netns, open_reader

from .lab import reset, sh

GROUP = 7
PREFIX = "one-2-0 in: no rule matched"
VM4, PEER4, VM6, PEER6 = "10.9.0.2", "10.9.0.1", "fd00::2", "fd00::1"
TOOLS = {"nft": ("iptables-nft-restore", "ip6tables-nft-restore"),
         "legacy": ("iptables-legacy-restore", "ip6tables-legacy-restore")}
DATA = Path(__file__).parent.parent / "data" / "nflog" / "captures.json"
WAIT = 3.0  # a logged packet normally arrives within milliseconds; this much on a loaded machine

SEND = r"""
import socket, sys
kind, src, dst = sys.argv[1], sys.argv[2], sys.argv[4]
sport, dport, size, count = int(sys.argv[3]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
if kind == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, sport))
    for _ in range(count):
        s.sendto(b"x" * size, (dst, dport))
else:  # one SYN: the connect gives up before the first retransmission (1 s)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((src, sport))
    s.settimeout(0.5)
    try:
        s.connect((dst, dport))
    except OSError:
        pass
"""


def nsenter(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def send(ns: str, kind: str, src: str, sport: int, dst: str, dport: int, size: int = 10, count: int = 1) -> None:
    sh(*nsenter(ns, sys.executable, "-c", SEND, kind, src, str(sport), dst, str(dport), str(size), str(count)))


def ping(ns: str, dst: str) -> None:
    sh(*nsenter(ns, "ping", "-c", "1", "-W", "0.3", "-s", "56", dst), check=False)  # dropped: no reply


def ifindex(ns: str, name: str) -> int:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", name).stdout)[0]["ifindex"]


def collect(reader, count: int) -> list:
    """Up to count packets, waiting at most WAIT seconds for each."""
    got = []
    for packet in reader.packets(timeout=WAIT):
        got.append(packet)
        if len(got) == count:
            break
    return got


def guest(name: str, port: str, ip4: str, ip6: str) -> None:
    sh("ip", "netns", "add", name)
    sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
    sh("ip", "link", "set", port, "netns", "fw")
    sh("ip", "-n", "fw", "link", "set", port, "master", "br0", "up")
    sh("ip", "-n", name, "addr", "add", f"{ip4}/24", "dev", "eth0")
    sh("ip", "-n", name, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
    sh("ip", "-n", name, "link", "set", "eth0", "up")


def ruleset(version: int, extra: str = "") -> str:
    """FORWARD policy DROP; IPv6 neighbour discovery passes; what goes to the VM is logged (then dropped)."""
    vm = VM4 if version == 4 else VM6
    nd = "".join(f"-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT\n" for t in (135, 136))
    return (f"*filter\n:FORWARD DROP [0:0]\n{nd if version == 6 else ''}"
            f"-A FORWARD -d {vm} -m physdev --physdev-in pv --physdev-out tap --physdev-is-bridged "
            f'-j NFLOG --nflog-group {GROUP} --nflog-prefix "{PREFIX}"{extra}\nCOMMIT\n')


@pytest.fixture
def bridged(request):
    """The lab; request.param (or 'nft') is the iptables backend. Returns the backend and the ifindexes in fw."""
    backend = getattr(request, "param", "nft")
    reset()
    sh("ip", "netns", "add", "fw")
    sh("ip", "netns", "exec", "fw", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
       "net.ipv6.conf.default.disable_ipv6=1", "net.bridge.bridge-nf-call-iptables=1",
       "net.bridge.bridge-nf-call-ip6tables=1")
    sh("ip", "-n", "fw", "link", "add", "br0", "type", "bridge", "nf_call_iptables", "1", "nf_call_ip6tables", "1")
    sh("ip", "-n", "fw", "link", "set", "br0", "up")
    guest("peer", "pv", PEER4, PEER6)
    guest("vm", "tap", VM4, VM6)
    index = {name: ifindex("fw", name) for name in ("br0", "pv", "tap")}
    index["peer_mac"] = json.loads(sh("ip", "-n", "peer", "-j", "link", "show", "dev", "eth0").stdout)[0]["address"]
    yield backend, index
    reset()


def load(backend: str, extra: str = "") -> None:
    for version, tool in zip((4, 6), TOOLS[backend]):
        sh(*nsenter("fw", tool, "--noflush"), stdin=ruleset(version, extra))


def expected_bridged(index: dict, **fields) -> dict:
    return dict(group=GROUP, prefix=PREFIX, hook="FORWARD", kernel_time=True, fragment=False, mark=None,
                hwaddr=index["peer_mac"],
                lost_before=0, indev=index["br0"], outdev=index["br0"], physindev=index["pv"],
                physoutdev=index["tap"], indev_name="br0", outdev_name="br0", physindev_name="pv",
                physoutdev_name="tap", **fields)


def fields_of(packet, names) -> dict:
    return {name: getattr(packet, name) for name in names}


@pytest.mark.parametrize("bridged", ["nft", "legacy"], indirect=True)
def test_bridged_packets_logged_in_forward_with_every_field(bridged):
    backend, index = bridged
    load(backend)
    none = dict(sport=None, dport=None, icmp_type=None, icmp_code=None, tcp_flags=None)
    probes = [  # (what to send, expected fields)
        (lambda: send("peer", "udp", PEER4, 40001, VM4, 5001, size=10),
         dict(family=2, l3="ipv4", src=PEER4, dst=VM4, protocol="udp", **{**none, "sport": 40001, "dport": 5001},
              length=20 + 8 + 10, captured=38)),
        (lambda: send("peer", "tcp", PEER4, 40002, VM4, 5002),
         dict(family=2, l3="ipv4", src=PEER4, dst=VM4, protocol="tcp",
              **{**none, "sport": 40002, "dport": 5002, "tcp_flags": "SYN"})),
        (lambda: ping("peer", VM4),
         dict(family=2, l3="ipv4", src=PEER4, dst=VM4, protocol="icmp", **{**none, "icmp_type": 8, "icmp_code": 0},
              length=20 + 8 + 56, captured=84)),
        (lambda: send("peer", "udp", PEER6, 40003, VM6, 5003, size=10),
         dict(family=10, l3="ipv6", src=PEER6, dst=VM6, protocol="udp", **{**none, "sport": 40003, "dport": 5003},
              length=40 + 8 + 10, captured=58)),
        (lambda: send("peer", "tcp", PEER6, 40004, VM6, 5004),
         dict(family=10, l3="ipv6", src=PEER6, dst=VM6, protocol="tcp",
              **{**none, "sport": 40004, "dport": 5004, "tcp_flags": "SYN"})),
        (lambda: ping("peer", VM6),
         dict(family=10, l3="ipv6", src=PEER6, dst=VM6, protocol="ipv6-icmp",
              **{**none, "icmp_type": 128, "icmp_code": 0}, length=40 + 8 + 56, captured=104)),
    ]
    with open_reader("/run/netns/fw", GROUP) as reader:
        for seq, (probe, fields) in enumerate(probes):
            start = time.time()
            probe()
            got = collect(reader, 1)
            assert len(got) == 1, fields
            packet = got[0]
            want = expected_bridged(index, seq=seq, **fields)
            assert fields_of(packet, want) == want
            if fields["protocol"] == "tcp":  # a SYN's length depends on its options: whole, as copied
                assert packet.length == packet.captured and packet.length >= (40 if fields["l3"] == "ipv4" else 60)
            assert start - 0.01 <= packet.time <= time.time()
        assert list(reader.packets(timeout=0.3)) == []  # nothing else was logged
        assert (reader.lost, reader.overruns) == (0, 0)


def test_names_are_resolved_in_the_logging_namespace(bridged):
    """br0/pv/tap exist only in fw: the names come from there, not from the reader's own namespace."""
    backend, index = bridged
    load(backend)
    own = {name for _, name in socket.if_nameindex()}
    assert not own & {"br0", "pv", "tap"}
    with open_reader("/run/netns/fw", GROUP) as reader:
        send("peer", "udp", PEER4, 40001, VM4, 5001)
        (packet,) = collect(reader, 1)
        assert (packet.physindev_name, packet.physoutdev_name) == ("pv", "tap")
        assert reader.ifname(index["tap"]) == "tap"
        assert reader.ifname(999999) is None


@pytest.mark.parametrize("bridged", ["nft", "legacy"], indirect=True)
def test_copy_range_of_the_reader_and_of_the_rule_truncate_the_payload(bridged):
    backend, index = bridged
    load(backend, " --nflog-size 24")  # IPv4 header and the ports; a part of the IPv6 header
    with open_reader("/run/netns/fw", GROUP) as reader:
        send("peer", "udp", PEER4, 40001, VM4, 5001, size=100)
        send("peer", "udp", PEER6, 40002, VM6, 5002, size=100)
        v4, v6 = collect(reader, 2)
    assert fields_of(v4, ["captured", "length", "protocol", "sport", "dport"]) == dict(
        captured=24, length=128, protocol="udp", sport=40001, dport=5001)
    assert fields_of(v6, ["captured", "length", "src", "dst", "protocol", "sport"]) == dict(
        captured=24, length=148, src=PEER6, dst=None, protocol="udp", sport=None)  # a part of the IPv6 header

    with open_reader("/run/netns/fw", GROUP, copy_range=20) as reader:  # the smaller of reader and rule wins
        send("peer", "udp", PEER4, 40003, VM4, 5003, size=100)
        (v4,) = collect(reader, 1)
    assert fields_of(v4, ["captured", "length", "src", "dst", "protocol", "sport", "dport"]) == dict(
        captured=20, length=128, src=PEER4, dst=VM4, protocol="udp", sport=None, dport=None)


@pytest.mark.parametrize("bridged", ["nft", "legacy"], indirect=True)
def test_a_batch_of_packets_in_one_datagram(bridged):
    """--nflog-threshold 4 and a reader queue threshold of 4: the kernel sends four messages and NLMSG_DONE."""
    backend, _ = bridged
    load(backend, " --nflog-threshold 4")
    with open_reader("/run/netns/fw", GROUP, queue_threshold=4) as reader:
        send("peer", "udp", PEER4, 40001, VM4, 5001, count=4)
        got = collect(reader, 4)
        assert [p.seq for p in got] == [0, 1, 2, 3]
        assert all(p.sport == 40001 and p.dport == 5001 for p in got)
        assert reader.datagrams == 1


def test_arp_logged_by_ebtables_is_read_too(bridged):
    """netfw's ARP anti-spoofing is ebtables: its NFLOG messages come in the bridge family."""
    _, index = bridged
    sh(*nsenter("fw", "ebtables-nft-restore"), stdin=(
        "*filter\n:FORWARD ACCEPT\n-A FORWARD -p ARP -i pv --arp-ip-src ! 10.9.0.1 "
        f'--nflog-prefix "{PREFIX}" --nflog-group {GROUP} -j DROP\nCOMMIT\n'))
    sh(*nsenter("peer", "ip", "addr", "add", "10.9.0.66/24", "dev", "eth0"))
    with open_reader("/run/netns/fw", GROUP) as reader:
        sh(*nsenter("peer", "ping", "-c", "1", "-W", "0.3", "-I", "10.9.0.66", "10.9.0.77"), check=False)
        packet = collect(reader, 1)[0]
    want = expected_bridged(index, family=7, l3="arp", protocol="arp", src="10.9.0.66", dst="10.9.0.77",
                            length=28, sport=None, dport=None, seq=0)  # family 7: NFPROTO_BRIDGE
    assert fields_of(packet, want) == want


def counter(ns: str, tool: str = "iptables") -> int:
    """Packets counted by the FORWARD NFLOG rule."""
    out = sh(*nsenter(ns, tool, "-t", "filter", "-L", "FORWARD", "-v", "-x", "-n")).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "NFLOG" in line)


def test_overrun_is_counted_not_fatal_and_losses_add_up(bridged):
    """A flood the reader does not read overflows its socket: ENOBUFS is counted, the sequence gaps say how many
    packets were lost, and received + lost equals what the rule logged."""
    backend, _ = bridged
    load(backend)
    with open_reader("/run/netns/fw", GROUP) as reader:
        send("peer", "udp", PEER4, 40001, VM4, 5001, count=3000)
        time.sleep(0.3)
        got = list(reader.packets(timeout=0.5))
        send("peer", "udp", PEER4, 40002, VM4, 5001)  # one more after the drain: its number closes the last gap
        got += collect(reader, 1)
        logged = counter("fw")
        assert reader.overruns >= 1 and reader.lost >= 1
        assert len(got) + reader.lost == logged
        assert sum(p.lost_before for p in got) == reader.lost
        assert got[-1].sport == 40002 and got[-1].seq == logged - 1


def test_one_reader_per_group_and_namespace(bridged):
    backend, _ = bridged
    load(backend)
    sh("ip", "netns", "add", "other")
    with open_reader("/run/netns/fw", GROUP):
        with pytest.raises(NflogError, match="another reader"):
            open_reader("/run/netns/fw", GROUP)
        with open_reader("/run/netns/other", GROUP) as elsewhere:  # groups are per namespace
            send("peer", "udp", PEER4, 40001, VM4, 5001)
            assert list(elsewhere.packets(timeout=0.5)) == []
    with open_reader("/run/netns/fw", GROUP) as again:  # closing the first freed the group
        send("peer", "udp", PEER4, 40001, VM4, 5001)
        assert len(collect(again, 1)) == 1


def test_no_reader_costs_nothing_visible_and_traffic_is_still_dropped(bridged):
    backend, _ = bridged
    load(backend)
    send("peer", "udp", PEER4, 40001, VM4, 5001, count=5)
    assert counter("fw") == 5
    with open_reader("/run/netns/fw", GROUP) as reader:  # nothing was queued for a future reader
        assert list(reader.packets(timeout=0.3)) == []


def own_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def test_the_callers_namespace_never_changes(bridged, tmp_path):
    before = own_netns()
    with open_reader("/run/netns/fw", GROUP):
        assert own_netns() == before
    not_a_netns = tmp_path / "file"
    not_a_netns.write_text("")
    for path in (str(not_a_netns), "/proc/self/ns/uts", "/run/netns/absent"):
        with pytest.raises(NflogError):
            open_reader(path, GROUP)
        assert own_netns() == before
    for bad in (-1, 65536, "7", True):
        with pytest.raises(ValueError):
            open_reader("/run/netns/fw", bad)


def test_input_and_output_hooks_on_a_veth_pair():
    """Without a bridge: INPUT carries the kernel's timestamp and the in-interface; OUTPUT has no timestamp (the
    receive time stands in) and the out-interface."""
    reset()
    try:
        for ns in ("a", "b"):
            sh("ip", "netns", "add", ns)
        sh("ip", "-n", "a", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", "b")
        for ns, dev, ip in (("a", "va", "10.7.0.1/24"), ("b", "vb", "10.7.0.2/24")):
            sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh(*nsenter("b", "iptables-legacy-restore"), stdin=(
            "*filter\n-A INPUT -p udp --dport 5001 -j NFLOG --nflog-group 3 --nflog-prefix in\n"
            "-A OUTPUT -p udp --dport 5002 -j NFLOG --nflog-group 3 --nflog-prefix out\nCOMMIT\n"))
        vb = ifindex("b", "vb")
        with open_reader("/run/netns/b", 3) as reader:
            start = time.time()
            send("a", "udp", "10.7.0.1", 40001, "10.7.0.2", 5001)
            send("b", "udp", "10.7.0.2", 40002, "10.7.0.1", 5002)
            inbound, outbound = collect(reader, 2)
            end = time.time()
        names = ["prefix", "hook", "kernel_time", "indev", "outdev", "physindev", "physoutdev", "indev_name",
                 "outdev_name", "src", "sport", "dport"]
        assert fields_of(inbound, names) == dict(prefix="in", hook="INPUT", kernel_time=True, indev=vb, outdev=None,
                                                 physindev=None, physoutdev=None, indev_name="vb", outdev_name=None,
                                                 src="10.7.0.1", sport=40001, dport=5001)
        assert fields_of(outbound, names) == dict(prefix="out", hook="OUTPUT", kernel_time=False, indev=None,
                                                  outdev=vb, physindev=None, physoutdev=None, indev_name=None,
                                                  outdev_name="vb", src="10.7.0.2", sport=40002, dport=5002)
        assert start <= outbound.time <= end
    finally:
        reset()


def test_a_reader_keeps_a_deleted_namespace_alive_until_it_closes():
    """`ip netns del` only unmounts: the reader's socket holds the namespace (and its links) until it closes."""
    reset()
    try:
        sh("ip", "netns", "add", "c")
        sh("ip", "link", "add", "outer", "type", "veth", "peer", "name", "inner", "netns", "c")
        reader = open_reader("/run/netns/c", 1)
        assert reader.namespace_present()
        sh("ip", "netns", "del", "c")
        assert not reader.namespace_present()
        time.sleep(0.3)
        assert sh("ip", "link", "show", "outer", check=False).returncode == 0  # the pair lives on
        reader.close()
        deadline = time.monotonic() + 5
        while sh("ip", "link", "show", "outer", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the namespace outlived its last reader"
            time.sleep(0.05)
    finally:
        reset()


def test_a_datagram_forged_by_a_process_in_the_namespace_is_ignored(bridged):
    """Any process in the namespace may unicast to the reader's netlink port: only the kernel's datagrams count."""
    backend, _ = bridged
    load(backend)
    forged = bytes.fromhex(json.loads(DATA.read_text())["captures"][0]["datagrams"][0])
    with open_reader("/run/netns/fw", GROUP) as reader:
        port = reader.sock.getsockname()[0]
        forger, _ = in_netns("/run/netns/fw", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12))
        with forger:
            forger.bind((0, 0))
            forger.sendto(forged, (port, 0))
        assert list(reader.packets(timeout=0.5)) == []
        assert reader.foreign == 1
