"""The CLI contract end to end: `netfw` processes (the venv's console script) against a lab in the sandbox.

Exit 0 with what was done (`--json` parsed and checked), 1 when a command failed for real in the middle (one ERROR
line with "(rolled back)", the sandbox exactly as before) or verify found drift, 2 on bad input (one line on stderr,
nothing touched); `update` keeps every setting it is not given; `netfw one ACTION` through scripts/opennebula/.

A command fails for real through a directory placed first on the netfw process's PATH whose `ip6tables-restore`
reads its input and exits 1 (nsenter finds it there too): the rules of the other families are loaded by then.

Addresses: 10.9.0.0/24, 10.9.1.0/24 and 10.9.2.0/24 (netfw attach/update/detach/verify), 10.61.0.0/24 and 10.61.1.0/24
(`netfw one`); every peer is a namespace of this lab.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netfw import api
from netfw import state
from netfw.model.rules import parse_rules

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
    # That ping left g1's ARP entry for 10.9.0.2 unresolved, its retries (every second) still sent from 10.9.0.1 until
    # the next ping queues a packet: one due just before it is dropped, and the next comes as that ping's 1-s wait
    # ends (measured: 3 of 25 runs failed so, 0 of 40 after a flush). A fresh entry asks from 10.9.0.5 at once.
    sh("ip", "-n", g1, "neigh", "flush", "all")
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
TCP_IN = {"PROTOCOL": "TCP", "RULE_TYPE": "inbound"}
#: The rules files the cases name as {key} (JSON text, or raw bytes); tests/data/one/bad's documents are named too.
BAD_FILES: dict[str, str | bytes] = {
    "bad": json.dumps(BAD_RULE),
    "good": json.dumps(PING_IN),
    "object": json.dumps(TCP_IN),  # one rule, not a list of them
    "protocol": json.dumps([{**TCP_IN, "PROTOCOL": "GRE"}]),
    "twice": '[{"PROTOCOL": "TCP", "protocol": "UDP", "RULE_TYPE": "inbound"}]',  # keys are case-insensitive
    "range break": json.dumps([{**TCP_IN, "RANGE": "22\n-j ACCEPT"}]),
    "nan": '[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": NaN}]',  # Python's json reads NaN
    "deep": "[" * 200_000 + "]" * 200_000,  # deeper than Python's recursion limit
    "latin1": '[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "DESCRIPTION": "caf\xe9"}]'.encode("latin-1"),
    "past ipv4": json.dumps([{**TCP_IN, "IP": "10.0.0.1", "SIZE": str(2**33)}]),
}

#: VM 42 NIC 0 on onebr0 (its tap one-42-0 is there): this document attaches (see the test after the table); each
#: bad variant differs from it by one defect only.
DOC42 = """{prolog}<VM>
  <ID>42</ID>
  <TEMPLATE>
    <NIC>
      <BRIDGE>{bridge}</BRIDGE>
      <MAC>02:00:0a:09:02:2a</MAC>
      <NIC_ID>0</NIC_ID>
      <SECURITY_GROUPS>100</SECURITY_GROUPS>
      <TARGET>one-42-0</TARGET>
      <VN_MAD>fw</VN_MAD>
    </NIC>
  </TEMPLATE>
</VM>
"""


def doc42(prolog: str = "", bridge: str = "onebr0") -> str:
    return DOC42.format(prolog=prolog, bridge=bridge)


#: Standard input of the cases that read it ('-'); every other case gets an empty one.
BAD_STDIN = {
    "rules on stdin that are not JSON": "[{",
    "document declaring an internal entity": doc42('<!DOCTYPE VM [<!ENTITY br "onebr0">]>\n', "&br;"),
    "document with an external parameter entity": doc42(
        '<!DOCTYPE VM [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>\n'),
    "document with a character reference line break": doc42(bridge="onebr0&#10;link del lo"),
    "document with two root elements": doc42() + "<VM/>",
    "document of another VM": doc42(),
    "--vm-xml with --rules": doc42(),
}

#: case -> (argv, a part of the one line it must be refused with: the reason, not some other failure)
BAD_INPUT = {
    # what the lab holds
    "missing bridge": (["attach", "3", "0", "--bridge", "nobr0"], "VN bridge nobr0 does not exist"),
    "tap on another bridge": (["attach", "3", "0", "--bridge", "vnbr0"], "is on vnbr1, not on the VN bridge vnbr0"),
    "missing tap": (["attach", "4", "0", "--bridge", "vnbr0"], "tap one-4-0 does not exist"),
    "tap that is the VN bridge itself": (["attach", "3", "0", "--bridge", "vnbr1", "--tap", "vnbr1"],
                                         "tap vnbr1 is on no bridge"),
    # rules
    "bad rule": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{bad}"], "low port above its high port"),
    "empty rules name": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", ""], "an empty name"),
    "rules: an object, not a list": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{object}"],
                                     "expected a JSON list"),
    "rules: unknown protocol": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{protocol}"], "'GRE'"),
    "rules: a key twice in another case": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{twice}"],
                                           "given more than once"),
    "rules: a line break in RANGE": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{range break}"],
                                     "is not a port or a range"),
    "rules: NaN for a port": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{nan}"],
                              "nan is not a string or an integer"),
    "rules: nested 200,000 deep": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{deep}"],
                                   "nested too deeply"),
    "rules: not UTF-8": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{latin1}"], "not UTF-8"),
    "rules: a range past the end of IPv4": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "{past ipv4}"],
                                            "run past the end of IPv4"),
    "rules on stdin that are not JSON": (["attach", "3", "0", "--bridge", "vnbr1", "--rules", "-"], "invalid JSON"),
    # ids
    "negative VM id": (["attach", "--bridge", "vnbr1", "--", "-1", "0"], "'VM': '-1' is not an id"),
    "VM id not a number": (["attach", "x", "0", "--bridge", "vnbr1"], "'x' is not an id"),
    "VM id of 11 digits": (["attach", "10000000000", "0", "--bridge", "vnbr1"], "'10000000000' is not an id"),
    "VM id with a sign": (["attach", "+3", "0", "--bridge", "vnbr1"], "'+3' is not an id"),
    "VM id in other digits": (["attach", "\u0663", "0", "--bridge", "vnbr1"], "is not an id"),
    "VM id of 5,000 digits": (["attach", "9" * 5000, "0", "--bridge", "vnbr1"], "Invalid value for 'VM'"),
    "NIC id 1000": (["attach", "3", "1000", "--bridge", "vnbr1"], "NIC id 1000 is out of range"),
    # names
    "bridge with a line break and a command": (["attach", "3", "0", "--bridge", "vnbr1\nlink del lo"],
                                               "is not a valid interface name"),
    "tap with a path": (["attach", "3", "0", "--bridge", "vnbr1", "--tap", "../one-3-0"],
                        "is not a valid interface name"),
    "detach with a bad bridge name": (["detach", "1", "0", "--bridge", "a/b"], "is not a valid interface name"),
    # options
    "unknown option": (["attach", "3", "0", "--bridge", "vnbr1", "--no-such-option"],
                       "No such option '--no-such-option'"),
    "address with a line break": (["attach", "3", "0", "--bridge", "vnbr1", "--filter-ip-spoofing",
                                   "--ip", "10.9.1.3\n-j ACCEPT"], "is not an IPv4 or IPv6 address"),
    "unknown backend": (["--backend", "bogus", "attach", "3", "0", "--bridge", "vnbr1"], "'bogus'"),
    "conntrack cap below 2": (["attach", "3", "0", "--bridge", "vnbr1", "--conntrack-max", "1"],
                              "conntrack cap 1 is not an integer in 2..1048576"),
    "--vm-xml with --rules": (["attach", "42", "0", "--vm-xml", "-", "--rules", "{good}"], "do not combine"),
    "update with nothing to update": (["update", "1", "0"], "nothing to update"),
    "update with a bad MAC": (["update", "1", "0", "--mac", "02:00:0a:09:00:zz"], "is not a MAC address"),
    "update with a bad rule": (["update", "1", "0", "--rules", "{bad}"], "low port above its high port"),
    "update of a NIC never attached": (["update", "5", "0", "--rules", "{good}"], "VM 5 NIC 0 is not attached"),
    "verify of a VM with no record": (["verify", "9"], "VM 9 has no attached NIC"),
    "verify --vm-xml without NIC": (["verify", "1", "--vm-xml", "{good}"], "needs the NIC id"),
    # the state directory
    "state directory that cannot be": (["detach", "1", "0", "--state-dir", "/proc/x"], "/proc/x: cannot create it"),
    "state directory through a symbolic link": (["detach", "1", "0", "--state-dir", "{state link}"],
                                                "is a symbolic link"),
    "state directory writable by others": (["detach", "1", "0", "--state-dir", "{open}"],
                                           "writable by group or others"),
    # documents (VM 42's tap is on onebr0: without its defect, each would attach)
    "document larger than the cap": (["attach", "3", "0", "--vm-xml", "/dev/zero"], "larger than"),
    "document with an external entity (XXE)": (["attach", "42", "0", "--vm-xml", "{external_entity.xml}"],
                                               "a DTD is not allowed"),
    "document with an external DTD": (["attach", "42", "0", "--vm-xml", "{external_dtd.xml}"],
                                      "a DTD is not allowed"),
    "document declaring an internal entity": (["attach", "42", "0", "--vm-xml", "-"], "a DTD is not allowed"),
    "document with an external parameter entity": (["attach", "42", "0", "--vm-xml", "-"], "a DTD is not allowed"),
    "document with a character reference line break": (["attach", "42", "0", "--vm-xml", "-"],
                                                       "is not a valid interface name"),
    "document with two root elements": (["attach", "42", "0", "--vm-xml", "-"], "junk after document element"),
    "document of another VM": (["attach", "3", "0", "--vm-xml", "-"], "it describes VM 42, not VM 3"),
    "one with an empty document": (["one", "post", "one-3", "host-a"], "it is empty"),
    "one with an unknown action": (["one", "reboot"], "unknown driver action 'reboot'"),
}


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root (root included) with its type, mode and content (a link: its target): not a record,
    lock file, journal, directory or permission may change."""
    found = {}
    for where, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(where) / name if name != "." else Path(where)
            st = path.lstat()
            content = (os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else None)
            found[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content)
    return found


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_touches_nothing(lab, state_dir, tmp_path, case):
    """VM 1 NIC 0 attached on vnbr0; VM 3's tap one-3-0 on vnbr1 and VM 42's one-42-0 on onebr0, not attached."""
    two_vms(lab)
    lab.bridge("vnbr1")
    lab.vm(3, 0, "10.9.1.3/24", bridge="vnbr1")
    lab.bridge("onebr0")
    lab.vm(42, 0, "10.9.2.42/24", bridge="onebr0")
    ok("attach", "1", "0", "--bridge", "vnbr0", "--mac", MAC1, "--ip", "10.9.0.1", "--filter-ip-spoofing")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    files = {"state link": str(tmp_path / "state-link"), "open": str(tmp_path / "open")}
    os.symlink(state_dir, files["state link"])
    os.mkdir(files["open"])
    os.chmod(files["open"], 0o777)
    for key, content in BAD_FILES.items():
        path = inputs / key
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[key] = str(path)
    for name in ("external_entity.xml", "external_dtd.xml"):
        files[name] = str(DATA / "bad" / name)
    argv, why = BAD_INPUT[case]
    args = [files[a[1:-1]] if len(a) > 2 and a[0] == "{" and a[-1] == "}" else a for a in argv]
    before, recorded = snapshot(), tree(tmp_path)
    line = refused(netfw(*args, stdin=BAD_STDIN.get(case, "")))
    assert why in line, line
    assert "unexpected" not in line and "Traceback" not in line, line
    assert snapshot() == before, line
    after = tree(tmp_path)
    # The only thing allowed to appear: the VM's empty lock file, for a refusal that comes from what the host holds
    # (a missing bridge or tap is found under the VM's lock, so that a concurrent call cannot change it meanwhile);
    # netfw never removes a lock file (that would race with a waiter holding the old one open).
    new = {path for path in set(after) - set(recorded) if not (
        Path(path).parent == Path("state") and Path(path).name.endswith(".lock")
        and after[path] == (stat.S_IFREG, 0o600, b""))}
    assert new == set() and {p: after[p] for p in recorded} == recorded, line  # the state directory, every input
    assert api.verify(1) == {0: []}


def test_the_document_of_the_bad_input_table_attaches_without_its_defects(lab, state_dir):
    """The control of the document cases above: VM 42's clean document attaches in the same lab."""
    lab.bridge("onebr0")
    lab.vm(42, 0, "10.9.2.42/24", bridge="onebr0")
    ok("attach", "42", "0", "--vm-xml", "-", stdin=doc42())
    assert api.verify(42) == {0: []}
    assert list(records(state_dir)) == ["vm-42/nic-0.json"]


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
