"""What every test gets: an environment without the caller's netfw settings.

netfw and its OpenNebula wrappers read NETFW_IPTABLES_BACKEND, NETFW_STATE_DIR, NETFW_VN_MADS, NETFW_SUDO,
NETFW_CONF, NETFW_BIN (and whatever comes next): a developer's shell that exports one of them must not change what a
test sees (NETFW_IPTABLES_BACKEND=legacy broke two unit tests, issue 13). So every NETFW_* variable is removed for
the whole session, and whatever a test sets (directly, or through code under test, such as `--backend` in-process)
is undone after it. Kept: the switches of the test harness itself, which netfw never reads.
"""

from __future__ import annotations

import os

import pytest

#: Test-harness switches, not netfw settings: set by scripts/sandbox (where the tests run), and the request to
#: rewrite tests/data/render (tests/test_render.py).
HARNESS = frozenset({"NETFW_IN_SANDBOX", "NETFW_UPDATE_RENDER"})
#: netfw settings the session sets for every test, whatever the caller's: the legacy driver's lock file
#: (netfw.opennebula.legacy) is the session's own, never /tmp/onevnm-vnmmad::sgdriver-lock of the machine.
SESSION = frozenset({"NETFW_LEGACY_SG_LOCK"})


def netfw_environment() -> dict[str, str]:
    """The NETFW_* variables of this process that are netfw settings."""
    return {k: v for k, v in os.environ.items() if k.startswith("NETFW_") and k not in HARNESS | SESSION}


def _restore(wanted: dict[str, str]) -> None:
    for key in netfw_environment():
        if key not in wanted:
            del os.environ[key]
    os.environ.update(wanted)


@pytest.fixture(scope="session", autouse=True)
def _no_netfw_settings_from_the_caller(tmp_path_factory):
    """The caller's NETFW_* settings are gone for the whole session (and back afterwards); SESSION's are set."""
    caller, session = netfw_environment(), {k: os.environ.get(k) for k in SESSION}
    _restore({})
    os.environ["NETFW_LEGACY_SG_LOCK"] = str(tmp_path_factory.mktemp("legacy") / "onevnm-vnmmad::sgdriver-lock")
    yield
    _restore(caller)
    for key, value in session.items():
        os.environ.pop(key, None) if value is None else os.environ.update({key: value})


@pytest.fixture(autouse=True)
def _netfw_settings_per_test():
    """A test leaves the NETFW_* settings as it found them, even those that the code under test set itself.

    Function-scoped, so it restores what module fixtures set (a module's NETFW_STATE_DIR) rather than clearing it.
    """
    found = netfw_environment()
    yield
    _restore(found)
