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
