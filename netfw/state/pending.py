"""A VM's pending record: what `netfw one pre` found its handled NICs will need, for the libvirt qemu hook.

OpenNebula runs the network driver's `pre` on the hypervisor before libvirt starts the domain, and `post` only after
the guest runs. `pre` writes `DIR/vm-<VM>/pending.json` (under the VM's lock, atomically: statefs.write_file) with
each handled NIC's spec as `post` would attach it (the driver's own settings, the conntrack cap, applied) and the
iptables backend; the hook (netfw.opennebula.hook) attaches them at libvirt's `start begin`, before QEMU runs. A full `pre`
replaces the record; a hot-attach `pre` (ATTACH=YES) puts its NIC into it (no hook runs for a hot-plug, but a later
start of the domain must find the NIC); `post`, `update_sg` and `update_nic` put the NICs they attached or updated
into it as they are now
(a later start gets the current rules, not those of the last `pre`); `clean` removes the record, a hot-detach
`clean` its NIC only.

The record is read back as strictly as a state record: every spec by the model's own validation
(serial.spec_from_dict), for this VM, each NIC once.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from netfw.kernel import backend as backends
from netfw.model import names
from netfw.errors import InputError
from netfw.model.spec import NicSpec
from netfw.model.serial import spec_from_dict, spec_to_dict
from .directory import StateDir, opened
from .records import MAX_RECORD, _constant, _no_duplicates
from .fs import StateError

NAME = "pending.json"
KEYS = frozenset({"vm", "backend", "nics"})


class Pending(NamedTuple):
    """The NICs a VM's next start attaches (by NIC id), and the iptables backend for them."""

    vm: int
    backend: str
    nics: dict[int, NicSpec]


def shown(records: StateDir, vm: int) -> str:
    return f"pending record {records.path / f'vm-{vm}' / NAME}"


def document(pending: Pending) -> str:
    """The record's JSON text; InputError when it would be too large to be read back."""
    data = {"vm": pending.vm, "backend": pending.backend,
            "nics": [spec_to_dict(pending.nics[n]) for n in sorted(pending.nics)]}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if len(text.encode()) > MAX_RECORD:
        raise InputError(f"VM {pending.vm}: its pending record would be larger than {MAX_RECORD} bytes")
    return text


def parse(text: str, vm: int, where: str) -> Pending:
    """The record's text as Pending, every field checked; else StateError."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as e:
        raise StateError(f"{where}: not a netfw pending record: {e}") from None
    if not isinstance(data, dict) or set(data) != KEYS or not isinstance(data["nics"], list):
        raise StateError(f"{where}: must be {{vm, backend, nics: a list of NIC specs}}")
    if type(data["vm"]) is not int or data["vm"] != vm:
        raise StateError(f"{where}: it is for VM {data['vm']!r}, not VM {vm}")
    if data["backend"] not in backends.BACKENDS:
        raise StateError(f"{where}: backend {data['backend']!r} is not one of {', '.join(backends.BACKENDS)}")
    nics: dict[int, NicSpec] = {}
    for item in data["nics"]:
        try:
            spec = spec_from_dict(item)
        except (InputError, TypeError, ValueError) as e:
            raise StateError(f"{where}: {e}") from None
        if spec.vm != vm or spec.nic in nics:
            raise StateError(f"{where}: NIC {spec.nic} is for VM {spec.vm} or appears twice")
        if spec.tap != names.tap(vm, spec.nic):  # as a VM document's TARGET (netfw.opennebula.one): never a foreign link
            raise StateError(f"{where}: NIC {spec.nic}: tap {spec.tap!r} is not the NIC's {names.tap(vm, spec.nic)}")
        nics[spec.nic] = spec
    return Pending(vm, data["backend"], nics)


def load(records: StateDir, vm: int) -> Pending | None:
    """The VM's pending record, None when it has none; StateError for a bad one (never taken for "none")."""
    where = shown(records, vm)
    text = records.read_named(vm, NAME, where)
    return None if text is None else parse(text, vm, where)


def save(records: StateDir, vm: int, pending: Pending | None) -> None:
    """Write the record (atomically) or, None or without NICs, remove it. Safe to repeat."""
    text = document(pending) if pending is not None and pending.nics else None
    records.write_named(vm, NAME, text, shown(records, vm))


def record(records: StateDir, specs: list[NicSpec], vm: int, only: bool) -> Pending:
    """Replace the VM's record with specs (only=False: a full pre), or put specs into it (only: a hot attach).
    The caller holds the VM's lock."""
    old = load(records, vm) if only else None  # a bad old record fails closed, also for a hot attach
    nics = dict(old.nics) if old else {}
    nics.update({s.nic: s for s in specs})
    pending = Pending(vm, backends.configured(), nics)
    save(records, vm, pending)
    return pending


def forget(records: StateDir, vm: int, nics: list[int] | None = None,
           replace: dict[int, NicSpec] | None = None) -> None:
    """Remove the VM's record (nics None), or these NICs from it, or (replace) re-write those NICs' specs. Holds no
    lock itself: the caller holds the VM's."""
    if nics is None and not replace:
        save(records, vm, None)
        return
    old = load(records, vm)
    if old is None:
        return
    kept = {n: s for n, s in old.nics.items() if nics is None or n not in nics}
    kept.update({n: s for n, s in (replace or {}).items() if n in old.nics})
    save(records, vm, old._replace(nics=kept))


def on_pre(state_dir: str | None, vm: int, specs: list[NicSpec], hot: bool) -> Pending:
    """`netfw one pre`: replace the record (hot: put these NICs into it), under the VM's lock."""
    with opened(state_dir) as records, records.lock(vm):
        return record(records, specs, vm, only=hot)


def on_update(state_dir: str | None, vm: int, specs: list[NicSpec]) -> str:
    """`netfw one post`, `update_sg` and `update_nic`, once the NICs are attached or updated: the record holds them
    as they are now (a VM without a record has none made; an unchanged record is not written). The part of the
    summary line saying so."""
    with opened(state_dir, create=False) as records:
        if records.fd is None:
            return ""
        with records.lock(vm):
            old = load(records, vm)
            new = old and old._replace(nics={**old.nics, **{s.nic: s for s in specs}})
            if new is None or new == old:
                return ""
            save(records, vm, new)
    return "; pending record updated"


def on_clean(state_dir: str | None, vm: int, hotplug_of: str | None, hot: list | None) -> str:
    """`netfw one clean`: remove the record, or (hot: the one.VmNic being hot-detached) their part of it; an
    alias's hot detach re-writes its parent without the alias's addresses. The part of the summary line saying so."""
    if hot is not None and not hot:
        return ""  # a hot-(de)attached NIC netfw does not handle: the record stays as it is
    with opened(state_dir) as records, records.lock(vm):
        had = load(records, vm)
        if hot is None:
            forget(records, vm)
        elif hotplug_of == "alias":
            forget(records, vm, [], replace={n.spec.nic: n.alias_detached for n in hot})
        else:
            forget(records, vm, [n.spec.nic for n in hot])
    return "; pending record updated" if had and hot else "; pending record removed" if had else ""
