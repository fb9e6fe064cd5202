#!/usr/bin/env python3
"""Open vSwitch rows: netfw on an Open vSwitch VN bridge (userspace datapath), side by side in one run.

    scripts/bench_ovs.py [--quick] [--json FILE]     (re-runs itself inside scripts/sandbox when needed)

scripts/bench.py calls measure() in both modes (`--skip-ovs` leaves it out). Inside the sandbox a private Open vSwitch
(tests/integration/ovs.py) runs on the userspace `netdev` datapath, with an OVS VN bridge `bnovs0` and two simulated
VMs on it (guest namespaces behind veth "taps" one-11-0 and one-12-0, 10.79.0.0/24, `ethtool -K eth0 tx off` in the
guests: the userspace datapath completes no checksum offload, KERNEL.md); a Linux VN bridge `bnvn0` with two more VMs
(one-21-0, one-22-0) is the reference. Rounds rotate the order of the rows; medians over rounds:
  data plane    TCP throughput (iperf3, one stream) and 64-byte UDP received rate (iperf3, no rate limit) from VM 11 to
                VM 12: plain Open vSwitch (no netfw), netfw on the receiving VM 12, netfw on both (20-rule group);
  attach/detach one NIC on a fresh tap through netfw.api (20 rules) and the CLI (security group 0, a new process),
                on Open vSwitch and on the Linux bridge, with the processes netfw starts;
  cut-over      echo requests lost from a 2 ms ping stream between the two VMs while the receiver's NIC is attached
                and detached (netfw.api), on Open vSwitch and on the Linux bridge (the method of scripts/cutover.sh).
The caveat of every table: the userspace datapath forwards each packet in ovs-vswitchd, a process, so its absolute
rates are not those of Open vSwitch's kernel datapath (production); what carries over is netfw / plain.
When Open vSwitch cannot run here (not installed, no /dev/net/tun for the netdev datapath, ethtool missing),
measure() returns {"skipped": why} and the report says so.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OVS_BRIDGE = "bnovs0"
OVS_SUBNET = "10.79.0"
OVS_VMS = (11, 12)  # sender, receiver: the receiver is the VM attached alone and in the cut-over
LINUX_VMS = (21, 22)
TIMED_VMS = {"ovs": 31, "linux": 32}  # attach/detach timing, on taps without a guest
LAYOUTS = {"plain": (), "one": (OVS_VMS[1],), "both": OVS_VMS}
LAYOUT_NAMES = {"plain": "plain Open vSwitch (no netfw)", "one": "netfw on the receiving VM",
                "both": "netfw on both VMs"}
BRIDGE_NAMES = {"ovs": "Open vSwitch (userspace)", "linux": "Linux bridge"}
PING_INTERVAL_S = 0.002
#: Unanswered echo requests at the end of a stream that count as still in flight, not lost (50 ms of the stream):
#: more than that and the path did not come back within the quiet time after the command.
IN_FLIGHT = 25

MODES = {"quick": dict(seconds=1, rounds=1, cutover_rounds=1), "full": dict(seconds=2, rounds=5, cutover_rounds=10)}

CAVEAT = ("userspace datapath: ovs-vswitchd forwards every packet in a process (this kernel has no openvswitch "
          "module), so absolute rates are far from those of the kernel datapath; compare netfw / plain")


# -- Open vSwitch and the lab ----------------------------------------------------------------------------------------
def _ovs_module():
    """tests/integration/ovs.py: the private Open vSwitch the integration tests use."""
    import bench_lab  # noqa: F401  (puts the repository's root on sys.path, where `tests` is)
    from tests.integration import ovs
    return ovs


def unavailable() -> str | None:
    """Why the Open vSwitch rows cannot be measured here before trying (missing tools), or None."""
    why = _ovs_module().unavailable()
    if why:
        return why
    if shutil.which("ethtool") is None:
        return "ethtool is not installed (the guests need `ethtool -K eth0 tx off` for TCP on the userspace datapath)"
    return None


def ovs_version() -> str:
    from bench_lab import sh
    return (sh("ovs-vswitchd", "--version", check=False).stdout.splitlines() or ["?"])[0]


def ovs_guest(vm: int) -> tuple[str, str]:
    """A simulated VM on the OVS bridge: guest namespace g<vm>, tap one-<vm>-0 an OVS port, checksums in the guest."""
    from bench_lab import in_ns, ip_batch, sh
    ns, tap, addr = f"g{vm}", f"one-{vm}-0", f"{OVS_SUBNET}.{vm}"
    sh("ip", "netns", "add", ns)
    ip_batch([f"link add {tap} type veth peer name eth0 netns {ns}", f"link set {tap} up"])
    _ovs_module().vsctl("add-port", OVS_BRIDGE, tap)
    ip_batch(["link set lo up", f"addr add {addr}/24 dev eth0", "link set eth0 up"], ns)
    sh(*in_ns(ns, "ethtool", "-K", "eth0", "tx", "off"))
    return ns, addr


def cheap_tap(vm: int, kind: str) -> None:
    """A tap without a guest (a veth whose peer p<VM> stands for QEMU's side, out of the hypervisor's namespace:
    bench_lab.GUEST_SIDES) on the OVS or the Linux VN bridge."""
    from bench_lab import cheap_taps
    if kind == "linux":
        cheap_taps([vm])
        return
    cheap_taps([vm], bridge=None)
    _ovs_module().vsctl("add-port", OVS_BRIDGE, f"one-{vm}-0")


def bridge_of(kind: str) -> str:
    from bench_lab import VN_BRIDGE
    return OVS_BRIDGE if kind == "ovs" else VN_BRIDGE


class Attached:
    """Which VMs netfw has attached (each NIC 0, on the bridge of its kind); moves between sets with netfw.api."""

    def __init__(self, rules, state_dir: str):
        self.rules, self.state_dir, self.now = rules, state_dir, {}

    def attach(self, vm: int, kind: str) -> None:
        from bench_lab import spec
        from netfw import api
        api.attach(spec(vm, self.rules, bridge=bridge_of(kind)), state_dir=self.state_dir)
        self.now[vm] = kind

    def detach(self, vm: int) -> None:
        from netfw import api
        api.detach(vm, 0, state_dir=self.state_dir)
        self.now.pop(vm, None)

    def only(self, vms, kind: str) -> None:
        """Exactly `vms` attached among the VMs of this kind."""
        for vm in [v for v, k in self.now.items() if k == kind and v not in vms]:
            self.detach(vm)
        for vm in vms:
            if vm not in self.now:
                self.attach(vm, kind)

    def clear(self) -> None:
        """Detach everything this run attached, going on past failures (cleanup). Safe to repeat."""
        for vm in list(self.now):
            try:
                self.detach(vm)
            except Exception:  # noqa: BLE001 - cleanup: the sandbox goes anyway, the next detach may succeed
                self.now.pop(vm, None)


def _rotated(items: list, i: int) -> list:
    return items[i % len(items):] + items[:i % len(items)]


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


# -- data plane ------------------------------------------------------------------------------------------------------
def dataplane(att: Attached, guests: dict, rounds: int, seconds: float) -> dict:
    """{layout: {tcp_gbps, udp_kpps: median, *_runs: per round}} between the two OVS VMs; errors listed."""
    import bench_traffic as traffic
    from bench_lab import wait_arp
    (src, _), (dst, dst_addr) = guests[OVS_VMS[0]], guests[OVS_VMS[1]]
    runs = {name: {"tcp_gbps": [], "udp_kpps": []} for name in LAYOUTS}
    errors = []
    for i in range(rounds):
        for name in _rotated(list(LAYOUTS), i):
            att.only(LAYOUTS[name], "ovs")
            wait_arp(src, dst_addr)
            for metric, fn in (("tcp_gbps", traffic.tcp_throughput), ("udp_kpps", traffic.udp_rate)):
                try:
                    runs[name][metric].append(fn(src, dst, dst_addr, seconds))
                except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                    runs[name][metric].append(None)
                    errors.append(f"{name} {metric}: {str(e)[:200]}")
    att.only((), "ovs")
    out = {name: {"tcp_gbps": _median(r["tcp_gbps"]), "udp_kpps": _median(r["udp_kpps"]),
                  "tcp_runs": r["tcp_gbps"], "udp_runs": r["udp_kpps"]} for name, r in runs.items()}
    if errors:
        out["errors"] = errors
    return out


# -- attach / detach -------------------------------------------------------------------------------------------------
def _timed(fn) -> tuple[float, int]:
    from bench_control import Spawns
    with Spawns() as p:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t, p.count


def _cli(*argv: str) -> float:
    from bench_control import NETFW_CLI
    from bench_lab import sh
    t = time.perf_counter()
    sh(NETFW_CLI, *argv)
    return time.perf_counter() - t


def control(att: Attached, rounds: int) -> dict:
    """Attach/detach of one NIC on Open vSwitch and on the Linux bridge: API (20 rules) and CLI (SG 0); medians, ms."""
    samples: dict[str, list] = {}
    sd = att.state_dir

    def once(kind: str) -> dict:
        vm = TIMED_VMS[kind]
        ta, pa = _timed(lambda: att.attach(vm, kind))
        td, pd = _timed(lambda: att.detach(vm))
        ca = _cli("attach", str(vm), "0", "--bridge", bridge_of(kind), "--state-dir", sd)
        cd = _cli("detach", str(vm), "0", "--state-dir", sd)
        return {"api_attach": ta, "api_detach": td, "cli_attach": ca, "cli_detach": cd,
                "api_attach_procs": pa, "api_detach_procs": pd}

    for kind in TIMED_VMS:
        once(kind)  # warm-up: first namespace, page cache, byte-code of the CLI
    for i in range(rounds):
        for kind in _rotated(list(TIMED_VMS), i):
            for key, value in once(kind).items():
                samples.setdefault(f"{kind}_{key}", []).append(value)
    out = {k: (v[0] if k.endswith("_procs") else round(statistics.median(v) * 1000, 1)) for k, v in samples.items()}
    return out | {"rounds": rounds}


# -- cut-over outage -------------------------------------------------------------------------------------------------
def lost_echoes(output: str) -> dict:
    """From the output of `ping -D`: echo requests lost, the longest silence between two replies (ms), and whether
    replies came back before the stream was stopped.

    A request is lost when its sequence number is below the last one answered and it got no reply; the last few
    requests may still be in flight when ping is stopped, so they count neither way. The silence is the outage's
    length: while a reply is outstanding, ping sends one request per 10 ms instead of one per 2 ms (when its next
    send is due within a jiffy, iputils waits for a reply for its minimum interval, 10 ms), so lost requests times
    2 ms understates it.
    """
    replies = {int(seq): float(t) for t, seq in re.findall(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+)", output, re.M)}
    sent = re.search(r"(\d+) packets transmitted", output)
    if not replies or not sent:
        raise RuntimeError(f"ping answered nothing: {output.strip()[-200:]}")
    last = max(replies)
    times = sorted(replies.values())
    silence = max((b - a for a, b in zip(times, times[1:])), default=0.0)
    return {"lost": last - len(replies), "silence_ms": round(silence * 1000, 1),
            "recovered": int(sent.group(1)) - last <= IN_FLIGHT}


def outage(src_ns: str, dst_addr: str, action) -> dict:
    """A 2 ms ping stream while `action` runs (0.2 s before it, 0.3 s after): see lost_echoes."""
    from bench_lab import in_ns
    ping = subprocess.Popen(in_ns(src_ns, "ping", "-n", "-D", "-i", str(PING_INTERVAL_S), dst_addr),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.2)
        action()
        time.sleep(0.3)
    finally:
        ping.send_signal(signal.SIGINT)  # ping prints its statistics and exits
        try:
            output = ping.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            ping.kill()
            output = ping.communicate()[0]
    return lost_echoes(output)


#: What runs while the ping stream flows: the receiver's NIC attached and detached (its cut-over), and another VM's
#: (a bystander: what the stream loses then is the measurement's floor, or the bridge's own stall).
ACTIONS = ("attach", "detach", "other_attach", "other_detach")


def cutover(att: Attached, guests: dict, rounds: int) -> dict:
    """{kind: {action: {lost, silence_ms: per round, medians, maxima}, not_recovered}} on both bridges."""
    from bench_lab import wait_arp
    pairs = {"ovs": OVS_VMS, "linux": LINUX_VMS}
    runs: dict = {kind: {a: {"lost": [], "silence_ms": []} for a in ACTIONS} | {"not_recovered": 0} for kind in pairs}
    for kind, (src_vm, dst_vm) in pairs.items():
        wait_arp(guests[src_vm][0], guests[dst_vm][1])
    for i in range(rounds):
        for kind in _rotated(list(pairs), i):
            (src_vm, dst_vm), other = pairs[kind], TIMED_VMS[kind]
            src, dst_addr = guests[src_vm][0], guests[dst_vm][1]
            for action, fn in (("attach", lambda: att.attach(dst_vm, kind)), ("detach", lambda: att.detach(dst_vm)),
                               ("other_attach", lambda: att.attach(other, kind)),
                               ("other_detach", lambda: att.detach(other))):
                r = outage(src, dst_addr, fn)
                for key in ("lost", "silence_ms"):
                    runs[kind][action][key].append(r[key])
                runs[kind]["not_recovered"] += not r["recovered"]
    for r in runs.values():
        for action in ACTIONS:
            for key in ("lost", "silence_ms"):
                r[action][f"{key}_median"] = _median(r[action][key])
                r[action][f"{key}_max"] = max(r[action][key])
    return runs | {"rounds": rounds, "interval_ms": PING_INTERVAL_S * 1000}


# -- the whole measurement -------------------------------------------------------------------------------------------
def measure(cfg: dict, rules, state_dir: str) -> dict:
    """Every Open vSwitch row, or {"skipped": why} when Open vSwitch cannot run here. Leaves nothing behind."""
    import bench_lab as lab
    why = unavailable()
    if why:
        return {"skipped": why}
    ovs = _ovs_module()
    daemon = ovs.Ovs()
    try:
        daemon.start()
    except ovs.OvsUnavailable as e:
        return {"skipped": f"Open vSwitch cannot start in this sandbox: {str(e)[:400]}"}
    att = Attached(rules, state_dir)
    start = time.perf_counter()
    try:
        ovs.vsctl("add-br", OVS_BRIDGE, "--", "set", "Bridge", OVS_BRIDGE, "datapath_type=netdev")
        lab.vn_bridge()
        guests = {vm: ovs_guest(vm) for vm in OVS_VMS}
        linux = {vm: lab.guest(vm, vm) for vm in LINUX_VMS}
        # Pinned neighbours: the outage counted is the cut-over's, never an ARP retry after it (OVS_FACTS.md).
        lab.static_neighbours(guests)
        lab.static_neighbours(linux)
        guests |= linux
        for kind, vm in TIMED_VMS.items():
            cheap_tap(vm, kind)
        r = {"version": ovs_version(), "datapath": "netdev", "caveat": CAVEAT, "config": cfg}
        r["dataplane"] = dataplane(att, guests, cfg["rounds"], cfg["seconds"])
        r["control"] = control(att, cfg["rounds"])
        r["cutover"] = cutover(att, guests, cfg["cutover_rounds"])
        daemon.check()
        r["duration_s"] = round(time.perf_counter() - start, 1)
        return r
    finally:
        att.clear()
        if ovs.running():
            ovs.reset()  # first: deleting a port's link under OVS would leave a stale port behind
        daemon.stop()
        lab.reset()


# -- the tables ------------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "–"
    return f"{v:,.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def table(o: dict) -> str:
    """The "### Open vSwitch (userspace datapath)" section in Markdown: measured, skipped (why) or failed (how)."""
    out = ["### Open vSwitch (userspace datapath)", ""]
    if "skipped" in o:
        return "\n".join(out + [f"Not measured in this run: {o['skipped'].splitlines()[0]}", ""])
    if "error" in o:
        return "\n".join(out + [f"Failed in this run: `{o['error'].splitlines()[0]}`", ""])
    out += [f"{o['version']}, `datapath_type=netdev`, started privately in the sandbox (this kernel has no "
            "`openvswitch` module). **Caveat:** the userspace datapath forwards every packet in `ovs-vswitchd`, a "
            "process, not in the kernel: its absolute rates are far below those of the kernel datapath that "
            "production uses, and they measure ovs-vswitchd as much as netfw. The ratios within this run (netfw / "
            "plain, Open vSwitch / Linux bridge) are what carries over. The guests run `ethtool -K eth0 tx off` "
            "(KERNEL.md); the Linux bridge rows come from the same run, rounds alternating.", ""]
    return "\n".join(out + _dataplane_table(o) + _control_table(o) + _cutover_table(o))


def _dataplane_table(o: dict) -> list[str]:
    dp, n = o["dataplane"], o["config"]["rounds"]
    plain = dp["plain"]
    out = [f"**Two VMs on an Open vSwitch bridge, VM 11 → VM 12** ({CAVEAT}; 20-rule security group; median of "
           f"{_rounds(n)})", "",
           "| layout | TCP, one stream (Gbit/s) | netfw / plain | 64-byte UDP received (kpps) | netfw / plain |",
           "|---|---|---|---|---|"]
    for key, name in LAYOUT_NAMES.items():
        m = dp[key]
        out.append(f"| {name} | {_fmt(m['tcp_gbps'])} | {_fmt(_ratio(m['tcp_gbps'], plain['tcp_gbps']))} | "
                   f"{_fmt(m['udp_kpps'])} | {_fmt(_ratio(m['udp_kpps'], plain['udp_kpps']))} |")
    out += [""] + [f"Failed: `{e}`  " for e in dp.get("errors", [])]
    return out + [""] if dp.get("errors") else out


def _control_table(o: dict) -> list[str]:
    c = o["control"]
    out = [f"**Attach / detach of one NIC, Open vSwitch vs Linux bridge** (userspace datapath: ovs-vswitchd closes "
           f"and opens the port's netdev itself, the kernel datapath was not measured; median of "
           f"{_rounds(c['rounds'])}, ms)", "",
           "| variant | attach OVS | attach Linux | OVS / Linux | detach OVS | detach Linux | OVS / Linux |",
           "|---|---|---|---|---|---|---|"]
    for key, name in (("api", "netfw API, 20 rules"), ("cli", "netfw CLI, SG 0 (a new process)")):
        a, la = c[f"ovs_{key}_attach"], c[f"linux_{key}_attach"]
        d, ld = c[f"ovs_{key}_detach"], c[f"linux_{key}_detach"]
        out.append(f"| {name} | {_fmt(a)} | {_fmt(la)} | {_fmt(_ratio(a, la))} | {_fmt(d)} | {_fmt(ld)} | "
                   f"{_fmt(_ratio(d, ld))} |")
    out.append(f"| processes netfw starts (API) | {c['ovs_api_attach_procs']} | {c['linux_api_attach_procs']} | | "
               f"{c['ovs_api_detach_procs']} | {c['linux_api_detach_procs']} | |")
    return out + [""]


def _cutover_table(o: dict) -> list[str]:
    cut = o["cutover"]
    nc = cut["rounds"]
    out = [f"**Cut-over outage: a {_fmt(cut['interval_ms'])} ms ping stream VM 11 → VM 12 while VM 12's NIC is "
           f"attached and detached** (netfw.api; userspace datapath: the outage includes ovs-vswitchd closing and "
           f"reopening the port's netdev, the kernel datapath was not measured; {_rounds(nc)}). *Silence*: the "
           "longest time between two replies, i.e. the outage, to ~10 ms (while a reply is outstanding ping sends "
           "one request per 10 ms, not per 2 ms, so lost requests × 2 ms understates the outage)", "",
           "| bridge | NIC attached and detached | attach: lost, median (max) | attach: silence ms, median (max) | "
           "detach: lost, median (max) | detach: silence ms, median (max) |", "|---|---|---|---|---|---|"]
    for kind, name in BRIDGE_NAMES.items():
        for prefix, whose in (("", "VM 12's NIC (its cut-over)"), ("other_", "another VM's NIC (bystander)")):
            cells = [f"{_fmt(cut[kind][prefix + a][f'{key}_median'])} ({_fmt(cut[kind][prefix + a][f'{key}_max'])})"
                     for a in ("attach", "detach") for key in ("lost", "silence_ms")]
            out.append(f"| {name} | {whose} | " + " | ".join(cells) + " |")
    stuck = {kind: cut[kind]["not_recovered"] for kind in BRIDGE_NAMES if cut[kind]["not_recovered"]}
    if stuck:
        out += ["", "The ping stream had not come back 0.3 s after the command in: "
                + ", ".join(f"{BRIDGE_NAMES[k]} {v} of {len(ACTIONS) * nc}" for k, v in stuck.items()) + "."]
    return out + [""]


def _rounds(n: int) -> str:
    return f"{n} round" + ("" if n == 1 else "s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one round, 1 s traffic runs")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    from bench_lab import in_sandbox

    in_sandbox()
    import bench_control as ctl
    import bench_lab as lab
    from loguru import logger
    logger.remove()  # netfw logs every step; logging is not what is measured
    lab.reset()
    work = ctl.workdir()
    try:
        r = measure(dict(MODES["quick" if args.quick else "full"]), lab.security_group(20), str(work / "state"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
