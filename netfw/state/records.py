"""A NIC's record: what was last applied (Applied) or is being applied (Intent, a journal), its text, and its
parsing, as strict as input (a record decides which programs root runs). directory.py keeps them.

Layout: `DIR/vm-<VM>.lock` (an flock per VM) and `DIR/vm-<VM>/nic-<NIC>.json` (one record per NIC). The directory
is a caller's choice (`--state-dir`, also under `sudo netfw one`), so it is opened once per operation through
netfw.state.fs (real directories of ours that no one else may write to, files never through a symlink) and every
record is validated when it is read, as strictly as input: a record decides which programs root runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

from netfw.kernel import backend
from netfw.errors import InputError
from netfw.model.spec import NicSpec
from netfw.model.serial import spec_from_dict, spec_to_dict
from netfw.kernel.port import Port
from .fs import StateError

DEFAULT_STATE_DIR = "/var/lib/netfw"
MAX_RECORD = 16 * 1024 * 1024  # a VM document is at most 4 MiB (netfw.opennebula.one); its record is of the same order
RECORD_KEYS = frozenset({"spec", "mtu", "generation", "backend", "port"})
_RECORD_NAME = re.compile(r"nic-(0|[1-9][0-9]{0,9})\.json")
_INTENT_NAME = re.compile(r"nic-(0|[1-9][0-9]{0,9})\.intent\.json")
#: What an interrupted operation was doing (the journal, netfw.state.directory.StateDir.intent).
OPS = ("attach", "update", "detach")
_VM_DIR_NAME = re.compile(r"vm-(0|[1-9][0-9]{0,9})")


def state_dir(explicit: str | Path | None = None) -> Path:
    """--state-dir, else $NETFW_STATE_DIR, else /var/lib/netfw."""
    return Path(explicit or os.environ.get("NETFW_STATE_DIR") or DEFAULT_STATE_DIR)


def nic_path(root: Path, vm: int, nic: int) -> Path:
    return root / f"vm-{vm}" / f"nic-{nic}.json"


class Applied(NamedTuple):
    """What was (or is to be) applied to a NIC: its spec and how it is laid out."""

    spec: NicSpec
    mtu: int
    generation: int = 0  # which of the NIC's two ipset name generations the live rules use
    backend: str = "auto"  # the iptables backend its rules were loaded with (netfw.kernel.backend)
    port: Port | None = None  # the VM's port on its VN bridge as the connection layer made it (netfw.kernel.port)


class Intent(NamedTuple):
    """A NIC's journal: the operation a run was doing, its target, and whether netfw had taken the tap by then.

    taken: the tap was inside netfw's namespace when the run began, or the run was about to take it off its VN
    bridge (written again at that moment). Only then can a tap found outside the namespace, on no bridge, be a killed
    run's doing that the next run finishes; otherwise it is someone else's, and never touched. A journal without the
    field (an older netfw's) did not say: not taken.
    """

    op: str
    target: Applied
    taken: bool = False


def _data(applied: Applied) -> dict:
    return {"spec": spec_to_dict(applied.spec), "mtu": applied.mtu, "generation": applied.generation,
            "backend": applied.backend, "port": None if applied.port is None else applied.port.as_dict()}


def document(applied: Applied, op: str | None = None, taken: bool = False) -> str:
    """The JSON text of a NIC's record, or (op given) of its journal: the operation under way, its target, and
    whether netfw has taken the tap (Intent). InputError when it would be too large to be read back."""
    data = _data(applied) if op is None else {"op": op, "target": _data(applied), "taken": taken}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if len(text.encode()) > MAX_RECORD:
        raise InputError(f"VM {applied.spec.vm} NIC {applied.spec.nic}: its state record would be larger than "
                         f"{MAX_RECORD} bytes")
    return text


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        raise ValueError("a key appears twice")
    return data


def _constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse(text: str, vm: int, nic: int, shown: str) -> Applied:
    """A record's text as Applied, every field checked (the spec by the model's own validation); else StateError.

    The same text of up to 16 KiB (~100 rules) is parsed once per process: status, metrics and gc read
    each record two or three times, and validating a 20-rule NIC costs ~1-2 ms. The result is immutable; a bad
    record raises every time; larger records (up to 16,384 rules) are parsed each time, not kept."""
    if len(text) > 16 * 1024:
        return _parse(text, vm, nic, shown)
    key = (hashlib.blake2b(text.encode(), digest_size=16).digest(), vm, nic, shown)  # not the text: 4 MiB kept
    found = _parsed.get(key)
    if found is None:
        found = _parse(text, vm, nic, shown)
        while len(_parsed) >= _KEPT:
            _parsed.pop(next(iter(_parsed), None), None)
        _parsed[key] = found
    return found


def _parse(text: str, vm: int, nic: int, shown: str) -> Applied:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as e:
        raise StateError(f"state record {shown}: not a netfw record: {e}") from None
    return _applied(data, vm, nic, shown)


#: Records parsed, by their text's digest (and where they were read): at most _KEPT, the oldest let go first.
_parsed: dict[tuple[bytes, int, int, str], Applied] = {}
_KEPT = 2048


def _applied(data: object, vm: int, nic: int, shown: str) -> Applied:
    if not isinstance(data, dict) or set(data) not in (RECORD_KEYS, RECORD_KEYS - {"port"}):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise StateError(f"state record {shown}: keys must be {sorted(RECORD_KEYS)}, not {found}")
    mtu, generation, how = data["mtu"], data["generation"], data["backend"]
    if type(mtu) is not int or not 68 <= mtu <= 65535:
        raise StateError(f"state record {shown}: mtu {mtu!r} is not an integer in 68..65535")
    if type(generation) is not int or generation not in (0, 1):
        raise StateError(f"state record {shown}: generation {generation!r} is not 0 or 1")
    if not isinstance(how, str) or how not in backend.BACKENDS:
        raise StateError(f"state record {shown}: backend {how!r} is not one of {', '.join(backend.BACKENDS)}")
    if not isinstance(data["spec"], dict):
        raise StateError(f"state record {shown}: spec is not an object")
    try:
        spec = spec_from_dict(data["spec"])
    except (InputError, TypeError, ValueError, KeyError, AttributeError) as e:
        why = str(e) if str(e).startswith("spec:") else f"spec: {e}"  # the model may name the spec itself
        raise StateError(f"state record {shown}: {why}") from None
    if type(spec.vm) is not int or type(spec.nic) is not int or (spec.vm, spec.nic) != (vm, nic):
        raise StateError(f"state record {shown}: it is for VM {spec.vm!r} NIC {spec.nic!r}, not VM {vm} NIC {nic}")
    try:
        port = None if data.get("port") is None else Port.from_dict(data["port"])
    except (InputError, TypeError, ValueError) as e:
        raise StateError(f"state record {shown}: port: {e}") from None
    return Applied(spec, mtu, generation, how, port)


def parse_intent(text: str, vm: int, nic: int, shown: str) -> Intent:
    """A journal's text as Intent, every field checked like a record's; else StateError."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as e:
        raise StateError(f"journal {shown}: not a netfw journal: {e}") from None
    if not isinstance(data, dict) or set(data) - {"taken"} != {"op", "target"} or data["op"] not in OPS or \
            type(data.get("taken", False)) is not bool:
        raise StateError(f"journal {shown}: must be {{op: one of {', '.join(OPS)}, target: a record, "
                         "taken: true or false}")
    return Intent(data["op"], _applied(data["target"], vm, nic, shown), data.get("taken", False))
