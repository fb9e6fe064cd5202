"""Benchmark lab: processes, the VN bridge, simulated VMs, the legacy OpenNebula ruleset, iptables backends, memory.

Everything here runs inside the unprivileged sandbox (scripts/sandbox): the sandbox's own namespace plays the
hypervisor, every namespace and address (10.77.0.0/16, 10.78.0.0/24) is private to it and vanishes with it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netfw.model.spec import NicSpec, Rule  # noqa: E402
from netfw.rules.chains import FamilyRules, chain_name  # noqa: E402
from netfw.rules.render import render  # noqa: E402


def in_sandbox() -> None:
    """Re-run the calling script inside scripts/sandbox unless already there: nothing outside it is touched."""
    if os.environ.get("NETFW_IN_SANDBOX") != "1":
        sandbox = str(ROOT / "scripts" / "sandbox")
        os.execv(sandbox, [sandbox, sys.executable, *sys.argv])


VN_BRIDGE = "bnvn0"
SUBNET = "10.77"
#: Chunk size for iptables-nft-restore inside a user namespace: larger batches fail with "Message too long"
#: (KERNEL.md: ~900 rules; 800 chain declarations already fail; since rules carry their `sg X rule n` comment, 400
#: rule lines fail too, 200 pass).
NFT_USERNS_CHUNK = 200

#: iptables-legacy tools under the names netfw calls; a PATH entry that switches netfw's backend without touching it.
SHIM_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"netfw-bench-legacy-{os.getpid()}"


def sh(*argv: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a lab command (netfw's own commands go through netfw.runner)."""
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


def ip_batch(lines: list[str], ns: str | None = None) -> None:
    """Many `ip` commands in one process (lab setup must be cheap: 1,000 simulated VMs)."""
    argv = ["ip", "-n", ns, "-batch", "-"] if ns else ["ip", "-batch", "-"]
    for i in range(0, len(lines), 2000):
        sh(*argv, stdin="".join(l + "\n" for l in lines[i:i + 2000]))


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _read(path: str, default: str) -> str:
    try:
        return open(path).read().strip()
    except OSError:
        return default


# -- the machine ---------------------------------------------------------------------------------------------------
def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of every CPU since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return values[3] + values[4], sum(values)  # idle + iowait


def quiet(busy: float = 0.25, limit: float = 30.0) -> float:
    """Wait until the machine's CPUs were less than `busy` busy over the last second (work the kernel does after a
    build, such as a namespace's cleanup or address configuration, runs on after the commands returned), `limit`
    seconds at most; the seconds waited."""
    t0 = time.monotonic()
    idle, total = _cpu_times()
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        idle2, total2 = _cpu_times()
        spent = total2 - total
        if spent > 0 and 1 - (idle2 - idle) / spent < busy:
            break
        idle, total = idle2, total2
    return round(time.monotonic() - t0, 1)


def machine() -> dict:
    """What the numbers came from."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    version = lambda *a: (sh(*a, check=False).stdout or "").splitlines()[0:1]  # noqa: E731
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "distro": next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release")
                        if l.startswith("PRETTY_NAME=")), "?"),
        "iptables": (version("iptables", "--version") or ["?"])[0],
        "iptables_legacy": (version("iptables-legacy", "--version") or ["?"])[0],
        "iproute2": (version("ip", "-V") or ["?"])[0],
        "iperf3": (version("iperf3", "--version") or ["?"])[0],
        "python": platform.python_version(),
        "netdev_max_backlog": _read("/proc/sys/net/core/netdev_max_backlog", "not visible here (kernel default 1000)"),
        "netfw_commit": sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD", check=False).stdout.strip(),
        "netfw_dirty": bool(sh("git", "-C", str(ROOT), "status", "--porcelain", "--", "netfw", check=False).stdout.strip()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


# -- security groups -----------------------------------------------------------------------------------------------
#: The ports the measured traffic uses (iperf3 TCP/UDP and the connect-latency listener).
IPERF_PORT, CONNECT_PORT = 5201, 5202


def security_group(n: int = 20) -> tuple[Rule, ...]:
    """A realistic n-rule security group; the rules the measured traffic matches come after n-4 that it does not."""
    filler = [Rule("TCP", "INBOUND", ports=str(1000 + i), ip=f"198.51.{100 + i // 250}.{i % 250}", size=1)
              for i in range(max(n - 4, 0))]
    return tuple(filler + [Rule("TCP", "INBOUND", ports="5201:5210"), Rule("UDP", "INBOUND", ports="5201:5210"),
                           Rule("ICMP", "INBOUND", icmp_type=8), Rule("ALL", "OUTBOUND")])[:max(n, 4)]


def many_rules(n: int) -> tuple[Rule, ...]:
    """n distinct inbound rules (one iptables line each), for the rule-application benchmark."""
    return tuple(Rule("TCP", "INBOUND", ports=str(1024 + i % 60000), ip=f"10.{100 + i // 62500}.{i // 250 % 250}.{i % 250}",
                      size=1) for i in range(n))


def spec(vm: int, rules: tuple[Rule, ...] | None, bridge: str = VN_BRIDGE) -> NicSpec:
    return NicSpec(vm, 0, bridge, rules=rules)


# -- the lab -------------------------------------------------------------------------------------------------------
def vn_bridge() -> None:
    ip_batch([f"link add {VN_BRIDGE} type bridge", f"link set {VN_BRIDGE} up"])


def guest(vm: int, host_octet: int) -> tuple[str, str]:
    """A simulated VM with a real guest namespace g<vm> (eth0 at 10.77.x.y); its tap one-<vm>-0 is on the VN bridge."""
    ns, tap, addr = f"g{vm}", f"one-{vm}-0", f"{SUBNET}.{host_octet // 250}.{host_octet % 250 + 1}"
    sh("ip", "netns", "add", ns)
    ip_batch([f"link add {tap} type veth peer name eth0 netns {ns}", f"link set {tap} master {VN_BRIDGE} up"])
    ip_batch(["link set lo up", f"addr add {addr}/16 dev eth0", "link set eth0 up"], ns)
    return ns, addr


#: Where the other side of a cheap tap lives: a real tap's other side is a file descriptor QEMU holds, not a link of
#: the hypervisor's namespace, where 1,000 of them would add 3,000 IPv6 routes to the table the kernel walks whole
#: whenever a link of that namespace goes down (fib6_ifdown): a cost of the benchmark's own, not of a real host.
GUEST_SIDES = "bench-qemu"


def guest_sides() -> str:
    """The namespace of the cheap taps' other sides (made at its first use; reset() deletes it), without IPv6: a
    QEMU's side has no kernel state at all, while a link with IPv6 whose carrier drops (its tap moved, or down) makes
    the kernel walk the namespace's whole IPv6 table."""
    if not os.path.ismount(f"/run/netns/{GUEST_SIDES}"):
        sh("ip", "netns", "add", GUEST_SIDES)
        sh(*in_ns(GUEST_SIDES, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                  "net.ipv6.conf.default.disable_ipv6=1"))
    return GUEST_SIDES


def cheap_taps(vms: list[int], bridge: str | None = VN_BRIDGE) -> None:
    """Background VMs without a guest: the 'tap' is a veth whose peer p<VM> (up, unbridged) stands for QEMU's side,
    out of the hypervisor's namespace (GUEST_SIDES); the tap on the Linux bridge `bridge` (None: on none, for an
    Open vSwitch port)."""
    ns = guest_sides()
    master = f"master {bridge} " if bridge else ""
    lines = []
    for vm in vms:
        lines += [f"link add one-{vm}-0 type veth peer name p{vm} netns {ns}", f"link set one-{vm}-0 {master}up"]
    ip_batch(lines)
    ip_batch([f"link set p{vm} up" for vm in vms], ns)


def static_neighbours(guests: dict[int, tuple[str, str]]) -> None:
    """Permanent ARP entries between the measured guests.

    A broadcast on a VN bridge with more than ~1,000 veth ports is partly dropped: flooding enqueues one packet per
    port on the per-CPU backlog (net.core.netdev_max_backlog, 1,000 by default; not writable in a user namespace),
    so ARP between the measured VMs fails at K = 1,000 without these entries.
    """
    macs = {vm: json.loads(sh("ip", "-n", ns, "-j", "link", "show", "eth0").stdout)[0]["address"]
            for vm, (ns, _) in guests.items()}
    for vm, (ns, _) in guests.items():
        ip_batch([f"neigh replace {addr} lladdr {macs[other]} dev eth0 nud permanent"
                  for other, (_, addr) in guests.items() if other != vm], ns)


def wait_arp(src_ns: str, dst_addr: str) -> None:
    """One ping so ARP and FDB entries exist before a timed run."""
    sh(*in_ns(src_ns, "ping", "-c", "1", "-W", "1", dst_addr), check=False)


def reset() -> None:
    """Remove every namespace and link the benchmark made, and the hypervisor's rules (both backends)."""
    for ns in os.listdir("/run/netns"):
        sh("ip", "netns", "del", ns, check=False)
    links = [l["ifname"] for l in json.loads(sh("ip", "-j", "link", "show").stdout) if l["ifname"] != "lo"]
    if links:  # deleting a veth end deletes its peer: -force goes on past "Cannot find device"
        sh("ip", "-force", "-batch", "-", stdin="".join(f"link del {n}\n" for n in links), check=False)
    flush_host()


def flush_host() -> None:
    for tool in ("iptables-nft-restore", "iptables-legacy-restore", "ip6tables-nft-restore", "ip6tables-legacy-restore"):
        sh(tool, stdin="*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n", check=False)


# -- iptables backends ---------------------------------------------------------------------------------------------
def legacy_shim() -> Path:
    """A directory whose iptables*, ip6tables* are the legacy tools (xtables-legacy-multi dispatches on argv[0])."""
    SHIM_DIR.mkdir(parents=True, exist_ok=True)
    for tool in ("iptables", "ip6tables"):
        for suffix in ("", "-save", "-restore"):
            link = SHIM_DIR / f"{tool}{suffix}"
            if not link.exists():
                link.symlink_to(shutil.which(f"{tool}-legacy{suffix}"))
    return SHIM_DIR


class Backend:
    """Run netfw with iptables-nft (the system default) or iptables-legacy, by PATH, without changing netfw."""

    def __init__(self, name: str):
        self.name, self._path = name, None

    def __enter__(self):
        from netfw import runner
        if self.name == "legacy":
            self._path = os.environ["PATH"]
            os.environ["PATH"] = f"{legacy_shim()}:{self._path}"
        runner._commands.clear()  # netfw caches resolved commands by name
        return self

    def __exit__(self, *exc):
        from netfw import runner
        if self._path is not None:
            os.environ["PATH"] = self._path
        runner._commands.clear()


def restore(backend: str, text_lines: list[str], ns: str | None = None, noflush: bool = True) -> int:
    """Load `*filter` lines with iptables-<backend>-restore; nft in a user namespace is chunked. Returns batches."""
    tool = [f"iptables-{backend}-restore", *(["--noflush"] if noflush else [])]
    argv = in_ns(ns, *tool) if ns else tool
    decl = [l for l in text_lines if l.startswith(":")]
    body = [l for l in text_lines if not l.startswith(":")]
    size = NFT_USERNS_CHUNK if backend == "nft" else 10 ** 9
    batches = [decl[i:i + size] for i in range(0, len(decl), size)] + [body[i:i + size] for i in range(0, len(body), size)]
    for batch in batches:
        sh(*argv, stdin="*filter\n" + "\n".join(batch) + "\nCOMMIT\n", timeout=300)
    return len(batches)


_COMMENT = re.compile(r' -m comment --comment "[^"]*"')


def plain(spec: NicSpec, rules: FamilyRules) -> FamilyRules:
    """The NIC's chains without what issue 11 added: no NFLOG rules, no comments, ACCEPT instead of the cap chain,
    DROP instead of the anti-spoofing chain (left declared, unreferenced: they then cost nothing). Pure."""
    cap, spoofing = chain_name(spec, "c"), chain_name(spec, "d")
    chains = {}
    for chain, lines in rules.chains.items():
        kept = [line for line in lines if " -j NFLOG " not in line and not line.endswith(" -j CONTINUE")]
        kept = [_COMMENT.sub("", line).replace(f" -j {cap}", " -j ACCEPT").replace(f" -j {spoofing}", " -j DROP")
                for line in kept]
        chains[chain] = tuple(kept)
    return replace(rules, chains=chains)


# -- the legacy OpenNebula layout ----------------------------------------------------------------------------------
def legacy_nic_chains(vm: int, rules: tuple[Rule, ...]) -> tuple[list[str], list[str], list[str]]:
    """(chain declarations, the two `opennebula` jumps, the chains' rules) as OpenNebula's fw driver makes them:
    the same rules as netfw renders, with RETURN for allowed (the packet goes on through `opennebula`), the state
    match first and DROP last (security_groups_iptables.rb)."""
    nic = spec(vm, rules)
    fam = plain(nic, render(nic).family("ip"))
    unused = {chain_name(nic, "c"), chain_name(nic, "p"), chain_name(nic, "d")}
    decl, body = [], []
    for chain, lines in fam.chains.items():
        if chain in unused:  # the cap and anti-spoofing chains, which plain() left unreferenced
            continue
        decl.append(f":{chain} - [0:0]")
        for line in lines:
            if "--ctstate INVALID" in line:
                continue  # the legacy driver has no INVALID drop
            line = line.replace("-m conntrack --ctstate RELATED,ESTABLISHED", "-m state --state RELATED,ESTABLISHED")
            body.append(line.replace(" -j ACCEPT", " -j RETURN"))
    jumps = [j.replace("-A FORWARD ", "-A opennebula ") for j in fam.jumps]
    # `-I opennebula` per jump: the -o jump (inserted second) ends up above the -i jump.
    return decl, list(reversed(jumps)), body


def legacy_table(pair: list[int], background: list[int], rules: tuple[Rule, ...], pair_first: bool) -> list[str]:
    """The hypervisor's whole filter table under the legacy driver, newest NIC first in `opennebula` (its -I order).

    pair_first: the measured pair was attached last (its jumps at the top); else first (at the bottom).
    """
    order = (background + pair) if pair_first else (pair + background)  # attach order, oldest first
    decl, jumps, body = [":opennebula - [0:0]"], [], []
    for vm in order:
        d, j, b = legacy_nic_chains(vm, rules)
        decl += d
        jumps = j + jumps
        body += b
    return [*decl, "-A FORWARD -m physdev --physdev-is-bridged -j opennebula", *jumps, "-A opennebula -j ACCEPT",
            *body]


def legacy_removed(vms: list[int], real: list[int]) -> None:
    """What netfw's post hook does on an `802.1Q` or `vxlan` network installed as docs/opennebula.md way A says, once
    the driver's post built the legacy chains (issue 20): `netfw.opennebula.legacy.remove` for the VMs in `real` (the code that
    runs, under a lock file of the benchmark's own), and for the others the very plan `netfw.opennebula.legacy.plan_family`
    makes, from one save, in one chunked restore: the end state of one remove per VM, without 1,000 saves of a
    20,000-rule table."""
    import tempfile

    from netfw.opennebula import legacy
    from netfw.rules import tables
    rest = [vm for vm in vms if vm not in real]
    if rest:
        table, found = tables.parse_save(sh("iptables-nft-save", "-t", "filter").stdout), legacy.Plan()
        body: list[str] = []
        for vm in rest:
            legacy.plan_family(table, vm, [0], found, "ip")
            body += found.restore["ip"]
        restore("nft", body)
    with tempfile.TemporaryDirectory(prefix="netfw-bench-sg-") as tmp:
        os.environ[legacy.LOCK_ENV] = f"{tmp}/onevnm-vnmmad::sgdriver-lock"
        try:
            for vm in real:
                legacy.remove(vm, [0])
        finally:
            del os.environ[legacy.LOCK_ENV]


# -- memory --------------------------------------------------------------------------------------------------------
MEMINFO_KEYS = ("MemAvailable", "Slab", "SUnreclaim", "Percpu", "KernelStack", "PageTables", "VmallocUsed")


def meminfo() -> dict[str, int]:
    """Selected /proc/meminfo fields in KiB (machine-wide: other processes add noise)."""
    out = {}
    for line in open("/proc/meminfo"):
        key, value = line.split(":", 1)
        if key in MEMINFO_KEYS:
            out[key] = int(value.split()[0])
    return out


def slabinfo() -> dict[str, int]:
    """Bytes held per slab cache (active objects x object size); {} when /proc/slabinfo is unreadable."""
    try:
        lines = open("/proc/slabinfo").read().splitlines()[2:]
    except OSError:
        return {}
    out = {}
    for line in lines:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3])
    return out


def settle() -> None:
    """Let deferred kernel work (RCU frees, netns cleanup) run before a memory snapshot."""
    time.sleep(1.0)


def memory_delta(before: tuple[dict, dict], after: tuple[dict, dict], per: int) -> dict:
    """Per-object deltas (KiB) of meminfo and the top slab caches between two snapshots."""
    (m0, s0), (m1, s1) = before, after
    mem = {k: round((m1[k] - m0[k]) / per, 2) for k in m0}
    mem["MemAvailable"] = -mem["MemAvailable"]  # report memory used, not memory left
    slabs = {k: (s1.get(k, 0) - s0.get(k, 0)) / 1024 / per for k in set(s0) | set(s1)}
    top = dict(sorted(((k, round(v, 2)) for k, v in slabs.items() if v > 0), key=lambda kv: -kv[1])[:6])
    return {"meminfo_kib": mem, "slab_total_kib": round(sum(slabs.values()), 2), "slab_top_kib": top}


def snapshot() -> tuple[dict, dict]:
    settle()
    return meminfo(), slabinfo()
