"""Start-up: what each kind of call imports (OpenNebula starts netfw once per driver action, so imports are paid on
every VM start, migration and NIC hot-plug), and that the console script keeps the CLI's output and exit codes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from netfw import __version__

#: Runs the console script's entry point with the given argv, then reports on stderr which heavy modules it imported.
PROBE = """
import atexit, sys
atexit.register(lambda: print("IMPORTED", *sorted(m for m in ("typer", "click", "loguru", "sh", "netfw.api")
                                                   if m in sys.modules), file=sys.stderr))
sys.argv = ["netfw", *sys.argv[1:]]
from netfw.entry import run
run()
"""


def entry(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    line = next(l for l in res.stderr.splitlines() if l.startswith("IMPORTED"))
    return res, set(line.split()[1:])


def test_the_console_script_is_the_entry_module():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "netfw"]
    assert script.value == "netfw.entry:run"


def test_version_imports_no_parser_no_logger_no_sh():
    res, imported = entry("--version")
    assert (res.returncode, res.stdout) == (0, f"netfw {__version__}\n")
    assert imported == set()


@pytest.mark.parametrize("args", [["--help"], ["attach", "--help"], ["-v", "detach", "--help"]])
def test_help_imports_the_parser_only(args):
    """A command's own --help too: the group callback runs before it, and sets up no logging (issue 12)."""
    res, imported = entry(*args)
    assert res.returncode == 0 and ("attach" in res.stdout or "Usage: netfw" in res.stdout)
    assert imported == {"typer", "click"}


@pytest.mark.parametrize("args", [["attach", "7", "0"], ["attach", "7", "0", "--bridge", "br0", "--rules", "/nonexistent"]])
def test_bad_input_starts_no_process_and_imports_no_sh(args):
    res, imported = entry(*args)
    assert res.returncode == 2
    assert res.stderr.startswith("ERROR: ") and res.stderr.count("ERROR") == 1
    assert "sh" not in imported


def test_version_after_an_option_is_still_answered_by_the_cli():
    res, imported = entry("-v", "--version")
    assert (res.returncode, res.stdout) == (0, f"netfw {__version__}\n")
    assert "typer" in imported


def test_usage_error_keeps_exit_2():
    res, imported = entry("attach", "abc", "0")
    assert res.returncode == 2 and "Invalid value" in res.stderr
    assert "loguru" not in imported  # click reports it: no logger needed


@pytest.mark.parametrize("verbose, debug", [([], False), (["-v"], True)])
def test_a_command_that_runs_logs_at_the_level_asked(tmp_path, verbose, debug):
    """The logger is set up when the command runs: INFO lines without -v, DEBUG lines (every command) with it."""
    res, imported = entry(*verbose, "verify", "7", "--state-dir", str(tmp_path))
    assert res.returncode == 2 and "loguru" in imported
    assert res.stderr.startswith("ERROR: VM 7 has no attached NIC recorded")
    res, _ = entry(*verbose, "detach", "7", "0", "--dry-run", "--state-dir", str(tmp_path / "s"), "--bridge", "nobr")
    assert ("DEBUG: read: ip" in res.stderr) == debug
