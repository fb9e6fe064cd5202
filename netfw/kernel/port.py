"""The VM's port on its VN bridge as the connection layer made it, which netfw carries to the link that replaces the
tap at attach, and back to the tap at detach.

The connection layer (OpenNebula's drivers, libvirt, Open vSwitch) addresses the VM's port by the tap's name in the
hypervisor namespace. After attach that name belongs to netfw's veth end, on the same VN bridge, carrying what the
tap carried:
- Linux bridge: the tap's MAC and its bridge-port settings (`ip link set X type bridge_slave ...`: hairpin,
  learning, isolated, flooding, priority, cost, ...), and its VLAN entries where the bridge filters VLANs;
- Open vSwitch: the Port and Interface records and the OpenFlow port number (netfw.kernel.ovs).
A Port is captured from whichever link holds the name, kept in the NIC's journal and record (a process killed after
the tap left the bridge must still know what to put back), and validated as input when read from there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netfw.model import names, values
from netfw.errors import InputError
from .ovs import OvsPort

LINUX = "linux"
OVS = "ovs"

#: Bridge-port settings as `ip -d -j link` prints them (info_slave_data) -> the `type bridge_slave` option, and
#: whether the value is a flag (on/off) or a number. STP state and timers are the kernel's, not settings.
LINUX_SETTINGS: dict[str, tuple[str, str]] = {
    "priority": ("priority", "int"), "cost": ("cost", "int"),
    "hairpin": ("hairpin", "flag"), "guard": ("guard", "flag"), "root_block": ("root_block", "flag"),
    "fastleave": ("mcast_fast_leave", "flag"), "learning": ("learning", "flag"), "flood": ("flood", "flag"),
    "proxy_arp": ("proxy_arp", "flag"), "proxy_arp_wifi": ("proxy_arp_wifi", "flag"),
    "multicast_router": ("mcast_router", "int"), "mcast_flood": ("mcast_flood", "flag"),
    "bcast_flood": ("bcast_flood", "flag"), "mcast_to_unicast": ("mcast_to_unicast", "flag"),
    "group_fwd_mask": ("group_fwd_mask", "mask"), "neigh_suppress": ("neigh_suppress", "flag"),
    "vlan_tunnel": ("vlan_tunnel", "flag"), "isolated": ("isolated", "flag"), "locked": ("locked", "flag"),
}
_OPTIONS = {option: how for option, how in LINUX_SETTINGS.values()}
_MASK_RE = re.compile(r"0|0x[0-9a-f]{1,4}")


def _setting(option: str, value: str) -> tuple[str, str]:
    """(option, value) of a bridge_slave setting, validated: a value reaches an `ip -batch` script."""
    how = _OPTIONS.get(option)
    if how is None:
        raise InputError(f"bridge port setting {option!r} is not one netfw carries")
    ok = {"flag": value in ("on", "off"), "int": isinstance(value, str) and value.isdigit() and len(value) <= 10,
          "mask": isinstance(value, str) and bool(_MASK_RE.fullmatch(value))}[how]
    if not ok:
        raise InputError(f"bridge port setting {option} {value!r} is not valid")
    return option, value


def linux_settings(slave: dict) -> tuple[tuple[str, str], ...]:
    """The settings of a Linux bridge port from its info_slave_data, as (option, value). Pure."""
    out = []
    for key, (option, how) in LINUX_SETTINGS.items():
        if key not in slave:
            continue
        raw = slave[key]
        if how == "flag":
            value = "on" if raw else "off"
        elif how == "mask":
            value = str(raw).lower() if str(raw).lower().startswith("0x") else f"0x{int(str(raw), 0):x}"
            value = "0" if int(value, 16) == 0 else value
        else:
            value = str(int(raw))
        out.append(_setting(option, value))
    return tuple(out)


@dataclass(frozen=True)
class Vlan:
    """A VLAN entry of a port on a VLAN-filtering Linux bridge."""

    vid: int
    pvid: bool = False
    untagged: bool = False

    def __post_init__(self) -> None:
        if type(self.vid) is not int or not 1 <= self.vid <= 4094:
            raise InputError(f"VLAN id {self.vid!r} is not 1..4094")
        if not isinstance(self.pvid, bool) or not isinstance(self.untagged, bool):
            raise InputError("VLAN pvid and untagged must be true or false")

    def line(self, dev: str) -> str:
        """The `bridge -batch` line that adds this entry to dev."""
        return f"vlan add dev {dev} vid {self.vid}" + (" pvid" if self.pvid else "") + \
            (" untagged" if self.untagged else "")


@dataclass(frozen=True)
class Port:
    """Where the VM's port is (a Linux bridge or an OVS bridge) and what the connection layer set on it."""

    kind: str  # LINUX or OVS
    bridge: str  # the VN bridge
    mac: str | None  # the tap's MAC: the veth end that replaces it carries it (the VN bridge keeps its own MAC)
    settings: tuple[tuple[str, str], ...] = ()  # LINUX: bridge_slave (option, value)
    vlans: tuple[Vlan, ...] | None = None  # LINUX on a VLAN-filtering bridge: the port's entries; else None
    ovs: OvsPort | None = None  # OVS: the records and the OpenFlow port

    def __post_init__(self) -> None:
        if self.kind not in (LINUX, OVS):
            raise InputError(f"port kind {self.kind!r} is not {LINUX} or {OVS}")
        names.check_ifname(self.bridge, "VN bridge")
        if self.mac is not None:
            try:
                object.__setattr__(self, "mac", values.mac(self.mac))
            except ValueError as e:
                raise InputError(f"port MAC {e}") from None
        if not isinstance(self.settings, tuple):
            raise InputError("bridge port settings are not a list")
        object.__setattr__(self, "settings", tuple(_setting(*s) for s in self.settings))
        if self.vlans is not None and not all(isinstance(v, Vlan) for v in self.vlans):
            raise InputError("VLAN entries are not a list of VLANs")
        if (self.kind == OVS) != (self.ovs is not None) or (self.ovs is not None and self.ovs.bridge != self.bridge):
            raise InputError("an Open vSwitch port needs its records, on its bridge; a Linux one has none")

    def settings_line(self, dev: str) -> str | None:
        """The `ip -batch` line that puts the settings on dev (a port of the bridge already), None for none."""
        if not self.settings:
            return None
        return f"link set {dev} type bridge_slave " + " ".join(f"{o} {v}" for o, v in self.settings)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "bridge": self.bridge, "mac": self.mac,
                "settings": [list(s) for s in self.settings],
                "vlans": None if self.vlans is None else [[v.vid, v.pvid, v.untagged] for v in self.vlans],
                "ovs": None if self.ovs is None else self.ovs.as_dict()}

    @staticmethod
    def from_dict(data: object) -> Port:
        """The inverse of as_dict; every field validated (records and journals are input)."""
        keys = {"kind", "bridge", "mac", "settings", "vlans", "ovs"}
        if not isinstance(data, dict) or set(data) != keys:
            raise InputError(f"a port must have exactly {sorted(keys)}")
        settings, vlans = data["settings"], data["vlans"]
        if not isinstance(settings, list) or not all(isinstance(s, list) and len(s) == 2 for s in settings):
            raise InputError("bridge port settings are not a list of [option, value]")
        if vlans is not None and (not isinstance(vlans, list)
                                  or not all(isinstance(v, list) and len(v) == 3 for v in vlans)):
            raise InputError("VLAN entries are not a list of [vid, pvid, untagged]")
        return Port(data["kind"], data["bridge"], data["mac"], tuple((o, v) for o, v in settings),
                    None if vlans is None else tuple(Vlan(*v) for v in vlans),
                    None if data["ovs"] is None else OvsPort.from_dict(data["ovs"]))
