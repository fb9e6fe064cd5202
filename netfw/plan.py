"""Pure planning: a NIC spec becomes the ordered list of steps of attach, update or detach. Runs nothing."""

from __future__ import annotations

import dataclasses
from functools import partial

from .model import names
from . import state
from .model.spec import NicSpec
from .rules.render import RETIRED_ZONE, Ruleset, render, zone, zones
from .state import Applied, StateDir
from .steps import CutOver, FamilyRuleset, FirewallBridge, Record, Reverse, Step, VethPair, VmNamespace
from .steps.record import Journal
from .steps.shaping import Shaping
from .steps.base import Fresh
from .steps.netns import DropNamespace
from .steps.conntrack import FlushZone
from .steps.ipsets import Ipsets, IpsetGc


def generation(ruleset: Ruleset, gen: int) -> Ruleset:
    """The ruleset with its ipsets under generation gen's names (0: names.ipset, 1: the temporary names).

    An update builds the sets of the other generation, so that no set named by live rules is ever refilled.
    """
    if gen == 0 or not ruleset.ipsets:
        return ruleset
    swap = {s.name: s.temporary_name for s in ruleset.ipsets}

    def rename(line: str) -> str:
        for old, new in swap.items():
            line = line.replace(f"--match-set {old} ", f"--match-set {new} ")
        return line

    families = tuple(
        dataclasses.replace(f, chains={c: tuple(map(rename, rules)) for c, rules in f.chains.items()})
        for f in ruleset.families
    )
    sets = tuple(dataclasses.replace(s, name=s.temporary_name, temporary_name=s.name) for s in ruleset.ipsets)
    return Ruleset(families, sets)


def ipset_prefix(spec: NicSpec) -> str:
    return names.chain(spec.vm, spec.nic, "i")[:-1]


def rule_steps(target: Applied, previous: NicSpec | None = None, fresh: Fresh | None = None) -> list[Step]:
    """Sets, then one restore per family (filter ip/ip6/eb, with the raw zone rules), then unused sets go."""
    spec, backend = target.spec, target.backend
    ns = names.netns(spec.vm)
    ruleset = generation(render(spec), target.generation)
    old = render(previous) if previous is not None else None
    had_sets = old is not None and bool(old.ipsets)
    steps: list[Step] = [Ipsets(ns, ruleset.ipsets, ipset_prefix(spec), fresh)] if ruleset.ipsets else []
    raw = {f.family: f for f in zones(spec)}  # the conntrack zone rules ride in the same restore as the filter
    for family in ruleset.families:
        stale = tuple(old.family(family.family).chains) if old and family.family in _families(old) else ()
        parts = [family, raw[family.family]] if family.family in raw else [family]
        steps.append(FamilyRuleset(ns, parts, stale, backend, fresh))
    if old is not None:  # a family the NIC no longer needs (ebtables once spoofing filters are off)
        steps += [Reverse(FamilyRuleset(ns, f, backend=backend))
                  for f in old.families if f.family not in _families(ruleset)]
    if ruleset.ipsets or had_sets:  # `ipset` runs only for NICs that use sets
        steps.append(IpsetGc(ns, tuple(s.name for s in ruleset.ipsets), ipset_prefix(spec), fresh))
    return steps


def _families(ruleset: Ruleset) -> set[str]:
    return {f.family for f in ruleset.families}


def plan_attach(target: Applied, records: StateDir, previous: NicSpec | None = None,
                journal: bool = True, seen: dict | None = None, tap_tc: frozenset[str] = frozenset(),
                resume: bool = False, host: dict | None = None, taken: bool = False,
                inner: dict | None = None, flush: bool = False) -> list[Step]:
    """Journal, namespace, bridge, veth, rules, then the cut-over, then the record, then the journal goes.

    seen: the tap as planning found it in the hypervisor namespace (saves the cut-over a probe on a fresh attach);
    tap_tc: the kinds of qdisc it carried there (a rolled-back attach gives it back what it can of them);
    host: the hypervisor namespace's links named after the tap and the veth's staging name, and inner: the VM
    namespace's link named after the tap, as detach's planning read them (the cut-over's teardown reads them again
    only after a change); taken: the journal says netfw has taken the tap (state.Intent); if not, the cut-over
    writes it again, saying so, right before it takes the tap off its VN bridge; flush: the cut-over empties the
    tap's queue before the tap comes up behind the firewall (the libvirt hook, before QEMU runs).

    The rules are in force before the tap moves, so the VM is never on the firewall bridge unfiltered.
    """
    spec, mtu, fresh = target.spec, target.mtu, Fresh()
    mac = target.port.mac if target.port else None
    steps = [
        VmNamespace(spec.vm, fresh),
        FirewallBridge(spec.vm, spec.nic, mtu, fresh),
        VethPair(spec.vm, spec.nic, mtu, spec.tap, mac, fresh),
        *rule_steps(target, previous, fresh),
        CutOver(spec.vm, spec.nic, spec.tap, target.port, fresh, seen, spec.bandwidth, tap_tc, resume, host, inner,
                taken, None if taken or not journal else _taking(records, spec, target), flush),
        *_shaping(spec, previous, fresh),
        # made now when it will be written (a record too large is refused before any change), else if ever used
        Record(records, spec.vm, spec.nic, state.document(target) if journal else partial(state.document, target)),
    ]
    return _journaled(records, spec, target, "attach", steps, taken) if journal else steps


def _taking(records: StateDir, spec: NicSpec, target: Applied):
    """What the cut-over calls right before it takes the tap: the journal, written again to say so."""
    journal = Journal(records, spec.vm, spec.nic, state.document(target, "attach", taken=True))
    return journal.apply


def _shaping(spec: NicSpec, previous: NicSpec | None, fresh: Fresh | None = None) -> list[Step]:
    """The NIC's bandwidth limits, when it has some or had some."""
    before = previous.bandwidth if previous else None
    return [Shaping(spec.vm, spec.nic, spec.tap, spec.bandwidth, before, fresh)] if spec.bandwidth or before else []


def _journaled(records: StateDir, spec: NicSpec, target: Applied, op: str, steps: list[Step],
               taken: bool = False) -> list[Step]:
    """steps between the NIC's journal (written before the first change) and its removal (after the last)."""
    return [Journal(records, spec.vm, spec.nic, state.document(target, op, taken)), *steps,
            Journal(records, spec.vm, spec.nic, None)]


def plan_update(target: Applied, records: StateDir, previous: Applied) -> list[Step]:
    """A new MTU for the bridge and veth (if it changed), new sets (other generation), one atomic restore per
    family, old sets gone, record, then the NIC's conntrack entries, so that flows the new rules no longer allow
    are cut."""
    spec = target.spec
    resize: list[Step] = []
    if target.mtu != previous.mtu:
        resize = [FirewallBridge(spec.vm, spec.nic, target.mtu), VethPair(spec.vm, spec.nic, target.mtu, spec.tap)]
    steps = rule_steps(target, previous.spec)
    changed = [s for s in steps if isinstance(s, FamilyRuleset)]
    return _journaled(records, spec, target, "update", [
        *resize,
        *steps,
        *_shaping(spec, previous.spec),
        Record(records, spec.vm, spec.nic, state.document(target)),
        FlushZone(names.netns(spec.vm), zone(spec), changed, RETIRED_ZONE if spec.nic == 0 else None),
    ])


def plan_detach(target: Applied, records: StateDir, resume: bool = False, host: dict | None = None,
                inner: dict | None = None, taken: bool = False) -> list[Step]:
    """The tap back onto its VN bridge first (the VM keeps its network, and its limits), the record, then the rest:
    the whole namespace at once when nothing else is in it, else the attach steps reversed (rules, sets, veth,
    bridge, and the namespace if it is empty by then). taken: netfw holds the tap (inside its namespace) or a killed
    run's journal says it had taken it; a tap outside the namespace is never touched otherwise."""
    spec = target.spec
    attach = plan_attach(target, records, journal=False, resume=resume, host=host, taken=taken, inner=inner)
    cut_over = next(s for s in attach if isinstance(s, CutOver))
    record = next(s for s in attach if isinstance(s, Record))
    objects = [s for s in attach if not isinstance(s, (CutOver, Record, Shaping))]
    fallback = [Reverse(step) for step in reversed(objects) if not isinstance(step, IpsetGc)]
    rebuild = [s for s in plan_attach(target, records, journal=False) if not isinstance(s, (CutOver, Record,
                                                                                                 Shaping))]
    return _journaled(records, spec, target, "detach", [
        Reverse(cut_over), Reverse(record), DropNamespace(spec.vm, spec.nic, spec.tap, fallback, rebuild)], taken)
