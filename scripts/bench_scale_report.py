"""scripts/bench_scale.py's command line and its table (scale.md): pure but for main()."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    import bench_scale
    p = argparse.ArgumentParser(description="netfw's control plane with N attached NICs (issue 22)")
    p.add_argument("--quick", action="store_true", help="N = 3, 6 and 2 rounds: a smoke run (well under a minute)")
    p.add_argument("--ns", help="N values, comma-separated (default: 100,300,1000)")
    p.add_argument("--rounds", type=int, help="attach/detach rounds of the probe NIC at each N (default 5)")
    p.add_argument("--out", default=str(HERE.parent / "docs" / "benchmarks"), help="where scale.json/scale.md go")
    p.add_argument("--ovs", action="store_true", help="with --quick: the Open vSwitch run too (N = 3)")
    p.add_argument("--skip-ovs", action="store_true", help="leave out the Open vSwitch run (full: N = 100)")
    p.add_argument("--report-only", action="store_true", help="only rewrite scale.md from scale.json")
    args = p.parse_args(argv)
    mode = bench_scale.MODES["quick" if args.quick else "full"]
    args.ns = [int(n) for n in args.ns.split(",")] if args.ns else mode["ns"]
    args.rounds = args.rounds or mode["rounds"]
    args.ovs_ns = None if args.skip_ovs or (args.quick and not args.ovs) else mode["ovs_ns"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    if args.report_only:
        return write(out, json.loads((out / "scale.json").read_text()))
    from bench_lab import in_sandbox
    in_sandbox()
    from loguru import logger
    logger.remove()  # netfw logs every step; logging is not measured
    import bench_scale
    results = bench_scale.measure_all(args.ns, args.rounds, args.ovs_ns, say=lambda *a: print(*a, flush=True),
                                      mode="quick" if args.quick else "full")
    return save(out, results)


def save(out: Path, results: dict) -> int:
    """scale.json and scale.md in out."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=1) + "\n")
    return write(out, results)


def section(r: dict) -> list[str]:
    """The scale table in the main benchmark's README (when the run measured it)."""
    if "scale" not in r:
        return []
    return ["#### Scale: N attached NICs (scale.md: targets, where the time goes)", "", *table(r["scale"]), ""]


def write(out: Path, results: dict) -> int:
    text = markdown(results)
    (out / "scale.md").write_text(text)
    print(text)
    print(f"wrote {out}/scale.md")
    return 0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _cmd(c: dict) -> str:
    return f"{c['s']:.2f} ({c['cpu_s']:.1f})"


def table(results: dict) -> list[str]:
    """One row per N: times in seconds (CPU seconds of netfw and its processes in brackets)."""
    first = results["first"]
    lines = ["| N | attach Nth ms (/ 1st) | CPU ms (/ 1st) | detach Nth ms (/ 1st) | CPU ms (/ 1st) | status s (CPU) | "
             "status VM s (CPU) | metrics s (CPU) | gc --dry-run s (CPU) | gc, half torn down s (CPU) | "
             "gc, stale records s (CPU) | largest RSS MiB | load before / after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| 1 | {first['attach_ms']} | {first['attach_cpu_ms']} | {first['detach_ms']} | {first['detach_cpu_ms']} "
             "| | | | | | | | |"]
    for r in results["rows"]:
        rss = max(r[k]["rss_mib"] for k in ("status", "status_vm", "metrics", "gc_dry", "gc_half", "gc_stale"))
        lines.append(
            f"| {r['n']:,} | {r['attach_ms']} ({_ratio(r['attach_ms'], first['attach_ms'])}) | {r['attach_cpu_ms']} "
            f"({_ratio(r['attach_cpu_ms'], first['attach_cpu_ms'])}) | {r['detach_ms']} "
            f"({_ratio(r['detach_ms'], first['detach_ms'])}) | {r['detach_cpu_ms']} "
            f"({_ratio(r['detach_cpu_ms'], first['detach_cpu_ms'])}) | {_cmd(r['status'])} | {_cmd(r['status_vm'])} | "
            f"{_cmd(r['metrics'])} | {_cmd(r['gc_dry'])} | {_cmd(r['gc_half'])} | {_cmd(r['gc_stale'])} | {rss} | "
            f"{r['load_before'][0]} / {r['load_after'][0]} |")
    return lines


def where(results: dict) -> list[str]:
    """Where the time goes: processes per NIC, wall time per process, netfw's own (Python) CPU per NIC."""
    lines = ["| N | call | processes | per NIC | ms per process (wall) | netfw's Python CPU s | per NIC ms |",
             "|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        for key, label in (("status_inproc", "status"), ("status_vm_inproc", "status VM"),
                           ("metrics_inproc", "metrics"), ("gc_dry_inproc", "gc --dry-run")):
            c, nics = r[key], (1 if key == "status_vm_inproc" else r["n"])
            per_proc = c["s"] / c["procs"] * 1000 if c["procs"] else 0
            lines.append(f"| {r['n']:,} | {label} | {c['procs']} | {c['procs'] / nics:.1f} | {per_proc:.1f} | "
                         f"{c['python_cpu_s']} | {c['python_cpu_s'] / nics * 1000:.1f} |")
        lines.append(f"| {r['n']:,} | attach, detach of the Nth | {r['attach_procs']}, {r['detach_procs']} | | | | |")
    return lines


def verdicts(results: dict) -> list[str]:
    import bench_scale
    t, first = bench_scale.TARGETS, results["first"]
    r = max(results["rows"], key=lambda row: row["n"])
    rss = max(r[k]["rss_mib"] for row in results["rows"] for k in ("status", "status_vm", "metrics", "gc_dry",
                                                                       "gc_half", "gc_stale") for r in [row])
    checks = [("status", r["status"]["s"], t["status_s"], "s"), ("metrics", r["metrics"]["s"], t["metrics_s"], "s"),
              ("status VM", r["status_vm"]["s"], t["status_vm_s"], "s"),
              ("attach Nth / 1st (wall)", r["attach_ms"] / first["attach_ms"], t["attach_ratio"], "x"),
              ("attach Nth / 1st (CPU)", r["attach_cpu_ms"] / first["attach_cpu_ms"], t["attach_ratio"], "x"),
              ("detach Nth / 1st (wall)", r["detach_ms"] / first["detach_ms"], t["detach_ratio"], "x"),
              ("detach Nth / 1st (CPU)", r["detach_cpu_ms"] / first["detach_cpu_ms"], t["detach_ratio"], "x"),
              ("gc, stale records", r["gc_stale"]["s"], t["gc_stale_s"], "s"),
              ("gc, half torn down", r["gc_half"]["s"], t["gc_half_s"], "s"), ("largest RSS", rss, t["rss_mib"], "MiB")]
    lines = [f"| at N = {r['n']:,} | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {name} | {value:.2f} {unit} | ≤ {goal} {unit} | {'met' if value <= goal else '**missed**'} |"
              for name, value, goal, unit in checks]
    left = {k: r[k]["left"] for k in ("gc_half", "gc_stale") if r[k]["left"]}
    lines.append("")
    lines.append("Left behind by gc: " + ("nothing (no namespace one-*, no link with netfw's alias, no record), at "
                                          "every N" if not any(row[k]["left"] for row in results["rows"]
                                                               for k in ("gc_half", "gc_stale"))
                                          else json.dumps(left)))
    return lines


def markdown(results: dict) -> str:
    m = results["machine"]
    head = (f"# Scale: the control plane with N attached NICs (issue 22)\n\n"
            f"`scripts/bench_scale.py` ({results.get('mode', 'full')} run, {results['rounds']} attach/detach rounds per N, "
            f"{results['duration_s']} s) on {m['cpu']} x{m['nproc']}, {m['kernel']}, netfw at {m['netfw_commit']}"
            f"{' (modified)' if m.get('netfw_dirty') else ''}, {m['date']}. One Linux bridge, a 20-rule security "
            "group per NIC, one NIC per VM. The machine is shared: the load average (1 min) before and after each N "
            "is in the table; CPU seconds (netfw and every process it started, from wait4) are less noisy than "
            "wall times.\n")
    return "\n".join([head, *table(results), "", "## Targets", "", *verdicts(results), "",
                      "## Where the time goes (the same calls in-process)", "", *where(results), "",
                      *ovs_section(results.get("ovs"))])


def ovs_section(ovs: dict | None) -> list[str]:
    """The same on an Open vSwitch VN bridge (a private ovs-vswitchd on the userspace datapath)."""
    if not ovs:
        return []
    head = ["## Open vSwitch (userspace datapath, the taps OVS ports)", ""]
    if "skipped" in ovs:
        return head + [f"Not measured in this run: {ovs['skipped']}", ""]
    return head + [*table(ovs), "", *verdicts(ovs), "", *where(ovs), ""]


if __name__ == "__main__":
    sys.exit(main())
