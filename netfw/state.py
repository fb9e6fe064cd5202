"""The state directory: what was last applied per NIC (so verify and update need no input) and per-VM locks."""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from .model import NicSpec, spec_from_dict, spec_to_dict

DEFAULT_STATE_DIR = "/var/lib/netfw"


def state_dir(explicit: str | None = None) -> Path:
    """--state-dir, else $NETFW_STATE_DIR, else /var/lib/netfw."""
    return Path(explicit or os.environ.get("NETFW_STATE_DIR") or DEFAULT_STATE_DIR)


def nic_path(root: Path, vm: int, nic: int) -> Path:
    return root / f"vm-{vm}" / f"nic-{nic}.json"


class Applied(NamedTuple):
    """What was (or is to be) applied to a NIC: its spec and how it is laid out."""

    spec: NicSpec
    mtu: int
    generation: int = 0  # which of the NIC's two ipset name generations the live rules use
    backend: str = "auto"  # the iptables backend its rules were loaded with (netfw.backend)


def load(root: Path, vm: int, nic: int) -> Applied | None:
    """What was last applied to the NIC, or None when there is no record."""
    path = nic_path(root, vm, nic)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Applied(spec_from_dict(data["spec"]), int(data["mtu"]), int(data.get("generation", 0)),
                   data.get("backend", "auto"))


def nics(root: Path, vm: int) -> list[int]:
    """The NIC ids with a record for VM vm."""
    folder = root / f"vm-{vm}"
    return sorted(int(p.stem[4:]) for p in folder.glob("nic-*.json")) if folder.is_dir() else []


def document(applied: Applied) -> str:
    """The JSON text of a NIC's record."""
    data = {"spec": spec_to_dict(applied.spec), "mtu": applied.mtu, "generation": applied.generation,
            "backend": applied.backend}
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write(path: Path, text: str | None) -> None:
    """Write text atomically (rename over), or remove the file when text is None. Safe to repeat."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def vm_lock(root: Path, vm: int):
    """Hold an exclusive lock on VM vm for the whole operation (concurrent driver calls must not interleave)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"vm-{vm}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
