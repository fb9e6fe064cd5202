"""Record: the NIC's entry in the state directory, written last so that it only exists for a complete attach."""

from __future__ import annotations

from ..state import StateDir
from .base import Step


class Record(Step):
    def __init__(self, records: StateDir, vm: int, nic: int, text: str):
        self.records, self.vm, self.nic, self.text = records, vm, nic, text
        self._before: str | None = None
        self._changed = False

    def describe(self) -> str:
        return f"state record {self.records.record_path(self.vm, self.nic)}"

    def _read(self) -> str | None:
        return self.records.read(self.vm, self.nic)

    def _write(self, text: str | None) -> None:
        self.records.write(self.vm, self.nic, text)

    def commands(self):
        return []

    def apply(self) -> bool:
        """Write the record atomically; safe to repeat (unchanged text: nothing written)."""
        self._before = self._read()
        self._changed = self._before != self.text
        if self._changed:
            self._write(self.text)
        return self._changed

    def undo(self) -> None:
        if self._changed:
            self._write(self._before)
            self._changed = False

    def teardown(self) -> bool:
        """Remove the record; safe to repeat."""
        self._before = self._read()
        self._write(None)
        return self._before is not None

    def restore(self) -> None:
        if self._before is not None:
            self._write(self._before)
            self._before = None

    def check(self) -> list[str]:
        return [] if self._read() is not None else [f"no {self.describe()}"]
