"""`netfw gc`: forget what no longer has a VM, and take away what no record accounts for.

After a host reboot the state directory describes namespaces that are gone (stale records); after a crash or an
operator's mistake, kernel objects may be left without a record (orphans), a killed run leaves a journal, and a VM
that ended without OpenNebula's clean leaves its NICs half torn down: the tap gone with QEMU, netfw's namespace,
bridge and veth end left (health drift), the veth end holding the tap's name, so that the VM could not start here
again. gc detaches each of those NICs (netfw.api.detach: the tap, if netfw still holds it, goes back to its VN bridge first,
and a namespace that still holds a link netfw did not make is never deleted), and deletes a namespace `one-<VM>`
that holds nothing but lo only when a journal of netfw's names that VM. It never touches a link without netfw's alias.

Each VM is decided under its lock, from what is read then: a first look without the lock only says which VMs to look
at, since an attach, update or detach running meanwhile holds the lock and looks half-done (a journal, netfw's
objects without a record, an empty namespace). Under the lock a journal is a killed run's: flocks die with their
holder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from netfw import api, runner
from netfw.kernel import bulk, cache, probe
from . import gc_bulk, health
from netfw.model import names
from netfw import state
from netfw.errors import InputError
from netfw.state.fs import StateError
from netfw.transaction import TransactionError


@dataclass
class Item:
    """One thing gc removed (or, in a dry run, would remove), or could not."""

    vm: int
    nic: int | None
    health: str  # what survey() found: stale, orphan, or "interrupted" (a journal)
    done: list[str] = field(default_factory=list)  # what was (would be) removed
    error: str | None = None  # why it was left as it is

    def as_dict(self) -> dict:
        return {"vm": self.vm, "nic": self.nic, "health": self.health, "removed": self.done, "error": self.error}


def _detach(records: state.StateDir, vm: int, nic: int, what: str, dry_run: bool) -> Item:
    item = Item(vm, nic, what)
    try:
        outcome = api.detach_locked(records, vm, nic, dry_run=dry_run)
    except (InputError, runner.CommandError, TransactionError) as e:
        item.error = str(e).splitlines()[0]
        return item
    item.done = outcome.commands if dry_run else outcome.changed
    return item


def _bare(vm: int, journaled: bool, dry_run: bool) -> Item | None:
    """A namespace one-<VM> with no link of netfw's in it: deleted only when empty and netfw's journal names it."""
    ns = names.netns(vm)
    if not probe.netns_exists(ns):  # a detach above took it with the VM's last NIC
        return None
    item = Item(vm, None, "orphan")
    held = [n for n in probe.links(ns) if n != "lo"]
    if held:
        item.error = f"{ns} holds {', '.join(sorted(held))}, links netfw did not make: left alone"
    elif not journaled:
        item.error = f"{ns} is empty, but no journal of netfw's names it: left alone (ip netns del {ns})"
    else:
        item.done = [f"ip netns del {ns}"]
        if not dry_run:
            runner.run(["ip", "netns", "del", ns])
    return item


def _journals(records: state.StateDir, vm: int) -> set[int] | None:
    """The NICs of VM vm with a journal (a run that did not finish); None when netfw refuses the VM's directory
    (survey reports it as that VM's error, and gc leaves the VM alone)."""
    try:
        return set(records.nics(vm, intents=True))
    except StateError:
        return None


def _tap_gone(h: health.Health) -> bool:
    """A recorded NIC whose tap is gone (its VM is: QEMU's exit destroys the tap inside netfw's namespace): not in
    the namespace, and its name in the hypervisor namespace free or held by netfw's own veth end of the NIC. Its
    objects would keep the VM from starting again here (the veth end holds the tap's name)."""
    if h.applied is None or h.nic is None:
        return False
    spec = h.applied.spec
    if spec.tap in probe.links(names.netns(h.vm), [spec.tap]):
        return False
    host = probe.links(None, [spec.tap]).get(spec.tap)
    return host is None or probe.alias_of(host) == (h.vm, h.nic, names.VETH_HOST)


def _decide(records: state.StateDir, vm: int, state_dir: str | Path | None) -> tuple[dict[int, str], bool, bool]:
    """Under VM vm's lock, from what is read now: its stale, orphan, interrupted NICs and those whose tap is gone
    (nic -> why), whether its namespace is an orphan without a NIC, whether a journal names the VM."""
    journals = _journals(records, vm)
    if journals is None:
        return {}, False, False
    try:
        found = health.survey(state_dir, vm, verify=False)  # attached or drift is all one to gc: not verified
    except InputError:  # netfw knows nothing of the VM any more
        found = []
    keys = {h.nic: h.health for h in found if h.health in ("stale", "orphan") and h.nic is not None}
    keys.update({h.nic: "tap gone" for h in found if h.health == health.UNVERIFIED and _tap_gone(h)})
    for nic in journals:
        keys.setdefault(nic, "interrupted")
    bare = any(h.nic is None and h.health == "orphan" for h in found)
    return keys, bare, bool(journals)


def _collect_vm(records: state.StateDir, vm: int, decided: tuple[dict[int, str], bool, bool],
                dry_run: bool) -> list[Item]:
    """Still under VM vm's lock: detach the NICs _decide found and delete its empty namespace, as they are now."""
    keys, bare, journaled = decided
    items = [_detach(records, vm, nic, what, dry_run) for nic, what in sorted(keys.items())]
    if bare:
        item = _bare(vm, journaled, dry_run)
        items += [item] if item else []
    return items


#: VMs decided together, under all their locks at once, from one read of the hypervisor namespace's links (with 1,000
#: VMs half torn down, one read per VM made gc quadratic in the VM count). Locks are taken in VM order, as by every
#: gc; attach, update and detach take one VM's lock at a time: no deadlock.
BATCH = 64


def collect(state_dir: str | Path | None = None, dry_run: bool = False) -> list[Item]:
    """Detach every stale, orphan or interrupted NIC, and every NIC whose tap is gone; delete netfw's empty
    namespaces. Returns what was done."""
    with state.opened(state_dir, create=False) as records:
        if records.fd is None:  # a mistyped --state-dir: every attached NIC would look like an orphan
            raise InputError(f"state directory {records.path} does not exist: without its records gc would take "
                             "every VM's firewall for an orphan and remove it")
        journaled = {vm for vm in records.vms() if _journals(records, vm)}
        with cache.reads():  # a first look, without locks: which VMs to decide under their locks
            suspects = sorted({h.vm for h in health.survey(state_dir, verify=False) if h.health in ("stale", "orphan")
                               or h.health == health.UNVERIFIED and _tap_gone(h)} | journaled)
        items: list[Item] = []
        for start in range(0, len(suspects), BATCH):
            batch = suspects[start:start + BATCH]
            with contextlib.ExitStack() as held:
                for vm in batch:  # a dry run takes no lock: it creates nothing
                    held.enter_context(api.locked(records, vm, dry_run))
                with cache.reads():  # read under the batch's locks, shared by its VMs; nothing changes meanwhile
                    bulk.prefetch([probe.ip(names.netns(vm), "-j", "-d", "link", "show") for vm in batch
                                   if probe.netns_exists(names.netns(vm))])  # the batch's namespaces in one process
                    decided = dict(zip(batch, cache.each(batch, lambda vm: _decide(records, vm, state_dir))))
                    plans = [] if dry_run else [p for vm in batch if (p := gc_bulk.planned(records, vm, decided[vm]))]
                done = gc_bulk.teardown(records, plans)  # a VM it did not finish: detached NIC by NIC
                found = {vm: [Item(vm, nic, "tap gone", removed) for nic, removed in nics] for vm, nics in done.items()}
                alone = [vm for vm in batch if vm not in done]
                removal = lambda vm: _collect_vm(records, vm, decided[vm], dry_run)  # noqa: E731
                # a dry run records the commands of one detach at a time (runner.recording is process-wide)
                found.update(zip(alone, [removal(vm) for vm in alone] if dry_run else cache.each(alone, removal)))
                items += [item for vm in batch for item in found[vm]]
        return items
