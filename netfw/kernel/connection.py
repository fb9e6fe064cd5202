"""Reading the connection layer: which VN bridge a link is a port of (Linux or Open vSwitch), with which settings.

Read-only. A Linux bridge port is told by its kernel master (`ip -d -j link` also gives its settings, in the same
probe netfw makes anyway); anything else is asked of OVSDB (netfw.kernel.ovs), never inferred from `ip link`: a port of a
userspace-datapath OVS bridge has no master at all, one of the kernel datapath has `ovs-system`.
"""

from __future__ import annotations

import json
import shutil

from . import ovs, probe
from netfw import runner
from netfw.errors import InputError
from .port import LINUX, OVS, Port, Vlan, linux_settings


def has_ovs() -> bool:
    """True when Open vSwitch's tools are installed (then OVSDB must answer; a failure to reach it is an error)."""
    return shutil.which(ovs.VSCTL[0]) is not None


def vlans(dev: str) -> tuple[Vlan, ...]:
    """dev's VLAN entries on its VLAN-filtering Linux bridge (`bridge -j vlan show dev DEV`). Read-only."""
    out = json.loads(runner.read(["bridge", "-j", "vlan", "show", "dev", dev]).stdout or "[]")
    entries = next((e.get("vlans", []) for e in out if e.get("ifname") == dev), [])
    found = []
    for entry in entries:
        flags = entry.get("flags", [])
        first, last = entry["vlan"], entry.get("vlanEnd", entry["vlan"])
        found += [Vlan(v, "PVID" in flags, "Egress Untagged" in flags) for v in range(first, last + 1)]
    return tuple(found)


def capture(name: str, link: dict, bridges: dict[str, dict] | None = None, linux_only: bool = False) -> Port | None:
    """The port link `name` holds now: its Linux bridge and settings, or its OVS records; None on no bridge.

    linux_only: do not ask OVSDB (the caller only wants a Linux bridge port: OVS need not be running).
    """
    master = probe.master(link)
    if master and master != "ovs-system":
        bridge = (bridges or {}).get(master) or probe.links(None, [master]).get(master)
        filtering = probe.bridge_option(bridge, "vlan_filtering") == 1
        return Port(LINUX, master, link.get("address"), linux_settings(probe.slave_data(link)),
                    vlans(name) if filtering else None)
    if linux_only:
        return None
    if not has_ovs():
        if master == "ovs-system":
            raise InputError(f"{name} is an Open vSwitch port, but ovs-vsctl is not installed")
        return None
    found = ovs.lookup(name)
    return None if found is None else Port(OVS, found.bridge, link.get("address"), ovs=found)


def bridge_problem(bridge: str, link: dict | None) -> str | None:
    """Why `bridge` cannot be a VN bridge (None: it is a Linux bridge, or an OVS bridge OVSDB knows). Read-only."""
    if probe.kind(link) == "bridge":
        return None
    if link is None:  # an OVS bridge has a kernel link of its name too (its internal port)
        return f"VN bridge {bridge} does not exist"
    if has_ovs() and ovs.bridge_exists(bridge):
        return None
    return f"VN bridge {bridge} is a {probe.kind(link) or 'plain link'}, not a bridge"


__all__ = ["LINUX", "OVS", "capture", "bridge_problem", "has_ovs", "vlans"]
