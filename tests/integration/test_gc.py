"""`netfw status` and `netfw gc` after a reboot, a lost state directory and a killed run (issue 10): gc removes stale
records and orphan objects (the tap back on its VN bridge first), never touches a link without netfw's alias, and
never deletes a namespace that holds a link netfw did not make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from netfw import api
from netfw.model import NicSpec

from .faults import Faults
from .lab import ping, sh

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
    killed = faults.run(["attach", "4", "0", "--bridge", "vnbr0"], at=3, mode="kill-after")
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
