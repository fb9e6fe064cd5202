"""Record: the NIC's entry in the state directory, written last so that it only exists for a complete attach."""

from __future__ import annotations

from pathlib import Path

from .. import state
from .base import Step


class Record(Step):
    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text
        self._before: str | None = None
        self._changed = False

    def describe(self) -> str:
        return f"state record {self.path}"

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def commands(self):
        return []

    def apply(self) -> bool:
        self._before = self._read()
        self._changed = self._before != self.text
        if self._changed:
            state.write(self.path, self.text)
        return self._changed

    def undo(self) -> None:
        if self._changed:
            state.write(self.path, self._before)
            self._changed = False

    def teardown(self) -> bool:
        self._before = self._read()
        state.write(self.path, None)
        return self._before is not None

    def restore(self) -> None:
        if self._before is not None:
            state.write(self.path, self._before)
            self._before = None

    def check(self) -> list[str]:
        return [] if self._read() is not None else [f"no state record {self.path}"]
