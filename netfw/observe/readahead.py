"""What a survey of the VMs will ask each VM namespace, asked of many namespaces at once (netfw/kernel/bulk.py): the
very commands the probes run, so that the probes then take their answers instead of starting a process each.
Whatever is not asked here is read by its probe alone, as before: this only saves processes, it decides nothing."""

from __future__ import annotations

from netfw.kernel import cache, probe
from netfw.kernel.backend import FAMILIES, tool
from netfw.model import names
from netfw.state.records import Applied, StateError
from netfw.steps.netns import SYSCTLS
from . import counters


def commands(vms: list[int], recorded: dict[tuple[int, int], Applied | StateError], verify: bool,
             counting: bool) -> list[list[str]]:
    """For each VM's namespace: its links (unless already read); when verified, for a VM with records, its saves
    (every family, of each backend its NICs use), its sysctls and each NIC's FDB entries on its firewall bridge; when
    counting (the status of a VM, metrics), its conntrack count."""
    applied: dict[int, list[tuple[int, Applied]]] = {}
    for (vm, nic), found in recorded.items():
        if isinstance(found, Applied):
            applied.setdefault(vm, []).append((nic, found))
    out, reads = [], cache.active()
    for vm in vms:
        ns = names.netns(vm)
        if reads is None or ns not in reads.links:
            out.append(probe.ip(ns, "-j", "-d", "link", "show"))
        if not verify or vm not in applied:
            continue
        out += [probe.in_netns(ns, tool(f, "save", a.backend), "-c") for _, a in applied[vm] for f in FAMILIES]
        out.append(probe.sysctls_argv(ns, list(SYSCTLS)))
        out += [probe.fdb_argv(ns, names.bridge(vm, nic), a.spec.tap) for nic, a in applied[vm]]
        if counting:
            out.append(counters.conntrack_count_argv(ns))
    return out
