"""The CLI contract end to end: `netfw` processes (the venv's console script) against a lab in the sandbox.

Exit 0 with what was done (`--json` parsed and checked), 1 when a command failed for real in the middle (one ERROR
line with "(rolled back)", the sandbox exactly as before) or verify found drift, 2 on bad input (one line on stderr,
nothing touched); `update` keeps every setting it is not given; `netfw one ACTION` through scripts/opennebula/.

A command fails for real through a directory placed first on the netfw process's PATH whose `ip6tables-restore`
reads its input and exits 1 (nsenter finds it there too): the rules of the other families are loaded by then.

Addresses: 10.9.0.0/24 and 10.9.1.0/24 (netfw attach/update/detach/verify), 10.61.0.0/24 and 10.61.1.0/24
(`netfw one`); every peer is a namespace of this lab.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netfw import api, state
from netfw.rules import parse_rules

from .lab import ping, sh, snapshot

NETFW = Path(sys.executable).with_name("netfw")  # the venv's console script, whatever PATH holds
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "opennebula"
DATA = ROOT / "tests" / "data" / "one"

MAC1 = "02:00:0a:09:00:01"
#: Inbound echo in both families (so that both families' rules change between the two sets), everything outbound.
PING_IN = [{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ICMPV6", "RULE_TYPE": "inbound"},
           {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]
NOTHING_IN = [{"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]
OUTCOME_KEYS = {"action", "vm", "nic", "changed", "commands"}


# --- helpers ----------------------------------------------------------------------------------------------------------


def netfw(*args: str, stdin: str | None = None, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """One `netfw` process; its environment is the test's (NETFW_STATE_DIR from the state_dir fixture)."""
    env = dict(os.environ)
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    return subprocess.run([str(NETFW), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def errors(res: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in res.stderr, res.stderr
    return [line for line in res.stderr.splitlines() if line.startswith("ERROR:")]


def ok(*args: str, **kw) -> subprocess.CompletedProcess:
    res = netfw(*args, **kw)
    assert res.returncode == 0, f"netfw {' '.join(args)} exited {res.returncode}: {res.stderr}"
    assert errors(res) == []
    return res


def ok_json(*args: str, **kw) -> dict:
    """The --json outcome of a successful attach/update/detach, its shape checked."""
    out = json.loads(ok(*args, "--json", **kw).stdout)
    assert OUTCOME_KEYS <= set(out), out
    assert out["action"] == args[0] and out["vm"] == int(args[1]) and out["nic"] == int(args[2]), out
    assert all(isinstance(x, str) and x for x in out["changed"] + out["commands"]), out
    return out


def rolled_back(res: subprocess.CompletedProcess, failed: str = "ip6tables-restore") -> None:
    """Exit 1, nothing on stdout, one ERROR line that says the command that failed and that all was rolled back."""
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    lines = errors(res)
    assert len(lines) == 1, res.stderr
    assert "(rolled back)" in lines[0] and failed in lines[0], lines[0]


def refused(res: subprocess.CompletedProcess) -> str:
    """Exit 2 with exactly one line on stderr (an ERROR line) and nothing on stdout; returns that line."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), res.stderr
    return lines[0]


def records(state_dir: Path) -> dict[str, str]:
    """Every state record, by path, with its text."""
    return {str(p.relative_to(state_dir)): p.read_text() for p in sorted(state_dir.rglob("*.json"))}


def rules_file(tmp_path: Path, name: str, rules: list) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(rules))
    return str(path)


def ping_from(guest: str, source: str, address: str) -> bool:
    return sh("ip", "netns", "exec", guest, "ping", "-c", "1", "-W", "1", "-I", source, address,
              check=False).returncode == 0


@pytest.fixture
def failing(tmp_path) -> Path:
    """A PATH directory whose ip6tables-restore reads its input and fails (exit 1), as a real one would."""
    folder = tmp_path / "failing-bin"
    folder.mkdir()
    tool = folder / "ip6tables-restore"
    tool.write_text("#!/bin/sh\ncat >/dev/null\necho 'ip6tables-restore: line 1 failed (injected by the test)' >&2\n"
                    "exit 1\n")
    tool.chmod(0o755)
    return folder


def two_vms(lab) -> tuple[str, str]:
    """VM 1 NIC 0 (10.9.0.1, MAC1) and a peer VM 2 NIC 0 (10.9.0.2) on vnbr0, nothing attached."""
    lab.bridge("vnbr0")
    return lab.vm(1, 0, "10.9.0.1/24", mac=MAC1), lab.vm(2, 0, "10.9.0.2/24")


# --- exit 0 and --json ------------------------------------------------------------------------------------------------


def test_attach_verify_update_detach_exit_0_with_their_json(lab, state_dir, tmp_path):
    g1, g2 = two_vms(lab)
    before = snapshot()
    ping_in, nothing_in = rules_file(tmp_path, "ping", PING_IN), rules_file(tmp_path, "nothing", NOTHING_IN)

    dry = ok_json("attach", "1", "0", "--bridge", "vnbr0", "--rules", ping_in, "--dry-run")
    assert dry["changed"] == [] and dry["commands"]  # what would run, and nothing ran
    assert snapshot() == before and records(state_dir) == {}

    out = ok_json("attach", "1", "0", "--bridge", "vnbr0", "--rules", ping_in)
    assert out["changed"] and out["commands"] == []
    assert api.verify(1) == {0: []}
    assert list(records(state_dir)) == ["vm-1/nic-0.json"]
    assert ping(g2, "10.9.0.1") and ping(g1, "10.9.0.2")
    attached = snapshot()
    assert ok_json("attach", "1", "0", "--bridge", "vnbr0", "--rules", ping_in)["changed"] == []  # nothing to do
    assert snapshot() == attached

    assert json.loads(ok("verify", "1", "--json").stdout) == {"vm": 1, "ok": True,
                                                              "nics": {"0": {"ok": True, "drift": []}}}
    assert json.loads(ok("verify", "1", "0", "--json").stdout)["ok"] is True
    assert ok("verify", "1").stdout.splitlines() == ["VM 1 NIC 0: ok"]

    dry = ok_json("update", "1", "0", "--rules", nothing_in, "--dry-run")
    assert dry["changed"] == [] and dry["commands"]
    assert snapshot() == attached
    out = ok_json("update", "1", "0", "--rules", nothing_in)
    assert out["changed"] and out["commands"] == []
    assert not ping(g2, "10.9.0.1") and ping(g1, "10.9.0.2")  # in force: no inbound ICMP, replies still pass
    assert api.verify(1) == {0: []}
    assert ok_json("update", "1", "0", "--rules", nothing_in)["changed"] == []

    updated = snapshot()
    dry = ok_json("detach", "1", "0", "--dry-run")
    assert dry["changed"] == [] and dry["commands"]
    assert snapshot() == updated
    out = ok_json("detach", "1", "0")
    assert out["changed"] and out["commands"] == []
    assert snapshot() == before and records(state_dir) == {}
    assert ping(g2, "10.9.0.1")
    assert ok_json("detach", "1", "0")["changed"] == []  # a second time: nothing left, still exit 0


def test_plain_output_is_one_line_per_operation(lab, state_dir):
    two_vms(lab)
    for args in (("attach", "1", "0", "--bridge", "vnbr0"), ("update", "1", "0", "--router"), ("detach", "1", "0")):
        out = ok(*args).stdout.splitlines()
        assert len(out) == 1 and "VM 1 NIC 0" in out[0], out


# --- update: options not given keep what was last applied -------------------------------------------------------------


def test_update_with_one_option_keeps_every_other_recorded_setting(lab, state_dir, tmp_path):
    g1, g2 = two_vms(lab)
    ok("attach", "1", "0", "--bridge", "vnbr0", "--rules", rules_file(tmp_path, "ping", PING_IN), "--mac", MAC1,
       "--ip", "10.9.0.1", "--filter-mac-spoofing", "--filter-ip-spoofing")
    spec = state.load(state_dir, 1, 0).spec
    assert (spec.mac, spec.ips, spec.filter_mac, spec.filter_ip, spec.rules) == (
        MAC1, ("10.9.0.1",), True, True, parse_rules(PING_IN))

    def updated(*args: str, **changes) -> None:
        """`netfw update 1 0 ARGS` changes exactly `changes` in the record, and the live rules are that record."""
        nonlocal spec
        ok("update", "1", "0", *args)
        spec = dataclasses.replace(spec, **changes)
        assert state.load(state_dir, 1, 0).spec == spec
        assert api.verify(1, 0, expected=spec) == {0: []}  # the live rules, compared with the expected spec

    # --ip only: the address changes; MAC, filters and rules stay
    sh("ip", "-n", g1, "addr", "add", "10.9.0.5/24", "dev", "eth0")
    updated("--ip", "10.9.0.5", ips=("10.9.0.5",))
    assert not ping_from(g1, "10.9.0.1", "10.9.0.2")  # the old address is now spoofing: the IP filter stayed on
    assert ping_from(g1, "10.9.0.5", "10.9.0.2")
    assert ping(g2, "10.9.0.5")  # inbound ICMP: the rules stayed

    # --rules only: no inbound ICMP any more; the address and the filters stay
    updated("--rules", rules_file(tmp_path, "nothing", NOTHING_IN), rules=parse_rules(NOTHING_IN))
    assert not ping(g2, "10.9.0.5")
    assert ping_from(g1, "10.9.0.5", "10.9.0.2") and not ping_from(g1, "10.9.0.1", "10.9.0.2")

    # --mac only: the guest's own MAC is now a forged one until it takes the new one; the rest stays
    new_mac = "02:00:0a:09:00:99"
    updated("--mac", new_mac, mac=new_mac)
    assert not ping_from(g1, "10.9.0.5", "10.9.0.2")
    sh("ip", "-n", g1, "link", "set", "eth0", "address", new_mac)
    sh("ip", "-n", g2, "neigh", "flush", "all")
    assert ping_from(g1, "10.9.0.5", "10.9.0.2") and not ping_from(g1, "10.9.0.1", "10.9.0.2")
    assert not ping(g2, "10.9.0.5")

    # an option given with the value it has: nothing to change, exit 0
    before = snapshot()
    ok("update", "1", "0", "--mac", new_mac)
    assert snapshot() == before and state.load(state_dir, 1, 0).spec == spec


# --- exit 2: bad input, one line, nothing touched ---------------------------------------------------------------------

BAD_RULE = [{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "90:80"}]

BAD_INPUT = {
    "missing bridge": ["attach", "3", "0", "--bridge", "nobr0"],
    "tap on another bridge": ["attach", "3", "0", "--bridge", "vnbr0"],
    "missing tap": ["attach", "4", "0", "--bridge", "vnbr0"],
    "bad rule": ["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{bad}"],
    "empty rules name": ["attach", "3", "0", "--bridge", "vnbr1", "--rules", ""],
    "negative VM id": ["attach", "--bridge", "vnbr1", "--", "-1", "0"],
    "VM id not a number": ["attach", "x", "0", "--bridge", "vnbr1"],
    "unknown option": ["attach", "3", "0", "--bridge", "vnbr1", "--no-such-option"],
    "address with a line break": ["attach", "3", "0", "--bridge", "vnbr1", "--filter-ip-spoofing",
                                  "--ip", "10.9.1.3\n-j ACCEPT"],
    "unknown backend": ["--backend", "bogus", "attach", "3", "0", "--bridge", "vnbr1"],
    "document larger than the cap": ["attach", "3", "0", "--vm-xml", "/dev/zero"],
    "update with nothing to update": ["update", "1", "0"],
    "update with a bad MAC": ["update", "1", "0", "--mac", "02:00:0a:09:00:zz"],
    "update with a bad rule": ["update", "1", "0", "--rules", "{bad}"],
    "update of a NIC never attached": ["update", "5", "0", "--rules", "{good}"],
    "detach with a bad bridge name": ["detach", "1", "0", "--bridge", "a/b"],
    "state directory that cannot be": ["detach", "1", "0", "--state-dir", "/proc/x"],  # was a traceback (issue 13)
    "verify of a VM with no record": ["verify", "9"],
    "verify --vm-xml without NIC": ["verify", "1", "--vm-xml", "{good}"],
    "one with an empty document": ["one", "post", "one-3", "host-a"],
    "one with an unknown action": ["one", "reboot"],
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(lab, state_dir, tmp_path, case):
    """VM 1 NIC 0 attached on vnbr0; VM 3's tap one-3-0 on vnbr1, not attached."""
    two_vms(lab)
    lab.bridge("vnbr1")
    lab.vm(3, 0, "10.9.1.3/24", bridge="vnbr1")
    ok("attach", "1", "0", "--bridge", "vnbr0", "--mac", MAC1, "--ip", "10.9.0.1", "--filter-ip-spoofing")
    files = {"bad": rules_file(tmp_path, "bad", BAD_RULE), "good": rules_file(tmp_path, "good", PING_IN)}
    args = [a.format(**files) if a.startswith("{") else a for a in BAD_INPUT[case]]
    before, recorded = snapshot(), records(state_dir)
    line = refused(netfw(*args, stdin=""))
    assert snapshot() == before and records(state_dir) == recorded, line
    assert api.verify(1) == {0: []}


# --- exit 1: a command fails for real in the middle, everything is rolled back ----------------------------------------


def test_attach_failing_in_the_middle_exits_1_rolled_back_and_leaves_nothing(lab, state_dir, failing, tmp_path):
    g1, g2 = two_vms(lab)
    before = snapshot()
    for extra in ([], ["--json"], ["--mac", MAC1, "--ip", "10.9.0.1", "--filter-mac-spoofing", "--filter-ip-spoofing",
                               "--rules", rules_file(tmp_path, "ping", PING_IN)]):
        rolled_back(netfw("attach", "1", "0", "--bridge", "vnbr0", *extra, path_first=failing))
        assert snapshot() == before and records(state_dir) == {}
    assert ping(g1, "10.9.0.2") and ping(g2, "10.9.0.1")  # the VM is on its VN bridge as before
    ok("attach", "1", "0", "--bridge", "vnbr0")  # the same without the failing tool
    assert api.verify(1) == {0: []}


def test_update_failing_in_the_middle_exits_1_and_keeps_the_old_rules(lab, state_dir, failing, tmp_path):
    g1, g2 = two_vms(lab)
    ok("attach", "1", "0", "--bridge", "vnbr0", "--rules", rules_file(tmp_path, "ping", PING_IN))
    attached, recorded = snapshot(), records(state_dir)
    nothing_in = rules_file(tmp_path, "nothing", NOTHING_IN)
    for args in (["--rules", nothing_in], ["--rules", nothing_in, "--json"],
                 ["--mac", MAC1, "--ip", "10.9.0.1", "--filter-mac-spoofing", "--filter-ip-spoofing"]):
        rolled_back(netfw("update", "1", "0", *args, path_first=failing))
        assert snapshot() == attached and records(state_dir) == recorded
    assert ping(g2, "10.9.0.1")  # the old rules, in force
    assert api.verify(1) == {0: []}


def test_detach_of_one_nic_of_two_failing_in_the_middle_exits_1_and_keeps_both(lab, state_dir, failing):
    g1, g2 = two_vms(lab)
    lab.bridge("vnbr1")
    g11, g3 = lab.vm(1, 1, "10.9.1.1/24", bridge="vnbr1"), lab.vm(3, 0, "10.9.1.3/24", bridge="vnbr1")
    ok("attach", "1", "0", "--bridge", "vnbr0")
    ok("attach", "1", "1", "--bridge", "vnbr1")
    attached, recorded = snapshot(), records(state_dir)
    for extra in ([], ["--json"]):
        rolled_back(netfw("detach", "1", "0", *extra, path_first=failing))
        assert snapshot() == attached and records(state_dir) == recorded
    assert api.verify(1) == {0: [], 1: []}
    assert ping(g1, "10.9.0.2") and ping(g11, "10.9.1.3")
    ok("detach", "1", "0")
    ok("detach", "1", "1")
    assert records(state_dir) == {}


# --- verify: exit 1 with the drift ------------------------------------------------------------------------------------


def test_verify_exits_1_with_the_drift_after_tampering_and_0_after_repair(lab, state_dir):
    g1, _ = two_vms(lab)
    ok("attach", "1", "0", "--bridge", "vnbr0")
    assert ping(g1, "10.9.0.2")
    sh("nsenter", "--net=/run/netns/one-1", "iptables", "-F", "FORWARD")  # the NIC's jumps are gone
    assert not ping(g1, "10.9.0.2")  # FORWARD policy DROP: dropped, never let through

    res = netfw("verify", "1")
    assert res.returncode == 1 and errors(res) == []
    lines = res.stdout.splitlines()
    assert lines[0].startswith("VM 1 NIC 0: ") and "problem" in lines[0] and len(lines) >= 2
    assert all(line.startswith("  - ") for line in lines[1:])
    for args in (["1"], ["1", "0"]):
        res = netfw("verify", *args, "--json")
        assert res.returncode == 1
        report = json.loads(res.stdout)
        assert report["vm"] == 1 and report["ok"] is False and report["nics"]["0"]["ok"] is False
        assert [f"  - {d}" for d in report["nics"]["0"]["drift"]] == lines[1:]

    ok("attach", "1", "0", "--bridge", "vnbr0")  # attach repairs
    assert json.loads(ok("verify", "1", "--json").stdout)["ok"] is True
    assert ping(g1, "10.9.0.2")


# --- netfw one ACTION through scripts/opennebula/ ---------------------------------------------------------------------


def driver(action: str, *args: str, doc: str, state_dir: Path, path: str | None = None,
           path_first: Path | None = None) -> subprocess.CompletedProcess:
    """scripts/opennebula/ACTION ARGS with the document's base64 on stdin, as OpenNebula runs it (NETFW_SUDO=0)."""
    xml = (DATA / doc).read_bytes() if not doc.startswith("<") else doc.encode()
    env = {**os.environ, "NETFW_SUDO": "0", "NETFW_BIN": str(NETFW), "NETFW_CONF": "/nonexistent",
           "NETFW_STATE_DIR": str(state_dir)}
    if path is not None:
        env["PATH"] = path
    if path_first is not None:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    return subprocess.run([str(SCRIPTS / action), *args], input=base64.b64encode(xml).decode() + "\n",
                          capture_output=True, text=True, env=env, timeout=120)


def one_error(res: subprocess.CompletedProcess, code: int) -> str:
    assert res.returncode == code, res.stderr
    lines = errors(res)
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture
def vm7(lab, state_dir):
    """VM 7 of e2e_two_nics.xml (NIC 0 on vnbr0, NIC 1 on vnbr1) and a peer on each bridge; {name: guest}."""
    state_dir.mkdir(mode=0o700)  # `netfw one --state-dir` uses only a directory that exists
    lab.bridge("vnbr0")
    lab.bridge("vnbr1")
    return {"nic0": lab.vm(7, 0, "10.61.0.7/24", mac="02:00:0a:3d:00:07"),
            "nic1": lab.vm(7, 1, "10.61.1.7/24", bridge="vnbr1", mac="02:00:0a:3d:01:07"),
            "p0": lab.vm(20, 0, "10.61.0.2/24"), "p1": lab.vm(21, 0, "10.61.1.2/24", bridge="vnbr1")}


def test_one_actions_exit_0_and_their_effect(vm7, state_dir):
    g, before = vm7, snapshot()
    assert ping(g["p1"], "10.61.1.7")  # no firewall yet
    res = driver("pre", doc="e2e_two_nics.xml", state_dir=state_dir)
    assert res.returncode == 0 and errors(res) == [], res.stderr
    assert snapshot() == before
    for action, args, doc, echo in (("post", ("one-7", "host-a"), "e2e_two_nics.xml", False),
                                    ("update_sg", ("one-7",), "e2e_sg_changed.xml", True),
                                    ("update_nic", ("one-7", "1"), "e2e_sg_changed.xml", True)):
        res = driver(action, *args, doc=doc, state_dir=state_dir)
        assert res.returncode == 0 and errors(res) == [], res.stderr
        assert api.verify(7) == {0: [], 1: []}
        assert ping(g["p1"], "10.61.1.7") == echo  # SG 101 allows ICMP echo after update_sg, not after post
        assert ping(g["p0"], "10.61.0.7")  # SG 100 allows it throughout
    res = driver("clean", "host-a", doc="e2e_sg_changed.xml", state_dir=state_dir)
    assert res.returncode == 0 and errors(res) == [], res.stderr
    assert snapshot() == before and records(state_dir) == {}


def test_one_post_and_update_sg_failing_in_the_middle_exit_1_rolled_back(vm7, state_dir, failing):
    g, before = vm7, snapshot()
    res = driver("post", "one-7", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir, path_first=failing)
    assert "(rolled back)" in one_error(res, 1) and "ip6tables-restore" in one_error(res, 1)
    assert snapshot() == before and records(state_dir) == {}

    assert driver("post", "one-7", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir).returncode == 0
    attached, recorded = snapshot(), records(state_dir)
    assert not ping(g["p1"], "10.61.1.7")  # SG 101 as posted: no ICMP
    res = driver("update_sg", "one-7", doc="e2e_sg_changed.xml", state_dir=state_dir, path_first=failing)
    assert "(rolled back)" in one_error(res, 1)
    assert snapshot() == attached and records(state_dir) == recorded
    assert not ping(g["p1"], "10.61.1.7")  # still the old rules
    assert api.verify(7) == {0: [], 1: []}


def test_one_clean_failing_on_a_nic_exits_1_and_leaves_it_filtered(vm7, state_dir, failing):
    """clean goes on with the other NICs after a failure and reports it; the NIC that failed keeps its firewall."""
    g = vm7
    assert driver("post", "one-7", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir).returncode == 0
    res = driver("clean", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir, path_first=failing)
    assert "NIC 0" in one_error(res, 1)
    assert api.verify(7, 0) == {0: []}  # still filtered, as before the clean
    assert ping(g["p0"], "10.61.0.7")  # SG 100 allows echo from 10.61.0.0/24
    res = driver("clean", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir)
    assert res.returncode == 0 and errors(res) == [], res.stderr
    assert records(state_dir) == {} and "one-7" not in snapshot()


@pytest.mark.parametrize("action, args", [("pre", ()), ("post", ("one-7", "host-a")), ("clean", ("host-a",)),
                                          ("update_sg", ("one-7",)), ("update_nic", ("one-7", "0"))])
def test_one_bad_document_exits_2_and_touches_nothing(vm7, state_dir, action, args):
    assert driver("post", "one-7", "host-a", doc="e2e_two_nics.xml", state_dir=state_dir).returncode == 0
    before, recorded = snapshot(), records(state_dir)
    bad = (DATA / "e2e_two_nics.xml").read_text().replace("<ID>7</ID>", "<ID>seven</ID>")
    assert "VM document" in one_error(driver(action, *args, doc=bad, state_dir=state_dir), 2)
    assert snapshot() == before and records(state_dir) == recorded


def test_one_update_nic_with_a_bad_vnet_id_exits_2(vm7, state_dir):
    before = snapshot()
    assert "VNET_ID" in one_error(driver("update_nic", "one-7", "x", doc="e2e_two_nics.xml", state_dir=state_dir), 2)
    assert snapshot() == before


def test_one_pre_on_a_host_without_a_tool_exits_2(vm7, state_dir, tmp_path):
    """A PATH holding every tool netfw checks for but ebtables-restore (and `id`, which the script runs)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in (*api.TOOLS, "id"):
        if tool != "ebtables-restore":
            where = shutil.which(tool)
            assert where, f"{tool} is not installed"
            (folder / tool).symlink_to(where)
    res = driver("pre", doc="e2e_two_nics.xml", state_dir=state_dir, path=str(folder))
    assert one_error(res, 2).startswith("ERROR: missing tools: ebtables-restore")
