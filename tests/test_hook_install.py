"""`netfw hook install` and `netfw hook uninstall` (netfw.opennebula.hook_install): the qemu hook into a libvirt hooks
directory, idempotent, never over a file that is not netfw's, never through a symbolic link."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from netfw.opennebula import hook_install
from netfw.cli import app

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "libvirt" / "qemu.d" / "netfw"


def run(*argv: str):
    result = CliRunner().invoke(app, ["hook", *argv])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def hooks(tmp_path):
    folder = tmp_path / "hooks"
    folder.mkdir()
    return folder


def test_install_writes_the_script_executable_and_a_second_run_changes_nothing(hooks):
    code, out, _ = run("install", "--hooks-dir", str(hooks))
    assert code == 0 and out.splitlines() == [
        "mkdir qemu.d", "write qemu.d/netfw",
        f"INFO: netfw hook install: {hooks}/qemu.d/netfw: changed: mkdir qemu.d, write qemu.d/netfw; "
        "restart libvirtd to load it"]
    target = hooks / "qemu.d" / "netfw"
    assert target.read_bytes() == SCRIPT.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert stat.S_IMODE((hooks / "qemu.d").stat().st_mode) == 0o755
    assert run("install", "--hooks-dir", str(hooks))[1].splitlines() == [
        f"INFO: netfw hook install: {hooks}/qemu.d/netfw: nothing to change"]


def test_install_updates_an_older_netfw_script(hooks):
    (hooks / "qemu.d").mkdir()
    (hooks / "qemu.d" / "netfw").write_bytes(b"#!/bin/sh" + hook_install.MARKER + b"older\n")
    code, out, _ = run("install", "--hooks-dir", str(hooks), "--json")
    assert code == 0 and json.loads(out) == {"action": "install", "path": f"{hooks}/qemu.d/netfw", "dry_run": False,
                                             "changes": ["write qemu.d/netfw"]}
    assert (hooks / "qemu.d" / "netfw").read_bytes() == SCRIPT.read_bytes()


def test_a_dry_run_changes_nothing(hooks):
    code, out, _ = run("install", "--hooks-dir", str(hooks), "--dry-run")
    assert code == 0 and "would change: mkdir qemu.d, write qemu.d/netfw" in out
    assert list(hooks.iterdir()) == []


@pytest.mark.parametrize("action", ["install", "uninstall"])
def test_a_file_that_is_not_netfws_is_refused_and_kept(hooks, action):
    (hooks / "qemu.d").mkdir()
    (hooks / "qemu.d" / "netfw").write_text("#!/bin/sh\n# the operator's own\n")
    code, out, err = run(action, "--hooks-dir", str(hooks))
    assert code == 2 and out == ""
    assert err == f"ERROR: netfw hook {action}: {hooks}/qemu.d/netfw is not netfw's hook script: refused (nothing " \
                  "changed)\n"
    assert (hooks / "qemu.d" / "netfw").read_text() == "#!/bin/sh\n# the operator's own\n"


def test_symbolic_links_are_refused(hooks, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (hooks / "qemu.d").symlink_to(tmp_path / "elsewhere")
    code, _, err = run("install", "--hooks-dir", str(hooks))
    assert code == 2 and "a symbolic link: refused" in err and list((tmp_path / "elsewhere").iterdir()) == []
    (hooks / "qemu.d").unlink()
    (hooks / "qemu.d").mkdir()
    (hooks / "qemu.d" / "netfw").symlink_to(SCRIPT)
    code, _, err = run("install", "--hooks-dir", str(hooks))
    assert code == 2 and "a symbolic link: refused" in err and (hooks / "qemu.d" / "netfw").is_symlink()


def test_a_missing_hooks_directory_is_refused(tmp_path):
    code, _, err = run("install", "--hooks-dir", str(tmp_path / "none"))
    assert code == 2 and err == f"ERROR: netfw hook install: hooks directory {tmp_path}/none: no such directory\n"


def test_a_script_that_is_not_netfws_is_refused(hooks, tmp_path):
    (tmp_path / "other").write_text("#!/bin/sh\n")
    code, _, err = run("install", "--hooks-dir", str(hooks), "--script", str(tmp_path / "other"))
    assert code == 2 and "is not netfw's hook script (no '# netfw: libvirt qemu hook' line)" in err
    assert list(hooks.iterdir()) == []


def test_uninstall_removes_netfws_script_only_once(hooks):
    assert run("install", "--hooks-dir", str(hooks))[0] == 0
    (hooks / "qemu.d" / "other").write_text("#!/bin/sh\n")
    code, out, _ = run("uninstall", "--hooks-dir", str(hooks))
    assert code == 0 and out.splitlines()[0] == "remove qemu.d/netfw"
    assert sorted(p.name for p in (hooks / "qemu.d").iterdir()) == ["other"]
    assert run("uninstall", "--hooks-dir", str(hooks))[1].endswith("nothing to change\n")


def test_the_script_carries_the_marker():
    assert hook_install.MARKER in SCRIPT.read_bytes() and SCRIPT.stat().st_mode & 0o111
