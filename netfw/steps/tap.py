"""CutOver: the one moment the VM's traffic stops. The tap leaves the VN bridge for the firewall bridge, and the veth
end that replaces it takes its name, MAC and port settings, so that the connection layer cannot tell.

Attach, Linux bridge (two processes):
    ip -batch -       link set T netns NS / link set S name T / link set T master B /
                      link set T type bridge_slave <the tap's settings> / link set T up
    ip -n NS -batch - link set T master FB up / link set T type bridge_slave learning off
Attach, Open vSwitch (Port and Interface records and the OpenFlow port carried, tests/integration/OVS_FACTS.md):
    ovs-vsctl del-port B T            (its own call, waiting for ovs-vswitchd: it must let go of the old netdev)
    ip -batch -       link set T netns NS / link set S name T / link set T up
    ovs-vsctl add-port B T -- set Port T <records> -- set Interface T <records> ofport=<N>
    ovs-vsctl list Interface T        (the OpenFlow port must be N again: flows keyed by in_port follow it)
    ip -n NS -batch - as above
Detach is the exact reverse with the settings the link carries then (the connection layer may have changed them):
the veth end goes down, off the bridge and back to its staging name S, the tap comes back and gets its name's port.

T is the tap's name, S the veth end's staging name (names.veth_host), B the VN bridge, NS the VM namespace, FB the
firewall bridge. The firewall bridge learns nothing (`learning off` on its two ports): with two ports there is
nothing to learn, and a VN bridge that hairpins a frame back would otherwise make it move the VM's MAC to the veth.

The tap's MAC is not local to the firewall bridge: joining a bridge makes a port's MAC a local (permanent) FDB entry,
and a frame to a local MAC goes up to the bridge's own device instead of on. The tap's MAC is the veth end's, and
it is the VN bridge's when that bridge took it (a VN bridge without an uplink takes its lowest port's MAC, e.g. a
libvirt tap's `fe:...`; an Open vSwitch bridge its `other_config:hwaddr`): the guest's frames to the host's address
on that bridge would stay in the firewall bridge. So after the tap joins, its entry is deleted
(`bridge -n NS fdb del <tap's MAC> dev T master`); the tap keeps its MAC. (The firewall bridge's own MAC is set,
never a port's: FirewallBridge.)

Every state a killed run can leave is recognised and finished from where it stopped (the NIC's journal keeps the
port settings the tap had before it left the bridge).

netfw puts back only what it took. The tap inside the namespace is proof that netfw holds it; a tap in the hypervisor
namespace is touched only in the state a killed or failed cut-over leaves it in: netfw had taken it (the journal says
so: `taken`, written before the tap leaves its bridge, or this very run took it), its veth end is still there (after
a reboot it is not: the tap is a new one), and the tap is on no bridge. A tap on any bridge, or one a record, journal
or VM document merely names, is someone else's (the connection layer's, the operator's: a tap set down or taken off
its bridge to quarantine a VM) and is never moved, enslaved, set up or down.
"""

from __future__ import annotations

from typing import Callable

from netfw.model import names
from netfw.kernel import ovs, probe
from netfw import runner
from netfw.model.spec import Bandwidth
from netfw.kernel.port import LINUX, Port
from .shaping import shape_tap
from .base import Fresh, Step, port_drift
from .tap_moves import TapMoves


class CutOver(TapMoves, Step):
    def __init__(self, vm: int, nic: int, tap: str, port: Port | None, fresh: Fresh | None = None,
                 seen: dict | None = None, limits: Bandwidth | None = None, tap_tc: frozenset[str] = frozenset(),
                 resume: bool = False, host: dict | None = None, inner: dict | None = None, taken: bool = False,
                 take: Callable[[], object] | None = None, flush: bool = False):
        self.vm, self.nic, self.tap, self.port = vm, nic, tap, port
        self.flush = flush  # empty the tap's queue before it comes up behind the firewall (see _flush_lines)
        self.seen = seen  # the tap as planning saw it in the hypervisor namespace (None: not there, or not looked)
        # The hypervisor's links named tap and staging (and the VM namespace's named tap) as detach's planning read
        # them, under the VM's lock, just before: the first facts() uses them instead of a probe; every later one
        # reads again.
        self.host, self.inner = host, inner
        # netfw has taken the tap (the journal says so); take: writes that in the journal, before the tap is taken
        self.taken, self.take = taken, take
        # A move destroys the tap's qdiscs: the NIC's limits go with it each way (netfw.kernel.tc), and an attach rolled
        # back puts back on the tap the parts of libvirt's set-up it had (tap_tc: the qdisc kinds it carried).
        self.limits, self.tap_tc = limits, tap_tc
        self.resume = resume  # a journal says a run was killed: a tap already back may lack its limits
        self.ns, self.fwbr, self.nic_fw = names.netns(vm), names.bridge(vm, nic), names.veth_fw(vm, nic)
        self.staging = names.veth_host(vm, nic)
        self.fresh = fresh or Fresh()
        self._done: str | None = None  # "in" after apply moved the tap in, "out" after teardown moved it out

    def describe(self) -> str:
        where = self.port.bridge if self.port else "its VN bridge"
        return f"cut-over of tap {self.tap}: {where} <-> {self.ns}/{self.fwbr}"

    # --- facts ---------------------------------------------------------------------------------------------------

    def _ours(self, link: dict | None) -> bool:
        return link is not None and probe.kind(link) == "veth" and \
            probe.alias_of(link) == (self.vm, self.nic, names.VETH_HOST)

    def facts(self) -> tuple[dict | None, dict | None, str | None]:
        """(the tap in the hypervisor namespace, the tap in the VM namespace, the name the veth end has: the tap's
        after the cut-over, its staging name before, None when there is none). Read-only."""
        if self.fresh.veth and self.seen is not None:  # this run made the veth and planning saw the tap outside:
            return self.seen, None, self.staging  # nothing else can be the case (and no process need ask)
        host, inner, self.host, self.inner = self.host, self.inner, None, None
        if host is None:
            host = probe.links(None, [self.tap, self.staging])
        named = host.get(self.tap)
        veth = self.tap if self._ours(named) else self.staging if self._ours(host.get(self.staging)) else None
        if veth is None and self.fresh.veth:  # made by this very run (in a dry run it only was recorded)
            veth = self.staging
        outside = named if named is not None and not self._ours(named) else None
        if outside is None and inner is None:
            inner = probe.links(self.ns, [self.tap])
        inside = inner.get(self.tap) if outside is None else None
        return outside, inside, veth

    def _need_port(self) -> Port:
        if self.port is None:
            raise runner.refused("cut-over", f"the VN port of tap {self.tap} is unknown (no record, no journal): "
                                 "give the VN bridge (--bridge)")
        return self.port

    # --- Step ----------------------------------------------------------------------------------------------------

    def _attached(self, inside: dict | None, veth: str | None) -> bool:
        """The tap on the firewall bridge (up, not learning) and the veth end under the tap's name, up, joined."""
        if inside is None or veth != self.tap:
            return False
        tap_ok = probe.master(inside) == self.fwbr and probe.is_up(inside) and \
            probe.slave_data(inside).get("learning") is False
        return tap_ok and not self._host_drift()

    def _host_drift(self) -> list[str]:
        """What is wrong with the veth end that holds the tap's name (joined to its VN bridge, up)."""
        port = self._need_port()
        link = probe.links(None, [self.tap]).get(self.tap)
        if not self._ours(link):
            return [f"{self.tap} in the hypervisor namespace is not netfw's veth end"]
        drift = [] if probe.is_up(link) else [f"veth end {self.tap} is down"]
        if port.kind == LINUX:
            if probe.master(link) != port.bridge:
                drift.append(f"veth end {self.tap} is not on the VN bridge {port.bridge} "
                             f"(master: {probe.master(link)})")
        else:
            found = ovs.lookup(self.tap)
            if found is None or found.bridge != port.bridge:
                drift.append(f"veth end {self.tap} is not a port of the Open vSwitch bridge {port.bridge}")
        return drift

    def commands(self):
        return []

    def apply(self) -> bool:
        """Move the tap in, or finish a move a killed run left half-done; nothing when it is all in place."""
        self._done = None
        outside, inside, veth = self.facts()
        if outside is None and inside is None:
            raise runner.refused("cut-over", f"tap {self.tap} does not exist")
        if veth is None:
            raise runner.refused("cut-over", f"the veth end of tap {self.tap} is missing")
        if outside is None and self._attached(inside, veth):
            if not self._local(inside):
                return False
            self._unlocal(inside["address"])  # a repair: the tap's MAC was local to the firewall bridge
            return True
        if outside is None and veth == self.tap and probe.master(inside) != self.fwbr:
            self._onto_firewall(inside)  # only the last commands of a cut-over were missing
            return True
        if outside is not None and not self.taken:  # the moment netfw takes the tap: the journal says so first
            if self.take is not None:
                self.take()
            self.taken = True
        self._done = "in"
        self._or_undo(lambda: self._move_in(outside, veth, outside or inside))
        return True

    def undo(self) -> None:
        if self._done == "in":
            self._done, self.seen = None, None
            outside, inside, veth = self.facts()
            if outside is None:  # the tap made it in (fully or partly): take it out again
                self._move_out(inside, veth, self.tap_tc)
            elif self._left(outside, veth):  # still outside, but its OVS port was already deleted
                self._move_out(None, veth, self.tap_tc)

    def teardown(self) -> bool:
        """Return the tap to its VN bridge as the veth end carries it now; fine when the tap is already gone."""
        self._done, self.seen = None, None
        outside, inside, veth = self.facts()
        if outside is not None:  # the tap is back (a killed detach may have left it off its bridge), or never left
            if not self.taken or veth is None or self.port is None:
                return False  # not netfw's to touch, whatever a record, journal or document says
            if self._left(outside, veth):
                self._done = "out"
                self._or_undo(lambda: self._move_out(None, veth, back=True))
                return True
            missing = self._unshaped_tap() if self.resume and self.limits is not None and \
                self._state(outside) == "joined" else frozenset()
            if missing:  # a run killed after the tap was back, before its limits were
                shape_tap(self.tap, self.limits, missing)
                return True
            return False
        if inside is None and veth != self.tap:
            return False  # no tap (the VM stopped) and the veth end is not holding its name
        self._done = "out"
        if inside is None:  # the VM is gone: only give the name back
            self._or_undo(self._give_name_back)
        else:
            self._or_undo(lambda: self._move_out(inside, veth))
        return True

    def _state(self, outside: dict) -> str:
        """Where the tap in the hypervisor namespace is: "joined" (up on its VN bridge), "loose" (on no bridge: no
        Linux master, no OVS port), or "elsewhere" (on another bridge, or down on its own)."""
        port = self._need_port()
        found = ovs.lookup(self.tap) if port.kind != LINUX else None
        if probe.master(outside) is None and found is None:
            return "loose"
        on = probe.master(outside) if port.kind == LINUX else found.bridge if found else None
        return "joined" if on == port.bridge and probe.is_up(outside) else "elsewhere"

    def _left(self, outside: dict, veth: str | None) -> bool:
        """True when the tap outside is as a killed or failed cut-over of netfw's left it: taken by netfw, its veth
        end still there, on no bridge (see the module's docstring); only then is it put back."""
        return self.taken and veth is not None and self.port is not None and self._state(outside) == "loose"

    def restore(self) -> None:
        if self._done == "out":
            self._done = None
            outside, inside, veth = self.facts()
            if veth is None:
                raise runner.refused("detach", f"cannot put tap {self.tap} back behind its firewall: "
                                     "its veth end is gone")
            if outside is not None or inside is not None:
                self._move_in(outside, veth, outside or inside)

    def check(self) -> list[str]:
        outside, inside, veth = self.facts()
        if outside is not None:
            return [f"tap {self.tap} is in the hypervisor namespace (on {probe.master(outside)}), not in {self.ns}"]
        if inside is None:
            return [f"tap {self.tap} is missing"]
        drift = port_drift(f"tap {self.tap}", inside, self.fwbr)
        if probe.master(inside) == self.fwbr and self._local(inside):
            drift.append(f"{self.ns}: the tap's MAC {inside.get('address')} is a local entry of {self.fwbr}: the "
                         "VM's frames to it (the VN bridge's MAC, if the bridge took the tap's) stay there")
        if veth != self.tap:
            drift.append(f"the veth end does not hold the tap's name {self.tap} in the hypervisor namespace")
        elif self.port is not None:
            drift += self._host_drift()
        return drift
