"""The CLI contract: exit 2 with one line and nothing run on bad input; --version; --dry-run runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        # --state-dir right after the command: an argument list may end with `-- ARGS`, where it would be an argument
        argv = list(args) if args[0] == "--version" else [args[0], "--state-dir", str(tmp_path), *args[1:]]
        return runner.invoke(app, argv, input=input)

    invoke.fake = fake
    return invoke


def _changed(fake) -> list[list[str]]:
    """Commands that may change something (everything but the read-only probes)."""
    return [argv for argv, _ in fake.calls if "-j" not in argv and not any(a.endswith("-save") for a in argv)]


@pytest.mark.parametrize("args, message", [
    # after `--`, -1 is the VM id (without it click reads an unknown option -1 and the test proved nothing)
    (["attach", "--bridge", "vnbr0", "--", "-1", "0"], "Invalid value for 'VM': '-1' is not an id (decimal digits, at most 10)"),
    (["attach", "--bridge", "vnbr0", "--", "7", "-1"], "Invalid value for 'NIC': '-1' is not an id (decimal digits, at most 10)"),
    (["detach", "--", "-1", "0"], "Invalid value for 'VM': '-1' is not an id (decimal digits, at most 10)"),
    (["update", "--rules", "-", "--", "7", "-1"], "Invalid value for 'NIC': '-1' is not an id (decimal digits, at most 10)"),
    (["verify", "--", "7", "-1"], "Invalid value for '[NIC]': '-1' is not an id (decimal digits, at most 10)"),
    (["attach", "abc", "0", "--bridge", "vnbr0"], "Invalid value for 'vm'"),
    (["attach", "7", "0"], "--bridge (or --vm-xml) is required"),
    (["attach", "7", "0", "--bridge", "nobr"], "VN bridge nobr does not exist"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--tap", "a/b"], "tap 'a/b' is not a valid interface name"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--tap", "one-8-0"], "tap one-8-0 does not exist"),
    (["attach", "7", "0", "--bridge", "vnbr0", "--rules", "/nonexistent"], "cannot read /nonexistent"),
    (["attach", "10000000000", "0", "--bridge", "vnbr0"], "is not an id (decimal digits, at most 10)"),
    (["attach", "+1", "0", "--bridge", "vnbr0"], "is not an id"),
    (["verify", "1_0"], "is not an id"),
    (["update", "7", "0", "--rules", "-"], "not attached"),
    (["verify", "7"], "no attached NIC recorded"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(cli, args, message):
    result = cli(*args, input="[]")
    assert result.exit_code == 2, result.output
    assert message.lower() in result.output.lower()
    assert "no such option" not in result.output.lower()
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
    from netfw.model.spec import NicSpec

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
    from netfw.model.document import MAX_INPUT

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


# --- the last guard (issue 13): an error netfw did not foresee is one ERROR line and exit 1, never a traceback -------

NETFW = Path(sys.executable).with_name("netfw")  # the venv's console script, whatever PATH says


def _recorded(root: Path) -> None:
    """A valid record of VM 7 NIC 0, so that verify goes on to its probes (runner._execute)."""
    from netfw import state
    from netfw.model.spec import NicSpec

    state.write(state.nic_path(root, 7, 0), state.document(state.Applied(NicSpec(7, 0, "vnbr0"), 1500)))


def _one_error_line(stderr: str) -> str:
    """The ERROR line of stderr, checking that it is the only one and that every line is a log line."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert all(line.split(":", 1)[0] in ("DEBUG", "INFO", "WARNING", "ERROR") for line in lines), stderr
    errors = [line for line in lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_an_unforeseen_error_in_process_is_one_error_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """The console entry point itself (netfw.cli.run), with the command layer raising what nothing expects."""
    from netfw import cli, runner

    _recorded(tmp_path)

    def boom(argv, stdin, timeout):
        raise RuntimeError(f"injected deep down at {argv[0]}\nsecond line")

    monkeypatch.setattr(runner, "_execute", boom)
    monkeypatch.setattr(sys, "argv", ["netfw", "verify", "7", "0", "--state-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert _one_error_line(err) == "ERROR: netfw: unexpected RuntimeError: injected deep down at ip | second line"


def test_an_unforeseen_error_in_a_real_netfw_process_is_one_error_line_and_exit_1(tmp_path):
    """The same through the installed `netfw` executable: a sitecustomize on PYTHONPATH makes the command layer raise
    before netfw's code runs (the process is otherwise untouched)."""
    _recorded(tmp_path / "state")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import netfw.runner\n"
        "def _boom(argv, stdin, timeout):\n"
        "    raise KeyError('injected by the test')\n"
        "netfw.runner._execute = _boom\n")
    env = {**os.environ, "PYTHONPATH": str(hook)}
    for argv in (["verify", "7", "0"], ["verify", "7", "0", "--json"], ["verify", "7"]):
        res = subprocess.run([str(NETFW), *argv, "--state-dir", str(tmp_path / "state")], capture_output=True,
                             text=True, env=env)
        assert res.returncode == 1, res.stderr
        assert res.stdout == ""
        assert _one_error_line(res.stderr) == "ERROR: netfw: unexpected KeyError: 'injected by the test'"


def test_the_unforeseen_error_line_is_bounded_and_on_one_line():
    from netfw.cli import MAX_UNEXPECTED, unexpected

    line = unexpected(ValueError("x" * 5000 + "\n\ny"))
    assert "\n" not in line and line.startswith("ERROR: netfw: unexpected ValueError: xxx")
    assert len(line) < MAX_UNEXPECTED + 100 and line.endswith("... (5004 characters)")
    assert unexpected(RuntimeError()) == "ERROR: netfw: unexpected RuntimeError"


@pytest.mark.parametrize("argv", [["attach", "abc", "0"], ["attach", "--bridge", "vnbr0", "--", "-1", "0"],
                                  ["detach", "--", "7", "-1"], ["verify", "7", "0", "extra"]])
def test_usage_errors_of_the_netfw_executable_are_one_line_exit_2(argv):
    res = subprocess.run([str(NETFW), *argv], capture_output=True, text=True)
    assert (res.returncode, res.stdout) == (2, "")
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("ERROR: netfw ")


def test_rolled_back_is_said_on_the_error_line_before_the_failing_input_lines(cli, mocker):
    """A *-restore error carries the failing input line with its context below the ERROR line: "(rolled back)" used
    to end the last of those lines, not the ERROR line (found by tests/integration/test_cli.py)."""
    from netfw import runner

    fake = runner._execute

    def restore_fails(argv, stdin, timeout):
        if "ip6tables-restore" in argv:
            fake(argv, stdin, timeout)
            return runner.Result(tuple(argv), 2, "", "ip6tables-restore v1.8.9 (nf_tables): line 3 failed")
        return fake(argv, stdin, timeout)

    mocker.patch.object(runner, "_execute", side_effect=restore_fails)
    result = cli("attach", "7", "0", "--bridge", "vnbr0")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].endswith("line 3 failed (rolled back)"), lines
    context = lines[lines.index(errors[0]) + 1:]
    assert context and any(line.startswith(">    3: ") for line in context), lines
    assert "(rolled back)" not in "\n".join(context)


# --- the conntrack cap (issue 11) -----------------------------------------------------------------------------------


def _restores(fake) -> dict[str, str]:
    return {argv[2]: stdin for argv, stdin in fake.calls if argv[0] == "nsenter" and argv[2].endswith("-restore")}


def test_attach_conntrack_max_is_each_familys_and_one_source_gets_half(cli):
    """Issue 19, 7: an IPv4-only VM gets the whole cap (the kernel counts the families apart), and one source of
    flows to the VM at most half of it (an IPv4 address, an IPv6 /64)."""
    result = cli("attach", "7", "0", "--bridge", "vnbr0", "--conntrack-max", "1001")
    assert result.exit_code == 0, result.output
    restores = _restores(cli.fake)
    for tool, prefix in (("iptables-restore", 32), ("ip6tables-restore", 64)):
        assert "-A one-7-0-c -m connlimit --connlimit-upto 1001 --connlimit-mask 0 --connlimit-saddr -j ACCEPT" in \
            restores[tool]
        assert ("-A one-7-0-c -m physdev --physdev-out one-7-0 --physdev-is-bridged -m connlimit --connlimit-above 500 "
                f"--connlimit-mask {prefix} --connlimit-saddr -j one-7-0-p") in restores[tool]


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
