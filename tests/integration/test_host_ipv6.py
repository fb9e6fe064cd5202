"""netfw's veth end in the hypervisor namespace has no IPv6 of its own (issue 22): no address and no route, so the
hypervisor's IPv6 table does not grow with the VMs (the kernel walks it whole whenever a link goes down: at 1,000 VMs
that walk made each attach and detach up to 45 ms dearer), while the VMs' own IPv6 crosses the VN bridge as before."""

from __future__ import annotations

from pathlib import Path

from netfw import api
from netfw.model.rules import parse_rules
from netfw.model.spec import NicSpec

from .lab import eventually, ping, sh

RULES = parse_rules([{"PROTOCOL": "ALL", "RULE_TYPE": "inbound", "SECURITY_GROUP_ID": "100"},
                     {"PROTOCOL": "ALL", "RULE_TYPE": "outbound", "SECURITY_GROUP_ID": "100"}])
GUESTS = {1: ("10.79.0.1", "fd00:79::1", "02:79:00:00:00:01"), 2: ("10.79.0.2", "fd00:79::2", "02:79:00:00:00:02")}


def routes_of(dev: str) -> list[str]:
    return [r for r in sh("ip", "-6", "route", "show", "table", "all").stdout.splitlines() if f" dev {dev} " in r]


def disabled(dev: str) -> str:
    return Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").read_text().strip()


def test_the_veth_end_has_no_ipv6_and_the_vms_ipv6_still_crosses_the_bridge(lab, state_dir):
    lab.bridge()
    guests = {vm: lab.vm(vm, 0, f"{ip4}/24", ip6=f"{ip6}/64", mac=mac) for vm, (ip4, ip6, mac) in GUESTS.items()}
    eventually(lambda: routes_of("one-1-0"), "the tap's own IPv6 routes (before netfw)")
    for vm, (ip4, ip6, mac) in GUESTS.items():
        api.attach(NicSpec(vm, 0, "vnbr0", rules=RULES, mac=mac, ips=(ip4, ip6)))

    assert disabled("one-1-0") == disabled("one-2-0") == "1"  # the veth ends, under the taps' names
    eventually(lambda: not routes_of("one-1-0") and not routes_of("one-2-0"), "no IPv6 route of the veth ends")
    eventually(lambda: ping(guests[1], GUESTS[2][1]), "IPv6 from VM 1 to VM 2 through both firewalls")
    assert ping(guests[2], GUESTS[1][1]) and ping(guests[1], GUESTS[2][0])
    assert api.verify(1) == {0: []} and api.verify(2) == {0: []}

    api.detach(1, 0)  # the tap is back: its IPv6 is the hypervisor's to decide, as before netfw
    assert disabled("one-1-0") == "0"
