#!/usr/bin/env python3
"""Measure a per-VM conntrack cap and NFLOG logging in a netfw-shaped VM namespace; print the facts as tables.

    scripts/measure_conntrack_cap.py [--quick] [--json FILE]     (re-runs itself inside scripts/sandbox)

The lab: namespace `fw` (the VM namespace: bridge-nf sysctls on, IPv6 off on its own links) with one firewall
bridge per NIC, `br<n>` (nf_call_iptables/ip6tables on), each with a port `h<n>` to a guest namespace `out<n>` (the
network side, 10.6<n>.0.1, fd0<n>::1) and a port `t<n>` to `vm<n>` (the VM's NIC, 10.6<n>.0.2, fd0<n>::2). The raw
table puts each NIC in its own conntrack zone as netfw does (`-A PREROUTING -i br<n> -j CT --zone <n+1>`); FORWARD
(policy DROP) jumps by physdev to per-NIC chains: ESTABLISHED/RELATED accepted, INVALID dropped, then the security
group, then DROP. Flows are UDP datagrams with distinct destination ports, sent from out<n> to vm<n>.

  a  does `-m connlimit --connlimit-mask 0` count per conntrack zone (NIC), per namespace, per family?
  b  5,000 new flows against a cap of 1,000: the table, the confirmations (conntrack -E), the cap rule's drops,
     and new flows accepted after the zone is flushed (as `netfw update` does)
  c  hashlimit instead of connlimit; connlimit evaluated only on a flow's unconfirmed first packet
  d  per-packet cost (one sender, small UDP, pps in one interleaved run): the cap rule; `-m limit -j NFLOG` before
     the final DROP, with and without a reader
  e  iptables rule counters across `iptables-restore --noflush` (nft and legacy backends)
  f  does a flood from one source lock the VM out? 5,000 flows from 10.60.0.1 against a cap of 1,000, then 10 new
     flows from another source (10.60.0.3): the cap alone; with a shorter timeout for unreplied UDP entries in fw
     (right after the flood, and once it expired); with a per-source share of the cap (connlimit per /32 first);
     the same against a flood from two sources
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

FW = "fw"
UDP_BASE = 20000  # destination ports of generated flows: UDP_BASE, UDP_BASE + 1, ...
CAP_NEW = "-m conntrack --ctstate NEW -m connlimit --connlimit-above {cap} --connlimit-mask 0 -j DROP"
CAP_FIRST = ("-m conntrack --ctstate NEW ! --ctstatus CONFIRMED -m connlimit --connlimit-above {cap} "
             "--connlimit-mask 0 -j DROP")
HASHLIMIT = ("-m conntrack --ctstate NEW -m hashlimit --hashlimit-above {rate}/sec --hashlimit-burst {burst} "
             "--hashlimit-name cap -j DROP")
PEER_SHARE = ("-m conntrack --ctstate NEW ! --ctstatus CONFIRMED -m connlimit --connlimit-above {share} "
              "--connlimit-mask 32 --connlimit-saddr -j DROP")
LOG = "-m limit --limit 10/sec --limit-burst 5 -j NFLOG --nflog-group 1 --nflog-prefix \"nic0 in: no rule\""
ALLOWED = "-p udp -m udp --dport 21000:39999 -j ACCEPT"  # the security group of the "dropped" experiments
LOG_UNLIMITED = "-j NFLOG --nflog-group 1 --nflog-prefix \"nic0 in: no rule\""


# --- processes and the lab -------------------------------------------------------------------------------------


def sh(*argv: str, stdin: str | None = None, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def nsenter(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def addr(nic: int, host: int, version: int = 4) -> str:
    return f"10.6{nic}.0.{host}" if version == 4 else f"fd0{nic}::{host}"


def lab(nics: int) -> None:
    """Fresh namespaces: fw with one bridge per NIC, and the guests out<n>, vm<n>."""
    for ns in os.listdir("/run/netns"):
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "netns", "add", FW)
    sh(*nsenter(FW, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"))
    for n in range(nics):
        sh("ip", "-n", FW, "link", "add", f"br{n}", "type", "bridge", "nf_call_iptables", "1", "nf_call_ip6tables", "1")
        sh("ip", "-n", FW, "link", "set", f"br{n}", "up")
        for guest, port, host in ((f"out{n}", f"h{n}", 1), (f"vm{n}", f"t{n}", 2)):
            sh("ip", "netns", "add", guest)
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", guest)
            sh("ip", "link", "set", port, "netns", FW)
            sh("ip", "-n", FW, "link", "set", port, "master", f"br{n}", "up")
            sh("ip", "-n", guest, "addr", "add", f"{addr(n, host)}/24", "dev", "eth0")
            sh("ip", "-n", guest, "addr", "add", f"{addr(n, host, 6)}/64", "dev", "eth0", "nodad")
            sh("ip", "-n", guest, "link", "set", "eth0", "up")
            sh("ip", "-n", guest, "link", "set", "lo", "up")
    for n in range(nics):  # resolve neighbours once, so that flows start without ARP/ND
        for version in (4, 6):
            sh(*nsenter(f"out{n}", "ping", f"-{version}", "-c", "1", "-W", "1", addr(n, 2, version)), check=False)


def ruleset(nics: int, version: int, *, head: list[str] = (), group: list[str] | None = None,
            before_drop: list[str] = (), zones: bool = True) -> str:
    """iptables-restore input (filter and raw): netfw's shape. group: the per-NIC security-group lines (default:
    accept everything); head: FORWARD lines before the jumps; before_drop: lines before each chain's DROP."""
    nd = ([f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT" for t in (133, 134, 135, 136)] if version == 6
          else [])
    lines = ["*raw", *(f"-A PREROUTING -i br{n} -j CT --zone {n + 1}" for n in range(nics) if zones), "COMMIT",
             "*filter", ":FORWARD DROP [0:0]"]
    lines += [f":nic{n}-{d} - [0:0]" for n in range(nics) for d in "io"]
    lines += [f"-A FORWARD {h}" for h in head]
    for n in range(nics):
        lines += [f"-A FORWARD -m physdev --physdev-out t{n} --physdev-is-bridged -j nic{n}-i",
                  f"-A FORWARD -m physdev --physdev-in t{n} --physdev-is-bridged -j nic{n}-o"]
        for d in "io":
            chain = f"nic{n}-{d}"
            lines += [f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                      f"-A {chain} -m conntrack --ctstate INVALID -j DROP",
                      *(f"-A {chain} {l}" for l in nd),
                      *(f"-A {chain} {l}" for l in (["-j ACCEPT"] if group is None else group)),
                      *(f"-A {chain} {l}" for l in (before_drop if d == "i" else ())),
                      f"-A {chain} -j DROP"]
    return "\n".join([*lines, "COMMIT", ""])


def tool(version: int, backend: str, name: str = "restore") -> str:
    base = "iptables" if version == 4 else "ip6tables"
    return f"{base}-{backend}-{name}" if name else f"{base}-{backend}"


def load(backend: str, nics: int, v4: dict, v6: dict | None = None) -> None:
    """Replace fw's filter and raw tables (both families), flush its conntrack table."""
    sh(*nsenter(FW, tool(4, backend)), stdin=ruleset(nics, 4, **v4))
    sh(*nsenter(FW, tool(6, backend)), stdin=ruleset(nics, 6, **(v6 if v6 is not None else v4)))
    sh(*nsenter(FW, "conntrack", "-F"), check=False)


FLOWS = r"""
import socket, sys, time
src, dst, first, count, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 40000))
start = time.monotonic()
for i in range(count):
    s.sendto(b"x", (dst, first + i))
    if gap:
        time.sleep(gap)
print(time.monotonic() - start)
"""


def flows(nic: int, count: int, first: int = UDP_BASE, version: int = 4, gap: float = 0.0, source: int = 1) -> float:
    """count new UDP flows out<nic> -> vm<nic> (one datagram each, destination ports first...) from out<nic>'s
    address number `source`; seconds taken."""
    res = sh(*nsenter(f"out{nic}", sys.executable, "-c", FLOWS, addr(nic, source, version), addr(nic, 2, version),
                      str(first), str(count), str(gap)))
    return float(res.stdout)


def entries(zone: int | None = None, version: int = 4) -> list[tuple[str, int]]:
    """(destination, destination port) of fw's UDP conntrack entries (one zone, or all)."""
    argv = ["conntrack", "-L", "-p", "udp", "-f", "ipv4" if version == 4 else "ipv6"]
    out = sh(*nsenter(FW, *argv, *(["-w", str(zone)] if zone is not None else [])), check=False).stdout
    first = (re.search(r"dst=(\S+) sport=\d+ dport=(\d+)", line) for line in out.splitlines())  # the original
    return [(m.group(1), int(m.group(2))) for m in first if m]


def count_all() -> int:
    return int(sh(*nsenter(FW, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")).stdout)


def rule_packets(version: int, backend: str, chain: str, match: str) -> int:
    """Packet counter of the first rule of chain whose line contains match (iptables -L -v -x)."""
    out = sh(*nsenter(FW, tool(version, backend, ""), "-L", chain, "-v", "-x", "-n")).stdout
    for line in out.splitlines()[2:]:
        if match in line:
            return int(line.split()[0])
    raise RuntimeError(f"no rule with {match!r} in {chain}:\n{out}")


class Events:
    """conntrack -E -e NEW in fw: one event per confirmed (inserted) entry. Under a burst the kernel loses some
    events without telling (measured: 70-100 % arrive), so the count is a lower bound, never more than inserted."""

    def __enter__(self):
        self.proc = subprocess.Popen(nsenter(FW, "conntrack", "-E", "-e", "NEW", "-b", "16777216"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        time.sleep(0.3)  # subscribed before the traffic starts
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(timeout=5)
        self.reader.join(timeout=5)
        self.errors = self.proc.stderr.read()

    def count(self) -> int:
        """Events shown, as conntrack itself counts them when it stops (its output may still sit in a buffer)."""
        m = re.search(r"(\d+) flow events have been shown", self.errors)
        return int(m.group(1)) if m else sum("[NEW]" in line for line in self.lines)


# --- a: what connlimit counts ------------------------------------------------------------------------------------


def measure_scope(backend: str, cap: int, per: int) -> list[dict]:
    """One cap rule at the head of FORWARD; `per` flows through NIC 0 then NIC 1 (and IPv4 then IPv6)."""
    rows = []
    head = [CAP_NEW.format(cap=cap)]
    for zones in (True, False):
        lab(2)
        load(backend, 2, dict(head=head, zones=zones))
        flows(0, per)
        flows(1, per)
        kept = entries()
        rows.append(dict(case=f"NIC 0 then NIC 1, {'a zone per NIC' if zones else 'no zones'}", cap=cap,
                         sent=f"{per} + {per}", nic0=sum(d == addr(0, 2) for d, _ in kept),
                         nic1=sum(d == addr(1, 2) for d, _ in kept), total=len(kept)))
    lab(1)
    load(backend, 1, dict(head=head))
    flows(0, per, version=4)
    flows(0, per, version=6)
    v4, v6 = len(entries(1, 4)), len(entries(1, 6))
    rows.append(dict(case="one NIC, IPv4 then IPv6 (a cap rule per family)", cap=cap, sent=f"{per} + {per}",
                     nic0=f"v4 {v4}, v6 {v6}", nic1="-", total=v4 + v6))
    return rows


# --- b, c: 5,000 flows against a cap of 1,000 --------------------------------------------------------------------


def measure_flood(backend: str, label: str, head: list[str], cap: int, count: int, gap: float = 0.0) -> dict:
    lab(1)
    load(backend, 1, dict(head=head))
    with Events() as events:
        seconds = flows(0, count, gap=gap)
    kept = entries(1)
    ports = sorted(p for _, p in kept)
    dropped = rule_packets(4, backend, "FORWARD", "DROP")
    row = dict(backend=backend, rule=label, sent=count, seconds=round(seconds, 2), table=count_all(),
               zone1=len(kept), new_events_seen=events.count(), cap_drops=dropped,
               kept_ports=f"{ports[0] - UDP_BASE}..{ports[-1] - UDP_BASE}" if ports else "-")
    # What netfw's update does to a NIC's zone: flush it. Then new flows, 2 ms apart.
    sh(*nsenter(FW, "conntrack", "-D", "-w", "1"), check=False)
    after = 300
    flows(0, after, first=UDP_BASE + count, gap=0.002)
    row["after_flush"] = f"{len(entries(1))}/{after}"
    return row


def measure_single_flow(backend: str, head: list[str], label: str, seconds: float) -> dict:
    """One unreplied UDP flow sent as fast as possible (every packet is ctstate NEW): dropped by the cap rule?"""
    lab(1)
    load(backend, 1, dict(head=head))
    sent = flood(0, seconds, port=UDP_BASE)[0]
    dropped = rule_packets(4, backend, "FORWARD", "DROP")
    flows(0, 10, first=UDP_BASE + 1, gap=0.002)  # ten other new flows afterwards: are they still accepted?
    return dict(backend=backend, rule=label, flood_packets=sent, dropped_by_cap=dropped,
                table=count_all(), new_flows_after=f"{len(entries(1)) - 1}/10")


def measure_sg_drop(backend: str, head: list[str], label: str, count: int) -> dict:
    """Flows the security group drops (after the cap rule): do they inflate the cap's count? Then new flows the
    security group allows, 2 ms apart."""
    lab(1)
    load(backend, 1, dict(head=head, group=[ALLOWED]))
    flows(0, count, first=41000)  # not allowed
    sent = flood(0, 1.0, port=9)[0]  # and one unreplied flow to a closed port, as fast as one sender can
    table = count_all()
    flows(0, 300, first=30000, gap=0.002)
    accepted = sum(30000 <= port < 30300 for _, port in entries(1))
    return dict(backend=backend, rule=label, dropped_flows=count, flood_packets=sent, table_after=table,
                allowed_flows_after=f"{accepted}/300")


# --- d: cost per packet ------------------------------------------------------------------------------------------

FLOOD = r"""
import resource, socket, sys, time
src, dst, port, seconds, reply = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 40000))
s.connect((dst, port))
if reply:  # make the flow ESTABLISHED: the VM answers once (echo.py in the VM)
    s.settimeout(2)
    s.send(b"hello")
    s.recv(100)
data, n, send = b"x" * 18, 0, s.send
end = time.monotonic() + seconds
start, cpu0 = time.monotonic(), cpu()
while True:
    for _ in range(1000):
        send(data)
    n += 1000
    if time.monotonic() >= end:
        break
print(n, time.monotonic() - start, cpu() - cpu0)
"""
SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
if sys.argv[2] == "echo":  # answer the first datagram: the flow becomes ESTABLISHED
    data, peer = s.recvfrom(100)
    s.sendto(data, peer)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sys.stdin.read()  # the socket stays bound and unread: the flood ends in its full buffer, with no ICMP error
"""


def flood(nic: int, seconds: float, port: int, reply: bool = False) -> tuple[int, float, float]:
    """Packets one sender sent in about `seconds` (UDP, 18 bytes of payload, one flow), the wall-clock and the CPU
    seconds the sender used. The kernel forwards each packet inside the sender's send call (veth, bridge, netfilter
    in fw, veth), so both rates include the whole path; the CPU rate is immune to other processes' load."""
    sink = subprocess.Popen(nsenter(f"vm{nic}", sys.executable, "-c", SINK, str(port), "echo" if reply else "sink"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sink.stdout.readline()
        res = sh(*nsenter(f"out{nic}", sys.executable, "-c", FLOOD, addr(nic, 1), addr(nic, 2), str(port),
                          str(seconds), "1" if reply else "0"), timeout=seconds + 30)
    finally:
        sink.stdin.close()
        sink.wait(timeout=5)
    n, wall, cpu = res.stdout.split()
    return int(n), float(wall), float(cpu)


COST_CONFIGS = {
    # name: (ruleset options, traffic: "new" unreplied flow / "est" answered flow / "drop" flow to a closed port,
    #        flows already in the zone, NFLOG reader bound)
    "no cap, new flow": (dict(), "new", 0, False),
    "cap, new flow": (dict(head=[CAP_NEW.format(cap=100000)]), "new", 0, False),
    "cap, new flow, 900 flows": (dict(head=[CAP_NEW.format(cap=100000)]), "new", 900, False),
    "cap first packet, new flow, 900 flows": (dict(head=[CAP_FIRST.format(cap=100000)]), "new", 900, False),
    "no cap, dropped flow, 900 flows": (dict(group=[ALLOWED]), "drop", 900, False),
    "cap, dropped flow, 900 flows": (dict(head=[CAP_NEW.format(cap=100000)], group=[ALLOWED]), "drop", 900, False),
    "cap first packet, dropped flow, 900 flows": (dict(head=[CAP_FIRST.format(cap=100000)], group=[ALLOWED]), "drop",
                                                  900, False),
    "no cap, established": (dict(), "est", 0, False),
    "cap, established": (dict(head=[CAP_NEW.format(cap=100000)]), "est", 0, False),
    "dropped, no log": (dict(group=["-p tcp -m tcp --dport 22 -j ACCEPT"]), "drop", 0, False),
    "dropped, limit+NFLOG, no reader": (dict(group=["-p tcp -m tcp --dport 22 -j ACCEPT"], before_drop=[LOG]),
                                        "drop", 0, False),
    "dropped, limit+NFLOG, reader": (dict(group=["-p tcp -m tcp --dport 22 -j ACCEPT"], before_drop=[LOG]),
                                     "drop", 0, True),
    "dropped, NFLOG unlimited, no reader": (dict(group=["-p tcp -m tcp --dport 22 -j ACCEPT"],
                                                 before_drop=[LOG_UNLIMITED]), "drop", 0, False),
    "dropped, NFLOG unlimited, reader": (dict(group=["-p tcp -m tcp --dport 22 -j ACCEPT"],
                                              before_drop=[LOG_UNLIMITED]), "drop", 0, True),
}


def drain(reader, stop: threading.Event, got: list) -> None:
    while not stop.is_set():
        got.extend(reader.packets(timeout=0.1))


def cost_once(backend: str, name: str, seconds: float) -> tuple[float, float, int]:
    """Packets per wall-clock second and per CPU second of one configuration; packets the reader got."""
    from netfw.observe.nflog import open_reader

    options, traffic, others, with_reader = COST_CONFIGS[name]
    # The cap is far above what is sent: every packet is evaluated, none is dropped by it (the costs compare).
    load(backend, 1, options)
    if others:
        flows(0, others, first=UDP_BASE + 1000)
    port = {"new": UDP_BASE, "est": UDP_BASE + 500, "drop": 9}[traffic]
    reader = open_reader(f"/run/netns/{FW}", 1) if with_reader else None
    got: list = []
    stop = threading.Event()
    thread = threading.Thread(target=drain, args=(reader, stop, got), daemon=True) if reader else None
    try:
        if thread:
            thread.start()
        sent, wall, cpu = flood(0, seconds, port, reply=traffic == "est")
    finally:
        stop.set()
        if thread:
            thread.join(timeout=5)
        if reader:
            reader.close()
    return sent / wall, sent / cpu, len(got) / wall


def measure_cost(backend: str, seconds: float, rounds: int) -> list[dict]:
    lab(1)
    wall: dict[str, list[float]] = {name: [] for name in COST_CONFIGS}
    cpu: dict[str, list[float]] = {name: [] for name in COST_CONFIGS}
    logged: dict[str, list[float]] = {name: [] for name in COST_CONFIGS}
    for _ in range(rounds):  # interleaved: machine load drifts over the run, not between configurations
        for name in COST_CONFIGS:
            pps, per_cpu, n = cost_once(backend, name, seconds)
            wall[name].append(pps)
            cpu[name].append(per_cpu)
            logged[name].append(n)
    rows = []
    reference = {"new": "no cap, new flow", "est": "no cap, established", "drop": "dropped, no log"}
    for name in COST_CONFIGS:
        ref = "no cap, dropped flow, 900 flows" if "dropped flow" in name else reference[COST_CONFIGS[name][1]]
        median, ref_median = statistics.median(cpu[name]), statistics.median(cpu[ref])
        rows.append(dict(config=name, kpps_per_cpu_s=round(median / 1000, 1),
                         spread=f"{min(cpu[name]) / 1000:.0f}-{max(cpu[name]) / 1000:.0f}",
                         ratio=round(median / ref_median, 3), ns_per_packet=round(1e9 / median - 1e9 / ref_median),
                         kpps_wall=round(statistics.median(wall[name]) / 1000, 1),
                         logged_per_s=round(statistics.median(logged[name])) if COST_CONFIGS[name][3] else "-"))
    return rows


# --- f: a flood from one source against the cap ------------------------------------------------------------------


def measure_lockout(backend: str, label: str, head: list[str], count: int, sources: tuple[int, ...] = (1,),
                    udp_timeout: int | None = None, wait: float = 0.0) -> dict:
    """count flows from the sources (out0's addresses 10.60.0.<n>, split evenly), then 10 new flows from
    10.60.0.3 (after `wait` seconds): how many of those does the zone take?"""
    lab(1)
    for n in (3, *sources):
        if n != 1:
            sh("ip", "-n", "out0", "addr", "add", f"{addr(0, n)}/24", "dev", "eth0")
    load(backend, 1, dict(head=head))
    if udp_timeout:
        sh(*nsenter(FW, "sysctl", "-qw", f"net.netfilter.nf_conntrack_udp_timeout={udp_timeout}"))
    per = count // len(sources)
    for i, n in enumerate(sources):
        flows(0, per, first=UDP_BASE + i * per, source=n)
    held = len(entries(1))
    time.sleep(wait)
    flows(0, 10, first=UDP_BASE + count, gap=0.002, source=3)
    other = sum(p >= UDP_BASE + count for _, p in entries(1))
    return dict(backend=backend, rule=label, flood=f"{count} from {len(sources)} source(s)", held_after_flood=held,
                other_source_after=f"{wait:g} s", other_source_accepted=f"{other}/10")


# --- e: counters across restore ----------------------------------------------------------------------------------

COUNTED = """*filter
:FORWARD DROP [0:0]
:nic0-i - [0:0]
:other - [0:0]
-A FORWARD -m physdev --physdev-out t0 --physdev-is-bridged -j nic0-i
-A nic0-i -p udp -m udp --dport 7 -j ACCEPT
-A nic0-i -j DROP
-A other -j RETURN
COMMIT
"""
REDECLARE = """*filter
:nic0-i - [0:0]
-A nic0-i -p udp -m udp --dport 7 -j ACCEPT
-A nic0-i -j DROP
COMMIT
"""
OTHER_ONLY = "*filter\n:other - [0:0]\n-A other -j RETURN\nCOMMIT\n"


def counters(backend: str) -> dict[str, str]:
    """'[packets:bytes]' of FORWARD's policy and of each rule, from iptables-save -c."""
    out = sh(*nsenter(FW, tool(4, backend, "save"), "-c", "-t", "filter")).stdout
    found = {}
    for line in out.splitlines():
        if line.startswith(":FORWARD"):
            found["FORWARD policy"] = line.split()[-1]
        elif line.startswith("["):
            count, rule = line.split(" ", 1)
            found[rule.removeprefix("-A ")] = count
    return found


def measure_counters(backend: str) -> list[dict]:
    """Counters after traffic, after restores that re-declare the NIC's chain or another one, and after a restore
    that writes the first save's counters back (`--counters`)."""
    lab(1)
    sh(*nsenter(FW, tool(4, backend)), stdin=COUNTED)
    rows = []

    def row(step: str) -> None:
        rows.append(dict(backend=backend, step=step, **counters(backend)))

    flows(0, 10, first=7)  # ports 7..16: one datagram accepted, nine dropped
    row("after 10 datagrams")
    saved = sh(*nsenter(FW, tool(4, backend, "save"), "-c", "-t", "filter")).stdout
    sh(*nsenter(FW, tool(4, backend), "--noflush"), stdin=REDECLARE)
    row("restore --noflush re-declaring nic0-i")
    flows(0, 10, first=7)
    flows(0, 10, first=7)
    row("after 20 more")
    sh(*nsenter(FW, tool(4, backend), "--noflush"), stdin=OTHER_ONLY)
    row("restore --noflush re-declaring only 'other'")
    keep = [line for line in saved.splitlines() if line.startswith("[") and " -A nic0-i " in line]
    sh(*nsenter(FW, tool(4, backend), "--noflush", "--counters"),
       stdin="*filter\n:nic0-i - [0:0]\n" + "\n".join(keep) + "\nCOMMIT\n")
    row("restore --noflush --counters: nic0-i with the first save's [p:b]")
    return rows


# --- output --------------------------------------------------------------------------------------------------------


def table(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([f"\n## {title}\n", line(keys), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer flows, shorter and fewer cost rounds")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--only", default="abcdef", help="which parts to run, e.g. 'bd'")
    args = p.parse_args()
    if os.environ.get("NETFW_IN_SANDBOX") != "1":
        os.execv(str(HERE / "sandbox"), [str(HERE / "sandbox"), sys.executable, *sys.argv])
    flood_n, cap, seconds, rounds = (1000, 200, 0.5, 2) if args.quick else (5000, 1000, 1.0, 7)
    results: dict[str, list[dict]] = {}
    if "a" in args.only:
        results["a: what one connlimit rule counts"] = measure_scope("nft", cap=300 if not args.quick else 60,
                                                                     per=500 if not args.quick else 100)
    if "b" in args.only:
        results["b: new flows against the cap"] = [
            measure_flood(b, "connlimit, ctstate NEW", [CAP_NEW.format(cap=cap)], cap, flood_n)
            for b in ("nft", "legacy")]
    if "c" in args.only:
        results["c: alternatives"] = [
            measure_flood("nft", "connlimit, first packet only", [CAP_FIRST.format(cap=cap)], cap, flood_n),
            measure_flood("nft", "hashlimit 200/s burst 1000 (fast)", [HASHLIMIT.format(rate=200, burst=cap)],
                          cap, flood_n),
            measure_flood("nft", "hashlimit 200/s burst 1000 (1 ms apart)", [HASHLIMIT.format(rate=200, burst=cap)],
                          cap, flood_n, gap=0.001),
        ]
        results["c: flows the security group drops, after the cap rule"] = [
            measure_sg_drop("nft", [CAP_NEW.format(cap=cap)], "connlimit, ctstate NEW", flood_n),
            measure_sg_drop("nft", [CAP_FIRST.format(cap=cap)], "connlimit, first packet only", flood_n),
        ]
        results["c: one unreplied flow, as fast as one sender can"] = [
            measure_single_flow("nft", [CAP_NEW.format(cap=cap)], "connlimit, ctstate NEW", 1.0),
            measure_single_flow("nft", [CAP_FIRST.format(cap=cap)], "connlimit, first packet only", 1.0),
        ]
    if "d" in args.only:
        results["d: cost per packet (nft backend)"] = measure_cost("nft", seconds, rounds)
    if "e" in args.only:
        results["e: rule counters across iptables-restore"] = [r for b in ("nft", "legacy") for r in
                                                               measure_counters(b)]
    if "f" in args.only:
        cap_first, share = CAP_FIRST.format(cap=cap), PEER_SHARE.format(share=cap // 2)
        results["f: a flood from one source, then another source's new flows"] = [
            measure_lockout("nft", "cap", [cap_first], flood_n),
            measure_lockout("nft", "cap, unreplied UDP 5 s", [cap_first], flood_n, udp_timeout=5),
            measure_lockout("nft", "cap, unreplied UDP 5 s", [cap_first], flood_n, udp_timeout=5, wait=6),
            measure_lockout("nft", f"per-source share {cap // 2}, cap", [share, cap_first], flood_n),
            measure_lockout("nft", f"per-source share {cap // 2}, cap", [share, cap_first], flood_n, sources=(1, 4)),
        ]
    for title, rows in results.items():
        print(table(title, rows))
    print("\nrules:", json.dumps(dict(CAP_NEW=CAP_NEW, CAP_FIRST=CAP_FIRST, HASHLIMIT=HASHLIMIT, LOG=LOG,
                                      PEER_SHARE=PEER_SHARE), indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
