"""`netfw metrics`: every attached VM's counters, conntrack table and NIC health in Prometheus's text exposition
format (version 0.0.4), for node_exporter's textfile collector (`--output`, written atomically). Read-only, but for
the output file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from netfw.kernel import cache
from . import health, status
from netfw.model import names
from .counters import DIRECTIONS, REASONS
from netfw.rules.render import security_rules
from netfw.runner import CommandError

#: name -> (type, help); the order of the output.
METRICS = {
    "netfw_packets_total": ("counter", "Packets a VM NIC's firewall accepted or dropped (direction inbound: to the "
                                       "VM); since the NIC's rules were last loaded."),
    "netfw_bytes_total": ("counter", "Bytes a VM NIC's firewall accepted or dropped."),
    "netfw_dropped_packets_total": ("counter", "Packets a VM NIC's firewall dropped, by reason (no_rule: no security-"
                                               "group rule matched; anti_spoofing; conntrack_cap; invalid; "
                                               "ethertype: a frame other than untagged IPv4, IPv6, ARP)."),
    "netfw_dropped_bytes_total": ("counter", "Bytes a VM NIC's firewall dropped, by reason."),
    "netfw_rule_packets_total": ("counter", "Packets a security-group rule matched: the packets that opened flows "
                                            "(rule: its number among the NIC's rules, from 1)."),
    "netfw_rule_bytes_total": ("counter", "Bytes of the packets a security-group rule matched."),
    "netfw_rule_info": ("gauge", "A security-group rule of a NIC, in words (always 1)."),
    "netfw_conntrack_entries": ("gauge", "Conntrack entries in the VM's namespace (all its NICs)."),
    "netfw_conntrack_max": ("gauge", "The VM's conntrack cap: the sum of its NICs' --conntrack-max."),
    "netfw_nic_health": ("gauge", "1 for the NIC's health (attached, drift, stale, orphan, error), 0 for the others "
                                  "(nic=\"\": a namespace one-<VM> without a NIC)."),
}


def _escape(value: object) -> str:
    """A label value as the exposition format wants it: backslash, double quote and line feed escaped."""
    if isinstance(value, int):  # most labels (vm, nic, rule, sg): nothing to escape
        return str(value)
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, labels: dict[str, object], value: int | float) -> str:
    """One sample line. Pure."""
    inner = ",".join(f'{key}="{_escape(v)}"' for key, v in labels.items())
    return f"{name}{{{inner}}} {value}"


def _nic_samples(vm: int, nic: status.NicStatus, out: dict[str, list[str]]) -> None:
    h, c = nic.health, nic.counters
    where = {"vm": vm, "nic": "" if h.nic is None else h.nic}
    for state in health.HEALTHS:
        out["netfw_nic_health"].append(sample("netfw_nic_health", {**where, "health": state}, int(h.health == state)))
    if c is None:
        return
    for direction in DIRECTIONS:
        for verdict, counts in (("accepted", c.accepted), ("dropped", c.dropped)):
            labels = {**where, "direction": direction, "verdict": verdict}
            out["netfw_packets_total"].append(sample("netfw_packets_total", labels, counts[direction].packets))
            out["netfw_bytes_total"].append(sample("netfw_bytes_total", labels, counts[direction].bytes))
        for reason in REASONS:
            labels = {**where, "direction": direction, "reason": reason}
            count = c.drops[direction][reason]
            out["netfw_dropped_packets_total"].append(sample("netfw_dropped_packets_total", labels, count.packets))
            out["netfw_dropped_bytes_total"].append(sample("netfw_dropped_bytes_total", labels, count.bytes))
    for number, rule in enumerate(security_rules(h.applied.spec), start=1):
        labels = {**where, "sg": "" if rule.sg_id is None else rule.sg_id, "rule": number}
        count = c.rules.get(number)
        packets = count.packets if count else 0
        out["netfw_rule_packets_total"].append(sample("netfw_rule_packets_total", labels, packets))
        out["netfw_rule_bytes_total"].append(sample("netfw_rule_bytes_total", labels, count.bytes if count else 0))
        out["netfw_rule_info"].append(sample("netfw_rule_info", {**labels, "text": status.describe(rule)}, 1))


def _vm_status(vm: int, healths: list[health.Health], state_dir: str | Path | None) -> status.VmStatus:
    """The VM's counters; when they cannot be read, its NICs in health `error` without counters."""
    try:
        return status.vm_status_of(vm, healths, state_dir)
    except CommandError as e:
        for h in healths:
            h.health, h.problems = "error", [f"could not read its counters: {e}"]
        return status.VmStatus(vm, [status.NicStatus(h) for h in healths])
    finally:
        reads = cache.active()
        if reads is not None:  # counted: the VM's saves are not needed again
            reads.forget(names.netns(vm), saves=True)


def _counted(vm: int, healths: list[health.Health], early: status.VmStatus | None,
             state_dir: str | Path | None) -> status.VmStatus:
    """The VM's status: counted early (its counters given to the same NICs, the others without), or now."""
    if early is None:
        return _vm_status(vm, healths, state_dir)
    found = {id(n.health): n.counters for n in early.nics}  # the very Health objects survey returned
    return status.VmStatus(vm, [status.NicStatus(h, found.get(id(h))) for h in healths], early.conntrack)


def collect(state_dir: str | Path | None = None) -> tuple[str, list[str]]:
    """(the exposition text, what could not be read). Read-only.

    A NIC whose record or counters cannot be read is reported with health `error` (and no counters), never as
    missing or zero. The kernel is read once per namespace (cache.reads(): verify's saves are the counters'), the
    VMs in parallel (cache.each)."""
    out: dict[str, list[str]] = {name: [] for name in METRICS}
    errors: list[str] = []
    by_vm: dict[int, list[health.Health]] = {}
    early: dict[int, status.VmStatus] = {}

    def count(vm: int, healths: list[health.Health]) -> None:
        """A VM counted while the others are read (health._as_read); on an error it is counted again below."""
        try:
            early[vm] = status.vm_status_of(vm, healths, state_dir)
        except CommandError:
            pass
        finally:
            cache.active().forget(names.netns(vm), saves=True)

    with cache.reads():
        for h in health.survey(state_dir, counting=True, count=count):
            by_vm.setdefault(h.vm, []).append(h)
        vms = sorted(by_vm.items())
        statuses = cache.each(vms, lambda item: _counted(*item, early.get(item[0]), state_dir))
    for (vm, healths), vm_status in zip(vms, statuses):
        errors += [f"VM {vm} NIC {n.health.nic}: {p}" for n in vm_status.nics if n.health.health == "error"
                   for p in n.health.problems]
        for nic in vm_status.nics:
            _nic_samples(vm, nic, out)
        if vm_status.conntrack is not None:
            out["netfw_conntrack_entries"].append(sample("netfw_conntrack_entries", {"vm": vm},
                                                         vm_status.conntrack["count"]))
            if vm_status.conntrack["max"] is not None:  # None: a record of the VM cannot be read (its NIC: error)
                out["netfw_conntrack_max"].append(sample("netfw_conntrack_max", {"vm": vm},
                                                         vm_status.conntrack["max"]))
    lines = []
    for name, (kind, text) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *out[name]]
    lines.append("")  # the last line's break, without a second copy of the text
    return "\n".join(lines), errors


def write_atomically(path: str | Path, text: str) -> None:
    """Replace path with text in one rename: a reader (node_exporter) sees the old file or the new, never a part.

    The temporary file is made next to path (same filesystem) with O_EXCL and a name node_exporter ignores (not
    *.prom), readable by all (node_exporter runs as its own user), synced before the rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
