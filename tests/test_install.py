"""`netfw one install` / `uninstall` (netfw/opennebula/install.py) against a stand-in of OpenNebula's remotes directory
(tests/remotes.py): the layout of docs/opennebula.md way A, idempotence, the originals back byte for byte (the very
files), refusals with nothing changed, hostile paths, the settings file, and the driver actions untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netfw.opennebula import install, install_layout
from netfw.opennebula.one import DEFAULT_VN_MADS
from tests import remotes

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts" / "opennebula"


def netfw(*args, env=None, input=None):
    """netfw as a process: (exit code, stdout, stderr)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    full.update(env or {})
    p = subprocess.run([sys.executable, "-c", "from netfw.entry import run; run()", *args], capture_output=True,
                       text=True, env=full, input=input, cwd=ROOT, timeout=60)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def tree(tmp_path):
    return remotes.make(tmp_path / "remotes")


@pytest.fixture
def settings(tmp_path):
    return tmp_path / "opennebula.conf"


def do(action, tree, *more, settings=None):
    extra = ["--settings", str(settings)] if settings is not None and action == "install" else []
    return netfw("one", action, "--remotes", str(tree), *extra, *more)


def test_install_makes_the_layout_of_the_table_and_uninstall_puts_the_very_originals_back(tree, settings):
    before = remotes.snapshot(tree)
    code, out, err = do("install", tree, settings=settings)
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-1].startswith(f"INFO: netfw one install: {tree}, drivers {','.join(DEFAULT_VN_MADS)}: "
                                           "made 60 change(s)")
    after = remotes.snapshot(tree)
    for driver in DEFAULT_VN_MADS:
        d = f"vnm/{driver}"
        for entry in install_layout.LAYOUT:
            kind, mode, _, _, content, _ = after[f"{d}/{entry.name}"]
            assert (kind, mode, content) == ("file", 0o755, (SCRIPTS / entry.source).read_bytes()), entry
            if entry.original:  # the driver's own file, the very inode, under its new name
                assert after[f"{d}/{entry.original}"] == before[f"{d}/{entry.name}"]
        # nothing else in the driver directory changed
        assert {k: v for k, v in after.items() if k.startswith(d + "/") and k[len(d) + 1:] not in
                {e.name for e in install_layout.LAYOUT} | {e.original for e in install_layout.LAYOUT}} == \
            {k: v for k, v in before.items() if k.startswith(d + "/") and k[len(d) + 1:] not in
             {e.name for e in install_layout.LAYOUT}}
    # drivers not asked for are untouched
    assert {k: v for k, v in after.items() if k.startswith(("vnm/dummy", "vnm/elastic", "vnm/common"))} == \
        {k: v for k, v in before.items() if k.startswith(("vnm/dummy", "vnm/elastic", "vnm/common"))}
    assert settings.read_text() == f"NETFW_VN_MADS={','.join(DEFAULT_VN_MADS)}\n"

    # idempotent: a second install changes nothing, not even an inode
    code, out, err = do("install", tree, settings=settings)
    assert (code, out.splitlines(), err) == (0, [
        f"INFO: netfw one install: {tree}, drivers {','.join(DEFAULT_VN_MADS)}: found nothing to change; "
        f"{settings} names the same drivers"], "")
    assert remotes.snapshot(tree) == after

    code, out, err = do("uninstall", tree)
    assert (code, err) == (0, ""), err
    assert remotes.snapshot(tree) == before
    code, out, err = do("uninstall", tree)
    assert (code, err, out.splitlines()[-1].endswith("found nothing to change")) == (0, "", True)
    assert remotes.snapshot(tree) == before


def test_the_table_is_the_documented_layout():
    assert [(e.name, e.source, e.original) for e in install_layout.LAYOUT] == [
        ("pre.d/netfw", "pre", None), ("post.d/netfw", "post", None),
        ("clean.netfw", "clean", None), ("clean", "chain", "clean.legacy"),
        ("update_nic.netfw", "update_nic", None), ("update_nic", "chain", "update_nic.legacy"),
        ("update_sg", "update_sg", "update_sg.legacy")]
    for entry in install_layout.LAYOUT:  # every script is recognisable as netfw's
        assert install_layout.MARKER in (SCRIPTS / entry.source).read_bytes()


def test_dry_run_changes_nothing_and_names_what_the_real_run_does(tree, settings):
    before = remotes.snapshot(tree)
    code, dry, err = do("install", tree, "--dry-run", "--drivers", "bridge,ovswitch", settings=settings)
    assert (code, err) == (0, "")
    assert remotes.snapshot(tree) == before and not settings.exists()
    code, real, err = do("install", tree, "--drivers", "bridge,ovswitch", settings=settings)
    assert dry.splitlines()[:-1] == real.splitlines()[:-1]
    assert "link vnm/bridge/clean vnm/bridge/clean.legacy" in dry.splitlines()
    assert "would make 20 change(s)" in dry.splitlines()[-1] and "(to be set)" in dry.splitlines()[-1]
    code, out, err = do("uninstall", tree, "--drivers", "bridge,ovswitch", "--json", "--dry-run")
    data = json.loads(out)
    assert (code, data["ok"], data["dry_run"], data["drivers"]) == (0, True, True, ["bridge", "ovswitch"])
    assert "rename vnm/bridge/clean.legacy vnm/bridge/clean" in data["changes"]


def test_the_settings_file_names_the_drivers_hooked(tree, settings):
    settings.write_text("# mine\nNETFW_BIN=/usr/sbin/netfw\nNETFW_VN_MADS=fw,bridge\nNETFW_SUDO=auto\n"
                        "NETFW_VN_MADS='bridge'\n")
    settings.chmod(0o640)
    assert do("install", tree, "--drivers", "bridge,ovswitch", settings=settings)[0] == 0
    assert settings.read_text() == "# mine\nNETFW_BIN=/usr/sbin/netfw\nNETFW_SUDO=auto\nNETFW_VN_MADS=bridge,ovswitch\n"
    assert settings.stat().st_mode & 0o777 == 0o640
    # the same drivers in another order: checked, left as it is
    inode = settings.stat().st_ino
    code, out, _ = do("install", tree, "--drivers", "ovswitch,bridge", settings=settings)
    assert code == 0 and "names the same drivers" in out and settings.stat().st_ino == inode
    # a value that is not a plain list of names is refused, nothing changed
    settings.write_text('NETFW_VN_MADS="$(id)"\n')
    before = remotes.snapshot(tree)
    code, out, err = do("install", tree, "--drivers", "vxlan", settings=settings)
    assert (code, err.count("\n")) == (2, 1) and "is not a plain comma list" in err
    assert remotes.snapshot(tree) == before
    # --settings '' leaves it alone
    assert do("install", tree, "--drivers", "vxlan", "--settings", "")[0] == 0
    assert settings.read_text() == 'NETFW_VN_MADS="$(id)"\n'


def test_an_opennebula_upgrade_that_overwrote_an_action_is_refused_and_never_loses_an_original(tree, settings):
    assert do("install", tree, "--drivers", "bridge", settings=settings)[0] == 0
    new = b"#!/bin/sh\n# OpenNebula's next bridge/clean\n"
    (tree / "vnm/bridge/clean").write_bytes(new)  # what a package upgrade does: the file replaced by name
    before = remotes.snapshot(tree)
    code, out, err = do("install", tree, "--drivers", "bridge", settings=settings)
    assert code == 2 and err.startswith("ERROR: netfw one install: vnm/bridge/clean is not netfw's but "
                                        "vnm/bridge/clean.legacy exists") and err.count("\n") == 1
    assert remotes.snapshot(tree) == before
    code, out, err = do("uninstall", tree, "--drivers", "bridge")
    assert code == 2 and "an OpenNebula upgrade?" in err
    assert remotes.snapshot(tree) == before
    # what the message says to do: keep the new original, install again
    os.rename(tree / "vnm/bridge/clean", tree / "vnm/bridge/clean.legacy")
    assert do("install", tree, "--drivers", "bridge", settings=settings)[0] == 0
    assert (tree / "vnm/bridge/clean.legacy").read_bytes() == new
    assert (tree / "vnm/bridge/clean").read_bytes() == (SCRIPTS / "chain").read_bytes()
    assert do("uninstall", tree, "--drivers", "bridge")[0] == 0
    assert (tree / "vnm/bridge/clean").read_bytes() == new


def test_an_older_netfw_is_updated_in_place(tree, settings):
    assert do("install", tree, "--drivers", "fw", settings=settings)[0] == 0
    old = (SCRIPTS / "chain").read_bytes().replace(b"exit \"$status\"", b"exit $status  # older netfw")
    (tree / "vnm/fw/update_nic").write_bytes(old)
    (tree / "vnm/fw/pre.d/netfw").write_bytes(install_layout.MARKER + b"older\n")
    code, out, _ = do("install", tree, "--drivers", "fw", settings=settings)
    assert code == 0 and out.splitlines()[:-1] == ["write vnm/fw/pre.d/netfw", "write vnm/fw/update_nic"]
    assert (tree / "vnm/fw/update_nic").read_bytes() == (SCRIPTS / "chain").read_bytes()


def test_an_install_stopped_after_keeping_the_original_is_finished(tree, settings):
    before = remotes.snapshot(tree)
    os.link(tree / "vnm/vxlan/update_sg", tree / "vnm/vxlan/update_sg.legacy")  # killed after the link
    code, out, _ = do("install", tree, "--drivers", "vxlan", settings=settings)
    assert code == 0 and "link vnm/vxlan/update_sg" not in out and "write vnm/vxlan/update_sg" in out
    assert do("uninstall", tree, "--drivers", "vxlan")[0] == 0
    assert remotes.snapshot(tree) == before


def test_a_driver_whose_action_is_a_symbolic_link_keeps_the_link_itself(tree, settings):
    before = remotes.snapshot(tree)
    assert do("install", tree, "--drivers", "dummy", settings=settings)[0] == 0
    assert os.readlink(tree / "vnm/dummy/update_nic.legacy") == "../common/dummy.sh"
    assert (tree / "vnm/common/dummy.sh").read_bytes().startswith(b"#!/bin/sh\n# stand-in")
    assert do("uninstall", tree, "--drivers", "dummy")[0] == 0
    assert remotes.snapshot(tree) == before


@pytest.mark.parametrize("case", ["remotes-link", "driver-link", "hooks-link", "hook-file-link", "legacy-link",
                                  "not-ours", "no-vnm", "no-driver", "dot-driver", "dotdot-driver", "bad-driver",
                                  "world-writable", "no-clean", "legacy-is-ours", "action-is-dir"])
def test_hostile_trees_and_arguments_are_refused_with_nothing_changed(tree, tmp_path, settings, case):
    target = tmp_path / "shadow"
    target.write_bytes(b"root:secret\n")
    remotes_arg, drivers = str(tree), "bridge"
    v = tree / "vnm"
    if case == "remotes-link":
        (tmp_path / "link").symlink_to(tree)
        remotes_arg = str(tmp_path / "link")
    elif case == "driver-link":
        (v / "evil").symlink_to(target.parent)
        drivers = "evil"
    elif case == "hooks-link":
        os.rename(v / "bridge/pre.d", v / "bridge/pre.d.old")
        (v / "bridge/pre.d").symlink_to(tmp_path)
    elif case == "hook-file-link":
        (v / "bridge/post.d/netfw").symlink_to(target)
    elif case == "legacy-link":
        (v / "bridge/clean.legacy").symlink_to(target)
    elif case == "not-ours":
        (v / "bridge/clean.netfw").write_text("#!/bin/sh\n# the operator's own\n")
    elif case == "no-vnm":
        remotes_arg = str(tmp_path)
    elif case == "no-driver":
        drivers = "bridge,nosuch"
    elif case == "dot-driver":
        drivers = "."
    elif case == "dotdot-driver":
        drivers = "bridge,.."
    elif case == "bad-driver":
        drivers = "bridge,../x"
    elif case == "world-writable":
        (v / "bridge").chmod(0o777)
    elif case == "no-clean":
        (v / "bridge/clean").unlink()
    elif case == "legacy-is-ours":
        (v / "bridge/update_sg.legacy").write_bytes((SCRIPTS / "update_sg").read_bytes())
    elif case == "action-is-dir":
        (v / "bridge/update_nic.netfw").mkdir()
    before, outside = remotes.snapshot(tree), remotes.snapshot(tmp_path)
    for action in ("install", "uninstall"):
        code, out, err = netfw("one", action, "--remotes", remotes_arg, "--drivers", drivers,
                               *(["--settings", str(settings)] if action == "install" else []))
        if case == "no-clean" and action == "uninstall":
            assert code == 0  # nothing of netfw's there: nothing to do
        else:
            assert code == 2, (action, out, err)
            assert err.startswith(f"ERROR: netfw one {action}: ") and err.count("\n") == 1, err
        assert remotes.snapshot(tree) == before and remotes.snapshot(tmp_path) == outside
        assert target.read_bytes() == b"root:secret\n"


@pytest.fixture
def chown_ok(tmp_path):
    """os.chown to another user works here (root, not in a user namespace that maps uid 0 alone); everything
    under tmp_path is given back to this user afterwards, so that it can be cleaned up."""
    probe = tmp_path / "chown-probe"
    probe.touch()
    try:
        os.chown(probe, 9869, 9869)
    except OSError as e:
        pytest.skip(f"cannot give a file to another user here ({e.strerror})")
    yield
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), os.geteuid(), os.getegid(), follow_symlinks=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root only (through sudo)")
def test_oneadmin_through_sudo_cannot_install_or_uninstall(tree, settings):
    before = remotes.snapshot(tree)
    for action in ("install", "uninstall"):
        code, out, err = netfw("one", action, "--remotes", str(tree), env={"SUDO_USER": "oneadmin", "SUDO_UID": "9869"})
        assert code == 2 and "refused through sudo for oneadmin" in err, err
    assert remotes.snapshot(tree) == before
    # an administrator through sudo may
    code, out, err = netfw("one", "install", "--remotes", str(tree), "--settings", str(settings),
                           env={"SUDO_USER": "alice", "SUDO_UID": "1000"})
    assert code == 0, err


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root only (through sudo)")
def test_the_owner_of_the_remotes_through_sudo_cannot_install(tree, settings, chown_ok):
    """oneadmin by another name: whoever owns the remotes tree."""
    before = remotes.snapshot(tree)
    os.chown(tree, 4242, 4242)
    code, out, err = netfw("one", "install", "--remotes", str(tree), env={"SUDO_USER": "one", "SUDO_UID": "4242"})
    assert code == 2 and "refused through sudo for one" in err
    assert remotes.snapshot(tree) == before


def test_netfw_files_take_the_owner_of_their_directory(tree, settings, chown_ok):
    for path in [tree / "vnm/bridge", tree / "vnm/bridge/post.d", *(tree / "vnm/bridge").iterdir()]:
        os.chown(path, 9869, 9869, follow_symlinks=False)
    (tree / "vnm/bridge/pre.d/.gitignore").unlink()
    (tree / "vnm/bridge/pre.d").rmdir()  # a missing hooks directory is made, with the same owner
    assert do("install", tree, "--drivers", "bridge", settings=settings)[0] == 0
    for name in ("pre.d", "pre.d/netfw", "post.d/netfw", "clean", "clean.netfw", "update_sg", "update_nic.netfw"):
        st = (tree / "vnm/bridge" / name).lstat()
        assert (st.st_uid, st.st_gid) == (9869, 9869), name


def test_the_driver_actions_parse_as_before():
    code, out, err = netfw("one", "--vn-mads", "bridge", "install", input="")
    assert code == 2 and "unknown driver action 'install'" in err
    code, out, err = netfw("one", "install", "--no-such-option")
    assert code == 2 and "No such option" in err
    code, out, err = netfw("one", "uninstall", "--help")
    assert code == 0 and "one uninstall [OPTIONS]" in out.splitlines()[0]
    code, out, err = netfw("one", "--help")
    assert code == 0 and "netfw one install" in out


@pytest.mark.parametrize(("text", "drivers", "expected"), [
    ("", ("bridge",), "NETFW_VN_MADS=bridge\n"),
    ("A=1", ("bridge",), "A=1\nNETFW_VN_MADS=bridge\n"),
    ("NETFW_VN_MADS=fw\nB=2\n", ("a", "b"), "NETFW_VN_MADS=a,b\nB=2\n"),
    ("export NETFW_VN_MADS=fw\nNETFW_VN_MADS=x\n", ("a",), "NETFW_VN_MADS=a\n"),
    ("# NETFW_VN_MADS=fw\n", ("a",), "# NETFW_VN_MADS=fw\nNETFW_VN_MADS=a\n"),
])
def test_with_setting(text, drivers, expected):
    assert install.with_setting(text, drivers) == expected
    assert install.read_setting(expected, "f") == drivers


def test_the_scripts_are_found_and_checked(tmp_path):
    assert set(install.scripts()) == {"pre", "post", "clean", "update_sg", "update_nic", "chain"}
    for name in ("pre", "post", "clean", "update_sg", "update_nic", "chain"):
        (tmp_path / name).write_bytes(b"#!/bin/sh\n")
    with pytest.raises(install.InstallError, match="is not a netfw script"):
        install.scripts(tmp_path)
