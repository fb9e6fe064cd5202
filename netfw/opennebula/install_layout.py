"""The way-A layout netfw installs in each OpenNebula network driver directory (docs/opennebula.md, "Hooking netfw
into OpenNebula"), how netfw's own scripts are recognised and found, and the plan of changes install and uninstall
make. Pure: reads and changes nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from netfw.errors import InputError

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

_HERE = Path(os.path.realpath(__file__)).parents[1]  # the netfw package


def shipped(kind: str) -> tuple[Path, ...]:
    """Where netfw's scripts of a kind (opennebula, libvirt) are, in order: next to the package in a source tree
    (scripts/<kind>), or where the Debian package puts them: <prefix>/lib/netfw/python/netfw/ with the scripts in
    <prefix>/share/netfw/<kind>, and /usr/share/netfw/<kind>."""
    return tuple(dict.fromkeys((_HERE.parent / "scripts" / kind,
                                *[p / "share" / "netfw" / kind for p in _HERE.parents[3:4]],
                                Path("/usr/share/netfw") / kind)))


#: Where the OpenNebula driver scripts are.
SCRIPT_DIRS = shipped("opennebula")


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
