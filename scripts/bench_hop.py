#!/usr/bin/env python3
"""Per-packet cost of netfw's path at K = 0, hop by hop, and the measured effect of each remedy.

    scripts/bench_hop.py [--runs 3] [--seconds 2] [--rows a,b,...] [--json FILE]   (re-runs itself in the sandbox)
    scripts/bench_hop.py --pairs 10 [--seconds 1] [--rows p_...]                    (one setting at a time, paired)
    scripts/bench_hop.py --quick [--json FILE]                  (smoke run: the nftables rungs and legacy, 1 run of 1 s)

Two simulated VMs (guest namespaces g1, g2; their "taps" one-1-0, one-2-0 are veths on the VN bridge bnvn0) send
64-byte UDP datagrams (iperf3 -u -l 64 -b 0, received kpps) while the path between them is built up one piece at a
time: the legacy layout's single bridge, then netfw's second bridge and veth pair per VM, bridge netfilter in the VM
and in the hypervisor namespace, conntrack, netfw's real rules, the remedies, and (issue 22, scripts/bench_nft.py)
the same security group in nftables without br_netfilter in the VM namespaces. Every row is built from the same
two guests and torn down again; `runs` rounds over all rows (a row's runs are spread over the whole run, so a load
drift on this shared machine hits every row alike); the median of the runs, and its ratio to the legacy row.

A one-way UDP stream is never ESTABLISHED for conntrack (no reply): every datagram walks its security group down
to the UDP rule, as a new flow's first packet would; under both layouts alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_nft as nft  # noqa: E402
from bench_lab import (VN_BRIDGE, in_ns, in_sandbox, ip_batch, legacy_removed, legacy_table,  # noqa: E402
                       security_group, sh, spec)

PAIR = (1, 2)
RULES = security_group(20)


# -- pieces of a path ------------------------------------------------------------------------------------------------
def sysctl(ns: str | None, **values: int) -> None:
    """net.bridge.* sysctls, in the hypervisor namespace (ns None) or a VM namespace."""
    argv = ["sysctl", "-q", "-w", *(f"net.bridge.{k.replace('_', '-')}={v}" for k, v in values.items())]
    sh(*(in_ns(ns, *argv) if ns else argv))


def host_brnf(on: bool) -> None:
    """bridge-nf-call-iptables/ip6tables in the hypervisor namespace (every bridge there, the VN bridge included)."""
    sysctl(None, bridge_nf_call_iptables=int(on), bridge_nf_call_ip6tables=int(on))


def host_tables(filter_lines: list[str] = (), raw_lines: list[str] = ()) -> None:
    """The hypervisor's filter and raw tables (iptables-nft, the system default), replaced whole."""
    sh("iptables-nft-restore", stdin="*raw\n" + "".join(l + "\n" for l in raw_lines) + "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n"
       ":FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "".join(l + "\n" for l in filter_lines) + "COMMIT\n")


def host_clean() -> None:
    """No rules in the hypervisor namespace; conntrack there unused; bridge-nf-call-* back to the default (1)."""
    host_tables()
    for tool in ("iptables-nft-restore", "iptables-legacy-restore"):
        sh(tool, stdin="*raw\nCOMMIT\n*filter\nCOMMIT\n", check=False)
    host_brnf(True)


#: A stateful rule of the hypervisor's own (as any host firewall, libvirt's NAT or the legacy driver has): from then
#: on conntrack tracks every packet in the hypervisor namespace, bridged ones too while bridge-nf-call-iptables is on.
HOST_CONNTRACK = ["-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
#: The operator's remedy when bridge netfilter must stay on (other bridges need it): no conntrack for the VN bridge.
HOST_NOTRACK = [f"-A PREROUTING -i {VN_BRIDGE} -j CT --notrack"]


def hop_build(vm: int, kind: str, brnf: bool, rules: list[str] | None = None) -> None:
    """netfw's topology by hand: namespace hx<vm>, the tap moved in, joined to a veth pair whose other end is on the VN
    bridge, by a bridge (kind "bridge", as netfw) or by tc redirects (kind "tc": the veth pair without the bridge).
    brnf: bridge netfilter on in the namespace; rules: iptables filter lines loaded there."""
    ns, tap, br, h, f = f"hx{vm}", f"one-{vm}-0", f"hxbr{vm}", f"hx{vm}h", f"hx{vm}f"
    sh("ip", "netns", "add", ns)
    sysctl(ns, bridge_nf_call_iptables=int(brnf), bridge_nf_call_ip6tables=int(brnf))
    ip_batch([f"link add {h} type veth peer name {f} netns {ns}", f"link set {h} master {VN_BRIDGE} up",
              f"link set {tap} netns {ns}"])
    lines = ["link set lo up", f"link set {f} up", f"link set {tap} up"]
    if kind == "bridge":
        lines[1:1] = [f"link add {br} type bridge nf_call_iptables {int(brnf)} nf_call_ip6tables {int(brnf)}",
                      f"link set {br} up", f"link set {f} master {br}", f"link set {tap} master {br}"]
    ip_batch(lines, ns)
    if kind == "tc":
        for a, b in ((tap, f), (f, tap)):
            sh(*in_ns(ns, "tc", "qdisc", "add", "dev", a, "ingress"))
            sh(*in_ns(ns, "tc", "filter", "add", "dev", a, "ingress", "protocol", "all", "u32", "match", "u32", "0", "0",
                      "action", "mirred", "egress", "redirect", "dev", b))
    if rules is not None:
        sh(*in_ns(ns, "iptables-restore"), stdin="*filter\n:FORWARD ACCEPT [0:0]\n" + "".join(l + "\n" for l in rules)
           + "COMMIT\n")


def hop_remove(vm: int) -> None:
    """The tap back on the VN bridge, the namespace (with its bridge, veth pair and rules) gone."""
    ns, tap = f"hx{vm}", f"one-{vm}-0"
    sh("ip", "-n", ns, "link", "set", tap, "netns", str(os.getpid()))
    # The veth pair explicitly: a deleted namespace is cleaned up later, and its veth end would still hold the name.
    ip_batch([f"link set {tap} master {VN_BRIDGE} up", f"link del hx{vm}h"])
    sh("ip", "netns", "del", ns)


#: A minimal stateful ruleset in the VM namespace: conntrack and one rule, no security group.
VM_CONNTRACK = ["-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-A FORWARD -j ACCEPT"]


def netfw_attach(state_dir: str) -> None:
    from netfw import api
    for vm in PAIR:
        api.attach(spec(vm, RULES), state_dir=state_dir)


def netfw_detach(state_dir: str) -> None:
    from netfw import api
    for vm in PAIR:
        api.detach(vm, 0, state_dir=state_dir)


def netfw_links(vm: int) -> tuple[str, str, str, str]:
    """(namespace, firewall bridge, hypervisor end, firewall end) of an attached NIC; after the cut-over the
    hypervisor end of the veth pair carries the tap's name (names.veth_host is only its name while staged)."""
    from netfw.model import names
    return names.netns(vm), names.bridge(vm, 0), names.tap(vm, 0), names.veth_fw(vm, 0)


def veth_offload(features: list[str]) -> None:
    """ethtool -K on both ends of each NIC's netfw veth pair."""
    for vm in PAIR:
        ns, _, h, f = netfw_links(vm)
        sh("ethtool", "-K", h, *features)
        sh(*in_ns(ns, "ethtool", "-K", f, *features))


def vm_sysctl(setting: str) -> None:
    for vm in PAIR:
        sh(*in_ns(netfw_links(vm)[0], "sysctl", "-q", "-w", setting))


def _legacy_backend(fn) -> None:
    """fn() with netfw's iptables backend set to legacy (what `--backend legacy` does)."""
    os.environ["NETFW_IPTABLES_BACKEND"] = "legacy"
    try:
        fn()
    finally:
        del os.environ["NETFW_IPTABLES_BACKEND"]


def hop_brnf(on: bool) -> None:
    """Bridge netfilter in the hand-built hop's namespaces (sysctl and the bridge's own flag)."""
    for vm in PAIR:
        sysctl(f"hx{vm}", bridge_nf_call_iptables=int(on), bridge_nf_call_ip6tables=int(on))
        sh("ip", "-n", f"hx{vm}", "link", "set", f"hxbr{vm}", "type", "bridge", "nf_call_iptables", str(int(on)),
           "nf_call_ip6tables", str(int(on)))


def hop_rules(lines: list[str]) -> None:
    """The hand-built hop's filter table, replaced whole (no rules: conntrack is no longer used there)."""
    for vm in PAIR:
        sh(*in_ns(f"hx{vm}", "iptables-restore"), stdin="*filter\n:FORWARD ACCEPT [0:0]\n" +
           "".join(l + "\n" for l in lines) + "COMMIT\n")


class NetfwTables:
    """Take netfw's ebtables out of the VM namespaces and put them back exactly (breakdown only)."""

    def __init__(self):
        self.saved = {vm: sh(*in_ns(netfw_links(vm)[0], "ebtables-save")).stdout for vm in PAIR}

    def off(self) -> None:
        for vm in PAIR:
            sh(*in_ns(netfw_links(vm)[0], "ebtables", "-t", "filter", "-F", "FORWARD"))

    def on(self) -> None:
        for vm in PAIR:
            sh(*in_ns(netfw_links(vm)[0], "ebtables-restore"), stdin=self.saved[vm])


def old_zone(on: bool) -> None:
    """NIC 0 in a conntrack zone of its own, as netfw before 2026-12-02 loaded it (raw `-i <firewall bridge> -j CT
    --zone 1`, both families), or the raw table empty again (netfw now: NIC 0 is in the default zone 0)."""
    for vm in PAIR:
        ns, br, _, _ = netfw_links(vm)
        for tool in ("iptables", "ip6tables"):
            sh(*in_ns(ns, tool, "-t", "raw", "-F"))
            if on:
                sh(*in_ns(ns, tool, "-t", "raw", "-A", "PREROUTING", "-i", br, "-j", "CT", "--zone", "1"))


def vm_flush(table: str, tool: str = "iptables") -> None:
    """Empty one table in the VM namespaces (breakdown only: what that table's rules cost per packet)."""
    for vm in PAIR:
        ns = netfw_links(vm)[0]
        sh(*in_ns(ns, tool, "-t", table, "-F"))


def nft_rung(key: str, family: str, stateful: bool) -> None:
    nft.rung(key, PAIR, RULES, family, stateful)


# -- the rows --------------------------------------------------------------------------------------------------------
def rows(state_dir: str) -> dict[str, tuple[str, callable, callable]]:
    """key: (label, build, teardown). Every build starts from the two guests' taps on the VN bridge, nothing else."""
    legacy = legacy_table(list(PAIR), [], RULES, pair_first=False)
    both = lambda f: lambda: [f(vm) for vm in PAIR]  # noqa: E731
    hop = lambda kind, brnf, rules=None: both(lambda vm: hop_build(vm, kind, brnf, rules))  # noqa: E731
    unhop = both(hop_remove)

    def seq(*fs):
        return lambda: [f() for f in fs]

    attach, detach = (lambda: netfw_attach(state_dir)), (lambda: netfw_detach(state_dir))
    return {
        # one bridge: the legacy layout's path
        "direct": ("one bridge, no netfilter (hypervisor bridge-nf-call-iptables 0)", lambda: host_brnf(False), host_clean),
        "direct_brnf": ("one bridge, bridge netfilter on in the hypervisor, no rules", lambda: None, host_clean),
        "legacy": ("**legacy**: one bridge, its rules in the hypervisor (OpenNebula's fw driver)",
                   lambda: host_tables(legacy), host_clean),
        # netfw's path, piece by piece
        "tc_hop": ("+ a veth pair per VM, joined to the tap by tc redirects (no second bridge), no netfilter",
                   seq(lambda: host_brnf(False), hop("tc", False)), seq(unhop, host_clean)),
        "hop": ("+ a veth pair and a second bridge per VM (netfw's path), no netfilter",
                seq(lambda: host_brnf(False), hop("bridge", False)), seq(unhop, host_clean)),
        "hop_hbrnf": ("netfw's path, bridge netfilter on in the hypervisor only", hop("bridge", False), seq(unhop, host_clean)),
        "hop_vbrnf": ("netfw's path, bridge netfilter on in the VM namespaces only, no rules",
                      seq(lambda: host_brnf(False), hop("bridge", True)), seq(unhop, host_clean)),
        "hop_vbrnf_ct": ("netfw's path, VM namespaces: bridge netfilter + conntrack (2 rules), hypervisor off",
                         seq(lambda: host_brnf(False), hop("bridge", True, VM_CONNTRACK)), seq(unhop, host_clean)),
        "hop_both_ct": ("netfw's path, VM namespaces: bridge netfilter + conntrack (2 rules), hypervisor on",
                        hop("bridge", True, VM_CONNTRACK), seq(unhop, host_clean)),
        # netfw itself (netfw.api.attach), then what each part of its ruleset costs
        "netfw": ("**netfw** (its rules; hypervisor: bridge netfilter on by default, no rules)", attach,
                  seq(detach, host_clean)),
        "netfw_no_eb": ("netfw, ebtables FORWARD flushed in the VM namespaces (breakdown: the ethertype chain)",
                        seq(attach, lambda: vm_flush("filter", "ebtables")), seq(detach, host_clean)),
        "netfw_zone": ("netfw with NIC 0 in a conntrack zone of its own (the raw `CT --zone` rule netfw loaded "
                       "before 2026-12-02)", seq(attach, lambda: old_zone(True)), seq(detach, host_clean)),
        # issue 20: an 802.1Q/vxlan network with netfw installed as docs/opennebula.md way A says: the driver's post
        # builds both NICs' legacy chains, then netfw's hook attaches them and removes those chains
        "netfw_8021q": ("netfw on an 802.1Q/vxlan network, documented installation (legacy chains built, then removed "
                        "by netfw's post)", seq(lambda: host_tables(legacy), attach,
                                                 lambda: legacy_removed(list(PAIR), real=list(PAIR))),
                        seq(detach, host_clean)),
        "netfw_8021q_kept": ("netfw on an 802.1Q/vxlan network with the legacy chains kept (before issue 20)",
                             seq(lambda: host_tables(legacy), attach), seq(detach, host_clean)),
        # issue 22: netfw's layout without br_netfilter in the VM namespaces, filtered by nftables (bench_nft.py)
        **nft_rows(hop, unhop, seq),
        # remedies
        "netfw_hoff": ("netfw, hypervisor bridge-nf-call-iptables 0 (every NIC behind netfw)",
                       seq(attach, lambda: host_brnf(False)), seq(detach, host_clean)),
        "netfw_hct": ("netfw, hypervisor has a stateful rule of its own (conntrack in use there)",
                      seq(attach, lambda: host_tables(HOST_CONNTRACK)), seq(detach, host_clean)),
        "netfw_hct_notrack": ("netfw, hypervisor conntrack in use, raw `-i <VN bridge> -j CT --notrack`",
                              seq(attach, lambda: host_tables(HOST_CONNTRACK, HOST_NOTRACK)), seq(detach, host_clean)),
        "netfw_hct_hoff": ("netfw, hypervisor conntrack in use, bridge-nf-call-iptables 0",
                           seq(attach, lambda: (host_tables(HOST_CONNTRACK), host_brnf(False))), seq(detach, host_clean)),
        "netfw_hct_vnbr": ("netfw, hypervisor conntrack in use, `nf_call_iptables 0` on the VN bridge only",
                           seq(attach, lambda: host_tables(HOST_CONNTRACK), lambda: sh(
                               "ip", "link", "set", VN_BRIDGE, "type", "bridge", "nf_call_iptables", "0")),
                           seq(detach, host_clean)),
        "netfw_gro": ("netfw, GRO on the veth pairs (`ethtool -K gro on`)", seq(attach, lambda: veth_offload(["gro", "on"])),
                      seq(detach, host_clean)),
        "netfw_gro_udp": ("netfw, GRO + rx-udp-gro-forwarding on the veth pairs",
                          seq(attach, lambda: veth_offload(["gro", "on", "rx-udp-gro-forwarding", "on"])),
                          seq(detach, host_clean)),
        "netfw_xt": ("netfw with `--backend legacy` (iptables-legacy in the VM namespaces)",
                     seq(lambda: _legacy_backend(attach)), seq(lambda: _legacy_backend(detach), host_clean)),
        "netfw_nocsum": ("netfw, `nf_conntrack_checksum 0` in the VM namespaces",
                         seq(attach, lambda: vm_sysctl("net.netfilter.nf_conntrack_checksum=0")), seq(detach, host_clean)),
    }


def nft_rows(hop, unhop, seq) -> dict[str, tuple[str, callable, callable]]:
    """rows() of issue 22: the security group in nftables without br_netfilter in the VM namespaces (bench_nft), and
    the same rules in iptables over br_netfilter beside them."""
    routed, unrouted = (lambda: nft.routed_build(PAIR)), (lambda: nft.routed_remove(PAIR))
    return {
        "hop_sg_ct": ("netfw's path, VM namespaces: bridge netfilter + the security group in iptables with conntrack "
                      "(netfw's rules without its observability and ebtables)",
                      seq(hop("bridge", True), lambda: nft.sg_iptables(PAIR, RULES)), seq(unhop, host_clean)),
        "nft_bridge": ("netfw's path, br_netfilter off in the VM namespaces, the security group in nftables' bridge "
                       "family there, **stateless**",
                       seq(hop("bridge", False), lambda: nft_rung("nft_bridge", "bridge", False)),
                       seq(unhop, host_clean)),
        "nft_bridge_hoff": ("`nft_bridge`, and bridge-nf-call-iptables 0 in the hypervisor too (no br_netfilter on the "
                            "path)", seq(hop("bridge", False), lambda: nft_rung("nft_bridge_hoff", "bridge", False),
                                         lambda: host_brnf(False)), seq(unhop, host_clean)),
        "nft_bridge_ct": ("netfw's path, br_netfilter off in the VM namespaces, the security group in nftables' bridge "
                          "family there **with conntrack** (nf_conntrack_bridge)",
                          seq(hop("bridge", False), lambda: nft_rung("nft_bridge_ct", "bridge", True)),
                          seq(unhop, host_clean)),
        "routed_hop": ("a veth pair per VM, the VM namespace routing (no second bridge, no netfilter)",
                       routed, seq(unrouted, host_clean)),
        "nft_routed": ("a veth pair per VM, the VM namespace routing, the security group in nftables' inet family "
                       "there, **stateless** (as `nft_bridge`)",
                       seq(routed, lambda: nft_rung("nft_routed", "inet", False)), seq(unrouted, host_clean)),
        "nft_routed_ct": ("a veth pair per VM, the VM namespace routing, the security group in nftables' inet family "
                          "there **with conntrack**", seq(routed, lambda: nft_rung("nft_routed_ct", "inet", True)),
                          seq(unrouted, host_clean)),
    }


# -- paired A/B: one setting toggled on a path that stays built ----------------------------------------------------
def pairs(state_dir: str) -> dict[str, tuple[str, callable, callable, callable, callable]]:
    """key: (label, build, setting A, setting B, teardown). A pair's two runs follow each other, so a load drift on
    this shared machine moves both alike: the median of the per-pair differences resolves ~0.3 µs, the rows above
    ~1 µs."""
    legacy = legacy_table(list(PAIR), [], RULES, pair_first=False)
    hop = lambda: [hop_build(vm, "bridge", False) for vm in PAIR]  # noqa: E731
    unhop = lambda: ([hop_remove(vm) for vm in PAIR], host_clean())  # noqa: E731
    attach, detach = (lambda: netfw_attach(state_dir)), (lambda: (netfw_detach(state_dir), host_clean()))
    tables: list[NetfwTables] = []

    def attach_saving():
        attach()
        tables[:] = [NetfwTables()]

    def backend(name):
        return lambda: (netfw_detach(state_dir), _legacy_backend(attach) if name == "legacy" else attach())

    def gro(on):
        return lambda: veth_offload(["gro", "on" if on else "off"])

    return {
        "p_direct_hbrnf": ("one bridge: hypervisor bridge netfilter 0 → 1 (no rules)", lambda: None,
                           lambda: host_brnf(False), lambda: host_brnf(True), host_clean),
        "p_legacy_rules": ("one bridge, bridge netfilter on: no rules → the legacy rules", lambda: None,
                           lambda: host_tables(), lambda: host_tables(legacy), host_clean),
        "p_hop_vbrnf": ("netfw's path: VM namespaces' bridge netfilter 0 → 1 (no rules; hypervisor 0)",
                        lambda: (hop(), host_brnf(False)), lambda: hop_brnf(False), lambda: hop_brnf(True), unhop),
        "p_hop_ct": ("netfw's path, VM bridge netfilter on: no rules → conntrack (2 rules; hypervisor 0)",
                     lambda: (hop(), host_brnf(False), hop_brnf(True)), lambda: hop_rules([]),
                     lambda: hop_rules(VM_CONNTRACK), unhop),
        "p_hop_hbrnf": ("netfw's path, VM bridge netfilter and conntrack: hypervisor bridge netfilter 0 → 1",
                        lambda: (hop(), hop_brnf(True), hop_rules(VM_CONNTRACK)), lambda: host_brnf(False),
                        lambda: host_brnf(True), unhop),
        **nft_pairs(hop, unhop),
        "p_netfw_eb": ("netfw: its ebtables chain off → on", attach_saving, lambda: tables[0].off(),
                       lambda: tables[0].on(), detach),
        "p_netfw_zone": ("netfw: NIC 0 in the default conntrack zone → a zone of its own (raw `CT --zone`, as "
                         "before 2026-12-02)", attach, lambda: old_zone(False), lambda: old_zone(True), detach),
        "p_netfw_hoff": ("netfw: hypervisor bridge-nf-call-iptables 1 → 0", attach, lambda: host_brnf(True),
                         lambda: host_brnf(False), detach),
        "p_netfw_hct_hoff": ("netfw, hypervisor uses conntrack: bridge-nf-call-iptables 1 → 0",
                             lambda: (attach(), host_tables(HOST_CONNTRACK)), lambda: host_brnf(True),
                             lambda: host_brnf(False), detach),
        "p_netfw_hct_notrack": ("netfw, hypervisor uses conntrack: no raw rule → raw `CT --notrack` for the VN bridge",
                                lambda: (attach(), host_tables(HOST_CONNTRACK)), lambda: host_tables(HOST_CONNTRACK),
                                lambda: host_tables(HOST_CONNTRACK, HOST_NOTRACK), detach),
        "p_netfw_backend": ("netfw: --backend nft → legacy (iptables in the VM namespaces)", attach, backend("nft"),
                            backend("legacy"), detach),
        "p_netfw_csum": ("netfw: nf_conntrack_checksum 1 → 0 in the VM namespaces", attach,
                         lambda: vm_sysctl("net.netfilter.nf_conntrack_checksum=1"),
                         lambda: vm_sysctl("net.netfilter.nf_conntrack_checksum=0"), detach),
        "p_netfw_gro": ("netfw: GRO on the veth pairs off → on", attach, gro(False), gro(True), detach),
    }


def nft_pairs(hop, unhop) -> dict[str, tuple[str, callable, callable, callable, callable]]:
    """pairs() of issue 22: br_netfilter + iptables → nftables' bridge family with the same rules; conntrack on the
    routed hop."""
    def ipt_sg():
        hop_brnf(True)
        nft.sg_iptables(PAIR, RULES)

    def nft_sg():
        hop_rules([])
        hop_brnf(False)
        nft_rung("nft_bridge", "bridge", False)

    routed, unrouted = (lambda: nft.routed_build(PAIR)), (lambda: (nft.routed_remove(PAIR), host_clean()))
    return {
        "p_hop_nft": ("netfw's path, the security group in the VM namespaces: bridge netfilter + iptables with "
                      "conntrack → no bridge netfilter, nftables' bridge family, stateless",
                      hop, ipt_sg, nft_sg, unhop),
        "p_routed_ct": ("the routed hop, the security group in nftables' inet family: stateless → with conntrack",
                        routed, lambda: nft_rung("nft_routed", "inet", False),
                        lambda: nft_rung("nft_routed_ct", "inet", True), unrouted),
    }


def _guests() -> tuple[str, str, str]:
    """A fresh lab with the measured pair's guests, neighbours pinned: (sender's namespace, receiver's namespace,
    receiver's address). netfw's own log lines are not what is measured."""
    import bench_lab as lab
    from loguru import logger

    logger.remove()
    lab.reset()
    lab.vn_bridge()
    guests = {vm: lab.guest(vm, vm) for vm in PAIR}
    lab.static_neighbours(guests)
    (g1, _), (g2, a2) = guests[1], guests[2]
    return g1, g2, a2


def measure_pairs(n: int, seconds: float, only: list[str] | None = None) -> dict:
    """{pair: {"label", "a": [...], "b": [...], "diff_us" (median of b − a), "ratio" (median of b / a)}}: n pairs each,
    in alternating order (A first, then B first)."""
    import bench_lab as lab
    import bench_traffic as traffic
    from bench_control import workdir

    g1, g2, a2 = _guests()
    out = {}
    for key, (label, build, a, b, teardown) in pairs(str(workdir() / "state")).items():
        if only and key not in only:
            continue
        row = out[key] = {"label": label, "a": [], "b": []}
        build()
        try:
            for i in range(n):
                for side, setting in ((("a", a), ("b", b)) if i % 2 == 0 else (("b", b), ("a", a))):
                    setting()
                    lab.wait_arp(g1, a2)
                    row[side].append(traffic.udp_cost(g1, g2, a2, seconds)["cpu_us"])
        finally:
            teardown()
        row["diff_us"] = round(statistics.median(y - x for x, y in zip(row["a"], row["b"])), 2)
        row["ratio"] = round(statistics.median(y / x for x, y in zip(row["a"], row["b"])), 3)
        print(f"  {key}: {row['diff_us']:+} µs ({row['ratio']})", flush=True)
    lab.reset()
    return out


def pairs_table(r: dict, n: int) -> str:
    out = [f"**One setting at a time, paired** (sender CPU µs per 64-byte packet; {n} pairs, the two runs of a pair "
           "back to back in alternating order; median of the per-pair differences and ratios)", "",
           "| A → B | A (median) | B (median) | B − A (µs) | B / A |", "|---|---|---|---|---|"]
    out += [f"| {row['label']} | {statistics.median(row['a']):.2f} | {statistics.median(row['b']):.2f} | "
            f"{row['diff_us']:+.2f} | {row['ratio']} |" for row in r.values()]
    return "\n".join(out)


def measure(runs: int, seconds: float, only: list[str] | None = None) -> dict:
    """{row: {"label", "kpps": [...], "cpu_us": [...], medians and ratios to legacy}}; each row's runs are spread over
    the whole run."""
    import bench_lab as lab
    import bench_traffic as traffic
    from bench_control import workdir

    g1, g2, a2 = _guests()
    table = rows(str(workdir() / "state"))
    keys = [k for k in table if not only or k in only or k == "legacy"]
    out = {k: {"label": table[k][0], "kpps": [], "cpu_us": []} for k in keys}
    for i in range(runs):
        for key in keys[i % len(keys):] + keys[:i % len(keys)]:
            label, build, teardown = table[key]
            try:
                build()
                lab.wait_arp(g1, a2)
                got = traffic.udp_cost(g1, g2, a2, seconds)
            except RuntimeError as e:  # a row that carries no traffic is reported, the run goes on
                got = {"kpps": None, "cpu_us": None}
                out[key]["error"] = str(e)[:200]
            finally:
                teardown()
            for metric, value in got.items():
                out[key][metric].append(value)
            print(f"  run {i + 1} {key}: {got['kpps']} kpps, {got['cpu_us']} µs CPU per packet", flush=True)
    lab.reset()
    for key, proof in nft.PROOFS.items():
        if key in out:
            out[key]["proof"] = proof
    for row in out.values():
        for metric in ("kpps", "cpu_us"):
            got = [x for x in row[metric] if x is not None]
            row[f"{metric}_median"] = round(statistics.median(got), 2) if got else None
    legacy = out["legacy"]
    for row in out.values():
        ok = row["kpps_median"] and legacy["kpps_median"]
        row["kpps_vs_legacy"] = round(row["kpps_median"] / legacy["kpps_median"], 2) if ok else None
        ok = row["cpu_us_median"] and legacy["cpu_us_median"]
        row["cost_vs_legacy"] = round(legacy["cpu_us_median"] / row["cpu_us_median"], 2) if ok else None
        row["extra_us"] = round(row["cpu_us_median"] - legacy["cpu_us_median"], 2) if ok else None
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(r: dict, runs: int) -> str:
    """The breakdown in Markdown: CPU per packet (the measure that survives a busy machine) and kpps."""
    head = [f"**64-byte UDP between two VMs at K = 0, hop by hop** (median of {runs} runs, one run, rows interleaved). "
            "*CPU µs/packet*: the sender's CPU time per datagram, which carries the whole path up to the receiving "
            "socket; *legacy / row*: the legacy row's CPU per packet over this row's, i.e. the packet rate this path "
            "allows relative to legacy on a CPU of its own; *kpps*: received, and its ratio to legacy (moved by "
            "other load on this shared machine)", "",
            "| path | CPU µs/packet | runs | − legacy (µs) | legacy / row | kpps | kpps / legacy |",
            "|---|---|---|---|---|---|---|"]
    fmt = lambda xs: ", ".join("–" if x is None else f"{x:g}" for x in xs)  # noqa: E731
    rows = [f"| {row['label']} (`{key}`) | {row['cpu_us_median']} | {fmt(row['cpu_us'])} | {row['extra_us']} | "
            f"{row['cost_vs_legacy']} | {row['kpps_median']} | {row['kpps_vs_legacy']} |" if row["cpu_us_median"]
            else f"| {row['label']} (`{key}`) | not measured: {_cell(row.get('error', '?'))} | | | | | |"
            for key, row in r.items()]
    return "\n".join(head + rows + ["", "**What each piece costs** (difference of the medians above; single pieces "
                                     "below about 0.7 µs are within this machine's run-to-run spread)", "", pieces(r)])


#: What each piece costs: (piece, the row without it, the row with it); CPU µs per packet, the difference of medians.
PIECES = (
    ("bridge netfilter in the hypervisor, legacy path (no rules)", "direct", "direct_brnf"),
    ("the legacy rules and conntrack in the hypervisor", "direct_brnf", "legacy"),
    ("a veth pair per VM (joined to the tap by tc)", "direct", "tc_hop"),
    ("a veth pair and a second bridge per VM (netfw's path)", "direct", "hop"),
    ("bridge netfilter in the hypervisor, netfw's path (no rules)", "hop", "hop_hbrnf"),
    ("bridge netfilter in the VM namespaces (no rules)", "hop", "hop_vbrnf"),
    ("conntrack in the VM namespaces (2 rules)", "hop_vbrnf", "hop_vbrnf_ct"),
    ("netfw's rules over those 2 (security group, physdev jumps, ebtables)", "hop_both_ct", "netfw"),
    ("of which netfw's ebtables ethertype chain", "netfw_no_eb", "netfw"),
    ("trimmed: NIC 0's raw-table zone rule of netfw before 2026-12-02", "netfw", "netfw_zone"),
    ("802.1Q/vxlan network, documented installation (issue 20)", "netfw", "netfw_8021q"),
    ("802.1Q/vxlan network, legacy chains kept (before issue 20)", "netfw", "netfw_8021q_kept"),
    ("issue 22: the security group in iptables with conntrack over bridge netfilter alone", "hop_vbrnf", "hop_sg_ct"),
    ("issue 22: nftables' bridge family, stateless, in the VM namespaces (br_netfilter off there)", "hop_hbrnf",
     "nft_bridge"),
    ("issue 22: that path against the same rules in iptables with conntrack over bridge netfilter", "hop_sg_ct",
     "nft_bridge"),
    ("issue 22: that path against netfw's (br_netfilter, iptables and conntrack in the VM namespaces)", "netfw",
     "nft_bridge"),
    ("issue 22: then also the hypervisor's bridge-nf-call-iptables 0", "nft_bridge", "nft_bridge_hoff"),
    ("issue 22: the VM namespace routing instead of bridging (no netfilter there)", "hop_hbrnf", "routed_hop"),
    ("issue 22: nftables' inet family, stateless, on the routed hop", "routed_hop", "nft_routed"),
    ("issue 22: conntrack there (inet family, two namespaces per packet)", "nft_routed", "nft_routed_ct"),
    ("remedy: hypervisor bridge-nf-call-iptables 0", "netfw", "netfw_hoff"),
    ("a hypervisor that uses conntrack itself", "netfw", "netfw_hct"),
    ("remedy there: raw CT --notrack for the VN bridge", "netfw_hct", "netfw_hct_notrack"),
    ("remedy there: bridge-nf-call-iptables 0", "netfw_hct", "netfw_hct_hoff"),
    ("remedy there: nf_call_iptables 0 on the VN bridge only", "netfw_hct", "netfw_hct_vnbr"),
    ("remedy: GRO on the veth pairs", "netfw", "netfw_gro"),
    ("remedy: GRO + rx-udp-gro-forwarding on the veth pairs", "netfw", "netfw_gro_udp"),
    ("remedy: --backend legacy", "netfw", "netfw_xt"),
    ("remedy: nf_conntrack_checksum 0 in the VM namespaces", "netfw", "netfw_nocsum"),
)


def pieces(r: dict) -> str:
    """The breakdown as differences between rows (only pieces whose two rows were measured)."""
    out = ["| piece | CPU µs per packet | rows compared |", "|---|---|---|"]
    for what, without, with_ in PIECES:
        a, b = r.get(without, {}).get("cpu_us_median"), r.get(with_, {}).get("cpu_us_median")
        if a is not None and b is not None:
            out.append(f"| {what} | {b - a:+.2f} | {with_} − {without} |")
    return "\n".join(out)


#: --quick: the nftables rungs (issue 22), each proven to filter before it is timed, and legacy (always measured).
QUICK_ROWS = ("nft_bridge", "nft_bridge_ct", "nft_routed_ct")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=2, help="per iperf3 run (whole seconds: iperf3 reads 0.5 as 0, i.e. forever)")
    p.add_argument("--rows", help="comma-separated row keys (legacy is always measured)")
    p.add_argument("--json", help="write the results here too")
    p.add_argument("--pairs", type=int, metavar="N", help="instead: each paired A/B N times (--rows: pair keys)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: 1 run of 1 s, rows {','.join(QUICK_ROWS)} "
                   "unless --rows")
    args = p.parse_args()
    in_sandbox()
    t = time.perf_counter()
    only = args.rows.split(",") if args.rows else None
    if args.quick:
        args.runs, args.seconds, only = 1, 1, only or list(QUICK_ROWS)
    if args.pairs:
        r = measure_pairs(args.pairs, args.seconds, only)
        text = pairs_table(r, args.pairs)
    else:
        r = measure(args.runs, args.seconds, only)
        text = table(r, args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    print(text)
    print(f"\n{time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
