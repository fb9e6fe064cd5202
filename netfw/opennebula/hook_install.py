"""`netfw hook install` and `netfw hook uninstall`: netfw's libvirt qemu hook in HOOKS_DIR/qemu.d/netfw.

As `netfw one install` (netfw.opennebula.install) does for OpenNebula's drivers: directories opened without following a
symbolic link (the path given is followed up to its last component, which must be a real directory), the script
written atomically (statefs.write_file: O_EXCL temporary, mode 0755, fsync, rename), a file that is not netfw's
(no MARKER line) refused with nothing changed. libvirt runs every executable of qemu.d in order of name; it reads
the directory when libvirtd starts, so a restart of libvirtd follows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from netfw.state import fs as statefs
from .install_layout import InstallError, shipped
from .install_tree import MAX_SCRIPT, open_dir, read

NAME = "netfw"
SUBDIR = "qemu.d"
#: The line every version of netfw's hook script carries.
MARKER = b"\n# netfw: libvirt qemu hook\n"
#: Where netfw's hook script is (the source tree's scripts/libvirt, the package's share/netfw/libvirt).
SCRIPTS = tuple(d / SUBDIR / NAME for d in shipped("libvirt"))


@dataclass
class Outcome:
    action: str
    path: str
    dry_run: bool
    changes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = "would change" if self.dry_run else "changed"
        what = f"{done}: {', '.join(self.changes)}" if self.changes else "nothing to change"
        then = "; restart libvirtd to load it" if self.changes and self.action == "install" else \
            "; restart libvirtd to drop it" if self.changes else ""
        return f"netfw hook {self.action}: {self.path}: {what}{then}"

    def as_dict(self) -> dict:
        return {"action": self.action, "path": self.path, "dry_run": self.dry_run, "changes": self.changes}


def script(path: str | None = None) -> bytes:
    """netfw's hook script: the file given, else the first of SCRIPTS that exists; InstallError unless netfw's."""
    candidates = [Path(path)] if path else [p for p in SCRIPTS if p.is_file()]
    if not candidates:
        raise InstallError(f"netfw's hook script is not in {', '.join(map(str, SCRIPTS))}: give --script")
    where = candidates[0]
    data = read(None, str(where), str(where), MAX_SCRIPT)
    if data is None or MARKER not in data:
        raise InstallError(f"{where} is not netfw's hook script (no {MARKER.strip().decode()!r} line)")
    return data


def run(action: str, hooks_dir: str, dry_run: bool = False, source: str | None = None) -> Outcome:
    """Install or uninstall; everything is read and checked before anything changes."""
    data = script(source) if action == "install" else None
    out = Outcome(action, f"{hooks_dir}/{SUBDIR}/{NAME}", dry_run)
    top = open_dir(hooks_dir, f"hooks directory {hooks_dir}")
    sub = None
    try:
        sub = open_dir(SUBDIR, f"{hooks_dir}/{SUBDIR}", top, missing_ok=True)
        old = None if sub is None else read(sub, NAME, out.path, MAX_SCRIPT)
        if old is not None and MARKER not in old:
            raise InstallError(f"{out.path} is not netfw's hook script: refused (nothing changed)")
        if action == "uninstall":
            _change(out, f"remove {SUBDIR}/{NAME}" if old is not None else None, lambda: os.unlink(NAME, dir_fd=sub))
            return out
        if sub is None:
            _change(out, f"mkdir {SUBDIR}", lambda: os.mkdir(SUBDIR, 0o755, dir_fd=top))
            sub = None if dry_run else open_dir(SUBDIR, f"{hooks_dir}/{SUBDIR}", top)
        _change(out, f"write {SUBDIR}/{NAME}" if old != data else None, lambda: _write(sub, data))
        return out
    finally:
        for fd in (sub, top):
            if fd is not None:
                os.close(fd)


def _change(out: Outcome, what: str | None, do) -> None:
    if what is None:
        return
    out.changes.append(what)
    if not out.dry_run:
        do()


def _write(sub: int, data: bytes) -> None:
    statefs.write_file(sub, NAME, data, mode=0o755)
    os.fsync(sub)
