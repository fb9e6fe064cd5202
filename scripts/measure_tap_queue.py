#!/usr/bin/env python3
"""Which way of moving a tap off its VN bridge leaves nothing of before in its queue (the design of the libvirt
hook's cut-over, docs/opennebula.md "libvirt's qemu hook"). One real tap, held open as libvirtd holds it before QEMU
starts, on a Linux bridge with a peer; 1.5 s for the tap's own IPv6, then the peer sends 10 unicast and 10 broadcast
UDP datagrams; the tap moves into a namespace (IPv6 off by default there, as netfw's) and comes up; after 1.5 s the
frames in its queue are read: what QEMU would hand the guest. Four ways:

  none      the move alone (as `post` does)
  ebtables  a DROP on -o TAP in the hypervisor's FORWARD and OUTPUT from before the tap exists until after the move
  sysctl    net.ipv6.conf.TAP.disable_ipv6=1 once the tap is in the namespace
  flush     addrgenmode none and txqueuelen 0, then back, while the tap is down in the namespace (netfw's hook)

    scripts/measure_tap_queue.py        (re-runs itself inside scripts/sandbox, once per way)
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WAYS = ("none", "ebtables", "sysctl", "flush")
TUNSETIFF, IFF_TAP_NO_PI = 0x400454CA, 0x1002
SEND = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n"
        "[s.sendto(b'x',(a,5001)) for a in ('10.9.0.7','10.9.0.255') for i in range(10)]\n")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def lab() -> None:
    sh("ip", "link", "add", "vnbr", "type", "bridge")
    sh("sysctl", "-qw", "net.ipv6.conf.vnbr.disable_ipv6=1")
    sh("ip", "link", "set", "vnbr", "up")
    sh("ip", "netns", "add", "peer")
    sh("ip", "link", "add", "pv", "type", "veth", "peer", "name", "pe", "netns", "peer")
    sh("sysctl", "-qw", "net.ipv6.conf.pv.disable_ipv6=1")
    sh("ip", "netns", "exec", "peer", "sysctl", "-qw", "net.ipv6.conf.pe.disable_ipv6=1")
    sh("ip", "link", "set", "pv", "master", "vnbr", "up")
    sh("ip", "-n", "peer", "link", "set", "pe", "up")
    sh("ip", "-n", "peer", "addr", "add", "10.9.0.1/24", "dev", "pe")
    sh("ip", "-n", "peer", "neigh", "add", "10.9.0.7", "lladdr", "02:00:00:00:00:07", "dev", "pe")


def ebtables(op: str) -> None:
    for chain in ("FORWARD", "OUTPUT"):
        sh("ebtables", op, chain, "-o", "one-5-0", "-j", "DROP")


def one(way: str) -> list[str]:
    lab()
    if way == "ebtables":
        ebtables("-A")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", b"one-5-0", IFF_TAP_NO_PI))
    sh("ip", "link", "set", "one-5-0", "master", "vnbr", "up")
    time.sleep(1.5)
    sh("ip", "netns", "exec", "peer", "python3", "-c", SEND)
    time.sleep(0.3)
    sh("ip", "netns", "add", "one-5")
    sh("ip", "netns", "exec", "one-5", "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1",
       "net.ipv6.conf.all.disable_ipv6=1")
    sh("ip", "link", "set", "one-5-0", "netns", "one-5")
    if way == "sysctl":
        sh("ip", "netns", "exec", "one-5", "sysctl", "-qw", "net.ipv6.conf.one-5-0.disable_ipv6=1")
    if way == "flush":
        sh("ip", "-n", "one-5", "link", "set", "one-5-0", "addrgenmode", "none", "txqueuelen", "0")
        sh("ip", "-n", "one-5", "link", "set", "one-5-0", "txqueuelen", "1000")
    if way == "ebtables":
        ebtables("-D")
    sh("ip", "-n", "one-5", "link", "set", "one-5-0", "up")
    time.sleep(1.5)
    kinds = []
    while True:
        try:
            frame = os.read(fd, 65536)
        except BlockingIOError:
            return kinds
        kinds.append({b"\x08\x00": "IPv4", b"\x86\xdd": "IPv6 (the tap's own)"}.get(frame[12:14], frame[12:14].hex()))


def main() -> int:
    if os.environ.get("NETFW_IN_SANDBOX") != "1":
        for way in WAYS:
            code = subprocess.call([str(HERE / "sandbox"), sys.executable, __file__, way])
            if code:
                return code
        return 0
    way = sys.argv[1]
    kinds = one(way)
    what = ", ".join(f"{k} x{kinds.count(k)}" for k in sorted(set(kinds)))
    print(f"| {way} | {len(kinds)} | {what} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
