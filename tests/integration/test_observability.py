"""Issue 11 (and 10's `netfw status`) with real traffic in the sandbox: the conntrack cap under a UDP flood, what
`netfw status VM` and `netfw metrics` count, the live drop log with its kernel rate limit, and the health of every
NIC netfw knows.

Lab: VN bridge vnbr0; VM 1 (guest g1-0, 10.78.0.1, the VM under test), VM 2 (g2-0, 10.78.0.2), and a peer guest
g9-0 (10.78.0.9) that netfw does not attach: what is dropped is dropped by the VMs' own firewalls.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netfw import api
from netfw.rules import chains, render
from netfw.model.spec import NicSpec
from netfw.model.rules import parse_rules

from . import frames as fr
from . import traffic as t
from .lab import sh

NETFW = str(Path(sys.executable).with_name("netfw"))
VM1, VM2, PEER = "10.78.0.1", "10.78.0.2", "10.78.0.9"
MAC1 = "02:78:00:00:00:01"
FLOOD_PORTS = 20000  # UDP flows go to FLOOD_PORTS, FLOOD_PORTS + 1, ...

#: VM 1: SSH and a UDP range in from anywhere, ping in, everything out.
RULES1 = parse_rules([
    {"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22", "SECURITY_GROUP_ID": "100"},
    {"PROTOCOL": "UDP", "RULE_TYPE": "inbound", "RANGE": f"{FLOOD_PORTS}:{FLOOD_PORTS + 9999}",
     "SECURITY_GROUP_ID": "100"},
    {"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "ICMP_TYPE": "8", "SECURITY_GROUP_ID": "101"},
    {"PROTOCOL": "ALL", "RULE_TYPE": "outbound", "SECURITY_GROUP_ID": "101"},
])

FLOWS = r"""
import socket, sys, time
dst, first, count, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000))
for _ in range(rounds):
    for port in range(first, first + count):
        s.sendto(b"x", (dst, port))
    time.sleep(0.2)
"""

BLAST = r"""
import socket, sys, time
dst, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 41000))
end, sent = time.monotonic() + seconds, 0
while time.monotonic() < end:
    for _ in range(100):
        s.sendto(b"y" * 18, (dst, port))
    sent += 100
print(sent)
"""


def netfw(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([NETFW, *args], capture_output=True, text=True, timeout=60)
    if check and res.returncode not in (0, 1):
        raise AssertionError(f"netfw {' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res


def status(vm: int) -> dict:
    return json.loads(netfw("status", str(vm), "--json").stdout)


def conntrack(ns: str, *args: str) -> list[str]:
    out = sh("nsenter", f"--net=/run/netns/{ns}", "conntrack", "-L", *args, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def in_guest(guest: str, script: str, *args: str) -> list[str]:
    return t.in_ns(guest, sys.executable, "-c", script, *args)


RECEIVERS: dict[str, t.Receiver] = {}


@pytest.fixture
def vms(lab):
    """The guests by VM (VM 1, VM 2, the peer as 9), each with a traffic receiver (TCP 22, 80, 81)."""
    lab.bridge()
    guests = {1: lab.vm(1, 0, f"{VM1}/24", mac=MAC1), 2: lab.vm(2, 0, f"{VM2}/24"), 9: lab.vm(9, 0, f"{PEER}/24")}
    for address, guest in ((VM1, guests[1]), (VM2, guests[2]), (PEER, guests[9])):
        RECEIVERS[address] = t.Receiver(guest, tcp=[22, 80, 81], udp=[])
    yield guests
    for r in RECEIVERS.values():
        r.close()
    RECEIVERS.clear()


def connects(src: str, dst: str, port: int, expect: bool = True, times: int = 1) -> int:
    """How many of `times` new TCP connections from guest src to dst:port opened (at once, one process)."""
    probes = [t.tcp(dst, port, expect) for _ in range(times)]
    return sum(t.send(src, probes, RECEIVERS[dst]).values())


def attach_vm1(**extra) -> None:
    api.attach(NicSpec(1, 0, "vnbr0", rules=RULES1, mac=MAC1, ips=(VM1,), filter_mac=True, filter_ip=True, **extra))


# --- 1. the conntrack cap -------------------------------------------------------------------------------------


def test_a_udp_flood_leaves_a_capped_vm_within_its_cap_other_vms_and_established_flows_unharmed(vms):
    """Issue 11, 1: 5,000 UDP flows to a VM capped at 1,000 leave its table at 1,000 entries or fewer; meanwhile 10
    of 10 new TCP connections to another VM succeed, and an established flow of the capped VM keeps working."""
    attach_vm1(conntrack_max=1000)
    api.attach(NicSpec(2, 0, "vnbr0"))
    session = t.Session(vms[9], VM1, 22)
    try:
        assert session.say()
        flood = subprocess.Popen(in_guest(vms[9], FLOWS, VM1, str(FLOOD_PORTS), "5000", "3"))
        time.sleep(0.1)
        opened = connects(vms[9], VM2, 80, times=10)  # while VM 1 is flooded
        during = session.say()
        assert flood.wait(60) == 0
        assert opened == 10
        assert during and session.say(), "the established flow of the capped VM stopped"
    finally:
        session.close()
    entries = conntrack("one-1")
    flows = [e for e in entries if "udp" in e and f"dst={VM1}" in e]
    assert len(entries) <= 1000
    # the peer's share of the cap is 500 (issue 19, 7), and its SSH session holds one of them
    assert len(flows) + 1 == render.source_share(NicSpec(1, 0, "vnbr0", conntrack_max=1000)) == 500
    nic = status(1)["nics"][0]
    assert nic["drops"]["conntrack_cap"]["packets"] >= 3 * 4500  # each round, every flow above the cap
    assert status(1)["conntrack"]["max"] == 1000


def test_the_cap_is_per_nic_and_counts_flows_the_vm_opens_too(vms):
    """The VM's own outbound flows share the count with inbound ones: one connlimit rule sees both directions."""
    attach_vm1(conntrack_max=12)  # 12 for IPv4, 6 of them for one source of flows to the VM
    out = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" \
          f"[s.sendto(b'o', ('{PEER}', p)) for p in range(30000, 30008)]"
    sh(*in_guest(vms[1], out))
    sh(*in_guest(vms[9], FLOWS, VM1, str(FLOOD_PORTS), "20", "1"))
    flows = [e for e in conntrack("one-1", "-p", "udp")]
    assert len(flows) == 12
    assert sum(f"dst={PEER}" in e.split("src=")[1] for e in flows) == 8  # the VM's eight, then four of the peer's
    drops = status(1)["nics"][0]
    assert drops["inbound"]["dropped"]["packets"] >= 16 and drops["drops"]["conntrack_cap"]["packets"] == 16


def test_a_flood_from_one_source_leaves_the_other_half_of_the_cap_to_everyone_else(vms):
    """Issue 19, 7: 5,000 UDP flows from the peer fill what one source may hold of VM 1's table (half its cap of
    1,000, which IPv4 gets whole); then 10 of 10 new TCP connections from VM 2's guest to VM 1's SSH port open, while
    the flooding peer's own new connection is dropped."""
    attach_vm1(conntrack_max=1000)
    sh(*in_guest(vms[9], FLOWS, VM1, str(FLOOD_PORTS), "5000", "1"))
    held = [e for e in conntrack("one-1", "-p", "udp") if f"src={PEER}" in e]
    assert len(held) == render.source_share(NicSpec(1, 0, "vnbr0", conntrack_max=1000)) == 500
    assert connects(vms[2], VM1, 22, times=10) == 10
    assert connects(vms[9], VM1, 22, expect=False) == 0
    assert status(1)["nics"][0]["drops"]["conntrack_cap"]["packets"] >= 4500


# --- 2. netfw status VM -------------------------------------------------------------------------------------------


SPOOF = r"""
import socket, struct, sys
src, dst = sys.argv[1], sys.argv[2]
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
udp = struct.pack("!HHHH", 40001, 9, 8 + 4, 0) + b"spof"
head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
head = head[:10] + struct.pack("!H", csum(head)) + head[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(int(sys.argv[3])):
    s.sendto(head + udp, (dst, 0))
"""


def spoof(guest: str, src: str, dst: str, count: int) -> None:
    sh(*in_guest(guest, SPOOF, src, dst, str(count)))


def test_status_counts_what_each_rule_let_in_and_what_was_dropped_and_why(vms):
    attach_vm1()
    for _ in range(3):  # three flows through rule 1 (one SYN each: the rest of a flow is ESTABLISHED)
        assert connects(vms[9], VM1, 22) == 1
    assert connects(vms[9], VM1, 81, expect=False) == 0  # no rule for port 81: SYN (and retransmissions) dropped
    sh("ip", "netns", "exec", vms[9], "ping", "-c", "4", "-i", "0.2", "-W", "1", VM1)  # one flow, rule 3
    spoof(vms[1], "10.78.0.77", PEER, 5)  # a source address that is not VM 1's
    data = status(1)
    assert data["ok"] is True and data["vm"] == 1
    nic = data["nics"][0]
    assert (nic["vm"], nic["nic"], nic["health"], nic["problems"]) == (1, 0, "attached", [])
    rules = {r["rule"]: r for r in nic["rules"]}
    assert [(r["sg"], r["packets"]) for r in nic["rules"]] == [(100, 3), (100, 0), (101, 1), (101, rules[4]["packets"])]
    assert rules[1]["text"] == "TCP inbound port 22 from anywhere" and rules[1]["bytes"] == 3 * 60
    assert rules[4]["packets"] >= 1  # the VM's ICMP port unreachable for port 9, its ARP-free replies are ESTABLISHED
    assert nic["drops"]["no_rule"]["packets"] >= 1 and nic["inbound"]["dropped"]["packets"] >= 1
    assert nic["drops"]["anti_spoofing"]["packets"] == 5
    assert nic["outbound"]["dropped"]["packets"] >= 5
    # 3 SSH flows of 6 packets each way at least, 4 echo requests, plus SG-less noise
    assert nic["inbound"]["accepted"]["packets"] >= 3 * 3 + 4
    assert data["conntrack"]["max"] == 8192 and data["conntrack"]["count"] >= 1
    human = netfw("status", "1")
    assert human.returncode == 0 and "NIC 0: attached (tap one-1-0)" in human.stdout
    assert re.search(r"1\s+100\s+3\s+180 B\s+TCP inbound port 22 from anywhere", human.stdout)


def test_counters_start_again_when_an_update_reloads_the_rules_and_stay_when_it_changes_nothing(vms):
    """README: an update that changes the NIC's rules reloads its chains, and the kernel restarts their counters."""
    attach_vm1()
    assert connects(vms[9], VM1, 22) == 1
    assert status(1)["nics"][0]["rules"][0]["packets"] == 1
    attach_vm1()  # nothing to change: nothing reloaded
    assert status(1)["nics"][0]["rules"][0]["packets"] == 1
    api.update(NicSpec(1, 0, "vnbr0", rules=RULES1, mac=MAC1, ips=(VM1,), filter_mac=True, filter_ip=True,
                       conntrack_max=2000))
    assert status(1)["nics"][0]["rules"][0]["packets"] == 0


# --- 3. netfw metrics ---------------------------------------------------------------------------------------------


SAMPLE = re.compile(r'([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (\d+)')


def parse_exposition(text: str) -> dict[tuple, int]:
    """{(name, frozenset(labels)): value}; asserts every line is a HELP, a TYPE or a sample of a declared metric."""
    declared, samples = set(), {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        m = SAMPLE.fullmatch(line)
        assert m and m[1] in declared, line
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m[2]))
        samples[(m[1], labels)] = int(m[3])
    return samples


def test_metrics_file_holds_what_status_counts(vms, tmp_path):
    attach_vm1()
    api.attach(NicSpec(2, 0, "vnbr0"))
    assert connects(vms[9], VM1, 22) == connects(vms[9], VM2, 80) == 1
    spoof(vms[1], "10.78.0.77", PEER, 2)
    (tmp_path / "textfile").mkdir()
    out = tmp_path / "textfile" / "netfw.prom"
    res = netfw("metrics", "--output", str(out))
    assert res.returncode == 0, res.stderr
    samples = parse_exposition(out.read_text())
    data = status(1)["nics"][0]

    def get(name, **labels):
        return samples[(name, frozenset((k, str(v)) for k, v in labels.items()))]

    assert get("netfw_rule_packets_total", vm=1, nic=0, sg=100, rule=1) == 1
    assert get("netfw_dropped_packets_total", vm=1, nic=0, direction="outbound", reason="anti_spoofing") == 2
    assert get("netfw_packets_total", vm=1, nic=0, direction="inbound", verdict="accepted") <= \
        data["inbound"]["accepted"]["packets"]  # status read later: never fewer
    assert get("netfw_nic_health", vm=1, nic=0, health="attached") == 1
    assert get("netfw_nic_health", vm=2, nic=0, health="attached") == 1
    assert get("netfw_nic_health", vm=2, nic=0, health="drift") == 0
    assert get("netfw_conntrack_max", vm=2) == 8192 and get("netfw_conntrack_entries", vm=2) >= 1
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out.parent.iterdir()] == ["netfw.prom"]  # no temporary file left
    assert parse_exposition(netfw("metrics").stdout).keys() >= {k for k in samples if "health" in k[0]}


def test_metrics_with_one_corrupt_record_report_every_other_nic_and_that_nic_as_error(vms, lab, state_dir):
    """Issue 19: one record that cannot be read emptied `netfw metrics` for every VM (exit 2, no line)."""
    attach_vm1()
    lab.vm(2, 1, "10.78.0.21/24")
    api.attach_all([NicSpec(2, 0, "vnbr0"), NicSpec(2, 1, "vnbr0")])
    (state_dir / "vm-2" / "nic-1.json").write_text('{"spec": ')
    res = netfw("metrics")
    assert res.returncode == 1, res.stderr
    samples = parse_exposition(res.stdout)

    def get(name, **labels):
        return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))

    assert get("netfw_nic_health", vm=2, nic=1, health="error") == 1
    assert not any(("nic", "1") in labels for name, labels in samples if name != "netfw_nic_health")  # no counters
    for vm in (1, 2):
        assert get("netfw_nic_health", vm=vm, nic=0, health="attached") == 1
        assert get("netfw_packets_total", vm=vm, nic=0, direction="inbound", verdict="accepted") is not None
        assert get("netfw_conntrack_entries", vm=vm) is not None
    assert get("netfw_conntrack_max", vm=1) == 8192 and get("netfw_conntrack_max", vm=2) is None  # a sum unknown
    assert [line for line in res.stderr.splitlines() if line.startswith("ERROR:")] == [
        line for line in res.stderr.splitlines() if "VM 2 NIC 1" in line and "not a netfw record" in line]
    assert netfw("status", "--json").returncode == 1
    gc = netfw("gc", "--dry-run", "--json")
    assert gc.returncode == 0 and json.loads(gc.stdout)["items"] == []


# --- 4. netfw log -------------------------------------------------------------------------------------------------


class LogReader:
    """`netfw log ARGS --json` in the background: its JSON lines as they come."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([NETFW, "log", *args, "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self.times: list[float] = []
        line = self.proc.stderr.readline()
        if "listening" not in line:
            self.proc.kill()
            raise AssertionError(f"netfw log did not start: {line}{self.proc.stderr.read()}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))
            self.times.append(time.monotonic())

    def wait(self, pred, timeout: float = 5) -> dict | None:
        """The first line that matches pred, waiting up to timeout (the guests' IPv6 chatter is logged too)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [line for line in self.lines if pred(line)]
            if found:
                return found[0]
            time.sleep(0.05)
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(10)


def test_log_shows_a_dropped_packet_with_its_fields_and_why(vms):
    attach_vm1()
    reader = LogReader("1")
    try:
        sh(*in_guest(vms[9], "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                              "s.bind(('0.0.0.0', 40555))\ns.sendto(b'x', ('" + VM1 + "', 9))"))
        # the probe's own line (its source port): a guest's IGMP report (0.0.0.0 -> 224.0.0.22) is logged too
        first = reader.wait(lambda line: line["family"] == "ipv4" and line.get("sport") == 40555)
        assert {k: first[k] for k in ("vm", "nic", "direction", "reason", "family", "protocol", "src", "dst",
                                      "sport", "dport")} == {
            "vm": 1, "nic": 0, "direction": "inbound", "reason": "no_rule", "family": "ipv4", "protocol": "udp",
            "src": PEER, "dst": VM1, "sport": 40555, "dport": 9}
        spoof(vms[1], "10.78.0.77", PEER, 1)
        second = reader.wait(lambda line: line["direction"] == "outbound" and line["src"] == "10.78.0.77")
        assert (second["direction"], second["reason"], second["src"], second["dst"], second["dport"]) == (
            "outbound", "anti_spoofing", "10.78.0.77", PEER, 9)
    finally:
        reader.stop()


FRAMES = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for frame in sys.argv[1:]:
    s.send(bytes.fromhex(frame))
"""


def test_layer2_drops_are_counted_and_logged(vms):
    """ebtables' drops: a VLAN-tagged frame (ethertype) and an ARP reply claiming another address (anti-spoofing)."""
    attach_vm1()
    reader = LogReader("1")
    try:
        # VLAN 100 carrying a non-IP ethertype: with IP inside, br_netfilter would judge (and drop) a malformed packet
        tagged = fr.ether("02:78:00:00:00:09", MAC1, 0x8100, bytes.fromhex("0064 88b5") + b"tagged")
        arp = fr.arp_frame(MAC1, "ff:ff:ff:ff:ff:ff", 2, MAC1, "10.78.0.50", MAC1, "10.78.0.50")
        sh(*in_guest(vms[1], FRAMES, tagged.hex(), arp.hex()))
        vlan = reader.wait(lambda line: line["reason"] == "ethertype")
        spoofed = reader.wait(lambda line: line["family"] == "arp")
    finally:
        reader.stop()
    assert (vlan["direction"], vlan["mac"], vlan["nic"]) == ("outbound", MAC1, 0)
    assert (spoofed["direction"], spoofed["reason"], spoofed["src"]) == ("outbound", "anti_spoofing", "10.78.0.50")
    nic = status(1)["nics"][0]
    assert nic["drops"]["ethertype"]["packets"] == 1
    assert nic["drops"]["anti_spoofing"]["packets"] >= 1
    assert nic["outbound"]["dropped"]["packets"] >= 2


def test_log_human_form_and_count(vms):
    attach_vm1()
    proc = subprocess.Popen([NETFW, "log", "1", "0", "--count", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert "listening" in proc.stderr.readline()
    # a probe every 20 ms until the reader has its two lines: the guests' own chatter after link-up (IGMP, MLD
    # reports) is dropped and logged too, and may take one of the two places
    probes = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('0.0.0.0', 40556))\n"
              "for _ in range(250):\n    s.sendto(b'x', ('" + VM1 + "', 9))\n    time.sleep(0.02)")
    sender = subprocess.Popen(in_guest(vms[9], probes))
    try:
        out, _ = proc.communicate(timeout=10)
    finally:
        sender.kill()
        sender.wait()
    assert proc.returncode == 0
    lines = out.splitlines()
    assert len(lines) == 2
    probe = rf"\S+ nic 0 in  udp {PEER}:40556 -> {VM1}:9: dropped, no rule matched"
    assert any(re.fullmatch(probe, line) for line in lines), lines


def test_log_is_rate_limited_in_the_kernel_under_a_flood(vms):
    attach_vm1()
    reader = LogReader("1")
    try:
        start = time.monotonic()
        sent = int(sh(*in_guest(vms[9], BLAST, VM1, "9", "3")).stdout)
        elapsed = time.monotonic() - start
        time.sleep(0.5)
        # IPv4's bucket (each family has its own): the guests' own IPv6 chatter (MLD) may be logged beside
        got = sum(1 for line in reader.lines if line["family"] == "ipv4")
        flood = sum(1 for line in reader.lines if line["family"] == "ipv4" and line["dport"] == 9)
    finally:
        reader.stop()
    assert sent > 10_000  # a flood, dropped (no rule for port 9)
    bound = chains.LOG_BURST + chains.LOG_RATE * (elapsed + 0.5)
    assert chains.LOG_BURST <= flood <= got <= bound, (got, bound, sent, reader.lines)
    assert status(1)["nics"][0]["drops"]["no_rule"]["packets"] >= sent * 0.9


def test_log_stops_when_the_vm_namespace_goes(vms):
    attach_vm1()
    reader = LogReader("1")
    api.detach(1, 0)
    assert reader.proc.wait(5) == 0


def test_log_of_a_vm_that_is_not_attached_is_exit_2(vms):
    res = netfw("log", "1", check=False)
    assert res.returncode == 2 and "not attached" in res.stderr


# --- netfw status: every NIC netfw knows -------------------------------------------------------------------------


def test_status_lists_attached_drift_stale_and_orphan_nics(vms, state_dir):
    attach_vm1()
    clean = netfw("status", "--json")
    assert clean.returncode == 0
    assert json.loads(clean.stdout) == {"ok": True, "nics": [{"vm": 1, "nic": 0, "health": "attached",
                                                             "problems": []}]}
    api.attach(NicSpec(2, 0, "vnbr0"))
    sh("nsenter", "--net=/run/netns/one-2", "iptables", "-F", "one-2-0-i")  # drift
    sh("ip", "netns", "add", "one-3")  # a namespace no record accounts for
    lab_vm4 = NicSpec(4, 0, "vnbr0", tap="one-9-0")
    api.attach(lab_vm4)  # the peer's tap, attached as VM 4 ...
    (state_dir / "vm-4" / "nic-0.json").unlink()  # ... whose record is then lost: orphan
    (state_dir / "vm-5").mkdir()
    (state_dir / "vm-5" / "nic-1.json").write_text((state_dir / "vm-1" / "nic-0.json").read_text()
                                                   .replace('"vm": 1', '"vm": 5').replace('"nic": 0', '"nic": 1'))
    res = netfw("status", "--json")
    assert res.returncode == 1
    data = json.loads(res.stdout)
    found = {(n["vm"], n["nic"]): n for n in data["nics"]}
    assert data["ok"] is False
    assert {k: v["health"] for k, v in found.items()} == {(1, 0): "attached", (2, 0): "drift", (3, None): "orphan",
                                                         (4, 0): "orphan", (5, 1): "stale"}
    assert all(type(n["vm"]) is int and type(n["nic"]) in (int, type(None)) for n in data["nics"])
    assert any("one-2-0-i" in p for p in found[(2, 0)]["problems"])
    human = netfw("status")
    assert human.returncode == 1 and re.search(r"5\s+1\s+stale", human.stdout)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_an_update_that_turns_the_spoofing_filters_off_removes_their_chains(vms, monkeypatch, backend):
    """`-d` (anti-spoofing drops) is named by `-o`, `-s`, `-t`, `-l` and ebtables `-a`: the update must take it
    away last, in the same restore, with either backend."""
    monkeypatch.setenv("NETFW_IPTABLES_BACKEND", backend)
    attach_vm1()
    api.update(NicSpec(1, 0, "vnbr0", rules=RULES1))
    assert api.verify(1, 0) == {0: []}
    for tool in (f"iptables-{backend}-save", f"ip6tables-{backend}-save", "ebtables-save"):
        saved = sh("nsenter", "--net=/run/netns/one-1", tool).stdout
        assert "one-1-0-d" not in saved and "one-1-0-s" not in saved and "one-1-0-a" not in saved, tool
        assert ("one-1-0-c" in saved) == (tool != "ebtables-save"), tool
    assert connects(vms[9], VM1, 22) == 1
