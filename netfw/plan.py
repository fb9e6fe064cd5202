"""Pure planning: a NIC spec becomes the ordered list of steps of attach or detach. Runs nothing."""

from __future__ import annotations

from pathlib import Path

from . import names, state
from .model import NicSpec
from .render import render
from .steps import CutOver, FamilyRuleset, FirewallBridge, Record, Reverse, Step, VethPair, VmNamespace


def plan_attach(spec: NicSpec, mtu: int, root: Path) -> list[Step]:
    """Namespace, bridge, veth, rules (ipsets, ip, ip6, eb), then the cut-over, then the state record.

    The rules are in force before the tap moves, so the VM is never on the firewall bridge unfiltered.
    """
    ns = names.netns(spec.vm)
    ruleset = render(spec)
    return [
        VmNamespace(spec.vm),
        FirewallBridge(spec.vm, spec.nic, mtu),
        VethPair(spec.vm, spec.nic, mtu),
        *[FamilyRuleset(ns, family) for family in ruleset.families],
        CutOver(spec.vm, spec.nic, spec.tap, spec.bridge or None),
        Record(state.nic_path(root, spec.vm, spec.nic), state.document(spec, mtu)),
    ]


def plan_detach(spec: NicSpec, mtu: int, root: Path) -> list[Step]:
    """The attach steps reversed: tap back first (the VM keeps its network), then rules, veth, bridge, namespace;
    the state record goes last, so an interrupted detach can be run again with what it needs."""
    *steps, record = plan_attach(spec, mtu, root)
    return [Reverse(step) for step in reversed(steps)] + [Reverse(record)]
