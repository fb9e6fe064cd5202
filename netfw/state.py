"""The state directory: what was last applied per NIC (so verify and update need no input) and per-VM locks.

Layout: `DIR/vm-<VM>.lock` (an flock per VM) and `DIR/vm-<VM>/nic-<NIC>.json` (one record per NIC). The directory
is a caller's choice (`--state-dir`, also under `sudo netfw one`), so it is opened once per operation through
netfw.statefs (real directories of ours that no one else may write to, files never through a symlink) and every
record is validated when it is read, as strictly as input: a record decides which programs root runs.
"""

from __future__ import annotations

import functools
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from . import backend, statefs
from .errors import InputError
from .model import NicSpec
from .serial import spec_from_dict, spec_to_dict
from .port import Port
from .statefs import StateError

DEFAULT_STATE_DIR = "/var/lib/netfw"
MAX_RECORD = 16 * 1024 * 1024  # a VM document is at most 4 MiB (netfw.one); its record is of the same order
RECORD_KEYS = frozenset({"spec", "mtu", "generation", "backend", "port"})
_RECORD_NAME = re.compile(r"nic-(0|[1-9][0-9]{0,9})\.json")
_INTENT_NAME = re.compile(r"nic-(0|[1-9][0-9]{0,9})\.intent\.json")
#: What an interrupted operation was doing (the journal, netfw.state.StateDir.intent).
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
    backend: str = "auto"  # the iptables backend its rules were loaded with (netfw.backend)
    port: Port | None = None  # the VM's port on its VN bridge as the connection layer made it (netfw.port)


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
    return _memo(text, vm, nic, shown) if len(text) <= 16 * 1024 else _parse(text, vm, nic, shown)


def _parse(text: str, vm: int, nic: int, shown: str) -> Applied:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as e:
        raise StateError(f"state record {shown}: not a netfw record: {e}") from None
    return _applied(data, vm, nic, shown)


_memo = functools.lru_cache(maxsize=2048)(_parse)  # at most 32 MiB of text, ~4 MiB with 1,000 20-rule NICs


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


class StateDir:
    """A state directory opened and checked once per operation; every record and lock in it is reached through its
    descriptor. fd is None when the directory does not exist and was not to be created (it has no records)."""

    def __init__(self, path: Path, fd: int | None):
        self.path, self.fd = path, fd

    def record_path(self, vm: int, nic: int) -> Path:
        return nic_path(self.path, vm, nic)

    def _vm_dir(self, vm: int, create: bool) -> int | None:
        if self.fd is None:
            if create:
                raise StateError(f"state directory {self.path} was opened without creating it")
            return None
        return statefs.open_dir(f"vm-{int(vm)}", f"state directory {self.path / f'vm-{vm}'}", self.fd, create)

    @contextmanager
    def lock(self, vm: int):
        """Hold VM vm's exclusive lock for the with block: concurrent calls for one VM must not interleave."""
        if self.fd is None:
            raise StateError(f"state directory {self.path} was opened without creating it")
        with statefs.locked(self.fd, f"vm-{int(vm)}.lock", f"lock file {self.path / f'vm-{vm}.lock'}"):
            yield

    def intent_path(self, vm: int, nic: int) -> Path:
        return self.path / f"vm-{vm}" / f"nic-{nic}.intent.json"

    @staticmethod
    def _name(nic: int, intent: bool) -> str:
        return f"nic-{int(nic)}.intent.json" if intent else f"nic-{int(nic)}.json"

    def read(self, vm: int, nic: int, intent: bool = False) -> str | None:
        """The text of the NIC's record (or journal) (a checked file), or None when there is none."""
        name = self._name(nic, intent)
        return self.read_named(vm, name, f"{'journal' if intent else 'state record'} {self.path / f'vm-{vm}' / name}")

    def read_named(self, vm: int, name: str, shown: str) -> str | None:
        """The UTF-8 text of file name of VM vm's directory (checked, at most MAX_RECORD bytes), None when missing."""
        fd = self._vm_dir(vm, create=False)
        if fd is None:
            return None
        try:
            data = statefs.read(fd, name, shown, MAX_RECORD)
        finally:
            os.close(fd)
        try:
            return None if data is None else data.decode()
        except UnicodeDecodeError:
            raise StateError(f"{shown}: not UTF-8 text") from None

    def load(self, vm: int, nic: int) -> Applied | None:
        """What was last applied to the NIC, or None when there is no record; StateError for a bad record."""
        text = self.read(vm, nic)
        return None if text is None else parse(text, vm, nic, str(self.record_path(vm, nic)))

    def intent(self, vm: int, nic: int) -> Intent | None:
        """The NIC's journal (what a killed run was doing), or None when none is pending."""
        text = self.read(vm, nic, intent=True)
        return None if text is None else parse_intent(text, vm, nic, str(self.intent_path(vm, nic)))

    def vms(self) -> list[int]:
        """The VM ids with a directory of records (a directory may hold none). Read-only."""
        if self.fd is None:
            return []
        return sorted(int(m[1]) for m in map(_VM_DIR_NAME.fullmatch, statefs.names(self.fd)) if m)

    def nics(self, vm: int, intents: bool = False) -> list[int]:
        """The NIC ids with a record (intents: with a journal) for VM vm."""
        fd = self._vm_dir(vm, create=False)
        if fd is None:
            return []
        try:
            found = statefs.names(fd)
        finally:
            os.close(fd)
        pattern = _INTENT_NAME if intents else _RECORD_NAME
        return sorted(int(m[1]) for m in map(pattern.fullmatch, found) if m)

    def write(self, vm: int, nic: int, text: str | None, intent: bool = False) -> None:
        """Replace the NIC's record (or journal) atomically with text, or remove it when text is None. Safe to
        repeat."""
        name = self._name(nic, intent)
        self.write_named(vm, name, text, f"{'journal' if intent else 'state record'} {self.path / f'vm-{vm}' / name}")

    def write_named(self, vm: int, name: str, text: str | None, shown: str) -> None:
        """Replace file name of VM vm's directory atomically (statefs.replace), or remove it when text is None."""
        fd = self._vm_dir(vm, create=text is not None)
        if fd is None:
            return
        try:
            if text is None:
                statefs.remove(fd, name, shown)
            else:
                statefs.replace(fd, name, text.encode(), shown)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextmanager
def opened(explicit: str | Path | None = None, create: bool = True):
    """The state directory (state_dir(explicit)), checked and open for the with block; created 0700 when missing
    if create, else a missing directory has no records (dry runs and verify create nothing)."""
    path = state_dir(explicit)
    directory = StateDir(path, statefs.open_dir(str(path), f"state directory {path}", None, create))
    try:
        yield directory
    finally:
        directory.close()


def check_existing(explicit: str | Path) -> None:
    """StateError unless the state directory exists and is safe to use (the default may be missing). Creates nothing."""
    with opened(explicit, create=False) as directory:
        if directory.fd is None and directory.path != Path(DEFAULT_STATE_DIR):
            raise StateError(f"state directory {directory.path} does not exist: create it first "
                             f"(install -d -m 0700 {directory.path}); only the default {DEFAULT_STATE_DIR} is "
                             "created by netfw one")


def check_named_by_caller(explicit: str | Path) -> None:
    """check_existing for a state directory that the caller of `sudo netfw one` names: StateError with one message
    whatever is wrong. The detailed ones (it does not exist; it is a symbolic link, not a directory, owned by uid N,
    of mode M) would tell that caller what root sees of paths it cannot see itself (issue 19). netfw run directly by
    root keeps them."""
    try:
        check_existing(explicit)
    except StateError:
        raise StateError(f"state directory {explicit}: refused: it is not a directory of the user netfw runs as "
                         "(root) that no one else may write to, or it does not exist (create it first: "
                         f"install -d -m 0700 {explicit}; only the default {DEFAULT_STATE_DIR} is created by netfw "
                         "one)") from None


def load(root: str | Path | None, vm: int, nic: int) -> Applied | None:
    """What was last applied to the NIC, or None when there is no record (see StateDir.load)."""
    with opened(root, create=False) as directory:
        return directory.load(vm, nic)


def nics(root: str | Path | None, vm: int) -> list[int]:
    """The NIC ids with a record for VM vm."""
    with opened(root, create=False) as directory:
        return directory.nics(vm)


def write(path: Path, text: str | None) -> None:
    """Replace (text None: remove) the record at path, which must be nic_path(root, vm, nic), through the checked
    directory root (see StateDir.write). Safe to repeat."""
    path = Path(path)
    vm, record = re.fullmatch(r"vm-(0|[1-9][0-9]*)", path.parent.name), _RECORD_NAME.fullmatch(path.name)
    if not vm or not record:
        raise StateError(f"{path} is not a state record's path (DIR/vm-VM/nic-NIC.json)")
    with opened(path.parent.parent) as directory:
        directory.write(int(vm[1]), int(record[1]), text)


@contextmanager
def vm_lock(root: str | Path | None, vm: int):
    """Hold VM vm's exclusive lock for the with block (see StateDir.lock)."""
    with opened(root) as directory, directory.lock(vm):
        yield
