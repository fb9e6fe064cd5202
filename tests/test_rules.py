"""netfw.model.rules: OpenNebula rule objects in, validated Rules (or one exact error line) out."""

from __future__ import annotations

import ipaddress

import pytest

from netfw.model.spec import InputError, Rule
from netfw.model.rules import load_rules_json, matches_nothing, parse_rules, peers

TCP_IN = {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND"}

BAD = [
    # (rule objects, the error line)
    ([{"RULE_TYPE": "INBOUND"}], "rule 1: PROTOCOL: missing (one of ALL, TCP, UDP, ICMP, ICMPV6, IPSEC)"),
    ([{"PROTOCOL": "SCTP", "RULE_TYPE": "INBOUND"}],
     "rule 1: PROTOCOL: 'SCTP' is not one of ALL, TCP, UDP, ICMP, ICMPV6, IPSEC"),
    ([{"PROTOCOL": "TCP"}], "rule 1: RULE_TYPE: missing (one of INBOUND, OUTBOUND)"),
    ([{"PROTOCOL": "TCP", "RULE_TYPE": "IN"}], "rule 1: RULE_TYPE: 'IN' is not one of INBOUND, OUTBOUND"),
    ([TCP_IN, TCP_IN, {**TCP_IN, "RANGE": "22,70000", "SECURITY_GROUP_ID": "100"}],
     "rule 3 (security group 100): RANGE: port 70000 is above 65535"),
    ([{**TCP_IN, "RANGE": "90:80"}], "rule 1: RANGE: range 90:80 has its low port above its high port"),
    ([{**TCP_IN, "RANGE": "22,,80"}], "rule 1: RANGE: '' is not a port or a range lo:hi"),
    ([{**TCP_IN, "RANGE": "ssh"}], "rule 1: RANGE: 'ssh' is not a port or a range lo:hi"),
    ([{**TCP_IN, "RANGE": "-1"}], "rule 1: RANGE: '-1' is not a port or a range lo:hi"),
    ([{**TCP_IN, "RANGE": "1:2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"}],
     "rule 1: RANGE: 16 ports is more than 15 (a range counts 2)"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "RANGE": "22"}],
     "rule 1: RANGE: only for PROTOCOL TCP or UDP, not ICMP"),
    ([{"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "RANGE": "22", "SECURITY_GROUP_ID": 5}],
     "rule 1 (security group 5): RANGE: only for PROTOCOL TCP or UDP, not ALL"),
    ([{**TCP_IN, "ICMP_TYPE": "8"}], "rule 1: ICMP_TYPE: only for PROTOCOL ICMP, not TCP"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMPV6_TYPE": "128"}],
     "rule 1: ICMPV6_TYPE: only for PROTOCOL ICMPV6, not ICMP"),
    ([{"PROTOCOL": "ICMPV6", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8"}],
     "rule 1: ICMP_TYPE: only for PROTOCOL ICMP, not ICMPV6"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8/0"}], "rule 1: ICMP_TYPE: '8/0' is not an integer"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "255"}], "rule 1: ICMP_TYPE: 255 is above 254"),
    ([{"PROTOCOL": "ICMPV6", "RULE_TYPE": "INBOUND", "ICMPV6_TYPE": 256}],
     "rule 1: ICMPV6_TYPE: 256 is above 255"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": -1}], "rule 1: ICMP_TYPE: -1 is below 0"),
    ([{**TCP_IN, "IP": "10.0.0.300"}], "rule 1: IP: '10.0.0.300' is not an IPv4 or IPv6 address"),
    ([{**TCP_IN, "IP": "10.0.0.0/24"}], "rule 1: IP: '10.0.0.0/24' is not an IPv4 or IPv6 address"),
    ([{**TCP_IN, "IP": "fe80::1%eth0"}], "rule 1: IP: 'fe80::1%eth0' has a zone; give the plain address"),
    ([{**TCP_IN, "IP": "2001:db8::5%1\n-I FORWARD 1 -j ACCEPT\n#"}],
     "rule 1: IP: '2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT\\n#' has a zone; give the plain address"),
    ([{**TCP_IN, "IP6": "2001:db8::5%1", "NETWORK_ID": 3}], "rule 1: IP6: '2001:db8::5%1' has a zone; give the plain address"),
    ([{**TCP_IN, "IP": "::1", "SIZE": str((1 << 128) - 2)}],
     "rule 1: SIZE: 340282366920938463463374607431768211454 addresses from IP ::1 need 254 CIDR blocks, more than 128 "
     "(netfw's cap per rule): split the range"),
    ([{**TCP_IN, "RANGE": "1," * 1_000_000}], "rule 1: RANGE: 1000001 ports is more than 15 (a range counts 2)"),
    ([{**TCP_IN, "RANGE": "9" * 5000}], "rule 1: RANGE: port 99999999999999999999 is above 65535"),
    ([{**TCP_IN, "IP": "10.0.0.1", "SIZE": "9" * 5000}], "rule 1: SIZE: 99999999999999999999... is too large"),
    ([{**TCP_IN, "SIZE": "10"}], "rule 1: SIZE: needs IP (the first address of the range)"),
    ([{**TCP_IN, "IP": "10.0.0.1", "SIZE": "0"}], "rule 1: SIZE: 0 is below 1"),
    ([{**TCP_IN, "IP": "10.0.0.1", "SIZE": "-4"}], "rule 1: SIZE: -4 is below 1"),
    ([{**TCP_IN, "IP": "10.0.0.1", "SIZE": "many"}], "rule 1: SIZE: 'many' is not an integer"),
    ([{**TCP_IN, "IP": "255.255.255.255", "SIZE": 2}],
     "rule 1: SIZE: 2 addresses from IP 255.255.255.255 run past the end of IPv4"),
    ([{"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "IP": "2001:db8::1"}],
     "rule 1: IP: an IPv6 address never matches PROTOCOL ICMP"),
    ([{"PROTOCOL": "ICMPV6", "RULE_TYPE": "INBOUND", "IP": "10.0.0.1"}],
     "rule 1: IP: an IPv4 address never matches PROTOCOL ICMPV6"),
    ([{**TCP_IN, "IP6_GLOBAL": "10.0.0.1", "SIZE": 1, "NETWORK_ID": 3}],
     "rule 1: IP6_GLOBAL: '10.0.0.1' is not an IPv6 address"),
    ([{**TCP_IN, "PORT": "22", "SECURITY_GROUP_ID": "7"}], "rule 1: PORT: unknown key"),
    ([{**TCP_IN, "ip": "10.0.0.1", "IP": "10.0.0.2"}], "rule 1: IP: given more than once (keys are case-insensitive)"),
    ([{**TCP_IN, "RANGE": ["22"]}], "rule 1: RANGE: ['22'] is not a string or an integer"),
    ([{**TCP_IN, "SIZE": True, "IP": "10.0.0.1"}], "rule 1: SIZE: True is not a string or an integer"),
    ([{**TCP_IN, "SECURITY_GROUP_ID": "x"}], "rule 1: SECURITY_GROUP_ID: 'x' is not an integer"),
    (["TCP"], "rule 1: rule: expected an object of KEY: value"),
]


@pytest.mark.parametrize(("items", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_rules_raise_one_line(items, message):
    with pytest.raises(InputError) as e:
        parse_rules(items)
    assert str(e.value) == message


GOOD = [
    # (one rule object, the Rules it gives)
    ({"protocol": "tcp", "rule_type": "inbound"}, [Rule("TCP", "INBOUND")]),
    ({"Protocol": "Udp", "Rule_Type": "Outbound", "RANGE": " 53, 1000:2000 ,443:443", "SECURITY_GROUP_ID": "100"},
     [Rule("UDP", "OUTBOUND", ports="53,1000:2000,443", sg_id=100)]),
    ({**TCP_IN, "RANGE": 22}, [Rule("TCP", "INBOUND", ports="22")]),
    ({**TCP_IN, "RANGE": "1:2,3,4,5,6,7,8,9,10,11,12,13,14,15"},
     [Rule("TCP", "INBOUND", ports="1:2,3,4,5,6,7,8,9,10,11,12,13,14,15")]),
    ({"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8"}, [Rule("ICMP", "INBOUND", icmp_type=8)]),
    ({"PROTOCOL": "ICMPV6", "RULE_TYPE": "OUTBOUND", "ICMPV6_TYPE": 255},
     [Rule("ICMPV6", "OUTBOUND", icmp_type=255)]),
    ({"PROTOCOL": "IPSEC", "RULE_TYPE": "INBOUND"}, [Rule("IPSEC", "INBOUND")]),
    ({"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": "10.0.0.7", "SIZE": "27"},
     [Rule("ALL", "INBOUND", ip="10.0.0.7", size=27)]),
    ({"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": "2001:DB8::1"},
     [Rule("ALL", "INBOUND", ip="2001:db8::1", size=1)]),
    # OpenNebula writes empty tags for absent values.
    ({**TCP_IN, "RANGE": "", "IP": " ", "SIZE": None}, [Rule("TCP", "INBOUND")]),
    # NETWORK_ID expanded into a dual-stack address range: one Rule per family.
    ({**TCP_IN, "NETWORK_ID": "3", "AR_ID": "0", "TYPE": "IP4_6", "MAC": "02:00:0a:00:00:01", "IP": "10.0.0.1",
      "IP6_GLOBAL": "2001:db8::200:aff:fe00:1", "IP6_ULA": "fd00::200:aff:fe00:1", "SIZE": "10"},
     [Rule("TCP", "INBOUND", ip="10.0.0.1", size=10), Rule("TCP", "INBOUND", ip="2001:db8::200:aff:fe00:1", size=10),
      Rule("TCP", "INBOUND", ip="fd00::200:aff:fe00:1", size=10)]),
    ({**TCP_IN, "NETWORK_ID": "3", "TYPE": "IP6_STATIC", "IP6": "2001:db8::10", "IP6_END": "2001:db8::13",
      "SIZE": "4"},
     [Rule("TCP", "INBOUND", ip="2001:db8::10", size=4)]),
    # ICMP over a dual-stack range: only the IPv4 part can match.
    ({"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "NETWORK_ID": 3, "IP": "10.0.0.1", "IP6_GLOBAL": "2001:db8::1",
      "SIZE": 2},
     [Rule("ICMP", "INBOUND", ip="10.0.0.1", size=2)]),
    # An Ethernet-only range, or an IPv6-only range under ICMP: matches nothing, and says so (size 0).
    ({**TCP_IN, "NETWORK_ID": "4", "TYPE": "ETHER", "MAC": "02:00:00:00:00:01", "SIZE": "16"},
     [Rule("TCP", "INBOUND", size=0)]),
    ({"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "NETWORK_ID": 3, "IP6": "2001:db8::1", "SIZE": 2},
     [Rule("ICMP", "INBOUND", size=0)]),
    ({**TCP_IN, "NETWORK_ID": "4"}, [Rule("TCP", "INBOUND", size=0)]),
]


@pytest.mark.parametrize(("item", "rules"), GOOD)
def test_good_rules(item, rules):
    assert parse_rules([item]) == tuple(rules)


def test_document_order_across_rules():
    items = [{**TCP_IN, "RANGE": "22"}, {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}, {**TCP_IN, "RANGE": "80"}]
    assert [r.ports for r in parse_rules(items)] == ["22", None, "80"]


def test_unknown_keys_ignored_when_not_strict():
    assert parse_rules([{**TCP_IN, "PORT": "22"}], strict_keys=False) == (Rule("TCP", "INBOUND"),)


def test_minimal_cidr_cover_from_the_docs():
    (rule,) = parse_rules([{"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": "10.0.0.7", "SIZE": "27"}])
    assert [str(n) for n in peers(rule)] == ["10.0.0.7/32", "10.0.0.8/29", "10.0.0.16/28", "10.0.0.32/31"]


def test_cover_of_low_ipv6_addresses_stays_ipv6():
    assert peers(Rule("ALL", "INBOUND", ip="::1", size=2)) == tuple(
        ipaddress.ip_network(n) for n in ("::1/128", "::2/128"))


def test_peers_empty_for_any_peer_and_for_nothing():
    assert peers(Rule("ALL", "INBOUND")) == ()
    assert peers(Rule("ALL", "INBOUND", size=0)) == ()
    assert matches_nothing(Rule("ALL", "INBOUND", size=0)) and not matches_nothing(Rule("ALL", "INBOUND"))


def test_load_rules_json():
    text = '[{"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "22"}]'
    assert load_rules_json(text) == (Rule("TCP", "INBOUND", ports="22"),)
    assert load_rules_json("[]") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "rules: invalid JSON: Expecting property name enclosed in double quotes (line 1 column 3)"),
        ('{"PROTOCOL": "TCP"}', "rules: expected a JSON list of rule objects"),
        ("[" * 100_000 + "]" * 100_000, "rules: invalid JSON: nested too deeply"),
        ("[" + "{}," * 16384 + "{}]", "rules: 16385 security-group rules, more than 16384 (netfw's cap per NIC)"),
        ('[{"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": 70000, "SECURITY_GROUP_ID": 0}]',
         "rule 1 (security group 0): RANGE: port 70000 is above 65535"),
    ],
)
def test_load_rules_json_errors(text, message):
    with pytest.raises(InputError) as e:
        load_rules_json(text)
    assert str(e.value) == message


def test_load_rules_json_refuses_a_number_of_thousands_of_digits():
    """json.loads raises a plain ValueError (not JSONDecodeError) there: still one InputError, exit 2."""
    with pytest.raises(InputError, match=r"^rules: invalid JSON: Exceeds the limit"):
        load_rules_json("[" + "9" * 5000 + "]")
