"""gc's teardown of many VMs at once, for the case a host meets after many VMs ended without OpenNebula's clean:
every NIC of a VM has lost its tap, and what is left is netfw's alone (its namespace, bridges and veth pairs).

A detach of one such NIC costs five processes (issue 22: 1,000 of them took 72 s). Here the VMs of one gc batch go
together, under their locks, decided from the batch's reads:
1. each NIC's journal is written (a detach under way), so that a run killed at any point leaves what the next gc
   finishes: a NIC with a journal is collected as "interrupted", by a detach of its own;
2. one `ip -force -batch -` deletes every VM's veth ends in the hypervisor namespace (by name, each one checked to
   carry netfw's alias of its NIC) and then every VM's namespace (the bridges, the veth ends inside, the rules and
   the conntrack table go with it);
3. what the batch reported is not trusted, it is read again: a VM whose namespace and veth ends are all gone loses
   its records and journals; any other is left to the detach of each of its NICs (netfw.api.detach_locked), which
   resumes from the journal.

A VM qualifies only when nothing else could be touched: no dry run (it lists each detach's commands), every NIC of
its records is one whose tap is gone, no journal (an interrupted run: its own detach resumes it), its ports on Linux
bridges (an Open vSwitch port is also a record in OVSDB, which a detach deletes), its namespace readable and holding
nothing but lo and those NICs' own bridges and veth ends, and in the hypervisor namespace no link with the VM's alias
but those NICs' veth ends under the tap's name or their staging name.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger

from netfw import runner, state
from netfw.errors import InputError
from netfw.kernel import probe
from netfw.kernel.port import LINUX
from netfw.model import names
from netfw.rules import script
from netfw.state.fs import StateError
from netfw.state.records import Applied

from . import owned


@dataclass
class Teardown:
    """One VM's bulk teardown: its recorded NICs (all of them) and its veth ends in the hypervisor namespace."""

    vm: int
    nics: dict[int, Applied]
    host: list[str]


def planned(records: state.StateDir, vm: int, decided: tuple[dict[int, str], bool, bool]) -> Teardown | None:
    """VM vm's bulk teardown when it qualifies (see the module's docstring), else None. Read-only; to be called under
    the VM's lock, within the cache.reads() its decision was made in."""
    keys, bare, journaled = decided
    if not keys or bare or journaled or set(keys.values()) != {"tap gone"}:
        return None
    try:
        if set(records.nics(vm)) != set(keys):
            return None
        nics = {nic: records.load(vm, nic) for nic in sorted(keys)}
    except (StateError, InputError):
        return None
    if any(a is None or a.port is None or a.port.kind != LINUX for a in nics.values()):
        return None
    ns = names.netns(vm)
    try:
        inside = set(probe.links(ns)) - {"lo"} if probe.netns_exists(ns) else None
    except runner.CommandError:
        return None
    own = {name for nic in keys for name in (names.bridge(vm, nic), names.veth_fw(vm, nic))}
    if inside is None or not inside <= own:
        return None
    host = []
    for name, (of, nic, role) in owned.host_tags():
        if of != vm:
            continue
        if nic not in nics or role != names.VETH_HOST or name not in (nics[nic].spec.tap, names.veth_host(vm, nic)):
            return None
        host.append(name)
    return Teardown(vm, nics, host)


def teardown(records: state.StateDir, plans: list[Teardown]) -> tuple[dict[int, list[tuple[int, list[str]]]],
                                                                      list[int]]:
    """Tear the VMs of plans down together (see the module's docstring), under their locks. Returns ({vm: [(nic,
    what was removed)]} of the VMs done, [the VMs left to a detach of each NIC])."""
    if not plans:
        return {}, []
    logger.info("gc: {} VMs whose taps are gone, in bulk: {}", len(plans), " ".join(names.netns(p.vm) for p in plans))
    for p in plans:  # the journals first: a run killed from here on leaves "interrupted" NICs, each detached alone
        for nic, applied in p.nics.items():
            records.write(p.vm, nic, state.document(applied, "detach"), intent=True)
    lines = [f"link del {name}" for p in plans for name in p.host] + [f"netns del {names.netns(p.vm)}" for p in plans]
    try:
        runner.run(["ip", "-force", "-batch", "-"], stdin=script.join(lines))
    except runner.CommandError as e:  # what was done is read again below: the VMs not done are detached one by one
        logger.warning("gc: the bulk teardown reported a failure; reading what is left: {}", e)
    left = set(probe.links(None, [name for p in plans for name in p.host])) if any(p.host for p in plans) else set()
    done: dict[int, list[tuple[int, list[str]]]] = {}
    rest = []
    for p in plans:
        ns = names.netns(p.vm)
        if probe.netns_exists(ns) or left & set(p.host):
            rest.append(p.vm)
            continue
        done[p.vm] = []
        for nic, applied in p.nics.items():
            removed = [f"veth end {name} on {applied.port.bridge}" for name in p.host
                       if name in (applied.spec.tap, names.veth_host(p.vm, nic))]
            records.write(p.vm, nic, None)
            records.write(p.vm, nic, None, intent=True)
            done[p.vm].append((nic, [*removed, f"state record {records.record_path(p.vm, nic)}",
                                     f"namespace {ns} with what was left of the NIC"]))
    if rest:
        logger.warning("gc: {} VMs not torn down in bulk, each NIC detached alone: {}", len(rest),
                       " ".join(map(str, rest)))
    return done, rest
