#!/usr/bin/env python3
"""netfw benchmark: the per-VM firewall against OpenNebula's legacy global chain, and attach against the shell floor.

    scripts/bench.py [--quick] [--out DIR]       (re-runs itself inside scripts/sandbox when needed)

In one run, inside the unprivileged sandbox (traffic only between its own namespaces, 10.77.0.0/16):
  data plane    TCP throughput, 64-byte UDP rate and TCP connect latency between two simulated VMs while the host
                carries K other attached VMs (20-rule security group each): netfw vs the legacy layout (the pair's
                jumps last or first in `opennebula`);
  control plane attach/detach through the API and the CLI, processes spawned, the shell floor, the n-th attach on a
                loaded host, applying n rules (netfw vs per-rule `iptables -A` vs one restore), nft vs legacy;
  memory        kernel memory per attached VM, per legacy NIC and per 1,000 conntrack entries;
  observability at K = 0, the measured pair with netfw's rules as attached and without counting and logging
                (rule comments, conntrack cap chain, NFLOG rules), interleaved: small packets, connects, drops;
  Open vSwitch  (scripts/bench_ovs.py; --skip-ovs leaves it out) two VMs on an OVS bridge on the userspace datapath:
                plain, netfw on one VM, on both; attach/detach and the cut-over outage on OVS and on a Linux bridge;
  scale         (scripts/bench_scale.py, full mode only) N = 100, 300, 1,000 attached NICs: attach/detach of the
                Nth, status, status VM, metrics, gc, RSS, where the time goes; also written to scale.json, scale.md.
Writes results.json, README.md (tables and target verdicts) and PNG plots (when matplotlib is installed) to --out,
and prints the tables. Every traffic run is bounded; the whole run stops by itself (alarm) and cleans up.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_ovs  # noqa: E402  (its modes are part of this script's; it imports netfw only when measuring)

MODES = {
    # K values, traffic seconds, connects, control rounds (and start-up rounds), rule counts, per-rule sample,
    # conntrack flows, runs and rows of the hop-by-hop breakdown (None: all), alarm
    "quick": dict(ks=[0, 5], seconds=1, connects=50, rounds=2, rule_counts=[10, 100], sample=100, flows=2000,
                  alarm=300, observe_rounds=1, hop_runs=1, hop_rows=["direct", "legacy", "hop", "netfw", "netfw_hoff",
                                                                     "netfw_8021q"],
                  ovs=bench_ovs.MODES["quick"], scale=None),
    "full": dict(ks=[0, 100, 500, 1000], seconds=2, connects=300, rounds=5, rule_counts=[10, 100, 1000, 10000],
                 sample=1000, flows=20000, alarm=4200, observe_rounds=5, hop_runs=3, hop_rows=None,
                 ovs=bench_ovs.MODES["full"], scale=dict(ns=[100, 300, 1000], rounds=5, ovs_ns=[100])),
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny K and few rule counts: a smoke run (about 1.5 min)")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks"), help="where results go")
    p.add_argument("--ks", help="override K values, comma-separated (e.g. 0,100)")
    p.add_argument("--report-only", action="store_true", help="only rewrite README.md and plots from results.json")
    p.add_argument("--skip-ovs", action="store_true", help="leave out the Open vSwitch rows (scripts/bench_ovs.py)")
    return p.parse_args()


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout("benchmark took too long: stopped (alarm)")


def main() -> int:
    args = parse()
    if args.report_only:
        return write_report(Path(args.out), json.loads((Path(args.out) / "results.json").read_text()))
    from bench_lab import in_sandbox

    in_sandbox()
    from loguru import logger
    logger.remove()  # netfw logs every step; a library caller would configure this, and logging is not measured

    import bench_control as ctl
    import bench_hop as hop
    import bench_lab as lab
    import bench_observe as observe
    import bench_report as report
    import bench_startup as startup
    import bench_traffic as traffic
    from netfw import api

    mode = "quick" if args.quick else "full"
    cfg = dict(MODES[mode])
    if args.ks:
        cfg["ks"] = [int(k) for k in args.ks.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(cfg["alarm"])
    start = time.perf_counter()
    work = ctl.workdir()
    state_dir = str(work / "state")
    rules20 = lab.security_group(20)
    r: dict = {"mode": mode, "config": cfg, "machine": lab.machine(), "dataplane": {}, "control": {},
               "legacy_load": {}, "attach_series": [], "memory": {}, "dataplane_netfw_legacy_backend": {},
               "dataplane_8021q": {}}
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    try:
        lab.reset()
        say(f"netfw bench ({mode}) on {r['machine']['cpu']} x{r['machine']['nproc']}, kernel {r['machine']['kernel']}")
        r["process_cost"] = ctl.process_cost()
        say("CLI start-up ...")
        r["startup"] = startup.measure(cfg["rounds"])
        say("rule application ...")
        r["rules"] = ctl.rule_application(cfg["rule_counts"], budget_s=20, sample=cfg["sample"])
        say("conntrack memory ...")
        r["memory"]["conntrack"] = ctl.conntrack_memory(cfg["flows"])
        say("per-packet cost at K = 0, hop by hop ...")
        r["hop"] = hop.measure(cfg["hop_runs"], cfg["seconds"], cfg["hop_rows"])
        r["hop_runs"] = cfg["hop_runs"]
        r["ovs"] = open_vswitch(args.skip_ovs, cfg["ovs"], rules20, str(work / "state-ovs"), say)

        say("lab: VN bridge, two measured pairs (netfw VMs 1-2, legacy VMs 3-4)")
        lab.vn_bridge()
        guests = {vm: lab.guest(vm, vm) for vm in (1, 2, 3, 4)}
        lab.static_neighbours(guests)
        for vm in (1, 2):
            api.attach(lab.spec(vm, rules20), state_dir=state_dir)
        background: list[int] = []
        build_s = 0.0
        for k in cfg["ks"]:
            new = list(range(1000 + len(background), 1000 + k))
            if new:
                lab.cheap_taps(new)
                before = lab.snapshot()
                t0 = time.perf_counter()
                for vm in new:
                    t = time.perf_counter()
                    api.attach(lab.spec(vm, rules20), state_dir=state_dir)
                    r["attach_series"].append(round((time.perf_counter() - t) * 1000, 2))
                build_s += time.perf_counter() - t0
                background += new
                r["memory"]["netfw_per_vm"] = lab.memory_delta(before, lab.snapshot(), len(new))
                say(f"K={k}: attached {len(new)} background VMs in {time.perf_counter() - t0:.1f} s")
            if k in (cfg["ks"][0], cfg["ks"][-1]) or mode == "quick":
                r["control"][str(k)] = ctl.attach_costs(rules20, cfg["rounds"], state_dir, work)
                c = r["control"][str(k)]
                say(f"K={k}: attach api {c['api_attach']} ms (floor {c['floor_attach']}), cli {c['cli_sg0_attach']} ms")
            r["dataplane"][str(k)] = dataplane(k, cfg, guests, background, rules20, r, lab, traffic, api, state_dir)
            if k == 0:
                say("K=0: counting and logging vs without (interleaved) ...")
                r["observability"] = observe.measure([lab.spec(vm, rules20) for vm in (1, 2)], guests[1][0],
                                                     guests[2][0], guests[2][1], cfg["observe_rounds"],
                                                     cfg["seconds"], cfg["connects"], state_dir, traffic)
                o = r["observability"]
                say(f"K=0: small packets {o['with']['udp_kpps']['median']} kpps with counting and logging, "
                    f"{o['without']['udp_kpps']['median']} without: ratio {o['ratio'].get('udp_kpps')} "
                    f"(per CPU s: {o['ratio'].get('est_kpps_cpu')}); "
                    f"dropped flood {o['ratio'].get('drop_kpps_cpu')}, with a reader "
                    f"{o['ratio'].get('drop_kpps_cpu_reader')}; connect latency {o['ratio'].get('connect_us')}")
        r["background_vms"] = len(background)
        r["build_s"] = round(build_s, 1)
        if cfg["scale"]:  # scripts/bench_scale.py's table
            import bench_scale
            r["scale"] = bench_scale.measure_all(**cfg["scale"], say=say, mode=mode)
    except Timeout as e:
        say(f"ERROR: {e}")
        return 1
    finally:
        signal.alarm(0)
        lab.reset()
        import shutil
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(lab.SHIM_DIR, ignore_errors=True)
    r["duration_s"] = round(time.perf_counter() - start, 1)
    (out / "results.json").write_text(json.dumps(r, indent=1) + "\n")
    if "scale" in r:
        import bench_scale_report
        bench_scale_report.save(out, r["scale"])
    return write_report(out, r)


def open_vswitch(skip: bool, cfg: dict, rules, state_dir: str, say) -> dict:
    """The Open vSwitch rows (bench_ovs.measure), {"skipped": why}, or {"error": ...} when they failed: the rest of
    the run goes on and the report shows the failure. Leaves nothing behind."""
    import bench_lab as lab
    if skip:
        return {"skipped": "left out with --skip-ovs"}
    say("Open vSwitch (userspace datapath): plain, netfw on one VM, on both; attach/detach, cut-over vs Linux ...")
    lab.reset()
    try:
        o = bench_ovs.measure(cfg, rules, state_dir)
    except Timeout:
        raise
    except Exception as e:  # noqa: BLE001 - reported in results.json and the report, never hidden
        o = {"error": f"{type(e).__name__}: {e}"[:1000]}
    if "dataplane" in o:
        dp, cut = o["dataplane"], o["cutover"]
        say("Open vSwitch: TCP " + ", ".join(f"{k} {dp[k]['tcp_gbps']}" for k in bench_ovs.LAYOUTS) + " Gbit/s; "
            "UDP " + ", ".join(f"{k} {dp[k]['udp_kpps']}" for k in bench_ovs.LAYOUTS) + " kpps; cut-over silence "
            "attach/detach " + ", ".join(f"{k} {cut[k]['attach']['silence_ms_median']}/"
                                         f"{cut[k]['detach']['silence_ms_median']} ms" for k in ("ovs", "linux"))
            + f" ({o['duration_s']} s)")
    else:
        say(f"Open vSwitch: {o.get('skipped') or o.get('error')}")
    return o


def write_report(out: Path, r: dict) -> int:
    """README.md (tables, targets, analysis) and the PNG plots from results; prints the tables."""
    import bench_report as report
    pngs = report.plots(r, out)
    text = report.markdown(r)
    (out / "README.md").write_text(readme(text, pngs, r["mode"]))
    print(text)
    print(f"\nwrote {out}/results.json, README.md" + (f", {', '.join(pngs)}" if pngs else " (no PNGs: pip install matplotlib)"))
    return 0


def dataplane(k, cfg, guests, background, rules20, r, lab, traffic, api, state_dir) -> dict:
    """All layouts at this K: netfw (hypervisor table empty), then the legacy table with the pair last, first."""
    (g1, a1), (g2, a2), (g3, a3), (g4, a4) = (guests[v] for v in (1, 2, 3, 4))
    res = {}
    secs, conns = cfg["seconds"], cfg["connects"]
    lab.flush_host()
    lab.wait_arp(g1, a2)
    res["netfw"] = traffic.safe_measure(g1, g2, a2, secs, conns)
    if k in (cfg["ks"][0], cfg["ks"][-1]):  # the same pair with iptables-legacy in its VM namespaces
        for vm in (1, 2):
            api.detach(vm, 0, state_dir=state_dir)
        with lab.Backend("legacy"):
            for vm in (1, 2):
                api.attach(lab.spec(vm, rules20), state_dir=state_dir)
        lab.wait_arp(g1, a2)
        r["dataplane_netfw_legacy_backend"][str(k)] = traffic.safe_measure(g1, g2, a2, secs, conns)
        with lab.Backend("legacy"):
            for vm in (1, 2):
                api.detach(vm, 0, state_dir=state_dir)
        for vm in (1, 2):
            api.attach(lab.spec(vm, rules20), state_dir=state_dir)
    if k in (cfg["ks"][0], cfg["ks"][-1]):  # issue 20: netfw on an 802.1Q/vxlan network, documented way A
        r["dataplane_8021q"][str(k)] = documented_8021q(background, rules20, lab, traffic, (g1, g2, a2), secs, conns)
    load = {}
    for key, first in (("legacy_last", False), ("legacy_first", True)):
        table = lab.legacy_table([3, 4], background, rules20, pair_first=first)
        lab.flush_host()
        before = lab.snapshot() if (key == "legacy_last" and k == cfg["ks"][-1] and k) else None
        t = time.perf_counter()
        batches = lab.restore("nft", table)
        load.setdefault("nft_ms", round((time.perf_counter() - t) * 1000, 1))
        load.setdefault("nft_batches", batches)
        load["rules"] = sum(1 for line in table if line.startswith("-A"))
        if before:
            r["memory"]["legacy_per_nic"] = lab.memory_delta(before, lab.snapshot(), k)
        lab.wait_arp(g3, a4)
        res[key] = traffic.safe_measure(g3, g4, a4, secs, conns)
    # The same table (pair last) with iptables-legacy: is the per-packet cost the backend's or the layout's?
    lab.flush_host()
    table = lab.legacy_table([3, 4], background, rules20, pair_first=False)
    t = time.perf_counter()
    lab.restore("legacy", table)
    load["xt_ms"] = round((time.perf_counter() - t) * 1000, 1)
    res["legacy_last_xt"] = traffic.safe_measure(g3, g4, a4, secs, conns)
    lab.flush_host()
    r["legacy_load"][str(k)] = load
    print(f"K={k}: " + "; ".join(f"{name} {m['tcp_gbps']} Gbit/s {m['udp_kpps']} kpps {m['connect']['median_us']} us "
                                 f"{m.get('error', '')}"
                                 for name, m in res.items()), flush=True)
    return res


def documented_8021q(background, rules20, lab, traffic, pair, secs, conns) -> dict:
    """The netfw pair (VMs 1, 2) and the K background VMs on an `802.1Q`/`vxlan` network with netfw installed as
    docs/opennebula.md way A says: the driver's post builds every NIC's legacy chains (the pair's jumps at the bottom
    of `opennebula`), then netfw's hook attaches the NIC and removes them (`documented`); `kept`: the same with the
    legacy chains left in place, as before issue 20. The hypervisor's table is flushed again afterwards."""
    g1, g2, a2 = pair
    res = {}
    lab.flush_host()
    lab.restore("nft", lab.legacy_table([1, 2], background, rules20, pair_first=False))
    lab.wait_arp(g1, a2)
    res["kept"] = traffic.safe_measure(g1, g2, a2, secs, conns)
    lab.legacy_removed([1, 2, *background], real=[1, 2])
    lab.wait_arp(g1, a2)
    res["documented"] = traffic.safe_measure(g1, g2, a2, secs, conns)
    lab.flush_host()
    print("  802.1Q documented: " + "; ".join(f"{name} {m['tcp_gbps']} Gbit/s {m['udp_kpps']} kpps" for name, m in
                                              res.items()), flush=True)
    return res


def readme(tables: str, pngs: list[str], mode: str) -> str:
    """docs/benchmarks/README.md: how to run, method, the generated tables and plots, the analysis."""
    from bench_analysis import ANALYSIS, METHOD  # the prose that does not come from numbers
    images = "\n".join(f"![{p}]({p})" for p in pngs)
    return (f"# netfw benchmarks\n\n{METHOD}\n\n## Results ({mode} run)\n\n{tables}\n\n"
            f"{('### Plots' + chr(10) + chr(10) + images + chr(10)) if pngs else ''}\n{ANALYSIS}\n")


if __name__ == "__main__":
    sys.exit(main())
