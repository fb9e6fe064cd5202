"""FlushZone: after an update, forget the NIC's tracked flows so that each is judged again by the new rules."""

from __future__ import annotations

from .. import probe, runner
from .base import ForwardOnly


class FlushZone(ForwardOnly):
    """Delete the conntrack entries of the NIC's zone once its rules changed.

    A flow the new rules still allow is picked up again by its next packet (conntrack's loose TCP pickup, on by
    default) and goes on; a flow they no longer allow finds no entry, is NEW, and is dropped. Other NICs of the VM
    have their own zones and are not touched. Nothing to undo: it runs last, after the rules are in force.
    """

    def __init__(self, ns: str, zone: int, after: list):
        self.ns, self.zone, self.after = ns, zone, after

    def describe(self) -> str:
        return f"conntrack entries of zone {self.zone} in {self.ns}"

    def _argv(self) -> list[str]:
        return probe.in_netns(self.ns, "conntrack", "-D", "-w", str(self.zone))

    def commands(self):
        return [(self._argv(), None)]

    def apply(self) -> bool:
        if not any(getattr(step, "changed", False) for step in self.after):
            return False
        runner.run(self._argv(), ok=(0, 1))  # 1: there was no entry to delete
        return False  # deleted entries cannot be put back: nothing for undo to do

    def undo(self) -> None:
        pass



