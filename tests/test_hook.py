"""`netfw hook qemu` (netfw.opennebula.hook, netfw.opennebula.domain): which libvirt calls it acts on, the exact commands it runs (the
command layer faked: tests/fake.py), how it treats the domain XML (hostile input) and the pending record, and its
exit codes. tests/integration/test_hook.py shows the same with real taps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfw import api, runner
from netfw import state
from netfw.state import pending
from netfw.cli import app
from netfw.model.spec import NicSpec

from .fake import FakeHost, link

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / "scripts" / "libvirt" / "qemu.d" / "netfw"
MAC = "02:00:0a:00:00:07"
SPEC = NicSpec(7, 0, "vnbr0", mac=MAC)
SLAVE = {"info_kind": "tun", "info_slave_data": {"priority": 32, "cost": 2, "hairpin": False, "learning": True}}
HOST = {None: {"vnbr0": link("vnbr0", "bridge"),
               "one-7-0": link("one-7-0", None, master="vnbr0", address="fe:00:0a:00:00:07", txqlen=500,
                               linkinfo=SLAVE)}}


def domain_xml(*interfaces: str, name: str = "one-7") -> str:
    return (f"<domain type='qemu' id='3'><name>{name}</name><uuid>x</uuid><devices>"
            + "".join(interfaces) + "</devices></domain>")


def iface(nic: int, mac: str = MAC, bridge: str = "vnbr0", vm: int = 7, kind: str = "bridge") -> str:
    return (f"<interface type='{kind}'><mac address='{mac}'/><source bridge='{bridge}'/>"
            f"<target dev='one-{vm}-{nic}'/><model type='virtio'/></interface>")


@pytest.fixture(autouse=True)
def host_ok(mocker):
    mocker.patch.object(api, "check_host")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    return root


def pend(root: Path, *specs: NicSpec, how: str = "auto") -> None:
    with state.opened(root) as records:
        pending.save(records, specs[0].vm, pending.Pending(specs[0].vm, how, {s.nic: s for s in specs}))


def hook(root: Path, *argv: str, xml: str = ""):
    """`netfw hook qemu --state-dir ROOT ARGV` with xml on stdin: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, ["hook", "qemu", "--state-dir", str(root), "--", *argv], input=xml)
    return result.exit_code, result.stdout, result.stderr


def attach_commands(mocker, tmp_path) -> list:
    """What `netfw attach` runs for SPEC on HOST (the reference the hook is held to)."""
    fake = FakeHost(mocker, links=HOST)
    api.attach(SPEC, state_dir=tmp_path / "reference")
    return fake.calls


# --- start begin ----------------------------------------------------------------------------------------------------


def test_start_begin_attaches_the_pending_nic_as_attach_does_with_the_tap_queue_emptied(mocker, tmp_path, root):
    reference = attach_commands(mocker, tmp_path)
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, out, err = hook(root, "one-7", "start", "begin", "-", xml=domain_xml(iface(0)))
    assert code == 0, err
    assert out == ""  # libvirt reads a hook's stdout for some operations: nothing there, ever
    assert "INFO: netfw hook: VM 7 NIC 0: attached before QEMU starts" in err
    into_firewall = (["nsenter", "--net=/run/netns/one-7", "ip", "-batch", "-"], "link set one-7-0 master one-br-7-0 up\n"
                                                           "link set one-7-0 type bridge_slave learning off\n")
    flushed = (into_firewall[0], "link set one-7-0 addrgenmode none\nlink set one-7-0 txqueuelen 0\n"
                                "link set one-7-0 txqueuelen 500\n" + into_firewall[1])
    assert into_firewall in reference
    # exactly attach's commands, but the tap's queue is emptied (and its length given back) before it comes up
    assert fake.calls == [flushed if call == into_firewall else call for call in reference]
    assert state.load(root, 7, 0).spec == SPEC
    assert pending.load(state.StateDir(root, os.open(root, os.O_RDONLY)), 7) is not None  # the record stays


def test_start_begin_loads_the_rules_with_the_backend_pre_recorded(mocker, root):
    pend(root, SPEC, how="legacy")
    fake = FakeHost(mocker, links=HOST)
    assert hook(root, "one-7", "start", "begin", "-", xml=domain_xml(iface(0)))[0] == 0
    assert [argv[2] for argv, _ in fake.calls if argv[-1:] == ["--noflush"]][:2] == \
        ["iptables-legacy-restore", "ip6tables-legacy-restore"]
    assert state.load(root, 7, 0).backend == "legacy"


def test_a_nic_without_a_pending_record_is_left_alone_with_one_line(mocker, root):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, _, err = hook(root, "one-7", "start", "begin", "-", xml=domain_xml(iface(0), iface(1, mac="02:00:00:00:00:09")))
    assert code == 0, err
    assert "INFO: VM 7 NIC 1 (one-7-1): no pending record: left alone" in err.splitlines()
    assert not any("one-7-1" in " ".join(argv) + (stdin or "") for argv, stdin in fake.calls)


@pytest.mark.parametrize("setup, line", [
    ("none", "INFO: netfw hook: VM 7: no pending record: left alone"),
    ("no directory", "INFO: netfw hook: VM 7: no pending record (no state directory"),
])
def test_a_domain_without_a_pending_record_is_left_alone(mocker, root, setup, line):
    fake = FakeHost(mocker, links=HOST)
    where = root if setup == "none" else root / "missing"
    code, _, err = hook(where, "one-7", "start", "begin", "-", xml=domain_xml(iface(0)))
    assert code == 0 and err.startswith(line) and len(err.splitlines()) == 1
    assert fake.calls == [] and not (root / "missing").exists()


@pytest.mark.parametrize("interface, message", [
    (iface(0, mac="02:00:0a:00:00:08"), "has MAC 02:00:0a:00:00:08, its pending record 02:00:0a:00:00:07: refused"),
    (iface(0, bridge="vnbr1"), "is on bridge vnbr1, its pending record on vnbr0: refused"),
    ("<interface type='bridge'><source bridge='vnbr0'/><target dev='one-7-0'/></interface>", "has MAC None"),
    (iface(0, mac="02:00:0a:00:00:07\n-A FORWARD"), "domain XML: interface 1 (one-7-0): "),
    (iface(0, bridge="vnbr0 x"), "domain XML: interface 1 (one-7-0): "),
    (iface(0, kind="bridge\u2028"), "is not a libvirt interface type"),
    (iface(0) + iface(0), "two interfaces have the target one-7-0"),
])
def test_a_nic_that_does_not_match_its_record_is_refused_and_nothing_runs(mocker, root, interface, message):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, out, err = hook(root, "one-7", "start", "begin", "-", xml=domain_xml(interface))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("ERROR: ") and message in err
    assert fake.calls == [] and state.load(root, 7, 0) is None


BOMB = ('<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
        "<domain><name>one-7</name><description>&b;</description></domain>")


@pytest.mark.parametrize("xml, message", [
    (BOMB, "domain XML: a DTD is not allowed"),
    ("", "domain XML: it is empty" ),
    ("<domain><name>one-7</name>", "domain XML: it is not well-formed XML"),
    ("<VM><name>one-7</name></VM>", "domain XML: the root element is <VM>, not <domain>"),
    (domain_xml(iface(0), name="one-8"), "domain XML: its <name> is 'one-8', not 'one-7' as libvirt said"),
    ("<domain><name>one-7</name><name>one-7</name></domain>", "domain XML: its <name> is ['one-7', 'one-7']"),
    ("<domain>" + "<a>" * 40 + "</a>" * 40 + "</domain>", "nests deeper than 32"),
    (domain_xml(iface(0)) + " " * (4 << 20), "larger than"),
])
def test_hostile_domain_xml_is_refused_with_one_line(mocker, root, xml, message):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, _, err = hook(root, "one-7", "start", "begin", "-", xml=xml)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert fake.calls == []


@pytest.mark.parametrize("argv", [
    ("vm1", "start", "begin", "-"), ("one-7x", "start", "begin", "-"), ("one-07", "start", "begin", "-"),
    ("one-7", "started", "begin", "-"), ("one-7", "start", "end", "-"), ("one-7", "migrate", "begin", "-"),
    ("one-7", "restore", "begin", "-"), ("one-7", "reconnect", "begin", "-"), ("one-7", "attach", "begin", "-"),
    ("one-7\n", "start", "begin", "-"),
])
def test_other_domains_and_phases_are_left_alone_at_once(mocker, root, argv):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, out, err = hook(root, *argv, xml="not even XML")
    assert (code, out, err) == (0, "", "") and fake.calls == []


def test_a_failing_attach_exits_1_and_rolls_back(mocker, root):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST, fail="txqueuelen 0")
    code, out, err = hook(root, "one-7", "start", "begin", "-", xml=domain_xml(iface(0)))
    assert code == 1 and out == "" and err.splitlines()[-1].endswith("(rolled back)")
    assert fake.calls[-1] == (["ip", "netns", "del", "one-7"], None)  # the undo ends with what attach made first
    assert state.load(root, 7, 0) is None


# --- prepare begin, stopped end, release end ------------------------------------------------------------------------


ATTACHED = {None: {"vnbr0": link("vnbr0", "bridge"),
                   "one-7-0": link("one-7-0", "veth", master="vnbr0", address="fe:00:0a:00:00:07",
                                   ifalias="netfw vm=7 nic=0 role=h")},
            "one-7": {"one-br-7-0": link("one-br-7-0", "bridge"),
                      "one-7-0-f": link("one-7-0-f", "veth", master="one-br-7-0", ifalias="netfw vm=7 nic=0 role=f")}}


def _attached(mocker, root) -> None:
    FakeHost(mocker, links=HOST)
    api.attach(SPEC, state_dir=root)


@pytest.mark.parametrize("phase", [("stopped", "end"), ("release", "end"), ("prepare", "begin")])
def test_the_stop_phases_detach_what_netfw_keeps_as_detach_does(mocker, tmp_path, root, phase):
    _attached(mocker, tmp_path / "reference")
    reference = FakeHost(mocker, links=ATTACHED, netns={"one-7"})
    api.detach(7, 0, state_dir=tmp_path / "reference")
    _attached(mocker, root)
    pend(root, SPEC)
    fake = FakeHost(mocker, links=ATTACHED, netns={"one-7"})
    code, out, err = hook(root, "one-7", *phase, "-", xml=domain_xml(iface(0)))
    assert code == 0 and out == "", err
    assert f"INFO: netfw hook: VM 7 {' '.join(phase)}: released NIC 0" in err
    assert fake.calls == reference.calls
    assert state.load(root, 7, 0) is None
    with state.opened(root) as records:  # OpenNebula's pre wrote it, its clean removes it: a new start needs it
        assert pending.load(records, 7) is not None


def test_the_stop_phases_with_nothing_kept_run_nothing(mocker, root):
    pend(root, SPEC)
    fake = FakeHost(mocker, links=HOST)
    code, _, err = hook(root, "one-7", "stopped", "end", "-", xml=domain_xml(iface(0)))
    assert code == 0 and "netfw keeps nothing for it" in err and fake.calls == []


def test_a_failing_release_exits_1_naming_the_nic(mocker, root):
    _attached(mocker, root)
    FakeHost(mocker, links=ATTACHED, netns={"one-7"}, fail="name one-7-0-h")
    code, _, err = hook(root, "one-7", "stopped", "end", "-", xml=domain_xml(iface(0)))
    assert code == 1 and err.splitlines()[-1].startswith("ERROR: netfw hook: VM 7 stopped end: released NIC 0; "
                                                         "failed: NIC 0: ")


# --- the wrapper libvirt runs ---------------------------------------------------------------------------------------


def _fake_netfw(tmp_path: Path) -> Path:
    fake = tmp_path / "netfw"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/log\ncat >> {tmp_path}/log\necho out\n")
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("argv, runs", [
    (["one-7", "start", "begin", "-"], True), (["one-7", "prepare", "begin", "-"], True),
    (["one-7", "stopped", "end", "-"], True), (["one-7", "release", "end", "-"], True),
    (["one-7", "started", "begin", "-"], False), (["one-7", "migrate", "begin", "-"], False),
    (["one-7", "restore", "begin", "-"], False), (["vm1", "start", "begin", "-"], False), ([], False),
])
def test_the_wrapper_runs_netfw_for_opennebulas_domains_at_its_phases_only(tmp_path, argv, runs):
    conf = tmp_path / "conf"
    conf.write_text(f"NETFW_BIN={_fake_netfw(tmp_path)}\nNETFW_STATE_DIR=/srv/netfw\n")
    res = subprocess.run([str(WRAPPER), *argv], input="<domain/>\n", text=True, capture_output=True,
                         env={"PATH": "/usr/bin:/bin", "NETFW_CONF": str(conf)})
    assert res.returncode == 0 and res.stdout == ""  # netfw's stdout goes to stderr: libvirt reads stdout
    if runs:
        assert (tmp_path / "log").read_text() == f"hook qemu --state-dir /srv/netfw -- {' '.join(argv)}\n<domain/>\n"
        assert res.stderr == "out\n"
    else:
        assert not (tmp_path / "log").exists() and res.stderr == ""


def test_the_wrapper_without_netfw_fails_closed(tmp_path):
    res = subprocess.run([str(WRAPPER), "one-7", "start", "begin", "-"], input="", text=True, capture_output=True,
                         env={"PATH": "/usr/bin:/bin", "NETFW_CONF": "/nonexistent", "NETFW_BIN": "/nonexistent"})
    assert res.returncode == 1 and res.stderr.startswith("ERROR: netfw hook: command /nonexistent not found")


def test_a_domain_without_a_record_is_left_alone_whatever_its_xml(mocker, root):
    """The XML is read only for a VM netfw has a pending record of: another VM's start never depends on it."""
    fake = FakeHost(mocker, links=HOST)
    code, _, err = hook(root, "one-7", "start", "begin", "-", xml=BOMB)
    assert code == 0 and err == "INFO: netfw hook: VM 7: no pending record: left alone\n" and fake.calls == []


def test_runner_is_never_reached_for_a_left_alone_domain(mocker, root):
    mocker.patch.object(runner, "_execute", side_effect=AssertionError("no command"))
    assert hook(root, "vm1", "start", "begin", "-")[0] == 0


def test_hook_help_names_its_commands():
    result = CliRunner().invoke(app, ["hook", "--help"])
    assert result.exit_code == 0 and all(c in result.stdout for c in ("qemu", "install", "uninstall"))
    result = CliRunner().invoke(app, ["hook", "qemu", "--help"])
    assert result.exit_code == 0 and "start begin" in result.stdout and "--state-dir" in result.stdout


def test_json_is_not_offered_where_libvirt_reads_stdout():
    """libvirt reads a migrate or restore hook's stdout as a domain XML: `hook qemu` prints nothing there, ever
    (`--json` is for hook install and uninstall: tests/test_hook_install.py)."""
    result = CliRunner().invoke(app, ["hook", "qemu", "--json", "one-7", "start", "begin", "-"])
    assert result.exit_code == 2 and "No such option '--json'" in result.stderr
