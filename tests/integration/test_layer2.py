"""Layer-2 bypasses of the rules, proved closed with hand-made frames (sandbox only).

Two findings of issue 8:
- frames iptables never sees (802.1Q, 802.1ad and QinQ tags, PPPoE, any other ethertype, 802.3 length frames)
  crossed the firewall bridge past every rule, both from the VM and to it, whatever the spoofing flags;
- the ND anti-spoofing checks read fixed u32 offsets, which an IPv6 extension header shifts: a Destination Options
  header carrying the NIC's own address and MAC at the offsets read let a VM poison a neighbour's cache.
Two of issue 19:
- the DHCP and DHCPv6 server guards matched the server's source port, while a client takes what reaches its own
  port (68, 546) from any source port;
- the ND link-layer check read the first option only: a second option with a forged MAC poisoned the cache.

One lab for the module: VM 1 (guest g1-0, attached and detached by each test) and a peer g2-0 on the VN bridge
vnbr0 (never attached). A frames.Sniffer in each guest sees every frame that reaches its eth0, tagged or not. Every
negative assertion has its positive control in the same test: the same frames, sent before VM 1 is attached, reach
the same sniffer (tagged frames still tagged), so "not received" means "dropped by netfw".

Addresses: 10.78.0.0/24 and fd00:78::/64 only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from collections.abc import Callable

import pytest

from netfw import api
from netfw.rules import guards, tables
from netfw.model.spec import NicSpec
from netfw.model.rules import parse_rules

from . import frames as fr
from . import lab as lab_mod
from . import traffic as t
from .lab import sh

VM1, PEER = "g1-0", "g2-0"
MAC = {VM1: "02:78:00:00:00:01", PEER: "02:78:00:00:00:02"}
IP4 = {VM1: "10.78.0.1", PEER: "10.78.0.2"}
IP6 = {VM1: "fd00:78::1", PEER: "fd00:78::2"}
VICTIM, VICTIM_MAC, FORGED_MAC = "fd00:78::3", "02:78:00:00:00:03", "02:78:00:00:00:98"
ALLOWED = {"out": 6000, "in": 5000}  # the UDP port VM 1's rules allow in each direction; 7777 is never allowed
FORBIDDEN = 7777
RULES = parse_rules([{"PROTOCOL": "UDP", "RULE_TYPE": "OUTBOUND", "RANGE": str(ALLOWED["out"])},
                     {"PROTOCOL": "UDP", "RULE_TYPE": "INBOUND", "RANGE": str(ALLOWED["in"])}])
PLAIN = NicSpec(1, 0, "vnbr0", rules=RULES, mac=MAC[VM1], ips=(IP4[VM1], IP6[VM1]))
SPOOFING = dataclasses.replace(PLAIN, filter_mac=True, filter_ip=True)


@pytest.fixture(scope="module")
def sniffers(tmp_path_factory):
    """The lab, built once: the VN bridge, both guests and a sniffer in each."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NETFW_STATE_DIR", str(tmp_path_factory.mktemp("l2") / "state"))
    lab_mod.reset()
    lab = lab_mod.Lab()
    lab.bridge("vnbr0")
    found: dict[str, fr.Sniffer] = {}
    try:
        for guest in (VM1, PEER):
            vm, nic = (int(x) for x in guest[1:].split("-"))
            lab.vm(vm, nic, f"{IP4[guest]}/24", ip6=f"{IP6[guest]}/64", mac=MAC[guest])
            found[guest] = fr.Sniffer(guest)
        yield found
    finally:
        for s in found.values():
            s.close()
        lab_mod.reset()
        mp.undo()


@pytest.fixture
def detached(sniffers):
    """VM 1 not attached when the test starts (its tap on vnbr0), and not after it."""
    api.detach(1, 0)
    yield sniffers
    api.detach(1, 0)


# --- tags, PPPoE and other ethertypes ---------------------------------------------------------------------------

Q, AD = fr.TPID_8021Q, fr.TPID_8021AD


@dataclasses.dataclass
class Kind:
    """One kind of frame: what it is, whether it may cross the firewall, and the tag it arrives with (TPID)."""

    why: str
    build: Callable[[str, str, bytes], bytes]  # (src guest, dst guest, tag) -> frame
    allowed: bool
    tpid: int | None = None


def _ip(tags=(), family=4, port=FORBIDDEN, direction="out"):
    def build(src, dst, tag):
        addr = IP4 if family == 4 else IP6
        ethertype, packet = fr.ip_udp(addr[src], addr[dst], ALLOWED[direction] if port is None else port, tag)
        return fr.ether(MAC[dst], MAC[src], ethertype, packet, tags)
    return build


def _pppoe(src, dst, tag):
    packet = fr.ip_udp(IP4[src], IP4[dst], FORBIDDEN, tag)[1]
    return fr.ether(MAC[dst], MAC[src], fr.PPPOE_SESSION, fr.pppoe_session(1, fr.PPP_IP, packet))


def _pppoe6(src, dst, tag):
    packet = fr.ip_udp(IP6[src], IP6[dst], FORBIDDEN, tag)[1]
    return fr.ether(MAC[dst], MAC[src], fr.PPPOE_SESSION, fr.pppoe_session(1, fr.PPP_IP6, packet))


def _arp(tags=()):
    def build(src, dst, tag):  # an ARP request, the tag in the frame's padding
        return fr.ether(MAC[dst], MAC[src], fr.ETH_ARP, fr.arp(1, MAC[src], IP4[src], "00:00:00:00:00:00",
                                                                  IP4[dst]) + tag, tags)
    return build


def kinds(direction: str) -> list[Kind]:
    return [
        Kind("IPv4 UDP to the allowed port", _ip(port=None, direction=direction), True),
        Kind("IPv6 UDP to the allowed port", _ip(family=6, port=None, direction=direction), True),
        Kind("ARP request", _arp(), True),
        Kind("IPv4 UDP to a forbidden port (the rules are in force)", _ip(), False),
        Kind("IPv6 UDP to a forbidden port (the rules are in force)", _ip(family=6), False),
        Kind("802.1Q VLAN 5, IPv4 UDP to a forbidden port", _ip(((Q, 5),)), False, Q),
        Kind("802.1Q VLAN 5, IPv6 UDP to a forbidden port", _ip(((Q, 5),), 6), False, Q),
        Kind("802.1Q VLAN 5, IPv4 UDP to the allowed port (no tagged traffic at all)",
             _ip(((Q, 5),), port=None, direction=direction), False, Q),
        Kind("802.1Q priority tag (VLAN 0), IPv4 UDP to a forbidden port", _ip(((Q, 0),)), False, Q),
        Kind("802.1Q VLAN 5, ARP request", _arp(((Q, 5),)), False, Q),
        Kind("802.1ad S-tag 5, IPv4 UDP to a forbidden port", _ip(((AD, 5),)), False, AD),
        Kind("QinQ (802.1ad 100, 802.1Q 5), IPv4 UDP to a forbidden port", _ip(((AD, 100), (Q, 5))), False, AD),
        Kind("PPPoE session, IPv4 UDP to a forbidden port", _pppoe, False),
        Kind("PPPoE session, IPv6 UDP to a forbidden port", _pppoe6, False),
        Kind("PPPoE discovery (PADI)",
             lambda src, dst, tag: fr.ether(MAC[dst], MAC[src], fr.PPPOE_DISCOVERY, fr.pppoe_discovery(tag)), False),
        Kind("ethertype 0x88b5 (local experimental)",
             lambda src, dst, tag: fr.ether(MAC[dst], MAC[src], 0x88B5, tag), False),
        Kind("802.3 length frame with LLC", lambda src, dst, tag: fr.ether_8023(MAC[dst], MAC[src], tag), False),
    ]


def probes(src: str, dst: str, direction: str, attached: bool) -> tuple[list[t.Probe], dict[str, Kind]]:
    """One frame probe per kind; before attach every frame is expected through."""
    out, by_tag = [], {}
    for kind in kinds(direction):
        p = t.frame(lambda tag, k=kind: k.build(src, dst, tag), kind.allowed or not attached, kind.why)
        out.append(p)
        by_tag[p.tag] = kind
    return out, by_tag


@pytest.mark.parametrize("direction", ["out", "in"], ids=["from-the-vm", "to-the-vm"])
@pytest.mark.parametrize("spec", [PLAIN, SPOOFING], ids=["no-spoofing-filters", "spoofing-filters"])
def test_only_untagged_ipv4_ipv6_and_arp_cross_the_tap(detached, spec, direction):
    """From VM 1 to the peer ("out") and from the peer to VM 1 ("in"), with and without spoofing filters."""
    src, dst = (VM1, PEER) if direction == "out" else (PEER, VM1)
    sniffer = detached[dst]
    # Control: with VM 1 not attached, every frame arrives, tagged frames still tagged: the sniffer is not blind.
    control, by_tag = probes(src, dst, direction, attached=False)
    bad = t.mismatches(src, control, sniffer)
    assert not bad, "not attached yet, yet:\n" + "\n".join(bad)
    for p in control:
        arrivals = sniffer.with_tag(p.tag)
        assert {e.get("tpid") for e in arrivals} == {by_tag[p.tag].tpid}, (p.why, arrivals)
    api.attach(spec)
    bad = t.mismatches(src, probes(src, dst, direction, attached=True)[0], sniffer)
    assert not bad, "\n".join(bad)


def test_tagged_ip_is_filtered_like_untagged_even_without_the_ethertype_chain(detached):
    """Defence in depth: the namespace's br_netfilter passes VLAN-tagged and PPPoE IP to iptables, so with the
    ethertype chain flushed (tampering) a tagged packet still meets the rules, and verify reports the tampering."""
    sniffer = detached[PEER]

    def tagged(forbidden_pass: bool, allowed_pass: bool) -> list[t.Probe]:
        return [t.frame(lambda tag: _ip(((Q, 5),), port=None)(VM1, PEER, tag), allowed_pass,
                        "802.1Q to the allowed port"),
                t.frame(lambda tag: _ip(((Q, 5),))(VM1, PEER, tag), forbidden_pass, "802.1Q to a forbidden port"),
                t.frame(lambda tag: _ip(((Q, 5),), 6)(VM1, PEER, tag), forbidden_pass,
                        "802.1Q IPv6 to a forbidden port"),
                t.frame(lambda tag: _pppoe(VM1, PEER, tag), forbidden_pass, "PPPoE IPv4 to a forbidden port")]

    bad = t.mismatches(VM1, tagged(forbidden_pass=True, allowed_pass=True), sniffer)
    assert not bad, "not attached yet, yet:\n" + "\n".join(bad)
    api.attach(PLAIN)
    # Before the fix there is no such chain and `ebtables -F` fails: the frames below then show the bypass.
    sh("nsenter", "--net=/run/netns/one-1", "ebtables", "-F", "one-1-0-e", check=False)
    bad = t.mismatches(VM1, tagged(forbidden_pass=False, allowed_pass=True), sniffer)
    assert not bad, "\n".join(bad)
    assert any("one-1-0-e" in d for d in api.verify(1)[0])
    api.attach(PLAIN)  # repairs the chain: tagged frames are dropped again, whatever their port
    assert api.verify(1) == {0: []}
    bad = t.mismatches(VM1, tagged(forbidden_pass=False, allowed_pass=False), sniffer)
    assert not bad, "\n".join(bad)


def test_updates_turning_spoofing_filters_off_and_on_keep_the_ethertype_chain(detached):
    """Spoofing filters off by an update: chain `a` and its jump go, `e` stays; on again: `a` is back."""
    sniffer = detached[PEER]

    def frames(forged_pass: bool) -> list[t.Probe]:
        forged = lambda tag: fr.ether(MAC[PEER], FORGED_MAC, *fr.ip_udp(IP4[VM1], IP4[PEER], ALLOWED["out"], tag))
        return [t.frame(forged, forged_pass, "a forged source MAC, to the allowed port"),
                t.frame(lambda tag: _ip(port=None)(VM1, PEER, tag), True, "the real MAC, to the allowed port"),
                t.frame(lambda tag: _ip(((Q, 5),), port=None)(VM1, PEER, tag), False, "802.1Q to the allowed port")]

    def chains() -> list[str]:
        return [line for line in lab_mod.rules("one-1", "ebtables-save") if "one-1-0-" in line]

    api.attach(SPOOFING)
    bad = t.mismatches(VM1, frames(forged_pass=False), sniffer)
    api.update(PLAIN)
    assert api.verify(1) == {0: []}
    assert not [line for line in chains() if "one-1-0-a" in line]
    bad += t.mismatches(VM1, frames(forged_pass=True), sniffer)
    api.update(SPOOFING)
    assert api.verify(1) == {0: []}
    assert "-A FORWARD -i one-1-0 -j one-1-0-a" in chains()
    bad += t.mismatches(VM1, frames(forged_pass=False), sniffer)
    assert not bad, "\n".join(bad)


# --- neighbour discovery with an extension header ----------------------------------------------------------------


def _shifted(address: str, mac: str) -> bytes:
    """Destination Options data that puts `address` at bytes 48-63 and `mac` at 66-71 of the IPv6 packet, where
    the ND checks read an NA/NS target and its first link-layer option when no extension header is present.

    The header is 32 bytes (offsets 40-71), its option data starts at 44; the real ND message starts at 72.
    """
    return bytes(4) + ipaddress.IPv6Address(address).packed + bytes(2) + fr.mac(mac)


def _nd(build: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    return lambda tag: fr.ether(MAC[PEER], MAC[VM1], fr.ETH_IP6, build(tag))


def _neighbour(address: str) -> str:
    return sh("ip", "-n", PEER, "neigh", "show", address, "dev", "eth0").stdout.strip()


def _known(address: str, mac: str) -> None:
    """The peer knows address at mac (stale, so that an advertisement with override may change it)."""
    sh("ip", "-n", PEER, "neigh", "replace", address, "lladdr", mac, "dev", "eth0", "nud", "stale")


#: (why, packet builder, the address whose neighbour entry the frame would change, the MAC it would set)
POISON = [
    ("NA for another VM's address, the NIC's own address where the target check reads",
     lambda tag: fr.neighbour_advert(IP6[VM1], IP6[PEER], VICTIM, MAC[VM1], tag, _shifted(IP6[VM1], MAC[VM1])),
     VICTIM, MAC[VM1]),
    ("NA for its own address at a forged MAC, the real MAC where the option check reads",
     lambda tag: fr.neighbour_advert(IP6[VM1], IP6[PEER], IP6[VM1], FORGED_MAC, tag,
                                     _shifted(IP6[VM1], MAC[VM1])),
     IP6[VM1], FORGED_MAC),
    ("NS with a forged source link-layer option, the real MAC where the option check reads",
     lambda tag: fr.neighbour_solicit(IP6[VM1], IP6[PEER], IP6[PEER], FORGED_MAC, tag,
                                      _shifted(IP6[VM1], MAC[VM1])),
     IP6[VM1], FORGED_MAC),
]


def _poisoned(sniffer: fr.Sniffer, attached: bool, cases: list = POISON) -> list[str]:
    """Send each of the cases (POISON's form) from VM 1 (expected through only when not attached); describe every
    outcome that differs, in delivery and in the peer's neighbour cache."""
    bad = []
    for why, build, address, mac in cases:
        _known(VICTIM, VICTIM_MAC)
        _known(IP6[VM1], MAC[VM1])
        bad += t.mismatches(VM1, [t.frame(_nd(build), not attached, why)], sniffer)
        if _at(address, mac, wait=not attached) == attached:
            bad.append(f"{why}: peer's entry {_neighbour(address)!r} (expected {'no ' if attached else ''}"
                       f"change to {mac})")
    return bad


def _at(address: str, mac: str, wait: bool) -> bool:
    """Whether the peer's entry for address holds mac; wait: give it up to traffic.PATIENCE to get there."""
    deadline = time.monotonic() + (t.PATIENCE if wait else 0)
    while f"lladdr {mac} " not in _neighbour(address) + " ":
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _truthful(sniffer: fr.Sniffer, cases: list[tuple[str, Callable[[bytes], bytes]]]) -> list[str]:
    """Send each (why, packet builder) from VM 1 while the peer has VM 1 at a forged MAC: each must pass and put VM
    1's real MAC back in the peer's cache."""
    bad = []
    for why, build in cases:
        _known(IP6[VM1], FORGED_MAC)
        bad += t.mismatches(VM1, [t.frame(_nd(build), True, why)], sniffer)
        if not _at(IP6[VM1], MAC[VM1], wait=True):
            bad.append(f"{why}: did not update the peer's cache: {_neighbour(IP6[VM1])!r}")
    return bad


def test_nd_with_an_extension_header_cannot_shift_the_checks(detached):
    """A Destination Options header moves the real ND message 32 bytes on; the checks must not read its data."""
    try:
        bad = _poisoned(detached[PEER], attached=False)  # control: the kernel takes them, and the cache changes
        assert not bad, "not attached yet, yet:\n" + "\n".join(bad)
        api.attach(SPOOFING)
        bad = _poisoned(detached[PEER], attached=True)
        # ... while a plain, truthful NA still passes and still updates the cache
        plain = lambda tag: fr.neighbour_advert(IP6[VM1], IP6[PEER], IP6[VM1], MAC[VM1], tag)
        bad += _truthful(detached[PEER], [("plain NA for its own address at its own MAC", plain)])
        assert not bad, "\n".join(bad)
    finally:
        for address in (VICTIM, IP6[VM1]):
            sh("ip", "-n", PEER, "neigh", "del", address, "dev", "eth0", check=False)


# --- every link-layer option of an ND message (issue 19) ---------------------------------------------------------

LL_SOURCE, LL_TARGET = 1, 2
NONCE = bytes([14, 1]) + bytes.fromhex("4e46504e4f4e")  # RFC 7527's nonce option, which a Linux DAD probe carries


def _na(*options: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """An NA from VM 1 for its own address with these options, in order (each made from the probe's tag)."""
    return lambda tag: fr.neighbour_advert(IP6[VM1], IP6[PEER], IP6[VM1], MAC[VM1], tag,
                                           options=tuple(o(tag) for o in options))


def _ns(*options: Callable[[bytes], bytes], src: str = IP6[VM1], target: str = IP6[PEER]
        ) -> Callable[[bytes], bytes]:
    """An NS from VM 1 (src) to the peer for target with these options, in order (each made from the tag)."""
    return lambda tag: fr.neighbour_solicit(src, IP6[PEER], target, MAC[VM1], tag,
                                            options=tuple(o(tag) for o in options))


def _ll(kind: int, mac: str) -> Callable[[bytes], bytes]:
    return lambda tag: fr.lladdr_option(kind, mac)


TAG = fr.tag_option
OPTIONS_POISON = [
    ("NA [source option: its own MAC][target option: a forged MAC][tag]: the cache takes the target option",
     _na(_ll(LL_SOURCE, MAC[VM1]), _ll(LL_TARGET, FORGED_MAC), TAG), IP6[VM1], FORGED_MAC),
    ("NA [tag][target option: a forged MAC]: a forged second option",
     _na(TAG, _ll(LL_TARGET, FORGED_MAC)), IP6[VM1], FORGED_MAC),
    ("NS [tag][source option: a forged MAC]: a forged second option",
     _ns(TAG, _ll(LL_SOURCE, FORGED_MAC)), IP6[VM1], FORGED_MAC),
]
OPTIONS_TRUTHFUL = [
    ("NA [target option: its own MAC][tag]", _na(_ll(LL_TARGET, MAC[VM1]), TAG)),
    ("NA [tag][target option: its own MAC]: the second option is read, not refused",
     _na(TAG, _ll(LL_TARGET, MAC[VM1]))),
    ("NS [source option: its own MAC][tag]", _ns(_ll(LL_SOURCE, MAC[VM1]), TAG)),
]


def _rs(*options: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """An RS from VM 1 to all routers (ff02::2) with these options."""
    return lambda tag: fr.ether("33:33:00:00:00:02", MAC[VM1], fr.ETH_IP6,
                                fr.router_solicit(IP6[VM1], "ff02::2", tuple(o(tag) for o in options)))


def _delivered(attached: bool) -> list[t.Probe]:
    """Messages whose fate shows in delivery only (the peer's cache would not take them): expected through only
    when not attached, but for the truthful ones."""
    return [
        t.frame(_nd(_ns(_ll(LL_SOURCE, MAC[VM1]), TAG, TAG)), not attached,
                "NS [source option: its own MAC][tag][tag]: a third option"),
        t.frame(_nd(_ns(_ll(LL_SOURCE, FORGED_MAC), TAG, src="::", target=IP6[VM1])), not attached,
                "DAD probe (from ::) with a source option: a forged MAC"),
        t.frame(_rs(TAG, _ll(LL_SOURCE, FORGED_MAC)), not attached, "RS [tag][source option: a forged MAC]"),
        t.frame(_nd(_ns(lambda tag: NONCE, TAG, src="::", target=IP6[VM1])), True,
                "DAD probe (from ::) [nonce][tag], as Linux sends it"),
        t.frame(_rs(_ll(LL_SOURCE, MAC[VM1]), TAG), True, "RS [source option: its own MAC][tag]"),
    ]


def test_every_link_layer_option_of_nd_must_carry_the_nics_mac(detached):
    """The kernel takes the first link-layer option of each type wherever it stands among the options: each one
    that the VM sends must carry its MAC, and a third option drops the message (issue 19)."""
    sniffer = detached[PEER]
    try:
        bad = _poisoned(sniffer, attached=False, cases=OPTIONS_POISON)  # control: the cache takes the forged MAC
        bad += t.mismatches(VM1, _delivered(attached=False), sniffer)
        assert not bad, "not attached yet, yet:\n" + "\n".join(bad)
        api.attach(SPOOFING)
        bad = _poisoned(sniffer, attached=True, cases=OPTIONS_POISON)
        bad += t.mismatches(VM1, _delivered(attached=True), sniffer)
        bad += _truthful(sniffer, OPTIONS_TRUTHFUL)
        assert not bad, "\n".join(bad)
    finally:
        for address in (VICTIM, IP6[VM1]):
            sh("ip", "-n", PEER, "neigh", "del", address, "dev", "eth0", check=False)


# --- DHCP and DHCPv6 server messages (issue 19) ------------------------------------------------------------------

SG0_SPOOFING = dataclasses.replace(SPOOFING, rules=None)  # everything allowed: only the guards drop
BROADCAST, DHCP6_SERVERS = "ff:ff:ff:ff:ff:ff", ("ff02::1:2", "33:33:00:01:00:02")


def _udp(dst_mac: str, src: str, dst: str, sport: int, dport: int) -> Callable[[bytes], bytes]:
    """A UDP datagram from VM 1's MAC (the tag its payload)."""
    return lambda tag: fr.udp_frame(MAC[VM1], dst_mac, src, dst, dport, tag, sport)


def _dhcp(servers_pass: bool) -> list[t.Probe]:
    """DHCP(v6) messages from VM 1: a server's (to a client's port, from the server's port or any other) pass only
    when servers_pass; a client's own (to a server's port) always."""
    own_link_local = str(guards.link_local(MAC[VM1]))
    return [
        t.frame(_udp(BROADCAST, IP4[VM1], "255.255.255.255", 67, 68), servers_pass, "DHCP offer, broadcast, port 67"),
        t.frame(_udp(BROADCAST, IP4[VM1], "255.255.255.255", 6767, 68), servers_pass,
                "DHCP offer, broadcast, from port 6767"),
        t.frame(_udp(MAC[PEER], IP4[VM1], IP4[PEER], 6767, 68), servers_pass, "DHCP ack, unicast, from port 6767"),
        t.frame(_udp(MAC[PEER], IP6[VM1], IP6[PEER], 547, 546), servers_pass, "DHCPv6 reply from port 547"),
        t.frame(_udp(MAC[PEER], IP6[VM1], IP6[PEER], 5470, 546), servers_pass, "DHCPv6 reply from port 5470"),
        t.frame(_udp(BROADCAST, "0.0.0.0", "255.255.255.255", 68, 67), True, "DHCP discover: VM 1 is a client"),
        t.frame(_udp(MAC[PEER], IP4[VM1], IP4[PEER], 68, 67), True, "DHCP renewal, unicast to a server"),
        t.frame(_udp(DHCP6_SERVERS[1], own_link_local, DHCP6_SERVERS[0], 546, 547), True,
                "DHCPv6 solicit to all servers"),
    ]


def test_dhcp_server_messages_pass_only_from_a_router_nic_whatever_their_source_port(detached):
    """A DHCP client takes what reaches port 68 (DHCPv6: 546) from any source port (issue 19)."""
    sniffer = detached[PEER]
    bad = t.mismatches(VM1, _dhcp(servers_pass=True), sniffer)
    assert not bad, "not attached yet, yet:\n" + "\n".join(bad)
    api.attach(SG0_SPOOFING)
    bad = t.mismatches(VM1, _dhcp(servers_pass=False), sniffer)
    api.update(dataclasses.replace(SG0_SPOOFING, router=True))
    bad += t.mismatches(VM1, _dhcp(servers_pass=True), sniffer)
    assert not bad, "\n".join(bad)


#: VM 1's ND link-layer chain as netfw loaded it before issue 19: a message without options, or whose first option
#: carries the MAC's bytes (0x278, 0x1: 02:78:00:00:00:01, whatever the option's type), returns.
EARLIER_L = ['-A one-1-0-l -m u32 ! --u32 "0x4&0xff00=0x3a00" -j one-1-0-d',
             *(f'-A one-1-0-l -p ipv6-icmp -m icmp6 --icmpv6-type {kind} -m u32 --u32 "{u32}" -j RETURN'
               for kind, start, bare in ((133, 0x30, 0x8), (135, 0x40, 0x18), (136, 0x40, 0x18))
               for u32 in (f"0x4>>0x10=0x{bare:x}", f"0x{start:x}&0xffff=0x278&&0x{start + 4:x}=0x1")),
             "-A one-1-0-l -j one-1-0-d"]
#: The DHCP server guards before issue 19 (on the server's source port), as they replace today's lines.
EARLIER_DHCP = {"ip": ("--dport 68 ", "--sport 67 "), "ip6": ("--dport 546 ", "--sport 547 ")}
DAD_TO_L = "-A one-1-0-o -s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j one-1-0-l"


def _load_earlier_guards() -> None:
    """Turn VM 1's live chains into what netfw loaded before issue 19 (its `o` chains and ND chain `l`)."""
    for family, (now, earlier) in EARLIER_DHCP.items():
        out = [line.replace(now, earlier) for line in lab_mod.rules("one-1", f"{family}tables-save")
               if line.startswith("-A one-1-0-o ") and line != DAD_TO_L]
        body = [":one-1-0-o - [0:0]", *out]
        if family == "ip6":
            body = [":one-1-0-l - [0:0]", *body, *EARLIER_L]
        sh(*t.in_ns("one-1", f"{family}tables-restore", "--noflush"), stdin=tables.restore_text(family, body))


def test_an_update_moves_a_nic_with_the_earlier_guards_to_these(detached):
    """A NIC attached before issue 19 keeps its rules until an update; verify names the chains that changed, and
    after the update they are today's: verify is clean, and what they drop is dropped."""
    sniffer = detached[PEER]
    offer = lambda expect: t.frame(_udp(BROADCAST, IP4[VM1], "255.255.255.255", 6767, 68), expect,
                                   "DHCP offer, broadcast, from port 6767")
    try:
        api.attach(SG0_SPOOFING)
        assert api.verify(1) == {0: []}
        _load_earlier_guards()
        drift = api.verify(1)[0]
        assert {m.groups() for d in drift if (m := re.match(r"one-1: (\S+) chain (\S+) differs", d))} == {
            ("iptables", "one-1-0-o"), ("ip6tables", "one-1-0-o"), ("ip6tables", "one-1-0-l")}, drift
        assert len(drift) == 3, drift
        # the earlier rules are in force: the findings' frames get through
        bad = t.mismatches(VM1, [offer(True)], sniffer)
        bad += _poisoned(sniffer, attached=False, cases=OPTIONS_POISON[:1])
        assert not bad, "the earlier rules are not what was loaded:\n" + "\n".join(bad)
        api.update(SG0_SPOOFING)
        assert api.verify(1) == {0: []}
        bad = t.mismatches(VM1, _dhcp(servers_pass=False), sniffer)
        bad += _poisoned(sniffer, attached=True, cases=OPTIONS_POISON)
        assert not bad, "\n".join(bad)
    finally:
        for address in (VICTIM, IP6[VM1]):
            sh("ip", "-n", PEER, "neigh", "del", address, "dev", "eth0", check=False)
