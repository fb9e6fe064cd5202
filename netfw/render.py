"""Pure rendering: a NicSpec becomes the rules of its two chains, per family, in iptables-save's canonical form.

Rendering exactly what `iptables-save` prints lets `verify` compare live rules with a plain equality, and lets a
repeated attach see that nothing needs loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import names
from .model import NicSpec

FAMILIES = (4, 6)


@dataclass(frozen=True)
class FamilyRules:
    """One family's share of a NIC's firewall: its chains (in order) and the FORWARD jumps that reach them."""

    family: int
    chains: dict[str, tuple[str, ...]]  # chain name -> its rules, each "-A <chain> ..."
    jumps: tuple[str, ...]  # "-A FORWARD ..." lines


@dataclass(frozen=True)
class Ruleset:
    """Everything loaded into the VM namespace for one NIC."""

    families: tuple[FamilyRules, ...]
    ipsets: tuple = field(default=())

    def family(self, family: int) -> FamilyRules:
        return next(f for f in self.families if f.family == family)


def jumps(spec: NicSpec) -> tuple[str, ...]:
    """FORWARD → the NIC's chains, matched on the tap as a bridge port (physdev)."""
    i, o = names.chain(spec.vm, spec.nic, "i"), names.chain(spec.vm, spec.nic, "o")
    return (
        f"-A FORWARD -m physdev --physdev-out {spec.tap} --physdev-is-bridged -j {i}",
        f"-A FORWARD -m physdev --physdev-in {spec.tap} --physdev-is-bridged -j {o}",
    )


def _family(spec: NicSpec, family: int) -> FamilyRules:
    i, o = names.chain(spec.vm, spec.nic, "i"), names.chain(spec.vm, spec.nic, "o")
    inbound: list[str] = []
    outbound: list[str] = []
    for chain, rules in ((i, inbound), (o, outbound)):
        rules.append(f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        if spec.rules is None:  # security group 0: allow everything
            rules.append(f"-A {chain} -j ACCEPT")
        rules.append(f"-A {chain} -j DROP")
    return FamilyRules(family, {i: tuple(inbound), o: tuple(outbound)}, jumps(spec))


def render(spec: NicSpec) -> Ruleset:
    """The complete ruleset of one NIC. Pure: runs nothing."""
    return Ruleset(tuple(_family(spec, f) for f in FAMILIES))
