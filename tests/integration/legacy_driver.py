"""A stand-in for OpenNebula's `802.1Q` and `vxlan` network drivers (their Ruby code is neither installed here nor
committed): what their `pre`, `post`, `clean`, `update_sg` and `update_nic` do to the hypervisor, written from
reading OpenNebula's sources (`src/vnm_mad/remotes/{802.1Q,vxlan}/*`, `lib/vlan.rb`, `lib/sg_driver.rb`,
`lib/security_groups.rb`, `lib/security_groups_iptables.rb`, `lib/vnm_driver.rb`), for the commands they run:

- `pre` (VLANDriver#activate): for each NIC of the driver, the VLAN device `<PHYDEV>.<VLAN_ID>` (802.1Q: `ip link
  add link PHYDEV name DEV type vlan id N`; vxlan: `type vxlan id N group 239.0.0.<N> dev PHYDEV dstport 0`) and the
  bridge `BRIDGE` with the device in it, unless the bridge exists; then the hooks of `pre.d/`.
- `post`: the legacy security groups (SGDriver#activate: `deactivate`, then global_bootstrap, and per NIC nic_pre,
  each security group's rules, nic_post), one `iptables`/`ip6tables`/`ipset` process per command, as the driver runs
  them; then the hooks of `post.d/` (only when activate succeeded).
- `clean` (VLANDriver#deactivate, then SGDriver#deactivate): a bridge whose only port left is the device loses the
  device and goes; then each NIC's legacy objects go (nic_deactivate: the jumps of `opennebula` and `INPUT` by line
  number from `-L --line-numbers`, the chains `^one-<VM>-<NIC>(-|$)`, the ipsets of that name); the hooks of
  `clean.d/`.
- `update_sg`: activate(true): every NIC of the driver, ATTACH ignored. `update_nic`: only QoS, which these VMs lack.

A NIC with ATTACH=YES narrows pre, post and clean to it. Both take the driver's lock (flock of the lock file,
$NETFW_LEGACY_SG_LOCK in tests). Run as `python -m tests.integration.legacy_driver DRIVER ACTION ARGS...`
with the base64 VM document on standard input, from a driver folder's script.
"""

from __future__ import annotations

import base64
import fcntl
import ipaddress
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

GLOBAL = "opennebula"


def sh(cmd: str, check: bool = True) -> str:
    """One command, as the driver's Commands#run! runs each (the driver adds `sudo -n` and `-w 3`)."""
    res = subprocess.run(shlex.split(cmd), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise SystemExit(f"ERROR: Command Error: {cmd}: {res.stderr.strip()}")
    return res.stdout


class Doc:
    def __init__(self, stdin: str, driver: str):
        self.root = ET.fromstring(base64.b64decode("".join(stdin.split())))
        self.vm = self.root.findtext("ID")
        nics = [n for t in self.root.findall("TEMPLATE") for n in t.findall("NIC")]
        self.nics = [{c.tag.lower(): (c.text or "") for c in n} for n in nics if n.findtext("VN_MAD") == driver]
        self.rules: dict[str, list[dict]] = {}
        for t in self.root.findall("TEMPLATE"):
            for r in t.findall("SECURITY_GROUP_RULE"):
                rule = {c.tag.lower(): (c.text or "") for c in r}
                self.rules.setdefault(rule.get("security_group_id"), []).append(rule)
        attach = [n for t in self.root.findall("TEMPLATE") for n in t.findall("NIC")
                  if n.findtext("ATTACH") == "YES"]
        self.attach = attach[0].findtext("NIC_ID") if attach else None

    def narrowed(self, do_all: bool = False) -> list[dict]:
        return [n for n in self.nics if do_all or self.attach is None or n["nic_id"] == self.attach]


# --- the connection layer (vlan.rb) -------------------------------------------------------------------------------


def _device(driver: str, nic: dict) -> str:
    return f"{nic['phydev']}.{nic['vlan_id']}"


def _bridges() -> dict[str, list[str]]:
    import json

    links = json.loads(sh("ip -d -j link show"))
    bridges = {l["ifname"]: [] for l in links if l.get("linkinfo", {}).get("info_kind") == "bridge"}
    for link in links:
        if link.get("master") in bridges:
            bridges[link["master"]].append(link["ifname"])
    return bridges


def vlan_activate(driver: str, doc: Doc) -> None:
    for nic in doc.narrowed():
        if nic["bridge"] in _bridges():
            continue
        dev = _device(driver, nic)
        sh(f"ip link add {nic['bridge']} type bridge")
        if driver == "802.1Q":
            sh(f"ip link add link {nic['phydev']} name {dev} type vlan id {nic['vlan_id']}")
        else:
            sh(f"ip link add {dev} type vxlan id {nic['vlan_id']} group 239.0.0.{int(nic['vlan_id']) % 256} "
               f"dev {nic['phydev']} dstport 0")
        sh(f"ip link set {dev} master {nic['bridge']} up")
        sh(f"ip link set {nic['bridge']} up")


def vlan_deactivate(driver: str, doc: Doc) -> None:
    for nic in doc.narrowed():
        bridges = _bridges()
        if nic["bridge"] not in bridges:
            continue
        dev = _device(driver, nic)
        if [p for p in bridges[nic["bridge"]] if p not in (nic["phydev"], dev)]:
            continue  # still in use
        sh(f"ip link delete {dev}")
        sh(f"ip link delete {nic['bridge']}")


# --- the legacy security groups (SGIPTables) ----------------------------------------------------------------------


def _nets(rule: dict) -> list[str]:
    if not rule.get("ip") or not rule.get("size"):
        return []
    first = ipaddress.ip_address(rule["ip"])
    last = first + int(rule["size"]) - 1
    return [str(n) for n in ipaddress.summarize_address_range(first, last)]


def _rule(cmds: list[str], chain_in: str, chain_out: str, set_in: str, set_out: str, rule: dict) -> None:
    proto = rule["protocol"].lower()
    proto = "esp" if proto == "ipsec" else proto
    inbound = rule["rule_type"].lower() == "inbound"
    chain = chain_in if inbound else chain_out
    sgset = set_in if inbound else set_out
    rng, icmp = rule.get("range"), rule.get("icmp_type")
    if not rule.get("ip") and not rule.get("size"):
        if icmp:
            cmds.append(f"iptables -A {chain} -p icmp --icmp-type {icmp} -j RETURN")
        elif rng:
            cmds += [f"{t} -A {chain} -p {proto} -m multiport --dports {rng} -j RETURN"
                     for t in ("iptables", "ip6tables")]
        else:
            if proto != "icmpv6":
                cmds.append(f"iptables -A {chain} -p {proto} -j RETURN")
            if proto != "icmp":
                cmds.append(f"ip6tables -A {chain} -p {proto} -j RETURN")
        return
    d = "src" if inbound else "dst"
    if icmp:
        name = f"{sgset}-ni"
        cmds += [f"ipset create {name} hash:net,port family inet",
                 f"iptables -A {chain} -m set --match-set {name} {d},dst -j RETURN"]
        cmds += [f"ipset add -exist {name} {n},icmp:{icmp}/0" for n in _nets(rule)]
        return
    made = []
    for n in _nets(rule):
        fam = "inet6" if ":" in n else "inet"
        tool = "ip6tables" if fam == "inet6" else "iptables"
        if rng:
            name = f"{sgset}-nr-{fam}"
            if name not in made:
                cmds += [f"ipset create {name} hash:net,port family {fam} maxelem 65536",
                         f"{tool} -A {chain} -m set --match-set {name} {d},dst -j RETURN"]
            cmds += [f"ipset add -exist {name} {n},{proto}:{r.replace(':', '-')}" for r in rng.split(",")]
        else:
            name = f"{sgset}-{proto}-n-{fam}"
            if name not in made:
                cmds += [f"ipset create {name} hash:net family {fam}",
                         f"{tool} -A {chain} -p {proto} -m set --match-set {name} {d} -j RETURN"]
            cmds.append(f"ipset add -exist {name} {n}")
        made.append(name)


def nic_activate(vm: str, nic: dict, rules: dict[str, list[dict]]) -> list[str]:
    """nic_pre, the rules of each security group, nic_post: the commands, in order (bridged)."""
    c = f"one-{vm}-{nic['nic_id']}"
    ci, co, tap = f"{c}-i", f"{c}-o", nic.get("target") or c
    cmds = [f"iptables -N {ci}", f"iptables -N {co}", f"ip6tables -N {ci}", f"ip6tables -N {co}"]
    base = f"-I {GLOBAL} -m physdev --physdev-is-bridged"
    cmds += [f"iptables {base} --physdev-out {tap} -j {ci}", f"iptables {base} --physdev-in {tap} -j {co}",
             f"iptables -I INPUT -m physdev --physdev-in {tap} -j {co}",
             f"ip6tables {base} --physdev-out {tap} -j {ci}", f"ip6tables {base} --physdev-in {tap} -j {co}",
             f"ip6tables -I INPUT -m physdev --physdev-in {tap} -j {co}"]
    cmds += [f"ip6tables -A {ci} -p icmpv6 --icmpv6-type {t} -j RETURN" for t in (134, 135, 136, 137)]
    cmds += [f"ip6tables -A {co} -p icmpv6 --icmpv6-type {t} -j RETURN" for t in (133, 135, 136)]
    if nic.get("filter_mac_spoofing", "").upper() == "YES":
        cmds += [f"{t} -A {co} -m mac ! --mac-source {nic['mac']} -j DROP" for t in ("iptables", "ip6tables")]
    if nic.get("filter_ip_spoofing", "").upper() == "YES":
        cmds.append(f"iptables -A {co} -p udp --source 0.0.0.0/32 --sport 68 --destination 255.255.255.255/32 "
                    "--dport 67 -j RETURN")
        cmds += [f"ipset create {c}-ip-spoofing hash:ip family inet"]
        cmds += [f"ipset add -exist {c}-ip-spoofing {nic['ip']}"] if nic.get("ip") else []
        cmds += [f"iptables -A {co} -m set ! --match-set {c}-ip-spoofing src -j DROP",
                 f"ipset create {c}-ip6-spoofing hash:ip family inet6",
                 f"ip6tables -A {co} -m set ! --match-set {c}-ip6-spoofing src -j DROP"]
    cmds += [f"{t} -A {ch} -m state --state ESTABLISHED,RELATED -j RETURN"
             for t in ("iptables", "ip6tables") for ch in (ci, co)]
    groups = nic.get("security_groups")
    if not groups:
        groups, rules = "0", {"0": [{"protocol": "ALL", "rule_type": "OUTBOUND"},
                                    {"protocol": "ALL", "rule_type": "INBOUND"}]}
    for sg in groups.split(","):
        for rule in rules.get(sg, []):
            _rule(cmds, ci, co, f"{c}-{sg}-i", f"{c}-{sg}-o", rule)
    cmds += [f"{t} -A {ch} -j DROP" for t in ("iptables", "ip6tables") for ch in (ci, co)]
    return cmds


def nic_deactivate(vm: str, nic: dict) -> None:
    c = f"one-{vm}-{nic['nic_id']}"
    for tool in ("iptables", "ip6tables"):
        listed = sh(f"{tool} -S")
        if f"-N {GLOBAL}" in listed.splitlines():
            for chain in (GLOBAL, "INPUT"):
                lines = sh(f"{tool} -L {chain} --line-numbers").splitlines()
                for line in reversed(lines):
                    fields = line.split()
                    if len(fields) > 1 and fields[1] in (f"{c}-i", f"{c}-o"):
                        sh(f"{tool} -D {chain} {fields[0]}")
        chains = [l.split()[1] for l in listed.splitlines() if re.match(rf"^-N {c}(-|$)", l)]
        for chain in chains:
            sh(f"{tool} -F {chain}")
        for chain in chains:
            sh(f"{tool} -X {chain}")
    for name in sh("ipset list -n").split():
        if re.match(rf"^{c}(-|$)", name):
            sh(f"ipset destroy {name}")


def global_bootstrap() -> None:
    for tool in ("iptables", "ip6tables"):
        if f"-N {GLOBAL}" not in sh(f"{tool} -S").splitlines():
            sh(f"{tool} -N {GLOBAL}")
            sh(f"{tool} -A FORWARD -m physdev --physdev-is-bridged -j {GLOBAL}")
            sh(f"{tool} -A {GLOBAL} -j ACCEPT")


def sg_activate(doc: Doc, do_all: bool = False) -> None:
    sg_deactivate(doc, do_all)
    global_bootstrap()
    for nic in doc.narrowed(do_all):
        for cmd in nic_activate(doc.vm, nic, doc.rules):
            sh(cmd)


def sg_deactivate(doc: Doc, do_all: bool = False) -> None:
    for nic in doc.narrowed(do_all):
        nic_deactivate(doc.vm, nic)


def run_hooks(folder: Path, action: str, args: list[str], stdin: str) -> None:
    hooks = folder / f"{action}.d"
    for file in sorted(hooks.iterdir()) if hooks.is_dir() else []:
        if not os.access(file, os.X_OK):
            continue
        res = subprocess.run([str(file), *args], input=stdin, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"Error running {file}\n{res.stderr}")
        sys.stderr.write("".join(f"INFO: {action}: {line}\n" for line in res.stdout.splitlines()))


def main(driver: str, action: str, script: str, args: list[str]) -> int:
    stdin = sys.stdin.read()
    doc = Doc(stdin, driver)
    folder = Path(script).parent
    with open(os.environ.get("NETFW_LEGACY_SG_LOCK") or "/nonexistent/lock", "w") as lock:
        if action == "pre":
            vlan_activate(driver, doc)
        elif action == "post":
            fcntl.flock(lock, fcntl.LOCK_EX)
            sg_activate(doc)
        elif action == "clean":
            vlan_deactivate(driver, doc)
            fcntl.flock(lock, fcntl.LOCK_EX)
            sg_deactivate(doc)
        elif action == "update_sg":
            fcntl.flock(lock, fcntl.LOCK_EX)
            sg_activate(doc, do_all=True)
        elif action != "update_nic":
            raise SystemExit(f"ERROR: no action {action}")
    if action in ("pre", "post", "clean"):
        run_hooks(folder, action, args, stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
