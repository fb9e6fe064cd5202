"""`netfw status` and `netfw gc` after a reboot, a lost state directory and a killed run (issue 10): gc removes stale
records and orphan objects (the tap back on its VN bridge first), never touches a link without netfw's alias, and
never deletes a namespace that holds a link netfw did not make."""

from __future__ import annotations

import json
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


def netfw(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([NETFW, *argv], capture_output=True, text=True)


def healths() -> dict:
    res = netfw("status", "--json")
    return {(e["vm"], e["nic"]): e["health"] for e in json.loads(res.stdout)["nics"]}


def test_gc_after_a_reboot_a_lost_record_and_a_killed_attach(lab, state_dir, tmp_path):
    lab.bridge()
    g1, g2, g3 = lab.vm(1, 0, "10.9.0.1/24"), lab.vm(2, 0, "10.9.0.2/24"), lab.vm(3, 0, "10.9.0.3/24")
    for vm in (1, 2, 3):
        api.attach(NicSpec(vm, 0, "vnbr0"))
    lab.vm(4, 0, "10.9.0.4/24")
    assert netfw("status").returncode == 0

    # VM 1 "rebooted away": its guest, tap, veth and namespace are gone; its record stays (stale)
    sh("ip", "netns", "del", "g1-0")
    sh("ip", "netns", "del", "one-1")
    # VM 2's record is lost: its objects stay (orphan), its tap inside one-2
    (state_dir / "vm-2" / "nic-0.json").unlink()
    # VM 4: an attach killed right after its namespace was made (a journal, an empty namespace)
    faults = Faults(tmp_path / "faults")
    killed = faults.run(["attach", "4", "0", "--bridge", "vnbr0"], at=2, mode="kill-after")  # the 2nd: netns add
    assert killed.code == -9 and "netns add one-4" in killed.calls[-1]
    # a namespace named like netfw's that holds a link netfw did not make
    sh("ip", "netns", "add", "one-5")
    sh("ip", "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1", "netns", "one-5")
    assert healths() == {(1, 0): "stale", (2, 0): "orphan", (3, 0): "attached", (4, 0): "stale", (4, None): "orphan",
                         (5, None): "orphan"}
    assert netfw("status").returncode == 1

    dry = netfw("gc", "--dry-run", "--json")
    assert dry.returncode == 1, dry.stderr  # one thing will have to be left (one-5)
    assert healths()[(2, 0)] == "orphan"  # a dry run removes nothing
    res = netfw("gc", "--json")
    assert res.returncode == 1, res.stderr
    items = {(i["vm"], i["nic"]): i for i in json.loads(res.stdout)["items"]}
    assert set(items) == {(1, 0), (2, 0), (4, 0), (5, None)}
    assert items[(5, None)]["error"] and "foreign1" in items[(5, None)]["error"]
    assert all(items[k]["error"] is None for k in ((1, 0), (2, 0), (4, 0)))

    assert healths() == {(3, 0): "attached", (5, None): "orphan"}  # VM 3 untouched, one-5 left alone
    assert sorted(p.name for p in state_dir.rglob("*.json")) == ["nic-0.json"]  # VM 3's record only
    assert "one-5" in sh("ip", "netns", "list").stdout and "foreign1" in sh("ip", "-n", "one-5", "link").stdout
    tap = json.loads(sh("ip", "-j", "link", "show", "one-2-0").stdout)[0]
    assert tap["master"] == "vnbr0" and "ifalias" not in tap  # VM 2's tap is back on its bridge
    assert ping(g2, "10.9.0.3") and ping(g3, "10.9.0.2")
    assert netfw("gc").returncode == 1 and "nothing" not in netfw("gc").stdout  # one-5 is still reported
    sh("ip", "netns", "del", "one-5")
    assert netfw("gc").stdout.strip() == "nothing to collect" and netfw("status").returncode == 0


def wait_blocked_or_done(proc: subprocess.Popen, timeout: float = 60) -> bool:
    """Wait until proc waits for a lock (True: a `->` line of /proc/locks names its pid) or has ended (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and str(proc.pid) in fields:
                return True
        time.sleep(0.05)
    raise AssertionError("gc neither waited for a lock nor ended")


@pytest.fixture
def racing(lab, state_dir, tmp_path):
    """VM 3's NIC (the one raced) and VM 4's, attached throughout (gc must leave it as well)."""
    lab.bridge()
    g3, g4 = lab.vm(3, 0, "10.9.0.3/24"), lab.vm(4, 0, "10.9.0.4/24")
    api.attach(NicSpec(4, 0, "vnbr0"))
    deny = tmp_path / "deny.json"
    deny.write_text("[]")
    faults = Faults(tmp_path / "faults")
    detached = snapshot()
    return {"faults": faults, "g3": g3, "g4": g4, "deny": str(deny), "state": state_dir, "detached": detached}


def files(state_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*.json"))


def gc_during(r: dict, argv: list[str], at: int) -> bool:
    """netfw ARGV paused before its command number `at`; meanwhile `netfw gc` starts and waits for the VM's lock (or
    finds nothing to do); then ARGV goes on. Both exit 0, and gc removed nothing of VM 3. True when gc waited."""
    where = f"gc during {' '.join(argv[:3])} paused before command {at}"
    op = r["faults"].start(argv, at=at, mode="pause-before")
    assert op.paused(), where
    gc = subprocess.Popen([NETFW, "gc", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waited = wait_blocked_or_done(gc)
    finally:
        op.resume()
    res = op.wait()
    out, err = gc.communicate(timeout=120)
    assert res.code == 0, f"{where}: {res.stderr}"
    assert gc.returncode == 0, f"{where}: {out} {err}"
    assert [i for i in json.loads(out)["items"] if i["vm"] == 3] == [], f"{where}: {out}"
    return waited


def planning(calls: list[str]) -> int:
    """How many probes (`-j`) a run starts before its first change, i.e. before it writes its journal: a gc paused
    there finds the NIC as it was (an attached NIC is no suspect, a detached one is not known)."""
    return next(i for i, call in enumerate(calls) if "-j" not in call.split())


def assert_filtering(r: dict, where: str) -> None:
    res = netfw("verify", "3", "--json")
    assert res.returncode == 0, f"{where}: {res.stdout}"
    record = json.loads((r["state"] / "vm-3" / "nic-0.json").read_text())
    assert record["spec"]["rules"] == [], where  # exactly the deny-all rules asked for
    assert files(r["state"]) == ["vm-3/nic-0.json", "vm-4/nic-0.json"], where
    assert not ping(r["g4"], "10.9.0.3"), where


def assert_detached(r: dict, where: str) -> None:
    assert snapshot() == r["detached"], f"{where}: not exactly detached"
    assert files(r["state"]) == ["vm-4/nic-0.json"], where


def test_gc_during_an_attach_an_update_and_a_detach_removes_nothing_of_them(racing):
    """Issue 19, finding 1: gc read journals and health without the VM's lock, and removed a firewall being attached
    (deny all: the VM ended on its VN bridge unfiltered). gc now decides under the VM's lock, at every point of the
    run it races with: the NIC ends attached and filtering, or detached when that was the operation."""
    r, f = racing, racing["faults"]
    attach = ["attach", "3", "0", "--bridge", "vnbr0", "--rules", r["deny"]]
    update = ["update", "3", "0", "--rules", r["deny"]]
    allow = ["update", "3", "0", "--rules", "-"]
    detach = ["detach", "3", "0"]

    calls = f.run(attach).calls
    assert_filtering(r, "a clean attach")
    assert f.run(detach).code == 0
    for n in range(1, len(calls) + 1):
        assert gc_during(r, attach, n) or n <= planning(calls)  # from the journal on, gc waits for the attach
        assert_filtering(r, f"attach paused before command {n}")
        assert f.run(detach).code == 0
    assert f.run(attach).code == 0
    assert f.run(allow, stdin='[{"PROTOCOL": "ALL", "RULE_TYPE": "inbound"}]').code == 0
    assert ping(r["g4"], "10.9.0.3")
    total = len(f.run(update).calls)
    for n in range(1, total + 1):
        assert f.run(allow, stdin='[{"PROTOCOL": "ALL", "RULE_TYPE": "inbound"}]').code == 0
        assert gc_during(r, update, n)  # the update holds the lock from before its first command
        assert_filtering(r, f"update paused before command {n}")
    calls = f.run(detach).calls
    for n in range(1, len(calls) + 1):
        assert f.run(attach).code == 0
        assert gc_during(r, detach, n) or n <= planning(calls)
        assert_detached(r, f"detach paused before command {n}")
    assert ping(r["g3"], "10.9.0.4")
