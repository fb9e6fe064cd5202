"""The Python API behind the CLI: attach, detach, verify one VM NIC. Input errors raise InputError."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import backend, names, probe, state, transaction
from .model import InputError, NicSpec
from .plan import plan_attach, plan_detach, plan_update
from .steps import VmNamespace
from .steps.base import Step, show

TOOLS = ("ip", "nsenter", "sysctl", "iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save",
         "ebtables-restore", "ebtables-save", "ipset", "conntrack")


@dataclass
class Outcome:
    """What an operation did (or, with dry_run, would do)."""

    action: str
    vm: int
    nic: int | None  # None: several NICs
    changed: list[str] = field(default_factory=list)  # the steps that changed something
    commands: list[str] = field(default_factory=list)  # dry run: what would run

    def as_dict(self) -> dict:
        return {"action": self.action, "vm": self.vm, "nic": self.nic, "changed": self.changed,
                "commands": self.commands}


def check_host() -> None:
    """The tools and the kernel support netfw needs, or InputError naming what is missing."""
    how = backend.configured()
    tools = TOOLS + tuple(backend.tool(f, a, how) for f in ("ip", "ip6") for a in ("save", "restore"))
    missing = [t for t in dict.fromkeys(tools) if shutil.which(t) is None]
    if missing:
        raise InputError(f"missing tools: {', '.join(missing)}"
                         " (Debian: apt-get install iproute2 iptables ipset conntrack util-linux)")
    if not os.path.isdir("/proc/sys/net/bridge"):
        raise InputError("br_netfilter is not loaded: run `modprobe br_netfilter` on the hypervisor")


def resolve(spec: NicSpec) -> int:
    """Check the tap and the VN bridge as attach needs them; return the MTU to use. Read-only."""
    ns = names.netns(spec.vm)
    host = probe.links(None, [spec.tap, spec.bridge])
    bridge = host.get(spec.bridge)
    if bridge is None or probe.kind(bridge) != "bridge":
        what = "does not exist" if bridge is None else f"is a {probe.kind(bridge) or 'plain link'}, not a bridge"
        raise InputError(f"VN bridge {spec.bridge} {what}")
    tap = host.get(spec.tap)
    if tap is None:
        tap = probe.links(ns, [spec.tap]).get(spec.tap)
        if tap is None:
            raise InputError(f"tap {spec.tap} does not exist")
        if probe.master(tap) not in (names.bridge(spec.vm, spec.nic), None):
            raise InputError(f"tap {spec.tap} is already attached to {probe.master(tap)} in {ns}")
    elif probe.master(tap) != spec.bridge:
        where = f"on {probe.master(tap)}" if probe.master(tap) else "on no bridge"
        raise InputError(f"tap {spec.tap} is {where}, not on the VN bridge {spec.bridge}")
    return spec.mtu or tap["mtu"]


def _execute(action: str, specs: list[NicSpec], steps: list[Step], dry_run: bool) -> Outcome:
    out = Outcome(action, specs[0].vm, specs[0].nic if len(specs) == 1 else None)
    if dry_run:
        for step in steps:
            out.commands.append(f"# {step.describe()}")
            out.commands.extend(show(step.commands()))
        return out
    out.changed = [s.describe() for s in transaction.run(steps)]
    return out


def _one_vm(specs: list[NicSpec], action: str) -> None:
    if not specs or len({s.vm for s in specs}) != 1:
        raise InputError(f"{action} takes the NICs of one VM")


def _generation(applied: state.Applied | None, spec: NicSpec) -> int:
    """Keep the live ipset generation when nothing changes; build the other one when the rules do."""
    if applied is None:
        return 0
    return applied.generation if applied.spec == spec else 1 - applied.generation


def _locked(records: state.StateDir, vm: int, dry_run: bool):
    """The VM's lock for a real run; a dry run takes none (it creates nothing, not even a lock file)."""
    return contextlib.nullcontext() if dry_run else records.lock(vm)


def attach_all(specs: list[NicSpec], *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Attach several NICs of one VM in one transaction: if one fails, those done in the same call are undone."""
    _one_vm(specs, "attach_all")
    check_host()
    with state.opened(state_dir, create=not dry_run) as records, _locked(records, specs[0].vm, dry_run):
        # every record is read (and validated) before any command runs: a bad one is refused with nothing touched
        applied = [records.load(spec.vm, spec.nic) for spec in specs]
        mtus = [resolve(spec) for spec in specs]  # every NIC is checked before anything is touched
        steps: list[Step] = []
        for spec, mtu, old in zip(specs, mtus, applied):
            how = old.backend if old else backend.configured()  # a NIC keeps the backend it has
            target = state.Applied(spec, mtu, _generation(old, spec), how)
            steps += plan_attach(target, records, old.spec if old else None)
        return _execute("attach", specs, steps, dry_run)


def attach(spec: NicSpec, *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Put the NIC behind its firewall. Safe to repeat: a second run changes nothing."""
    return attach_all([spec], dry_run=dry_run, state_dir=state_dir)


def _assumed(vm: int, nic: int, bridge: str | None = None) -> state.Applied:
    """Without a record: the default tap, and the VN bridge the veth end is on (names are recomputed, no state)."""
    veth = probe.links(None, [names.veth_host(vm, nic)]).get(names.veth_host(vm, nic))
    return state.Applied(NicSpec(vm, nic, probe.master(veth) or bridge or ""), (veth or {}).get("mtu", 1500), 0,
                         backend.configured())


def update_all(specs: list[NicSpec], *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Replace the rules (spoofing identity, MTU) of attached NICs of one VM atomically, in one transaction.

    The old rules stay in force until the new ones are loaded in one restore per family; then the NICs' tracked
    flows are forgotten, so flows the new rules no longer allow are cut. Nothing else of the NIC changes.
    """
    _one_vm(specs, "update_all")
    check_host()
    with state.opened(state_dir, create=not dry_run) as records, _locked(records, specs[0].vm, dry_run):
        steps: list[Step] = []
        for spec in specs:
            applied = records.load(spec.vm, spec.nic)
            if applied is None:
                raise InputError(f"VM {spec.vm} NIC {spec.nic} is not attached (no record in {records.path}): "
                                 "attach it first")
            spec = dataclasses.replace(spec, bridge=applied.spec.bridge, tap=applied.spec.tap)
            target = state.Applied(spec, spec.mtu or applied.mtu, _generation(applied, spec), applied.backend)
            steps += plan_update(target, records, applied)
        return _execute("update", specs, steps, dry_run)


def update(spec: NicSpec, *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Replace one NIC's rules atomically (see update_all)."""
    return update_all([spec], dry_run=dry_run, state_dir=state_dir)


def detach(vm: int, nic: int, *, dry_run: bool = False, state_dir: str | Path | None = None,
           bridge: str | None = None) -> Outcome:
    """Take the NIC out of its firewall, tap back onto its VN bridge. Succeeds when parts are already gone.

    The VN bridge is the one the veth end is on; `bridge` is only a fallback for when that end is gone too.
    """
    names.check_ids(vm, nic)
    if bridge:
        names.check_ifname(bridge, "bridge")
    check_host()
    with state.opened(state_dir, create=not dry_run) as records, _locked(records, vm, dry_run):
        applied = records.load(vm, nic) or _assumed(vm, nic, bridge)
        steps = plan_detach(applied, records)
        return _execute("detach", [applied.spec], steps, dry_run)


def verify(vm: int, nic: int | None = None, *, state_dir: str | Path | None = None,
           expected: NicSpec | None = None) -> dict[int, list[str]]:
    """{nic: drift} for one NIC or every recorded NIC of the VM; an empty list means everything holds.

    What is expected is what was last applied (the state record), or `expected` (e.g. from a VM document).
    """
    names.check_ids(vm, nic or 0)
    with state.opened(state_dir, create=False) as records:
        nics = [nic] if nic is not None else records.nics(vm)
        if not nics:
            raise InputError(f"VM {vm} has no attached NIC recorded in {records.path}")
        recorded = {n: records.load(vm, n) for n in nics}  # every record validated before any command runs
        report = {}
        for n in nics:
            applied = recorded[n]
            drift = [] if applied else [f"no state record for VM {vm} NIC {n} in {records.path}"]
            applied = applied or _assumed(vm, n)
            spec = expected if expected is not None else applied.spec
            if expected is not None and applied.spec != expected:
                drift.append(f"NIC {n}: the document differs from what was last applied (run update)")
            for step in plan_attach(applied._replace(spec=spec), records):
                if isinstance(step, VmNamespace) and n != nics[0]:
                    continue  # the VM's namespace is checked once, with its first NIC
                drift += step.check()
            report[n] = drift
    return report
