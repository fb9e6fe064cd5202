"""CutOver: the one moment the VM's traffic stops; the tap leaves the VN bridge for the firewall bridge."""

from __future__ import annotations

import os

from .. import names, probe, runner, script
from .base import Step, run_batch


class CutOver(Step):
    """Attach: veth host end onto the VN bridge, tap into the VM namespace onto the firewall bridge, up.

    Two processes: one `ip -batch` in the hypervisor namespace, one `ip -n` in the VM namespace.
    Detach (teardown) moves the tap back onto the VN bridge the veth end is on; a tap that is gone (the VM stopped)
    is not an error.
    """

    def __init__(self, vm: int, nic: int, tap: str, vn_bridge: str | None):
        self.ns, self.tap, self.vn_bridge = names.netns(vm), tap, vn_bridge
        self.bridge, self.host = names.bridge(vm, nic), names.veth_host(vm, nic)
        self._moved = False
        self._torn: tuple[bool, str | None] | None = None  # (tap was inside, veth end's master) before teardown

    def describe(self) -> str:
        return f"cut-over of tap {self.tap}: {self.vn_bridge or 'its VN bridge'} -> {self.ns}/{self.bridge}"

    def _in_cmds(self, vn_bridge: str) -> list[tuple[list[str], str | None]]:
        return [
            (["ip", "-batch", "-"], script.join([f"link set {self.host} master {vn_bridge} up",
                                                 f"link set {self.tap} netns {self.ns}"])),
            (probe.ip(self.ns, "link", "set", self.tap, "master", self.bridge, "up"), None),
        ]

    def _out_cmds(self, vn_bridge: str | None) -> list[tuple[list[str], str | None]]:
        host_side = f"link set {self.tap} master {vn_bridge} up" if vn_bridge else f"link set {self.tap} up"
        return [
            (probe.ip(self.ns, "link", "set", self.tap, "netns", str(os.getpid())), None),
            (["ip", "-batch", "-"], script.join([host_side, f"link set {self.host} nomaster"])),
        ]

    def commands(self):
        return self._in_cmds(self.vn_bridge or "?")

    def teardown_commands(self):
        return self._out_cmds(self.vn_bridge or "<the VN bridge of " + self.host + ">")

    @staticmethod
    def _run(cmds: list[tuple[list[str], str | None]]) -> None:
        for argv, stdin in cmds:
            runner.run(argv, stdin=stdin)

    def _rejoin(self, vn_bridge: str | None) -> None:
        """With the tap already inside: veth end onto vn_bridge, tap onto the firewall bridge, both up."""
        run_batch(["ip"], [f"link set {self.host} master {vn_bridge} up"])
        runner.run(probe.ip(self.ns, "link", "set", self.tap, "master", self.bridge, "up"))

    def _state(self) -> tuple[dict | None, dict | None, dict | None]:
        """(tap in the hypervisor namespace, tap in the VM namespace, veth host end).

        A link lives in one namespace at a time: the VM namespace is only looked into when the tap is not outside.
        """
        host_links = probe.links(None, [self.tap, self.host])
        outside = host_links.get(self.tap)
        inside = probe.links(self.ns, [self.tap]).get(self.tap) if outside is None else None
        return outside, inside, host_links.get(self.host)

    def apply(self) -> bool:
        """Move the tap in, unless it is already on the firewall bridge with the veth end on the VN bridge."""
        self._moved = False
        outside, inside, veth = self._state()
        if inside is not None and outside is None:
            if probe.master(inside) == self.bridge and probe.is_up(inside) and probe.master(veth) == self.vn_bridge:
                return False
            self._rejoin(self.vn_bridge)  # already moved, half-configured (an interrupted run): finish the job
            return False
        if outside is None:
            raise runner.refused("cut-over", f"tap {self.tap} does not exist")
        self._moved = True
        self._or_undo(lambda: self._run(self._in_cmds(self.vn_bridge)))
        return True

    def _move_out(self, vn_bridge: str | None) -> bool:
        """Tap back to the hypervisor namespace (onto vn_bridge), veth end off it; True when the tap was inside."""
        outside, inside, veth = self._state()
        if inside is not None:
            self._run(self._out_cmds(vn_bridge))
            return True
        if veth is not None and probe.master(veth):
            run_batch(["ip"], [f"link set {self.host} nomaster"])
        return False

    def undo(self) -> None:
        if self._moved:
            self._move_out(self.vn_bridge)
            self._moved = False

    def teardown(self) -> bool:
        """Return the tap to the VN bridge its veth end is on; fine when the tap is already gone."""
        _, inside, veth = self._state()
        vn_bridge = probe.master(veth) or self.vn_bridge
        if inside is not None and vn_bridge is None:
            raise runner.refused("detach",
                f"cannot tell which VN bridge tap {self.tap} belongs on (its veth end is gone and there is no state "
                "record): pass --bridge")
        self._torn = (inside is not None, probe.master(veth))
        self.vn_bridge = vn_bridge
        self._move_out(vn_bridge)
        return self._torn != (False, None)

    def restore(self) -> None:
        if self._torn is None:
            return
        tap_was_inside, veth_master = self._torn
        outside, inside, _ = self._state()
        if tap_was_inside and outside is not None:
            self._run(self._in_cmds(veth_master or self.vn_bridge))
        elif tap_was_inside and inside is not None:  # teardown failed before the tap left
            self._rejoin(veth_master or self.vn_bridge)
        elif veth_master:
            run_batch(["ip"], [f"link set {self.host} master {veth_master} up"])
        self._torn = None

    def check(self) -> list[str]:
        outside, inside, veth = self._state()
        drift = []
        if outside is not None:
            drift.append(f"tap {self.tap} is in the hypervisor namespace (on {probe.master(outside)}), not in {self.ns}")
        elif inside is None:
            drift.append(f"tap {self.tap} is missing")
        else:
            if probe.master(inside) != self.bridge:
                drift.append(f"tap {self.tap} is not on {self.bridge} (master: {probe.master(inside)})")
            if not probe.is_up(inside):
                drift.append(f"tap {self.tap} is down")
        if veth is not None and probe.master(veth) != self.vn_bridge:
            drift.append(f"veth end {self.host} is not on the VN bridge {self.vn_bridge} (master: {probe.master(veth)})")
        return drift
