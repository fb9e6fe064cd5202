"""Pure parsing of what nfnetlink_log (NFLOG) sends: netlink framing, NFULA_* attributes, the logged packet's headers.

Safe to call on any bytes and to repeat. Framing comes from the kernel: a malformed message raises WireError (a
reader that misreads must say so). The logged packet itself comes from a VM and is hostile: its headers are read
as far as the captured bytes and their own lengths allow, and a short or nonsensical header yields fewer fields,
never an exception.

Layouts: <linux/netlink.h> (nlmsghdr, nlattr: host byte order), <linux/netfilter/nfnetlink.h> (nfgenmsg: res_id
big-endian), <linux/netfilter/nfnetlink_log.h> (attributes: big-endian payloads).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterator

NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA = struct.Struct("=HH")  # length, type
NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (the NFLOG group)
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

NFNL_SUBSYS_ULOG = 4
MSG_PACKET = NFNL_SUBSYS_ULOG << 8 | 0  # NFULNL_MSG_PACKET
MSG_CONFIG = NFNL_SUBSYS_ULOG << 8 | 1  # NFULNL_MSG_CONFIG

# enum nfulnl_attr_type
(PACKET_HDR, MARK, TIMESTAMP, INDEV, OUTDEV, PHYSINDEV, PHYSOUTDEV, HWADDR, PAYLOAD, PREFIX, UID, SEQ,
 SEQ_GLOBAL, GID, HWTYPE, HWHEADER, HWLEN, CT, CT_INFO, VLAN, L2HDR) = range(1, 22)

#: NF_INET_* hook numbers (the bridge family's NF_BR_* hooks use the same numbers for the same places).
HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
#: Names as iptables-save prints them; other protocols are shown by number.
PROTOCOLS = {1: "icmp", 2: "igmp", 4: "ipip", 6: "tcp", 17: "udp", 33: "dccp", 41: "ipv6", 47: "gre", 50: "esp",
             51: "ah", 58: "ipv6-icmp", 59: "ipv6-nonxt", 132: "sctp", 136: "udplite"}
_PORTS = {6, 17, 33, 132, 136}  # protocols whose header starts with source and destination port
_ICMP = {1, 58}
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options: length in 8-octet units after 8
_TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
_FAMILY_L3 = {2: "ipv4", 10: "ipv6"}  # NFPROTO_IPV4, NFPROTO_IPV6
_ETHERTYPE_L3 = {0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}


class WireError(ValueError):
    """A netlink message that does not follow the kernel's framing."""


@dataclass(frozen=True)
class Message:
    type: int
    flags: int
    seq: int
    port: int
    body: bytes  # after the nlmsghdr


@dataclass(frozen=True)
class LoggedPacket:
    """One packet a `-j NFLOG` rule logged."""

    time: float  # seconds since the epoch: the kernel's NFULA_TIMESTAMP, else when the reader received it
    kernel_time: bool  # whether `time` is the kernel's
    group: int
    prefix: str  # --nflog-prefix ('' without one)
    hook: str  # PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING
    family: int  # NFPROTO_*: 2 IPv4, 10 IPv6, 7 bridge
    indev: int | None  # ifindexes in the logging namespace; for a bridged packet indev/outdev are the bridge
    outdev: int | None
    physindev: int | None  # ... and physindev/physoutdev its ports (br_netfilter)
    physoutdev: int | None
    l3: str | None  # "ipv4", "ipv6", "arp" (ebtables) or None when the payload is none of them (or not copied)
    src: str | None  # for ARP: the sender's and the target's protocol address
    dst: str | None
    protocol: str | None  # "tcp", "udp", "icmp", "ipv6-icmp", ... or the number; None if not reached
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    tcp_flags: str | None  # e.g. "SYN" or "ACK,FIN"
    length: int | None  # the packet's length by its IP header (not what was copied)
    captured: int  # bytes of the packet the kernel copied (its copy range)
    fragment: bool  # a non-first fragment: it carries no ports
    mark: int | None
    hwaddr: str | None  # the frame's source MAC (NFULA_HWADDR), when it came in on an Ethernet-like link
    seq: int | None  # NFULA_SEQ, per group, when the reader asked for it
    lost_before: int = 0  # packets of this group lost (reader overrun) between the previous one and this one
    indev_name: str | None = None  # names as the logging namespace has them when the packet was read
    outdev_name: str | None = None
    physindev_name: str | None = None
    physoutdev_name: str | None = None


def align(length: int) -> int:
    return (length + 3) & ~3


def messages(data: bytes) -> Iterator[Message]:
    """The netlink messages of one datagram (a batch of packets ends with NLMSG_DONE)."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < NLMSG.size:
            raise WireError(f"{len(data) - offset} bytes left at offset {offset}: too short for a netlink header")
        length, kind, flags, seq, port = NLMSG.unpack_from(data, offset)
        if length < NLMSG.size or offset + length > len(data):
            raise WireError(f"netlink message at offset {offset} claims {length} bytes of {len(data) - offset}")
        yield Message(kind, flags, seq, port, bytes(data[offset + NLMSG.size:offset + length]))
        offset += align(length)


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """Attribute type -> value (netlink TLVs from offset on; a repeated type keeps the last)."""
    found = {}
    while offset < len(data):
        if len(data) - offset < NLA.size:
            raise WireError(f"{len(data) - offset} bytes left at offset {offset}: too short for an attribute")
        length, kind = NLA.unpack_from(data, offset)
        if length < NLA.size or offset + length > len(data):
            raise WireError(f"attribute {kind} at offset {offset} claims {length} bytes of {len(data) - offset}")
        found[kind & NLA_TYPE_MASK] = bytes(data[offset + NLA.size:offset + length])
        offset += align(length)
    return found


def error_code(message: Message) -> int:
    """The errno of an NLMSG_ERROR (0 is an acknowledgement)."""
    if len(message.body) < 4:
        raise WireError("NLMSG_ERROR without an error code")
    return -struct.unpack_from("=i", message.body)[0]


def _u32(attrs: dict[int, bytes], kind: int) -> int | None:
    value = attrs.get(kind)
    if value is None:
        return None
    if len(value) != 4:
        raise WireError(f"attribute {kind} has {len(value)} bytes, not 4")
    return struct.unpack("!I", value)[0]


def _timestamp(attrs: dict[int, bytes]) -> float | None:
    value = attrs.get(TIMESTAMP)
    if value is None:
        return None
    if len(value) != 16:
        raise WireError(f"NFULA_TIMESTAMP has {len(value)} bytes, not 16")
    sec, usec = struct.unpack("!QQ", value)
    return sec + usec / 1e6


def _hwaddr(attrs: dict[int, bytes]) -> str | None:
    value = attrs.get(HWADDR)
    if value is None:
        return None
    if len(value) != 12:
        raise WireError(f"NFULA_HWADDR has {len(value)} bytes, not 12")
    (length,) = struct.unpack_from("!H", value)
    return ":".join(f"{b:02x}" for b in value[4:4 + min(length, 8)])


def parse_packet(message: Message, received: float) -> LoggedPacket:
    """A NFULNL_MSG_PACKET message as a LoggedPacket; `received` is the time to use without a kernel timestamp."""
    if message.type != MSG_PACKET or len(message.body) < NFGENMSG.size:
        raise WireError(f"not an NFLOG packet message (type {message.type:#x}, {len(message.body)} bytes)")
    family, _version, group = NFGENMSG.unpack_from(message.body)
    attrs = attributes(message.body, NFGENMSG.size)
    header = attrs.get(PACKET_HDR)
    if header is None or len(header) != 4:
        raise WireError("NFLOG packet message without a 4-byte NFULA_PACKET_HDR")
    hw_protocol, hook = struct.unpack("!HBx", header)
    kernel_time = _timestamp(attrs)
    payload = attrs.get(PAYLOAD, b"")
    l3 = _FAMILY_L3.get(family) or _ETHERTYPE_L3.get(hw_protocol)
    return LoggedPacket(
        time=received if kernel_time is None else kernel_time,
        kernel_time=kernel_time is not None,
        group=group,
        prefix=attrs.get(PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace"),
        hook=HOOKS[hook] if hook < len(HOOKS) else str(hook),
        family=family,
        indev=_u32(attrs, INDEV),
        outdev=_u32(attrs, OUTDEV),
        physindev=_u32(attrs, PHYSINDEV),
        physoutdev=_u32(attrs, PHYSOUTDEV),
        mark=_u32(attrs, MARK),
        hwaddr=_hwaddr(attrs),
        seq=_u32(attrs, SEQ),
        captured=len(payload),
        **headers(l3, payload),
    )


# --- the logged packet's own headers: hostile bytes, never an exception ---------------------------------------

_EMPTY = dict(l3=None, src=None, dst=None, protocol=None, sport=None, dport=None, icmp_type=None, icmp_code=None,
              tcp_flags=None, length=None, fragment=False)


def headers(l3: str | None, payload: bytes) -> dict:
    """The LoggedPacket fields that come from the packet's IPv4/IPv6 and transport headers: as many as the captured
    bytes hold (a copy range of 24 still gives an IPv6 packet's length, source and next header), None for the rest."""
    out = dict(_EMPTY)
    if l3 == "ipv4" and payload and payload[0] >> 4 == 4:
        proto, l4 = _ipv4(payload, out)
    elif l3 == "ipv6" and payload and payload[0] >> 4 == 6:
        proto, l4 = _ipv6(payload, out)
    elif l3 == "arp":
        return _arp(payload, out)
    else:
        return out
    if proto is not None:
        out["protocol"] = PROTOCOLS.get(proto, str(proto))
        if l4 is not None:
            _transport(proto, l4, out)
    return out


def _address(p: bytes, start: int, size: int) -> str | None:
    return str(ipaddress.ip_address(p[start:start + size])) if len(p) >= start + size else None


def _ipv4(p: bytes, out: dict) -> tuple[int | None, bytes | None]:
    out.update(l3="ipv4", src=_address(p, 12, 4), dst=_address(p, 16, 4))
    if len(p) >= 4:
        out["length"] = struct.unpack_from("!H", p, 2)[0]
    if len(p) < 10:
        return None, None
    out["fragment"] = bool(struct.unpack_from("!H", p, 6)[0] & 0x1FFF)
    ihl = (p[0] & 0x0F) * 4
    usable = 20 <= ihl <= len(p) and not out["fragment"]
    return p[9], (p[ihl:] if usable else None)


def _ipv6(p: bytes, out: dict) -> tuple[int | None, bytes | None]:
    """Walks the extension headers (each needs its bytes captured) to the transport protocol."""
    out.update(l3="ipv6", src=_address(p, 8, 16), dst=_address(p, 24, 16))
    if len(p) >= 6:  # a payload length of 0 (a jumbogram) reads as 40: not seen on a bridge
        out["length"] = 40 + struct.unpack_from("!H", p, 4)[0]
    if len(p) < 7:
        return None, None
    proto, offset = p[6], 40
    while proto in _IPV6_EXTENSIONS or proto in (44, 51):
        if len(p) < offset + 8:
            return None, None  # the chain goes on beyond what was captured: the transport protocol is unknown
        if proto == 44:  # fragment header: 8 bytes; a non-first fragment carries no transport header
            if struct.unpack_from("!H", p, offset + 2)[0] >> 3:
                out["fragment"] = True
                return p[offset], None
            size = 8
        elif proto == 51:  # AH: length in 4-octet units after 8
            size = (p[offset + 1] + 2) * 4
        else:
            size = (p[offset + 1] + 1) * 8
        proto, offset = p[offset], offset + size
    return proto, (p[offset:] if offset <= len(p) else None)


def _arp(p: bytes, out: dict) -> dict:
    """ARP (ebtables logs it): the sender's and target's IPv4 address, when the packet carries IPv4 addresses."""
    out.update(l3="arp", protocol="arp")
    if len(p) < 8:
        return out
    _hw, ptype, hlen, plen = struct.unpack_from("!HHBB", p)
    out["length"] = 8 + 2 * (hlen + plen)
    if ptype == 0x0800 and plen == 4:
        out["src"] = _address(p, 8 + hlen, 4)
        out["dst"] = _address(p, 8 + 2 * hlen + 4, 4)
    return out


def _transport(proto: int, l4: bytes, out: dict) -> None:
    if proto in _PORTS and len(l4) >= 4:
        out["sport"], out["dport"] = struct.unpack_from("!HH", l4)
        if proto == 6 and len(l4) >= 14:
            out["tcp_flags"] = ",".join(name for bit, name in enumerate(_TCP_FLAGS) if l4[13] >> bit & 1)
    elif proto in _ICMP and len(l4) >= 2:
        out["icmp_type"], out["icmp_code"] = l4[0], l4[1]
