"""What counting and logging cost the data plane (issue 11, 5): the same pair of netfw VMs, measured with netfw's
rules as attach loads them (rule comments, the conntrack cap chain, a rate-limited NFLOG rule before every DROP) and
with the same rules without them (comments removed, security-group rules accepting directly, no NFLOG rules, the
anti-spoofing DROPs direct), in interleaved rounds in one run, so that the machine's load drifts over both alike.

Measured, between guests g1 -> g2 of the benchmark lab (K = 0 other VMs):
  udp_kpps       64-byte UDP received (iperf3, as the data-plane benchmark): the accepted, established path
  est_kpps_cpu   the same path in packets per CPU second of one sender (an answered UDP flow, 18-byte payloads):
                 the forwarding runs in the sender's send calls, so this rate ignores other processes' load
  connect_us     median TCP connect latency: every SYN is a new flow, through the cap's connlimit
  drop_kpps_cpu  a flood to a port no rule allows, in packets per CPU second of the sender: the path of the log
                 rules, without a reader and with `netfw log` listening (NFLOG then copies the 10 packets/s the
                 limit lets through)
Every iptables rule has counters whatever netfw does (nf_tables adds a counter to every iptables-nft rule), so
"without" still counts; what it lacks is what issue 11 added.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading

from bench_lab import in_ns, in_sandbox, plain, sh  # also puts the repository on sys.path
from netfw import api
from netfw.model import names
from netfw.model.spec import NicSpec
from netfw.observe.nflog import open_reader
from netfw.rules.render import render, restore_text


FLOOD = r"""
import resource, socket, sys, time
dst, port, seconds, reply = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((dst, port))
if reply:  # the sink answers once: the flow is ESTABLISHED
    s.settimeout(3)
    s.send(b"hello")
    s.recv(100)
data, n, send = b"x" * 18, 0, s.send
end = time.monotonic() + seconds
cpu0 = cpu()
while time.monotonic() < end:
    for _ in range(1000):
        send(data)
    n += 1000
print(n, cpu() - cpu0)
"""


def load_plain(spec: NicSpec) -> None:
    """Reload the NIC's chains without observability (its next attach puts them back)."""
    ns = names.netns(spec.vm)
    for rules in render(spec).families:
        sh(*in_ns(ns, f"{rules.family}tables-restore", "--noflush"),
           stdin=restore_text(plain(spec, rules), with_jumps=False))


SINK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
data, peer = s.recvfrom(100)
s.sendto(data, peer)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sys.stdin.read()  # bound and unread: the flood ends in the full buffer, past every rule, without ICMP errors
"""
EST_PORT = 5203  # allowed by the benchmark's security group (UDP 5201:5210)


def flood_rate(src: str, dst_addr: str, seconds: float, port: int = 9, reply: bool = False) -> float:
    """Packets per CPU second of one sender flooding dst_addr's UDP port (9: no rule allows it, dropped)."""
    res = sh(*in_ns(src, sys.executable, "-c", FLOOD, dst_addr, str(port), str(seconds), "1" if reply else "0"),
             timeout=seconds + 30)
    sent, cpu = res.stdout.split()
    return int(sent) / max(float(cpu), 1e-6)


def drop_rate(src: str, dst_addr: str, seconds: float) -> float:
    return flood_rate(src, dst_addr, seconds)


def established_rate(src: str, dst: str, dst_addr: str, seconds: float) -> float:
    """Packets per CPU second of one sender flooding an answered (ESTABLISHED) UDP flow to dst, small packets."""
    sink = subprocess.Popen(in_ns(dst, sys.executable, "-c", SINK, str(EST_PORT)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        sink.stdout.readline()
        return flood_rate(src, dst_addr, seconds, EST_PORT, reply=True)
    finally:
        sink.stdin.close()
        sink.wait(timeout=5)


def _with_reader(vm: int, fn):
    """fn() while `netfw log`'s reader is bound to the VM's NIC 0 group and drained; (its result, packets read)."""
    reader = open_reader(f"/run/netns/{names.netns(vm)}", 1)
    got, stop = [0], threading.Event()

    def drain():
        while not stop.is_set():
            for _ in reader.packets(timeout=0.1):
                got[0] += 1

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        stop.set()
        thread.join(timeout=5)
        reader.close()
    return result, got[0]


def measure(specs: list[NicSpec], src: str, dst: str, dst_addr: str, rounds: int, seconds: float, connects: int,
            state_dir: str, traffic) -> dict:
    """Interleaved rounds of both variants; medians, spreads and the ratios with/without."""
    runs: dict[str, dict[str, list[float]]] = {v: {"udp_kpps": [], "est_kpps_cpu": [], "connect_us": [],
                                                   "drop_kpps_cpu": [], "drop_kpps_cpu_reader": []}
                                               for v in ("with", "without")}
    logged: list[float] = []
    for _ in range(rounds):
        for variant in ("without", "with"):
            for spec in specs:
                if variant == "without":
                    load_plain(spec)
                else:
                    api.attach(spec, state_dir=state_dir)  # repairs: the rules as attach loads them
            sh(*in_ns(src, "ping", "-c", "1", "-W", "1", dst_addr), check=False)
            r = runs[variant]
            r["udp_kpps"].append(traffic.udp_rate(src, dst, dst_addr, seconds))
            r["est_kpps_cpu"].append(established_rate(src, dst, dst_addr, seconds) / 1000)
            r["connect_us"].append(traffic.connect_latency(src, dst, dst_addr, connects, min(seconds * 2, 3.0))
                                   ["median_us"])
            r["drop_kpps_cpu"].append(drop_rate(src, dst_addr, seconds) / 1000)
            rate, n = _with_reader(specs[-1].vm, lambda: drop_rate(src, dst_addr, seconds))
            r["drop_kpps_cpu_reader"].append(rate / 1000)
            if variant == "with":
                logged.append(n / seconds)
    for spec in specs:
        api.attach(spec, state_dir=state_dir)
    out: dict = {"rounds": rounds, "seconds": seconds}
    for variant, metrics in runs.items():
        out[variant] = {m: {"median": round(statistics.median(v), 1), "min": round(min(v), 1),
                            "max": round(max(v), 1)} for m, v in metrics.items()}
    out["ratio"] = {m: round(out["with"][m]["median"] / out["without"][m]["median"], 3)
                    for m in runs["with"] if out["without"][m]["median"]}
    out["logged_per_s"] = round(statistics.median(logged), 1) if logged else None
    return out


def table(r: dict) -> list[str]:
    """Markdown: both variants and the ratio."""
    o = r.get("observability")
    if not o:
        return []
    labels = {"udp_kpps": "64-byte UDP received, established flow (iperf3, kpps; higher is better)",
              "est_kpps_cpu": "small UDP packets, established flow (kpps per CPU s of the sender; higher is better)",
              "connect_us": "TCP connect latency, median (µs; lower is better)",
              "drop_kpps_cpu": "flood dropped by no rule, no reader (kpps per CPU s; higher is better)",
              "drop_kpps_cpu_reader": "the same flood with `netfw log` reading (kpps per CPU s)"}
    rows = ["| measure | without | with | with/without |", "|---|---|---|---|"]
    for m, label in labels.items():
        w, wo = o["with"][m], o["without"][m]
        rows.append(f"| {label} | {wo['median']} ({wo['min']}-{wo['max']}) | {w['median']} ({w['min']}-{w['max']}) "
                    f"| {o['ratio'].get(m, '–')} |")
    return [f"**Cost of counting and logging** (K = 0, {o['rounds']} interleaved rounds of {o['seconds']} s; "
            f"median (min-max); the reader got {o['logged_per_s']} packets/s)", "", *rows, ""]


NEW_FLOWS = r"""
import resource, socket, sys, time
dst, first, count, seconds, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
sources = sys.argv[6].split(",") if len(sys.argv) > 6 else [""]  # round robin over these source addresses
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in sources]
for sock, src in zip(socks, sources):
    sock.bind((src, 0))
end, c0, i = time.monotonic() + seconds, cpu(), 0
while True:
    if gap:
        time.sleep(gap)
    socks[i % len(socks)].sendto(b"x" * 18, (dst, 1024 + (first + i) % 60000))  # a new flow per packet
    i += 1
    if count and i >= count or not count and i % 1000 == 0 and time.monotonic() >= end:
        break
print(i, cpu() - c0)
"""


def cap_cost(caps: list[int | None], seconds: float, rounds: int, sources: int = 1) -> list[dict]:
    """What the conntrack cap costs under a flood of new flows from one source whose share of the NIC's cap is full
    (sources > 1: from that many addresses in turn, after they filled the NIC's cap; None: no cap chain at all), in
    packets per CPU second of the sender; and whether 100 new flows are admitted once the table is flushed after the
    flood (the count is right again). A lab of its own: VM 2 allows UDP in, g1 floods it."""
    import bench_lab as lab
    import tempfile

    from netfw.model.spec import Rule

    def entries() -> int:
        return int(sh(*in_ns("one-2", "sysctl", "-n", "net.netfilter.nf_conntrack_count")).stdout)

    rows = []
    for cap in caps:
        lab.reset()
        lab.vn_bridge()
        (g1, a1), (_, a2) = lab.guest(1, 1), lab.guest(2, 2)
        extra = [f"{lab.SUBNET}.200.{n}" for n in range(1, sources)]
        for address in extra:
            sh("ip", "-n", g1, "addr", "add", f"{address}/16", "dev", "eth0")
        srcs = ",".join([a1, *extra])
        spec = NicSpec(2, 0, lab.VN_BRIDGE, rules=(Rule("UDP", "INBOUND"), Rule("ALL", "OUTBOUND")),
                       conntrack_max=cap or 8192)
        with tempfile.TemporaryDirectory() as state_dir:
            api.attach(spec, state_dir=state_dir)
            if cap is None:
                load_plain(spec)
            sh(*in_ns(g1, "ping", "-c", "1", a2), check=False)
            # one source fills its share (render.source_share); several fill the NIC's cap
            fill = (cap or 8192) // 2 if sources == 1 else (cap or 8192)
            sh(*in_ns(g1, sys.executable, "-c", NEW_FLOWS, a2, "0", str(fill), "0", "0", srcs), timeout=300)
            filled, rates = entries(), []
            for k in range(rounds):
                out = sh(*in_ns(g1, sys.executable, "-c", NEW_FLOWS, a2, str(7919 * (k + 1)), "0", str(seconds),
                                "0", srcs), timeout=seconds + 60).stdout.split()
                rates.append(int(out[0]) / float(out[1]) / 1000)
            after = entries()
            sh(*in_ns("one-2", "conntrack", "-F"), check=False)
            sh(*in_ns(g1, sys.executable, "-c", NEW_FLOWS, a2, "30000", "100", "0", "0.001"))
            rows.append({"cap": cap, "sources": sources, "filled": filled,
                         "kpps_per_cpu_s": round(statistics.median(rates), 1),
                         "spread": [round(r, 1) for r in rates], "table_after": after,
                         "admitted_after_flush": entries()})
            print(rows[-1], flush=True)
    lab.reset()
    return rows


def main() -> int:
    """Only this measurement, on a lab of its own: `scripts/bench_observe.py [--rounds N] [--seconds S]`."""
    import argparse
    import json
    import tempfile

    p = argparse.ArgumentParser(description="cost of counting and logging on the data plane (issue 11, 5)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2)
    p.add_argument("--connects", type=int, default=300)
    p.add_argument("--cap-cost", action="store_true", help="instead: the conntrack cap under a new-flow flood, by cap")
    p.add_argument("--sources", type=int, default=1, help="with --cap-cost: flood from this many addresses")
    p.add_argument("--caps", default="none,2000,4096,8192,16384,32768", help="with --cap-cost: the caps measured")
    args = p.parse_args()
    in_sandbox()
    from loguru import logger

    import bench_lab as lab
    import bench_traffic as traffic
    logger.remove()
    if args.cap_cost:
        caps = [None if c == "none" else int(c) for c in args.caps.split(",")]
        cap_cost(caps, args.seconds, args.rounds, args.sources)
        return 0
    lab.reset()
    try:
        lab.vn_bridge()
        guests = {vm: lab.guest(vm, vm) for vm in (1, 2)}
        lab.static_neighbours(guests)
        specs = [lab.spec(vm, lab.security_group(20)) for vm in (1, 2)]
        with tempfile.TemporaryDirectory() as state_dir:
            for spec in specs:
                api.attach(spec, state_dir=state_dir)
            result = measure(specs, guests[1][0], guests[2][0], guests[2][1], args.rounds, args.seconds,
                             args.connects, state_dir, traffic)
    finally:
        lab.reset()
    print(json.dumps(result, indent=1))
    print("\n".join(table({"observability": result})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
