"""libvirt's qemu hook: the VM's NICs go behind their firewall before QEMU runs a single instruction.

libvirt runs `/etc/libvirt/hooks/qemu.d/netfw DOMAIN OPERATION SUB-OPERATION EXTRA` (scripts/libvirt/qemu.d/netfw,
which runs `netfw hook qemu ...`) as root with the domain XML on stdin, and does not start the domain when a
`prepare` or `start` hook exits non-zero. Facts: ../shared/docs/LIBVIRT.md; the flow: docs/opennebula.md.

| phase           | the domain's taps                          | what netfw does                                        |
|-----------------|--------------------------------------------|--------------------------------------------------------|
| prepare begin   | not yet made                               | release: what netfw still keeps for the VM goes        |
| start begin     | made, on the VN bridge, QEMU not started   | attach every NIC the VM's pending record names, in one |
|                 |                                            | transaction, queue emptied (netfw.steps.tap): or fail  |
| stopped end,    | gone with QEMU                             | release                                                |
| release end     |                                            |                                                        |
| anything else   |                                            | nothing                                                |

release: every NIC of the VM netfw has a record or journal of is detached (api.detach_locked: only netfw's objects;
a tap is never touched unless netfw holds it), so the veth end no longer holds the tap's name (libvirt's next start
would fail with "The one-5-0 interface already exists") and a later OpenNebula `clean` finds nothing to do. The
pending record stays: it is OpenNebula's `pre` that wrote it, and its `clean` that removes it, so a start after a
stop (virsh start, a restore, a migration back) attaches again.

Domains not named one-<VM> are left alone at once. Nothing is printed on stdout (libvirt reads a `migrate` or
`restore` hook's stdout as a new domain XML): one INFO line per decision on stderr, which libvirt logs.
Never calls virsh or libvirt's API (the hook runs inside libvirtd's own job on the domain: it would deadlock).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loguru import logger

from netfw import api
from netfw.kernel import backend
from . import domain
from netfw import state
from netfw.state import pending
from netfw.errors import InputError
from netfw.model.spec import NicSpec

ATTACH = ("start", "begin")
RELEASE = (("prepare", "begin"), ("stopped", "end"), ("release", "end"))


@dataclass
class Outcome:
    """What the hook did: a one-line summary, the NICs it attached or released, the failures of a release."""

    summary: str
    nics: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def acts_on(name: str, operation: str, sub: str) -> bool:
    """Whether netfw has anything to do for this call (any other returns at once, stdin unread)."""
    return domain.vm_of(name) is not None and ((operation, sub) == ATTACH or (operation, sub) in RELEASE)


def run(name: str, operation: str, sub: str, xml: bytes, state_dir: str | None = None) -> Outcome:
    """One hook call. InputError: refused (bad XML, a NIC that does not match its record); any other error: failed
    (the attach rolled back)."""
    vm = domain.vm_of(name)
    if not acts_on(name, operation, sub):
        return Outcome(f"netfw hook: {name!r} {operation!r} {sub!r}: nothing to do")
    if (operation, sub) == ATTACH:
        return start(vm, name, xml, state_dir)
    return release(vm, f"{operation} {sub}", state_dir)


def _matched(vm: int, interfaces: list[domain.Interface], wanted: pending.Pending) -> list[NicSpec]:
    """The pending specs of the domain's NICs, each checked against its interface (MAC, bridge); InputError for a
    mismatch. A NIC on one side only is logged, and left alone."""
    specs = []
    for iface in interfaces:
        spec = wanted.nics.get(iface.nic)
        if spec is None:
            logger.info("VM {} NIC {} ({}): no pending record: left alone", vm, iface.nic, iface.tap)
            continue
        if iface.mac is None or (spec.mac is not None and iface.mac != spec.mac):
            raise InputError(f"VM {vm} NIC {iface.nic}: the domain's interface {iface.tap} has MAC {iface.mac}, "
                             f"its pending record {spec.mac}: refused")
        if iface.bridge != spec.bridge:
            raise InputError(f"VM {vm} NIC {iface.nic}: the domain's interface {iface.tap} ({iface.kind}) is on "
                             f"bridge {iface.bridge}, its pending record on {spec.bridge}: refused")
        specs.append(spec)
    missing = sorted(set(wanted.nics) - {i.nic for i in interfaces})
    if missing:
        logger.info("VM {}: NIC {} of the pending record not in the domain: nothing to attach for it", vm,
                    ", ".join(map(str, missing)))
    return specs


def start(vm: int, name: str, xml: bytes, state_dir: str | None) -> Outcome:
    """`start begin`: every NIC with a pending record behind its firewall, in one transaction, or fail. The domain
    XML is read only for a VM with a pending record (netfw.opennebula.domain: hostile input)."""
    with state.opened(state_dir, create=False) as records:
        if records.fd is None:
            return Outcome(f"netfw hook: VM {vm}: no pending record (no state directory {records.path}): left alone")
        with records.lock(vm):
            wanted = pending.load(records, vm)
            if wanted is None:
                return Outcome(f"netfw hook: VM {vm}: no pending record: left alone")
            interfaces, _ = domain.parse(xml, name)
            specs = _matched(vm, interfaces, wanted)
            if not specs:
                return Outcome(f"netfw hook: VM {vm}: no NIC of the domain is pending: nothing attached")
            api.check_host()
            os.environ[backend.ENV] = wanted.backend  # as pre found it configured (a NIC keeps its own)
            done = api.attach_locked(records, specs, flush=True)
    nics = [s.nic for s in specs]
    changed = f"{len(done.changed)} change(s)" if done.changed else "no change"
    return Outcome(f"netfw hook: VM {vm} NIC {', '.join(map(str, nics))}: attached before QEMU starts ({changed})",
                   nics)


def release(vm: int, phase: str, state_dir: str | None) -> Outcome:
    """`prepare begin`, `stopped end`, `release end`: detach every NIC netfw keeps for the VM (records, journals),
    going on after a failure; the pending record stays."""
    with state.opened(state_dir, create=False) as records:
        nics = sorted(set(records.nics(vm)) | set(records.nics(vm, intents=True)))
        if not nics:
            return Outcome(f"netfw hook: VM {vm} {phase}: netfw keeps nothing for it")
        api.check_host()
        failures = []
        with records.lock(vm):
            nics = sorted(set(records.nics(vm)) | set(records.nics(vm, intents=True)))  # again, under the lock
            for nic in nics:
                try:
                    api.detach_locked(records, vm, nic)
                except InputError:
                    raise
                except Exception as e:  # noqa: BLE001 - reported with its NIC; the other NICs are still released
                    failures.append(f"NIC {nic}: {e}")
    return Outcome(f"netfw hook: VM {vm} {phase}: released NIC {', '.join(map(str, nics))}", nics, failures)
