"""What the kernel counted for a NIC: packets and bytes accepted and dropped per direction, drops by reason, and each
security-group rule's matches, read back from `*tables-save -c` by the layout render.py makes.

Every packet that enters a NIC's chain `-i` (inbound, to the VM) or `-o` (outbound) ends in exactly one verdict:
an ACCEPT of that chain, a security-group rule (whose conntrack cap `-c` then accepts it, or drops it), or a DROP
with one reason (render.py's module docstring lists them). So "accepted" is the sum of the chain's ACCEPT and
security-group lines less the cap's drops of that direction, and "dropped" the sum of its DROPs, the cap's, the
anti-spoofing chain `-d`'s (all outbound: it judges what the VM sends) and ebtables' (`-e`: ethertypes both ways,
`-d`: ARP and MAC spoofing). Accepted counts IP packets; a frame ebtables lets through (ARP) is not counted.

A rule's counters count the packets it matched, i.e. the packets that opened flows (a flow's later packets are
accepted by the RELATED,ESTABLISHED rule in front). An update reloads the NIC's chains, and the kernel then starts
their counters from zero (both backends; docs/benchmarks/conntrack_cap.md, e): the counters are those of the
rules in force since the last attach or update that changed them.

Parsing is pure; read() runs one save per family in the VM namespace.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netfw.kernel import cache, probe
from netfw import runner
from netfw.kernel.backend import tool
from netfw.model.spec import NicSpec
from netfw.rules.chains import EB, FAMILIES, chain_name
from netfw.rules.render import rule_index

DIRECTIONS = ("inbound", "outbound")
#: Why packets were dropped, as status and metrics name it.
REASONS = ("no_rule", "invalid", "conntrack_cap", "anti_spoofing", "ethertype")

#: `[packets:bytes] -A chain ...`, as `iptables-save -c` (both backends) and `ebtables-save -c` print a rule.
_COUNTED = re.compile(r"\[(\d+):(\d+)\] (-A (\S+) .*)")

Saved = dict[str, list[tuple[str, int, int]]]  # chain -> its rules in order: (the "-A ..." line, packets, bytes)


@dataclass
class Count:
    """Packets and bytes."""

    packets: int = 0
    bytes: int = 0

    def add(self, packets: int, bytes_: int) -> None:
        self.packets += packets
        self.bytes += bytes_

    def as_dict(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes}


def _by(keys: tuple) -> dict:
    return {k: Count() for k in keys}


@dataclass
class NicCounters:
    """A NIC's counters (both IP families together)."""

    accepted: dict[str, Count] = field(default_factory=lambda: _by(DIRECTIONS))
    dropped: dict[str, Count] = field(default_factory=lambda: _by(DIRECTIONS))
    drops: dict[str, dict[str, Count]] = field(
        default_factory=lambda: {d: _by(REASONS) for d in DIRECTIONS})  # direction -> reason -> count
    rules: dict[int, Count] = field(default_factory=dict)  # rule number (from 1) -> what its lines matched

    def drop(self, direction: str, reason: str, packets: int, bytes_: int) -> None:
        self.dropped[direction].add(packets, bytes_)
        self.drops[direction][reason].add(packets, bytes_)

    def reason_total(self, reason: str) -> Count:
        """A reason's drops over both directions."""
        total = Count()
        for direction in DIRECTIONS:
            total.add(self.drops[direction][reason].packets, self.drops[direction][reason].bytes)
        return total


def parse_counters(text: str, table: str = "filter") -> Saved:
    """The counted rules of table `table` in `*tables-save -c` output, by chain. Pure."""
    saved: Saved = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("*"):
            inside = line == f"*{table}"
            continue
        m = _COUNTED.fullmatch(line) if inside else None
        if m:
            saved.setdefault(m[4], []).append((m[3], int(m[1]), int(m[2])))
    return saved


def _target(line: str) -> str:
    """The target of an "-A ..." line (what follows the last ` -j `; prefixes and comments hold none)."""
    return line.rsplit(" -j ", 1)[-1].split(" ", 1)[0] if " -j " in line else ""


def nic_counters(spec: NicSpec, saves: dict[str, Saved]) -> NicCounters:
    """The NIC's counters from the saves of its VM namespace ({'ip'|'ip6'|'eb': parse_counters(...)}). Pure."""
    out = NicCounters()
    cap, by_source, spoofing = chain_name(spec, "c"), chain_name(spec, "p"), chain_name(spec, "d")
    for family in FAMILIES:
        chains = saves.get(family, {})
        for role, direction in (("i", "inbound"), ("o", "outbound")):
            for line, packets, bytes_ in chains.get(chain_name(spec, role), []):
                target = _target(line)
                if target in ("ACCEPT", cap):
                    out.accepted[direction].add(packets, bytes_)
                    number = rule_index(line)
                    if number is not None:
                        out.rules.setdefault(number, Count()).add(packets, bytes_)
                elif target == "DROP":
                    out.drop(direction, "invalid" if "--ctstate INVALID" in line else "no_rule", packets, bytes_)
        for line, packets, bytes_ in chains.get(cap, []) + chains.get(by_source, []):
            if _target(line) == "DROP":  # the cap's inbound DROPs name the tap as the way out
                direction = "inbound" if "--physdev-out" in line else "outbound"
                out.drop(direction, "conntrack_cap", packets, bytes_)
                accepted = out.accepted[direction]  # they were counted on their security-group rule's line
                accepted.packets, accepted.bytes = max(accepted.packets - packets, 0), max(accepted.bytes - bytes_, 0)
        _spoofing_drops(out, chains.get(spoofing, []))
    layer2 = saves.get(EB, {})
    for line, packets, bytes_ in layer2.get(chain_name(spec, "e"), []):
        if _target(line) == "DROP":
            out.drop("outbound" if " -i " in line else "inbound", "ethertype", packets, bytes_)
    _spoofing_drops(out, layer2.get(spoofing, []))
    return out


def _spoofing_drops(out: NicCounters, lines: list[tuple[str, int, int]]) -> None:
    for line, packets, bytes_ in lines:
        if _target(line) == "DROP":
            out.drop("outbound", "anti_spoofing", packets, bytes_)


def save_argv(ns: str, family: str, backend: str) -> list[str]:
    """`<family>tables-save -c -t filter` inside ns (the NIC's backend; ebtables has one)."""
    return probe.in_netns(ns, tool(family, "save", backend), "-c", "-t", "filter")


def read(ns: str, backends: set[str]) -> dict[str, dict[str, Saved]]:
    """{backend: {family: counted rules}} of the VM namespace: one save per family and backend in use (a VM's NICs
    may have been attached with different backends). Safe to repeat; raises CommandError if a save fails. Within
    cache.reads(), the namespace's saves that verify read already (probe.counted_save)."""
    found: dict[str, dict[str, Saved]] = {}
    eb = parse_counters(_counted(ns, EB, "auto"))
    for how in sorted(backends):
        found[how] = {family: parse_counters(_counted(ns, family, how)) for family in FAMILIES}
        found[how][EB] = eb
    return found


def _counted(ns: str, family: str, backend: str) -> str:
    if cache.active() is not None:
        return probe.counted_save(ns, family, backend)  # every table: parse_counters picks filter
    return runner.run(save_argv(ns, family, backend)).stdout


def conntrack_count_argv(ns: str) -> list[str]:
    return probe.in_netns(ns, "sysctl", "-n", "net.netfilter.nf_conntrack_count")


def conntrack_count(ns: str) -> int:
    """The number of conntrack entries in the VM namespace (all its NICs' zones). Raises CommandError."""
    text = cache.read(conntrack_count_argv(ns)).stdout.strip()
    if not text.isdigit():
        raise runner.refused("conntrack", f"{ns}: nf_conntrack_count reads {text!r}, not a number")
    return int(text)
