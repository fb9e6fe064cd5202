"""The CLI contract: exit 2 with one line and nothing run on bad input; --version; --dry-run runs nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from netfw import __version__, api
from netfw.cli import app

from .fake import FakeHost, link

HOST = {None: {"vnbr0": link("vnbr0", "bridge"), "one-7-0": link("one-7-0", "veth", master="vnbr0")}}


@pytest.fixture
def cli(mocker, tmp_path):
    mocker.patch.object(api, "check_host")
    fake = FakeHost(mocker, links=HOST)
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(app, [*args, "--state-dir", str(tmp_path)] if args[0] != "--version" else list(args),
                             input=input)

    invoke.fake = fake
    return invoke


def _changed(fake) -> list[list[str]]:
    """Commands that may change something (everything but the read-only probes)."""
    return [argv for argv, _ in fake.calls if "-j" not in argv and not any(a.endswith("-save") for a in argv)]


@pytest.mark.parametrize("args, message", [
    (["attach", "-1", "0", "--bridge", "vnbr0"], "-1"),
    (["attach", "abc", "0", "--bridge", "vnbr0"], "Invalid value for 'vm'"),
    (["attach", "7", "0"], "--bridge (or --vm-xml) is required"),
    (["attach", "7", "0", "--bridge", "nobr"], "VN bridge nobr does not exist"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--tap", "a/b"], "tap 'a/b' is not a valid interface name"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--tap", "one-8-0"], "tap one-8-0 does not exist"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--rules", "/nonexistent"], "cannot read /nonexistent"),
    (["attach", "10000000000", "0", "--bridge", "vnbr0"], "out of range"),
    (["update", "7", "0", "--rules", "-"], "not attached"),
    (["verify", "7"], "no attached NIC recorded"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(cli, args, message):
    result = cli(*args, input="[]")
    assert result.exit_code == 2, result.output
    assert message.lower() in result.output.lower()
    assert "Traceback" not in result.output
    assert _changed(cli.fake) == []


def test_bad_rule_names_position_and_field(cli):
    result = cli("attach", "7", "0", "--bridge", "vnbr0", "--rules", "-",
                 input='[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "80:22", "SECURITY_GROUP_ID": 5}]')
    assert result.exit_code == 2
    assert "rule 1 (security group 5): RANGE" in result.output
    assert cli.fake.calls == []


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"netfw {__version__}"


def test_dry_run_prints_the_commands_and_runs_only_probes(cli):
    result = cli("attach", "7", "0", "--bridge", "vnbr0", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "ip netns add one-7" in result.output
    assert "link set one-7-0 netns one-7" in result.output
    assert _changed(cli.fake) == []


def test_json_output_of_detach_when_nothing_is_there(cli):
    import json

    result = cli("detach", "7", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] == []


def test_usage_errors_are_one_line_from_the_console_script(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", "from netfw.cli import run; run()", "attach", "abc", "0"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("ERROR: ")


# --- hostile values (issue 8): exit 2, one line, nothing run ----------------------------------------------------------

INJECTION = "2001:db8::5%1\n-I FORWARD 1 -j ACCEPT"


@pytest.mark.parametrize("args, message", [
    (["--ip", INJECTION], "address '2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT' has a zone; give the plain address"),
    (["--ip", "10.0.0.7\n"], "address '10.0.0.7\\n' is not an IPv4 or IPv6 address"),
    (["--mac", "02:00:0a:00:00:07\n-j ACCEPT"], "MAC '02:00:0a:00:00:07\\n-j ACCEPT' is not a MAC address"),
    (["--tap", "one-7-0\n"], "tap 'one-7-0\\n' is not a valid interface name"),
    (["--rules", ""], "--rules: an empty name is neither a file nor '-'"),
    (["--rules", "/dev/zero"], "--rules /dev/zero: larger than 8388608 bytes"),
    (["--vm-xml", "/dev/zero"], "--vm-xml /dev/zero: larger than 8388608 bytes"),
])  # fmt: skip
def test_hostile_flags_exit_2_and_run_nothing(cli, args, message):
    base = ["attach", "7", "0"] + ([] if "--vm-xml" in args else ["--bridge", "vnbr0", "--filter-ip-spoofing"])
    result = cli(*base, *args, input="[]")
    assert result.exit_code == 2, result.output
    assert f"ERROR: {message}" in result.output and result.output.count("\n") == 1
    assert cli.fake.calls == []


def test_rules_empty_list_allows_nothing_and_no_rules_is_group_0(cli, mocker):
    seen = []
    mocker.patch.object(api, "attach", side_effect=lambda spec, **kw: seen.append(spec) or api.Outcome("attach", 7, 0))
    assert cli("attach", "7", "0", "--bridge", "vnbr0", "--rules", "-", input="[]").exit_code == 0
    assert cli("attach", "7", "0", "--bridge", "vnbr0").exit_code == 0
    assert [s.rules for s in seen] == [(), None]


def test_update_with_empty_rules_is_an_error_not_a_no_change(cli, tmp_path):
    """`--rules ""` used to read as "rules not given": with --router the update went on and kept the old rules."""
    from netfw import state
    from netfw.model import NicSpec

    state.write(state.nic_path(tmp_path, 7, 0), state.document(state.Applied(NicSpec(7, 0, "vnbr0", rules=()), 1500)))
    result = cli("update", "7", "0", "--router", "--rules", "")
    assert result.exit_code == 2 and "--rules: an empty name" in result.output
    assert _changed(cli.fake) == []


def test_vm_xml_naming_a_foreign_tap_exits_2(cli, tmp_path):
    doc = tmp_path / "vm.xml"
    doc.write_text("<VM><ID>7</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID><BRIDGE>vnbr0</BRIDGE><TARGET>eth0</TARGET>"
                   "</NIC></TEMPLATE></VM>")
    result = cli("attach", "7", "0", "--vm-xml", str(doc))
    assert result.exit_code == 2 and "TARGET 'eth0' is not the NIC's tap one-7-0" in result.output
    assert cli.fake.calls == []


def test_one_reads_standard_input_with_its_bound(cli):
    """`netfw one pre < /dev/zero` grew a root process until memory ran out: now at most MAX_INPUT + 1 bytes are read."""
    from netfw.document import MAX_INPUT

    result = cli("one", "pre", input=b"\0" * (MAX_INPUT + 4096))
    assert result.exit_code == 2
    assert f"ERROR: VM document: input is larger than {MAX_INPUT} bytes" in result.output


def test_one_stops_reading_dev_zero_at_the_bound():
    """A whole process on an endless standard input (under a 1 GiB address-space limit, so that the unbounded read
    of old fails with MemoryError instead of eating the machine)."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    with open("/dev/zero", "rb") as zero:
        res = subprocess.run([sys.executable, "-c", "from netfw.cli import run; run()", "one", "pre"], stdin=zero,
                             capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert res.returncode == 2, res.stderr[-500:]
    assert res.stderr.strip().splitlines() == ["ERROR: VM document: input is larger than 8388608 bytes"]


# --- the conntrack cap (issue 11) -----------------------------------------------------------------------------------


def _restores(fake) -> dict[str, str]:
    return {argv[2]: stdin for argv, stdin in fake.calls if argv[0] == "nsenter" and argv[2].endswith("-restore")}


def test_attach_conntrack_max_is_split_between_the_families(cli):
    result = cli("attach", "7", "0", "--bridge", "vnbr0", "--conntrack-max", "1001")
    assert result.exit_code == 0, result.output
    restores = _restores(cli.fake)
    assert "-m connlimit --connlimit-upto 501 --connlimit-mask 0 --connlimit-saddr -j ACCEPT" in \
        restores["iptables-restore"]
    assert "--connlimit-upto 500 " in restores["ip6tables-restore"]


@pytest.mark.parametrize("value", ["1", "0", "-5", "2000000", "many"])
def test_a_bad_conntrack_max_exits_2_and_runs_nothing(cli, value):
    result = cli("attach", "7", "0", "--bridge", "vnbr0", "--conntrack-max", value)
    assert result.exit_code == 2, result.output
    assert _changed(cli.fake) == []


def test_update_conntrack_max_alone_changes_only_the_cap(cli, tmp_path):
    import json

    assert cli("attach", "7", "0", "--bridge", "vnbr0", "--conntrack-max", "1000").exit_code == 0
    record = tmp_path / "vm-7" / "nic-0.json"
    assert json.loads(record.read_text())["spec"]["conntrack_max"] == 1000
    cli.fake.netns.add("one-7")
    result = cli("update", "7", "0", "--conntrack-max", "3000")
    assert result.exit_code == 0, result.output
    assert json.loads(record.read_text())["spec"]["conntrack_max"] == 3000
    result = cli("update", "7", "0", "--router")
    assert result.exit_code == 0 and json.loads(record.read_text())["spec"]["conntrack_max"] == 3000  # kept
