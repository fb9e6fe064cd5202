"""`netfw one install` and `netfw one uninstall`: hook netfw into OpenNebula's network drivers on the front-end.

Way A of docs/opennebula.md, in `<remotes>/vnm/<driver>/` for each driver, as LAYOUT says. Everything is planned
first (every driver directory read, every file classified) and nothing is changed unless the whole plan is sound:
bad input or a tree netfw does not understand is exit 2 with one line and nothing touched.

The remotes tree belongs to oneadmin, and netfw runs as root: every file is reached through directory descriptors
opened with O_NOFOLLOW (the path given on the command line is followed up to its last component, which must be a
real directory), new files are created O_EXCL|O_NOFOLLOW and renamed into place, the driver's original is kept by
a hard link of the entry itself (a symbolic link is linked, never followed), and netfw's files take the owner of the
directory they are in. Keeping an original by a hard link before the new file is renamed over its name leaves no
moment without the action's script, and uninstall renames the original back: the very file, with its mode, owner
and times, as it was.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from netfw.state import fs as statefs
from netfw.errors import InputError
from .install_layout import InstallError
from .install_tree import Driver, apply, lstat, open_dir, plan_install, plan_uninstall, read, scripts

DEFAULT_REMOTES = "/var/lib/one/remotes"
DEFAULT_SETTINGS = "/etc/netfw/opennebula.conf"
#: The user OpenNebula runs its drivers as, whose sudo rule allows `netfw one *`.
DRIVER_USER = "oneadmin"
MAX_SETTINGS = 64 << 10

_SETTING_RE = re.compile(r"[ \t]*(?:export[ \t]+)?NETFW_VN_MADS=(.*)")


# ----------------------------------------------------------------------------------------------------------- settings

def read_setting(text: str, shown: str) -> tuple[str, ...] | None:
    """The VN_MADs that NETFW_VN_MADS assigns in a settings file (the last assignment, as the shell reads it), None
    when none does. InstallError for a value that is not a plain list of driver names."""
    from .driver_call import parse_vn_mads

    value = None
    for line in text.splitlines():
        if m := _SETTING_RE.fullmatch(line):
            value = m.group(1).strip()
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    try:
        return parse_vn_mads(value) if value else None
    except InputError:
        raise InstallError(f"{shown}: NETFW_VN_MADS={value!r} is not a plain comma list of driver names") from None


def with_setting(text: str, drivers: tuple[str, ...]) -> str:
    """text with NETFW_VN_MADS set to drivers: its assignment lines replaced by one (where the last was), or one
    added at the end. Pure."""
    line = f"NETFW_VN_MADS={','.join(drivers)}"
    lines = text.splitlines()
    hits = [i for i, x in enumerate(lines) if _SETTING_RE.fullmatch(x)]
    if not hits:
        return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"
    kept = [x for i, x in enumerate(lines) if i not in hits[:-1]]
    kept[hits[-1] - len(hits) + 1] = line
    return "\n".join(kept) + "\n"


# ----------------------------------------------------------------------------------------------------------- commands

@dataclass
class Outcome:
    action: str
    remotes: str
    drivers: tuple[str, ...]
    changes: list[str] = field(default_factory=list)
    settings: str | None = None
    settings_changed: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"ok": True, "action": self.action, "remotes": self.remotes, "drivers": list(self.drivers),
                "dry_run": self.dry_run, "changes": self.changes, "settings": self.settings,
                "settings_changed": self.settings_changed}

    def summary(self) -> str:
        what = f"{len(self.changes)} change(s)" if self.changes else "nothing to change"
        done = "would make" if self.dry_run and self.changes else "made" if self.changes else "found"
        line = f"netfw one {self.action}: {self.remotes}, drivers {','.join(self.drivers)}: {done} {what}"
        if self.settings:
            line += (f"; {self.settings}: NETFW_VN_MADS={','.join(self.drivers)}"
                     f" ({'to be set' if self.dry_run else 'set'})" if self.settings_changed else
                     f"; {self.settings} names the same drivers")
        return line


def refuse_driver_user(remotes_uid: int | None) -> None:
    """install and uninstall write OpenNebula's remotes as root: the driver user's sudo rule (`netfw one *`) is for
    driver actions, so a run through sudo by that user (or by the owner of the remotes tree) is refused."""
    user, uid = os.environ.get("SUDO_USER"), os.environ.get("SUDO_UID")
    if os.geteuid() != 0 or not (user or uid):
        return
    if user == DRIVER_USER or (uid and uid.isdigit() and remotes_uid is not None and int(uid) == remotes_uid
                               and int(uid) != 0):
        raise InstallError(f"refused through sudo for {user or 'uid ' + uid}: the driver user's sudo rule is for "
                           "driver actions; run install and uninstall as root")


def run(action: str, remotes: str, drivers: tuple[str, ...], dry_run: bool = False,
        script_dir: str | None = None, settings: str | None = DEFAULT_SETTINGS) -> Outcome:
    """install or uninstall in every driver directory; raises InstallError (nothing changed) or OSError (a change
    failed part-way: running again finishes or undoes it)."""
    if not remotes or "\0" in remotes:
        raise InstallError("--remotes: not a directory path")
    if bad := [d for d in drivers if d in (".", "..")]:
        raise InstallError(f"--drivers: {bad[0]!r} is not a driver name")
    root_fd = open_dir(remotes, remotes)
    opened: list[Driver] = []
    try:
        refuse_driver_user(os.fstat(root_fd).st_uid)
        vnm_fd = open_dir("vnm", f"{remotes}/vnm", root_fd)
        try:
            sources = scripts(script_dir) if action == "install" else {}
            plans = []
            for name in drivers:
                driver = Driver(vnm_fd, name)
                opened.append(driver)
                plans.append((driver, plan_install(driver, sources) if action == "install" else
                              plan_uninstall(driver)))
            new_settings = _plan_settings(settings, drivers) if action == "install" and settings else None
            outcome = Outcome(action, remotes, drivers, [str(c) for _, plan in plans for c in plan],
                              settings if action == "install" else None, new_settings is not None, dry_run)
            if dry_run:
                return outcome
            for driver, plan in plans:
                st = os.fstat(driver.fd)
                owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
                for change in plan:
                    sub = change.where[len(driver.where) + 1:]
                    if not sub:
                        apply(driver.fd, change, owner)
                        continue
                    if driver.subdirs.get(sub) is None:  # made by a change of this plan
                        driver.subdirs[sub] = open_dir(sub, change.where, driver.fd)
                    apply(driver.subdirs[sub], change, owner)
            if new_settings is not None:
                _write_settings(settings, new_settings)
            return outcome
        finally:
            os.close(vnm_fd)
    finally:
        for driver in opened:
            driver.close()
        os.close(root_fd)


def _settings_dir(path: str) -> tuple[str, str]:
    parent, _, name = path.rpartition("/")
    if not name or name in (".", ".."):
        raise InstallError(f"--settings {path!r}: not a file path")
    return parent or ".", name


def _plan_settings(path: str, drivers: tuple[str, ...]) -> bytes | None:
    """The settings file's new content when it does not name exactly drivers already, else None."""
    parent, name = _settings_dir(path)
    fd = open_dir(parent, parent, missing_ok=path == DEFAULT_SETTINGS)
    if fd is None:
        return with_setting("", drivers).encode()
    try:
        data = read(fd, name, path, MAX_SETTINGS)
    finally:
        os.close(fd)
    try:
        text = "" if data is None else data.decode()
    except UnicodeDecodeError:
        raise InstallError(f"{path}: not UTF-8 text: refused") from None
    current = read_setting(text, path)
    if current is not None and set(current) == set(drivers):
        return None
    return with_setting(text, drivers).encode()


def _write_settings(path: str, data: bytes) -> None:
    parent, name = _settings_dir(path)
    if path == DEFAULT_SETTINGS and not os.path.isdir(parent):
        os.mkdir(parent, 0o755)
    fd = open_dir(parent, parent)
    try:
        st = lstat(fd, name)
        mode, owner = (stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid)) if st else (0o644, None)
        statefs.write_file(fd, name, data, mode, owner)
        os.fsync(fd)
    finally:
        os.close(fd)
