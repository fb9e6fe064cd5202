"""Shaping (attach, update) and TapShaping (detach): the NIC's bandwidth limits, see netfw.kernel.tc."""

from __future__ import annotations

import json

from loguru import logger

from netfw.model import names
from netfw.kernel import probe, tc
from netfw import runner
from netfw.rules import script
from netfw.model.spec import Bandwidth
from .base import Fresh, Step


def _batch(ns: str | None, lines: list[str], force: bool = False) -> None:
    argv = probe.iproute(ns, "tc", *(["-force"] if force else []), "-batch", "-")
    runner.run(argv, stdin=script.join(lines))


def tc_rate(kbytes: int) -> str:
    """A rate of kbytes KB/s as tc prints it (`10Mbit`): bits, divided by 1000 while exact or large. Pure."""
    rate, units, i = kbytes * 8000, ("", "K", "M", "G", "T"), 0
    while i < len(units) - 1 and rate >= 1000 and not (rate % 1000 and rate < 1000 * 1000):
        rate //= 1000
        i += 1
    return f"{rate}{units[i]}bit"


def shaped(ns: str) -> set[str]:
    """The links of namespace ns that have an HTB root qdisc (`tc -n NS -j qdisc show`). Read-only."""
    qdiscs = json.loads(runner.read(probe.iproute(ns, "tc", "-j", "qdisc", "show")).stdout or "[]")
    return {q.get("dev") for q in qdiscs if q.get("root") and q.get("kind") == "htb"}


def firewall_lines(tap: str, fw: str, limits: Bandwidth | None, have: set[str]) -> list[str]:
    """Lines that make the VM namespace hold limits: HTB on the tap (to the VM) and on the veth end (from it); a
    link in `have` already has an HTB root (only its class changes), and loses it when its direction is free."""
    lines = []
    for way, dev in (("inbound", tap), ("outbound", fw)):
        want = limits.limits(way) if limits else None
        if want is not None:
            htb = tc.htb_lines(dev, want)
            lines += htb[1:] if dev in have else htb
        elif dev in have:
            lines.append(f"qdisc del dev {dev} root")
    return lines


def shape_firewall(ns: str, tap: str, fw: str, limits: Bandwidth, tap_moved: bool, fw_fresh: bool) -> None:
    """The NIC's limits on the tap in ns (none of its own when it has just moved in) and on the veth end (none when
    it is new in this run); otherwise what they carry is read first."""
    have = set() if (tap_moved and fw_fresh) else shaped(ns)
    if tap_moved:
        have.discard(tap)
    lines = firewall_lines(tap, fw, limits, have)
    if lines:
        _batch(ns, lines)


def shape_tap(tap: str, limits: Bandwidth, only: frozenset[str] | None = None) -> None:
    """libvirt's set-up for limits on a tap back in the hypervisor namespace (only: just the qdisc kinds it had,
    when an attach is rolled back). A kernel without tc's police action (act_police) cannot take the ingress
    policer: that is said in a WARNING (libvirt could not have set it either); the limit to the VM holds."""
    shaping, policing = tc.tap_lines(tap, limits)
    if only is not None:
        shaping = shaping if "htb" in only else []
        policing = policing if "ingress" in only else []
    if not shaping and not policing:
        return
    try:
        _batch(None, shaping + policing, force=True)
    except runner.CommandError as e:
        lines = [l.strip() for l in e.stderr.splitlines() if l.strip() and not l.startswith("Command failed")]
        if not policing or not lines or any(l not in tc.NO_POLICE for l in lines):
            raise
        logger.warning("tap {}: its limit from the VM ({} KB/s) cannot be restored: this kernel has no tc police "
                       "action (act_police); the limit to the VM holds", tap, limits.outbound_avg)


class Shaping(Step):
    """Ensure the NIC's limits hold in its VM namespace: HTB on the tap (to the VM) and on the veth end -f (from the
    VM); a limit the NIC no longer has is removed."""

    def __init__(self, vm: int, nic: int, tap: str, limits: Bandwidth | None, previous: Bandwidth | None = None,
                 fresh: Fresh | None = None):
        self.ns, self.tap, self.fw = names.netns(vm), tap, names.veth_fw(vm, nic)
        self.limits, self.previous, self.fresh = limits, previous, fresh or Fresh()
        self._before: set[str] | None = None  # which links had an HTB root before the last apply

    def describe(self) -> str:
        return f"bandwidth limits of {self.tap} in {self.ns}"

    def commands(self):
        return []

    def _devs(self) -> tuple[tuple[str, str], ...]:
        return (("inbound", self.tap), ("outbound", self.fw))

    def _shaped(self) -> set[str]:
        """The NIC's links with an HTB root; a new veth end and a tap that has just moved in have none."""
        return set() if self.fresh.veth else shaped(self.ns)

    def _lines(self, limits: Bandwidth | None, have: set[str]) -> list[str]:
        return firewall_lines(self.tap, self.fw, limits, have)

    def apply(self) -> bool:
        """Load the limits (one `tc -batch`), unless they already hold; safe to repeat."""
        self._before = None
        if self.fresh.veth:  # the cut-over of this run shaped the tap it moved in, and the new veth end
            return False
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
        return runner.read(probe.iproute(self.ns, "tc", "class", "show", "dev", dev)).stdout

    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return []
        drift = []
        qdiscs = json.loads(runner.read(probe.iproute(self.ns, "tc", "-j", "qdisc", "show")).stdout or "[]")
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
