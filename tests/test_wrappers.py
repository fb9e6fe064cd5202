"""The OpenNebula wrappers (scripts/opennebula/*) choose between sudo and running netfw directly (issue 10: as root
on a host without sudo they died with `exec: sudo: not found`, exit 127 and no ERROR line)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netfw import api
from netfw.opennebula import driver_call

ROOT = Path(__file__).resolve().parents[1]
WRAPPERS = ROOT / "scripts" / "opennebula"
DOC = base64.b64encode((ROOT / "tests" / "data" / "one" / "two_nics.xml").read_bytes()).decode() + "\n"


def as_root(argv: list[str]) -> list[str]:
    """argv run as uid 0: directly when we are root, else in a user namespace that maps us to root."""
    if os.geteuid() == 0:
        return argv
    if shutil.which("unshare") is None:
        pytest.skip("not root and no unshare to become uid 0 in a user namespace")
    return ["unshare", "--user", "--map-root-user", *argv]


def fake_bin(tmp_path: Path, uid: str | None = None, sudo: bool = False) -> Path:
    """A PATH directory with a netfw (and sudo) that log their argv and stdin, and `id` (real, or printing uid)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "log"
    (folder / "netfw").write_text(f'#!/bin/sh\necho netfw "$@" >> {log}\n{shutil.which("cat")} >> {log}\n')
    if sudo:
        (folder / "sudo").write_text(f'#!/bin/sh\necho sudo "$@" >> {log}\nshift\nexec "$@"\n')
    if uid is None:
        (folder / "id").symlink_to(shutil.which("id"))
    else:
        (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for f in folder.iterdir():
        if not f.is_symlink():
            f.chmod(0o755)
    return folder


def run(argv: list[str], path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {"PATH": str(path), "NETFW_CONF": "/nonexistent", **env}
    return subprocess.run(argv, input="DOC\n", text=True, env=full, capture_output=True)


@pytest.mark.parametrize("action", list(driver_call.ACTIONS))
def test_as_root_without_sudo_on_path_the_wrapper_runs_netfw_directly(tmp_path, action):
    path = fake_bin(tmp_path)
    res = run(as_root([str(WRAPPERS / action), "a1"]), path, NETFW_STATE_DIR="/srv/netfw")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "log").read_text() == f"netfw one --state-dir /srv/netfw {action} a1\nDOC\n"


def test_pre_as_root_without_sudo_runs_the_real_netfw(tmp_path):
    """The real thing: `pre` with a PATH holding netfw's tools but no sudo, as uid 0."""
    tools = {t: shutil.which(t) for t in (*api.TOOLS, "iptables-save", "ip6tables-save", "id")}
    if None in tools.values() or not os.path.isdir("/proc/sys/net/bridge"):
        pytest.skip("this host lacks a tool netfw's pre checks for, or br_netfilter")
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, where in tools.items():
        (folder / name).symlink_to(where)
    assert shutil.which("sudo", path=str(folder)) is None
    (tmp_path / "state").mkdir(mode=0o700)
    res = subprocess.run(as_root([str(WRAPPERS / "pre")]), input=DOC, text=True, capture_output=True,
                         env={"PATH": str(folder), "NETFW_CONF": "/nonexistent",
                              "NETFW_BIN": str(ROOT / ".venv" / "bin" / "netfw"),
                              "NETFW_STATE_DIR": str(tmp_path / "state")})  # pre writes the pending record
    assert res.returncode == 0, res.stderr
    assert "INFO: netfw pre: VM 42: host ready for NIC 0, 1, 3; pending for the libvirt hook: NIC 0, 1, 3" in res.stderr
    assert (tmp_path / "state" / "vm-42" / "pending.json").is_file()


def test_not_root_and_no_sudo_is_one_error_line(tmp_path):
    res = run([str(WRAPPERS / "post"), "one-42", "h"], fake_bin(tmp_path, uid="9869"))
    assert res.returncode == 1
    assert res.stderr.splitlines() == ["ERROR: netfw post: sudo not found (netfw needs root; this is uid 9869, "
                                       "NETFW_SUDO=auto)"]
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("setting, uid, via_sudo", [
    ("1", "0", True),      # forced, even as root
    ("0", "9869", False),  # never (tests, or drivers that already run as root)
    ("auto", "9869", True),
    ("auto", "0", False),
])  # fmt: skip
def test_netfw_sudo_setting(tmp_path, setting, uid, via_sudo):
    res = run([str(WRAPPERS / "clean"), "h"], fake_bin(tmp_path, uid=uid, sudo=True), NETFW_SUDO=setting)
    assert res.returncode == 0, res.stderr
    netfw = tmp_path / "bin" / "netfw"
    expected = "netfw one clean h\nDOC\n"
    assert (tmp_path / "log").read_text() == (f"sudo -n {netfw} one clean h\n" if via_sudo else "") + expected


def test_a_bad_netfw_sudo_setting_is_one_error_line(tmp_path):
    res = run([str(WRAPPERS / "clean"), "h"], fake_bin(tmp_path, sudo=True), NETFW_SUDO="yes")
    assert res.returncode == 1
    assert res.stderr.splitlines() == ["ERROR: netfw clean: NETFW_SUDO=yes is not auto, 1 or 0 "
                                       "(in /nonexistent or the environment)"]
    assert not (tmp_path / "log").exists()


def test_settings_become_options(tmp_path):
    path = fake_bin(tmp_path)
    res = run(as_root([str(WRAPPERS / "update_sg"), "one-7"]), path, NETFW_CONNTRACK_MAX="5000",
              NETFW_IPTABLES_BACKEND="legacy")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "log").read_text() == "netfw one --conntrack-max 5000 --backend legacy update_sg one-7\nDOC\n"
