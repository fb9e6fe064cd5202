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

from __future__ import annotations

import re

from netfw.model import names, values
from . import script
from .chains import (CAP, EB, FAMILIES, IPSET_FAMILY, NO_RULE, SPOOFING, VERSION, FamilyRules, IpsetSpec, Ruleset,
                     chain_name, drop, jumps)
from .guards import ND_INBOUND, discovery, ebtables, nd_chains, outbound_guards, own_addresses
from netfw.model.spec import IPSET_THRESHOLD, NicSpec, Rule
from netfw.model.rules import matches_nothing, peers

_PROTO = {"ALL": "", "TCP": "tcp", "UDP": "udp", "ICMP": "icmp", "ICMPV6": "ipv6-icmp", "IPSEC": "esp"}
#: Security group 0: everything allowed (statefully) both ways.
SG0 = (Rule("ALL", "INBOUND", sg_id=0), Rule("ALL", "OUTBOUND", sg_id=0))


def render(spec: NicSpec) -> Ruleset:
    """The complete ruleset of one NIC. Pure: runs nothing (the spec validated itself when it was made)."""
    ipsets: list[IpsetSpec] = []
    families = [_family(spec, family, ipsets) for family in FAMILIES]
    families.append(ebtables(spec))
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


# --- iptables / ip6tables -------------------------------------------------------------------------------------


def _family(spec: NicSpec, family: str, ipsets: list[IpsetSpec]) -> FamilyRules:
    """The i/o (and s, t, l) chains of one IP family; appends the ipsets its rules need."""
    version = VERSION[family]
    i, o, c, d = (chain_name(spec, role) for role in "iocd")
    inbound = [*discovery(i, version, ND_INBOUND)]
    outbound = [*outbound_guards(spec, o, version)]
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
        chains.update(nd_chains(spec))
    if spec.filter_mac or spec.filter_ip:
        # Last: an update that drops the spoofing filters deletes stale chains in this order, and `d` can only be
        # deleted once no chain jumps to it.
        chains[d] = drop(spec, family, d, "out", SPOOFING)
    return FamilyRules(family, {name: tuple(lines) for name, lines in chains.items()}, jumps(spec))


def security_rules(spec: NicSpec) -> tuple[Rule, ...]:
    """The NIC's security-group rules as rendered: its own, or security group 0's. Rule n (from 1) is the n-th."""
    return SG0 if spec.rules is None else spec.rules


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
