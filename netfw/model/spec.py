"""The one model every input (CLI flags, a rules file, an OpenNebula VM document, a state record) is turned into.

The model validates itself: a NicSpec or Rule that exists holds only values that are safe to write into a restore
file or an `ip -batch` script (names that fullmatch, canonical addresses without zone ids, booleans that are bools,
numbers in range) and stays within netfw's caps. So every entry point, serial.spec_from_dict included, passes the same
checks, and a bad value raises InputError (exit 2) before anything is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from functools import cached_property

from . import names, values
from netfw.errors import InputError

PROTOCOLS = ("ALL", "TCP", "UDP", "ICMP", "ICMPV6", "IPSEC")
DIRECTIONS = ("INBOUND", "OUTBOUND")
PORT_PROTOCOLS = ("TCP", "UDP")
MAX_PORT = 65535
MAX_MULTIPORT = 15  # the kernel's multiport slots; a range takes two
ICMP_TYPE_MAX = {"ICMP": 254, "ICMPV6": 255}  # iptables reads ICMP type 255 as "any type"

# Caps: far above what any OpenNebula set-up reaches (the legacy driver runs one process per rule, ~5 ms each, so
# 4096 rules would take it 20 s per NIC; OpenNebula caps an ipset at 65536 members, :ipset_maxelem:), low enough
# that a hostile input is refused before it is expanded. README.md lists them.
MAX_RULES = 16384  # rules of one NIC (a NETWORK_ID rule counts once per address range); the benchmark loads 10,000
MAX_RULE_BLOCKS = 128  # CIDR blocks of one rule's peer range (any IPv4 range needs at most 62)
MAX_IPSET_MEMBERS = 65536  # members of all the ipsets of one NIC
MAX_ADDRESSES = 1024  # a NIC's own addresses, its aliases' included

#: Conntrack entries one NIC may hold (its zone, IPv4 and IPv6 together), when nothing else is asked; README.md,
#: "Conntrack cap", justifies it (memory per entry x NICs per host, and what a busy VM needs).
DEFAULT_CONNTRACK_MAX = 8192
#: Bounds of a NIC's conntrack cap: at least one entry per IP family; at most 4x the kernel's own default for a
#: whole host (262,144), which already caps every namespace on its own.
CONNTRACK_MAX_RANGE = (2, 1 << 20)

#: A rule whose peer range needs more CIDR blocks than this is matched with one ipset instead of one line per block.
#: Four keeps the common cases (a host, a subnet, an unaligned /30-ish range) readable in iptables-save.
IPSET_THRESHOLD = 4

#: RANGE as Rule holds it (rules.py normalises it): `22`, `80:90`, comma-separated, no spaces.
_PORTS_RE = re.compile(r"[0-9]{1,5}(:[0-9]{1,5})?(,[0-9]{1,5}(:[0-9]{1,5})?)*")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Rule:
    """One OpenNebula SECURITY_GROUP_RULE, validated and normalised (upper-case protocol and direction)."""

    protocol: str  # one of PROTOCOLS
    direction: str  # INBOUND (to the VM, the peer is the source) or OUTBOUND (from the VM, the peer is the destination)
    ports: str | None = None  # TCP/UDP only: multiport syntax "22,80:90"
    icmp_type: int | None = None  # ICMP (ICMP_TYPE) or ICMPV6 (ICMPV6_TYPE) only
    ip: str | None = None  # first address of the peer range
    size: int | None = None  # number of consecutive addresses from `ip`; None with `ip` means 1; 0: matches nothing
    sg_id: int | None = None  # SECURITY_GROUP_ID, for messages and filtering

    def __post_init__(self) -> None:
        try:
            self._check()
        except ValueError as e:
            raise InputError(f"rule {self.protocol!r} {self.direction!r}: {e}") from None

    def _check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol is not one of {', '.join(PROTOCOLS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction is not one of {', '.join(DIRECTIONS)}")
        if self.ports is not None:
            _check_ports(self.ports, self.protocol)
        if self.icmp_type is not None:
            top = ICMP_TYPE_MAX.get(self.protocol)
            if top is None or not _is_int(self.icmp_type) or not 0 <= self.icmp_type <= top:
                raise ValueError(f"ICMP type {self.icmp_type!r} is not 0..{top} (or not for {self.protocol})")
        if self.sg_id is not None and not (_is_int(self.sg_id) and self.sg_id >= 0):
            raise ValueError(f"security group {self.sg_id!r} is not a non-negative integer")
        self._check_peer()

    def _check_peer(self) -> None:
        if self.size is not None and not (_is_int(self.size) and self.size >= 0):
            raise ValueError(f"size {self.size!r} is not a non-negative integer")
        if self.ip is None:
            if self.size not in (None, 0):
                raise ValueError("a size needs the first address of the range")
            return
        first = values.address(self.ip)
        object.__setattr__(self, "ip", str(first))
        size = 1 if self.size is None else self.size
        if size < 1 or int(first) + size > 1 << first.max_prefixlen:
            raise ValueError(f"{size} addresses from {first} do not fit in IPv{first.version}")
        if self.blocks > MAX_RULE_BLOCKS:
            raise ValueError(f"{size} addresses from {first} need {self.blocks} CIDR blocks, more than "
                             f"{MAX_RULE_BLOCKS}: split the range")

    @cached_property
    def blocks(self) -> int:
        """How many CIDR blocks the peer range has (0 for any peer and for a rule matching nothing); no expansion."""
        if self.ip is None or self.size == 0:
            return 0
        return values.block_count(values.address(self.ip), 1 if self.size is None else self.size)

    @property
    def uses_ipset(self) -> bool:
        """True when the peer range is matched with an ipset (more than IPSET_THRESHOLD blocks)."""
        return self.blocks > IPSET_THRESHOLD


def _check_ports(ports: object, protocol: str) -> None:
    """RANGE in Rule's normalised form: ports 0..65535, lo < hi, at most MAX_MULTIPORT slots."""
    if protocol not in PORT_PROTOCOLS:
        raise ValueError(f"ports are only for TCP or UDP, not {protocol}")
    if not isinstance(ports, str) or not _PORTS_RE.fullmatch(ports):
        raise ValueError(f"ports {ports!r} are not in the form 22,80:90")
    slots = 0
    for item in ports.split(","):
        bounds = [int(p) for p in item.split(":")]
        if any(p > MAX_PORT for p in bounds) or (len(bounds) == 2 and bounds[0] >= bounds[1]):
            raise ValueError(f"ports {ports!r}: {item!r} is not a port or a range lo:hi with lo < hi <= {MAX_PORT}")
        slots += len(bounds)
    if slots > MAX_MULTIPORT:
        raise ValueError(f"ports {ports!r}: {slots} ports is more than {MAX_MULTIPORT} (a range counts 2)")


#: Bandwidth limits (KB/s and KB, as OpenNebula and libvirt give them): up to what tc can express (32 bits of bytes/s).
MAX_RATE = (1 << 32) - 1


@dataclass(frozen=True)
class Bandwidth:
    """A NIC's limits as OpenNebula gives them (INBOUND_AVG_BW, INBOUND_PEAK_BW, INBOUND_PEAK_KB, OUTBOUND_*):
    average and peak rates in KB/s and the burst in KB, for traffic to the VM (inbound) and from it (outbound)."""

    inbound_avg: int | None = None
    inbound_peak: int | None = None
    inbound_burst: int | None = None
    outbound_avg: int | None = None
    outbound_peak: int | None = None
    outbound_burst: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not (_is_int(value) and 1 <= value <= MAX_RATE):
                raise InputError(f"bandwidth {f.name} {value!r} is not an integer in 1..{MAX_RATE}")
        for way in ("inbound", "outbound"):
            extra = [k for k in ("peak", "burst") if getattr(self, f"{way}_{k}") is not None]
            if extra and getattr(self, f"{way}_avg") is None:
                raise InputError(f"bandwidth: {way} {' and '.join(extra)} need the {way} average")

    def limits(self, way: str) -> tuple[int, int | None, int | None] | None:
        """(average, peak, burst) of one direction ('inbound' or 'outbound'), None when it is not limited."""
        avg = getattr(self, f"{way}_avg")
        return None if avg is None else (avg, getattr(self, f"{way}_peak"), getattr(self, f"{way}_burst"))


@dataclass(frozen=True)
class NicSpec:
    """Everything netfw needs to put one VM NIC behind its firewall."""

    vm: int
    nic: int
    bridge: str  # the VN bridge the tap is on, in the hypervisor namespace ("" when unknown: detach, verify)
    tap: str = ""  # default one-<vm>-<nic>
    mtu: int | None = None  # None: the tap's own MTU
    mac: str | None = None  # the NIC's MAC, for the MAC spoofing filter (held lower case, two digits a byte)
    ips: tuple[str, ...] = ()  # the NIC's own addresses (and its aliases'), canonical, for the IP spoofing filter
    filter_mac: bool = False
    filter_ip: bool = False
    router: bool = False  # the VM may send DHCP server replies and IPv6 router advertisements
    rules: tuple[Rule, ...] | None = None  # None: security group 0, allow everything (stateful)
    sg_ids: tuple[int, ...] = field(default=())  # the NIC's security groups, for display
    bandwidth: Bandwidth | None = None  # limits to enforce (None: none)
    conntrack_max: int = DEFAULT_CONNTRACK_MAX  # cap on the NIC's conntrack entries, per family (render._cap)

    def __post_init__(self) -> None:
        if not (_is_int(self.vm) and _is_int(self.nic)):
            raise InputError(f"VM and NIC ids must be integers, not {self.vm!r} and {self.nic!r}")
        names.check_ids(self.vm, self.nic)
        for name in ("bridge", "tap"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"{name} {getattr(self, name)!r} is not a string")
        if self.bridge:
            names.check_ifname(self.bridge, "bridge")
        if not self.tap:
            object.__setattr__(self, "tap", names.tap(self.vm, self.nic))
        names.check_ifname(self.tap, "tap")
        if self.mtu is not None and not (_is_int(self.mtu) and 68 <= self.mtu <= 65535):
            raise InputError(f"MTU {self.mtu} is out of range 68..65535")
        for flag in ("filter_mac", "filter_ip", "router"):
            if not isinstance(getattr(self, flag), bool):
                raise InputError(f"{flag} {getattr(self, flag)!r} is not true or false")
        self._check_identity()
        self._check_rules()
        if self.bandwidth is not None and not isinstance(self.bandwidth, Bandwidth):
            raise InputError(f"bandwidth {self.bandwidth!r} is not a set of limits")
        if self.bandwidth == Bandwidth():
            object.__setattr__(self, "bandwidth", None)
        self._check_conntrack_max()

    def _check_identity(self) -> None:
        """The MAC and the addresses, canonical; no zone ids; within MAX_ADDRESSES."""
        if self.mac is not None:
            try:
                object.__setattr__(self, "mac", values.mac(self.mac))
            except ValueError as e:
                raise InputError(f"MAC {e}") from None
            if int(self.mac[:2], 16) & 1 or self.mac == "00:00:00:00:00:00":  # a NIC's own MAC is unicast
                raise InputError(f"MAC {self.mac} is a multicast or all-zero address, not a NIC's")
        elif self.filter_mac:
            raise InputError("the MAC spoofing filter needs the NIC's MAC")
        if not isinstance(self.ips, tuple):
            raise InputError(f"addresses {self.ips!r} are not a list")
        if len(self.ips) > MAX_ADDRESSES:
            raise InputError(f"{len(self.ips)} addresses, more than {MAX_ADDRESSES} (netfw's cap per NIC)")
        try:
            object.__setattr__(self, "ips", tuple(values.canonical_address(ip) for ip in self.ips))
        except ValueError as e:
            raise InputError(f"address {e}") from None
        for ip in self.ips:  # a NIC's own addresses are unicast: they become the spoofing filter's sources
            parsed = values.address(ip)
            if parsed.is_multicast or parsed.is_unspecified:
                raise InputError(f"address {ip} is a multicast or unspecified address, not a NIC's")

    def _check_rules(self) -> None:
        """Rules are Rules, within MAX_RULES and MAX_IPSET_MEMBERS (counted, not expanded); sg_ids are ids."""
        if not isinstance(self.sg_ids, tuple) or not all(_is_int(s) and s >= 0 for s in self.sg_ids):
            raise InputError(f"security groups {self.sg_ids!r} are not a list of non-negative integers")
        if self.rules is None:
            return
        if not isinstance(self.rules, tuple) or not all(isinstance(r, Rule) for r in self.rules):
            raise InputError("rules are not a list of rules")
        check_rule_count(len(self.rules))
        members = sum(r.blocks for r in self.rules if r.uses_ipset)
        if members > MAX_IPSET_MEMBERS:
            raise InputError(f"the rules' peer ranges need {members} ipset members, more than {MAX_IPSET_MEMBERS} "
                             "(netfw's cap per NIC)")


    def _check_conntrack_max(self) -> None:
        low, high = CONNTRACK_MAX_RANGE
        if not (_is_int(self.conntrack_max) and low <= self.conntrack_max <= high):
            raise InputError(f"conntrack cap {self.conntrack_max!r} is not an integer in {low}..{high}")


def check_rule_count(count: int) -> None:
    """InputError when one NIC would have more than MAX_RULES rules; callers check before they parse. Pure."""
    if count > MAX_RULES:
        raise InputError(f"{count} security-group rules, more than {MAX_RULES} (netfw's cap per NIC)")
