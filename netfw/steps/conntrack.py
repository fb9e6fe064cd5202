"""FlushZone: after an update, forget the NIC's tracked flows so that each is judged again by the new rules."""

from __future__ import annotations

from netfw.kernel import probe
from netfw import runner
from .base import ForwardOnly


class FlushZone(ForwardOnly):
    """Delete the conntrack entries of the NIC's zone once its rules changed.

    A flow the new rules still allow is picked up again by its next packet (conntrack's loose TCP pickup, on by
    default) and goes on; a flow they no longer allow finds no entry, is NEW, and is dropped. Other NICs of the VM
    have their own zones and are not touched. Nothing to undo: it runs last, after the rules are in force.

    retired: the zone the NIC's flows were in under an earlier netfw (NIC 0: render.RETIRED_ZONE), flushed too
    when this update took that zone's rule out.
    """

    def __init__(self, ns: str, zone: int, after: list, retired: int | None = None):
        self.ns, self.zone, self.after, self.retired = ns, zone, after, retired

    def describe(self) -> str:
        return f"conntrack entries of zone {self.zone} in {self.ns}"

    def _argv(self, zone: int) -> list[str]:
        return probe.in_netns(self.ns, "conntrack", "-D", "-w", str(zone))

    def commands(self):
        return [(self._argv(self.zone), None)]

    def apply(self) -> bool:
        if not any(getattr(step, "changed", False) for step in self.after):
            return False
        zones = [self.zone]
        if self.retired is not None and any(getattr(step, "retired_removed", False) for step in self.after):
            zones.append(self.retired)  # the NIC's flows of before the update are still in its old zone
        for zone in zones:
            runner.run(self._argv(zone), ok=(0, 1))  # 1: there was no entry to delete
        return False  # deleted entries cannot be put back: nothing for undo to do

    def undo(self) -> None:
        pass
