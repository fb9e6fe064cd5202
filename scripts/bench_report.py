"""Markdown tables, target verdicts and PNG plots (matplotlib, optional: `pip install -e .[bench]`) from results."""

from __future__ import annotations

import statistics
from pathlib import Path

LAYOUTS = (("netfw", "netfw"), ("legacy_last", "legacy, pair last"), ("legacy_first", "legacy, pair first"),
           ("legacy_last_xt", "legacy, pair last, iptables-legacy"))


def _table(head: list[str], rows: list[list]) -> list[str]:
    fmt = lambda v: "–" if v is None else (f"{v:,.2f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v))  # noqa
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(fmt(v) for v in r) + " |"
                                                                      for r in rows]


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def attach_at(times: list[float], n: int) -> float | None:
    """Median of the attach times around the n-th attach (1-based; a window of 9 smooths scheduler noise)."""
    if len(times) < n:
        return None
    lo, hi = max(0, n - 5), min(len(times), n + 4)
    return round(statistics.median(times[lo:hi]), 1)


def dataplane_tables(r: dict) -> list[str]:
    dp = r["dataplane"]
    ks = sorted(dp, key=int)
    out = []
    for metric, label, get, better in (
            ("tcp", "TCP throughput, one stream (Gbit/s)", lambda m: m["tcp_gbps"], "higher"),
            ("udp", "64-byte UDP received (kpps)", lambda m: m["udp_kpps"], "higher"),
            ("conn", "TCP connect latency, median (µs)", lambda m: m["connect"]["median_us"], "lower")):
        head = ["K other VMs"] + [name for key, name in LAYOUTS if any(key in dp[k] for k in ks)]
        head += ["netfw/legacy (last)", "netfw/legacy (first)"] if better == "higher" else \
                ["legacy/netfw (last)", "legacy/netfw (first)"]
        rows = []
        for k in ks:
            vals = {key: get(dp[k][key]) for key, _ in LAYOUTS if key in dp[k]}
            row = [int(k)] + [vals.get(key) for key, _ in LAYOUTS if any(key in dp[x] for x in ks)]
            if better == "higher":
                row += [_ratio(vals.get("netfw"), vals.get("legacy_last")), _ratio(vals.get("netfw"), vals.get("legacy_first"))]
            else:
                row += [_ratio(vals.get("legacy_last"), vals.get("netfw")), _ratio(vals.get("legacy_first"), vals.get("netfw"))]
            rows.append(row)
        out += [f"**{label}** ({better} is better)", "", *_table(head, rows), ""]
    p99 = [[int(k)] + [dp[k][key]["connect"]["p99_us"] if key in dp[k] else None for key, _ in LAYOUTS] for k in ks]
    out += ["**TCP connect latency, p99 (µs)**", "", *_table(["K"] + [n for _, n in LAYOUTS], p99), ""]
    extra = r.get("dataplane_netfw_legacy_backend", {})
    if extra:
        rows = [[int(k), dp[k]["netfw"]["tcp_gbps"], v["tcp_gbps"], dp[k]["netfw"]["udp_kpps"], v["udp_kpps"],
                 dp[k]["netfw"]["connect"]["median_us"], v["connect"]["median_us"]] for k, v in sorted(extra.items(), key=lambda kv: int(kv[0]))]
        out += ["**netfw with iptables-nft vs iptables-legacy in the VM namespaces**", "",
                *_table(["K", "TCP nft", "TCP legacy", "kpps nft", "kpps legacy", "connect µs nft", "connect µs legacy"], rows), ""]
    nets = r.get("dataplane_8021q", {})
    if nets:
        rows = [[int(k), dp[k]["netfw"]["udp_kpps"], v["documented"]["udp_kpps"],
                 _ratio(v["documented"]["udp_kpps"], dp[k]["netfw"]["udp_kpps"]), v["kept"]["udp_kpps"],
                 dp[k]["netfw"]["tcp_gbps"], v["documented"]["tcp_gbps"], v["kept"]["tcp_gbps"]]
                for k, v in sorted(nets.items(), key=lambda kv: int(kv[0]))]
        out += ["**netfw on an 802.1Q/vxlan network, installed as docs/opennebula.md way A** (the driver builds every "
                "NIC's legacy chains, netfw's post removes them; the global chain `opennebula` stays), against netfw "
                "alone (hypervisor table empty) and against the legacy chains kept (before issue 20)", "",
                *_table(["K", "kpps netfw alone", "kpps 802.1Q documented", "documented / alone", "kpps legacy kept",
                         "TCP alone", "TCP documented", "TCP legacy kept"], rows), ""]
    loads = [[int(k), v["rules"], v["nft_ms"], v["nft_batches"], v.get("xt_ms")] for k, v in sorted(r["legacy_load"].items(), key=lambda kv: int(kv[0]))]
    out += ["**Legacy layout: the hypervisor's table** (loaded once per K with iptables-nft-restore in ≤200-line batches, "
            "the user-namespace limit; and with one iptables-legacy-restore)", "",
            *_table(["K", "rules in the table", "load nft (ms)", "nft batches", "load legacy (ms)"], loads), ""]
    return out


CONTROL_ROWS = (
    ("floor", "shell floor, 20 rules", "floor"),
    ("api", "netfw API, 20 rules (sh runner, nft)", "api"),
    ("api_legacy", "netfw API, 20 rules, iptables-legacy", "api_legacy"),
    ("api_subprocess", "netfw API, 20 rules, subprocess runner (what-if)", "api_subprocess"),
    ("api_subprocess_legacy", "netfw API, 20 rules, subprocess runner + iptables-legacy (what-if)", "api_subprocess_legacy"),
    ("floor_sg0", "shell floor, SG 0", "floor"),
    ("api_sg0", "netfw API, SG 0", "api_sg0"),
    ("cli_sg0", "netfw CLI, SG 0 (new process)", None),
)


def control_tables(r: dict) -> list[str]:
    out = []
    for k, c in sorted(r["control"].items(), key=lambda kv: int(kv[0])):
        rows = []
        for key, label, procs in CONTROL_ROWS:
            p = c.get(f"{procs}_procs") if procs else None
            rows.append([label, c.get(f"{key}_attach"), c.get(f"{key}_detach"),
                         p["attach"] if p else "–", p["detach"] if p else "–",
                         _ratio(c.get(f"{key}_attach"), c.get("floor_sg0_attach" if "sg0" in key else "floor_attach"))])
        out += [f"**Attach / detach of one NIC with K = {k} other VMs attached** (median of {c['rounds']}, ms)", "",
                *_table(["variant", "attach ms", "detach ms", "attach procs", "detach procs", "attach / floor"], rows)]
        if "cli_startup" in c:
            out.append(f"\nCLI fixed cost (`netfw --version`: interpreter and imports): {c['cli_startup']} ms.")
        if "cli_error" in c:
            out.append(f"\nThe CLI failed in this run: `{c['cli_error']}`.")
        out.append("")
    times = r["attach_series"]
    marks = [n for n in (1, 10, 100, 500, 1000) if n <= len(times)]
    if times:
        out += ["**Attach on a loaded host** (netfw API, 20 rules, the background VMs in order; median of the 9 "
                "attaches around the n-th, ms)", "",
                *_table(["n-th attach"] + [str(n) for n in marks] + ["n-th / 1st"],
                        [["ms"] + [attach_at(times, n) for n in marks] + [_ratio(attach_at(times, marks[-1]), attach_at(times, 1))]]), ""]
    pc = r.get("process_cost")
    if pc:
        out += [f"One short process (`ip -V`): {pc['sh_ms']} ms through `sh` (netfw.runner today), "
                f"{pc['subprocess_ms']} ms through `subprocess.run`.", ""]
    return out


def hop_tables(r: dict) -> list[str]:
    """scripts/bench_hop.py's breakdown (older results have none)."""
    if "hop" not in r:
        return []
    from bench_hop import table
    return [table(r["hop"], r.get("hop_runs", 3)), ""]


def startup_tables(r: dict) -> list[str]:
    """scripts/bench_startup.py's tables (older results have none)."""
    if "startup" not in r:
        return []
    from bench_startup import table
    return [table(r["startup"]), ""]


def ovs_tables(r: dict) -> list[str]:
    """scripts/bench_ovs.py's section: measured, skipped with its reason, or failed (older results have none)."""
    if "ovs" not in r:
        return []
    from bench_ovs import table
    return [table(r["ovs"])]


def rules_tables(r: dict) -> list[str]:
    out = []
    for backend, by_n in r["rules"].items():
        rows = []
        for n, m in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            nf = m["netfw"]
            netfw = nf["ms"] if nf.get("ms") is not None else f"fails: {nf.get('error', '')[:40]}"
            pr = m["per_rule"]
            per = f"{pr['ms']:,.0f}" + (f" (extrapolated from {pr['timed_calls']} calls)" if pr["extrapolated"] else "")
            rows.append([int(n), netfw, per, m["one_restore"]["ms"], m["one_restore"]["processes"],
                         _ratio(pr["ms"], nf.get("ms")), _ratio(pr["ms"], m["one_restore"]["ms"])])
        out += [f"**Applying n rules, iptables-{backend}** (ms)", "",
                *_table(["n rules", "netfw (VM namespace: save + 1 restore)", "one `iptables -A` per rule (hypervisor)",
                         "one restore (hypervisor)", "restore batches", "per-rule / netfw", "per-rule / restore"], rows), ""]
    return out


def memory_tables(r: dict) -> list[str]:
    m = r["memory"]
    out = ["**Kernel memory** (KiB; machine-wide /proc/meminfo and /proc/slabinfo deltas, so other activity on the "
           "machine adds noise)", ""]
    rows = []
    for key, label in (("netfw_per_vm", "netfw, per attached VM (namespace, bridge, veth, rules)"),
                       ("legacy_per_nic", "legacy, per NIC (chains in the hypervisor table, iptables-nft)")):
        if key in m:
            d = m[key]
            rows.append([label, d["slab_total_kib"], d["meminfo_kib"]["Slab"], d["meminfo_kib"]["Percpu"],
                         d["meminfo_kib"]["MemAvailable"], ", ".join(f"{k} {v}" for k, v in list(d["slab_top_kib"].items())[:4])])
    out += _table(["what", "slab (slabinfo)", "Slab (meminfo)", "Percpu", "MemAvailable drop", "largest slab caches"], rows)
    ct = m.get("conntrack")
    if ct:
        out += ["", f"Conntrack: {ct['entries']:,} entries in one namespace took {ct['slab_kib_per_1000']} KiB per "
                f"1,000 in the `nf_conntrack` slab ({ct['slab_total_kib_per_1000']} KiB per 1,000 over all slab caches, "
                f"{ct['meminfo_slab_kib_per_1000']} KiB per 1,000 by meminfo Slab)."]
    return out + [""]


def targets(r: dict) -> list[dict]:
    """Every target of the issue, with the measured ratio and whether it is met."""
    dp, ctl = r["dataplane"], r["control"]
    ks = sorted(dp, key=int)
    kmax, k0 = ks[-1], ks[0]
    out = []

    def add(name, value, goal, ok, detail):
        out.append({"target": name, "value": value, "goal": goal, "met": ok, "detail": detail})

    for key, pos in (("legacy_last", "last"), ("legacy_first", "first")):
        tcp = _ratio(dp[kmax]["netfw"]["tcp_gbps"], dp[kmax][key]["tcp_gbps"])
        udp = _ratio(dp[kmax]["netfw"]["udp_kpps"], dp[kmax][key]["udp_kpps"])
        add(f"TCP throughput at K={kmax}, netfw/legacy (pair {pos})", tcp, "≥ 5", bool(tcp and tcp >= 5),
            f"{dp[kmax]['netfw']['tcp_gbps']} vs {dp[kmax][key]['tcp_gbps']} Gbit/s")
        add(f"small packets at K={kmax}, netfw/legacy (pair {pos})", udp, "≥ 20", bool(udp and udp >= 20),
            f"{dp[kmax]['netfw']['udp_kpps']} vs {dp[kmax][key]['udp_kpps']} kpps")
    for key, pos in (("legacy_last", "last"), ("legacy_first", "first")):
        for metric, label in (("tcp_gbps", "TCP"), ("udp_kpps", "small packets")):
            v = _ratio(dp[k0]["netfw"][metric], dp[k0][key][metric])
            add(f"{label} at K={k0}, netfw/legacy (pair {pos})", v, "≥ 0.8", bool(v and v >= 0.8),
                f"{dp[k0]['netfw'][metric]} vs {dp[k0][key][metric]}")
    hop = r.get("hop", {})
    for key, what in (("netfw", "netfw as attached"), ("netfw_hoff", "hypervisor bridge-nf-call-iptables 0")):
        if key in hop and hop[key].get("cost_vs_legacy"):
            row, leg = hop[key], hop["legacy"]
            add(f"small packets at K=0, legacy/netfw CPU per packet ({what})", row["cost_vs_legacy"], "≥ 0.8",
                row["cost_vs_legacy"] >= 0.8, f"{row['cpu_us_median']} vs {leg['cpu_us_median']} µs; "
                f"{row['kpps_median']} vs {leg['kpps_median']} kpps")
    st = r.get("startup")
    if st:
        over = round(st["cli attach"] - st["floor attach"], 1)
        add("CLI attach − shell floor (SG 0, start-up table)", over, "≤ 120 ms", over <= 120,
            f"{st['cli attach']} vs {st['floor attach']} ms")
        for cmd in ("netfw --version", "netfw --help"):
            add(f"`{cmd}`", st[cmd], "< 80 ms", st[cmd] < 80, f"{st[cmd]} ms (`python -c pass`: {st['python -c pass']} ms)")
    for k in (k0, kmax):
        c = ctl.get(k)
        if not c:
            continue
        v = _ratio(c["api_attach"], c["floor_attach"])
        add(f"attach in-process / shell floor (20 rules, K={k})", v, "≤ 1.3", bool(v and v <= 1.3),
            f"{c['api_attach']} vs {c['floor_attach']} ms")
        v = _ratio(c["api_sg0_attach"], c["floor_sg0_attach"])
        add(f"attach in-process / shell floor (SG 0, K={k})", v, "≤ 1.3", bool(v and v <= 1.3),
            f"{c['api_sg0_attach']} vs {c['floor_sg0_attach']} ms")
        if "cli_sg0_attach" not in c:
            add(f"CLI attach − shell floor (SG 0, K={k})", None, "≤ 120 ms", False, f"CLI failed: {c.get('cli_error')}")
            continue
        over = round(c["cli_sg0_attach"] - c["floor_sg0_attach"], 1)
        add(f"CLI attach − shell floor (SG 0, K={k})", over, "≤ 120 ms", over <= 120,
            f"{c['cli_sg0_attach']} vs {c['floor_sg0_attach']} ms")
    obs = r.get("observability")
    if obs:
        v = obs["ratio"].get("udp_kpps")
        add(f"small packets at K={k0} with counting and logging / without", v, "≥ 0.95", bool(v and v >= 0.95),
            f"{obs['with']['udp_kpps']['median']} vs {obs['without']['udp_kpps']['median']} kpps")
        v = obs["ratio"].get("est_kpps_cpu")
        add(f"small packets per CPU s at K={k0} with counting and logging / without", v, "≥ 0.95",
            bool(v and v >= 0.95),
            f"{obs['with']['est_kpps_cpu']['median']} vs {obs['without']['est_kpps_cpu']['median']} kpps per CPU s")
    times = r["attach_series"]
    if times:
        n = min(1000, len(times))
        v = _ratio(attach_at(times, n), attach_at(times, 1))
        add(f"{n}th attach / 1st", v, "≤ 1.2", bool(v and v <= 1.2), f"{attach_at(times, n)} vs {attach_at(times, 1)} ms")
    for backend, by_n in r["rules"].items():
        n = "1000" if "1000" in by_n else max(by_n, key=int)
        m = by_n[n]
        v = _ratio(m["per_rule"]["ms"], m["netfw"].get("ms"))
        detail = (f"{m['netfw']['ms']} vs {m['per_rule']['ms']} ms" if m["netfw"].get("ms") is not None
                  else f"netfw failed: {m['netfw'].get('error', '')[:60]}")
        add(f"{n} rules, per-rule calls / netfw (iptables-{backend})", v, "≥ 50", bool(v and v >= 50), detail)
    return out


def target_table(r: dict) -> list[str]:
    rows = [[t["target"], t["value"], t["goal"], "met" if t["met"] else "**missed**", t["detail"]] for t in targets(r)]
    return _table(["target", "measured", "goal", "", "numbers"], rows) + [""]


def observe_table(r: dict) -> list[str]:
    from bench_observe import table
    return table(r)


def markdown(r: dict) -> str:
    import bench_scale_report
    mch = r["machine"]
    lines = [f"Machine: {mch['cpu']}, {mch['nproc']} CPUs, {mch['mem_gib']} GiB; {mch['distro']}, kernel "
             f"{mch['kernel']}; {mch['iptables']} / {mch['iptables_legacy']}; {mch['iproute2']}; {mch['iperf3']}; "
             f"Python {mch['python']}; netfw at {mch.get('netfw_commit')}{' + uncommitted changes' if mch.get('netfw_dirty') else ''}. Run {mch['date']}, mode `{r['mode']}`, {r['duration_s']} s in all "
             f"(building {r['background_vms']} background VMs took {r['build_s']} s).", "",
             "### Targets", "", *target_table(r),
             "### Data plane", "", *dataplane_tables(r), *hop_tables(r), *observe_table(r),
             "### Control plane", "", *startup_tables(r), *control_tables(r), *rules_tables(r),
             *ovs_tables(r), *bench_scale_report.section(r), "### Memory", "", *memory_tables(r)]
    return "\n".join(lines)


def plots(r: dict, out: Path) -> list[str]:
    """PNG plots; [] (and a note) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    dp = r["dataplane"]
    ks = sorted(dp, key=int)
    for name, label, get in (("tcp", "TCP throughput (Gbit/s)", lambda m: m["tcp_gbps"]),
                             ("udp", "64-byte UDP received (kpps)", lambda m: m["udp_kpps"]),
                             ("connect", "TCP connect latency, median (µs)", lambda m: m["connect"]["median_us"])):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, legend in LAYOUTS:
            pts = [(int(k), get(dp[k][key])) for k in ks if key in dp[k]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=legend)
        ax.set_xlabel("K other attached VMs (20-rule security group each)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"dataplane_{name}.png", dpi=100)
        plt.close(fig)
        made.append(f"dataplane_{name}.png")
    if r["attach_series"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(1, len(r["attach_series"]) + 1), r["attach_series"], ",", alpha=0.6)
        ax.set_xlabel("n-th attach on the host")
        ax.set_ylabel("attach wall time, netfw API (ms)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "attach_scale.png", dpi=100)
        plt.close(fig)
        made.append("attach_scale.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, by_n in r["rules"].items():
        ns = sorted(by_n, key=int)
        for method, style in (("netfw", "-"), ("per_rule", "--"), ("one_restore", ":")):
            pts = [(int(n), by_n[n][method]["ms"]) for n in ns if by_n[n][method].get("ms") is not None]
            if pts:
                ax.plot(*zip(*pts), style, marker="o", label=f"{method} ({backend})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rules")
    ax.set_ylabel("time to apply (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rules.png", dpi=100)
    plt.close(fig)
    made.append("rules.png")
    return made
