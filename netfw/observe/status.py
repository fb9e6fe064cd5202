"""`netfw status`: every NIC netfw knows with its health (health.py), or one VM's NICs with what the kernel counted
for them (counters.py): accepted and dropped packets per direction, drops by reason, each security-group rule's
matches, and the VM's conntrack table against its cap. Read-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from netfw.kernel import cache, probe
from . import counters, health
from netfw.model import names
from netfw import state
from netfw.errors import InputError
from .counters import DIRECTIONS, REASONS, NicCounters
from netfw.model.spec import Rule
from netfw.rules.render import security_rules
from netfw.model.rules import matches_nothing, peers


def describe(rule: Rule) -> str:
    """A security-group rule in one line: `TCP inbound ports 22,80:90 from 10.0.0.0/24`. Pure."""
    words = [rule.protocol, rule.direction.lower()]
    if rule.ports:
        words.append(f"port{'s' if ',' in rule.ports or ':' in rule.ports else ''} {rule.ports}")
    if rule.icmp_type is not None:
        words.append(f"type {rule.icmp_type}")
    if matches_nothing(rule):
        words.append("(matches nothing: empty peer range)")
    elif rule.ip is not None:
        blocks = peers(rule)
        size = 1 if rule.size is None else rule.size
        peer = str(blocks[0]) if len(blocks) == 1 else f"{rule.ip} and the next {size - 1} addresses"
        words.append(("from " if rule.direction == "INBOUND" else "to ") + peer)
    else:
        words.append("from anywhere" if rule.direction == "INBOUND" else "to anywhere")
    return " ".join(words)


@dataclass
class NicStatus:
    health: health.Health
    counters: NicCounters | None = None  # None: no record, or no namespace to count in

    def as_dict(self) -> dict:
        out = self.health.as_dict()
        applied, c = self.health.applied, self.counters
        if applied is not None:
            out["tap"] = applied.spec.tap
            out["conntrack_max"] = applied.spec.conntrack_max
        if c is None:
            return out
        for direction in DIRECTIONS:
            out[direction] = {"accepted": c.accepted[direction].as_dict(), "dropped": c.dropped[direction].as_dict()}
        out["drops"] = {reason: c.reason_total(reason).as_dict() for reason in REASONS}
        out["rules"] = [
            {"rule": n, "sg": rule.sg_id, "text": describe(rule), **c.rules.get(n, counters.Count()).as_dict()}
            for n, rule in enumerate(security_rules(applied.spec), start=1)
        ]
        return out


@dataclass
class VmStatus:
    vm: int
    nics: list[NicStatus] = field(default_factory=list)
    conntrack: dict | None = None  # {"count": entries in the VM's table, "max": the sum of its NICs' caps or None}

    @property
    def ok(self) -> bool:
        return health.all_attached([n.health for n in self.nics])

    def as_dict(self) -> dict:
        return {"vm": self.vm, "ok": self.ok, "conntrack": self.conntrack, "nics": [n.as_dict() for n in self.nics]}


def vm_status(vm: int, nic: int | None = None, state_dir: str | Path | None = None) -> VmStatus:
    """One VM's NICs (or one NIC): health and counters; the VM's conntrack table. Read-only.

    InputError when netfw knows nothing of the VM (or NIC); a failed read raises CommandError (never "absent").
    Health and counters come from one read of the VM's namespace (cache.reads())."""
    with cache.reads():
        return vm_status_of(vm, health.survey(state_dir, vm, nic, counting=True), state_dir)


def vm_status_of(vm: int, healths: list[health.Health], state_dir: str | Path | None = None) -> VmStatus:
    """VM vm's status for NICs whose health is known: their counters and the VM's conntrack table. Read-only."""
    out = VmStatus(vm, [NicStatus(h) for h in healths])
    ns = names.netns(vm)
    # Counters only where the NIC's rules are in the kernel: a stale NIC would read as zeros, not as unknown.
    recorded = [n for n in out.nics if n.health.applied is not None and n.health.health in ("attached", "drift")]
    if not probe.netns_exists(ns) or not recorded:
        return out
    saves = counters.read(ns, {n.health.applied.backend for n in recorded})
    for n in recorded:
        n.counters = counters.nic_counters(n.health.applied.spec, saves[n.health.applied.backend])
    out.conntrack = {"count": counters.conntrack_count(ns), "max": vm_cap(vm, state_dir)}
    return out


def vm_cap(vm: int, state_dir: str | Path | None = None) -> int | None:
    """The most conntrack entries the VM's table may hold: the sum of its recorded NICs' caps; None (unknown) when
    one of its records cannot be read (that NIC's health says why)."""
    with state.opened(state_dir, create=False) as records:
        try:
            return sum(records.load(vm, n).spec.conntrack_max for n in records.nics(vm))
        except InputError:  # StateError included
            return None


# --- the human form ------------------------------------------------------------------------------------------------


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(c: dict) -> str:
    return f"{c['packets']} pkt / {_size(c['bytes'])}"


def _table(rows: list[list[str]], indent: str = "") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def host_lines(healths: list[health.Health]) -> list[str]:
    """`netfw status` as a table: VM, NIC, health, what is wrong."""
    if not healths:
        return ["netfw knows no VM NIC (no state record, no namespace one-<VM>, no link with its alias)"]
    rows = [["VM", "NIC", "HEALTH", "PROBLEMS"]]
    for h in healths:
        nic = "-" if h.nic is None else str(h.nic)
        rows.append([str(h.vm), nic, h.health, h.problems[0] if h.problems else ""])
        rows += [["", "", "", p] for p in h.problems[1:]]
    return _table(rows)


_REASON_WORDS = {"no_rule": "no rule matched", "invalid": "invalid", "conntrack_cap": "conntrack cap",
                 "anti_spoofing": "anti-spoofing", "ethertype": "ethertype"}


def vm_lines(status: VmStatus) -> list[str]:
    """`netfw status VM` as tables: per NIC its health, traffic per direction, drops by reason, rules."""
    data = status.as_dict()
    ct = data["conntrack"]
    cap = "an unknown cap (a record cannot be read)" if ct and ct["max"] is None else ct and ct["max"]
    lines = [f"VM {status.vm}: " + (f"conntrack {ct['count']} of {cap} entries" if ct else "no namespace")]
    for nic in data["nics"]:
        lines.append("")
        label = f"NIC {nic['nic']}" if nic["nic"] is not None else "namespace"
        lines.append(f"{label}: {nic['health']}" + (f" (tap {nic['tap']})" if "tap" in nic else ""))
        lines += [f"  - {p}" for p in nic["problems"]]
        if "inbound" not in nic:
            continue
        rows = [["DIRECTION", "ACCEPTED", "DROPPED"]]
        rows += [[d, _count(nic[d]["accepted"]), _count(nic[d]["dropped"])] for d in DIRECTIONS]
        lines += _table(rows, "  ")
        lines.append("  drops: " + ", ".join(f"{_REASON_WORDS[r]} {nic['drops'][r]['packets']}" for r in REASONS))
        rows = [["RULE", "SG", "PACKETS", "BYTES", "TEXT"]]
        rows += [[str(r["rule"]), "-" if r["sg"] is None else str(r["sg"]), str(r["packets"]), _size(r["bytes"]),
                  r["text"]] for r in nic["rules"]]
        lines += _table(rows, "  ")
    return lines
