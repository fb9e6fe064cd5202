"""Issue 20: netfw hooked into OpenNebula's `802.1Q` and `vxlan` drivers as docs/opennebula.md says (`netfw one
install`, and the block of its appendix read from the page and run), with stand-ins for the drivers' own work
(tests/integration/legacy_driver.py: the VLAN or VXLAN device and bridge, and the legacy security groups built with
the very commands OpenNebula's SGIPTables runs). Two simulated hosts: this sandbox (the hypervisor, where netfw runs)
and a namespace `hostb` (the other end of the VLAN or VXLAN, over a veth underlay `eth1`, its bridge holding the
peer address 10.62.0.2).

After deploy, update_sg, update_nic, hot-attach and hot-detach: the verdicts are netfw's alone (a port the new rules
open is open), the hypervisor's iptables, ip6tables and ipsets hold nothing of the legacy driver for VM 7, whose
NICs netfw handles, and VM 9's legacy objects (a NIC netfw does not handle) are untouched and still filter; the
legacy per-NIC rules count no packet of VM 7. After shutdown (and a migration's source): nothing of netfw, and the
driver's bridge and device are gone, as without netfw.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netfw import api

from .lab import eventually, sh
from .test_opennebula import NETFW, ROOT, SCRIPTS, Host, host, shape  # noqa: F401  (the fixtures too)

PEER = "hostb"
VLAN = 50
BRIDGE = f"onebr.{VLAN}"
DEVICE = f"eth1.{VLAN}"

NIC = """    <NIC>
      <NIC_ID><![CDATA[{nic}]]></NIC_ID>
      <BRIDGE><![CDATA[{bridge}]]></BRIDGE>
      <BRIDGE_TYPE><![CDATA[linux]]></BRIDGE_TYPE>
      <IP><![CDATA[{ip}]]></IP>
      <MAC><![CDATA[{mac}]]></MAC>
      <NETWORK_ID><![CDATA[5]]></NETWORK_ID>
      <PHYDEV><![CDATA[eth1]]></PHYDEV>
      <VLAN_ID><![CDATA[{vlan}]]></VLAN_ID>
      <SECURITY_GROUPS><![CDATA[100]]></SECURITY_GROUPS>
      <TARGET><![CDATA[one-{vm}-{nic}]]></TARGET>
      <VN_MAD><![CDATA[{kind}]]></VN_MAD>
      <FILTER_IP_SPOOFING><![CDATA[YES]]></FILTER_IP_SPOOFING>
      <FILTER_MAC_SPOOFING><![CDATA[YES]]></FILTER_MAC_SPOOFING>{attach}
    </NIC>
"""
RULE = """    <SECURITY_GROUP_RULE>
      <SECURITY_GROUP_ID><![CDATA[100]]></SECURITY_GROUP_ID>{fields}
    </SECURITY_GROUP_RULE>
"""
#: Security group 100: in TCP 22, in ICMP echo from 10.62.0.0/24 (a legacy ipset), out all.
FIRST_RULES = [{"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "22"},
               {"PROTOCOL": "ICMP", "RULE_TYPE": "INBOUND", "ICMP_TYPE": "8", "IP": "10.62.0.0", "SIZE": "256"},
               {"PROTOCOL": "ALL", "RULE_TYPE": "OUTBOUND"}]
#: ... changed: TCP 8080 instead of 22, and TCP 80 from 10.62.0.2 only (another legacy ipset).
CHANGED_RULES = [{**FIRST_RULES[0], "RANGE": "8080"}, *FIRST_RULES[1:],
                 {"PROTOCOL": "TCP", "RULE_TYPE": "INBOUND", "RANGE": "80", "IP": "10.62.0.2", "SIZE": "1"}]
FIRST = {"22": True, "8080": False, "80": False, "ping": True, "out": True}
CHANGED = {"22": False, "8080": True, "80": True, "ping": True, "out": True}


def document(path: Path, kind: str, vm: int, rules: list[dict], nics: tuple[int, ...] = (0,),
             attach: int | None = None) -> str:
    """An `onevm show -x` document of VM vm with NICs on the VLAN 50 network of driver kind."""
    body = "".join(NIC.format(nic=n, bridge=BRIDGE, ip=f"10.62.0.{vm + 10 * n}", mac=f"02:00:0a:3e:{n:02x}:{vm:02x}",
                              vlan=VLAN, vm=vm, kind=kind,
                              attach="\n      <ATTACH><![CDATA[YES]]></ATTACH>" if n == attach else "")
                   for n in nics)
    body += "".join(RULE.format(fields="".join(f"\n      <{k}><![CDATA[{v}]]></{k}>" for k, v in r.items()))
                    for r in rules)
    path.write_text(f"<VM>\n  <ID>{vm}</ID>\n  <DEPLOY_ID>one-{vm}</DEPLOY_ID>\n  <TEMPLATE>\n{body}  </TEMPLATE>\n"
                    "  <HISTORY_RECORDS><HISTORY><HOSTNAME>host-a</HOSTNAME><VM_MAD>kvm</VM_MAD></HISTORY>"
                    "</HISTORY_RECORDS>\n</VM>\n")
    return str(path)


def by_hand(folder: Path) -> None:
    """The appendix of docs/opennebula.md, installing by hand: its block for a driver's folder, run as it stands."""
    text = (ROOT / "docs" / "opennebula.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "mv clean clean.legacy" in b)
    lines = [line.split("#")[0].rstrip() for line in block.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("cd ", "N=", "onehost "))]
    subprocess.run(["sh", "-ec", "\n".join(lines)], cwd=folder, check=True,
                   env={"N": str(SCRIPTS), "PATH": "/usr/bin:/bin"})


def install(tmp_path: Path, kind: str, how: str) -> Path:
    """The driver's folder as OpenNebula ships it (here the stand-ins), then netfw hooked into it as
    docs/opennebula.md says: `netfw one install` (the package's way), or by hand (its appendix)."""
    remotes = tmp_path / "remotes"
    folder = remotes / "vnm" / kind
    folder.mkdir(parents=True)
    for action in ("pre", "post", "clean", "update_sg", "update_nic"):
        script = folder / action
        script.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m tests.integration.legacy_driver '
                          f'{kind} {action} "$0" "$@"\n')
        script.chmod(0o755)
    if how == "by hand":
        by_hand(folder)
    else:
        res = subprocess.run([str(NETFW), "one", "install", "--remotes", str(remotes), "--drivers", kind,
                              "--settings", "", "--scripts", str(SCRIPTS)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    return folder


def underlay(host: Host, kind: str) -> None:
    """eth1 between this host and hostb, hostb's end of the VLAN or VXLAN 50 in its bridge, with 10.62.0.2 on it."""
    host.sh("ip", "netns", "add", PEER)
    host.sh("ip", "link", "add", "eth1", "mtu", "1600", "type", "veth", "peer", "name", "eth1", "mtu", "1600",
            "netns", PEER)
    host.sh("ip", "addr", "add", "192.0.2.1/24", "dev", "eth1")
    host.sh("ip", "link", "set", "eth1", "up")
    peer = ["ip", "-n", PEER]
    host.sh(*peer, "addr", "add", "192.0.2.2/24", "dev", "eth1")
    host.sh(*peer, "link", "set", "eth1", "up")
    device = (["link", "add", "link", "eth1", "name", DEVICE, "type", "vlan", "id", str(VLAN)] if kind == "802.1Q"
              else ["link", "add", DEVICE, "type", "vxlan", "id", str(VLAN), "group", f"239.0.0.{VLAN}", "dev",
                    "eth1", "dstport", "0"])
    res = host.sh(*peer, *device, check=False)
    if res.returncode:
        pytest.skip(f"this kernel cannot make a {kind} device ({res.stderr.strip()}): no 8021q module")
    host.sh(*peer, "link", "add", BRIDGE, "type", "bridge")
    host.sh(*peer, "link", "set", DEVICE, "master", BRIDGE, "up")
    host.sh(*peer, "addr", "add", "10.62.0.2/24", "dev", BRIDGE)
    host.sh(*peer, "link", "set", BRIDGE, "up")
    host.sh(*peer, "link", "set", "lo", "up")


class Driver:
    """The driver's folder on this host: its actions run as oned runs them (what oned sends on stdin)."""

    def __init__(self, host: Host, folder: Path):
        self.host, self.folder = host, folder

    def run(self, action: str, *args: str, doc: str, vn_mads: str | None = None) -> str:
        env = self.host.env() | ({"NETFW_VN_MADS": vn_mads} if vn_mads else {})
        res = subprocess.run([str(self.folder / action), *args], input=self.host.stdin(action, doc),
                             capture_output=True, text=True, env=env)
        assert res.returncode == 0, f"{action} exited {res.returncode}: {res.stderr}"
        assert "ERROR" not in res.stderr, res.stderr
        return res.stderr


def legacy_of(vm: int) -> list[str]:
    """Every line of the hypervisor's iptables, ip6tables and ipsets that names VM vm's legacy objects."""
    out = [f"ip {line}" for line in sh("iptables-save", "-t", "filter").stdout.splitlines()]
    out += [f"ip6 {line}" for line in sh("ip6tables-save", "-t", "filter").stdout.splitlines()]
    out += [f"set {line}" for line in sh("ipset", "list", "-n").stdout.splitlines()]
    return [line for line in out if f"one-{vm}-" in line]


def legacy_counts() -> dict[str, int]:
    """Packets counted by every rule of the legacy driver's per-NIC objects (the jumps and the NIC chains)."""
    counts = {}
    for tool in ("iptables-save", "ip6tables-save"):
        for line in sh(tool, "-c", "-t", "filter").stdout.splitlines():
            m = re.match(r"\[(\d+):\d+\] (-A .*)", line)
            if m and "one-" in m[2]:
                counts[f"{tool[:-5]} {m[2]}"] = int(m[1])
    return counts


def verdicts(host: Host, address: str) -> dict[str, bool]:
    return {"22": host.tcp(PEER, address, 22), "8080": host.tcp(PEER, address, 8080),
            "80": host.tcp(PEER, address, 80), "ping": host.ping(PEER, address),
            "out": host.ping(f"g7-{int(address.rsplit('.', 1)[1]) // 10}", "10.62.0.2")}


def filtered(host: Host, address: str, expected: dict[str, bool], bystander: list[str]) -> None:
    """netfw's verdicts for VM 7 at address; no legacy object of VM 7; VM 9's exactly as the legacy driver made them.
    Counters from zero over the traffic: the only legacy per-NIC rules that counted packets are VM 9's (packets to or
    from VM 9's port: its own, and frames the VN bridge floods to every port), and VM 7's packets crossed the global
    chain `opennebula` to its final ACCEPT, which stays (docs/opennebula.md)."""
    assert legacy_of(7) == []
    assert legacy_of(9) == bystander
    sh("iptables", "-Z")
    sh("ip6tables", "-Z")
    eventually(lambda: verdicts(host, address) == expected, f"VM 7 at {address}: {expected}")
    counted = {rule for rule, n in legacy_counts().items() if n}
    assert all("one-9-0" in rule for rule in counted), counted
    assert not bystander or {rule for rule in counted if "one-9-0" in rule} <= {
        line.split(" ", 1)[0] + "tables " + line.split(" ", 1)[1] for line in bystander}
    accepted = sh("iptables", "-L", "opennebula", "-v", "-x", "-n").stdout.splitlines()[-1].split()
    assert accepted[2] == "ACCEPT" and int(accepted[0]) > 0, accepted


@pytest.fixture(params=["802.1Q", "vxlan"])
def kind(request) -> str:
    return request.param


def _legacy_host(host: Host, kind: str, tmp_path: Path, how: str):
    underlay(host, kind)
    yield Driver(host, install(tmp_path, kind, how))
    for tool in ("iptables", "ip6tables"):  # the legacy driver's objects in the sandbox's own tables
        sh(tool, "-F")
        sh(tool, "-X")
    sh("ipset", "destroy", check=False)


@pytest.fixture
def legacy_host(host, kind, tmp_path):
    """This host with the driver `kind`, netfw hooked in by `netfw one install`."""
    yield from _legacy_host(host, kind, tmp_path, "netfw one install")


@pytest.fixture
def legacy_host_by_hand(host, kind, tmp_path):
    """The same, netfw hooked in by hand (the appendix of docs/opennebula.md)."""
    yield from _legacy_host(host, kind, tmp_path, "by hand")


def test_802_1q_and_vxlan_flows_through_the_installed_scripts(legacy_host, kind, tmp_path):
    driver, host = legacy_host, legacy_host.host
    doc = {name: document(tmp_path / f"{name}.xml", kind, vm, rules, nics, attach) for name, vm, rules, nics, attach in
           [("vm9", 9, FIRST_RULES, (0,), None), ("first", 7, FIRST_RULES, (0,), None),
            ("changed", 7, CHANGED_RULES, (0,), None), ("hot", 7, CHANGED_RULES, (0, 1), 1)]}

    # VM 9: a NIC netfw does not handle (vxlan and 802.1Q left out of its list): the legacy driver filters it.
    driver.run("pre", doc=doc["vm9"], vn_mads="bridge")
    host.guest("g9-0", "one-9-0", BRIDGE, "10.62.0.9/24")
    host.sh("ip", "-n", "g9-0", "link", "set", "eth0", "address", "02:00:0a:3e:00:09")
    host.listen("g9-0", 22, 8080)
    assert "nothing to do" in driver.run("post", "one-9", "host-a", doc=doc["vm9"], vn_mads="bridge")
    bystander = legacy_of(9)
    assert "ip -A opennebula -m physdev --physdev-out one-9-0 --physdev-is-bridged -j one-9-0-i" in bystander
    eventually(lambda: host.tcp(PEER, "10.62.0.9", 22), "VM 9 reachable on TCP 22")
    assert not host.tcp(PEER, "10.62.0.9", 8080)  # the legacy rules drop it

    # Deploy VM 7: the driver's post builds its legacy chains, then netfw's hook takes the NIC and them.
    driver.run("pre", doc=doc["first"])
    host.vm_nic(0, BRIDGE, "10.62.0.7/24", "02:00:0a:3e:00:07")
    host.listen("g7-0", 22, 8080, 80)
    log = driver.run("post", "one-7", "host-a", doc=doc["first"])
    assert "INFO: post: netfw post: VM 7 NIC 0: " in log and "; legacy security groups removed: NIC 0" in log, log
    assert api.verify(7) == {0: []}
    filtered(host, "10.62.0.7", FIRST, bystander)

    # update_sg (netfw's, replacing the driver's): 8080 opens, 22 closes; the legacy chains decide nothing.
    driver.run("update_sg", "one-7", doc=doc["changed"])
    filtered(host, "10.62.0.7", CHANGED, bystander)
    # The driver's own update_sg still succeeds (it builds VM 7's chains again: asked for), netfw's removes them.
    driver.run("update_sg.legacy", "one-7", doc=doc["changed"])
    rebuilt = legacy_of(7)
    assert rebuilt != []
    dry = subprocess.run([str(NETFW), "one", "--dry-run", "update_sg", "one-7"], capture_output=True, text=True,
                         input=host.stdin("update_sg", doc["changed"]), env=host.env())
    assert dry.returncode == 0 and "legacy security groups to remove: NIC 0" in dry.stderr, dry.stderr
    assert "-X one-7-0-i" in dry.stdout and "destroy one-7-0-ip-spoofing" in dry.stdout, dry.stdout
    assert legacy_of(7) == rebuilt  # a dry run removes nothing
    assert "legacy security groups removed: NIC 0" in driver.run("update_sg", "one-7", doc=doc["changed"])
    filtered(host, "10.62.0.7", CHANGED, bystander)

    # update_nic: the chain (the driver's part, then netfw's).
    driver.run("update_nic", "one-7", "5", doc=doc["changed"])
    filtered(host, "10.62.0.7", CHANGED, bystander)

    # Hot-attach NIC 1: the driver builds its chains (NIC 1 only), netfw takes NIC 1 and them.
    driver.run("pre", doc=doc["hot"])
    host.vm_nic(1, BRIDGE, "10.62.0.17/24", "02:00:0a:3e:01:07")
    host.listen("g7-1", 22, 8080, 80)
    assert "legacy security groups removed: NIC 1" in driver.run("post", "one-7", "host-a", doc=doc["hot"])
    assert api.verify(7) == {0: [], 1: []}
    filtered(host, "10.62.0.17", CHANGED, bystander)
    filtered(host, "10.62.0.7", CHANGED, bystander)

    # Hot-detach NIC 1: netfw's clean, then the driver's (which finds nothing of NIC 1 and succeeds).
    host.leave("g7-1", "one-7-1")
    driver.run("clean", "host-a", doc=doc["hot"])
    assert api.verify(7) == {0: []}
    filtered(host, "10.62.0.7", CHANGED, bystander)

    # VM 9 goes: the legacy driver removes its chains; the bridge stays (VM 7 is on it).
    host.leave("g9-0", "one-9-0")
    driver.run("clean", "host-a", doc=doc["vm9"], vn_mads="bridge")
    assert legacy_of(9) == []
    bystander = []

    # Shutdown of VM 7, the last VM on the network: nothing of netfw, nor the bridge and the device, is left.
    host.leave("g7-0", "one-7-0")
    driver.run("clean", "host-a", doc=doc["changed"])
    assert host.netfw_left() == [] and legacy_of(7) == []
    links = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout)}
    assert BRIDGE not in links and DEVICE not in links, links


def test_the_source_of_a_live_migration_keeps_nothing(legacy_host_by_hand, kind, tmp_path):
    """Installed by hand (the appendix of docs/opennebula.md), the other way the page documents."""
    driver, host = legacy_host_by_hand, legacy_host_by_hand.host
    doc = document(tmp_path / "vm7.xml", kind, 7, FIRST_RULES)
    driver.run("pre", doc=doc)
    host.vm_nic(0, BRIDGE, "10.62.0.7/24", "02:00:0a:3e:00:07")
    host.listen("g7-0", 22, 8080, 80)
    driver.run("post", "one-7", "host-a", doc=doc)
    filtered(host, "10.62.0.7", FIRST, [])

    host.leave("g7-0", "one-7-0")  # the VM runs on the destination now: its tap is gone from here
    driver.run("clean", "host-a", doc=doc)
    assert host.netfw_left() == [] and legacy_of(7) == []
    links = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout)}
    assert BRIDGE not in links and DEVICE not in links, links
