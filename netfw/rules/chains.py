"""The layout of a NIC's chains, shared by every family's rendering: the chain names, the rendered shapes, and the
one way a DROP is logged (rate-limited NFLOG right before it) that observability reads back. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netfw.model import names
from netfw.model.spec import NicSpec

#: Tool prefixes: `iptables-restore`, `ip6tables-restore`; and "eb" (`ebtables-restore`), which every NIC has too.
FAMILIES = ("ip", "ip6")
EB = "eb"
VERSION = {"ip": 4, "ip6": 6}
IPSET_FAMILY = {4: "inet", 6: "inet6"}

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


