"""A tap netfw does not hold (not inside its namespace) is never moved, enslaved, set up or down by detach, `netfw
one clean`, gc or an attach's rollback, whatever a record, journal or VM document says (issue 19, finding 2): netfw
puts back only what it took. What a killed run left half-done is still finished: test_kill.py."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfw import api
from netfw.model.spec import NicSpec

from .faults import Faults
from .lab import ping, sh, snapshot

NETFW = str(Path(sys.executable).parent / "netfw")
DOCS = Path(__file__).resolve().parents[1] / "data" / "one"


def netfw(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([NETFW, *argv], input=stdin, capture_output=True, text=True, timeout=120)


def wait_gone(name: str, timeout: float = 10) -> None:
    """A namespace is destroyed asynchronously: wait until its veth end has left the hypervisor namespace."""
    deadline = time.monotonic() + timeout
    while sh("ip", "link", "show", name, check=False).returncode == 0:
        assert time.monotonic() < deadline, f"{name} is still there"
        time.sleep(0.05)


def reboot(vm: int) -> None:
    """The host 'reboots' with its state directory kept: the VM's namespace, guest, tap and veth are gone."""
    for ns in (f"one-{vm}", f"g{vm}-0"):
        sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", f"one-{vm}-0", check=False)
    wait_gone(f"one-{vm}-0")
    wait_gone(f"one-{vm}-0-h")


def operator(tap: str, how: str) -> None:
    """What an operator (or the connection layer) did to the tap: nothing, set it down (to quarantine the VM), or
    took it off its bridge."""
    if how != "as is":
        sh("ip", "link", "set", tap, how)


@pytest.mark.parametrize("how", ["as is", "down", "nomaster"])
def test_gc_leaves_the_new_tap_of_a_vm_whose_record_is_stale(lab, state_dir, how):
    """A stale record of VM 5 on vnbrA (the host rebooted, the state was kept), and VM 5 running again with a new
    tap on vnbrB: gc put the running tap on vnbrA, into another network. Now gc forgets the record only."""
    lab.bridge("vnbrA")
    lab.bridge("vnbrB")
    lab.vm(5, 0, "10.9.5.5/24", bridge="vnbrA")
    api.attach(NicSpec(5, 0, "vnbrA"))
    reboot(5)
    g5, g6 = lab.vm(5, 0, "10.9.6.5/24", bridge="vnbrB"), lab.vm(6, 0, "10.9.6.6/24", bridge="vnbrB")
    operator("one-5-0", how)
    before = snapshot()
    res = netfw("gc", "--json")
    assert res.returncode == 0, res.stderr
    items = json.loads(res.stdout)["items"]
    assert [(i["vm"], i["nic"], i["health"], i["error"]) for i in items] == [(5, 0, "stale", None)]
    assert all("cut-over" not in line for line in items[0]["removed"]), items
    assert snapshot() == before  # the tap is where it was, as it was
    assert not (state_dir / "vm-5" / "nic-0.json").exists()
    if how == "as is":
        assert ping(g5, "10.9.6.6")
    assert netfw("status", "--json").returncode == 0


def test_gc_after_a_reboot_leaves_a_new_tap_that_a_killed_detach_s_journal_names(lab, state_dir, tmp_path):
    """A detach killed with the tap off its bridge (its journal says netfw had taken it), then a reboot: the new tap
    of VM 5, on no bridge yet, is not the one netfw took (its veth end is gone) and is not put on vnbrA."""
    lab.bridge("vnbrA")
    lab.bridge("vnbrB")
    lab.vm(5, 0, "10.9.5.5/24", bridge="vnbrA")
    faults = Faults(tmp_path / "faults")
    assert faults.run(["attach", "5", "0", "--bridge", "vnbrA"]).code == 0
    calls = faults.run(["detach", "5", "0"]).calls
    out = next(int(c.split()[0]) for c in calls if c.endswith("link set one-5-0 netns " + c.split()[-1]))
    assert faults.run(["attach", "5", "0", "--bridge", "vnbrA"]).code == 0
    killed = faults.run(["detach", "5", "0"], at=out, mode="kill-after")
    assert killed.code == -9
    assert json.loads((state_dir / "vm-5" / "nic-0.intent.json").read_text())["taken"] is True
    reboot(5)
    lab.vm(5, 0, "10.9.6.5/24", bridge="vnbrB")
    operator("one-5-0", "nomaster")  # libvirt made it, OpenNebula has not put it on its bridge yet
    before = snapshot()
    res = netfw("gc", "--json")
    assert res.returncode == 0, res.stderr
    assert snapshot() == before
    assert list(state_dir.rglob("*.json")) == []


@pytest.mark.parametrize("how", ["as is", "down", "nomaster"])
def test_clean_leaves_taps_netfw_never_held(lab, state_dir, how):
    """No record, and a document that puts NIC 0 on vnbr0 and NIC 1 on vnbr1 when the taps are the other way round:
    `netfw one clean` moved each tap onto the document's bridge. Now it exits 0 and changes nothing."""
    lab.bridge("vnbr0")
    lab.bridge("vnbr1")
    lab.vm(7, 0, "10.61.1.7/24", bridge="vnbr1")
    lab.vm(7, 1, "10.61.0.7/24", bridge="vnbr0")
    operator("one-7-0", how)
    state_dir.mkdir(mode=0o700)
    before = snapshot()
    doc = base64.b64encode((DOCS / "e2e_sg_changed.xml").read_bytes()).decode() + "\n"
    env = {**os.environ, "NETFW_STATE_DIR": str(state_dir)}
    res = subprocess.run([NETFW, "one", "clean", "host-a"], input=doc, capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert snapshot() == before
    assert list(state_dir.rglob("*.json")) == []


@pytest.mark.parametrize("how", ["down", "nomaster"])
def test_detach_and_gc_leave_an_operator_s_tap_as_it_is(lab, state_dir, how):
    """VM 1 attached and detached; then its tap is set down, or taken off its bridge: detach (told its bridge) and
    gc leave it so (detach set it up again, on the bridge given)."""
    lab.bridge("vnbr0")
    lab.vm(1, 0, "10.9.0.1/24")
    api.attach(NicSpec(1, 0, "vnbr0"))
    api.detach(1, 0)
    operator("one-1-0", how)
    before = snapshot()
    for argv in (["detach", "1", "0", "--bridge", "vnbr0"], ["gc"]):
        res = netfw(*argv)
        assert res.returncode == 0, res.stderr
        assert snapshot() == before, argv


def test_a_rolled_back_attach_leaves_a_tap_that_never_left_as_it_was(lab, state_dir, tmp_path):
    """An attach of a tap that is down on its bridge fails at the cut-over, before the tap moved: the rollback set it
    up (it 'put back' a tap it never took). Now the host is exactly as before."""
    lab.bridge("vnbr0")
    lab.vm(1, 0, "10.9.0.1/24")
    faults = Faults(tmp_path / "faults")
    argv = ["attach", "1", "0", "--bridge", "vnbr0"]
    calls = faults.run(argv).calls
    assert faults.run(["detach", "1", "0"]).code == 0
    cut_over = max(int(c.split()[0]) for c in calls if c.split()[1:] == ["ip", "-batch", "-"])
    operator("one-1-0", "down")
    before = snapshot()
    res = faults.run(argv, at=cut_over, mode="fail-before")
    assert res.code == 1, res.stderr
    assert snapshot() == before
    assert list(state_dir.rglob("*.json")) == []
