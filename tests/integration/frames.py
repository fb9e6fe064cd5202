"""Ethernet frames built by hand, layer by layer (no scapy), and a sniffer that sees every frame a guest gets.

Builders return bytes with every checksum right: Ethernet with any stack of tags (802.1Q, 802.1ad), PPPoE session
and discovery, 802.3 length frames, IPv4, IPv6 (optionally behind a Destination Options header), UDP and ICMPv6 (with
the IPv6 pseudo-header of the final destination). A probe's tag (traffic.new_tag) goes into the payload, so a
Sniffer matches an arrival exactly, whatever encapsulation it came in.

The Sniffer is an AF_PACKET socket (ETH_P_ALL) in a guest namespace. The kernel moves a received frame's outer tag
out of the data (skb_vlan_untag) before packet sockets see it; PACKET_AUXDATA gives it back, so an arrival records
the tag's TPID and VLAN id: a positive control can prove that a tagged frame arrived *tagged*.

Every address used must be inside the test's lab.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
import threading
import time

from .traffic import PY, in_ns

ETH_IP, ETH_IP6, ETH_ARP = 0x0800, 0x86DD, 0x0806
TPID_8021Q, TPID_8021AD = 0x8100, 0x88A8
PPPOE_DISCOVERY, PPPOE_SESSION = 0x8863, 0x8864
PPP_IP, PPP_IP6 = 0x0021, 0x0057
PROTO_UDP, PROTO_ICMP6, PROTO_DSTOPTS = 17, 58, 60


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def csum(b: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# --- layer 2 ------------------------------------------------------------------------------------------------------


def ether(dst: str, src: str, ethertype: int, payload: bytes, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    """An Ethernet frame; tags: (TPID, VLAN id) outermost first, e.g. ((0x88a8, 100), (0x8100, 5)) for QinQ."""
    head = mac(dst) + mac(src)
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid & 0xFFF)
    return (head + struct.pack("!H", ethertype) + payload).ljust(60 + 4 * len(tags), b"\0")


def ether_8023(dst: str, src: str, payload: bytes) -> bytes:
    """An IEEE 802.3 frame (a length, not an ethertype) with an LLC header (SNAP-less, SAP 0x42 like STP)."""
    llc = b"\x42\x42\x03" + payload
    return (mac(dst) + mac(src) + struct.pack("!H", len(llc)) + llc).ljust(60, b"\0")


def pppoe_session(session: int, ppp_protocol: int, payload: bytes) -> bytes:
    """PPPoE session stage (RFC 2516, ethertype 0x8864): the PPP frame carries payload (e.g. an IPv4 packet)."""
    ppp = struct.pack("!H", ppp_protocol) + payload
    return struct.pack("!BBHH", 0x11, 0, session, len(ppp)) + ppp


def pppoe_discovery(payload: bytes) -> bytes:
    """A PPPoE Active Discovery Initiation (PADI, ethertype 0x8863) with payload as a Host-Uniq tag."""
    tags = struct.pack("!HH", 0x0103, len(payload)) + payload
    return struct.pack("!BBHH", 0x11, 0x09, 0, len(tags)) + tags


def arp(op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    """An ARP request (op 1) or reply (op 2) for IPv4 over Ethernet."""
    return struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP, 6, 4, op, mac(sha), ipaddress.IPv4Address(spa).packed,
                       mac(tha), ipaddress.IPv4Address(tpa).packed)


# --- layer 3 and 4 --------------------------------------------------------------------------------------------------


def ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x4E46, 0x4000, ttl, proto, 0, s, d)
    return head[:10] + struct.pack("!H", csum(head)) + head[12:] + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    s, d = ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit, s, d) + payload


def _pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!xBH", proto, length)
    return s.packed + d.packed + struct.pack("!IxxxB", length, proto)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram with its checksum over the pseudo-header of src and dst (IPv4 or IPv6)."""
    length = 8 + len(payload)
    check = csum(_pseudo(src, dst, PROTO_UDP, length) + struct.pack("!HHHH", sport, dport, length, 0) + payload)
    return struct.pack("!HHHH", sport, dport, length, check or 0xFFFF) + payload


def icmp6(src: str, dst: str, message: bytes) -> bytes:
    """An ICMPv6 message (its checksum, bytes 2-3, filled in; dst is the final destination)."""
    body = message[:2] + b"\0\0" + message[4:]
    return message[:2] + struct.pack("!H", csum(_pseudo(src, dst, PROTO_ICMP6, len(message)) + body)) + message[4:]


def destination_options(next_header: int, data: bytes) -> bytes:
    """An IPv6 Destination Options header holding one option of type 0x1e (RFC 3692 experimental; its top bits 00
    tell a receiver to skip it) whose data is `data`, padded with zeros to a multiple of 8 bytes in all."""
    length = -(-(len(data) + 4) // 8) * 8
    body = data.ljust(length - 4, b"\0")
    return struct.pack("!BBBB", next_header, length // 8 - 1, 0x1E, len(body)) + body


def ip_udp(src: str, dst: str, dport: int, payload: bytes, sport: int = 40000) -> tuple[int, bytes]:
    """(ethertype, packet): a UDP datagram in IPv4 or IPv6, by the addresses."""
    datagram = udp(src, dst, sport, dport, payload)
    if ipaddress.ip_address(src).version == 4:
        return ETH_IP, ipv4(src, dst, PROTO_UDP, datagram)
    return ETH_IP6, ipv6(src, dst, PROTO_UDP, datagram)


# --- neighbour discovery (RFC 4861) ---------------------------------------------------------------------------------


def tag_option(tag: bytes) -> bytes:
    """An ND option of an unassigned type (253) carrying the tag: receivers ignore it (RFC 4861 4.6)."""
    body = tag.ljust(-(-(len(tag) + 2) // 8) * 8 - 2, b"\0")
    return bytes([253, (len(body) + 2) // 8]) + body


def lladdr_option(kind: int, lladdr: str) -> bytes:
    """A source (kind 1) or target (kind 2) link-layer address option: 8 bytes (RFC 4861 4.6.1)."""
    return bytes([kind, 1]) + mac(lladdr)


def neighbour_advert(src: str, dst: str, target: str, lladdr: str, tag: bytes, dest_opts: bytes | None = None,
                     options: tuple[bytes, ...] | None = None) -> bytes:
    """An IPv6 packet with a Neighbour Advertisement (solicited, override): `target` is at `lladdr`.

    dest_opts: the data of a Destination Options header put between the IPv6 header and the ICMPv6 message.
    options: the message's options in this order, instead of the target link-layer option for `lladdr` and then
    the tag's option (put tag_option(tag) among them).
    """
    options = (lladdr_option(2, lladdr), tag_option(tag)) if options is None else options
    message = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + ipaddress.IPv6Address(target).packed + b"".join(options)
    return _nd(src, dst, message, dest_opts)


def neighbour_solicit(src: str, dst: str, target: str, lladdr: str, tag: bytes, dest_opts: bytes | None = None,
                      options: tuple[bytes, ...] | None = None) -> bytes:
    """An IPv6 packet with a Neighbour Solicitation for `target` from src, which is at `lladdr` (the source
    link-layer option, which the receiver puts in its neighbour cache); dest_opts and options as for
    neighbour_advert."""
    options = (lladdr_option(1, lladdr), tag_option(tag)) if options is None else options
    message = struct.pack("!BBHI", 135, 0, 0, 0) + ipaddress.IPv6Address(target).packed + b"".join(options)
    return _nd(src, dst, message, dest_opts)


def router_solicit(src: str, dst: str, options: tuple[bytes, ...]) -> bytes:
    """An IPv6 packet with a Router Solicitation carrying these options (put tag_option(tag) among them)."""
    return _nd(src, dst, struct.pack("!BBHI", 133, 0, 0, 0) + b"".join(options), None)


def _nd(src: str, dst: str, message: bytes, dest_opts: bytes | None) -> bytes:
    """An ND message in IPv6 (hop limit 255, as RFC 4861 requires), behind a Destination Options header if given."""
    message = icmp6(src, dst, message)
    if dest_opts is None:
        return ipv6(src, dst, PROTO_ICMP6, message, hop_limit=255)
    return ipv6(src, dst, PROTO_DSTOPTS, destination_options(PROTO_ICMP6, dest_opts) + message, hop_limit=255)


# --- whole frames, source MAC first --------------------------------------------------------------------------------


def udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, dport: int, payload: bytes, sport: int = 40000
              ) -> bytes:
    """An Ethernet frame carrying a UDP datagram (IPv4 or IPv6, by the addresses), checksums right."""
    return ether(dst_mac, src_mac, *ip_udp(src, dst, dport, payload, sport))


def arp_frame(src_mac: str, dst_mac: str, op: int, sha: str, spa: str, tha: str, tpa: str) -> bytes:
    """An Ethernet frame with an ARP request (op 1) or reply (op 2)."""
    return ether(dst_mac, src_mac, ETH_ARP, arp(op, sha, spa, tha, tpa))


def advert_frame(src_mac: str, dst_mac: str, src: str, dst: str, target: str, lladdr: str, tag: bytes) -> bytes:
    """An Ethernet frame with a Neighbour Advertisement (override, solicited) saying `target` is at `lladdr`."""
    return ether(dst_mac, src_mac, ETH_IP6, neighbour_advert(src, dst, target, lladdr, tag))


def solicit_frame(src_mac: str, dst_mac: str, src: str, dst: str, target: str, lladdr: str, tag: bytes) -> bytes:
    """An Ethernet frame with a Neighbour Solicitation from src (at `lladdr`, the source link-layer option) for
    `target`."""
    return ether(dst_mac, src_mac, ETH_IP6, neighbour_solicit(src, dst, target, lladdr, tag))


# --- the sniffer ----------------------------------------------------------------------------------------------------

SNIFFER = r"""
import json, re, socket, struct, sys
ETH_P_ALL, SOL_PACKET, PACKET_AUXDATA = 0x0003, 263, 8
VLAN_VALID, TPID_VALID = 1 << 4, 1 << 6
TAG = re.compile(rb"NFP-[0-9a-f]+")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
s.bind((sys.argv[1], ETH_P_ALL))
print(json.dumps({"ev": "ready"}), flush=True)
while True:
    data, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(20))
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    m = TAG.search(data)
    if not m:
        continue
    ev = {"ev": "frame", "tag": m.group().decode(), "ethertype": struct.unpack("!H", data[12:14])[0],
          "src": ":".join("%02x" % b for b in data[6:12])}
    for level, kind, aux in anc:
        if level == SOL_PACKET and kind == PACKET_AUXDATA:
            status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", aux[:20])
            if status & VLAN_VALID:
                ev["vlan"] = tci & 0xFFF
                ev["tpid"] = tpid if status & TPID_VALID else 0x8100
    print(json.dumps(ev), flush=True)
"""


class Sniffer:
    """Every tagged-probe frame that reaches a guest's interface (any ethertype, tagged or not).

    Offers the same wait_tags/with_tag as traffic.Receiver, so traffic.send()/mismatches() can use it.
    """

    def __init__(self, guest: str, ifname: str = "eth0"):
        self.proc = subprocess.Popen(in_ns(guest, PY, "-u", "-c", SNIFFER, ifname), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError(f"sniffer in {guest} did not start: {self.proc.stderr.read()}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            event = json.loads(line)
            if event["ev"] == "ready":
                self._ready.set()
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_tags(self, tags: set[str], timeout: float) -> None:
        """Return when every tag has arrived, or after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not tags <= {e["tag"] for e in self.events}:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def with_tag(self, tag: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["tag"] == tag]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(3)
