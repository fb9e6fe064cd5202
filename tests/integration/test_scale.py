"""Issue 22 at small N, with real kernel objects: `netfw status`, `netfw status VM` and `netfw metrics` read each
namespace once (netfw/kernel/cache.py, the VMs in parallel) and say exactly what the reads check by check say, faults
included; gc after VMs ended without clean (taps gone) and after a reboot (records, nothing in the kernel) leaves
nothing behind. The timings are scripts/bench_scale.py's (docs/benchmarks/scale.md)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

from netfw import api
from netfw.kernel import cache, probe
from netfw.observe import health, metrics, status
from netfw.model.spec import NicSpec
from netfw.model.rules import parse_rules

from .lab import eventually, links, netns_list, ping, sh

NETFW = str(Path(sys.executable).parent / "netfw")
#: Ping in, SSH in, everything out: a connect to another port is dropped (no rule), so counters and drops move.
RULES = parse_rules([{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "ICMP_TYPE": "8", "SECURITY_GROUP_ID": "100"},
                     {"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22", "SECURITY_GROUP_ID": "100"},
                     {"PROTOCOL": "ALL", "RULE_TYPE": "outbound", "SECURITY_GROUP_ID": "101"}])


def netfw(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([NETFW, *argv], capture_output=True, text=True)


def outputs(state_dir: Path, vms: list[int]) -> dict:
    """Everything status, status VM and metrics print (JSON and text), from the Python API the CLI calls."""
    healths = health.survey(state_dir)
    out = {"status": [h.as_dict() for h in healths], "status text": status.host_lines(healths),
           "metrics": metrics.collect(state_dir)}
    for vm in vms:
        one = status.vm_status(vm, None, state_dir)
        out[f"status {vm}"], out[f"status {vm} text"] = one.as_dict(), status.vm_lines(one)
    return out


def check_by_check(monkeypatch) -> None:
    """netfw's reads as before issue 22: every check reads for itself, one VM after another."""
    monkeypatch.setattr(cache, "reads", contextlib.nullcontext)
    monkeypatch.setattr(cache, "WORKERS", 1)


def test_status_and_metrics_read_once_per_namespace_say_what_reads_check_by_check_say(lab, state_dir, monkeypatch):
    lab.bridge()
    sh("sysctl", "-qw", "net.ipv6.conf.vnbr0.disable_ipv6=1")  # the sandbox's bridge: no router solicitation, MLD
    g10, g11 = lab.vm(1, 0, "10.22.0.10/24"), lab.vm(1, 1, "10.22.0.11/24")
    guests = {vm: lab.vm(vm, 0, f"10.22.0.{vm}/24") for vm in (2, 3, 4, 5, 6)}
    peer = lab.vm(9, 0, "10.22.0.99/24")  # not attached: traffic from outside the VMs
    for guest in [g10, g11, *guests.values(), peer]:  # no packet but the test's own (router solicitations, MLD)
        sh("ip", "netns", "exec", guest, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    for spec in [NicSpec(1, 0, "vnbr0", rules=RULES), NicSpec(1, 1, "vnbr0", rules=RULES),
                 *(NicSpec(vm, 0, "vnbr0", rules=RULES) for vm in guests)]:
        api.attach(spec)
    assert ping(peer, "10.22.0.10") and ping(g10, "10.22.0.11") and ping(peer, "10.22.0.2")
    sh("ip", "netns", "exec", peer, "nc", "-z", "-w", "1", "10.22.0.10", "80", check=False)  # dropped: no rule
    sh("ip", "-n", "one-2", "link", "set", "one-2-0-f", "down")  # VM 2: drift
    sh("ip", "netns", "del", "one-3")  # VM 3: stale (its veth end went with the namespace)
    (state_dir / "vm-4" / "nic-0.json").unlink()  # VM 4: orphan
    sh("ip", "netns", "del", guests[5])  # VM 5: its tap gone with the guest (drift)
    (state_dir / "vm-6" / "nic-0.json").write_text("{not json")  # VM 6: its record cannot be read (error)
    for ns in ("one-1", "one-2", "one-5"):  # no conntrack entry may expire between the two reads
        sh("nsenter", f"--net=/run/netns/{ns}", "conntrack", "-F", check=False)
    # a namespace's links go a moment after `ip netns del` (the kernel's deferred cleanup)
    eventually(lambda: "one-3-0" not in probe.links(None), "VM 3's veth end gone with its namespace")
    eventually(lambda: "one-5-0" not in probe.links("one-5"), "VM 5's tap gone with its guest")

    def same() -> bool:  # the counters may still move for a moment (a packet on its way): read both again
        nonlocal new, old
        new = outputs(state_dir, [1, 2, 5])
        with monkeypatch.context() as m:
            check_by_check(m)
            old = outputs(state_dir, [1, 2, 5])
        return new == old

    new = old = None
    eventually(same, "the same outputs both ways", timeout=10, interval=0.5)
    assert {(n["vm"], n["nic"]): n["health"] for n in new["status"]} == {
        (1, 0): "attached", (1, 1): "attached", (2, 0): "drift", (3, 0): "stale", (4, 0): "orphan",
        (5, 0): "drift", (6, 0): "error"}
    nic0 = new["status 1"]["nics"][0]  # not a comparison of zeros: the kernel counted the traffic above
    assert nic0["inbound"]["accepted"]["packets"] > 0 and nic0["drops"]["no_rule"]["packets"] > 0
    assert 'netfw_nic_health{vm="6",nic="0",health="error"} 1' in new["metrics"][0]
    cli = json.loads(netfw("status", "1", "--json").stdout)  # the CLI prints what the API says
    assert cli["nics"][0]["health"] == "attached" and cli["nics"][0]["rules"] == nic0["rules"]


def netfw_objects(vms: set[int]) -> list[str]:
    """netfw's namespaces, links (hypervisor side) of the VMs vms."""
    found = [ns for ns in netns_list() if ns.startswith("one-") and int(ns.split("-")[1]) in vms]
    return found + [n for n, link in probe.links(None).items() if (probe.alias_of(link) or (None,))[0] in vms]


def test_gc_after_vms_ended_without_clean_and_after_a_reboot_leaves_nothing_behind(lab, state_dir):
    lab.bridge()
    alive = lab.vm(9, 0, "10.22.0.99/24")
    api.attach(NicSpec(9, 0, "vnbr0"))
    host_before = [link["ifname"] for link in links(None)]
    guests = {(vm, nic): lab.vm(vm, nic, f"10.22.{nic}.{vm}/24") for vm, nic in ((1, 0), (1, 1), (2, 0), (3, 0))}
    for vm, nic in guests:
        api.attach(NicSpec(vm, nic, "vnbr0"))
    records = state_dir.parent / "records-copy"
    shutil.copytree(state_dir, records)  # the same records, for the reboot below
    for guest in guests.values():  # the VMs end without OpenNebula's clean: QEMU's exit takes the taps
        sh("ip", "netns", "del", guest)
    for vm, nic in guests:
        eventually(lambda: f"one-{vm}-{nic}" not in probe.links(f"one-{vm}"), f"VM {vm} NIC {nic}'s tap gone")

    res = netfw("gc", "--json")
    assert res.returncode == 0, res.stderr
    items = {(i["vm"], i["nic"]): i for i in json.loads(res.stdout)["items"]}
    assert set(items) == set(guests) and {i["health"] for i in items.values()} == {"tap gone"}
    assert all(i["error"] is None and i["removed"] for i in items.values())
    assert netfw_objects({1, 2, 3}) == []
    assert sorted(p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*.json")) == ["vm-9/nic-0.json"]
    assert [link["ifname"] for link in links(None)] == host_before  # the guests' taps went with them
    assert api.verify(9) == {0: []} and ping(alive, "10.22.0.99")  # the VM that runs is untouched

    # A rebooted host: the records, nothing in the kernel (stale)
    for vm in (1, 2, 3):
        shutil.copytree(records / f"vm-{vm}", state_dir / f"vm-{vm}", dirs_exist_ok=True)
    assert {n["health"] for n in json.loads(netfw("status", "--json").stdout)["nics"] if n["vm"] != 9} == {"stale"}
    res = netfw("gc", "--json")
    assert res.returncode == 0, res.stderr
    assert {(i["vm"], i["nic"], i["health"]) for i in json.loads(res.stdout)["items"]} == {
        (vm, nic, "stale") for vm, nic in guests}
    assert sorted(p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*.json")) == ["vm-9/nic-0.json"]
    assert netfw_objects({1, 2, 3}) == [] and netfw("gc").stdout.strip() == "nothing to collect"
    assert netfw("status").returncode == 0
