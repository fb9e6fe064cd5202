"""The Python API behind the CLI: attach, detach, verify one VM NIC. Input errors raise InputError."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path


from .kernel import backend, connection, probe
from .model import names
from . import runner, transaction
from . import state
from .model.spec import InputError, NicSpec
from .kernel.ovs import OvsPort
from .kernel.port import LINUX, Port
from .plan import plan_attach, plan_detach, plan_update
from .kernel.resolve import ours, resolve
from .steps import VmNamespace
from .steps.record import Journal
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




def _execute(action: str, specs: list[NicSpec], steps: list[Step], dry_run: bool) -> Outcome:
    """Run the steps in one transaction; a dry run runs them too, with every changing command only recorded (the
    same code decides from the same facts, so the commands printed are exactly those a real run would start)."""
    out = Outcome(action, specs[0].vm, specs[0].nic if len(specs) == 1 else None)
    if dry_run:
        with runner.recording() as recorded:
            transaction.run(steps)  # nothing changes: `changed` stays empty, `commands` says what would run
        out.commands = show([(list(argv), stdin) for argv, stdin in recorded.commands])
        return out
    out.changed = _changes(transaction.run(steps))
    return out


def _changes(done: list[Step]) -> list[str]:
    return [step.describe() for step in done if not step.bookkeeping]


def _one_vm(specs: list[NicSpec], action: str) -> None:
    if not specs or len({s.vm for s in specs}) != 1:
        raise InputError(f"{action} takes the NICs of one VM")


def _generation(applied: state.Applied | None, spec: NicSpec) -> int:
    """Keep the live ipset generation when nothing changes; build the other one when the rules do."""
    if applied is None:
        return 0
    return applied.generation if applied.spec == spec else 1 - applied.generation


def locked(records: state.StateDir, vm: int, dry_run: bool):
    """The VM's lock for a real run; a dry run takes none (it creates nothing, not even a lock file)."""
    return contextlib.nullcontext() if dry_run else records.lock(vm)


def attach_all(specs: list[NicSpec], *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Attach several NICs of one VM in one transaction: if one fails, those done in the same call are undone."""
    _one_vm(specs, "attach_all")
    check_host()
    with state.opened(state_dir, create=not dry_run) as records, locked(records, specs[0].vm, dry_run):
        return attach_locked(records, specs, dry_run=dry_run)


def attach_locked(records: state.StateDir, specs: list[NicSpec], *, dry_run: bool = False,
                  flush: bool = False) -> Outcome:
    """attach_all, for a caller that already holds the VM's lock in records (the libvirt hook reads the VM's pending
    record under it). flush: empty the queue of each tap the cut-over takes before it comes up behind the firewall
    (the hook, before QEMU runs: netfw.steps.tap)."""
    _one_vm(specs, "attach_all")
    # every record is read (and validated) before any command runs: a bad one is refused with nothing touched
    applied = [records.load(spec.vm, spec.nic) for spec in specs]
    pending = [records.intent(spec.vm, spec.nic) for spec in specs]
    steps: list[Step] = []
    resolved = [resolve(spec, _known(old, intent), _taken(intent))  # all checked before anything changes
                for spec, old, intent in zip(specs, applied, pending)]
    for spec, (mtu, port, seen, tap_tc), old, intent in zip(specs, resolved, applied, pending):
        how = old.backend if old else backend.configured()  # a NIC keeps the backend it has
        target = state.Applied(spec, mtu, _generation(old, spec), how, port)
        # seen None: the tap is inside the namespace, netfw holds it
        steps += plan_attach(target, records, old.spec if old else None, seen=seen, tap_tc=tap_tc,
                             taken=_taken(intent) or seen is None, flush=flush)
    return _execute("attach", specs, steps, dry_run)


def _taken(intent: state.Intent | None) -> bool:
    """The journal of a killed run says that netfw had taken the tap (state.Intent)."""
    return intent is not None and intent.taken


def _known(old: state.Applied | None, intent: state.Intent | None) -> Port | None:
    """The port a journal (newest) or the record holds for the NIC."""
    for applied in (intent[1] if intent else None, old):
        if applied is not None and applied.port is not None:
            return applied.port
    return None


def attach(spec: NicSpec, *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Put the NIC behind its firewall. Safe to repeat: a second run changes nothing."""
    return attach_all([spec], dry_run=dry_run, state_dir=state_dir)


def _assumed(vm: int, nic: int, bridge: str | None = None) -> state.Applied:
    """Without a record or journal: the default tap, and the port its name holds in the hypervisor namespace (the
    veth end, once attached), else the VN bridge given (names are recomputed, no state)."""
    spec = NicSpec(vm, nic, "")
    link = probe.links(None, [spec.tap]).get(spec.tap)
    port = connection.capture(spec.tap, link) if ours(link, spec) else None
    if port is None and bridge:
        port = Port(LINUX, bridge, None) if probe.kind(probe.links(None, [bridge]).get(bridge)) == "bridge" else \
            Port("ovs", bridge, None, ovs=OvsPort(bridge, (), (), None))
    spec = NicSpec(vm, nic, port.bridge if port else "")
    return state.Applied(spec, (link or {}).get("mtu", 1500), 0, backend.configured(), port)


def _now(applied: state.Applied) -> tuple[state.Applied, dict]:
    """(applied with the port as the link holding the tap's name carries it now, the hypervisor namespace's links
    named after the tap and the veth end's staging name as read for it). The connection layer may have changed the
    port since attach; applied is unchanged when that link is not netfw's veth end or is on no bridge.

    One probe: the Linux bridge the NIC was on is read with them (capture needs that bridge's options), and the
    links go to the cut-over, whose teardown would otherwise read them again.
    """
    spec, was = applied.spec, applied.port
    bridge = was.bridge if was is not None and was.kind == LINUX else None
    staging = names.veth_host(spec.vm, spec.nic)
    seen = probe.links(None, [spec.tap, staging, bridge] if bridge else [spec.tap, staging])
    host = {name: link for name, link in seen.items() if name in (spec.tap, staging)}
    link = seen.get(spec.tap)
    if not ours(link, spec):
        return applied, host
    port = connection.capture(spec.tap, link, bridges={name: l for name, l in seen.items() if name == bridge})
    if port is None:  # e.g. OpenNebula's ovswitch clean deleted the port already
        return applied, host
    if applied.port is not None and port.mac is None:
        port = dataclasses.replace(port, mac=applied.port.mac)
    return applied._replace(port=port), host


def update_all(specs: list[NicSpec], *, dry_run: bool = False, state_dir: str | Path | None = None) -> Outcome:
    """Replace the rules (spoofing identity, MTU) of attached NICs of one VM atomically, in one transaction.

    The old rules stay in force until the new ones are loaded in one restore per family; then the NICs' tracked
    flows are forgotten, so flows the new rules no longer allow are cut. Nothing else of the NIC changes.
    """
    _one_vm(specs, "update_all")
    check_host()
    with state.opened(state_dir, create=not dry_run) as records, locked(records, specs[0].vm, dry_run):
        steps: list[Step] = []
        for spec in specs:
            applied = records.load(spec.vm, spec.nic)
            if applied is None:
                raise InputError(f"VM {spec.vm} NIC {spec.nic} is not attached (no record in {records.path}): "
                                 "attach it first")
            spec = dataclasses.replace(spec, bridge=applied.spec.bridge, tap=applied.spec.tap)
            target = state.Applied(spec, spec.mtu or applied.mtu, _generation(applied, spec), applied.backend,
                                   applied.port)
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
    with state.opened(state_dir, create=not dry_run) as records, locked(records, vm, dry_run):
        return detach_locked(records, vm, nic, dry_run=dry_run, bridge=bridge)


def detach_locked(records: state.StateDir, vm: int, nic: int, *, dry_run: bool = False,
                  bridge: str | None = None) -> Outcome:
    """detach, for a caller that already holds VM vm's lock in records (netfw gc decides under it what to detach)."""
    old, intent = records.load(vm, nic), records.intent(vm, nic)
    applied = old or (intent[1] if intent else None) or _assumed(vm, nic, bridge)
    known = _known(old, intent)
    if known is not None:
        applied = applied._replace(port=known)
    if applied.port is None and bridge:
        applied = applied._replace(port=_assumed(vm, nic, bridge).port)
    applied, host = _now(applied)
    tap, ns = applied.spec.tap, names.netns(vm)
    # The tap inside netfw's namespace is proof that netfw holds it (read here, not by the cut-over, for the journal)
    inner = probe.links(ns, [tap]) if tap not in host or ours(host[tap], applied.spec) else {}
    steps = plan_detach(applied, records, resume=intent is not None, host=host, inner=inner,
                        taken=_taken(intent) or tap in inner)
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
            steps = [*plan_attach(applied._replace(spec=spec), records, journal=False),
                     Journal(records, vm, n, None)]
            for step in steps:
                if isinstance(step, VmNamespace) and n != nics[0]:
                    continue  # the VM's namespace is checked once, with its first NIC
                drift += step.check()
            report[n] = drift
    return report
