"""Security-group rules in force, proved with real traffic between simulated VMs (sandbox only).

One lab for the whole module: VM 1 (guest g1-0, the VM under test, with anti-spoofing on) and a peer guest g2-0 on
the VN bridge vnbr0 (not attached: it filters nothing, so what is dropped is dropped by VM 1's firewall); VM 3 has
two NICs (g3-0, g3-1) with different rules. Every guest runs a traffic.Receiver. Tests switch VM 1's rules with
api.update (use()) rather than rebuilding the lab.

Addresses: 10.77.0.0/24 and fd00:77::/64 only. Offsets are decimal in both families: a6(21) is fd00:77::15.
"""

from __future__ import annotations

import ipaddress
import time

import pytest

from netfw import api, runner
from netfw import state
from netfw.model.spec import NicSpec
from netfw.model.rules import parse_rules
from netfw.transaction import TransactionError

from . import lab as lab_mod
from . import frames as fr
from . import traffic as t
from .lab import sh


def a4(n: int) -> str:
    return str(ipaddress.IPv4Address("10.77.0.0") + n)


def a6(n: int) -> str:
    return str(ipaddress.IPv6Address("fd00:77::") + n)


VM1, PEER = "g1-0", "g2-0"
MAC = {"g1-0": "02:77:00:00:00:01", "g2-0": "02:77:00:00:00:02", "g3-0": "02:77:00:00:03:00",
       "g3-1": "02:77:00:00:03:01"}
HOST = {"g1-0": 1, "g2-0": 2, "g3-0": 130, "g3-1": 131}  # the offset of each guest's own address
PEER_EXTRA = (20, 21, 30, 31, 50, 51, 52, 60, 61, 62)  # more addresses of the peer: edges of the rules' ranges
FAMILIES = {4: a4, 6: a6}

TCP_PORTS = [79, 80, 81, 82, 90, 91, 179, 180, 190, 191, 442, 443, 444, 1443, 1444, 2222, 2223, 3333, 5000, 6000,
             7777]
UDP_PORTS = [80, 180, 4999, 5000, 5010, 5011, 5999, 6000, 6001, 6010, 6011, 7000, 7777]

# Security group of VM 1: every rule type, both directions, each direction with its own ports and types so that a
# rule landing in the wrong direction shows.
IN_TCP, OUT_TCP = "80:90,443", "180:190,1443"


def vm1_rules(in_tcp: str = IN_TCP, out_tcp: str = OUT_TCP, in_range_size: int = 10, extra: tuple = ()) -> list:
    return [
        {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": in_tcp},
        {"PROTOCOL": "UDP", "RULE_TYPE": "inbound", "RANGE": "5000:5010"},
        {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8"},
        {"PROTOCOL": "ICMPV6", "RULE_TYPE": "INBOUND", "ICMPV6_TYPE": "128"},
        {"PROTOCOL": "IPSEC", "RULE_TYPE": "INBOUND"},
        # 10 addresses from offset 21: 5 CIDR blocks per family, so matched with an ipset
        {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "2222", "IP": a4(21), "SIZE": str(in_range_size)},
        {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "2222", "IP": a6(21), "SIZE": str(in_range_size)},
        # 2 addresses from offset 50: one /31 (/127) block, a plain -s match
        {"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": a4(50), "SIZE": "2"},
        {"PROTOCOL": "ALL", "RULE_TYPE": "INBOUND", "IP": a6(50), "SIZE": "2"},
        {"PROTOCOL": "TCP", "RULE_TYPE": "OUTBOUND", "RANGE": out_tcp},
        {"PROTOCOL": "UDP", "RULE_TYPE": "OUTBOUND", "RANGE": "6000:6010"},
        {"PROTOCOL": "ICMP", "RULE_TYPE": "OUTBOUND", "ICMP_TYPE": "13"},
        {"PROTOCOL": "ICMPV6", "RULE_TYPE": "OUTBOUND", "ICMPV6_TYPE": "139"},
        {"PROTOCOL": "IPSEC", "RULE_TYPE": "OUTBOUND", "IP": a4(2)},
        {"PROTOCOL": "IPSEC", "RULE_TYPE": "OUTBOUND", "IP": a6(2)},
        {"PROTOCOL": "TCP", "RULE_TYPE": "OUTBOUND", "RANGE": "3333", "IP": a4(21), "SIZE": "10"},
        {"PROTOCOL": "TCP", "RULE_TYPE": "OUTBOUND", "RANGE": "3333", "IP": a6(21), "SIZE": "10"},
        {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND", "IP": a4(60), "SIZE": "2"},
        {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND", "IP": a6(60), "SIZE": "2"},
        *extra,
    ]


def vm1_spec(**kw) -> NicSpec:
    return NicSpec(1, 0, "vnbr0", rules=parse_rules(vm1_rules(**kw)), mac=MAC[VM1], ips=(a4(1), a6(1)),
                   filter_mac=True, filter_ip=True)


BASE = vm1_spec()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The lab, built once: bridge, guests, receivers; VM 1 and VM 3 attached."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NETFW_STATE_DIR", str(tmp_path_factory.mktemp("sg") / "state"))
    lab_mod.reset()
    lab = lab_mod.Lab()
    lab.bridge("vnbr0")
    receivers: dict[str, t.Receiver] = {}
    try:
        for guest, host in HOST.items():
            vm, nic = (int(x) for x in guest[1:].split("-"))
            lab.vm(vm, nic, f"{a4(host)}/24", ip6=f"{a6(host)}/64", mac=MAC[guest])
        for n in PEER_EXTRA:
            sh("ip", "-n", PEER, "addr", "add", f"{a4(n)}/24", "dev", "eth0")
            sh("ip", "-n", PEER, "addr", "add", f"{a6(n)}/64", "dev", "eth0", "nodad")
        sh("ip", "netns", "exec", PEER, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1")
        for guest in HOST:
            receivers[guest] = t.Receiver(guest, TCP_PORTS, UDP_PORTS)
        api.attach(BASE)
        api.attach_all([vm3_spec(0), vm3_spec(1)])
        yield receivers
    finally:
        for r in receivers.values():
            r.close()
        lab_mod.reset()
        mp.undo()


def use(spec: NicSpec) -> None:
    """Make spec the NIC's rules (an update when they differ from what is applied)."""
    applied = state.load(state.state_dir(), spec.vm, spec.nic)
    if applied is None or applied.spec != spec:
        api.update(spec)


def check(src: str, dst_receiver: t.Receiver, probes: list[t.Probe]) -> None:
    bad = t.mismatches(src, probes, dst_receiver)
    assert not bad, "\n".join(bad)


# --- every rule type: allowed probe passes, near miss dropped -------------------------------------------------------


def inbound_probes(f: int) -> list[t.Probe]:
    a = FAMILIES[f]
    vm = a(1)
    probes = [
        t.tcp(vm, 80, True, "low end of RANGE 80:90"),
        t.tcp(vm, 90, True, "high end of 80:90"),
        t.tcp(vm, 443, True, "single port 443"),
        t.tcp(vm, 79, False, "just below 80:90"),
        t.tcp(vm, 91, False, "just above 80:90"),
        t.tcp(vm, 442, False, "just below 443"),
        t.tcp(vm, 444, False, "just above 443"),
        t.tcp(vm, 180, False, "an OUTBOUND port, not inbound"),
        t.udp(vm, 80, False, "allowed TCP port, but UDP: another protocol"),
        t.udp(vm, 5000, True, "low end of UDP 5000:5010"),
        t.udp(vm, 5010, True, "high end of UDP 5000:5010"),
        t.udp(vm, 4999, False, "just below 5000:5010"),
        t.udp(vm, 5011, False, "just above 5000:5010"),
        t.tcp(vm, 5000, False, "allowed UDP port, but TCP: another protocol"),
        t.udp(vm, 6000, False, "an OUTBOUND UDP port, not inbound"),
        t.esp(vm, True, "IPSEC is ESP"),
        t.other_protocol(vm, False, "protocol 253 is another protocol than IPSEC (ESP)"),
        t.tcp(vm, 2222, True, "first address of IP+SIZE", src=a(21)),
        t.tcp(vm, 2222, True, "last address of IP+SIZE", src=a(30)),
        t.tcp(vm, 2222, False, "address just before IP+SIZE", src=a(20)),
        t.tcp(vm, 2222, False, "address just after IP+SIZE", src=a(31)),
        t.tcp(vm, 2223, False, "right peer, port outside RANGE", src=a(21)),
        t.tcp(vm, 3333, False, "an OUTBOUND rule's port and peers", src=a(21)),
        t.udp(vm, 7000, True, "ALL from IP+SIZE 2, first", src=a(50)),
        t.udp(vm, 7000, True, "ALL from IP+SIZE 2, last", src=a(51)),
        t.udp(vm, 7000, False, "ALL from IP+SIZE 2: just after", src=a(52)),
        t.other_protocol(vm, True, "ALL from IP+SIZE allows any protocol", src=a(50)),
        t.udp(vm, 7000, False, "ALL to an OUTBOUND peer range, not from it", src=a(60)),
    ]
    if f == 4:
        probes += [
            t.icmp(vm, 8, True, "ICMP_TYPE 8 (echo request)"),
            t.icmp(vm, 13, False, "ICMP type 13 (timestamp): another type"),
            t.icmp(vm, 13, True, "ALL from IP+SIZE: any ICMP", src=a(50)),
            t.ah(vm, False, "AH is another protocol than IPSEC (ESP)"),
        ]
    else:
        probes += [
            t.icmp(vm, 128, True, "ICMPV6_TYPE 128 (echo request)"),
            t.icmp(vm, 139, False, "ICMPv6 type 139 (node information query): another type"),
            t.icmp(vm, 139, True, "ALL from IP+SIZE: any ICMPv6", src=a(50)),
        ]
    return probes


def outbound_probes(f: int) -> list[t.Probe]:
    a = FAMILIES[f]
    peer = a(2)
    probes = [
        t.tcp(peer, 180, True, "low end of RANGE 180:190"),
        t.tcp(peer, 190, True, "high end of 180:190"),
        t.tcp(peer, 1443, True, "single port 1443"),
        t.tcp(peer, 179, False, "just below 180:190"),
        t.tcp(peer, 191, False, "just above 180:190"),
        t.tcp(peer, 1444, False, "just above 1443"),
        t.tcp(peer, 80, False, "an INBOUND port, not outbound"),
        t.udp(peer, 180, False, "allowed TCP port, but UDP: another protocol"),
        t.udp(peer, 6000, True, "low end of UDP 6000:6010"),
        t.udp(peer, 6010, True, "high end of UDP 6000:6010"),
        t.udp(peer, 5999, False, "just below 6000:6010"),
        t.udp(peer, 6011, False, "just above 6000:6010"),
        t.tcp(peer, 6000, False, "allowed UDP port, but TCP: another protocol"),
        t.udp(peer, 5000, False, "an INBOUND UDP port, not outbound"),
        t.esp(peer, True, "IPSEC to IP (size 1)"),
        t.esp(a(20), False, "IPSEC to an address outside IP"),
        t.other_protocol(peer, False, "protocol 253 is another protocol than IPSEC (ESP)"),
        t.tcp(a(21), 3333, True, "first address of IP+SIZE"),
        t.tcp(a(30), 3333, True, "last address of IP+SIZE"),
        t.tcp(a(20), 3333, False, "address just before IP+SIZE"),
        t.tcp(a(31), 3333, False, "address just after IP+SIZE"),
        t.tcp(a(21), 2222, False, "an INBOUND rule's port and peers"),
        t.udp(a(60), 7000, True, "ALL to IP+SIZE 2, first"),
        t.udp(a(61), 7000, True, "ALL to IP+SIZE 2, last"),
        t.udp(a(62), 7000, False, "ALL to IP+SIZE 2: just after"),
        t.other_protocol(a(60), True, "ALL to IP+SIZE allows any protocol"),
        t.udp(a(50), 7000, False, "ALL from an INBOUND peer range, not to it"),
    ]
    if f == 4:
        probes += [
            t.icmp(peer, 13, True, "ICMP_TYPE 13 (timestamp)"),
            t.icmp(peer, 8, False, "ICMP type 8 (echo): another type"),
            t.icmp(a(60), 8, True, "ALL to IP+SIZE: any ICMP"),
            t.ah(peer, False, "AH is another protocol than IPSEC (ESP)"),
        ]
    else:
        probes += [
            t.icmp(peer, 139, True, "ICMPV6_TYPE 139 (node information query)"),
            t.icmp(peer, 128, False, "ICMPv6 type 128 (echo): another type"),
            t.icmp(a(60), 128, True, "ALL to IP+SIZE: any ICMPv6"),
        ]
    return probes


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_inbound_rules_allow_exactly_what_they_say(env, family):
    use(BASE)
    check(PEER, env[VM1], inbound_probes(family))


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
def test_outbound_rules_allow_exactly_what_they_say(env, family):
    use(BASE)
    check(VM1, env[PEER], outbound_probes(family))


# --- anti-spoofing ------------------------------------------------------------------------------------------------


def test_forged_source_ip_is_dropped_real_one_passes(env):
    """VM 1 gets a second address of its own making (and static neighbours, so that no ARP/ND is needed)."""
    use(BASE)
    forged = {4: a4(99), 6: a6(99)}
    try:
        for f, a in FAMILIES.items():
            plen = 24 if f == 4 else 64
            sh("ip", "-n", VM1, "addr", "add", f"{forged[f]}/{plen}", "dev", "eth0", *(["nodad"] if f == 6 else []))
            sh("ip", "-n", VM1, "neigh", "replace", a(2), "lladdr", MAC[PEER], "dev", "eth0", "nud", "permanent")
        probes = []
        for f, a in FAMILIES.items():
            probes += [
                t.udp(a(2), 6000, True, "real source, allowed port", src=a(1)),
                t.udp(a(2), 6000, False, "forged source IP, allowed port", src=forged[f]),
                t.tcp(a(2), 180, False, "forged source IP, allowed TCP port", src=forged[f]),
                t.udp(a(60), 7000, False, "forged source IP to an ALL peer", src=forged[f]),
            ]
        probes.append(t.icmp(a4(2), 13, False, "forged source IP, allowed ICMP type", src=forged[4]))
        check(VM1, env[PEER], probes)
    finally:
        for f, a in FAMILIES.items():
            sh("ip", "-n", VM1, "addr", "del", f"{forged[f]}/{24 if f == 4 else 64}", "dev", "eth0", check=False)
            sh("ip", "-n", VM1, "neigh", "del", a(2), "dev", "eth0", check=False)


def test_forged_source_mac_is_dropped_real_one_passes(env):
    """Hand-made frames from VM 1 with its real IP and an allowed port: only the source MAC differs."""
    use(BASE)
    forged = "02:77:00:00:00:99"
    probes = []
    for f, a in FAMILIES.items():
        def build(mac, a=a):
            return lambda tag: fr.udp_frame(mac, MAC[PEER], a(1), a(2), 6000, tag)
        probes += [
            t.frame(build(MAC[VM1]), True, f"IPv{f} frame from the real MAC"),
            t.frame(build(forged), False, f"IPv{f} frame from a forged MAC"),
        ]
    check(VM1, env[PEER], probes)
    # and the guest's own stack with a changed MAC address gets nothing through either
    try:
        sh("ip", "-n", VM1, "link", "set", "eth0", "address", forged)
        check(VM1, env[PEER], [t.udp(a4(2), 6000, False, "guest stack with a forged MAC"),
                               t.udp(a6(2), 6000, False, "guest stack with a forged MAC")])
    finally:
        sh("ip", "-n", VM1, "link", "set", "eth0", "address", MAC[VM1])
        for f, a in FAMILIES.items():
            sh("ip", "-n", PEER, "neigh", "del", a(1), "dev", "eth0", check=False)
    check(VM1, env[PEER], [t.udp(a4(2), 6000, True, "real MAC again"), t.udp(a6(2), 6000, True, "real MAC again")])


def test_forged_arp_reply_is_dropped_real_one_passes(env):
    """ARP replies from VM 1 to the peer: only one telling the truth (own MAC, own IP) may reach it."""
    use(BASE)
    rx = env[PEER]
    real, stolen, fake_mac = a4(1), a4(130), "02:77:00:00:00:98"  # a4(130) belongs to VM 3
    cases = [  # (ethernet source, sender MAC, sender IP, should arrive, why)
        (MAC[VM1], MAC[VM1], real, True, "the truth"),
        (MAC[VM1], MAC[VM1], stolen, False, "claims another VM's IP (ARP poisoning)"),
        (MAC[VM1], MAC[VM1], a4(77), False, "claims an unused IP"),
        (MAC[VM1], fake_mac, real, False, "own IP at a forged sender MAC"),
        (fake_mac, fake_mac, real, False, "forged Ethernet source and sender MAC"),
    ]
    sh("ip", "-n", PEER, "neigh", "del", stolen, "dev", "eth0", check=False)
    frames = [fr.arp_frame(esrc, MAC[PEER], 2, sha, spa, MAC[PEER], a4(2)) for esrc, sha, spa, _, _ in cases]
    start = len(rx.events)
    t.send(VM1, [t.Probe("frame", "-", True, "arp", frame=fr) for fr in frames], rx)
    arrived = rx.events[start:]
    bad = []
    for (esrc, sha, spa, expect, why) in cases:
        got = any(e["ev"] == "arp" and e["op"] == 2 and e["esrc"] == esrc and e["sha"] == sha and e["spa"] == spa
                  and e["tpa"] == a4(2) for e in arrived)
        if got != expect:
            bad.append(f"ARP reply {spa} is-at {sha} (frame from {esrc}, {why}): expected "
                       f"{'arrival' if expect else 'drop'}, got {'arrival' if got else 'drop'}")
    assert not bad, "\n".join(bad)
    neigh = sh("ip", "-n", PEER, "neigh", "show", stolen, "dev", "eth0").stdout
    assert MAC[VM1] not in neigh, f"the peer's ARP cache was poisoned: {neigh}"


def test_forged_neighbour_advertisement_or_solicitation_is_dropped_real_one_passes(env):
    """IPv6's ARP: ND messages from VM 1 to the peer; only those telling the truth about VM 1 may reach it.

    The link-layer address inside an NA (target) or NS (source option) goes into the receiver's neighbour cache,
    so a lie there redirects another VM's traffic (a4(130)/a6(130) belong to VM 3) exactly like a forged ARP reply.
    """
    use(BASE)
    rx, me, victim, fake_mac = env[PEER], a6(1), a6(130), "02:77:00:00:00:98"

    def na(src, target, lladdr):
        return lambda tag: fr.advert_frame(MAC[VM1], MAC[PEER], src, a6(2), target, lladdr, tag)

    def ns(src, lladdr):
        return lambda tag: fr.solicit_frame(MAC[VM1], MAC[PEER], src, a6(2), a6(2), lladdr, tag)

    probes = [
        t.frame(na(me, me, MAC[VM1]), True, "NA: the truth"),
        t.frame(ns(me, MAC[VM1]), True, "NS: the truth"),
        t.frame(na(me, victim, MAC[VM1]), False, "NA claiming another VM's address (neighbour cache poisoning)"),
        t.frame(na(me, me, fake_mac), False, "NA for its own address at a forged MAC"),
        t.frame(na(victim, victim, MAC[VM1]), False, "NA from another VM's source address"),
        t.frame(ns(victim, MAC[VM1]), False, "NS from another VM's source address (poisons like an NA)"),
    ]
    # the peer knows VM 3's real MAC, as a victim would
    assert list(t.send(PEER, [t.tcp(victim, 80, True)], env["g3-0"]).values()) == [True]
    try:
        bad = t.mismatches(VM1, probes, rx)
        neigh = sh("ip", "-n", PEER, "neigh", "show", victim, "dev", "eth0").stdout
        if MAC[VM1] in neigh:
            bad.append(f"the peer's neighbour cache was poisoned: {neigh.strip()}")
        assert not bad, "\n".join(bad)
    finally:
        for addr in (victim, me):
            sh("ip", "-n", PEER, "neigh", "del", addr, "dev", "eth0", check=False)


# --- two NICs of one VM -------------------------------------------------------------------------------------------


def vm3_spec(nic: int) -> NicSpec:
    guest = f"g3-{nic}"
    port = 80 + nic  # NIC 0: tcp 80 in, udp 6000 out; NIC 1: tcp 81 in, udp 6001 out
    rules = [{"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": str(port)},
             {"PROTOCOL": "UDP", "RULE_TYPE": "OUTBOUND", "RANGE": str(6000 + nic)},
             {"PROTOCOL": "ICMP" if nic == 0 else "ICMPV6", "RULE_TYPE": "INBOUND"}]
    return NicSpec(3, nic, "vnbr0", rules=parse_rules(rules), mac=MAC[guest],
                   ips=(a4(HOST[guest]), a6(HOST[guest])), filter_mac=True, filter_ip=True)


def test_two_nics_of_one_vm_do_not_leak_into_each_other(env):
    groups = []
    for f, a in FAMILIES.items():
        n0, n1 = a(130), a(131)
        groups += [
            (PEER, [t.tcp(n0, 80, True, "NIC 0's own inbound port"),
                    t.tcp(n0, 81, False, "NIC 1's inbound port, on NIC 0"),
                    t.icmp(n0, 8 if f == 4 else 128, f == 4, "NIC 0 allows ICMP only")], env["g3-0"]),
            (PEER, [t.tcp(n1, 81, True, "NIC 1's own inbound port"),
                    t.tcp(n1, 80, False, "NIC 0's inbound port, on NIC 1"),
                    t.icmp(n1, 8 if f == 4 else 128, f == 6, "NIC 1 allows ICMPv6 only")], env["g3-1"]),
            ("g3-0", [t.udp(a(2), 6000, True, "NIC 0's own outbound port"),
                      t.udp(a(2), 6001, False, "NIC 1's outbound port, from NIC 0")], env[PEER]),
            ("g3-1", [t.udp(a(2), 6001, True, "NIC 1's own outbound port"),
                      t.udp(a(2), 6000, False, "NIC 0's outbound port, from NIC 1")], env[PEER]),
        ]
    bad = t.mismatches_all(groups)
    assert not bad, "\n".join(bad)
    assert api.verify(3) == {0: [], 1: []}


# --- updates ------------------------------------------------------------------------------------------------------


def test_update_keeps_allowed_established_flows_and_cuts_the_others(env):
    """Open TCP connections in both directions and families; the update drops 443 (in) and 1443 (out)."""
    use(BASE)
    sessions = {}
    try:
        for f, a in FAMILIES.items():
            sessions[("in", f, 80)] = t.Session(PEER, a(1), 80)
            sessions[("in", f, 443)] = t.Session(PEER, a(1), 443)
            sessions[("out", f, 180)] = t.Session(VM1, a(2), 180)
            sessions[("out", f, 1443)] = t.Session(VM1, a(2), 1443)
        assert all(t.say_all(sessions).values())
        api.update(vm1_spec(in_tcp="80:90", out_tcp="180:190"))  # 443 in and 1443 out no longer allowed
        alive = t.say_all(sessions)
        assert alive == {key: key[2] in (80, 180) for key in sessions}, alive
        assert t.say_all(sessions) == alive  # and the cut ones stay cut
    finally:
        for s in sessions.values():
            s.close()
    use(BASE)


def _zones(ns: str) -> dict[int, int]:
    """{conntrack zone: entries} in namespace ns (zone 0 is printed without `zone=`)."""
    out = sh(*t.in_ns(ns, "conntrack", "-L"), check=False).stdout
    found: dict[int, int] = {}
    for line in out.splitlines():
        zone = next((int(w[5:]) for w in line.split() if w.startswith("zone=")), 0)
        found[zone] = found.get(zone, 0) + 1
    return found


def test_an_update_retires_nic_0s_zone_rule_of_an_earlier_netfw(env):
    """Earlier netfw put NIC 0's flows in conntrack zone 1 with a raw-table rule; NIC 0 now uses the default zone 0
    and loads no raw table. An update of a NIC attached the old way takes the rule out, forgets the flows of zone 1
    too, and the flows the new rules forbid are cut; verify names the rule as drift until then."""
    use(BASE)
    ns, rule = "one-1", "PREROUTING -i one-br-1-0 -j CT --zone 1"
    for tool in ("iptables", "ip6tables"):  # what the earlier netfw's attach loaded
        sh(*t.in_ns(ns, tool, "-t", "raw", "-A", *rule.split()))
    assert any("left over from an earlier netfw" in d for d in api.verify(1)[0])
    sessions = {}
    try:
        for f, a in FAMILIES.items():
            sessions[("in", f, 80)] = t.Session(PEER, a(1), 80)
            sessions[("in", f, 443)] = t.Session(PEER, a(1), 443)
        assert all(t.say_all(sessions).values())
        assert _zones(ns).get(1, 0) >= 4  # the four sessions are tracked in zone 1
        api.update(vm1_spec(in_tcp="80:90"))  # 443 no longer allowed
        for tool in ("iptables-save", "ip6tables-save"):
            assert "--zone" not in sh(*t.in_ns(ns, tool, "-t", "raw")).stdout
        assert 1 not in _zones(ns)
        alive = t.say_all(sessions)
        assert alive == {key: key[2] == 80 for key in sessions}, alive
        assert api.verify(1) == {0: []}
    finally:
        for s in sessions.values():
            s.close()
    use(BASE)


def test_twenty_updates_let_nothing_through_to_a_forbidden_port(env):
    """A flood of TCP connection attempts and UDP datagrams to port 7777 (never allowed) while the rules change
    20 times, alternating two rule sets that differ in ports and in an ipset's members.

    In the same run, the controls: the same flood to ports that both sets allow (TCP 82, UDP 5000) shows that what
    gets through is seen, in both families; and after each update a connection opens to the port that only the set
    just loaded allows (80: BASE, 91: the other one, which also allows 2222 from a(31) through its ipset), so each
    set was in force in turn. (These probes add ~0.1 s between updates; all 20 changes still happen under the flood.)
    """
    use(BASE)
    rx = env[VM1]
    other = vm1_spec(in_tcp="81:91,443", in_range_size=14)  # 80 only in BASE, 91 only here, 82 and 443 in both
    check(PEER, rx, [t.tcp(a(1), 91, False, "BASE does not allow 91") for a in (a4, a6)]
          + [t.tcp(a(1), 2222, False, "nor 2222 from a(31)", src=a(31)) for a in (a4, a6)])
    mark = len(rx.events)
    floods = [t.Flood(PEER, a4(1), 7777), t.Flood(PEER, a6(1), 7777)]
    controls = [t.Flood(PEER, a4(1), (82, 5000)), t.Flood(PEER, a6(1), (82, 5000))]
    in_force = []
    start = time.monotonic()
    try:
        for i in range(20):
            spec, port = (other, 91) if i % 2 == 0 else (BASE, 80)
            api.update(spec)
            probes = [t.tcp(a(1), port, True) for a in (a4, a6)]
            if spec == other:  # and its ipset's members: a(31) is in 21..34 (size 14), not in 21..30
                probes += [t.tcp(a(1), 2222, True, src=a(31)) for a in (a4, a6)]
            opened = t.send(PEER, probes, rx, settle=0)
            in_force.append((i, port, [opened[p.tag] for p in probes]))
    finally:
        took = time.monotonic() - start
        time.sleep(0.3)
        counts = [fl.stop() for fl in floods]
        control = [fl.stop() for fl in controls]
    leaked = rx.select(port=7777)
    assert not leaked, leaked[:5]
    assert not any(c["connected"] for c in counts), counts
    assert all(c["syn"] >= 100 and c["udp"] >= 100 for c in counts), (counts, took)  # it did run throughout

    # the positive control: to an allowed port, the same flood gets through and the receiver sees it
    arrived = [e for e in rx.events[mark:] if e["ev"] in ("tcp-accept", "udp")]
    for f in FAMILIES:
        seen = [(e["ev"], e["port"]) for e in arrived if e["src"].startswith("::ffff:") == (f == 4)]  # dual-stack
        assert seen.count(("tcp-accept", 82)) >= 100 and seen.count(("udp", 5000)) >= 100, (f, control, took)
    assert all(c["ports"][82]["connected"] >= 100 for c in control), control

    # each rule set was in force in turn: after each update, its own port opened (IPv4 and IPv6)
    assert all(all(opened) for _, _, opened in in_force), in_force
    assert api.verify(1) == {0: []}
    check(PEER, rx, [t.tcp(a4(1), 80, True, "still allowed after the updates"),
                     t.tcp(a6(1), 91, False, "the last update restored 80:90")])


def test_update_that_fails_to_load_keeps_the_old_rules(env, monkeypatch):
    """ip6tables-restore fails (injected) after iptables-restore loaded the new IPv4 rules: all is rolled back."""
    use(BASE)
    new = vm1_spec(in_tcp="7777", in_range_size=14)
    real = runner._execute
    failed = []

    def fail_ip6tables_restore(argv, stdin, timeout):
        if "ip6tables-restore" in argv and not failed:
            failed.append(argv)
            return runner.Result(tuple(argv), 99, "", "injected")
        return real(argv, stdin, timeout)

    before = lab_mod.snapshot()["one-1"]
    monkeypatch.setattr(runner, "_execute", fail_ip6tables_restore)
    with pytest.raises(TransactionError) as info:
        api.update(new)
    monkeypatch.setattr(runner, "_execute", real)
    assert failed, "ip6tables-restore was never run"
    assert "injected" in str(info.value)
    assert not info.value.undo_failures
    assert api.verify(1) == {0: []}
    assert lab_mod.snapshot()["one-1"] == before  # links, rules (ip, ip6, eb, raw) and ipsets as they were
    probes = []
    for f, a in FAMILIES.items():
        probes += [t.tcp(a(1), 80, True, "old rules: 80 allowed"),
                   t.tcp(a(1), 7777, False, "only the failed new rules allow 7777"),
                   t.tcp(a(1), 2222, False, "outside the old IP+SIZE, inside the failed one", src=a(31))]
    check(PEER, env[VM1], probes)
    assert state.load(state.state_dir(), 1, 0).spec == BASE


def test_verify_after_update_compares_with_the_new_rules_and_sees_a_tampered_ipset(env):
    use(BASE)
    new = vm1_spec(in_range_size=14)  # the ipsets of rules 6 and 7 change: 21..34, still 5 blocks
    api.update(new)
    assert api.verify(1) == {0: []}
    old = [d for d in api.verify(1, expected=BASE)[0] if "document differs" not in d]
    assert any("ipset" in d for d in old), old  # the live sets are the new ones, not the old rules
    ns = "/run/netns/one-1"
    sets = sh("nsenter", f"--net={ns}", "ipset", "list", "-n").stdout.split()
    v4 = [s for s in sets if s.startswith("one-1-0-i") and s.endswith(("-4", "-4t"))]
    assert len(v4) == 1, sets
    check(PEER, env[VM1], [t.tcp(a4(1), 2222, False, "outside IP+SIZE", src=a4(20))])
    sh("nsenter", f"--net={ns}", "ipset", "add", v4[0], a4(20))
    try:
        drift = api.verify(1)[0]
        assert any(v4[0] in d for d in drift), drift
        check(PEER, env[VM1], [t.tcp(a4(1), 2222, True, "the tampered set lets it in", src=a4(20))])
        api.attach(new)  # attach repairs what verify found
        assert api.verify(1) == {0: []}
        check(PEER, env[VM1], [t.tcp(a4(1), 2222, False, "repaired", src=a4(20))])
    finally:
        sh("nsenter", f"--net={ns}", "ipset", "del", v4[0], a4(20), check=False)
    use(BASE)
