"""A stand-in for OpenNebula's remotes directory on the front-end, with the shape of OpenNebula's own
(`src/vnm_mad/remotes` in OpenNebula's source, as `git ls-tree` shows it) and dummy contents: per driver the actions
pre, post, clean, update_sg, update_nic (executable files; in `dummy` update_nic is a symbolic link, as there),
vnet_create and vnet_delete (symbolic links to ../common/dummy.sh), and `<action>.d/.gitignore` for pre, post and
clean. No OpenNebula code is copied: every file says which driver and action it stands for.

`snapshot` records a tree as uninstall must leave it: every name, its kind, mode, owner, size, content or link
target, and inode number (uninstall puts the driver's very files back).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: The drivers of OpenNebula's vnm_mad/remotes that the stand-in has.
DRIVERS = ("802.1Q", "bridge", "dummy", "elastic", "fw", "ovswitch", "ovswitch_vxlan", "vxlan")
ACTIONS = ("pre", "post", "clean", "update_sg", "update_nic")
HOOK_DIRS = ("pre.d", "post.d", "clean.d")


def make(root: Path, drivers=DRIVERS) -> Path:
    """root/vnm/<driver>/... (and root/vnm/common/dummy.sh); returns root."""
    vnm = root / "vnm"
    (vnm / "common").mkdir(parents=True)
    dummy = vnm / "common" / "dummy.sh"
    dummy.write_text("#!/bin/sh\n# stand-in for OpenNebula's vnm/common/dummy.sh\nexit 0\n")
    dummy.chmod(0o755)
    (vnm / "OpenNebulaNetwork.conf").write_text("# stand-in for OpenNebula's OpenNebulaNetwork.conf\n")
    for driver in drivers:
        d = vnm / driver
        d.mkdir()
        for action in ACTIONS:
            if driver in ("dummy", "elastic") and action == "update_nic":
                (d / action).symlink_to("../common/dummy.sh")
                continue
            (d / action).write_text(f"#!/bin/sh\n# stand-in for OpenNebula's vnm/{driver}/{action}\n"
                                    f"echo 'INFO: {driver} {action}' >&2\n")
            (d / action).chmod(0o755)
        for name in ("vnet_create", "vnet_delete"):
            (d / name).symlink_to("../common/dummy.sh")
        for hooks in HOOK_DIRS:
            (d / hooks).mkdir()
            (d / hooks / ".gitignore").write_text("*\n!.gitignore\n")
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under root, by relative path: (kind, mode, uid, gid, content or target, inode)."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", None)
            else:
                what = ("file", path.read_bytes())
            seen[str(path.relative_to(root))] = (what[0], stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what[1],
                                                 st.st_ino if what[0] != "dir" else None)
    return seen
