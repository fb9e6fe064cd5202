"""netfw.rules.render: NIC specs in, restore input out, compared with expected files under tests/data/render/.

Regenerate the files after an intended change with `NETFW_UPDATE_RENDER=1 pytest tests/test_render.py`, then
review the diff: the integration test proves that the kernel prints the same text back.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from netfw.model.spec import InputError, NicSpec, Rule
from netfw.rules.chains import IpsetSpec
from netfw.rules.guards import link_local
from netfw.rules.render import IPSET_THRESHOLD, ipset_restore_text, render, restore_text
from netfw.model.rules import parse_rules

DATA = Path(__file__).parent / "data" / "render"

EVERY_RULE = [
    {"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": "192.168.1.0", "SIZE": "256", "SECURITY_GROUP_ID": "100"},
    {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "22,80:90,443:443"},
    {"PROTOCOL": "UDP", "RULE_TYPE": "OUTBOUND", "RANGE": "53", "IP": "10.0.0.7", "SIZE": "27"},
    {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8"},
    {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "0", "IP": "10.1.0.3", "SIZE": "300"},
    {"PROTOCOL": "ICMPV6", "RULE_TYPE": "INBOUND", "ICMPV6_TYPE": "128", "IP": "2001:db8::", "SIZE": "16"},
    {"PROTOCOL": "ICMPV6", "RULE_TYPE": "OUTBOUND"},
    {"PROTOCOL": "ICMPV6", "RULE_TYPE": "OUTBOUND", "ICMPV6_TYPE": "255"},
    {"PROTOCOL": "IPSEC", "RULE_TYPE": "OUTBOUND"},
    {"PROTOCOL": "TCP", "RULE_TYPE": "OUTBOUND"},
    {"PROTOCOL": "UDP", "RULE_TYPE": "INBOUND", "RANGE": "1000:2000", "IP": "2001:db8::1", "SIZE": "100"},
    {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "NETWORK_ID": "3", "TYPE": "IP4_6", "IP": "10.2.0.1",
     "IP6_GLOBAL": "2001:db8:1::1", "SIZE": "20"},
    {"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "NETWORK_ID": "4", "TYPE": "ETHER", "SIZE": "10"},
]
SMALL_PEERS = [
    {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "22", "IP": "10.0.0.0", "SIZE": "256"},
    {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND", "IP": "2001:db8::", "SIZE": "3"},
]
NOTHING = [{"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "NETWORK_ID": "4", "TYPE": "ETHER", "SIZE": "10"}]

MAC, IPS = "02:00:0A:00:00:01", ("10.0.0.1", "10.0.0.2", "2001:db8::5")
CASES = {
    "sg0": NicSpec(7, 0, "br0"),
    "sg0-spoofing": NicSpec(7, 0, "br0", mac=MAC, ips=IPS, filter_mac=True, filter_ip=True),
    "sg0-spoofing-router": NicSpec(7, 0, "br0", mac=MAC, ips=IPS, filter_mac=True, filter_ip=True, router=True),
    "sg0-mac-only": NicSpec(7, 0, "br0", mac=MAC, ips=IPS, filter_mac=True),
    "sg0-ip-only-no-mac": NicSpec(7, 0, "br0", ips=("10.0.0.1",), filter_ip=True),
    "every-rule": NicSpec(7, 0, "br0", mac=MAC, ips=IPS, rules=parse_rules(EVERY_RULE)),
    "every-rule-spoofing": NicSpec(
        7, 0, "br0", mac=MAC, ips=IPS, filter_mac=True, filter_ip=True, rules=parse_rules(EVERY_RULE)
    ),
    "small-peers-no-ipset": NicSpec(12, 3, "br0", tap="vnet5", rules=parse_rules(SMALL_PEERS)),
    "matches-nothing": NicSpec(7, 0, "br0", rules=parse_rules(NOTHING)),
}


def _text(spec: NicSpec) -> str:
    """The whole rendering as one reviewable text: each family's restore input, then the ipset input."""
    ruleset = render(spec)
    parts = [f"# {f.family}tables-restore --noflush\n{restore_text(f)}" for f in ruleset.families]
    if ruleset.ipsets:
        parts.append(f"# ipset restore\n{ipset_restore_text(ruleset.ipsets)}")
    return "".join(parts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_expected_file(case):
    path = DATA / f"{case}.txt"
    text = _text(CASES[case])
    if os.environ.get("NETFW_UPDATE_RENDER") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_nic_lets_only_untagged_ipv4_ipv6_and_arp_cross_its_tap(case):
    """Whatever the spoofing flags: ebtables chain `e`, jumped to in both directions, ends in DROP (issue 8)."""
    spec = CASES[case]
    eb = render(spec).family("eb")
    e = "one-12-3-e" if spec.vm == 12 else "one-7-0-e"
    returns = tuple(line for line in eb.chains[e] if not line.endswith(("-j DROP", "-j CONTINUE")))
    assert returns == (f"-A {e} -p IPv4 -j RETURN", f"-A {e} -p IPv6 -j RETURN", f"-A {e} -p ARP -j RETURN")
    assert eb.chains[e][:3] == returns and eb.chains[e][-1] == f"-A {e} -j DROP"
    assert [line for line in eb.chains[e] if line.endswith("-j DROP")] == [f"-A {e} -i {spec.tap} -j DROP",
                                                                          f"-A {e} -j DROP"]
    assert eb.jumps[:2] == (f"-A FORWARD -i {spec.tap} -j {e}", f"-A FORWARD -o {spec.tap} -j {e}")
    spoofing = [e[:-1] + "a", e[:-1] + "d"] if spec.filter_mac or spec.filter_ip else []
    assert list(eb.chains) == [e, *spoofing]


@pytest.mark.parametrize("case", ["sg0-spoofing", "sg0-mac-only", "sg0-ip-only-no-mac"])
def test_nd_checks_first_drop_nd_behind_an_extension_header(case):
    """The u32 offsets of `t` and `l` hold only when ICMPv6 follows the IPv6 header directly (issue 8)."""
    chains = render(CASES[case]).family("ip6").chains
    checked = [c for c in ("one-7-0-t", "one-7-0-l") if c in chains]
    assert checked
    for chain in checked:
        assert chains[chain][0] == f'-A {chain} -m u32 ! --u32 "0x4&0xff00=0x3a00" -j one-7-0-d'
        assert chains[chain][-1] == f"-A {chain} -j one-7-0-d"
    assert chains["one-7-0-d"][-1] == "-A one-7-0-d -j DROP"


@pytest.mark.parametrize("case", ["sg0-spoofing", "sg0-ip-only-no-mac", "every-rule-spoofing", "sg0-spoofing-router"])
def test_dhcp_server_messages_are_dropped_by_their_client_port_whatever_the_source_port(case):
    """A DHCP client takes what reaches its port, 68 (DHCPv6: 546), from any source port: a guard on the server's
    source port (67, 547) let UDP from port 6767 through (issue 19). The guard heads the outbound chain (before the
    stateful accept) and only a router NIC has none."""
    spec = CASES[case]
    for family, port in (("ip", 68), ("ip6", 546)):
        out = render(spec).family(family).chains["one-7-0-o"]
        guard = f"-A one-7-0-o -p udp -m udp --dport {port} -j one-7-0-d"
        assert not [line for line in out if "--sport 67 " in line or "--sport 547 " in line]
        if spec.router:
            assert not [line for line in out if f"--dport {port} " in line]
            continue
        assert out.count(guard) == 1
        assert out.index(guard) < out.index("-A one-7-0-o -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        # a client's own messages go to the server's port (67, 547): no drop names it
        assert not [line for line in out if ("--dport 67 " in line or "--dport 547 " in line)
                    and line.endswith("-j one-7-0-d")]


def test_nd_link_layer_options_are_each_checked_and_a_third_option_is_dropped():
    """Every link-layer option (type 1 or 2) among the first two options of an RS, NS or NA must be 8 bytes with
    the NIC's MAC; a third option drops the message. The kernel takes the first option of each type wherever it
    stands, so checking the first option only let [source option: the NIC's MAC][target option: a forged MAC]
    through (issue 19). `0x30`/`0x40` is where RS/NS-NA options start; `>>0xd&0x7f8@` hops over an option by its
    length byte (times 8)."""
    ip6 = render(CASES["sg0-spoofing"]).family("ip6").chains
    lines = ['-A one-7-0-l -m u32 ! --u32 "0x4&0xff00=0x3a00" -j one-7-0-d']
    for kind, at in ((133, "0x30"), (135, "0x40"), (136, "0x40")):
        head, tail = at, f"0x{int(at, 16) + 4:x}"
        hop = f"{at}>>0xd&0x7f8@"  # to the next option
        nd = f"-A one-7-0-l -p ipv6-icmp -m icmp6 --icmpv6-type {kind}"
        lines += [
            f'{nd} -m u32 --u32 "{head}>>0x18=0x1:0x2" -m u32 ! --u32 "{head}=0x1010200,0x2010200&&{tail}=0xa000001"'
            " -j one-7-0-d",
            f'{nd} -m u32 --u32 "{hop}{head}>>0x18=0x1:0x2" -m u32 ! --u32 "{hop}{head}=0x1010200,0x2010200'
            f'&&{hop}{tail}=0xa000001" -j one-7-0-d',
            f'{nd} -m u32 --u32 "{hop}{hop}{head}=0x0:0xffffffff" -j one-7-0-d',
            f"{nd} -j RETURN",
        ]
    assert ip6["one-7-0-l"] == (*lines, "-A one-7-0-l -j one-7-0-d")
    # a DAD probe (from ::) is a neighbour solicitation too: its options are checked before it is accepted
    dad = "-A one-7-0-o -s ::/128 -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j "
    out = ip6["one-7-0-o"]
    assert out.index(dad + "one-7-0-t") < out.index(dad + "one-7-0-l") < out.index(dad + "ACCEPT")
    assert dad + "one-7-0-l" not in render(CASES["sg0-ip-only-no-mac"]).family("ip6").chains["one-7-0-o"]


@pytest.mark.parametrize("last", range(1, 40))
def test_ipset_threshold(last):
    """Up to IPSET_THRESHOLD blocks give one line each; one block more gives a single line and an ipset."""
    first = ipaddress.ip_address("10.0.0.1")
    blocks = len(list(ipaddress.summarize_address_range(first, ipaddress.ip_address(f"10.0.0.{last}"))))
    ruleset = render(NicSpec(7, 0, "br0", rules=(Rule("ALL", "INBOUND", ip=str(first), size=last),)))
    lines = [r for r in ruleset.family("ip").chains["one-7-0-i"] if " -s 10.0.0." in r or "--match-set" in r]
    if blocks <= IPSET_THRESHOLD:
        assert (len(lines), len(ruleset.ipsets)) == (blocks, 0)
    else:
        assert (len(lines), len(ruleset.ipsets)) == (1, 1)


def test_ipset_names_and_temporary_text():
    spec = NicSpec(7, 0, "br0", rules=(Rule("TCP", "OUTBOUND", ports="443", ip="10.0.0.1", size=31),))
    (ipset,) = render(spec).ipsets
    assert ipset == IpsetSpec(
        "one-7-0-o1-4", "inet",
        ("10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/30", "10.0.0.8/29", "10.0.0.16/28"),
        "one-7-0-o1-4t",
    )
    assert ipset_restore_text([ipset], temporary=True).splitlines()[:3] == [
        "create one-7-0-o1-4t hash:net family inet", "flush one-7-0-o1-4t", "add one-7-0-o1-4t 10.0.0.1/32"]
    assert ("-A one-7-0-o -p tcp -m set --match-set one-7-0-o1-4 dst -m multiport --dports 443 "
            '-m comment --comment "rule 1" -j one-7-0-c') in render(spec).family("ip").chains["one-7-0-o"]
    assert ipset_restore_text([]) == ""


def test_ipset_names_fit_31_characters():
    rules = tuple(Rule("ALL", "INBOUND", ip="10.0.0.1", size=30) for _ in range(12))
    spec = NicSpec(9999999999, 999, "br0", tap="vnet0", rules=rules)
    assert all(len(s.name) <= 31 and len(s.temporary_name) <= 31 for s in render(spec).ipsets)


def test_outbound_peer_is_destination_and_port_is_remote():
    spec = NicSpec(7, 0, "br0", rules=(Rule("TCP", "OUTBOUND", ports="25", ip="192.0.2.1", size=1),))
    assert '-A one-7-0-o -d 192.0.2.1/32 -p tcp -m multiport --dports 25 -m comment --comment "rule 1" -j one-7-0-c' in (
        render(spec).family("ip").chains["one-7-0-o"])
    assert not any("--dports" in r for r in render(spec).family("ip6").chains["one-7-0-o"])


@pytest.mark.parametrize(
    ("mac", "address"),
    [("02:00:0a:00:00:01", "fe80::aff:fe00:1"), ("52:54:00:12:34:56", "fe80::5054:ff:fe12:3456"),
     ("00:00:00:00:00:00", "fe80::200:ff:fe00:0")],
)
def test_link_local_is_eui64(mac, address):
    assert str(link_local(mac)) == address


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"filter_mac": True}, "the MAC spoofing filter needs the NIC's MAC"),
        ({"mac": "02:00:0a:00:00", "filter_mac": True}, "MAC '02:00:0a:00:00' is not a MAC address"),
        ({"ips": ("10.0.0.256",), "filter_ip": True}, "address '10.0.0.256' is not an IPv4 or IPv6 address"),
    ],
)
def test_bad_identity_is_refused_before_rendering(fields, message):
    """The spec validates itself (it used to be render that refused): no bad identity ever reaches render."""
    with pytest.raises(InputError) as e:
        NicSpec(7, 0, "br0", **fields)
    assert str(e.value) == message


def test_nic_0_is_in_the_default_conntrack_zone_and_the_others_in_zones_of_their_own():
    """NIC 0 needs no raw rule (zone 0); NIC n > 0 gets zone n + 1, never 1 (earlier netfw's zone of NIC 0)."""
    from netfw.rules.render import zone, zones

    nic0, nic1, nic3 = (zones(NicSpec(7, n, "vnbr0")) for n in (0, 1, 3))
    assert [z.jumps for z in nic0] == [(), ()]
    assert [z.retired for z in nic0] == [("-A PREROUTING -i one-br-7-0 -j CT --zone 1",)] * 2
    assert [z.jumps for z in nic1] == [("-A PREROUTING -i one-br-7-1 -j CT --zone 2",)] * 2
    assert [z.table for z in nic3] == ["raw", "raw"] and nic3[0].jumps == ("-A PREROUTING -i one-br-7-3 -j CT --zone 4",)
    assert [zone(NicSpec(7, n, "vnbr0")) for n in range(4)] == [0, 2, 3, 4]
