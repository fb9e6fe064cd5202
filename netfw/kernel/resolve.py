"""What attach must know of a NIC's tap and VN bridge before it plans anything (resolve): where the tap is, on
which port of which bridge (Linux or Open vSwitch), its MTU and qdiscs, and whether a link of that name is netfw's
own veth end (ours). Read-only: every answer comes from the kernel or OVSDB, and anything attach cannot proceed
from is an InputError naming it."""

from __future__ import annotations

from loguru import logger

from . import connection, probe, tc
from netfw.model import names
from netfw.errors import InputError
from netfw.model.spec import NicSpec
from .port import Port


def ours(link: dict | None, spec: NicSpec) -> bool:
    """True for netfw's veth end of this NIC (which holds the tap's name once attached)."""
    return probe.kind(link) == "veth" and probe.alias_of(link) == (spec.vm, spec.nic, names.VETH_HOST)


def resolve(spec: NicSpec, known: Port | None = None,
            taken: bool = False) -> tuple[int, Port, dict | None, frozenset[str]]:
    """Check the tap and the VN bridge as attach needs them; return the MTU to use and the tap's port. Read-only.

    known: the port the NIC's record or journal holds, the only source once the tap has left its bridge;
    taken: the journal of a killed run says netfw had taken the tap, so a tap on no bridge is that run's doing,
    not the operator's (a tap on another bridge never is).
    Also returns the tap's link when it is still in the hypervisor namespace (None otherwise), and the kinds of
    qdisc it carries there.
    """
    ns = names.netns(spec.vm)
    host = probe.links(None, [spec.tap, spec.bridge])
    vn, tap = host.get(spec.bridge), host.get(spec.tap)
    if vn is None:  # an Open vSwitch bridge has a kernel link of its name too (its internal port)
        raise InputError(f"VN bridge {spec.bridge} does not exist")
    linux = probe.kind(vn) == "bridge"  # then OVSDB need not be asked (nor running)
    other = probe.alias_of(tap)
    if tap is not None and other is not None and not ours(tap, spec):
        raise InputError(f"{spec.tap} is netfw's own link of VM {other[0]} NIC {other[1]} ({other[2]}), not a tap")
    if tap is not None and not ours(tap, spec):  # the tap, still in the hypervisor namespace
        on = probe.master(tap)
        port = None
        if not linux or on == spec.bridge:
            port = connection.capture(spec.tap, tap, host, linux_only=linux)
        if port is None and taken and on is None and known is not None and known.bridge == spec.bridge:
            port = known  # a killed run took it off the bridge, the journal knows where it belongs
        if port is None or port.bridge != spec.bridge:
            problem = None if linux else connection.bridge_problem(spec.bridge, vn)
            if problem:
                raise InputError(problem)
            where = f"on {port.bridge if port else on}" if (port or on) else "on no bridge"
            raise InputError(f"tap {spec.tap} is {where}, not on the VN bridge {spec.bridge}")
        qdiscs = probe.qdiscs(spec.tap)
        lost = tc.unrebuilt(qdiscs, spec.bandwidth)  # the move destroys the tap's qdiscs
        if lost:
            logger.warning("tap {} carries tc configuration netfw does not rebuild behind the firewall: {}{}",
                           spec.tap, ", ".join(lost), "" if spec.bandwidth else
                           " (give the NIC's limits: INBOUND_*/OUTBOUND_* in the VM document, or --inbound-avg ...)")
        return spec.mtu or tap["mtu"], port, tap, frozenset(q.get("kind") for q in qdiscs)
    inside = probe.links(ns, [spec.tap]).get(spec.tap)
    if inside is None:
        problem = None if linux else connection.bridge_problem(spec.bridge, vn)
        raise InputError(problem or f"tap {spec.tap} does not exist")
    if probe.master(inside) not in (names.bridge(spec.vm, spec.nic), None):
        raise InputError(f"tap {spec.tap} is already attached to {probe.master(inside)} in {ns}")
    port = known if known is not None else \
        (connection.capture(spec.tap, tap, host, linux_only=linux) if tap is not None else None)
    if port is None:
        raise InputError(f"tap {spec.tap} is inside {ns}, but netfw has no record of its VN bridge port: "
                         f"run `netfw detach {spec.vm} {spec.nic} --bridge {spec.bridge}` first")
    if port.bridge != spec.bridge:
        raise InputError(f"VM {spec.vm} NIC {spec.nic} is attached to the VN bridge {port.bridge}, not "
                         f"{spec.bridge}: detach it first")
    return spec.mtu or inside["mtu"], port, None, frozenset()
