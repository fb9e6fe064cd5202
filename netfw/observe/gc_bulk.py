"""gc's teardown of many VMs at once, for the case a host meets after many VMs ended without OpenNebula's clean:
every NIC of a VM has lost its tap, and what is left is netfw's alone (its namespace, bridges and veth pairs).

A detach of one such NIC costs five processes, and its `ip link del` of the veth end waits for an RCU grace period of
its own (issue 22: 1,000 of them took 72 s). Here the VMs of one gc batch go together, under their locks, decided from
the batch's reads:
1. one `ip -force -batch -` deletes every VM's namespace: the kernel then destroys what was in it (the bridges, the
   rules, the conntrack table) and the veth pairs with both their ends, the hypervisor's included, for all the
   namespaces together, a moment later (30 namespaces: 50 ms, against 1.2 s for 30 `link del`);
2. gc waits until those veth ends are gone (at most WAIT seconds), reading them by name: they hold the taps' names,
   which a VM started again here needs;
3. a VM whose namespace and veth ends are gone loses its records; any other is left to the detach of each of its
   NICs (netfw.api.detach_locked).
Nothing is written before the batch: every state a killed run can leave is one gc recognises and finishes from the
records and the kernel (the same VMs with their taps gone; or records whose objects are gone or going: stale).

A VM qualifies only when nothing else could be touched: no dry run (it lists each detach's commands), every NIC of
its records is one whose tap is gone, no journal (an interrupted run: its own detach resumes it), its ports on Linux
bridges (an Open vSwitch port is also a record in OVSDB, which a detach deletes), its namespace readable and holding
nothing but lo and those NICs' own bridges and veth ends (a namespace deleted destroys every link in it), and in the
hypervisor namespace no link with the VM's alias but those NICs' veth ends under the tap's name or their staging name.
"""

from __future__ import annotations

import re
import time
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
    host: dict[str, int]  # veth end -> its NIC


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
    host = {}
    for name, (of, nic, role) in owned.host_tags():
        if of != vm:
            continue
        if nic not in nics or role != names.VETH_HOST or name not in (nics[nic].spec.tap, names.veth_host(vm, nic)):
            return None
        host[name] = nic
    return Teardown(vm, nics, host)


#: How long gc waits for the kernel to destroy the veth ends of the namespaces it deleted (seconds).
WAIT = 10.0


def teardown(records: state.StateDir, plans: list[Teardown]) -> dict[int, list[tuple[int, list[str]]]]:
    """Tear the VMs of plans down together (see the module's docstring), under their locks. Returns {vm: [(nic,
    what was removed)]} of the VMs done; the others are left to a detach of each NIC."""
    if not plans:
        return {}
    logger.info("gc: {} VMs whose taps are gone, in bulk: {}", len(plans), " ".join(names.netns(p.vm) for p in plans))
    try:
        runner.run(["ip", "-force", "-batch", "-"], stdin=script.join(f"netns del {names.netns(p.vm)}" for p in plans))
    except runner.CommandError as e:  # what was done is read again below: the VMs not done are detached one by one
        logger.warning("gc: deleting the namespaces in bulk reported a failure; reading what is left: {}", e)
    gone = [p for p in plans if not probe.netns_exists(names.netns(p.vm))]
    left = _until_gone([name for p in gone for name in p.host])
    done: dict[int, list[tuple[int, list[str]]]] = {}
    for p in gone:
        if left & p.host.keys():
            continue
        done[p.vm] = []
        for nic, applied in p.nics.items():
            removed = [f"veth end {name} on {applied.port.bridge}" for name, of in p.host.items() if of == nic]
            records.write(p.vm, nic, None)
            done[p.vm].append((nic, [f"namespace {names.netns(p.vm)} with the NIC's bridge and veth pair", *removed,
                                     f"state record {records.record_path(p.vm, nic)}"]))
    rest = [p.vm for p in plans if p.vm not in done]
    if rest:
        logger.warning("gc: {} VMs not torn down in bulk, each NIC detached alone: {}", len(rest),
                       " ".join(map(str, rest)))
    return done


#: What `ip link show dev X` says of a link destroyed between ip's lookup of its name and its request: the kernel
#: destroying a namespace's veth ends while gc reads them. Never read as "absent": the names are read again.
_VANISHING = re.compile(r"RTNETLINK answers: No such device|Cannot send link get request: No such device|"
                        r"Command failed -:\d+")


def _until_gone(ends: list[str]) -> set[str]:
    """Wait until no link of the hypervisor namespace is named as in ends (read by name, fail closed), WAIT seconds at
    most; the names still there then."""
    deadline, pause = time.monotonic() + WAIT, 0.01
    while ends:
        try:
            ends = sorted(probe.links(None, ends))
        except runner.CommandError as e:
            lines = [line.strip() for line in e.stderr.splitlines() if line.strip()]
            if not lines or not all(_VANISHING.fullmatch(line) for line in lines) or time.monotonic() > deadline:
                raise
        if not ends or time.monotonic() > deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
    return set(ends)
