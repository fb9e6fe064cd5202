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

import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from . import statefs
from .errors import InputError


@dataclass(frozen=True)
class Entry:
    """One file of the layout: its name in the driver directory, the script of scripts/opennebula it is a copy of,
    and, where it replaces the driver's own file, the name that original is kept under."""

    name: str
    source: str
    original: str | None = None


#: The way-A layout of a driver directory <remotes>/vnm/<driver>/ (docs/opennebula.md, "Hooking netfw into
#: OpenNebula"). The one table: install writes it in this order (a chain only after the part it calls), uninstall
#: undoes it in the reverse order.
LAYOUT: tuple[Entry, ...] = (
    Entry("pre.d/netfw", "pre"),
    Entry("post.d/netfw", "post"),
    Entry("clean.netfw", "clean"),
    Entry("clean", "chain", "clean.legacy"),
    Entry("update_nic.netfw", "update_nic"),
    Entry("update_nic", "chain", "update_nic.legacy"),
    Entry("update_sg", "update_sg", "update_sg.legacy"),
)

#: Every script of netfw's carries this line: how a file is recognised as netfw's (of this version or another).
MARKER = b"\n# netfw: OpenNebula driver script\n"

#: Where the scripts are: next to the package in a source tree, or where the Debian package puts them.
#: The package's: <prefix>/lib/netfw/python/netfw/install.py with the scripts in <prefix>/share/netfw/opennebula.
_HERE = Path(os.path.realpath(__file__)).parent
SCRIPT_DIRS = tuple(dict.fromkeys((_HERE.parent / "scripts" / "opennebula",
                                   *[p / "share" / "netfw" / "opennebula" for p in _HERE.parents[3:4]],
                                   Path("/usr/share/netfw/opennebula"))))

DEFAULT_REMOTES = "/var/lib/one/remotes"
DEFAULT_SETTINGS = "/etc/netfw/opennebula.conf"
#: The user OpenNebula runs its drivers as, whose sudo rule allows `netfw one *`.
DRIVER_USER = "oneadmin"
MAX_SCRIPT = 1 << 20  # a driver script, ours or OpenNebula's, is a few KiB
MAX_SETTINGS = 64 << 10

_DIR, _READ = statefs.DIR_FLAGS, statefs.READ_FLAGS  # as the state directory: no symlink followed, no FIFO blocks
_SETTING_RE = re.compile(r"[ \t]*(?:export[ \t]+)?NETFW_VN_MADS=(.*)")


class InstallError(InputError):
    """A remotes tree, script or settings file netfw refuses: exit 2, nothing changed."""


@dataclass(frozen=True)
class Change:
    """One change to a directory: `kind` is mkdir, write (netfw's file, new or updated), keep (hard link of the
    driver's file under its original's name), restore (rename the original back), remove."""

    where: str  # the directory, relative to the remotes directory (or the settings file's directory)
    kind: str
    name: str
    target: str | None = None
    data: bytes | None = field(default=None, repr=False)
    mode: int = 0o755

    def __str__(self) -> str:
        path = f"{self.where}/{self.name}"
        return {"mkdir": f"mkdir {path}", "write": f"write {path}",
                "keep": f"link {path} {self.where}/{self.target}",
                "restore": f"rename {self.where}/{self.target} {path}", "remove": f"remove {path}"}[self.kind]


# ---------------------------------------------------------------------------------------------------------- reading

def _open_dir(name: str, shown: str, dir_fd: int | None = None, missing_ok: bool = False) -> int | None:
    """A descriptor of directory name (relative to dir_fd), never through a symbolic link; None if missing_ok."""
    try:
        fd = os.open(name, _DIR, dir_fd=dir_fd)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise InstallError(f"{shown}: no such directory") from None
    except (OSError, ValueError) as e:
        raise InstallError(f"{shown}: {_why(e, name, dir_fd, 'a directory')}") from None
    st = os.fstat(fd)
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        os.close(fd)
        raise InstallError(f"{shown} is writable by anyone (mode {stat.S_IMODE(st.st_mode):04o}): refused")
    return fd


def _why(error: OSError | ValueError, name: str, dir_fd: int | None, what: str) -> str:
    if isinstance(error, OSError) and error.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return "a symbolic link: refused"
        except OSError:
            pass
        return f"not {what}: refused"
    return error.strerror if isinstance(error, OSError) else str(error)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _read(dir_fd: int | None, name: str, shown: str, limit: int) -> bytes | None:
    """The content of regular file name, None when it is missing, InstallError for anything else (a symlink)."""
    try:
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InstallError(f"{shown}: {_why(e, name, dir_fd, 'a regular file')}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InstallError(f"{shown}: not a regular file: refused")
        data = os.read(fd, limit + 1)
        while len(data) <= limit and (chunk := os.read(fd, limit + 1 - len(data))):
            data += chunk
        if len(data) > limit:
            raise InstallError(f"{shown} is larger than {limit} bytes: refused")
        return data
    finally:
        os.close(fd)


def scripts(directory: str | Path | None = None) -> dict[str, bytes]:
    """The scripts LAYOUT copies, by name, from directory or the first of SCRIPT_DIRS that has them all."""
    candidates = [Path(directory)] if directory else list(SCRIPT_DIRS)
    wanted = sorted({e.source for e in LAYOUT})
    for base in candidates:
        found = {name: _read(None, str(base / name), str(base / name), MAX_SCRIPT) for name in wanted}
        if all(found.values()):
            bad = [n for n, data in found.items() if MARKER not in data]
            if bad:
                raise InstallError(f"{base}/{bad[0]} is not a netfw script (no {MARKER.strip().decode()!r} line)")
            return found
        if directory:
            raise InstallError(f"{base} lacks netfw's OpenNebula scripts ({', '.join(wanted)})")
    raise InstallError(f"netfw's OpenNebula scripts not found in {', '.join(map(str, candidates))}: give --scripts DIR")


# --------------------------------------------------------------------------------------------------------- planning

def _kind(st: os.stat_result | None) -> str:
    if st is None:
        return "missing"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return "symlink" if stat.S_ISLNK(st.st_mode) else "other"


class _Driver:
    """One driver directory, opened, and what each name of the layout holds."""

    def __init__(self, vnm_fd: int, driver: str):
        self.driver = driver
        self.where = f"vnm/{driver}"
        self.fd = _open_dir(driver, self.where, vnm_fd)
        self.subdirs: dict[str, int | None] = {}

    def close(self) -> None:
        for fd in self.subdirs.values():
            if fd is not None:
                os.close(fd)
        os.close(self.fd)

    def locate(self, name: str) -> tuple[int | None, str, str]:
        """(directory fd or None if that subdirectory is missing, the directory shown, the base name)."""
        sub, _, base = name.rpartition("/")
        if not sub:
            return self.fd, self.where, base
        if sub not in self.subdirs:
            self.subdirs[sub] = _open_dir(sub, f"{self.where}/{sub}", self.fd, missing_ok=True)
        return self.subdirs[sub], f"{self.where}/{sub}", base

    def look(self, name: str) -> tuple[str, bytes | None]:
        """What name holds: ('missing'|'file'|'symlink', the content of a file); 'other' (a directory) refused."""
        fd, where, base = self.locate(name)
        st = None if fd is None else _lstat(fd, base)
        kind = _kind(st)
        if kind == "other":
            raise InstallError(f"{where}/{base} is not a regular file: refused")
        return kind, _read(fd, base, f"{where}/{base}", MAX_SCRIPT) if kind == "file" else None


def _ours(data: bytes | None) -> bool:
    return data is not None and MARKER in data


def plan_install(driver: _Driver, sources: dict[str, bytes]) -> list[Change]:
    """The changes that put LAYOUT into one driver directory; [] when it is there already. InstallError when the
    directory is not one netfw can hook into safely (nothing is changed then)."""
    changes: list[Change] = []
    made: set[str] = set()
    for entry in LAYOUT:
        fd, where, base = driver.locate(entry.name)
        sub = entry.name.rpartition("/")[0]
        if fd is None and sub not in made:
            changes.append(Change(driver.where, "mkdir", sub))
            made.add(sub)
        kind, data = driver.look(entry.name)
        wanted = sources[entry.source]
        shown = f"{where}/{base}"
        if entry.original is None:
            if kind == "symlink" or (kind == "file" and not _ours(data)):
                raise InstallError(f"{shown} exists and is not netfw's: refused (move it away first)")
            if data != wanted:
                changes.append(Change(where, "write", base, data=wanted))
            continue
        okind, odata = driver.look(entry.original)
        original = f"{where}/{entry.original}"
        if _ours(odata):
            raise InstallError(f"{original} is netfw's script, not the driver's original: restore the driver's "
                               f"{base} there by hand")
        if kind == "file" and _ours(data):
            if okind == "missing":
                raise InstallError(f"{shown} is netfw's but the driver's original {original} is missing: put the "
                                   f"driver's {base} back as {original} (from OpenNebula's package), then run again")
            if data != wanted:
                changes.append(Change(where, "write", base, data=wanted))
            continue
        if kind == "missing":
            if okind == "missing":
                raise InstallError(f"{where} has no {base}: not an OpenNebula driver directory")
            changes.append(Change(where, "write", base, data=wanted))  # an install stopped after the link: resume
            continue
        if okind != "missing":
            same = kind == okind and (data == odata if kind == "file" else
                                      os.readlink(base, dir_fd=fd) == os.readlink(entry.original, dir_fd=fd))
            if not same:
                raise InstallError(
                    f"{shown} is not netfw's but {original} exists: the driver's {base} was replaced after netfw was "
                    f"installed (an OpenNebula upgrade?); if {shown} is the driver's new script, "
                    f"`mv {shown} {original}` and run again")
            changes.append(Change(where, "write", base, data=wanted))  # an install stopped after the link: resume
            continue
        changes.append(Change(where, "keep", base, target=entry.original))
        changes.append(Change(where, "write", base, data=wanted))
    return changes


def plan_uninstall(driver: _Driver) -> list[Change]:
    """The changes that take LAYOUT out of one driver directory and put the driver's originals back."""
    changes: list[Change] = []
    for entry in reversed(LAYOUT):
        fd, where, base = driver.locate(entry.name)
        kind, data = driver.look(entry.name)
        shown = f"{where}/{base}"
        if entry.original is None:
            if kind == "missing":
                continue
            if not _ours(data):
                raise InstallError(f"{shown} is not netfw's: refused (move it away first)")
            changes.append(Change(where, "remove", base))
            continue
        okind, odata = driver.look(entry.original)
        original = f"{where}/{entry.original}"
        if _ours(odata):
            raise InstallError(f"{original} is netfw's script, not the driver's original: restore it by hand")
        if _ours(data):
            if okind == "missing":
                raise InstallError(f"{shown} is netfw's but the driver's original {original} is missing: nothing to "
                                   f"restore it from (put OpenNebula's {base} there by hand)")
            changes.append(Change(where, "restore", base, target=entry.original))
        elif okind != "missing":
            raise InstallError(f"{shown} is not netfw's but {original} exists (an OpenNebula upgrade?): "
                               f"compare them and remove the stale one by hand")
    return changes


# -------------------------------------------------------------------------------------------------------- applying

def _apply(dir_fd: int, change: Change, owner: tuple[int, int] | None) -> None:
    if change.kind == "mkdir":
        os.mkdir(change.name, 0o755, dir_fd=dir_fd)
        fd = os.open(change.name, _DIR, dir_fd=dir_fd)
        try:
            if owner:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
    elif change.kind == "keep":
        os.link(change.name, change.target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    elif change.kind == "restore":
        os.rename(change.target, change.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    elif change.kind == "remove":
        os.unlink(change.name, dir_fd=dir_fd)
    else:
        statefs.write_file(dir_fd, change.name, change.data, change.mode, owner)
    os.fsync(dir_fd)


# ----------------------------------------------------------------------------------------------------------- settings

def read_setting(text: str, shown: str) -> tuple[str, ...] | None:
    """The VN_MADs that NETFW_VN_MADS assigns in a settings file (the last assignment, as the shell reads it), None
    when none does. InstallError for a value that is not a plain list of driver names."""
    from .driver import parse_vn_mads

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
    root_fd = _open_dir(remotes, remotes)
    opened: list[_Driver] = []
    try:
        refuse_driver_user(os.fstat(root_fd).st_uid)
        vnm_fd = _open_dir("vnm", f"{remotes}/vnm", root_fd)
        try:
            sources = scripts(script_dir) if action == "install" else {}
            plans = []
            for name in drivers:
                driver = _Driver(vnm_fd, name)
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
                        _apply(driver.fd, change, owner)
                        continue
                    if driver.subdirs.get(sub) is None:  # made by a change of this plan
                        driver.subdirs[sub] = _open_dir(sub, change.where, driver.fd)
                    _apply(driver.subdirs[sub], change, owner)
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
    fd = _open_dir(parent, parent, missing_ok=path == DEFAULT_SETTINGS)
    if fd is None:
        return with_setting("", drivers).encode()
    try:
        data = _read(fd, name, path, MAX_SETTINGS)
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
    fd = _open_dir(parent, parent)
    try:
        st = _lstat(fd, name)
        statefs.write_file(fd, name, data, stat.S_IMODE(st.st_mode) if st else 0o644, (st.st_uid, st.st_gid) if st else None)
        os.fsync(fd)
    finally:
        os.close(fd)
