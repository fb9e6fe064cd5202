#!/usr/bin/env python3
"""Capture what the kernel's NFLOG really sends, as test data for tests/test_nflog.py.

    scripts/sandbox .venv/bin/python scripts/nflog_capture.py [tests/data/nflog/captures.json]

Builds a lab in the sandbox (namespace `fw` with bridge br0, br_netfilter on, ports `pv` and `tap` to the guests
`peer` and `vm`; namespaces `a` and `b` joined by a veth pair), loads one NFLOG ruleset per scenario with
iptables-nft, sends known traffic and stores each raw datagram (hex) with the fields expected from what was sent:
addresses, ports, sizes, ICMP types, the ifindexes `ip -j link` reports. Nothing here parses NFLOG messages beyond
counting them, so the unit tests compare the parser with the traffic, not with itself.
"""

from __future__ import annotations

import json
import os
import platform
import select
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from netfw.observe import nflog  # noqa: E402  (only to open the socket in the namespace and bind it)

GROUP = 7
PREFIX = "one-2-0 in: no rule matched"
VM4, PEER4, VM6, PEER6 = "10.9.0.2", "10.9.0.1", "fd00::2", "fd00::1"
MAC = {"peer": "02:00:00:00:00:01", "vm": "02:00:00:00:00:02", "a": "02:00:00:00:0a:01"}

SEND = r"""
import socket, sys, json
p = json.loads(sys.argv[1])
fam = socket.AF_INET6 if ":" in p["dst"] else socket.AF_INET  # noqa
if p["kind"] == "arp":  # one who-has request, broadcast: sender p["src"] (MAC p["mac"]), target p["dst"]
    mac = bytes.fromhex(p["mac"].replace(":", ""))
    arp = bytes.fromhex("0001080006040001") + mac + socket.inet_aton(p["src"]) + bytes(6) + socket.inet_aton(p["dst"])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
elif p["kind"] == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if p.get("hopopts"):  # a hop-by-hop header with one PadN option (the kernel fills in the next header)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
    s.bind((p["src"], p["sport"]))
    for _ in range(p.get("count", 1)):
        s.sendto(b"x" * p["size"], (p["dst"], p["dport"]))
else:
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((p["src"], p["sport"]))
    s.settimeout(0.5)
    try:
        s.connect((p["dst"], p["dport"]))
    except OSError:
        pass
"""


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=check).stdout


def nsenter(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def ifindex(ns: str, name: str) -> int:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", "dev", name))[0]["ifindex"]


def lab() -> dict:
    sh("ip", "netns", "add", "fw")
    sh(*nsenter("fw", "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"))
    sh("ip", "-n", "fw", "link", "add", "br0", "type", "bridge", "nf_call_iptables", "1", "nf_call_ip6tables", "1")
    sh("ip", "-n", "fw", "link", "set", "br0", "up")
    for name, port, ip4, ip6 in (("peer", "pv", PEER4, PEER6), ("vm", "tap", VM4, VM6)):
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name, "address", MAC[name])
        sh("ip", "link", "set", port, "netns", "fw")
        sh("ip", "-n", "fw", "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", name, "addr", "add", f"{ip4}/24", "dev", "eth0")
        sh("ip", "-n", name, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
    for ns in ("a", "b"):
        sh("ip", "netns", "add", ns)
    sh("ip", "-n", "a", "link", "add", "va", "address", MAC["a"], "type", "veth", "peer", "name", "vb", "netns", "b")
    for ns, dev, ip in (("a", "va", "10.7.0.1/24"), ("b", "vb", "10.7.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    return {"br0": ifindex("fw", "br0"), "pv": ifindex("fw", "pv"), "tap": ifindex("fw", "tap"),
            "vb": ifindex("b", "vb")}


def forward_rules(extra: str = "") -> tuple[str, str]:
    """iptables and ip6tables input: what goes to the VM is logged, the policy drops it; ND passes."""
    nd = "".join(f"-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT\n" for t in (135, 136))
    rule = (f"-A FORWARD -d {{vm}} -m physdev --physdev-in pv --physdev-out tap --physdev-is-bridged "
            f'-j NFLOG --nflog-group {GROUP} --nflog-prefix "{PREFIX}"{extra}\n')
    return (f"*filter\n:FORWARD DROP [0:0]\n{rule.format(vm=VM4)}COMMIT\n",
            f"*filter\n:FORWARD DROP [0:0]\n{nd}{rule.format(vm=VM6)}COMMIT\n")


def arp_rules() -> str:
    """ebtables: an ARP request for 10.9.0.3 from the peer's port is logged and dropped."""
    return ("*filter\n:FORWARD ACCEPT\n-A FORWARD -p ARP -i pv --arp-ip-dst 10.9.0.3 "
            f'--nflog-prefix "{PREFIX}" --nflog-group {GROUP} -j DROP\nCOMMIT\n')


def local_rules() -> str:
    return ("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            f"-A INPUT -p udp --dport 5001 -j NFLOG --nflog-group {GROUP} --nflog-prefix in\n"
            f"-A OUTPUT -p udp --dport 5002 -j NFLOG --nflog-group {GROUP} --nflog-prefix out\nCOMMIT\n")


def capture(ns: str, count: int, traffic, copy_range: int = nflog.HEADERS_ONLY, threshold: int = 1,
            settle: float = 0.5) -> list[str]:
    """Raw datagrams (hex) carrying `count` packets of group GROUP in ns while traffic() runs."""
    sock, _ = nflog.in_netns(f"/run/netns/{ns}", nflog._netlink_socket)
    with sock:
        sock.send(nflog.config_message(GROUP, copy_range, threshold))
        ack = sock.recv(65536)
        assert struct.unpack_from("=H", ack, 4)[0] == 2 and struct.unpack_from("=i", ack, 16)[0] == 0, ack.hex()
        traffic()
        datagrams, packets, deadline = [], 0, time.monotonic() + 5
        while packets < count and time.monotonic() < deadline:
            if select.select([sock], [], [], 0.2)[0]:
                data = sock.recv(256 * 1024)
                datagrams.append(data.hex())
                packets += count_packets(data)
        time.sleep(settle)  # nothing more may arrive: each scenario logs exactly what it expects
        while select.select([sock], [], [], 0)[0]:
            data = sock.recv(256 * 1024)
            raise SystemExit(f"unexpected extra datagram: {data.hex()}")
    if packets != count:
        raise SystemExit(f"expected {count} packets, captured {packets}")
    return datagrams


def count_packets(data: bytes) -> int:
    """NFULNL_MSG_PACKET messages in a datagram (framing only)."""
    offset, found = 0, 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        found += kind == 0x0400
        offset += (length + 3) & ~3
    return found


def send(ns: str, **probe) -> None:
    sh(*nsenter(ns, sys.executable, "-c", SEND, json.dumps(probe)))


def ping(dst: str, size: int = 56) -> None:
    sh(*nsenter("peer", "ping", "-c", "1", "-W", "0.3", "-s", str(size), dst), check=False)


def load_forward(extra: str = "") -> None:
    v4, v6 = forward_rules(extra)
    sh(*nsenter("fw", "iptables-nft-restore"), stdin=v4)
    sh(*nsenter("fw", "ip6tables-nft-restore"), stdin=v6)


def scenarios(index: dict) -> list[dict]:
    bridged = dict(group=GROUP, prefix=PREFIX, hook="FORWARD", kernel_time=True, indev=index["br0"],
                   outdev=index["br0"], physindev=index["pv"], physoutdev=index["tap"], mark=None, fragment=False,
                   hwaddr=MAC["peer"])
    v4 = dict(bridged, family=2, l3="ipv4", src=PEER4, dst=VM4)
    v6 = dict(bridged, family=10, l3="ipv6", src=PEER6, dst=VM6)
    none = dict(sport=None, dport=None, icmp_type=None, icmp_code=None, tcp_flags=None)

    def pkt(base: dict, **fields) -> dict:
        return {**base, **none, **fields}

    udp4 = lambda **kw: dict(kind="udp", src=PEER4, dst=VM4, **kw)  # noqa: E731
    udp6 = lambda **kw: dict(kind="udp", src=PEER6, dst=VM6, **kw)  # noqa: E731
    local = dict(group=GROUP, family=2, l3="ipv4", physindev=None, physoutdev=None, mark=None, fragment=False,
                 protocol="udp", icmp_type=None, icmp_code=None, tcp_flags=None, length=38, captured=38)
    return [
        dict(name="bridged_udp4", how="UDP 10.9.0.1:40001 -> 10.9.0.2:5001, 10 bytes, bridged pv -> tap",
             rules="forward", traffic=lambda: send("peer", **udp4(sport=40001, dport=5001, size=10)),
             expected=[pkt(v4, protocol="udp", sport=40001, dport=5001, length=38, captured=38, seq=0)]),
        dict(name="bridged_tcp4_syn", how="TCP SYN 10.9.0.1:40002 -> 10.9.0.2:5002 (connect, dropped)",
             rules="forward", traffic=lambda: send("peer", kind="tcp", src=PEER4, dst=VM4, sport=40002, dport=5002),
             expected=[pkt(v4, sport=40002, dport=5002, tcp_flags="SYN", protocol="tcp",
                            seq=0)]),
        dict(name="bridged_icmp4_echo", how="ping -s 56 10.9.0.2 from 10.9.0.1", rules="forward",
             traffic=lambda: ping(VM4),
             expected=[pkt(v4, icmp_type=8, icmp_code=0, protocol="icmp", length=84, captured=84,
                            seq=0)]),
        dict(name="bridged_udp6", how="UDP [fd00::1]:40003 -> [fd00::2]:5003, 10 bytes", rules="forward",
             traffic=lambda: send("peer", **udp6(sport=40003, dport=5003, size=10)),
             expected=[pkt(v6, protocol="udp", sport=40003, dport=5003, length=58, captured=58, seq=0)]),
        dict(name="bridged_tcp6_syn", how="TCP SYN [fd00::1]:40004 -> [fd00::2]:5004", rules="forward",
             traffic=lambda: send("peer", kind="tcp", src=PEER6, dst=VM6, sport=40004, dport=5004),
             expected=[pkt(v6, sport=40004, dport=5004, tcp_flags="SYN", protocol="tcp",
                            seq=0)]),
        dict(name="bridged_icmp6_echo", how="ping -6 -s 56 fd00::2 from fd00::1", rules="forward",
             traffic=lambda: ping(VM6),
             expected=[pkt(v6, icmp_type=128, icmp_code=0, protocol="ipv6-icmp", length=104,
                            captured=104, seq=0)]),
        dict(name="ipv6_hop_by_hop", how="UDP [fd00::1]:40005 -> [fd00::2]:5005 with an 8-byte hop-by-hop header",
             rules="forward", traffic=lambda: send("peer", **udp6(sport=40005, dport=5005, size=10, hopopts=True)),
             expected=[pkt(v6, protocol="udp", sport=40005, dport=5005, length=66, captured=66, seq=0)]),
        dict(name="ipv4_fragments", how="UDP 10.9.0.1:40006 -> 10.9.0.2:5006, 3000 bytes: three fragments "
             "(no conntrack in fw, so no defragmentation)", rules="forward",
             traffic=lambda: send("peer", **udp4(sport=40006, dport=5006, size=3000)),
             expected=[pkt(v4, protocol="udp", sport=40006, dport=5006, length=1500, captured=128, seq=0),
                       pkt(v4, protocol="udp", fragment=True, length=1500, captured=128, seq=1),
                       pkt(v4, protocol="udp", fragment=True, length=3028 - 2 * 1480, captured=68, seq=2)]),
        dict(name="ipv6_fragments", how="UDP [fd00::1]:40007 -> [fd00::2]:5007, 3000 bytes: three fragments",
             rules="forward", traffic=lambda: send("peer", **udp6(sport=40007, dport=5007, size=3000)),
             expected=[pkt(v6, protocol="udp", sport=40007, dport=5007, length=1496, captured=128, seq=0),
                       pkt(v6, protocol="udp", fragment=True, length=1496, captured=128, seq=1),
                       pkt(v6, protocol="udp", fragment=True, length=40 + 8 + 3008 - 2 * 1448,
                            captured=128, seq=2)]),
        dict(name="copy_range_20", how="reader copy range 20: UDP 10.9.0.1:40008 -> 10.9.0.2:5008, 100 bytes",
             rules="forward", copy_range=20, traffic=lambda: send("peer", **udp4(sport=40008, dport=5008, size=100)),
             expected=[pkt(v4, protocol="udp", length=128, captured=20, seq=0)]),
        dict(name="nflog_size_24_ipv6", how="rule --nflog-size 24: UDP [fd00::1]:40009 -> [fd00::2]:5009, 100 bytes",
             rules="forward_size24", traffic=lambda: send("peer", **udp6(sport=40009, dport=5009, size=100)),
             expected=[pkt(v6, dst=None, protocol="udp", length=148, captured=24, seq=0)]),
        dict(name="batch_of_4", how="rule --nflog-threshold 4, reader queue threshold 4: four UDP datagrams "
             "10.9.0.1:40010 -> 10.9.0.2:5010 in one NFLOG datagram ending with NLMSG_DONE", rules="forward_batch",
             threshold=4, traffic=lambda: send("peer", **udp4(sport=40010, dport=5010, size=10, count=4)),
             expected=[pkt(v4, protocol="udp", sport=40010, dport=5010, length=38, captured=38, seq=n)
                       for n in range(4)]),
        dict(name="input_and_output", how="namespace b, veth vb: INPUT logs UDP 10.7.0.1:40011 -> 10.7.0.2:5001, "
             "OUTPUT logs UDP 10.7.0.2:40012 -> 10.7.0.1:5002 (OUTPUT carries no timestamp)", rules="local", ns="b",
             traffic=lambda: (send("a", kind="udp", src="10.7.0.1", dst="10.7.0.2", sport=40011, dport=5001, size=10),
                              send("b", kind="udp", src="10.7.0.2", dst="10.7.0.1", sport=40012, dport=5002, size=10)),
             expected=[dict(local, prefix="in", hook="INPUT", kernel_time=True, indev=index["vb"], outdev=None,
                            src="10.7.0.1", dst="10.7.0.2", sport=40011, dport=5001, hwaddr=MAC["a"], seq=0),
                       dict(local, prefix="out", hook="OUTPUT", kernel_time=False, indev=None, outdev=index["vb"],
                            hwaddr=None,
                            src="10.7.0.2", dst="10.7.0.1", sport=40012, dport=5002, seq=1)]),
        dict(name="ebtables_arp", how="ebtables-nft FORWARD -p ARP --arp-ip-dst 10.9.0.3 --nflog-group 7: one ARP "
             "who-has 10.9.0.3 from 10.9.0.1 (MAC 02:00:00:00:00:01), sent by hand from the peer",
             rules="arp", traffic=lambda: send("peer", kind="arp", src=PEER4, dst="10.9.0.3", mac=MAC["peer"]),
             expected=[pkt(bridged, family=7, l3="arp", protocol="arp", src=PEER4, dst="10.9.0.3", length=28,
                           captured=28, seq=0)]),
    ]


def load(rules: str) -> None:
    if rules == "local":
        sh(*nsenter("b", "iptables-nft-restore"), stdin=local_rules())
    elif rules == "arp":
        sh(*nsenter("fw", "ebtables-nft-restore"), stdin=arp_rules())
    else:
        load_forward({"forward": "", "forward_size24": " --nflog-size 24",
                      "forward_batch": " --nflog-threshold 4"}[rules])


def main(out: str) -> None:
    index = lab()
    captures = []
    for s in scenarios(index):
        load(s["rules"])
        datagrams = capture(s.get("ns", "fw"), len(s["expected"]), s["traffic"],
                            copy_range=s.get("copy_range", nflog.HEADERS_ONLY), threshold=s.get("threshold", 1))
        names = ("vb",) if s.get("ns") == "b" else ("br0", "pv", "tap")
        captures.append(dict(name=s["name"], how=s["how"], rules=s["rules"], copy_range=s.get("copy_range", 128),
                             ifnames={index[n]: n for n in names}, datagrams=datagrams, expected=s["expected"]))
        print(f"{s['name']}: {len(datagrams)} datagram(s)", file=sys.stderr)
    document = dict(
        made_by="scripts/sandbox .venv/bin/python scripts/nflog_capture.py",
        kernel=platform.release(), iptables=sh("iptables-nft", "--version").strip(),
        rules={"forward": forward_rules(), "local": local_rules(), "arp": arp_rules()}, mac=MAC,
        captures=captures)
    with open(out, "w") as f:
        json.dump(document, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    if os.environ.get("NETFW_IN_SANDBOX") != "1":
        raise SystemExit("run it inside the sandbox: scripts/sandbox .venv/bin/python scripts/nflog_capture.py")
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/data/nflog/captures.json")
