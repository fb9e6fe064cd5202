"""Issue 19: a fault stays with its NIC. An OVSDB value of one port (U+2028 and the like), a value netfw refuses, a
failed read, a corrupt record: that NIC's health is `error` with the reason, and status, metrics, gc and the detach
of every other NIC work (the command layer faked: tests/fake.py, which prints ovs-vsctl's JSON as ovs-vsctl does)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from netfw import api
from netfw.kernel import connection, ovs
from netfw.observe import owned
from netfw import state
from netfw.cli import app
from netfw.model.spec import NicSpec
from netfw.kernel.ovs import OvsPort
from netfw.kernel.port import LINUX, OVS, Port

from .fake import FakeHost, link

#: Strings OVSDB holds and netfw must carry unchanged: line and paragraph separators, NEL, quotes, backslashes,
#: escapes, non-ASCII, astral characters, control characters, and the longest netfw takes.
HOSTILE = ["a\u2028b", "\u2029", "x\u0085y", 'q"uote\\back\\\\slash', "\\u2028 \\n", "line\nfeed\r\t",
           "é漢😀", "\x01\x1f\x7f", "=,{}[]\" ", "😀" * 4096]


def _ours(vm: int, nic: int, role: str) -> str:
    return f"netfw vm={vm} nic={nic} role={role}"


def attached_links(vm: int, nic: int, bridge: str | None) -> dict:
    """A NIC as the kernel shows it once attached: the veth end under the tap's name (on the Linux bridge, or on no
    kernel master: Open vSwitch's userspace datapath), the tap and netfw's links inside."""
    ns, tap = f"one-{vm}", f"one-{vm}-{nic}"
    return {None: {tap: link(tap, "veth", master=bridge, address="02:00:00:00:00:01", ifalias=_ours(vm, nic, "h"))},
            ns: {tap: link(tap, "tun", master=f"one-br-{vm}-{nic}"),
                 f"one-br-{vm}-{nic}": link(f"one-br-{vm}-{nic}", "bridge", ifalias=_ours(vm, nic, "br")),
                 f"{tap}-f": link(f"{tap}-f", "veth", master=f"one-br-{vm}-{nic}", ifalias=_ours(vm, nic, "f"))}}


def merge(*hosts: dict) -> dict:
    out: dict = {}
    for host in hosts:
        for ns, links in host.items():
            out.setdefault(ns, {}).update(links)
    return out


def ovs_record(values: list[str]) -> dict:
    """The veth end's Port and Interface records in OVSDB, with values as external_ids and other_config."""
    ids = ["map", [[f"k{i}", v] for i, v in enumerate(values)]]
    return {"bridge": "ovsbr0", "port": {"tag": 10, "external_ids": ids},
            "iface": {"external_ids": ids, "other_config": ["map", [["note", values[0]]]], "ofport": 11}}


def record(state_dir, vm: int, nic: int, port: Port) -> None:
    spec = NicSpec(vm, nic, port.bridge)
    state.write(state.nic_path(state_dir, vm, nic), state.document(state.Applied(spec, 1500, 0, "auto", port)))


OVS_PORT = Port(OVS, "ovsbr0", "02:00:00:00:00:01", ovs=OvsPort("ovsbr0", (("tag", 10),), (), 11))


@pytest.fixture
def host(mocker, tmp_path):
    """VM 6 NIC 0 on Open vSwitch (its veth end's records hold HOSTILE), VM 7 NIC 0 on a Linux bridge, VM 8 NIC 0
    recorded and stale; records in tmp_path."""
    mocker.patch.object(api, "check_host")
    mocker.patch.object(connection, "has_ovs", return_value=True)
    links = merge({None: {"vnbr0": link("vnbr0", "bridge"), "ovsbr0": link("ovsbr0", "openvswitch")}},
                  attached_links(6, 0, None), attached_links(7, 0, "vnbr0"))
    fake = FakeHost(mocker, links=links, netns={"one-6", "one-7"}, ovs={"one-6-0": ovs_record(HOSTILE)})
    record(tmp_path, 6, 0, OVS_PORT)
    record(tmp_path, 7, 0, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    record(tmp_path, 8, 0, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    return fake


def health_of(output: str) -> dict:
    return {(n["vm"], n["nic"]): n for n in json.loads(output)["nics"]}


# --- ovs-vsctl's JSON ------------------------------------------------------------------------------------------------


def test_ovs_vsctl_json_is_read_whole_whatever_its_strings_hold(host):
    """ovs-vsctl prints U+2028, U+2029 and U+0085 unescaped; str.splitlines() cut a document there (issue 19)."""
    found = ovs.lookup("one-6-0")
    assert dict(found.port)["external_ids"] == ["map", [[f"k{i}", v] for i, v in enumerate(HOSTILE)]]
    assert dict(found.iface)["other_config"] == ["map", [["note", "a\u2028b"]]]
    assert (found.bridge, found.ofport) == ("ovsbr0", 11)


@pytest.mark.parametrize("out", ['{"data": [], "headings": []', '{"data": [[1]], "headings": []}\n', "[]\n",
                                 '{"data": [], "headings": []}\nnot json\n', '{"headings": []}'])
def test_output_that_is_not_ovs_vsctl_s_tables_is_a_failed_read(out):
    with pytest.raises(ovs.runner.CommandError, match="not its JSON tables"):
        ovs._rows(out)


def test_the_values_are_written_back_as_read(host):
    """add-port renders every value so that ovs-vsctl parses it back to the same string (JSON escapes: ASCII), a map
    key by key: no argument nears the kernel's 128 KiB limit (MAX_ARG_STRLEN)."""
    argv = ovs.lookup("one-6-0").add_argv("one-6-0")
    assert all(arg.isascii() for arg in argv) and max(len(arg) for arg in argv) < 128 * 1024
    port = argv[argv.index("Port") + 2:argv.index("Interface") - 2]
    assert port == ["tag=10", *(f"external_ids:{json.dumps(f'k{i}')}={json.dumps(v)}" for i, v in enumerate(HOSTILE))]


def test_records_netfw_could_not_write_back_in_one_call_are_refused_when_read():
    """12 values of 4,096 astral characters (49 KiB each as JSON escapes) fit; 24 would make the add-port's argv
    larger than MAX_ARGV (E2BIG at the cut-over, and for its rollback too: the tap left off its bridge)."""
    def ids(n: int) -> tuple:
        return (("external_ids", ["map", [[f"k{i}", chr(0x1F600 + i) * 4096] for i in range(n)]]),)

    assert OvsPort("ovsbr0", (), ids(12), 11)
    with pytest.raises(ovs.InputError, match="netfw can write back in one ovs-vsctl call"):
        OvsPort("ovsbr0", ids(12), ids(12), 11)
    with pytest.raises(ovs.InputError, match="not Unicode text"):  # a record's "\ud800"
        OvsPort.from_dict({"bridge": "ovsbr0", "port": [["external_ids", ["map", [["k", "\ud800"]]]]], "iface": [],
                           "ofport": 11})


# --- status, metrics, gc, detach --------------------------------------------------------------------------------------


def test_status_gc_and_detach_read_a_port_whose_records_hold_line_separators(host, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1 and "unexpected" not in res.output  # 1: the fake kernel has no rules (drift)
    found = health_of(res.stdout)
    assert {k: h["health"] for k, h in found.items()} == {(6, 0): "drift", (7, 0): "drift", (8, 0): "stale"}
    assert not any("Open vSwitch" in p for p in found[(6, 0)]["problems"])  # the veth end is on its OVS bridge
    res = runner.invoke(app, ["gc", "--dry-run", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and [(i["vm"], i["nic"]) for i in json.loads(res.stdout)["items"]] == [(8, 0)]

    expected = ovs.lookup("one-6-0").add_argv("one-6-0")  # the tap gets the records the veth end has
    api.detach(6, 0, state_dir=tmp_path)
    adds = [argv for argv, _ in host.calls if argv[:3] == [*ovs.VSCTL, "add-port"]]
    assert adds == [expected] and any("a\\u2028b" in arg for arg in expected)
    assert not (tmp_path / "vm-6" / "nic-0.json").exists()


def test_a_value_netfw_refuses_is_that_nic_s_error_and_the_others_go_on(host, tmp_path):
    host.ovs["one-6-0"]["iface"]["external_ids"] = ["map", [["big", "x" * 4097]]]
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    found = health_of(res.stdout)
    assert res.exit_code == 1 and found[(6, 0)]["health"] == "error"
    assert "Interface external_ids: a string longer than 4096 characters" in found[(6, 0)]["problems"][0]
    assert (found[(7, 0)]["health"], found[(8, 0)]["health"]) == ("drift", "stale")
    res = runner.invoke(app, ["gc", "--dry-run", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and [(i["vm"], i["nic"]) for i in json.loads(res.stdout)["items"]] == [(8, 0)]
    res = runner.invoke(app, ["detach", "7", "0", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and not (tmp_path / "vm-7" / "nic-0.json").exists()
    res = runner.invoke(app, ["detach", "6", "0", "--state-dir", str(tmp_path)])  # its own detach: refused, told why
    assert res.exit_code == 2 and "longer than 4096" in res.output and (tmp_path / "vm-6" / "nic-0.json").exists()


def test_a_failed_read_of_one_nic_is_that_nic_s_error(mocker, host, tmp_path):
    host.fail = "list Port one-6-0"  # ovs-vsctl fails for VM 6's port only
    res = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    found = health_of(res.stdout)
    assert res.exit_code == 1 and found[(6, 0)]["health"] == "error"
    assert "could not check it" in found[(6, 0)]["problems"][0] and "injected failure" in found[(6, 0)]["problems"][0]
    assert (found[(7, 0)]["health"], found[(8, 0)]["health"]) == ("drift", "stale")


def test_a_vm_directory_netfw_refuses_is_that_vm_s_error_never_an_orphan(host, tmp_path):
    """Its links have records netfw cannot read: gc must not take them for orphans and remove them."""
    host.links = merge(host.links, attached_links(9, 0, "vnbr0"))
    host.netns.add("one-9")
    record(tmp_path, 9, 0, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    (tmp_path / "vm-9").chmod(0o777)
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    found = health_of(res.stdout)
    assert res.exit_code == 1 and found[(9, None)]["health"] == found[(9, 0)]["health"] == "error"
    assert "is writable by group or others" in found[(9, 0)]["problems"][0]
    assert (found[(6, 0)]["health"], found[(7, 0)]["health"], found[(8, 0)]["health"]) == ("drift", "drift", "stale")
    res = runner.invoke(app, ["gc", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and [(i["vm"], i["nic"]) for i in json.loads(res.stdout)["items"]] == [(8, 0)]


def test_a_namespace_that_cannot_be_read_is_that_vm_s_error(mocker, host, tmp_path):
    mocker.patch.object(owned, "namespaces", return_value=[6, 7])
    host.fail = "nsenter --net=/run/netns/one-7 ip -j -d link show"  # the listing of VM 7's namespace fails
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    found = health_of(res.stdout)
    assert res.exit_code == 1 and found[(7, None)]["health"] == found[(7, 0)]["health"] == "error"
    assert "could not read namespace one-7" in found[(7, 0)]["problems"][0]
    assert (found[(6, 0)]["health"], found[(8, 0)]["health"]) == ("drift", "stale")
    res = runner.invoke(app, ["gc", "--dry-run", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and [(i["vm"], i["nic"]) for i in json.loads(res.stdout)["items"]] == [(8, 0)]


# --- metrics ----------------------------------------------------------------------------------------------------------


def test_metrics_with_one_corrupt_record_print_every_other_nic_and_that_nic_s_error(host, tmp_path):
    """Finding 4: one unreadable record emptied `netfw metrics` (exit 2, no line); the README promises that NIC's
    health `error` and exit 1."""
    host.links = merge(host.links, attached_links(7, 1, "vnbr0"))
    record(tmp_path, 7, 1, Port(LINUX, "vnbr0", "02:00:00:00:00:01"))
    (tmp_path / "vm-7" / "nic-1.json").write_text('{"spec": ')
    res = CliRunner().invoke(app, ["metrics", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert 'netfw_nic_health{vm="7",nic="1",health="error"} 1' in lines
    for vm, nic in ((6, 0), (7, 0)):
        assert f'netfw_nic_health{{vm="{vm}",nic="{nic}",health="drift"}} 1' in lines
        assert f'netfw_packets_total{{vm="{vm}",nic="{nic}",direction="inbound",verdict="accepted"}} 0' in lines
    assert 'netfw_nic_health{vm="8",nic="0",health="stale"} 1' in lines
    assert not any('nic="1"' in line for line in lines if not line.startswith("netfw_nic_health"))  # no counters
    assert 'netfw_conntrack_max{vm="6"} 8192' in lines and not any('conntrack_max{vm="7"}' in l for l in lines)
    assert "VM 7 NIC 1" in res.stderr and "not a netfw record" in res.stderr


def test_status_of_a_vm_with_one_corrupt_record(host, tmp_path):
    host.links = merge(host.links, attached_links(7, 1, "vnbr0"))
    (tmp_path / "vm-7" / "nic-1.json").write_text("[]")
    res = CliRunner().invoke(app, ["status", "7", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "VM 7: conntrack 0 of an unknown cap (a record cannot be read) entries" in res.stdout
    assert "NIC 0: drift (tap one-7-0)" in res.stdout and "NIC 1: error" in res.stdout
    res = CliRunner().invoke(app, ["status", "7", "--json", "--state-dir", str(tmp_path)])
    assert json.loads(res.stdout)["conntrack"] == {"count": 0, "max": None}
