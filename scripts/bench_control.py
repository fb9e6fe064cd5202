"""Control plane: attach/detach wall time (Python API, CLI, hand-written shell floor), processes spawned, and rule
application (netfw vs one `iptables -A` per rule vs one restore in the hypervisor), per iptables backend."""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench_lab import (ROOT, VN_BRIDGE, Backend, in_ns, legacy_shim, many_rules, ms, restore, sh, spec)
from netfw import api, runner
from netfw.rules.render import render, restore_text
from netfw.steps import FamilyRuleset

NETFW_CLI = str(ROOT / ".venv" / "bin" / "netfw")


# -- process counting and the "what if" runner -----------------------------------------------------------------------
class Spawns:
    """Counts the processes netfw starts, by wrapping netfw.runner._execute (its one process choke point)."""

    def __init__(self):
        self.count = 0
        self._orig = runner._execute

    def __enter__(self):
        inner = runner._execute

        def counted(argv, stdin, timeout):
            self.count += 1
            return inner(argv, stdin, timeout)

        runner._execute = counted
        return self

    def __exit__(self, *exc):
        runner._execute = self._orig


def _subprocess_execute(argv, stdin, timeout):
    """What netfw.runner._execute would be on plain subprocess (fork+exec, no sh threads): same Result."""
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, errors="replace", timeout=timeout)
    return runner.Result(tuple(argv), p.returncode, p.stdout, p.stderr)


@contextmanager
def subprocess_runner():
    orig = runner._execute
    runner._execute = _subprocess_execute
    try:
        yield
    finally:
        runner._execute = orig


# -- the shell floor -------------------------------------------------------------------------------------------------
#: The fewest processes that make the same kernel objects as netfw's attach of one NIC: namespace (+ its sysctls),
#: firewall bridge, veth pair (peer created straight into the hypervisor namespace), both families' rules, the
#: ebtables ethertype chain every NIC has, cut-over.
FLOOR_ATTACH = r"""
set -e
NS=$1 TAP=$2 VN=$3 BR=$4 H=$5 F=$6 R4=$7 R6=$8 RE=$9
t0=$EPOCHREALTIME
ip netns add "$NS"
nsenter --net=/run/netns/"$NS" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
    net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 \
    net.bridge.bridge-nf-filter-vlan-tagged=1 net.bridge.bridge-nf-filter-pppoe-tagged=1
ip -n "$NS" -batch - <<EOF
link add $BR type bridge nf_call_iptables 1 nf_call_ip6tables 1
link set $BR up
link add $F type veth peer name $H netns $$
link set $F master $BR up
EOF
nsenter --net=/run/netns/"$NS" iptables-restore --noflush < "$R4"
nsenter --net=/run/netns/"$NS" ip6tables-restore --noflush < "$R6"
nsenter --net=/run/netns/"$NS" ebtables-restore --noflush < "$RE"
ip -batch - <<EOF
link set $H master $VN up
link set $TAP netns $NS
EOF
ip -n "$NS" link set "$TAP" master "$BR" up
t1=$EPOCHREALTIME
echo $(( (${t1/./} - ${t0/./}) ))
"""
FLOOR_ATTACH_PROCESSES = 8

#: Tap back onto the VN bridge, then the namespace goes with the bridge, the veth pair and the rules in it.
FLOOR_DETACH = r"""
set -e
NS=$1 TAP=$2 VN=$3
t0=$EPOCHREALTIME
ip -n "$NS" link set "$TAP" netns $$
ip link set "$TAP" master "$VN" up
ip netns del "$NS"
t1=$EPOCHREALTIME
echo $(( (${t1/./} - ${t0/./}) ))
"""
FLOOR_DETACH_PROCESSES = 3


def _restore_file(fam, path: Path) -> None:
    lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", *(f":{c} - [0:0]" for c in fam.chains)]
    for rules in fam.chains.values():
        lines += rules
    path.write_text("\n".join([*lines, *fam.jumps, "COMMIT", ""]))


class Floor:
    """The shell floor for one NIC spec, timed inside bash ($EPOCHREALTIME), so only the commands count."""

    def __init__(self, nic_spec, workdir: Path):
        from netfw.model import names
        self.s = nic_spec
        self.names = (names.netns(nic_spec.vm), nic_spec.tap, VN_BRIDGE, names.bridge(nic_spec.vm, 0),
                      names.veth_host(nic_spec.vm, 0), names.veth_fw(nic_spec.vm, 0))
        ruleset = render(nic_spec)
        self.r4, self.r6 = workdir / f"floor-{nic_spec.vm}.v4", workdir / f"floor-{nic_spec.vm}.v6"
        self.re = workdir / f"floor-{nic_spec.vm}.eb"
        _restore_file(ruleset.family("ip"), self.r4)
        _restore_file(ruleset.family("ip6"), self.r6)
        self.re.write_text(restore_text(ruleset.family("eb")))
        self.attach_sh, self.detach_sh = workdir / "floor-attach.sh", workdir / "floor-detach.sh"
        self.attach_sh.write_text(FLOOR_ATTACH)
        self.detach_sh.write_text(FLOOR_DETACH)

    def attach(self) -> float:
        out = sh("bash", str(self.attach_sh), *self.names, str(self.r4), str(self.r6), str(self.re)).stdout
        return int(out.split()[-1]) / 1e6

    def detach(self) -> float:
        out = sh("bash", str(self.detach_sh), *self.names[:3]).stdout
        return int(out.split()[-1]) / 1e6


# -- attach / detach timing -----------------------------------------------------------------------------------------
def timed_api(nic_spec, state_dir: str) -> tuple[float, int, float, int]:
    """(attach s, attach processes, detach s, detach processes) through the Python API."""
    with Spawns() as a:
        t = time.perf_counter()
        api.attach(nic_spec, state_dir=state_dir)
        ta = time.perf_counter() - t
    with Spawns() as d:
        t = time.perf_counter()
        api.detach(nic_spec.vm, nic_spec.nic, state_dir=state_dir)
        td = time.perf_counter() - t
    return ta, a.count, td, d.count


def timed_cli(vm: int, state_dir: str) -> tuple[float, float]:
    """(attach s, detach s) of `netfw attach/detach` as OpenNebula would run it: a new process each.

    Raises RuntimeError with the CLI's stderr when it fails (e.g. the CLI is mid-edit in a working tree).
    """
    t = time.perf_counter()
    sh(NETFW_CLI, "attach", str(vm), "0", "--bridge", VN_BRIDGE, "--state-dir", state_dir)
    ta = time.perf_counter() - t
    t = time.perf_counter()
    sh(NETFW_CLI, "detach", str(vm), "0", "--state-dir", state_dir)
    return ta, time.perf_counter() - t


def cli_startup() -> float:
    """Seconds for `netfw --version`: interpreter start and imports, the fixed cost of every CLI call."""
    t = time.perf_counter()
    sh(NETFW_CLI, "--version")
    return time.perf_counter() - t


def _med(xs: list[float]) -> float:
    return ms(statistics.median(xs))


def attach_costs(rules, rounds: int, state_dir: str, workdir: Path, vm_base: int = 900) -> dict:
    """Every attach/detach variant, `rounds` times each on a fresh tap; medians in ms."""
    from bench_lab import cheap_taps
    vms = {"api": vm_base, "api0": vm_base + 1, "cli": vm_base + 2, "floor": vm_base + 3, "floor0": vm_base + 4,
           "legacy": vm_base + 5, "subproc": vm_base + 6, "subproc_legacy": vm_base + 7}
    cheap_taps(list(vms.values()))
    res: dict[str, list] = {}

    def add(key, value):
        res.setdefault(key, []).append(value)

    for _ in range(rounds):
        for key, vm, nic_rules, backend, fast in (("api", vms["api"], rules, "nft", False),
                                                  ("api_sg0", vms["api0"], None, "nft", False),
                                                  ("api_legacy", vms["legacy"], rules, "legacy", False),
                                                  ("api_subprocess", vms["subproc"], rules, "nft", True),
                                                  ("api_subprocess_legacy", vms["subproc_legacy"], rules, "legacy", True)):
            with Backend(backend), (subprocess_runner() if fast else _null()):
                ta, pa, td, pd = timed_api(spec(vm, nic_rules), state_dir)
            add(f"{key}_attach", ta), add(f"{key}_detach", td), add(f"{key}_procs", (pa, pd))
        try:
            ta, td = timed_cli(vms["cli"], state_dir)
            add("cli_sg0_attach", ta), add("cli_sg0_detach", td), add("cli_startup", cli_startup())
        except RuntimeError as e:
            res["cli_error"] = [str(e).strip().splitlines()[-1][:200]]
            sh(NETFW_CLI, "detach", str(vms["cli"]), "0", "--state-dir", state_dir, check=False)
        for key, vm, nic_rules in (("floor", vms["floor"], rules), ("floor_sg0", vms["floor0"], None)):
            f = Floor(spec(vm, nic_rules), workdir)
            add(f"{key}_attach", f.attach()), add(f"{key}_detach", f.detach())
    out = {k: _med(v) for k, v in res.items() if not k.endswith(("_procs", "_error"))}
    if "cli_error" in res:
        out["cli_error"] = res["cli_error"][0]
    out.update({k: {"attach": v[0][0], "detach": v[0][1]} for k, v in res.items() if k.endswith("_procs")})
    out["floor_procs"] = {"attach": FLOOR_ATTACH_PROCESSES, "detach": FLOOR_DETACH_PROCESSES}
    out["rounds"] = rounds
    sh("ip", "-force", "-batch", "-", stdin="".join(f"link del one-{vm}-0\n" for vm in vms.values()), check=False)
    return out


@contextmanager
def _null():
    yield


# -- rule application -----------------------------------------------------------------------------------------------
def _fresh_ns(name: str) -> str:
    sh("ip", "netns", "del", name, check=False)
    sh("ip", "netns", "add", name)
    return name


def netfw_rules(n: int, backend: str) -> dict:
    """netfw's own step (iptables-save, then one iptables-restore) loading one NIC's n-rule chains into a fresh VM
    namespace; the error when the load fails (nft in a user namespace refuses batches above ~900 rules)."""
    ns = _fresh_ns("bench-rules")
    step = FamilyRuleset(ns, render(spec(1, many_rules(n))).family("ip"))
    try:
        with Backend(backend), Spawns() as p:
            t = time.perf_counter()
            step.apply()
            return {"ms": ms(time.perf_counter() - t), "processes": p.count}
    except runner.CommandError as e:
        return {"ms": None, "error": e.stderr.strip().splitlines()[0] if e.stderr.strip() else str(e)[:120]}
    finally:
        sh("ip", "netns", "del", ns, check=False)


def _chains_lines(n: int) -> tuple[list[str], list[str]]:
    fam = render(spec(1, many_rules(n))).family("ip")
    decl = [f":{c} - [0:0]" for c in fam.chains]
    body = [line for rules in fam.chains.values() for line in rules]
    return decl, body


def per_rule(n: int, backend: str, budget_s: float, sample: int) -> dict:
    """The legacy driver's way: one `iptables -A` process per rule in the hypervisor namespace.

    When n > sample, the first n - sample rules are preloaded with restore and `sample` calls are timed, then scaled
    to n (each call costs the same whatever the table holds, see `linear_check`).
    """
    flush = f"iptables-{backend}-restore"
    sh(flush, stdin="*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    decl, body = _chains_lines(n)
    restore(backend, decl)
    timed = body
    if len(body) > sample:
        restore(backend, body[: len(body) - sample])
        timed = body[len(body) - sample:]
    tool = f"iptables-{backend}"
    t, done = time.perf_counter(), 0
    for line in timed:
        sh(tool, *shlex.split(line))  # quoted arguments (rule comments) stay whole
        done += 1
        if time.perf_counter() - t > budget_s:
            break
    elapsed = time.perf_counter() - t
    sh(flush, stdin="*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    total = elapsed / done * len(body)
    return {"ms": ms(total), "processes": len(body), "timed_calls": done, "extrapolated": done < n,
            "per_call_ms": ms(elapsed / done)}


def one_restore(n: int, backend: str) -> dict:
    """All n rules in one restore in the hypervisor namespace (nft in a user namespace: chunked, batches counted)."""
    flush = f"iptables-{backend}-restore"
    sh(flush, stdin="*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    decl, body = _chains_lines(n)
    t = time.perf_counter()
    batches = restore(backend, decl + body)
    elapsed = time.perf_counter() - t
    sh(flush, stdin="*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
    return {"ms": ms(elapsed), "processes": batches}


def rule_application(counts: list[int], budget_s: float, sample: int) -> dict:
    """{backend: {n: {method: result}}}."""
    legacy_shim()
    out: dict = {}
    for backend in ("nft", "legacy"):
        for n in counts:
            out.setdefault(backend, {})[str(n)] = {
                "netfw": netfw_rules(n, backend),
                "per_rule": per_rule(n, backend, budget_s, sample),
                "one_restore": one_restore(n, backend),
            }
            print(f"  rules {backend:6} n={n:<6} " + "  ".join(
                f"{m}={r.get('ms')}ms" for m, r in out[backend][str(n)].items()), flush=True)
    return out


def conntrack_memory(flows: int) -> dict:
    """Kernel memory per 1,000 conntrack entries: UDP to `flows` ports between two lab namespaces."""
    from bench_lab import slabinfo, settle, meminfo
    a, b = _fresh_ns("bench-cta"), _fresh_ns("bench-ctb")
    sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
    for ns, addr in ((a, "10.78.0.1/24"), (b, "10.78.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh(*in_ns(b, "iptables-restore"), stdin="*filter\n-A INPUT -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n")
    settle()
    m0, s0 = meminfo(), slabinfo()
    code = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "for p in range(int(sys.argv[1])): s.sendto(b'x',('10.78.0.2',1024+p%60000))")
    import sys
    sh(*in_ns(a, sys.executable, "-c", code, str(flows)), timeout=60)
    count = int(sh(*in_ns(b, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")).stdout)
    settle()
    m1, s1 = meminfo(), slabinfo()
    for ns in (a, b):
        sh("ip", "netns", "del", ns, check=False)
    per = max(count, 1) / 1000
    slab = {k: round((s1.get(k, 0) - s0.get(k, 0)) / 1024 / per, 1) for k in s1 if s1.get(k, 0) - s0.get(k, 0) > 0}
    top = dict(sorted(slab.items(), key=lambda kv: -kv[1])[:4])
    return {"entries": count, "slab_kib_per_1000": top.get("nf_conntrack"), "slab_top_kib_per_1000": top,
            "slab_total_kib_per_1000": round(sum(slab.values()), 1),
            "meminfo_slab_kib_per_1000": round((m1["Slab"] - m0["Slab"]) / per, 1)}


def process_cost() -> dict:
    """Cost of starting one short process (`ip -V`) through sh (netfw.runner today) vs plain subprocess."""
    def bench(f, n=40):
        f()
        t = time.perf_counter()
        for _ in range(n):
            f()
        return ms((time.perf_counter() - t) / n)
    return {"sh_ms": bench(lambda: runner._execute(["ip", "-V"], None, None)),
            "subprocess_ms": bench(lambda: _subprocess_execute(["ip", "-V"], None, None))}


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="netfw-bench-"))


__all__ = ["attach_costs", "rule_application", "conntrack_memory", "process_cost", "workdir", "Spawns", "os"]
