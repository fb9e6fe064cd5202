"""netfw.model.spec validates itself: every field of NicSpec and Rule, whichever way it arrives (CLI flags, a document,
a state record through spec_from_dict). A bad value is an InputError with one line, never a spec."""

from __future__ import annotations

import dataclasses

import pytest

from netfw.model import spec as model
from netfw.model.spec import InputError, NicSpec, Rule
from netfw.model.serial import spec_from_dict, spec_to_dict

INJECTION = "2001:db8::5%1\n-I FORWARD 1 -j ACCEPT\n#"
GOOD = NicSpec(7, 0, "vnbr0", mac="02:00:0a:00:00:07", ips=("10.0.0.7", "2001:db8::7"), filter_mac=True,
               filter_ip=True, rules=(Rule("TCP", "INBOUND", ports="22", ip="10.0.0.0", size=256, sg_id=100),),
               sg_ids=(100,))


@pytest.mark.parametrize("fields, message", [
    ({"ips": (INJECTION,)}, "address '2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT\\n#' has a zone; give the plain address"),
    ({"ips": ("fe80::1%eth0",)}, "address 'fe80::1%eth0' has a zone; give the plain address"),
    ({"ips": ("10.0.0.7\n",)}, "address '10.0.0.7\\n' is not an IPv4 or IPv6 address"),
    ({"ips": (" 10.0.0.7",)}, "address ' 10.0.0.7' is not an IPv4 or IPv6 address"),
    ({"ips": (7,)}, "address 7 is not an IPv4 or IPv6 address (not a string)"),
    ({"ips": ["10.0.0.7"]}, "addresses ['10.0.0.7'] are not a list"),
    ({"ips": ("10.0.0.1",) * 1025}, "1025 addresses, more than 1024 (netfw's cap per NIC)"),
    ({"mac": "02:00:0a:00:00:07\n"}, "MAC '02:00:0a:00:00:07\\n' is not a MAC address"),
    ({"mac": "02:00:0a:00:00"}, "MAC '02:00:0a:00:00' is not a MAC address"),
    ({"mac": None}, "the MAC spoofing filter needs the NIC's MAC"),
    ({"tap": "eth0\n-A FORWARD"}, "tap 'eth0\\n-A FORWARD' is not a valid interface name"),
    ({"tap": "one-7-0\n"}, "tap 'one-7-0\\n' is not a valid interface name"),
    ({"bridge": "vnbr0\n"}, "bridge 'vnbr0\\n' is not a valid interface name"),
    ({"bridge": 5}, "bridge 5 is not a string"),
    ({"vm": True}, "VM and NIC ids must be integers"),
    ({"nic": "0"}, "VM and NIC ids must be integers"),
    ({"nic": 1000}, "NIC id 1000 is out of range 0..999"),
    ({"mtu": 67}, "MTU 67 is out of range 68..65535"),
    ({"mtu": "1500"}, "MTU 1500 is out of range 68..65535"),
    ({"filter_ip": "yes"}, "filter_ip 'yes' is not true or false"),
    ({"router": 1}, "router 1 is not true or false"),
    ({"sg_ids": (-1,)}, "security groups (-1,) are not a list of non-negative integers"),
    ({"conntrack_max": 1}, "conntrack cap 1 is not an integer in 2..1048576"),
    ({"conntrack_max": 1048577}, "conntrack cap 1048577 is not an integer in 2..1048576"),
    ({"conntrack_max": "1000"}, "conntrack cap '1000' is not an integer in 2..1048576"),
    ({"conntrack_max": True}, "conntrack cap True is not an integer in 2..1048576"),
    ({"conntrack_max": 1000.0}, "conntrack cap 1000.0 is not an integer in 2..1048576"),
    ({"rules": [Rule("ALL", "INBOUND")]}, "rules are not a list of rules"),
    ({"rules": ({"protocol": "ALL"},)}, "rules are not a list of rules"),
    ({"rules": (Rule("ALL", "INBOUND"),) * 16385}, "16385 security-group rules, more than 16384 (netfw's cap per NIC)"),
    ({"rules": (Rule("ALL", "INBOUND", ip="::1", size=(1 << 128) - 1),) * 513},
     "the rules' peer ranges need 65664 ipset members, more than 65536 (netfw's cap per NIC)"),
])  # fmt: skip
def test_nic_spec_refuses_every_bad_field(fields, message):
    with pytest.raises(InputError) as e:
        dataclasses.replace(GOOD, **fields)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_nic_spec_holds_canonical_values():
    spec = dataclasses.replace(GOOD, mac="2-0-A-0-0-7", ips=("2001:DB8:0::7", "10.0.0.7"))
    assert spec.mac == "02:00:0a:00:00:07" and spec.ips == ("2001:db8::7", "10.0.0.7")
    assert NicSpec(7, 0, "").tap == "one-7-0"


@pytest.mark.parametrize("fields, message", [
    ({"protocol": "GRE"}, "protocol is not one of"),
    ({"direction": "IN"}, "direction is not one of"),
    ({"ports": "22\n-A FORWARD -j ACCEPT"}, "ports '22\\n-A FORWARD -j ACCEPT' are not in the form"),
    ({"ports": "22 "}, "ports '22 ' are not in the form"),
    ({"ports": "90:80"}, "'90:80' is not a port or a range lo:hi with lo < hi"),
    ({"ports": "80:80"}, "'80:80' is not a port or a range lo:hi with lo < hi"),
    ({"ports": "65536"}, "'65536' is not a port"),
    ({"ports": "1:2,3,4,5,6,7,8,9,10,11,12,13,14,15"[:-3] + ",16:17"}, "16 ports is more than 15"),
    ({"protocol": "ALL", "ports": "22"}, "ports are only for TCP or UDP, not ALL"),
    ({"icmp_type": 8}, "ICMP type 8 is not 0..None (or not for TCP)"),
    ({"protocol": "ICMP", "ports": None, "icmp_type": 255}, "ICMP type 255 is not 0..254"),
    ({"protocol": "ICMP", "ports": None, "icmp_type": True}, "ICMP type True is not 0..254"),
    ({"ip": INJECTION}, "'2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT\\n#' has a zone"),
    ({"ip": "10.0.0.0/24"}, "'10.0.0.0/24' is not an IPv4 or IPv6 address"),
    ({"ip": None, "size": 4}, "a size needs the first address of the range"),
    ({"size": 0}, "0 addresses from 10.0.0.0 do not fit in IPv4"),
    ({"ip": "255.255.255.255", "size": 2}, "2 addresses from 255.255.255.255 do not fit in IPv4"),
    ({"size": "256"}, "size '256' is not a non-negative integer"),
    ({"ip": "::1", "size": (1 << 128) - 2}, "need 254 CIDR blocks, more than 128"),
    ({"sg_id": -1}, "security group -1 is not a non-negative integer"),
    ({"sg_id": "100"}, "security group '100' is not a non-negative integer"),
])  # fmt: skip
def test_rule_refuses_every_bad_field(fields, message):
    with pytest.raises(InputError) as e:
        dataclasses.replace(GOOD.rules[0], **fields)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_rule_counts_its_blocks_without_expanding_them():
    assert Rule("ALL", "INBOUND", ip="10.0.0.7", size=27).blocks == 4
    assert Rule("ALL", "INBOUND", ip="::1", size=(1 << 128) - 1).blocks == model.MAX_RULE_BLOCKS
    assert Rule("ALL", "INBOUND").blocks == Rule("ALL", "INBOUND", size=0).blocks == 0
    assert Rule("ALL", "INBOUND", ip="2001:DB8::1").ip == "2001:db8::1"


def test_a_record_round_trips():
    assert spec_from_dict(spec_to_dict(GOOD)) == GOOD
    assert spec_from_dict(spec_to_dict(NicSpec(7, 1, ""))) == NicSpec(7, 1, "")
    capped = dataclasses.replace(GOOD, conntrack_max=1000)
    assert spec_from_dict(spec_to_dict(capped)).conntrack_max == 1000


def test_a_record_from_before_the_conntrack_cap_gets_the_default():
    """Records written before the field existed lack the key: the NIC gets the default cap on its next attach."""
    old = spec_to_dict(GOOD)
    del old["conntrack_max"]
    assert spec_from_dict(old).conntrack_max == model.DEFAULT_CONNTRACK_MAX == 8192


def _record(**changes) -> dict:
    data = spec_to_dict(GOOD)
    data.update(changes)
    return data


@pytest.mark.parametrize("data, message", [
    ("not an object", "spec: not an object"),
    (_record(ips=[INJECTION]), "address '2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT\\n#' has a zone"),
    (_record(ips="10.0.0.7"), "spec: ips is not a list"),
    (_record(tap="one-7-0\n-A FORWARD -j ACCEPT"), "tap 'one-7-0\\n-A FORWARD -j ACCEPT' is not a valid"),
    (_record(bridge="vnbr0 up\nlink set eth0 netns one-7"), "bridge 'vnbr0 up\\nlink set eth0 netns one-7'"),
    (_record(mac="02:00:0a:00:00:07\n-j ACCEPT"), "MAC '02:00:0a:00:00:07\\n-j ACCEPT' is not a MAC address"),
    (_record(filter_ip="false"), "filter_ip 'false' is not true or false"),
    (_record(vm="7"), "VM and NIC ids must be integers"),
    (_record(extra=1), "spec: unknown field(s) extra"),
    ({k: v for k, v in _record().items() if k != "bridge"}, "spec: NicSpec.__init__() missing 1 required"),
    (_record(rules={"protocol": "ALL"}), "spec: rules is neither null nor a list"),
    (_record(rules=["ALL"]), "a rule is not an object with the keys"),
    (_record(rules=[{"protocol": "ALL", "direction": "INBOUND", "port": "22"}]), "a rule is not an object"),
    (_record(rules=[{"protocol": "ALL"}]), "rule {'protocol': 'ALL'}: Rule.__init__() missing 1 required"),
    (_record(rules=[{"protocol": "TCP", "direction": "INBOUND", "ports": "22\n-A FORWARD -j ACCEPT"}]),
     "ports '22\\n-A FORWARD -j ACCEPT' are not in the form"),
    (_record(rules=[{"protocol": "ALL", "direction": "INBOUND"}] * 16385), "16385 security-group rules"),
    (_record(sg_ids=["100"]), "security groups ('100',) are not a list of non-negative integers"),
])  # fmt: skip
def test_spec_from_dict_raises_input_error_for_any_bad_field(data, message):
    """The state directory's records go through the same validators (another engineer's state.load relies on it)."""
    with pytest.raises(InputError) as e:
        spec_from_dict(data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_long_messages_are_cut():
    with pytest.raises(InputError) as e:
        NicSpec(7, 0, "vnbr0", ips=("x" * 100_000,))
    assert len(str(e.value)) < 1100 and str(e.value).endswith("characters)")


@pytest.mark.parametrize("fields", [{"mac": "01:00:5e:00:00:01"}, {"mac": "00:00:00:00:00:00"},
                                    {"ips": ("224.0.0.1",)}, {"ips": ("ff02::1",)}, {"ips": ("0.0.0.0",)},
                                    {"ips": ("::",)}])
def test_a_nics_own_mac_and_addresses_are_unicast(fields):
    """They become the spoofing filter's allowed sources: a multicast or unspecified one is nobody's own."""
    with pytest.raises(InputError, match="multicast"):
        NicSpec(7, 0, "vnbr0", **fields)
