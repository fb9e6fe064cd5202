"""The state directory: what was last applied per NIC (so verify and update need no input) and per-VM locks,
opened once per operation through fs.py (real directories of ours that no one else may write to, files never
through a symlink); every record read is parsed by records.py."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from . import fs as statefs
from .fs import StateError
from .records import (_INTENT_NAME, _RECORD_NAME, _VM_DIR_NAME, DEFAULT_STATE_DIR, MAX_RECORD, Applied, Intent, parse,
                      nic_path, parse_intent, state_dir)


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
