"""The one model every input (CLI flags, a rules file, an OpenNebula VM document) is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import names
from .errors import InputError


PROTOCOLS = ("ALL", "TCP", "UDP", "ICMP", "ICMPV6", "IPSEC")
DIRECTIONS = ("INBOUND", "OUTBOUND")


@dataclass(frozen=True)
class Rule:
    """One OpenNebula SECURITY_GROUP_RULE, validated and normalised (upper-case protocol and direction)."""

    protocol: str  # one of PROTOCOLS
    direction: str  # INBOUND (to the VM, the peer is the source) or OUTBOUND (from the VM, the peer is the destination)
    ports: str | None = None  # TCP/UDP only: multiport syntax "22,80:90"
    icmp_type: int | None = None  # ICMP (ICMP_TYPE) or ICMPV6 (ICMPV6_TYPE) only
    ip: str | None = None  # first address of the peer range
    size: int | None = None  # number of consecutive addresses from `ip`; None with `ip` means 1
    sg_id: int | None = None  # SECURITY_GROUP_ID, for messages and filtering


@dataclass(frozen=True)
class NicSpec:
    """Everything netfw needs to put one VM NIC behind its firewall."""

    vm: int
    nic: int
    bridge: str  # the VN bridge the tap is on, in the hypervisor namespace ("" when unknown: detach, verify)
    tap: str = ""  # default one-<vm>-<nic>
    mtu: int | None = None  # None: the tap's own MTU
    mac: str | None = None  # the NIC's MAC, for the MAC spoofing filter
    ips: tuple[str, ...] = ()  # the NIC's own addresses (and its aliases'), for the IP spoofing filter
    filter_mac: bool = False
    filter_ip: bool = False
    router: bool = False  # the VM may send DHCP server replies and IPv6 router advertisements
    rules: tuple[Rule, ...] | None = None  # None: security group 0, allow everything (stateful)
    sg_ids: tuple[int, ...] = field(default=())  # the NIC's security groups, for display

    def __post_init__(self) -> None:
        try:
            names.check_ids(self.vm, self.nic)
            if self.bridge:
                names.check_ifname(self.bridge, "bridge")
            if not self.tap:
                object.__setattr__(self, "tap", names.tap(self.vm, self.nic))
            names.check_ifname(self.tap, "tap")
        except ValueError as e:
            raise InputError(str(e)) from None
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise InputError(f"MTU {self.mtu} is out of range 68..65535")


def spec_to_dict(spec: NicSpec) -> dict:
    """A JSON-ready dict of spec (for the state directory and --json output)."""
    from dataclasses import asdict

    data = asdict(spec)
    data["ips"] = list(spec.ips)
    data["sg_ids"] = list(spec.sg_ids)
    data["rules"] = None if spec.rules is None else [asdict(r) for r in spec.rules]
    return data


def spec_from_dict(data: dict) -> NicSpec:
    """The inverse of spec_to_dict."""
    fields = dict(data)
    fields["ips"] = tuple(fields.get("ips") or ())
    fields["sg_ids"] = tuple(fields.get("sg_ids") or ())
    rules = fields.get("rules")
    fields["rules"] = None if rules is None else tuple(Rule(**r) for r in rules)
    return NicSpec(**fields)
