"""scripts/bench_scale.py's table (scale.md), its verdicts against issue 22's targets and where the time goes: pure
but for writing the files. Imports no other benchmark."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: What issue 22 asks (seconds, ratios, MiB), for the verdicts under the table.
TARGETS = {"status_s": 10.0, "metrics_s": 10.0, "status_vm_s": 0.3, "attach_ratio": 1.2, "detach_ratio": 1.2,
           "gc_stale_s": 30.0, "gc_half_s": 60.0, "rss_mib": 100.0}


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
            lines.append(f"| {r['n']:,} | {label} | {c['procs']} | {c['procs'] / nics:.2f} | {per_proc:.1f} | "
                         f"{c['python_cpu_s']} | {c['python_cpu_s'] / nics * 1000:.1f} |")
        lines.append(f"| {r['n']:,} | attach, detach of the Nth | {r['attach_procs']}, {r['detach_procs']} | | | | |")
    return lines


def verdicts(results: dict) -> list[str]:
    t, first = TARGETS, results["first"]
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
            "wall times. The 1st NIC's rounds, and at each N the rounds and then the commands, start once the CPUs "
            "were less than 25% busy over a second (the kernel's own work after a build goes on after its "
            f"commands returned; waited at each N: {', '.join(str(r.get('quiet_s', '?')) for r in results['rows'])} "
            "s).\n")
    return "\n".join([head, *table(results), "", "## Targets", "", *verdicts(results), "",
                      "## Where the time goes (the same calls in-process)", "",
                      "A process is one that netfw starts (through `sh`). status, metrics and gc read the VM namespaces "
                      "in bulk (netfw/kernel/bulk.py): one `sh` loop per 20 namespaces, which runs each namespace's "
                      "reads (about 8 programs, sysctls by one `cat`) inside one `nsenter`; those programs are not "
                      "counted here, their CPU time is in the table's CPU seconds.", "", *where(results), "",
                      *ovs_section(results.get("ovs"))])


def ovs_section(ovs: dict | None) -> list[str]:
    """The same on an Open vSwitch VN bridge (a private ovs-vswitchd on the userspace datapath)."""
    if not ovs:
        return []
    head = ["## Open vSwitch (userspace datapath, the taps OVS ports)", ""]
    if "skipped" in ovs:
        return head + [f"Not measured in this run: {ovs['skipped']}", ""]
    return head + [*table(ovs), "", *verdicts(ovs), "", *where(ovs), ""]

