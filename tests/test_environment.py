"""The tests do not depend on the caller's environment (tests/conftest.py): no NETFW_* setting of the shell that runs
pytest reaches a test, and none that a test sets reaches the next one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import HARNESS, SESSION, netfw_environment

ROOT = Path(__file__).resolve().parents[1]
CALLER = {"NETFW_IPTABLES_BACKEND": "legacy", "NETFW_STATE_DIR": "/nonexistent/netfw", "NETFW_VN_MADS": "ovswitch",
          "NETFW_SUDO": "1", "NETFW_CONF": "/etc/passwd", "NETFW_BIN": "/bin/false", "NETFW_SOMETHING_NEW": "x"}


def test_no_netfw_setting_is_visible_in_a_test():
    assert netfw_environment() == {}
    assert all(k in HARNESS | SESSION for k in os.environ if k.startswith("NETFW_"))


def test_a_setting_made_by_a_test_itself():
    os.environ["NETFW_IPTABLES_BACKEND"] = "nft"  # as `netfw --backend nft` does in-process, without monkeypatch


def test_is_gone_in_the_next_test():
    assert "NETFW_IPTABLES_BACKEND" not in os.environ


def test_the_caller_s_settings_do_not_reach_the_tests():
    """pytest run from a shell exporting netfw settings: the tests that broke with NETFW_IPTABLES_BACKEND=legacy
    (tests/test_attach_plan.py) and the checks above pass all the same."""
    here = "tests/test_environment.py::"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_attach_plan.py",
         here + "test_no_netfw_setting_is_visible_in_a_test", here + "test_a_setting_made_by_a_test_itself",
         here + "test_is_gone_in_the_next_test"],
        cwd=ROOT, env={**os.environ, **CALLER}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout and "deselected" not in res.stdout
