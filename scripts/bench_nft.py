"""nftables rungs of scripts/bench_hop.py (issue 22 item 6): netfw's two-namespace layout without br_netfilter in the
VM namespaces, filtered by nftables with the same security group as the other rungs.

This kernel has CONFIG_NF_TABLES_BRIDGE=y but no CONFIG_NF_CONNTRACK_BRIDGE: a `ct state` rule in a bridge-family
chain (or a netdev-family one) is refused when it is loaded ("Could not process rule: Protocol error", the whole
`nft -f` transaction with it), so nftables' bridge family with its own conntrack cannot be measured here: the rung
`nft_bridge_ct` tries it and is reported as not measured with nft's refusal. What is measured:
- `nft_bridge`: netfw's path (veth pair and firewall bridge per VM), br_netfilter off in the VM namespaces, the
  security group in an nftables bridge-family table, **stateless**: the group's rules, its `ct state invalid` rule
  left out and its `ct state related,established` rule replaced by one that lets the replies of the benchmark's
  iperf3 in by port (REPLY_STANDIN); a one-way UDP stream is never ESTABLISHED, so its datagrams walk the same rules
  as under conntrack, but without conntrack's lookup and entry. `nft_bridge_hoff`: the same with the hypervisor's
  bridge netfilter off too;
- `routed_hop` / `nft_routed` / `nft_routed_ct`: the VM namespace forwards at layer 3 between the tap and the veth
  pair (no firewall bridge, so no br_netfilter at all; static neighbour entries), without rules, with the same
  security group stateless (as `nft_bridge`), and with it **with conntrack** in an nftables inet-family table (`ct
  state` rules in the forward hook, as netfw's iptables rules);
- `hop_sg_ct`, the comparison: the same rules in iptables with conntrack over br_netfilter (sg_iptables).
The rules are netfw's own rendering of the group (`render`, without issue 11's observability, as the legacy rung
gets them: `bench_observe.plain`), translated to nft syntax here by iptables' own `iptables-restore-translate`;
only the FORWARD jumps (physdev matches, which have no nft form) are written by hand as `iifname`/`oifname`.

Every build proves itself before it is timed: br_netfilter is off in the VM namespaces (sysctl read there, bridge
flags), a datagram the rules drop does not arrive and one they allow does, and the allowed flow has a conntrack entry in
both VM namespaces (stateful rungs) or in neither (stateless ones).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from bench_lab import VN_BRIDGE, in_ns, ip_batch, sh, spec

TABLE = "netfw"
#: The ports bench_lab.security_group opens inbound (TCP and UDP), one of them, and a port it does not open.
GROUP_PORTS, ALLOWED_PORT, DROPPED_PORT = "5201-5210", 5209, 6009


# -- the rules ---------------------------------------------------------------------------------------------------------
def plain_chains(vm: int, rules) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """(FORWARD jumps, {chain: rules}) of the NIC's IPv4 iptables rules as netfw renders them, without issue 11's
    observability (NFLOG, cap chain), as the legacy rung gets them. Pure."""
    from bench_observe import plain
    from netfw.rules.render import chain_name, render

    nic = spec(vm, rules)
    fam = plain(nic, render(nic).family("ip"))
    unused = {chain_name(nic, "c"), chain_name(nic, "p"), chain_name(nic, "d")}  # unreferenced after plain()
    return fam.jumps, {c: lines for c, lines in fam.chains.items() if c not in unused}


def iptables_text(vm: int, rules, jumps: bool = True) -> str:
    """plain_chains as an iptables-restore script (filter table, FORWARD policy ACCEPT as the nft base chain's)."""
    fwd, chains = plain_chains(vm, rules)
    lines = [*(f":{c} - [0:0]" for c in chains), *(fwd if jumps else ()), *(l for ls in chains.values() for l in ls)]
    return "*filter\n:FORWARD ACCEPT [0:0]\n" + "".join(l + "\n" for l in lines) + "COMMIT\n"


def translated(vm: int, rules) -> list[str]:
    """The NIC's chains (plain_chains) in nft syntax: `add chain`/`add rule` lines of table `ip filter`, from
    iptables-restore-translate (the physdev jumps have no nft form: ruleset writes them)."""
    text = iptables_text(vm, rules, jumps=False)
    out = sh("iptables-restore-translate", "-f", "/dev/stdin", stdin=text).stdout.splitlines()
    return [l for l in out if l.startswith(("add chain ip filter one-", "add rule ip filter one-"))]


def ruleset(vm: int, rules, family: str, stateful: bool) -> str:
    """An `nft -f` script: table <family> netfw with the NIC's chains and a forward base chain jumping to them by the
    tap's name, IPv4 only (as netfw's iptables FORWARD). stateless: no `ct state` match (stateless())."""
    tap, fam = f"one-{vm}-0", f"{family} {TABLE}"
    body = translated(vm, rules)
    if not any(" ct state related,established " in l for l in body):
        raise RuntimeError("the translated rules hold no `ct state related,established` rule")
    if not stateful:
        body = [stateless(l) for l in body if " ct state invalid " not in l]
    proto = "meta protocol ip" if family == "bridge" else "meta nfproto ipv4"
    return "\n".join([
        f"add table {fam}", f"delete table {fam}", f"add table {fam}",
        f"add chain {fam} forward {{ type filter hook forward priority 0; policy accept; }}",
        *(l.replace("ip filter", fam, 1) for l in body if l.startswith("add chain")),
        f"add rule {fam} forward {proto} oifname {tap} jump {tap}-i",
        f"add rule {fam} forward {proto} iifname {tap} jump {tap}-o",
        *(l.replace("ip filter", fam, 1) for l in body if l.startswith("add rule")), ""])


#: What the stateless rung has in place of `ct state related,established accept`: the replies of the benchmark's own
#: iperf3 (its TCP control connection, its UDP connect reply) from the ports the group opens; without it iperf3 cannot
#: run at all. One rule where the state rule was: the measured datagrams pass over it as over that one.
REPLY_STANDIN = f"meta l4proto {{ tcp, udp }} th sport {GROUP_PORTS}"


def stateless(line: str) -> str:
    """A translated rule with its `ct state related,established` match replaced by REPLY_STANDIN (ruleset() leaves the
    `ct state invalid` rule out)."""
    return line.replace("ct state related,established", REPLY_STANDIN)


def load(ns: str, script: str) -> None:
    """One `nft -f` transaction in a namespace; a refusal raises with nft's first error line (and the rule it names)."""
    if not shutil.which("nft"):
        raise RuntimeError("nft is not installed (Debian package nftables)")
    res = sh(*in_ns(ns, "nft", "-f", "-"), stdin=script, check=False)
    if res.returncode:
        lines = res.stderr.splitlines()
        first = next((i for i, l in enumerate(lines) if "Error:" in l), 0)
        raise RuntimeError(f"{ns}: nft refused the ruleset: " + " / ".join(l.strip() for l in lines[first:first + 2]))


def unload(ns: str, family: str) -> None:
    """Table <family> netfw gone from a namespace (there or not)."""
    load(ns, f"add table {family} {TABLE}\ndelete table {family} {TABLE}\n")


# -- the routed hop ----------------------------------------------------------------------------------------------------
def _mac(ns: str | None, dev: str) -> str:
    argv = ["ip", *(["-n", ns] if ns else []), "-j", "link", "show", dev]
    return json.loads(sh(*argv).stdout)[0]["address"]


def _addr(ns: str) -> str:
    return json.loads(sh("ip", "-n", ns, "-j", "-4", "addr", "show", "eth0").stdout)[0]["addr_info"][0]["local"]


def routed_build(pair: tuple[int, int]) -> None:
    """For each VM: namespace hx<vm>, the tap moved in, a veth pair to the VN bridge, no bridge; the namespace routes
    the guest's /32 to the tap and the other guest's to the veth (static neighbours everywhere, no ARP, no address);
    each guest's neighbour entry for the other points at its own tap, its first hop."""
    guests = {vm: (f"g{vm}", _addr(f"g{vm}")) for vm in pair}
    for vm in pair:
        ns, tap, h, f = f"hx{vm}", f"one-{vm}-0", f"hx{vm}h", f"hx{vm}f"
        sh("ip", "netns", "add", ns)
        sysctls = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                   "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                   "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"]  # no bridge anyway
        sh(*in_ns(ns, "sysctl", "-q", "-w", *sysctls))
        ip_batch([f"link add {h} type veth peer name {f} netns {ns}", f"link set {h} master {VN_BRIDGE} up",
                  f"link set {tap} netns {ns}"])
        ip_batch(["link set lo up", f"link set {f} up", f"link set {tap} up"], ns)
    for vm in pair:
        other = next(o for o in pair if o != vm)
        (gns, addr), (_, oaddr) = guests[vm], guests[other]
        ip_batch([f"route add {addr}/32 dev one-{vm}-0", f"route add {oaddr}/32 dev hx{vm}f",
                  f"neigh replace {addr} lladdr {_mac(gns, 'eth0')} dev one-{vm}-0 nud permanent",
                  f"neigh replace {oaddr} lladdr {_mac(f'hx{other}', f'hx{other}f')} dev hx{vm}f nud permanent"],
                 f"hx{vm}")
        ip_batch([f"neigh replace {oaddr} lladdr {_mac(f'hx{vm}', f'one-{vm}-0')} dev eth0 nud permanent"], gns)


def routed_remove(pair: tuple[int, int]) -> None:
    """The taps back on the VN bridge, the namespaces gone, the guests' neighbour entries pointing at each other."""
    for vm in pair:
        ns, tap = f"hx{vm}", f"one-{vm}-0"
        sh("ip", "-n", ns, "link", "set", tap, "netns", str(os.getpid()))
        ip_batch([f"link set {tap} master {VN_BRIDGE} up", f"link del hx{vm}h"])
        sh("ip", "netns", "del", ns)
    guests = {vm: (f"g{vm}", _addr(f"g{vm}")) for vm in pair}
    for vm in pair:
        other = next(o for o in pair if o != vm)
        ip_batch([f"neigh replace {guests[other][1]} lladdr {_mac(f'g{other}', 'eth0')} dev eth0 nud permanent"],
                 f"g{vm}")


# -- proofs ------------------------------------------------------------------------------------------------------------
def brnf_off(ns: str, bridge: str | None) -> None:
    """br_netfilter really off in a VM namespace: its sysctls read there, and the bridge's own flags."""
    got = sh(*in_ns(ns, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables",
                    "net.bridge.bridge-nf-call-ip6tables")).stdout.split()
    if got != ["0", "0"]:
        raise RuntimeError(f"{ns}: bridge-nf-call-iptables/ip6tables read {got}, not 0 0")
    if bridge:
        info = json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show", bridge).stdout)[0]["linkinfo"]["info_data"]
        if info.get("nf_call_iptables") or info.get("nf_call_ip6tables"):
            raise RuntimeError(f"{ns}: bridge {bridge} has nf_call_iptables/ip6tables on")


_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
for _ in range(int(sys.argv[3])):
    s.sendto(b"x" * 32, (sys.argv[1], int(sys.argv[2])))
"""


def _no_ports(ns: str) -> int:
    """Udp NoPorts of a guest namespace: datagrams that arrived for a port nothing listens on."""
    lines = [l.split() for l in sh(*in_ns(ns, "cat", "/proc/net/snmp")).stdout.splitlines() if l.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def arrived(src: str, dst: str, addr: str, port: int, n: int = 20, deadline: float = 2.0) -> tuple[int, int]:
    """(how many of n datagrams src sends to addr:port, where nothing listens, reach dst, waited for up to deadline;
    the source port they were sent from)."""
    before = _no_ports(dst)
    sport = int(sh(*in_ns(src, sys.executable, "-c", _SEND, addr, str(port), str(n))).stdout)
    end = time.monotonic() + deadline
    while (got := _no_ports(dst) - before) < n and time.monotonic() < end:
        time.sleep(0.05)
    return got, sport


def filters(src: str, dst: str, addr: str) -> dict:
    """The rules really filter: datagrams to a port the group does not allow never arrive (checked after those to an
    allowed port arrived, so the path was up), datagrams to an allowed port all do. Raises otherwise."""
    ok, sport = arrived(src, dst, addr, ALLOWED_PORT)
    dropped, _ = arrived(src, dst, addr, DROPPED_PORT, deadline=0.5)
    if ok != 20 or dropped != 0:
        raise RuntimeError(f"rules not in force: {ok}/20 datagrams to allowed port {ALLOWED_PORT} arrived, "
                           f"{dropped}/20 to dropped port {DROPPED_PORT}")
    return {"allowed_arrived": ok, "dropped_arrived": dropped, "allowed_sport": sport}


def tracked(ns: str, sport: int) -> int:
    """Conntrack entries of a namespace for UDP flows from source port sport to ALLOWED_PORT."""
    res = sh(*in_ns(ns, "conntrack", "-L", "-p", "udp", "--sport", str(sport), "--dport", str(ALLOWED_PORT)))
    return len(res.stdout.splitlines())


def prove(hops: list[str], src: str, dst: str, addr: str, stateful: bool) -> dict:
    """filters(), and conntrack as the rung says: the allowed flow of the proof has an entry in every VM namespace of
    the path (stateful) or in none (stateless). Raises otherwise; returns what it saw."""
    proof = filters(src, dst, addr)
    proof["conntrack_entries"] = found = [tracked(ns, proof["allowed_sport"]) for ns in hops]
    if (all(found) if stateful else any(found)) != stateful:
        raise RuntimeError(f"conntrack {'unused' if stateful else 'used'} in the VM namespaces: {proof}")
    return proof


# -- the rungs' rule sets, proven -------------------------------------------------------------------------------------
#: What each rung's last build proved (prove()), reported with the results.
PROOFS: dict[str, dict] = {}


def _hops(pair: tuple[int, int]) -> list[str]:
    return [f"hx{vm}" for vm in pair]


def rung(key: str, pair: tuple[int, int], rules, family: str, stateful: bool) -> None:
    """The security group in an nftables table of `family` in each hop namespace hx<vm> (bridge: the hand-built hop
    with its bridge hxbr<vm>; inet: the routed one), with conntrack or stateless (ruleset()). Proven before it is timed:
    br_netfilter off in those namespaces, the rules drop what they must, conntrack in use there exactly when stateful.
    The first VM of the pair sends, the second receives."""
    for vm in pair:
        load(f"hx{vm}", ruleset(vm, rules, family, stateful=stateful))
        brnf_off(f"hx{vm}", f"hxbr{vm}" if family == "bridge" else None)
    src, dst = (f"g{vm}" for vm in pair)
    PROOFS[key] = prove(_hops(pair), src, dst, _addr(dst), stateful)


def sg_iptables(pair: tuple[int, int], rules) -> None:
    """The security group as plain iptables rules with conntrack (plain_chains) in each hand-built hop's namespace, for
    br_netfilter, and no nftables table there; proven as rung() proves."""
    for vm in pair:
        unload(f"hx{vm}", "bridge")
        sh(*in_ns(f"hx{vm}", "iptables-restore"), stdin=iptables_text(vm, rules))
    src, dst = (f"g{vm}" for vm in pair)
    PROOFS["hop_sg_ct"] = prove(_hops(pair), src, dst, _addr(dst), stateful=True)
