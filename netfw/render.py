"""Pure rendering: a NicSpec becomes the rules of its chains, per family, in the *-save tools' canonical form.

Rendering exactly what `iptables-save` (`ip6tables-save`, `ebtables-save`, nft backend) prints lets `verify` compare
live rules with a plain equality, and lets a repeated attach see that nothing needs loading. The canonical facts
(checked by tests/integration/test_render_canonical.py): `-s/-d` come before `-p`, addresses carry `/32` or `/128`,
`-p udp --sport` gains `-m udp`, `-p icmp --icmp-type` gains `-m icmp`, ICMPv6 is `-p ipv6-icmp -m icmp6`, conntrack
states print as `RELATED,ESTABLISHED`, MACs print lower-case with two digits per byte, and multiport refuses `p:p`.

Per NIC and family the chains are `one-<VM>-<NIC>-i` (to the VM) and `-o` (from the VM), `-c` (the conntrack cap,
which every new flow a security-group rule accepts goes through), `-p` (log and drop a new flow whose source holds
its share of the cap), plus `-s` (the NIC's own source addresses) when IP spoofing is filtered, in IPv6 `-t` and `-l`
(ND targets and link-layer options), and `-d` (log and drop what anti-spoofing refuses) with any spoofing filter; for
ebtables `-e` (the ethertypes that may cross the tap, always), `-a` (ARP and Ethernet anti-spoofing) and `-d`.

Observability (netfw status, metrics, log) reads this layout back: each security-group rule's lines carry the
comment `sg <SG> rule <n>` (n counts the NIC's rules from 1), every DROP has one reason (the final DROP of `-i`/`-o`:
no rule matched; `-c` and `-p`: the conntrack cap; `-d`: anti-spoofing; ebtables `-e`: ethertype; `--ctstate
INVALID`), and right before each reason's DROP an NFLOG rule, rate-limited in the kernel, logs to the NIC's group (see
`drop`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from . import names, script, values
from .model import IPSET_THRESHOLD, InputError, NicSpec, Rule
from .rules import matches_nothing, peers

#: Tool prefixes: `iptables-restore`, `ip6tables-restore`; and "eb" (`ebtables-restore`), which every NIC has too.
FAMILIES = ("ip", "ip6")
EB = "eb"
VERSION = {"ip": 4, "ip6": 6}
IPSET_FAMILY = {4: "inet", 6: "inet6"}

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

_PROTO = {"ALL": "", "TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "ICMPV6": "ipv6-icmp", "IPSEC": "esp"}
#: Security group 0: everything allowed (statefully) both ways.
SG0 = (Rule("ALL", "INBOUND", sg_id=0), Rule("ALL", "OUTBOUND", sg_id=0))

#: Logging of dropped packets: per NIC and family (iptables, ip6tables: one hashlimit bucket shared by all the NIC's
#: log rules; ebtables: each log rule) at most LOG_RATE packets a second after a burst of LOG_BURST, so that logging
#: cannot become a denial-of-service vector itself. Only packets on their way to a DROP meet a log rule. A hashlimit
#: table keeps the settings of the first rule that made it while any rule names it: every log rule of a NIC uses
#: the same ones.
LOG_RATE = 10
LOG_BURST = 10
#: Why a packet was dropped, as log prefixes and status name it.
NO_RULE, SPOOFING, CAP, ETHERTYPE = "no-rule", "spoofing", "cap", "ethertype"
_PREFIX_RE = re.compile(r"netfw nic=(\d{1,3}) dir=(in|out) why=(no-rule|spoofing|cap|ethertype)")


@dataclass(frozen=True)
class FamilyRules:
    """One family's share of a NIC's firewall: its chains (in order) and the FORWARD jumps that reach them."""

    family: str  # "ip", "ip6" or "eb": the tool is f"{family}tables-restore"
    chains: dict[str, tuple[str, ...]]  # chain name -> its rules, each "-A <chain> ..."
    jumps: tuple[str, ...]  # "-A FORWARD ..." lines (PREROUTING for the raw table)
    table: str = "filter"
    # Lines an earlier netfw put in the parent chain for this NIC and this one must take out (NIC 0's zone rule).
    retired: tuple[str, ...] = ()


@dataclass(frozen=True)
class IpsetSpec:
    """One hash:net ipset holding the peer blocks of one rule in one family."""

    name: str  # the name iptables rules reference
    family: str  # "inet" or "inet6"
    members: tuple[str, ...]  # CIDR blocks, e.g. "10.0.0.8/29" (`ipset list` prints host blocks without /32)
    temporary_name: str  # the name it is built under before being swapped in


@dataclass(frozen=True)
class Ruleset:
    """Everything loaded into the VM namespace for one NIC."""

    families: tuple[FamilyRules, ...]
    ipsets: tuple[IpsetSpec, ...] = field(default=())

    def family(self, family: str) -> FamilyRules:
        return next(f for f in self.families if f.family == family)


def render(spec: NicSpec) -> Ruleset:
    """The complete ruleset of one NIC. Pure: runs nothing (the spec validated itself when it was made)."""
    ipsets: list[IpsetSpec] = []
    families = [_family(spec, family, ipsets) for family in FAMILIES]
    families.append(_ebtables(spec))
    return Ruleset(tuple(families), tuple(ipsets))


def zone(spec: NicSpec) -> int:
    """The NIC's conntrack zone in the VM namespace: its flows are tracked (and can be deleted) apart from others'.

    NIC 0 is in the namespace's default zone 0, which needs no rule: a VM's only NIC (the usual case) costs no raw
    table, which would add a netfilter hook and a CT target to every packet in the namespace. NIC n > 0 is in zone
    n + 1: zone 1 is where earlier netfw put NIC 0, so no two NICs share a zone while rules of both ages coexist.
    """
    return 0 if spec.nic == 0 else spec.nic + 1


#: The zone NIC 0 had before it moved to the default zone; its rule goes at NIC 0's next update or detach.
RETIRED_ZONE = 1


def zones(spec: NicSpec) -> tuple[FamilyRules, ...]:
    """raw-table rule that puts every packet crossing the NIC's firewall bridge (either way) in the NIC's zone; none
    for NIC 0 (zone 0), whose rule of an earlier netfw is retired instead.

    In PREROUTING br_netfilter shows a bridged packet as coming in on the bridge, and each NIC has its own bridge:
    one interface match per packet, no physdev match.
    """
    bridge = names.bridge(spec.vm, spec.nic)
    line = f"-A PREROUTING -i {bridge} -j CT --zone {{}}"
    if spec.nic == 0:
        return tuple(FamilyRules(f, {}, (), table="raw", retired=(line.format(RETIRED_ZONE),)) for f in FAMILIES)
    return tuple(FamilyRules(f, {}, (line.format(zone(spec)),), table="raw") for f in FAMILIES)


def chain_name(spec: NicSpec, role: str) -> str:
    """A per-NIC chain: 'i', 'o' (names.chain), 'c' (conntrack cap), 'p' (its drops by source), 'd' (anti-spoofing
    drops), 's' (own sources), 't' (ND targets), 'l' (ND link-layer options), 'e' or 'a' (ebtables: ethertypes,
    anti-spoofing); at most 20 characters."""
    if role in ("i", "o"):
        return names.chain(spec.vm, spec.nic, role)
    return names.chain(spec.vm, spec.nic, "i")[: -len("i")] + role


def jumps(spec: NicSpec) -> tuple[str, ...]:
    """FORWARD → the NIC's chains, matched on the tap as a bridge port (physdev)."""
    i, o = chain_name(spec, "i"), chain_name(spec, "o")
    return (
        f"-A FORWARD -m physdev --physdev-out {spec.tap} --physdev-is-bridged -j {i}",
        f"-A FORWARD -m physdev --physdev-in {spec.tap} --physdev-is-bridged -j {o}",
    )


# --- iptables / ip6tables -------------------------------------------------------------------------------------


def _family(spec: NicSpec, family: str, ipsets: list[IpsetSpec]) -> FamilyRules:
    """The i/o (and s, t, l) chains of one IP family; appends the ipsets its rules need."""
    version = VERSION[family]
    i, o, c, d = (chain_name(spec, role) for role in "iocd")
    inbound = [*_discovery(i, version, ND_INBOUND)]
    outbound = [*_guards(spec, o, version)]
    chains = {i: inbound, o: outbound}
    for chain in (i, o):
        chains[chain] += _stateful(chain)
    for index, rule in enumerate(security_rules(spec), start=1):
        chain = i if rule.direction == "INBOUND" else o
        chains[chain] += _rule_lines(spec, chain, version, index, rule, ipsets)
    for chain, direction in ((i, "in"), (o, "out")):
        chains[chain] += drop(spec, family, chain, direction, NO_RULE)
    chains.update(_cap(spec, family, c))
    if spec.filter_ip:
        s = chain_name(spec, "s")
        chains[s] = [*(f"-A {s} -s {a} -j RETURN" for a in own_addresses(spec, version)), f"-A {s} -j {d}"]
    if version == 6:
        chains.update(_nd_chains(spec))
    if spec.filter_mac or spec.filter_ip:
        # Last: an update that drops the spoofing filters deletes stale chains in this order, and `d` can only be
        # deleted once no chain jumps to it.
        chains[d] = drop(spec, family, d, "out", SPOOFING)
    return FamilyRules(family, {name: tuple(lines) for name, lines in chains.items()}, jumps(spec))


def security_rules(spec: NicSpec) -> tuple[Rule, ...]:
    """The NIC's security-group rules as rendered: its own, or security group 0's. Rule n (from 1) is the n-th."""
    return SG0 if spec.rules is None else spec.rules


def log_group(spec: NicSpec) -> int:
    """The NIC's NFLOG group in its VM namespace (groups are per namespace): one reader per NIC."""
    return spec.nic + 1


def log_prefix(nic: int, direction: str, reason: str) -> str:
    """The NFLOG prefix of the NIC's log rules: which NIC, which way ('in': to the VM), why it was dropped."""
    return f"netfw nic={nic} dir={direction} why={reason}"


def parse_log_prefix(text: str) -> tuple[int, str, str] | None:
    """(nic, direction, reason) from a prefix log_prefix() wrote, else None. Pure."""
    m = _PREFIX_RE.fullmatch(text)
    return (int(m[1]), m[2], m[3]) if m else None


def drop(spec: NicSpec, family: str, chain: str, direction: str, reason: str, match: str = "") -> list[str]:
    """A DROP for one reason, with the rate-limited NFLOG rule right before it (`match`: the condition of both).

    Only packets on their way to this DROP meet the log rule, so accepted traffic never pays for it; with no reader
    bound to the group the kernel discards the logged copy at its first lookup. iptables: one hashlimit bucket
    shared by the NIC's log rules of the family (hashlimit tables are per name, namespace and family).
    """
    prefix, group = log_prefix(spec.nic, direction, reason), log_group(spec)
    if family == EB:
        return [f"-A {chain}{match} --limit {LOG_RATE}/sec --limit-burst {LOG_BURST} --nflog-prefix \"{prefix}\""
                f" --nflog-group {group} -j CONTINUE", f"-A {chain}{match} -j DROP"]
    limit = (f"-m hashlimit --hashlimit-upto {LOG_RATE}/sec --hashlimit-burst {LOG_BURST} "
             f"--hashlimit-name {names.limit_name(spec.vm, spec.nic)}")
    return [f"-A {chain}{match} {limit} -j NFLOG --nflog-prefix \"{prefix}\" --nflog-group {group}",
            f"-A {chain}{match} -j DROP"]


#: What one source of flows to the VM is, for its share of the cap (connlimit's mask): an IPv4 address, an IPv6 /64
#: (one host's, as a host picks its addresses within its /64).
SOURCE_PREFIX = {"ip": 32, "ip6": 64}


def source_share(spec: NicSpec) -> int:
    """How many of the NIC's flows of a family one source may hold open to the VM: half the cap, so that a flood from
    one source leaves the other half to everyone else (issue 19, 7)."""
    return max(spec.conntrack_max // 2, 1)


def _cap(spec: NicSpec, family: str, c: str) -> dict[str, list[str]]:
    """The conntrack cap (chain `c`, and `p` for its drops by source): a flow a security-group rule accepts is counted
    on its first packet, and dropped (before its entry is confirmed, so it takes no room) while the NIC's zone holds
    `conntrack_max` flows of the family, or, for a flow to the VM, while its source holds half of them.

    Each family gets the whole cap: the kernel counts IPv4 and IPv6 apart (one connlimit rule per family, each
    counting the NIC's zone), so an IPv4-only VM can open `conntrack_max` flows, and a NIC's zone holds at most
    twice that when both families are flooded. One chain for both directions, so that one connlimit rule (one count)
    sees the NIC's every new flow of the family. Only a flow's first packet is counted: with `--ctstate NEW` alone,
    every packet of an unreplied UDP flow would walk the zone's list of flows (measured 10 kpps instead of 136:
    docs/benchmarks/conntrack_cap.md). Flows the security group drops never get here, so they cannot fill the
    count. The source's share comes first: a flood over it walks only its source's list, and never reaches the
    NIC's. Flows the VM opens have no share (the VM is their source). Drops are logged with their direction.
    """
    into = f" -m physdev --physdev-out {spec.tap} --physdev-is-bridged"
    p = chain_name(spec, "p")
    return {
        c: [
            f"-A {c} -m conntrack --ctstatus CONFIRMED -j ACCEPT",
            f"-A {c}{into} -m connlimit --connlimit-above {source_share(spec)} --connlimit-mask "
            f"{SOURCE_PREFIX[family]} --connlimit-saddr -j {p}",
            f"-A {c} -m connlimit --connlimit-upto {spec.conntrack_max} --connlimit-mask 0 --connlimit-saddr"
            " -j ACCEPT",
            *drop(spec, family, c, "in", CAP, into),
            *drop(spec, family, c, "out", CAP),
        ],
        p: drop(spec, family, p, "in", CAP, into),
    }


def _discovery(chain: str, version: int, types: tuple[int, ...]) -> list[str]:
    """Neighbour and router discovery, which IPv6 needs whatever the security groups say."""
    if version != 6:
        return []
    return [f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in types]


def _icmp6(chain: str, kind: int, rest: str) -> str:
    return f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {kind} {rest}"


def _guards(spec: NicSpec, o: str, version: int) -> list[str]:
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
        lines += _discovery(o, version, ND_OUTBOUND)
    return lines


def _u32_words(data: bytes, offset: int) -> str:
    """A u32 condition that the 4-byte-aligned words of data stand at offset, as iptables-save prints it."""
    words = [int.from_bytes(data[k:k + 4], "big") for k in range(0, len(data), 4)]
    return "&&".join(f"0x{offset + 4 * k:x}=0x{w:x}" for k, w in enumerate(words))


def _nd_chains(spec: NicSpec) -> dict[str, list[str]]:
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


def _stateful(chain: str) -> list[str]:
    return [
        f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {chain} -m conntrack --ctstate INVALID -j DROP",
    ]


def _rule_lines(
    spec: NicSpec, chain: str, version: int, index: int, rule: Rule, ipsets: list[IpsetSpec]
) -> list[str]:
    """The lines of security-group rule number `index` in this family (none if it cannot match here); each carries
    the rule's comment (rule_comment) and goes to the conntrack cap, which accepts."""
    if matches_nothing(rule) or not _applies(rule, version):
        return []
    blocks = peers(rule)  # within the caps: NicSpec counted them (Rule.blocks) before anything was expanded
    inbound = rule.direction == "INBOUND"
    proto = f" -p {_PROTO[rule.protocol]}" if _PROTO[rule.protocol] else ""
    tail = f'{_match(rule)} -m comment --comment "{rule_comment(index, rule)}" -j {chain_name(spec, "c")}'
    if len(blocks) > IPSET_THRESHOLD:
        ipset = _ipset(spec, "i" if inbound else "o", index, version, blocks)
        ipsets.append(ipset)
        return [f"-A {chain}{proto} -m set --match-set {ipset.name} {'src' if inbound else 'dst'}{tail}"]
    side = "-s" if inbound else "-d"
    return [f"-A {chain} {side} {block}{proto}{tail}" for block in blocks] or [f"-A {chain}{proto}{tail}"]


def rule_comment(index: int, rule: Rule) -> str:
    """The comment on the lines of the NIC's rule number `index`: `sg 100 rule 3` (`rule 3` without a group).

    It lets status and metrics find each rule's counters in `iptables-save -c`, whatever number of lines (one per
    peer block, one ipset line, none) the rule became, and shows in `iptables -L`. Free at run time with the nft
    backend (comments are rule metadata); one always-true match with legacy, met only by a flow's first packets.
    """
    return f"rule {index}" if rule.sg_id is None else f"sg {rule.sg_id} rule {index}"


_COMMENT_RE = re.compile(r'-m comment --comment "(?:sg \d+ )?rule (\d+)"')


def rule_index(line: str) -> int | None:
    """The rule number of a line carrying rule_comment()'s comment, else None. Pure."""
    m = _COMMENT_RE.search(line)
    return int(m[1]) if m else None


def _applies(rule: Rule, version: int) -> bool:
    """A rule reaches a family if its protocol exists there and its peers (if any) are of that family."""
    if (rule.protocol, version) in (("ICMP", 6), ("ICMPV6", 4)):
        return False
    return rule.ip is None or values.address(rule.ip).version == version


def _match(rule: Rule) -> str:
    """Ports or ICMP type, as iptables-save prints them (RANGE is the VM-side port in, the remote port out)."""
    if rule.ports:
        return f" -m multiport --dports {rule.ports}"
    if rule.icmp_type is not None:
        if rule.protocol == "ICMP":
            return f" -m icmp --icmp-type {rule.icmp_type}"
        return f" -m icmp6 --icmpv6-type {rule.icmp_type}"
    return ""


def _ipset(spec: NicSpec, direction: str, index: int, version: int, blocks: tuple) -> IpsetSpec:
    return IpsetSpec(
        name=names.ipset(spec.vm, spec.nic, direction, index, version),
        family=IPSET_FAMILY[version],
        members=tuple(str(b) for b in blocks),
        temporary_name=names.ipset(spec.vm, spec.nic, direction, index, version, temporary=True),
    )


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


def _ebtables(spec: NicSpec) -> FamilyRules:
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


def restore_text(rules: FamilyRules, *, with_jumps: bool = True) -> str:
    """Input for `<family>tables-restore --noflush`: declaring a chain flushes it, so this reloads the chains whole.

    The FORWARD jumps are appended, not replaced: pass with_jumps=False when they are already in place.
    """
    policy = "RETURN" if rules.family == EB else "- [0:0]"  # ebtables user chains carry a policy
    lines = ["*filter", *(f":{chain} {policy}" for chain in rules.chains)]
    for chain_rules in rules.chains.values():
        lines += chain_rules
    if with_jumps:
        lines += rules.jumps
    return script.join([*lines, "COMMIT"])


def ipset_restore_text(sets: tuple[IpsetSpec, ...] | list[IpsetSpec], *, temporary: bool = False,
                       flush: bool | None = None) -> str:
    """Input for `ipset restore` creating the sets; temporary: under their temporary names; flush (default: when
    temporary): empty each set first.

    A set may be left over from an interrupted run: with flush, run `ipset restore -exist` so that `create` accepts
    it and `flush` empties it (never merged). Without, sets are created as they are and fail if they already exist.
    """
    flush = temporary if flush is None else flush
    lines = []
    for s in sets:
        name = s.temporary_name if temporary else s.name
        lines.append(f"create {name} hash:net family {s.family}")
        if flush:
            lines.append(f"flush {name}")
        lines += (f"add {name} {member}" for member in s.members)
    return script.join(lines)
