"""A throwaway lab inside the sandbox: VN bridges and simulated VMs (guest namespaces behind tap-named veths)."""

from __future__ import annotations

import json
import os
import subprocess
import time

from . import ovs

#: Link fields that identify a link rather than configure it, or that count traffic: they may differ after an
#: object was deleted and recreated (a recreated veth gets a new ifindex, same name, MAC, MTU, master, alias).
VOLATILE = {"ifindex", "link_index", "link_netnsid", "stats", "stats64", "promiscuity", "allmulti",
            "operstate", "link"}
VOLATILE_INFO = {"hello_timer", "tcn_timer", "topology_change_timer", "gc_timer", "id", "no", "bridge_id",
                 "root_id", "designated_root", "designated_bridge", "designated_port", "hold_timer",
                 "message_age_timer", "forward_delay_timer", "root_port"}


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command of the lab itself (netfw's own commands go through netfw.runner)."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=check)


def netns_list() -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if not n.startswith("."))


def _clean_link(link: dict) -> dict:
    out = {k: v for k, v in link.items() if k not in VOLATILE}
    info = out.get("linkinfo")
    if info:
        info = dict(info)
        for key in ("info_data", "info_slave_data"):
            if key in info:
                info[key] = {k: v for k, v in info[key].items() if k not in VOLATILE_INFO}
        out["linkinfo"] = info
    out["flags"] = sorted(f for f in out.get("flags", []) if f not in ("LOWER_UP", "NO-CARRIER", "M-DOWN"))
    return out


def links(ns: str | None) -> list[dict]:
    argv = ["ip", "-n", ns, "-d", "-j", "link", "show"] if ns else ["ip", "-d", "-j", "link", "show"]
    return sorted((_clean_link(link) for link in json.loads(sh(*argv).stdout)), key=lambda l: l["ifname"])


def _in(ns: str | None, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv] if ns else list(argv)


def rules(ns: str | None, tool: str, table: str = "filter") -> list[str]:
    out = sh(*_in(ns, tool, "-t", table)).stdout
    return [l.split(" [")[0] if l.startswith(":") else l for l in out.splitlines() if not l.startswith("#")]


def ipsets(ns: str | None) -> list[str]:
    """`ipset save` without the random initval."""
    out = sh(*_in(ns, "ipset", "save")).stdout
    return sorted(l.split(" initval")[0] for l in out.splitlines())


def snapshot() -> dict:
    """Namespaces, links (ip -d -j link), rules (filter and raw, ip/ip6/eb), ipsets and tc of the sandbox and of
    every namespace in it; with the lab's Open vSwitch running, its state too (ovs.snapshot: records, ofports,
    flows), under "<ovs>"."""
    state = {}
    if ovs.running():
        state["<ovs>"] = ovs.snapshot()
    for ns in [None, *netns_list()]:
        state[ns or "<hypervisor>"] = {
            "links": links(ns),
            "ip": rules(ns, "iptables-save"),
            "ip6": rules(ns, "ip6tables-save"),
            "ip-raw": rules(ns, "iptables-save", "raw"),
            "ip6-raw": rules(ns, "ip6tables-save", "raw"),
            "eb": rules(ns, "ebtables-save"),
            "ipset": ipsets(ns),
            "tc": qdiscs(ns),
        }
    return state


def qdiscs(ns: str | None) -> list[str]:
    """Every qdisc and class of the namespace (`tc -j qdisc show`, `tc class show`), without counters."""
    where = ["-n", ns] if ns else []
    found = json.loads(sh("tc", *where, "-j", "qdisc", "show").stdout or "[]")
    keep = []
    for q in found:
        q = {k: v for k, v in q.items() if k != "refcnt"}
        q["options"] = {k: v for k, v in q.get("options", {}).items() if k != "direct_packets_stat"}  # a counter
        keep.append(json.dumps(q, sort_keys=True))
    shaped = sorted({q["dev"] for q in found if q.get("kind") == "htb"})
    classes = [f"{dev}: {line}" for dev in shaped
               for line in sh("tc", *where, "class", "show", "dev", dev).stdout.splitlines() if line.strip()]
    return sorted(keep + classes)


class Lab:
    """VN bridges (Linux or Open vSwitch) and simulated VMs: a guest namespace g<VM>-<NIC> with eth0, its peer
    named like a tap."""

    def __init__(self):
        self.guests: list[str] = []
        self.ovs_bridges: set[str] = set()

    def bridge(self, name: str = "vnbr0", mtu: int = 1500) -> str:
        sh("ip", "link", "add", name, "mtu", str(mtu), "type", "bridge")
        sh("ip", "link", "set", name, "up")
        return name

    def ovs_bridge(self, name: str = "ovsbr0") -> str:
        """An Open vSwitch VN bridge on the userspace datapath (needs the `ovs` fixture)."""
        ovs.check()
        ovs.vsctl("add-br", name, "--", "set", "Bridge", name, "datapath_type=netdev")
        self.ovs_bridges.add(name)
        return name

    def vm(self, vm: int, nic: int, ip4: str, bridge: str = "vnbr0", ip6: str | None = None,
           mtu: int = 1500, mac: str | None = None, tap: str | None = None, tag: int | None = None,
           ofport: int | None = None, tap_mac: str | None = None) -> str:
        """A simulated VM NIC: returns the guest namespace; its 'tap' (default one-<vm>-<nic>, with MAC tap_mac when
        given, as libvirt gives a tap the guest's MAC with first byte fe) is on bridge.
        On an Open vSwitch bridge the tap is an OVS port (access port of VLAN `tag`, OpenFlow port `ofport`
        when given) and the guest computes its own checksums."""
        guest, tap = f"g{vm}-{nic}", tap or f"one-{vm}-{nic}"
        if bridge not in self.ovs_bridges and (tag is not None or ofport is not None):
            raise ValueError("tag and ofport are Open vSwitch port settings (this kernel has no bridge VLANs)")
        sh("ip", "netns", "add", guest)
        extra = ["address", mac] if mac else []
        own = ["address", tap_mac] if tap_mac else []
        sh("ip", "link", "add", tap, *own, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0", "netns", guest,
           "mtu", str(mtu), *extra)
        if bridge in self.ovs_bridges:
            self._ovs_port(bridge, tap, tag, ofport)
            # The userspace datapath forwards a CHECKSUM_PARTIAL packet as it is: TCP from a veth-backed guest
            # arrives with a bad checksum unless the guest computes it (KERNEL.md).
            sh("ip", "netns", "exec", guest, "ethtool", "-K", "eth0", "tx", "off")
        else:
            sh("ip", "link", "set", tap, "master", bridge, "up")
        sh("ip", "netns", "exec", guest, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
        sh("ip", "-n", guest, "addr", "add", ip4, "dev", "eth0")
        if ip6:
            sh("ip", "-n", guest, "addr", "add", ip6, "dev", "eth0", "nodad")
        sh("ip", "-n", guest, "link", "set", "eth0", "up")
        sh("ip", "-n", guest, "link", "set", "lo", "up")
        self.guests.append(guest)
        return guest

    @staticmethod
    def _ovs_port(bridge: str, tap: str, tag: int | None, ofport: int | None) -> None:
        sh("ip", "link", "set", tap, "up")
        port = ["--", "set", "Port", tap, f"tag={tag}"] if tag is not None else []
        iface = ["--", "set", "Interface", tap, f"ofport_request={ofport}"] if ofport is not None else []
        ovs.vsctl("add-port", bridge, tap, *port, *iface)


def eventually(check, what: str, timeout: float = 15.0, interval: float = 0.1) -> None:
    """Wait until check() is true, or fail naming what did not come into force within timeout seconds: a change
    made through another daemon (ovs-vswitchd applying a retag) is in force a moment after the command returns."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in force after {timeout:g} s: {what}")
        time.sleep(interval)


def vn_bridge(request, lab: Lab) -> str:
    """The VN bridge of a fixture parametrized with "linux" and "ovs": vnbr0, or ovsbr0 on the lab's Open vSwitch."""
    if request.param == "ovs":
        request.getfixturevalue("ovs")
        return lab.ovs_bridge("ovsbr0")
    return lab.bridge()


def ping(guest: str, address: str, count: int = 1, wait: float = 1) -> bool:
    """True when guest gets an echo reply from address (an address of another guest of this lab)."""
    six = ["-6"] if ":" in address else []
    return sh("ip", "netns", "exec", guest, "ping", *six, "-c", str(count), "-W", str(wait), "-i", "0.2",
              address, check=False).returncode == 0


def reset() -> None:
    """Remove everything a test made: the lab Open vSwitch's bridges and QoS rows (when it runs), every namespace,
    every link but lo, the sandbox's own rules."""
    if ovs.running():
        ovs.reset()  # first: deleting a port's link under OVS would leave a stale port behind
    for ns in netns_list():
        sh("ip", "netns", "del", ns, check=False)
    for link in json.loads(sh("ip", "-j", "link", "show").stdout):
        if link["ifname"] != "lo":
            sh("ip", "link", "del", link["ifname"], check=False)
