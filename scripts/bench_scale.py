#!/usr/bin/env python3
"""Scale (issue 22): netfw's control plane on a host with N attached NICs, ratios measured in one run.

    scripts/bench_scale.py [--quick] [--ns 100,300,1000] [--rounds 5] [--out DIR]   (re-runs itself in scripts/sandbox)

For each N, on a Linux bridge, with a 20-rule security group per NIC (the main benchmark's "taps": veths on the VN
bridge), one VM NIC each:
  attach / detach of the Nth NIC: a probe NIC attached and detached `rounds` times beside N - 1 others (medians),
                against the same on an empty host (the 1st);
  status, status VM, metrics, gc --dry-run: each a `netfw` process, as an operator or a timer starts it: wall time,
                CPU time (netfw and every process it started), largest RSS (wait4); and the same calls in-process,
                for the processes started per NIC and netfw's own (Python) CPU time: where the time goes;
  gc at boot:   the NICs half torn down (the VMs' taps gone, namespaces left), then the same N records with nothing left
                in the kernel (a rebooted host): `netfw gc` each, and whether anything is left behind.
Writes scale.json and scale.md to --out (default docs/benchmarks) and prints the table. Leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

NETFW = str(HERE.parent / ".venv" / "bin" / "netfw")
PROBE_VM = 1  # the NIC attached and detached at each N; the N - 1 others are VMs 1000, 1001, ...
FIRST = 1000
MODES = {"quick": dict(ns=[3, 6], rounds=2, ovs_ns=[3]), "full": dict(ns=[100, 300, 1000], rounds=5, ovs_ns=[100])}


class Host:
    """The run's VN bridge: a Linux bridge, or an Open vSwitch bridge on a private ovs-vswitchd (userspace datapath,
    tests/integration/ovs.py) whose ports the taps are."""

    def __init__(self, kind: str = "linux"):
        import bench_lab as lab
        import bench_ovs
        self.kind, self.daemon = kind, None
        self.bridge = bench_ovs.OVS_BRIDGE if kind == "ovs" else lab.VN_BRIDGE

    def start(self) -> None:
        if self.kind == "ovs":
            import bench_ovs
            ovs = bench_ovs._ovs_module()
            self.daemon = ovs.Ovs()
            self.daemon.start()
        self.empty()

    def empty(self) -> None:
        """Nothing but the VN bridge (and the probe NIC's tap)."""
        import bench_lab as lab
        import bench_ovs
        if self.daemon is not None:
            bench_ovs._ovs_module().reset()  # first: deleting a port's link under OVS would leave a stale port behind
        lab.reset()
        if self.daemon is not None:
            bench_ovs._ovs_module().vsctl("add-br", self.bridge, "--", "set", "Bridge", self.bridge,
                                          "datapath_type=netdev")
        else:
            lab.vn_bridge()
        self.taps([PROBE_VM])

    def taps(self, vms: list[int]) -> None:
        import bench_lab as lab
        import bench_ovs
        if self.daemon is None:
            lab.cheap_taps(vms)
        for vm in vms if self.daemon is not None else ():
            bench_ovs.cheap_tap(vm, "ovs")

    def spec(self, vm: int, rules):
        import bench_lab as lab
        return lab.spec(vm, rules, bridge=self.bridge)

    def stop(self) -> None:
        import bench_lab as lab
        import bench_ovs
        if self.daemon is not None:
            bench_ovs._ovs_module().reset()
            self.daemon.stop()
        lab.reset()


#: Starts `netfw ...` as a child of a small process and reports its wall and CPU time and largest RSS (wait4). Not
#: from this process: the kernel counts the RSS a process had before its exec in its maxrss, and a child of this
#: process (vfork) would report this process's RSS, which holds N NICs' results.
TIMED = """import json, os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    json.dump({"s": time.perf_counter() - t, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_kib": usage.ru_maxrss,
               "code": os.waitstatus_to_exitcode(status)}, out)
"""


def cli(args: list[str], state_dir: str) -> dict:
    """One `netfw ...` process: wall s, CPU s (its own and its children's), largest RSS MiB, exit code, output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".json") as usage:
        subprocess.run([sys.executable, "-c", TIMED, usage.name, NETFW, *args, "--state-dir", state_dir],
                       stdout=out, stderr=err, check=False)
        got = json.loads(Path(usage.name).read_text())
        out.seek(0)
        err.seek(0)
        return {"s": round(got["s"], 3), "cpu_s": round(got["cpu_s"], 3), "rss_mib": round(got["rss_kib"] / 1024, 1),
                "code": got["code"], "lines": len(out.read().splitlines()),
                "stderr": err.read().decode(errors="replace")[-300:]}


def in_process(call) -> dict:
    """The same work in this process: processes started and netfw's own CPU time (Python, spawning included)."""
    from bench_control import Spawns
    with Spawns() as spawned:
        cpu, t = time.process_time(), time.perf_counter()
        call()
        return {"procs": spawned.count, "python_cpu_s": round(time.process_time() - cpu, 3),
                "s": round(time.perf_counter() - t, 3)}


def _costs(call) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and of the processes it started, processes) of call()."""
    from bench_control import Spawns
    before, cpu = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    with Spawns() as spawned:
        t = time.perf_counter()
        call()
        wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, time.process_time() - cpu + children, spawned.count


#: probe_rounds in a process of its own, as small as a `netfw attach` (sh forks netfw's process for every command
#: it starts: in this process, which holds N NICs' results, each fork would cost more as N grows).
PROBE = """import json, sys
sys.path.insert(0, sys.argv[1])
import bench_lab as lab, bench_scale as bs
host = bs.Host(sys.argv[2])
print(json.dumps(bs._probe_rounds(host, int(sys.argv[3]), sys.argv[4], lab.security_group(int(sys.argv[5])))))
"""


def probe_rounds(host: Host, rounds: int, state_dir: str, rules) -> dict:
    """Attach and detach the probe NIC `rounds` times in a fresh process (PROBE): medians of wall and CPU ms,
    processes of the last round."""
    res = subprocess.run([sys.executable, "-c", PROBE, str(HERE), host.kind, str(rounds), state_dir, str(len(rules))],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def _probe_rounds(host: Host, rounds: int, state_dir: str, rules) -> dict:
    """Attach and detach the probe NIC `rounds` times: medians of wall and CPU ms, processes of the last round."""
    import bench_lab as lab
    from netfw import api
    attach, detach = [], []
    for _ in range(rounds):
        attach.append(_costs(lambda: api.attach(host.spec(PROBE_VM, rules), state_dir=state_dir)))
        detach.append(_costs(lambda: api.detach(PROBE_VM, 0, state_dir=state_dir)))
    med = lambda runs, i: lab.ms(statistics.median(r[i] for r in runs))  # noqa: E731
    return {"attach_ms": med(attach, 0), "attach_cpu_ms": med(attach, 1), "attach_procs": attach[-1][2],
            "detach_ms": med(detach, 0), "detach_cpu_ms": med(detach, 1), "detach_procs": detach[-1][2]}


def build(host: Host, n: int, state_dir: str, rules) -> float:
    """N - 1 attached NICs beside the probe's tap (on an empty host): seconds it took."""
    from netfw import api
    vms = list(range(FIRST, FIRST + n - 1))
    host.taps(vms)
    t = time.perf_counter()
    for vm in vms:
        api.attach(host.spec(vm, rules), state_dir=state_dir)
    return round(time.perf_counter() - t, 1)


def leftovers(state_dir: str) -> list[str]:
    """What netfw left: namespaces one-*, links with its alias (hypervisor side), records and journals."""
    from netfw.kernel import probe
    left = [f"namespace {n}" for n in os.listdir(probe.NETNS_DIR) if n.startswith("one-")]
    left += [f"link {name}" for name, link in probe.links(None).items() if probe.alias_of(link)]
    left += [f"record {p.relative_to(state_dir)}" for p in Path(state_dir).rglob("nic-*.json")]
    return left


def boot_recovery(n: int, state_dir: str, work: Path) -> dict:
    """gc with the N NICs half torn down (the taps gone: their veth peers deleted), then gc of a copy of the same N
    records with nothing left in the kernel."""
    import bench_lab as lab
    stale = str(work / f"stale-{n}")
    shutil.copytree(state_dir, stale)
    lab.ip_batch([f"link del p{vm}" for vm in range(FIRST, FIRST + n - 1)] + [f"link del p{PROBE_VM}"],
                 lab.GUEST_SIDES)
    half = cli(["gc"], state_dir)
    half["left"] = leftovers(state_dir)
    reboot = cli(["gc"], stale)
    reboot["left"] = leftovers(stale)
    shutil.rmtree(stale)
    return {"gc_half": half, "gc_stale": reboot}


def at(host: Host, n: int, rounds: int, state_dir: str, work: Path, rules) -> dict:
    """Everything measured with N NICs; the host is emptied again afterwards."""
    import bench_lab as lab
    from netfw import api
    from netfw.observe import gc, health, metrics, status
    row: dict = {"n": n, "load_before": [round(x, 2) for x in os.getloadavg()]}
    row["build_s"] = build(host, n, state_dir, rules)
    row["quiet_s"] = lab.quiet()  # the 1st NIC is measured on a quiet machine too
    row.update(probe_rounds(host, rounds, state_dir, rules))
    api.attach(host.spec(PROBE_VM, rules), state_dir=state_dir)  # the probe too: N NICs attached
    commands = {"status": ["status"], "status_vm": ["status", str(FIRST)], "metrics": ["metrics"],
                "gc_dry": ["gc", "--dry-run"]}
    row["quiet_s"] += lab.quiet()
    for key, args in commands.items():
        row[key] = cli(args, state_dir)
    row["status_inproc"] = in_process(lambda: health.survey(state_dir))
    row["status_vm_inproc"] = in_process(lambda: status.vm_status(FIRST, None, state_dir))
    row["metrics_inproc"] = in_process(lambda: metrics.collect(state_dir))
    row["gc_dry_inproc"] = in_process(lambda: gc.collect(state_dir, dry_run=True))
    row.update(boot_recovery(n, state_dir, work))
    row["load_after"] = [round(x, 2) for x in os.getloadavg()]
    host.empty()
    return row


def measure(ns: list[int], rounds: int, say=print, mode: str = "full", kind: str = "linux") -> dict:
    """The scale table's data on a Linux or an Open vSwitch (kind "ovs") VN bridge: the first attach on an empty
    host, then every N (ascending)."""
    import bench_lab as lab
    work = Path(tempfile.mkdtemp(prefix="netfw-scale-"))
    rules = lab.security_group(20)
    out: dict = {"mode": mode, "kind": kind, "machine": lab.machine(), "rounds": rounds, "rows": []}
    say(f"scale ({kind}): N = {', '.join(map(str, ns))} attached NICs ...")
    t0 = time.perf_counter()
    host = Host(kind)
    try:
        host.start()
        lab.quiet()
        out["first"] = probe_rounds(host, rounds, str(work / "state-1"), rules)
        say(f"1st NIC: attach {out['first']['attach_ms']} ms (CPU {out['first']['attach_cpu_ms']}), detach "
            f"{out['first']['detach_ms']} ms (CPU {out['first']['detach_cpu_ms']})")
        host.empty()
        for n in ns:
            row = at(host, n, rounds, str(work / f"state-{n}"), work, rules)
            out["rows"].append(row)
            say(line(row, out["first"]))
    finally:
        host.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["duration_s"] = round(time.perf_counter() - t0, 1)
    return out


def measure_all(ns: list[int], rounds: int, ovs_ns: list[int] | None, say=print, mode: str = "full") -> dict:
    """measure() on a Linux bridge, then (ovs_ns) on Open vSwitch under "ovs", or why not ({"skipped": ...})."""
    import bench_ovs
    out = measure(ns, rounds, say, mode)
    if ovs_ns:
        why = bench_ovs.unavailable()
        out["ovs"] = {"skipped": why} if why else measure(ovs_ns, rounds, say, mode, kind="ovs")
    return out


def line(row: dict, first: dict) -> str:
    return (f"N={row['n']}: attach {row['attach_ms']} ms ({row['attach_ms'] / first['attach_ms']:.2f}x; CPU "
            f"{row['attach_cpu_ms'] / first['attach_cpu_ms']:.2f}x), detach {row['detach_ms']} ms "
            f"({row['detach_ms'] / first['detach_ms']:.2f}x; CPU {row['detach_cpu_ms'] / first['detach_cpu_ms']:.2f}x), "
            f"status {row['status']['s']} s, "
            f"status VM {row['status_vm']['s']} s, metrics {row['metrics']['s']} s, gc --dry-run "
            f"{row['gc_dry']['s']} s, gc half torn down {row['gc_half']['s']} s, gc stale {row['gc_stale']['s']} s")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="netfw's control plane with N attached NICs (issue 22)")
    p.add_argument("--quick", action="store_true", help="N = 3, 6 and 2 rounds: a smoke run (well under a minute)")
    p.add_argument("--ns", help="N values, comma-separated (default: 100,300,1000)")
    p.add_argument("--rounds", type=int, help="attach/detach rounds of the probe NIC at each N (default 5)")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks"), help="where scale.json/scale.md go")
    p.add_argument("--ovs", action="store_true", help="with --quick: the Open vSwitch run too (N = 3)")
    p.add_argument("--skip-ovs", action="store_true", help="leave out the Open vSwitch run (full: N = 100)")
    p.add_argument("--report-only", action="store_true", help="only rewrite scale.md from scale.json")
    args = p.parse_args(argv)
    mode = MODES["quick" if args.quick else "full"]
    args.ns = [int(n) for n in args.ns.split(",")] if args.ns else mode["ns"]
    args.rounds = args.rounds or mode["rounds"]
    args.ovs_ns = None if args.skip_ovs or (args.quick and not args.ovs) else mode["ovs_ns"]
    return args


def main(argv: list[str] | None = None) -> int:
    import bench_scale_report

    args = parse(argv)
    out = Path(args.out)
    if args.report_only:
        return bench_scale_report.write(out, json.loads((out / "scale.json").read_text()))
    from bench_lab import in_sandbox
    in_sandbox()
    from loguru import logger
    logger.remove()  # netfw logs every step; logging is not measured
    results = measure_all(args.ns, args.rounds, args.ovs_ns, say=lambda *a: print(*a, flush=True),
                                      mode="quick" if args.quick else "full")
    return bench_scale_report.save(out, results)


if __name__ == "__main__":
    sys.exit(main())
