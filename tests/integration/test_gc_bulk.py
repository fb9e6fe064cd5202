"""gc's bulk teardown (netfw/observe/gc_bulk.py, issue 22): the namespaces of VMs whose every tap is gone go together,
in one `ip -batch`, and only they; a namespace holding a link netfw did not make is never part of it; a gc killed or
failed at that batch leaves what the next gc (or the same one) finishes, and nothing else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netfw import api
from netfw.kernel import probe
from netfw.model.spec import NicSpec

from .faults import PROGRAMS, Faults
from .lab import eventually, links, netns_list, sh

NETFW = str(Path(sys.executable).parent / "netfw")


def netfw(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([NETFW, *argv], capture_output=True, text=True)


def ended(lab, vms: list[tuple[int, int]], subnet: int) -> None:
    """Attach the NICs vms, then end their VMs without OpenNebula's clean: QEMU's exit takes the taps."""
    guests = {(vm, nic): lab.vm(vm, nic, f"10.{subnet}.{nic}.{vm}/24") for vm, nic in vms}
    for vm, nic in vms:
        api.attach(NicSpec(vm, nic, "vnbr0"))
    for guest in guests.values():
        sh("ip", "netns", "del", guest)
    for vm, nic in vms:
        eventually(lambda: f"one-{vm}-{nic}" not in probe.links(f"one-{vm}"), f"VM {vm} NIC {nic}'s tap gone")


def left_of(vms: set[int]) -> list[str]:
    """netfw's namespaces and hypervisor-side links of the VMs vms."""
    found = [ns for ns in netns_list() if ns.startswith("one-") and int(ns.split("-")[1]) in vms]
    return found + [n for n, link in probe.links(None).items() if (probe.alias_of(link) or (None,))[0] in vms]


def records(state_dir: Path) -> list[str]:
    return sorted(p.relative_to(state_dir).as_posix() for p in state_dir.rglob("*.json"))


@pytest.fixture
def alive(lab):
    lab.bridge()
    guest = lab.vm(9, 0, "10.23.0.99/24")
    api.attach(NicSpec(9, 0, "vnbr0"))
    return guest


def test_vms_whose_taps_are_gone_go_in_one_batch_and_a_foreign_link_keeps_its_namespace(lab, alive, state_dir):
    host_before = [link["ifname"] for link in links(None)]
    ended(lab, [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)], 23)
    sh("ip", "-n", "one-4", "link", "add", "x4", "type", "veth", "peer", "name", "x5")  # not netfw's: one-4 stays

    res = netfw("gc", "--json")
    assert res.returncode == 0, res.stderr
    assert "gc: 3 VMs whose taps are gone, in bulk: one-1 one-2 one-3" in res.stderr
    items = {(i["vm"], i["nic"]): i for i in json.loads(res.stdout)["items"]}
    assert list(items) == [(1, 0), (1, 1), (2, 0), (3, 0), (4, 0)]
    assert all(i["health"] == "tap gone" and i["error"] is None and i["removed"] for i in items.values())
    assert "state record" in " ".join(items[(1, 1)]["removed"])
    assert left_of({1, 2, 3}) == [] and records(state_dir) == ["vm-9/nic-0.json"]
    assert "x4" in probe.links("one-4") and left_of({4}) == ["one-4"]  # VM 4 alone: its NIC, not its namespace
    assert [link["ifname"] for link in links(None)] == host_before
    assert api.verify(9) == {0: []}  # the VM that runs is untouched
    assert netfw("gc").stdout.strip() != "nothing to collect"  # one-4 is left, with why
    sh("ip", "netns", "del", "one-4")


def _numbered(calls: list[str]) -> dict[int, list[str]]:
    """{call number: argv} from a Faults log (a call's argument may span lines: the bulk reader's script)."""
    return {int(words[0]): words[1:] for c in calls if (words := c.split()) and words[0].isdigit()
            and len(words) > 1 and words[1] in PROGRAMS}


def _batch_call(calls: list[str]) -> int:
    """The number of gc's call of `ip -force -batch -` that deletes the namespaces."""
    found = [n for n, argv in _numbered(calls).items() if argv == ["ip", "-force", "-batch", "-"]]
    assert len(found) == 1, calls
    return found[0]


@pytest.mark.parametrize("mode", ["kill-before", "kill-after", "fail-before"])
def test_a_gc_killed_or_failed_at_its_batch_leaves_what_the_next_gc_finishes(lab, alive, state_dir, tmp_path, mode):
    faults = Faults(tmp_path / "faults")
    host_before = [link["ifname"] for link in links(None)]
    ended(lab, [(1, 0), (1, 1), (2, 0)], 24)
    first = faults.run(["gc"])  # the same shape twice: the batch is the same call of each run
    assert first.code == 0 and left_of({1, 2}) == [], first.stderr
    at = _batch_call(first.calls)

    ended(lab, [(5, 0), (5, 1), (6, 0)], 25)
    run = faults.run(["gc", "--json"], at=at, mode=mode)
    assert _numbered(run.calls)[at] == ["ip", "-force", "-batch", "-"], run.calls
    if mode == "fail-before":  # the batch did nothing: each NIC is detached alone, in the same run
        assert run.code == 0, run.stderr
        assert "each NIC detached alone: 5 6" in run.stderr
        assert {(i["vm"], i["nic"]) for i in json.loads(run.stdout)["items"]} == {(5, 0), (5, 1), (6, 0)}
    else:
        assert run.code == -9
        assert {"vm-5/nic-0.json", "vm-5/nic-1.json", "vm-6/nic-0.json"} <= set(records(state_dir))
        if mode == "kill-after":  # the kernel destroys the namespaces' veth pairs a moment later, whoever waits
            eventually(lambda: left_of({5, 6}) == [], "the deleted namespaces' veth ends gone")
        else:
            assert {"one-5", "one-6", "one-5-0", "one-5-1", "one-6-0"} == set(left_of({5, 6}))  # nothing deleted
        res = netfw("gc", "--json")
        assert res.returncode == 0, res.stderr
        items = json.loads(res.stdout)["items"]
        assert {(i["vm"], i["nic"]) for i in items} == {(5, 0), (5, 1), (6, 0)}
        # before the batch: the taps still gone; after it: the records, nothing in the kernel
        assert {(i["health"], i["error"]) for i in items} == {("tap gone" if mode == "kill-before" else "stale", None)}
    assert left_of({5, 6}) == [] and records(state_dir) == ["vm-9/nic-0.json"]
    assert [link["ifname"] for link in links(None)] == host_before
    assert api.verify(9) == {0: []}  # the VM that runs is untouched
    assert netfw("gc").stdout.strip() == "nothing to collect"
