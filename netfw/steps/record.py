"""Record and Journal: the NIC's files in the state directory.

The record says what is applied; it is written last, so it only exists for a complete attach. The journal says what
an operation is doing (its target, and the port settings the tap had before it left its bridge); it is written
before the first change and removed after the last, so that a run killed at any point leaves what the next run
needs to finish or undo the job. Both are written atomically (netfw.state.fs). A dry run writes neither.
"""

from __future__ import annotations

from typing import Callable

from netfw import runner
from netfw.state import StateDir
from .base import Step


class Record(Step):
    """Ensure the NIC's record (or journal) holds text; text None: that it is gone. text may be a function that
    makes it, called at its first use (a plan that only checks or tears down never writes it: verify of 1,000 NICs
    spent 2 s making their records' text)."""

    intent = False

    def __init__(self, records: StateDir, vm: int, nic: int, text: str | None | Callable[[], str]):
        self.records, self.vm, self.nic, self._text = records, vm, nic, text
        self._before: str | None = None
        self._changed = False

    @property
    def text(self) -> str | None:
        if callable(self._text):
            self._text = self._text()
        return self._text

    def describe(self) -> str:
        path = self.records.intent_path(self.vm, self.nic) if self.intent else \
            self.records.record_path(self.vm, self.nic)
        return f"{'journal' if self.intent else 'state record'} {path}"

    def _read(self) -> str | None:
        return self.records.read(self.vm, self.nic, intent=self.intent)

    def _write(self, text: str | None) -> None:
        if not runner.dry():
            self.records.write(self.vm, self.nic, text, intent=self.intent)

    def commands(self):
        return []

    def apply(self) -> bool:
        """Write (or remove) the file atomically; safe to repeat (unchanged text: nothing written)."""
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
        """Remove the file; safe to repeat."""
        self._before = self._read()
        self._write(None)
        return self._before is not None

    def restore(self) -> None:
        if self._before is not None:
            self._write(self._before)
            self._before = None

    def check(self) -> list[str]:
        return [] if self._read() is not None else [f"no {self.describe()}"]


class Journal(Record):
    """The NIC's journal: written first (text), removed last (None)."""

    intent = True
    undo_only_if_clean = True
    bookkeeping = True

    def undo(self) -> None:
        """Put back the journal as it was before apply, also when the cut-over wrote it again since (plan._taking)."""
        if self._changed or self._read() != self._before:
            self._write(self._before)
        self._changed = False

    def check(self) -> list[str]:
        return [] if self._read() is None else [f"an interrupted operation left {self.describe()}: run it again"]
