"""The remotes tree as install and uninstall see it: every file reached through directory descriptors opened with
O_NOFOLLOW, read with a bound, classified (netfw's, the driver's, missing), planned as Changes, and changed one
Change at a time, each made durable before the next (see install.py)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from netfw.state import fs as statefs
from .install_layout import LAYOUT, MARKER, SCRIPT_DIRS, Change, InstallError

MAX_SCRIPT = 1 << 20  # a driver script, ours or OpenNebula's, is a few KiB
_DIR, _READ = statefs.DIR_FLAGS, statefs.READ_FLAGS  # as the state directory: no symlink followed, no FIFO blocks


# ---------------------------------------------------------------------------------------------------------- reading

def open_dir(name: str, shown: str, dir_fd: int | None = None, missing_ok: bool = False) -> int | None:
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


def lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def read(dir_fd: int | None, name: str, shown: str, limit: int) -> bytes | None:
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
        found = {name: read(None, str(base / name), str(base / name), MAX_SCRIPT) for name in wanted}
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


class Driver:
    """One driver directory, opened, and what each name of the layout holds."""

    def __init__(self, vnm_fd: int, driver: str):
        self.driver = driver
        self.where = f"vnm/{driver}"
        self.fd = open_dir(driver, self.where, vnm_fd)
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
            self.subdirs[sub] = open_dir(sub, f"{self.where}/{sub}", self.fd, missing_ok=True)
        return self.subdirs[sub], f"{self.where}/{sub}", base

    def look(self, name: str) -> tuple[str, bytes | None]:
        """What name holds: ('missing'|'file'|'symlink', the content of a file); 'other' (a directory) refused."""
        fd, where, base = self.locate(name)
        st = None if fd is None else lstat(fd, base)
        kind = _kind(st)
        if kind == "other":
            raise InstallError(f"{where}/{base} is not a regular file: refused")
        return kind, read(fd, base, f"{where}/{base}", MAX_SCRIPT) if kind == "file" else None


def _ours(data: bytes | None) -> bool:
    return data is not None and MARKER in data


def plan_install(driver: Driver, sources: dict[str, bytes]) -> list[Change]:
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


def plan_uninstall(driver: Driver) -> list[Change]:
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

def apply(dir_fd: int, change: Change, owner: tuple[int, int] | None) -> None:
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
