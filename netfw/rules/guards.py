"""What a NIC may claim, whatever its security groups say: anti-spoofing (MAC, source addresses, ARP), the ND
checks IPv6 needs (targets, link-layer options, read with u32), the DHCP and RA server guards, and the ethertypes
that may cross the tap (ebtables). Pure: rendered lines only."""

from __future__ import annotations

import ipaddress

from netfw.model import values
from .chains import EB, ETHERTYPE, SPOOFING, FamilyRules, chain_name, drop
from netfw.model.spec import InputError, NicSpec

#: The only ethertypes that cross a tap, untagged (ebtables `-p` names, as ebtables-save prints them).
ETHERTYPES = ("IPv4", "IPv6", "ARP")

#: u32: the IPv6 header's next header (byte 6) is ICMPv6, i.e. no extension header stands between it and the ND
#: message, so that the fixed offsets the ND checks read are those of the message.
_ND_BARE = "0x4&0xff00=0x3a00"
#: The options of an RS, NS or NA from the VM that the `l` checks read, each: real messages carry at most one (a
#: link-layer option, or a DAD probe's nonce), a second may stand beside it in either order, and a message with one
#: more is dropped (u32 cannot loop, and each option read is one more rule per message type).
ND_OPTIONS = 2
#: u32: from an ND option's first word (type, length, 2 bytes), its length in bytes, which `@` moves on by.
_ND_HOP = ">>0xd&0x7f8@"

#: ICMPv6 that IPv6 cannot work without: router advertisement, neighbour solicitation/advertisement, redirect in;
#: router solicitation, neighbour solicitation/advertisement out.
ND_INBOUND = (134, 135, 136, 137)
ND_OUTBOUND = (133, 135, 136)

#: The UDP port DHCP (68) and DHCPv6 (546) clients listen on: what only a router NIC may send to.
DHCP_CLIENT_PORT = {4: 68, 6: 546}


def discovery(chain: str, version: int, types: tuple[int, ...]) -> list[str]:
    """Neighbour and router discovery, which IPv6 needs whatever the security groups say."""
    if version != 6:
        return []
    return [f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in types]


def _icmp6(chain: str, kind: int, rest: str) -> str:
    return f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {kind} {rest}"


def outbound_guards(spec: NicSpec, o: str, version: int) -> list[str]:
    """The outbound chain's head: foreign MAC, DAD probes, rogue DHCP/RA server, foreign source address, and the
    neighbour discovery IPv6 needs, accepted only once what it claims is checked (else ND poisons neighbour caches
    as forged ARP would: the legacy driver accepted ND first)."""
    lines, d = [], chain_name(spec, "d")
    if spec.filter_mac:
        lines.append(f"-A {o} -m mac ! --mac-source {mac_address(spec)} -j {d}")
    if spec.filter_ip and version == 6:  # duplicate address detection: from ::, only for an address of the NIC
        checks = ("t", "l") if spec.filter_mac else ("t",)
        for target in (*(chain_name(spec, c) for c in checks), "ACCEPT"):
            lines.append(_icmp6(o, 135, f"-j {target}").replace(f"-A {o} ", f"-A {o} -s ::/128 ", 1))
    if spec.filter_ip:
        if version == 4:  # a DHCP client has no address yet
            lines.append(f"-A {o} -s 0.0.0.0/32 -d 255.255.255.255/32 -p udp -m udp --sport 68 --dport 67 -j ACCEPT")
        if not spec.router:  # only a router VM may answer DHCP or advertise itself as a router
            # A client takes what reaches its port from any source port, so the guard is the client's port: a
            # client VM itself only ever sends to the server's (67, 547).
            lines.append(f"-A {o} -p udp -m udp --dport {DHCP_CLIENT_PORT[version]} -j {d}")
            if version == 6:
                lines.append(_icmp6(o, 134, f"-j {d}"))
        lines.append(f"-A {o} -j {chain_name(spec, 's')}")
    if version == 6:
        if spec.filter_ip:  # an advertisement only for the NIC's own addresses
            lines.append(_icmp6(o, 136, f"-j {chain_name(spec, 't')}"))
        if spec.filter_mac:  # and the link-layer address it carries is the NIC's
            lines += [_icmp6(o, t, f"-j {chain_name(spec, 'l')}") for t in ND_OUTBOUND]
        lines += discovery(o, version, ND_OUTBOUND)
    return lines


def _u32_words(data: bytes, offset: int) -> str:
    """A u32 condition that the 4-byte-aligned words of data stand at offset, as iptables-save prints it."""
    words = [int.from_bytes(data[k:k + 4], "big") for k in range(0, len(data), 4)]
    return "&&".join(f"0x{offset + 4 * k:x}=0x{w:x}" for k, w in enumerate(words))


def nd_chains(spec: NicSpec) -> dict[str, list[str]]:
    """`t`: an NS/NA target must be an address of the NIC; `l`: every source/target link-layer option of an RS, NS
    or NA must be 8 bytes and carry the NIC's MAC. A receiver takes the first option of each type wherever it
    stands, skipping others, so each of the first ND_OPTIONS options is read (u32 hops over the ones before it by
    their lengths) and a message with one more is dropped: reading the first option only let a second, forged
    one through (issue 19).

    u32 reads offsets from the start of the IPv6 header, while `-p ipv6-icmp -m icmp6` find the message behind any
    extension headers: a Destination Options header would shift the message and let its own bytes stand where the
    checks read (the NIC's address and MAC, with a forged target or option behind them). So each chain first drops
    ND whose IPv6 header is not followed by the ICMPv6 message itself (ND carries none in practice; RFC 6980
    forbids fragmenting it).
    """
    chains, d = {}, chain_name(spec, "d")
    if spec.filter_ip:
        t = chain_name(spec, "t")
        own = [ipaddress.ip_network(a).network_address.packed for a in own_addresses(spec, 6)]
        chains[t] = [_shifted(t, d), *(f'-A {t} -m u32 --u32 "{_u32_words(a, 48)}" -j RETURN' for a in own),
                     f"-A {t} -j {d}"]
    if spec.filter_mac:
        l, mac = chain_name(spec, "l"), bytes.fromhex(mac_address(spec).replace(":", ""))
        # A link-layer option's first word: type 1 (source) or 2 (target), length 1 (8 bytes), the MAC's first 2.
        head = ",".join(f"0x{kind << 24 | 1 << 16 | int.from_bytes(mac[:2], 'big'):x}" for kind in (1, 2))
        tail = f"0x{int.from_bytes(mac[2:], 'big'):x}"
        lines = [_shifted(l, d)]
        # RS: options right after its 8 bytes (offset 48); NS/NA: after the 16-byte target (offset 64).
        for kind, start in ((133, 48), (135, 64), (136, 64)):
            for n in range(ND_OPTIONS):  # option n, if it is a link-layer option, must carry the NIC's MAC
                at = _nd_option(start, n)
                lines.append(_icmp6(l, kind, f'-m u32 --u32 "{at}>>0x18=0x1:0x2" -m u32 ! --u32 '
                                             f'"{at}={head}&&{_nd_option(start, n, 4)}={tail}" -j {d}'))
            # any value: one option more than is read
            lines.append(_icmp6(l, kind, f'-m u32 --u32 "{_nd_option(start, ND_OPTIONS)}=0x0:0xffffffff" -j {d}'))
            lines.append(_icmp6(l, kind, "-j RETURN"))
        chains[l] = [*lines, f"-A {l} -j {d}"]
    return chains


def _nd_option(start: int, n: int, byte: int = 0) -> str:
    """u32 location of byte `byte` (a multiple of 4) of ND option n (0: the first, at offset `start`), reached by
    hopping over the options before it by their length bytes. A location past the packet matches nothing."""
    return _ND_HOP.join(f"0x{offset:x}" for offset in (*(start,) * n, start + byte))


def _shifted(chain: str, d: str) -> str:
    """Drop an ND message behind an extension header: the offsets of the chain's checks would miss it."""
    return f'-A {chain} -m u32 ! --u32 "{_ND_BARE}" -j {d}'

# --- addresses ------------------------------------------------------------------------------------------------


def mac_address(spec: NicSpec) -> str:
    """The NIC's MAC as the save tools print it (lower case, two digits a byte); InputError if missing or bad."""
    try:
        return values.mac(spec.mac)
    except ValueError as e:
        raise InputError(f"NIC {spec.nic}: MAC {e} (needed to filter spoofing)") from None


def link_local(mac: str) -> ipaddress.IPv6Address:
    """The IPv6 link-local address a MAC gives by modified EUI-64 (RFC 4291 appendix A)."""
    b = bytes.fromhex(values.mac(mac).replace(":", ""))
    eui64 = bytes([b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui64)


def own_addresses(spec: NicSpec, version: int) -> tuple[str, ...]:
    """The source blocks the NIC may use in one family (its addresses; in IPv6 also its link-local), deduplicated."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in spec.ips:
        try:
            found.append(values.address(text))
        except ValueError as e:
            raise InputError(f"NIC {spec.nic}: {e}") from None
    if version == 6 and spec.mac:
        found.append(link_local(mac_address(spec)))
    blocks = (ipaddress.ip_network(a) for a in found if a.version == version)
    return tuple(dict.fromkeys(str(b) for b in blocks))


# --- ebtables -------------------------------------------------------------------------------------------------


def ebtables(spec: NicSpec) -> FamilyRules:
    """Frames to and from the VM: only untagged IPv4, IPv6 and ARP cross the tap (chain `e`, whatever the spoofing
    flags); with spoofing filters, frames from the VM then go through `a`."""
    e, tap = chain_name(spec, "e"), spec.tap
    chains = {e: _ethertypes(spec, e)}
    jumps = [f"-A FORWARD -i {tap} -j {e}", f"-A FORWARD -o {tap} -j {e}"]
    if spec.filter_mac or spec.filter_ip:
        a, d = chain_name(spec, "a"), chain_name(spec, "d")
        chains[a] = _spoofing(spec, a)
        chains[d] = tuple(drop(spec, EB, d, "out", SPOOFING))
        jumps.append(f"-A FORWARD -i {tap} -j {a}")
    return FamilyRules(EB, chains, tuple(jumps))


def _ethertypes(spec: NicSpec, e: str) -> tuple[str, ...]:
    """Only untagged IPv4, IPv6 and ARP go on: br_netfilter hands iptables untagged IPv4 and IPv6 only (by
    default), so a tagged (802.1Q, 802.1ad), PPPoE, 802.3 or other frame would cross the firewall bridge past every
    rule (issue 8); ARP goes on to `a` when spoofing is filtered. ebtables names a tagged frame's ethertype 802_1Q
    whatever it carries (the kernel has moved the outer tag out of the frame by then), so `-p IPv4` never lets a
    tagged frame through.

    A VM has no business tagging frames on its VN (the VN does the tagging), and dropping them rather than having
    iptables filter them (the bridge-nf-filter-* sysctls, which stop at one tag) keeps a tagged frame from ever
    reaching another VLAN. The chain is jumped to for both directions: another VM may send such frames too; the
    drops are logged and counted per direction (`-i` the tap: from the VM).
    """
    return (*(f"-A {e} -p {ethertype} -j RETURN" for ethertype in ETHERTYPES),
            *drop(spec, EB, e, "out", ETHERTYPE, f" -i {spec.tap}"), *drop(spec, EB, e, "in", ETHERTYPE))


def _spoofing(spec: NicSpec, a: str) -> tuple[str, ...]:
    """Frames from the VM: foreign source MAC dropped; ARP whose sender MAC or IP is not the NIC's dropped."""
    lines, d = [], chain_name(spec, "d")
    if spec.filter_mac:
        mac = mac_address(spec)
        lines += [f"-A {a} -s ! {mac} -j {d}", f"-A {a} -p ARP --arp-mac-src ! {mac} -j {d}"]
    if spec.filter_ip:
        own = (block.removesuffix("/32") for block in own_addresses(spec, 4))
        # 0.0.0.0: the RFC 5227 probe a client sends before it uses an address.
        lines += [f"-A {a} -p ARP --arp-ip-src {ip} -j RETURN" for ip in (*own, "0.0.0.0")]
        lines.append(f"-A {a} -p ARP -j {d}")
    return tuple(lines)


# --- restore input --------------------------------------------------------------------------------------------

