"""The Debian package (issue 23): built by `make deb-build` from this tree (lintian without error), installed with
dpkg into a scratch root (`dpkg --root --force-script-chrootless`: the maintainer scripts run for real, on that root
through $DPKG_ROOT), and its installed layout checked: netfw runs from /usr/sbin/netfw, the sudo rule passes visudo,
the units pass systemd-analyze verify, the maintainer scripts are idempotent, remove keeps the VMs' state and says
so, purge removes the configuration only; the installed `netfw one install`/`uninstall` leave a copy of OpenNebula's
remotes layout byte for byte as before.

Needs the Debian build tools and the wheels of netfw's dependencies, which `make test` (as root) installs and fetches
before the sandbox; each test is skipped, saying why, where they are missing.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from netfw import __version__
from tests import remotes

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "build" / "wheels"
DEB = f"netfw_{__version__}_all.deb"
TOOLS = ("make", "dpkg", "dpkg-deb", "dpkg-buildpackage", "dh", "lintian", "visudo")
UNITS = ("netfw-gc.service", "netfw-metrics.service", "netfw-metrics.timer")


def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """The package built from this tree, and lintian's output."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"Debian build tools missing: {' '.join(missing)} (as root: make deb-deps)")
    if not (WHEELS / "requirements.txt").is_file():
        pytest.skip(f"no wheels of netfw's dependencies in {WHEELS} (make deb-wheels: needs the network)")
    if os.geteuid() != 0:
        pytest.skip("dpkg needs uid 0 (run inside scripts/sandbox, as make test does)")
    out = tmp_path_factory.mktemp("deb")
    p = run("make", "--no-print-directory", "deb-build", f"DEB_BUILD={out}/build", f"DEB_DIST={out}/dist", cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    return out / "dist" / DEB, p.stdout + p.stderr


class Root:
    """A scratch root with an empty dpkg database, and dpkg on it."""

    def __init__(self, path: Path):
        self.path = path
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
            (path / d).mkdir(parents=True)
        (path / "var/lib/dpkg/status").touch()

    def dpkg(self, *args):
        return run("dpkg", f"--root={self.path}", "--force-script-chrootless", "--force-depends", "--log=/dev/null",
                   *args)

    def __truediv__(self, other: str) -> Path:
        return self.path / other.lstrip("/")


@pytest.fixture
def root(tmp_path, deb):
    r = Root(tmp_path / "root")
    p = r.dpkg("-i", str(deb[0]))
    assert p.returncode == 0, p.stdout + p.stderr
    return r


def test_the_package_is_built_lintian_clean_with_its_dependencies(deb):
    path, log = deb
    assert path.name == DEB and path.is_file()
    assert not [line for line in log.splitlines() if line.startswith("E: ")], log
    fields = run("dpkg-deb", "-f", str(path), "Package", "Version", "Architecture", "Depends", "Recommends").stdout
    assert f"Version: {__version__}\n" in fields and "Architecture: all\n" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    assert {re.sub(r" \(.*\)", "", d) for d in depends.split(", ")} == {
        "python3", "iproute2", "iptables", "ipset", "conntrack", "ebtables", "util-linux", "sudo"}
    assert "Recommends: openvswitch-switch\n" in fields
    listing = run("dpkg-deb", "-c", str(path)).stdout
    assert ".pyc" not in listing and "__pycache__" not in listing and "/opt/" not in listing
    assert "./usr/lib/netfw/python/netfw/opennebula/install.py" in listing
    for dependency in ("sh/", "typer/", "click/", "loguru/", "defusedxml/"):
        assert f"./usr/lib/netfw/python/{dependency}" in listing, dependency
    control = run("dpkg-deb", "-I", str(path), "conffiles").stdout.split()
    assert control == ["/etc/netfw/opennebula.conf", "/etc/sudoers.d/netfw"]


def test_installed_layout(root):
    p = run(str(root / "usr/sbin/netfw"), "--version", env={"PATH": "/usr/bin:/bin"})
    assert (p.returncode, p.stdout, p.stderr) == (0, f"netfw {__version__}\n", "")
    # the package's own Python library: python3 -IS, nothing from the project's virtualenv or site-packages
    p = run(str(root / "usr/sbin/netfw"), "one", "install", "--help", env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "Hook netfw into OpenNebula" in p.stdout, p.stderr
    assert (root / "usr/sbin/netfw").read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert list((root / "usr/lib/netfw/python").rglob("*.pyc")), "postinst compiles the byte-code"

    sudoers = root / "etc/sudoers.d/netfw"
    st = sudoers.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 0, 0)
    p = run("visudo", "-c", "-f", str(sudoers))
    assert p.returncode == 0, p.stdout + p.stderr
    rules = [line for line in sudoers.read_text().splitlines() if line and not line.startswith("#")]
    assert rules == ["Cmnd_Alias NETFW_DRIVER = /usr/sbin/netfw one *",
                     "Cmnd_Alias NETFW_SETUP = /usr/sbin/netfw one install*, /usr/sbin/netfw one uninstall*",
                     "oneadmin ALL=(root) NOPASSWD: NETFW_DRIVER, !NETFW_SETUP"]

    assert (root / "usr/lib/modules-load.d/netfw.conf").read_text() == "br_netfilter\n"
    st = (root / "var/lib/netfw").stat()
    assert stat.S_ISDIR(st.st_mode) and (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    conf = (root / "etc/netfw/opennebula.conf").read_text()
    assert "NETFW_BIN=/usr/sbin/netfw\n" in conf
    assert "NETFW_VN_MADS=fw,802.1Q,vxlan,bridge,ovswitch,ovswitch_vxlan\n" in conf
    for name in ("pre", "post", "clean", "update_sg", "update_nic", "chain"):
        installed = root / "usr/share/netfw/opennebula" / name
        assert installed.read_bytes() == (ROOT / "scripts/opennebula" / name).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755

    # the libvirt qemu hook, active: a link (it goes with the package) to the script `netfw hook install` copies
    installed = root / "usr/share/netfw/libvirt/qemu.d/netfw"
    assert installed.read_bytes() == (ROOT / "scripts/libvirt/qemu.d/netfw").read_bytes()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert os.readlink(root / "etc/libvirt/hooks/qemu.d/netfw") == "/usr/share/netfw/libvirt/qemu.d/netfw"
    p = run(str(root / "usr/sbin/netfw"), "hook", "install", "--help", env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0 and "qemu.d/netfw" in p.stdout, p.stderr

    # netfw-gc enabled at boot, the metrics timer not
    wants = root / "etc/systemd/system/multi-user.target.wants/netfw-gc.service"
    assert os.readlink(wants) == "/lib/systemd/system/netfw-gc.service"
    assert not list((root / "etc/systemd/system").rglob("netfw-metrics*"))
    for unit in UNITS:
        text = (root / "lib/systemd/system" / unit).read_text()
        assert "/usr/local/" not in text
    assert "ExecStart=/usr/sbin/netfw gc\n" in (root / "lib/systemd/system/netfw-gc.service").read_text()


def test_the_units_pass_systemd_analyze_verify(root, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = tmp_path / "units"
    units.mkdir()
    # the installed units, with their one path to the program mapped into the scratch root (verify checks that
    # the program exists and is executable)
    for unit in UNITS:
        text = (root / "lib/systemd/system" / unit).read_text()
        (units / unit).write_text(text.replace("/usr/sbin/netfw", str(root / "usr/sbin/netfw")))
    p = run("systemd-analyze", "verify", "--man=no", *[str(units / u) for u in UNITS])
    assert (p.returncode, p.stderr) == (0, ""), p.stderr


def test_maintainer_scripts_are_idempotent_remove_keeps_the_vms_and_purge_the_configuration_only(root, deb):
    record = root / "var/lib/netfw/vm-7/nic-0.json"
    record.parent.mkdir(mode=0o700)
    record.write_text('{"a VM": "still behind netfw"}')
    (root / "etc/netfw/opennebula.conf").write_text("NETFW_VN_MADS=bridge\n")  # the operator's change
    before = {str(p.relative_to(root.path)) for p in root.path.rglob("*") if "/dpkg" not in str(p) and
              "__pycache__" not in str(p)}

    p = root.dpkg("-i", str(deb[0]))  # again: prerm upgrade, postinst configure over an installed package
    assert p.returncode == 0, p.stdout + p.stderr
    p = root.dpkg("--configure", "--pending")
    assert p.returncode == 0, p.stderr
    after = {str(p.relative_to(root.path)) for p in root.path.rglob("*") if "/dpkg" not in str(p) and
             "__pycache__" not in str(p)}
    assert after == before
    assert (root / "etc/netfw/opennebula.conf").read_text() == "NETFW_VN_MADS=bridge\n"

    p = root.dpkg("--remove", "netfw")
    assert p.returncode == 0, p.stderr
    assert "The firewalls of the VMs behind netfw stay in place" in p.stderr
    assert not (root / "usr/sbin/netfw").exists() and not (root / "usr/lib/netfw").exists()
    assert not os.path.lexists(root / "etc/libvirt/hooks/qemu.d/netfw")  # no hook left that would fail every start
    assert record.read_text() == '{"a VM": "still behind netfw"}'
    assert (root / "etc/sudoers.d/netfw").exists() and (root / "etc/netfw/opennebula.conf").exists()

    p = root.dpkg("--purge", "netfw")
    assert p.returncode == 0, p.stderr
    assert "/var/lib/netfw is kept" in p.stderr
    assert not (root / "etc/sudoers.d/netfw").exists() and not (root / "etc/netfw").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/netfw-gc.service").exists()
    assert record.read_text() == '{"a VM": "still behind netfw"}'


def test_the_installed_netfw_hooks_into_a_remotes_tree_and_leaves_it_byte_for_byte(root, tmp_path):
    tree = remotes.make(tmp_path / "remotes")
    before = remotes.snapshot(tree)
    netfw = str(root / "usr/sbin/netfw")
    settings = tmp_path / "opennebula.conf"
    p = run(netfw, "one", "install", "--remotes", str(tree), "--settings", str(settings), env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    for driver in ("bridge", "ovswitch"):
        assert (tree / f"vnm/{driver}/clean").read_bytes() == (root / "usr/share/netfw/opennebula/chain").read_bytes()
        assert (tree / f"vnm/{driver}/post.d/netfw").read_bytes() == \
            (root / "usr/share/netfw/opennebula/post").read_bytes()
    assert settings.read_text() == "NETFW_VN_MADS=fw,802.1Q,vxlan,bridge,ovswitch,ovswitch_vxlan\n"
    p = run(netfw, "one", "uninstall", "--remotes", str(tree), env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert remotes.snapshot(tree) == before
