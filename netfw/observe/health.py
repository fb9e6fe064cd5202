"""The health of every VM NIC netfw knows: from its state records and from the kernel objects that carry netfw's
alias (`netfw vm=<VM> nic=<NIC> role=...`), wherever they are, and the namespaces named `one-<VM>`.

| health   | what it means                                                                   | what to do            |
|----------|---------------------------------------------------------------------------------|-----------------------|
| attached | a record, and `netfw verify` finds everything as attach made it                 | nothing               |
| drift    | a record and kernel objects, but verify finds differences (listed)              | attach again, detach  |
| stale    | a record, and no kernel object of the NIC (after a reboot; a VM that vanished)  | attach again, detach  |
| orphan   | kernel objects (or a namespace one-<VM>) that no record accounts for            | detach                |
| error    | the record cannot be read, or a check failed (the message says which)           | see the message       |

Objects are found by their alias, not by name: names of the hypervisor-side links may change, an alias does not.
Read-only; safe to call at any time.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

from netfw import api, runner
from netfw.kernel import bulk, cache, probe
from . import readahead
from . import owned
from .owned import Objects
from netfw.model import names
from netfw import state
from netfw.errors import InputError
from netfw.state.records import Applied, StateError

HEALTHS = ("attached", "drift", "stale", "orphan", "error")
#: survey(verify=False)'s word for a recorded NIC with kernel objects: attached or drift, not checked (gc's first look).
UNVERIFIED = "unverified"


@dataclass
class Health:
    """One VM NIC (or, nic None, a namespace one-<VM> without any NIC in it) and its health."""

    vm: int
    nic: int | None
    health: str
    problems: list[str] = field(default_factory=list)
    applied: Applied | None = None  # the record, when it could be read

    def as_dict(self) -> dict:
        return {"vm": self.vm, "nic": self.nic, "health": self.health, "problems": self.problems}


def _records(records: state.StateDir, vms: list[int]) -> tuple[dict[tuple[int, int], Applied | StateError],
                                                                set[tuple[int, int]], dict[int, str]]:
    """Every record of the VMs, each read and validated (a bad one as its error); the NICs with a journal; the VMs
    whose directory of records netfw refuses, with why (their NICs are unknown)."""
    found: dict[tuple[int, int], Applied | StateError] = {}
    journals: set[tuple[int, int]] = set()
    refused: dict[int, str] = {}
    for vm in vms:
        try:
            nics, journaled = records.nics(vm), records.nics(vm, intents=True)
        except StateError as e:
            refused[vm] = str(e)
            continue
        journals |= {(vm, nic) for nic in journaled}
        for nic in nics:
            try:
                found[(vm, nic)] = records.load(vm, nic)
            except (StateError, InputError) as e:
                found[(vm, nic)] = StateError(str(e))
    return found, journals, refused


def _recorded(key: tuple[int, int], applied: Applied, seen: Objects, state_dir: str | Path | None,
              verify: bool = True) -> Health:
    vm, nic = key
    tap_inside = applied.spec.tap in seen.namespaces.get(vm, [])
    if key not in seen.links and not tap_inside:
        return Health(vm, nic, "stale", [f"no kernel object of VM {vm} NIC {nic} is left (after a reboot, or the "
                                         f"VM is gone): netfw attach repairs it, netfw detach {vm} {nic} forgets it"],
                      applied)
    return _verified(vm, nic, applied, state_dir) if verify else Health(vm, nic, UNVERIFIED, [], applied)


def _verified(vm: int, nic: int, applied: Applied, state_dir: str | Path | None) -> Health:
    """attached, drift, or error (a check could not be made) of a NIC that has kernel objects."""
    try:
        drift = api.verify(vm, nic, state_dir=state_dir)[nic]
    except (runner.CommandError, InputError) as e:  # a failed read, a record or an OVSDB value netfw refuses
        return Health(vm, nic, "error", [f"could not check it: {e}"], applied)
    return Health(vm, nic, "drift" if drift else "attached", drift, applied)


def _as_read(vms: list[int], recorded: dict, refused: dict[int, str], state_dir: str | Path | None,
             counting: bool, count: Callable[[int, list[Health]], None] | None = None
             ) -> tuple[dict[int, dict | runner.CommandError], dict[tuple[int, int], Health]]:
    """Read the VMs' namespaces in bulk (readahead) and verify each VM's recorded NICs in the thread that read its
    namespace, while other chunks are read, when its own objects show it is not stale (a link with its alias in the
    hypervisor namespace or its own, or its tap in its namespace: other namespaces can only add objects, so the
    whole survey could not find it stale either); then count(vm, healths) when all its recorded NICs are. Returns
    ({vm: its links' names and aliases, or the error reading them}, {(vm, nic): health}); what is left (a NIC that
    may be stale, a namespace not read) survey decides."""
    by_ns = {names.netns(v): v for v in vms}
    ahead: Future[None] = Future()  # resolved once the hypervisor's links are read (owned.beside_host)
    light: dict[int, dict | runner.CommandError] = {}
    done: dict[tuple[int, int], Health] = {}
    mine: dict[int, list[tuple[int, int]]] = {}  # the VMs' keys with a record netfw reads
    for key, found in recorded.items():
        if isinstance(found, Applied) and key[0] not in refused:
            mine.setdefault(key[0], []).append(key)

    def then(ns: str) -> None:
        vm = by_ns[ns]
        ahead.result()  # waits for the hypervisor's links; their read's error fails the survey, as before
        host = owned.host_keys()
        try:
            links = probe.links(ns)
        except runner.CommandError as e:
            light[vm] = e
            return
        light[vm] = {name: {"ifalias": link.get("ifalias")} for name, link in links.items()}
        own = {tag[:2] for link in links.values() if (tag := names.parse_alias(link.get("ifalias")))}
        keys = mine.get(vm, [])
        for key in keys:
            if key in host or key in own or recorded[key].spec.tap in links:
                done[key] = _verified(*key, recorded[key], state_dir)
        if count is not None and keys and all(key in done for key in keys):
            count(vm, [done[key] for key in keys])  # every recorded NIC of the VM verified: count it now
        cache.active().forget(ns, saves=not counting)

    commands = readahead.commands(vms, recorded, True, counting)
    owned.beside_host(lambda: bulk.prefetch(commands, then=then), ahead)
    ahead.result()  # their read's error fails the survey, as before, also without a VM to verify
    return light, done


def _checked(keys: list[tuple[int, int]], recorded: dict, seen: Objects, state_dir: str | Path | None,
             verify: bool, counting: bool = False) -> dict[tuple[int, int], Health]:
    """The health of recorded NICs (_recorded), one VM a task of cache.each (its NICs share its namespace's reads)."""
    by_vm: dict[int, list[tuple[int, int]]] = {}
    for key in keys:
        by_vm.setdefault(key[0], []).append(key)
    def task(nics: list[tuple[int, int]]) -> list[Health]:
        found = [_recorded(k, recorded[k], seen, state_dir, verify) for k in nics]
        reads = cache.active()
        if verify and reads is not None:  # verified: its links are not needed again (gc's look at taps needs them),
            reads.forget(names.netns(nics[0][0]), saves=not counting)  # nor its saves unless counted next
        return found

    done = cache.each(by_vm.values(), task)
    return {key: h for nics, healths in zip(by_vm.values(), done) for key, h in zip(nics, healths)}


def survey(state_dir: str | Path | None = None, vm: int | None = None, nic: int | None = None,
           verify: bool = True, counting: bool = False,
           count: Callable[[int, list[Health]], None] | None = None) -> list[Health]:
    """The health of every NIC netfw knows (of VM vm, of its NIC nic), sorted by VM and NIC. Read-only.

    Raises InputError when a VM was named and netfw knows nothing of it (no record, no kernel object). Reads the
    kernel once per namespace (cache.reads()), many namespaces per process (bulk), the VMs in parallel (cache.each);
    counting: the caller counts next (the status of a VM, metrics): the conntrack counts are read ahead too, and the
    saves are kept for the counters; count(vm, healths of its recorded NICs), when given, may count a VM as soon as
    its NICs are verified (see _as_read), before the survey ends. verify False: a recorded NIC with kernel objects
    is UNVERIFIED instead of attached or drift (for gc, which acts on neither)."""
    if vm is not None:
        names.check_ids(vm, nic or 0)
    with cache.reads():
        return _survey(state_dir, vm, nic, verify, counting, count)


def _survey(state_dir: str | Path | None, vm: int | None, nic: int | None, verify: bool,
            counting: bool = False, count: Callable[[int, list[Health]], None] | None = None) -> list[Health]:
    with state.opened(state_dir, create=False) as records:
        vms = [vm] if vm is not None else records.vms()
        recorded, journals, refused = _records(records, vms)
    early: dict[tuple[int, int], Health] = {}
    if verify and vm is None:  # each VM verified as soon as its namespace is read, while the others are read
        light, early = _as_read(owned.namespaces(), recorded, refused, state_dir, counting, count)
        seen = owned.objects(None, lambda v: light[v] if v in light else owned.namespace_links(v))
    else:
        vms_read = [vm] if vm is not None else owned.namespaces()
        owned.beside_host(lambda: bulk.prefetch(readahead.commands(vms_read, recorded, verify, counting)))
        seen = owned.objects(vm)
    # a VM whose records or namespace cannot be read: its NICs are neither stale nor orphans (gc would take them
    # away), only in error
    refused.update(seen.unreadable)
    out = [Health(v, None, "error", [why]) for v, why in refused.items()]
    keys = [key for key in sorted(set(recorded) | set(seen.links) | journals) if nic is None or key[1] == nic]
    checked = _checked([k for k in keys if k[0] not in refused and isinstance(recorded.get(k), Applied)
                        and k not in early], recorded, seen, state_dir, verify, counting)
    checked.update(early)
    for key in keys:
        applied = recorded.get(key)
        if key[0] in refused:
            out.append(Health(*key, "error", [refused[key[0]]]))
        elif isinstance(applied, StateError):
            out.append(Health(*key, "error", [str(applied)]))
        elif applied is None and key not in seen.links:  # a journal only: a run killed before it changed anything
            out.append(Health(*key, "stale", [f"only the journal of an interrupted run is left: netfw gc, or "
                                              f"netfw detach {key[0]} {key[1]}"]))
        elif applied is None:
            why = "an interrupted run left them (journal)" if key in journals else "no state record"
            out.append(Health(*key, "orphan", [f"{why}; netfw's links: {', '.join(seen.links[key])}"]))
        else:
            out.append(checked[key])
    for bare in sorted(seen.bare):
        if nic is None and not any(k[0] == bare for k in recorded) and bare not in refused:
            held = ", ".join(n for n in seen.namespaces[bare] if n != "lo") or "nothing but lo"
            out.append(Health(bare, None, "orphan", [f"namespace {names.netns(bare)} holds {held} and no NIC "
                                                     "netfw has a record of"]))
    if vm is not None and not out:
        what = f"VM {vm}" + (f" NIC {nic}" if nic is not None else "")
        raise InputError(f"netfw knows nothing of {what}: no state record, no namespace, no link with its alias")
    return sorted(out, key=lambda h: (h.vm, -1 if h.nic is None else h.nic))


def all_attached(healths: list[Health]) -> bool:
    return all(h.health == "attached" for h in healths)
