"""Shaping (attach, update) and TapShaping (detach): the NIC's bandwidth limits, see netfw.tc."""

from __future__ import annotations

import json

from loguru import logger

from .. import names, probe, runner, script, tc
from ..model import Bandwidth
from .base import ForwardOnly, Fresh, Step


def _batch(ns: str | None, lines: list[str], force: bool = False) -> None:
    argv = ["tc", *(["-n", ns] if ns else []), *(["-force"] if force else []), "-batch", "-"]
    runner.run(argv, stdin=script.join(lines))


def tc_rate(kbytes: int) -> str:
    """A rate of kbytes KB/s as tc prints it (`10Mbit`): bits, divided by 1000 while exact or large. Pure."""
    rate, units, i = kbytes * 8000, ("", "K", "M", "G", "T"), 0
    while i < len(units) - 1 and rate >= 1000 and not (rate % 1000 and rate < 1000 * 1000):
        rate //= 1000
        i += 1
    return f"{rate}{units[i]}bit"


class Shaping(Step):
    """Ensure the NIC's limits hold in its VM namespace: HTB on the tap (to the VM) and on the veth end -f (from the
    VM); a limit the NIC no longer has is removed."""

    def __init__(self, vm: int, nic: int, tap: str, limits: Bandwidth | None, previous: Bandwidth | None = None,
                 fresh: Fresh | None = None):
        self.ns, self.tap, self.fw = names.netns(vm), tap, names.veth_fw(vm, nic)
        self.limits, self.previous, self.fresh = limits, previous, fresh or Fresh()
        self._before: dict[str, bool] | None = None  # which devs had an HTB root before the last apply

    def describe(self) -> str:
        return f"bandwidth limits of {self.tap} in {self.ns}"

    def commands(self):
        return []

    def _devs(self) -> tuple[tuple[str, str], ...]:
        return (("inbound", self.tap), ("outbound", self.fw))

    def _shaped(self) -> dict[str, bool]:
        """{dev: has an HTB root}; a tap that has just moved in and a new veth end have none (no probe then)."""
        if self.fresh.veth:
            return {dev: False for _, dev in self._devs()}
        qdiscs = json.loads(runner.read(["tc", "-n", self.ns, "-j", "qdisc", "show"]).stdout or "[]")
        return {dev: any(q.get("dev") == dev and q.get("root") and q.get("kind") == "htb" for q in qdiscs)
                for _, dev in self._devs()}

    def _lines(self, limits: Bandwidth | None, shaped: dict[str, bool]) -> list[str]:
        lines = []
        for way, dev in self._devs():
            want = limits.limits(way) if limits else None
            if want is not None:
                htb = tc.htb_lines(dev, want)
                lines += htb[1:] if shaped[dev] else htb  # an HTB root in place: only its class changes
            elif shaped[dev]:
                lines.append(f"qdisc del dev {dev} root")
        return lines

    def apply(self) -> bool:
        """Load the limits (one `tc -batch`), unless they already hold; safe to repeat."""
        self._before = None
        if self.limits == self.previous and not (self.limits and self.check()):
            return False
        shaped = self._shaped()
        lines = self._lines(self.limits, shaped)
        if not lines:
            return False
        self._before = shaped
        self._or_undo(lambda: _batch(self.ns, lines))
        return True

    def undo(self) -> None:
        if self._before is not None:
            lines = self._lines(self.previous, self._shaped())
            if lines:
                _batch(self.ns, lines)
            self._before = None

    def teardown(self) -> bool:
        return False  # the limits go with the links (the tap leaves, the veth is deleted)

    def restore(self) -> None:
        pass

    def _classes(self, dev: str) -> str:
        return runner.read(["tc", "-n", self.ns, "class", "show", "dev", dev]).stdout

    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return []
        drift = []
        qdiscs = json.loads(runner.read(["tc", "-n", self.ns, "-j", "qdisc", "show"]).stdout or "[]")
        for way, dev in self._devs():
            limits = self.limits.limits(way) if self.limits else None
            root = next((q for q in qdiscs if q.get("dev") == dev and q.get("root")), None)
            has = root is not None and root.get("kind") == "htb"
            if limits is None:
                if has:
                    drift.append(f"{self.ns}: {dev} is shaped, but the NIC has no {way} limit")
                continue
            rate = f"rate {tc_rate(limits[0])}"
            if not has or "class htb 1:1 " not in (text := self._classes(dev)) or rate not in text:
                drift.append(f"{self.ns}: the {way} limit ({limits[0]} KB/s) does not hold on {dev}")
        return drift


class TapShaping(ForwardOnly):
    """Detach: the tap, back in the hypervisor namespace, gets libvirt's set-up for the NIC's limits again (HTB on its
    egress, an ingress policer). A kernel without tc's police action (act_police) cannot take the second: that is
    said in a WARNING, as libvirt could not have set it either, and the tap keeps its limit to the VM."""

    def __init__(self, tap: str, limits: Bandwidth):
        self.tap, self.limits = tap, limits

    def describe(self) -> str:
        return f"bandwidth limits of tap {self.tap} in the hypervisor namespace"

    def commands(self):
        return []

    def apply(self) -> bool:
        """Put the limits on the tap; nothing to undo (a tap moved back behind its firewall loses its qdiscs)."""
        shaping, policing = tc.tap_lines(self.tap, self.limits)
        if not shaping and not policing:
            return False
        try:
            _batch(None, shaping + policing, force=True)
        except runner.CommandError as e:
            lines = [l.strip() for l in e.stderr.splitlines() if l.strip() and not l.startswith("Command failed")]
            if not policing or not lines or any(l not in tc.NO_POLICE for l in lines):
                raise
            logger.warning("tap {}: its limit from the VM ({} KB/s) cannot be restored: this kernel has no tc police "
                           "action (act_police); the limit to the VM holds", self.tap, self.limits.outbound_avg)
        return True

    def undo(self) -> None:
        pass  # a tap that goes back behind its firewall loses its qdiscs with the move
