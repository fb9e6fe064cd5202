"""The moves of a cut-over (CutOver, tap.py): the tap into the VM namespace and onto its firewall bridge, the veth
end under the tap's name onto the VN bridge with the tap's port settings (Linux bridge or Open vSwitch), and each
of them back. A mixin of CutOver: it uses the step's names and facts (tap, ns, fwbr, staging, port, limits, fresh,
flush) and its _need_port; the module docstring of tap.py gives the commands in order."""

from __future__ import annotations

import os

from netfw.kernel import ovs, probe
from netfw import runner
from netfw.rules import script
from netfw.kernel.port import LINUX, Port
from .base import run_batch
from .shaping import shape_firewall, shape_tap


class TapMoves:
    """The cut-over's moves, each from any state a killed run may have left (see CutOver)."""

    def _joined_lines(self, port: Port) -> list[str]:
        """`ip -batch` lines that put T (in the hypervisor namespace) on a Linux VN bridge with the port's settings,
        or only up for Open vSwitch (its port is added by ovs-vsctl)."""
        if port.kind == LINUX:
            return [f"link set {self.tap} master {port.bridge}",
                    *filter(None, [port.settings_line(self.tap)]), f"link set {self.tap} up"]
        return [f"link set {self.tap} up"]

    def _joined(self, port: Port) -> None:
        """After the batch: VLAN entries (Linux, VLAN-filtering bridge) or the OVS port with its records."""
        if port.kind == LINUX:
            if port.vlans is not None:  # the default entry a new port gets goes first
                lines = [f"vlan del dev {self.tap} vid 1"] + [v.line(self.tap) for v in port.vlans]
                runner.run(["bridge", "-batch", "-"], stdin=script.join(lines))
            return
        runner.run(port.ovs.add_argv(self.tap))
        if port.ovs.ofport is None or runner.dry():
            return
        number, error = ovs.ofport_of(self.tap)
        if number != port.ovs.ofport or error not in ("", ["set", []], None):
            raise runner.refused("cut-over", f"Open vSwitch gave {self.tap} OpenFlow port {number!r} (error "
                                 f"{error!r}), not {port.ovs.ofport}: flows keyed by in_port would miss it")

    def _unport(self, port: Port) -> None:
        """OVS: delete port T if OVSDB has it (the tap's, or the veth end's), in a call of its own that waits for
        ovs-vswitchd: it must let go of the old netdev before a same-named link is added."""
        if port.kind != LINUX:
            runner.run(ovs.del_port_argv(port.bridge, self.tap))

    def _onto_firewall(self, link: dict) -> None:
        """The tap (inside the namespace) onto the firewall bridge, up, not learning; its MAC no local entry."""
        run_batch(probe.ip(self.ns), [*self._flush_lines(link), f"link set {self.tap} master {self.fwbr} up",
                                      f"link set {self.tap} type bridge_slave learning off"])
        self._unlocal(link["address"])

    def _flush_lines(self, link: dict) -> list[str]:
        """With flush (the libvirt hook at `start begin`: the tap exists, no QEMU reads it yet), while the tap is down
        in the namespace, before it comes up behind the firewall:
        - its queue is emptied. Frames the VN bridge delivered to it (and its own IPv6 packets) while it sat there
          unfiltered wait in that queue for QEMU; tun resizes its queue on a txqueuelen change (tun_device_event ->
          tun_queue_resize -> ptr_ring_resize_multiple) and frees what does not fit the new size (tun_ptr_free):
          0 frees them all, then the length it had comes back;
        - it makes no IPv6 address of its own (addrgenmode none): a link-local address would be announced (DAD,
          router solicitation) by the tap itself, straight into its queue, past the firewall bridge. A bridge port
          needs none; the tap keeps the setting when it goes back (nothing addresses a bridge port's IPv6)."""
        if not self.flush:
            return []
        length = link.get("txqlen")
        length = length if isinstance(length, int) and not isinstance(length, bool) and 0 < length < 1 << 31 \
            else 1000  # tun's default
        return [f"link set {self.tap} addrgenmode none", f"link set {self.tap} txqueuelen 0",
                f"link set {self.tap} txqueuelen {length}"]

    def _local(self, inside: dict) -> bool:
        """The tap's MAC is a local entry of the firewall bridge (the tap is on it). Read-only."""
        return inside.get("address") in probe.local_macs(self.ns, self.fwbr, self.tap)

    def _unlocal(self, mac: str) -> None:
        """Delete the firewall bridge's local entry for the tap's MAC (see the module's docstring)."""
        try:
            runner.run(probe.iproute(self.ns, "bridge", "fdb", "del", mac, "dev", self.tap, "master"))
        except runner.CommandError as e:  # no such entry: nothing to delete
            if e.stderr.strip() != "RTNETLINK answers: No such file or directory":
                raise

    def _move_in(self, outside: dict | None, veth: str, link: dict) -> None:
        """From any state of attach: the tap into the namespace, the veth end renamed T and joined, tap onto FB
        (with the NIC's limits in the namespace). link: the tap's, as last read (its MAC, its queue length)."""
        port = self._need_port()
        lines = [f"link set {self.tap} netns {self.ns}"] if outside is not None else []
        if veth != self.tap:  # a link must be down to be renamed (the veth end is made down; a killed run...)
            lines += [f"link set {veth} down", f"link set {veth} name {self.tap}"]
        self._unport(port)
        run_batch(["ip"], lines + self._joined_lines(port))
        self._joined(port)
        self._onto_firewall(link)
        if self.limits is not None:
            shape_firewall(self.ns, self.tap, self.nic_fw, self.limits, tap_moved=outside is not None,
                           fw_fresh=self.fresh.veth)

    def _unshaped_tap(self) -> frozenset[str]:
        """The parts of libvirt's set-up for the NIC's limits that the tap (back in the hypervisor namespace) lacks:
        "htb" (to the VM), "ingress" (from the VM)."""
        want = {"htb"} if self.limits.limits("inbound") else set()
        want |= {"ingress"} if self.limits.limits("outbound") else set()
        return frozenset(want - {q.get("kind") for q in probe.qdiscs(self.tap)})

    def _move_out(self, inside: dict | None, veth: str | None, tap_tc: frozenset[str] | None = None,
                  back: bool = False) -> None:
        """From any state of detach: the veth end off the bridge, back to its staging name; the tap back, joined,
        with libvirt's set-up for the NIC's limits (tap_tc: only the parts it had before an attach rolled back)."""
        port = self._need_port()
        if veth == self.tap:
            self._unport(port)
            run_batch(["ip"], [f"link set {self.tap} down"] +
                      ([f"link set {self.tap} nomaster"] if port.kind == LINUX else []) +
                      [f"link set {self.tap} name {self.staging}"])
            self.fresh.staged = True
        if inside is not None:
            runner.run(probe.ip(self.ns, "link", "set", self.tap, "netns", str(os.getpid())))
        elif port.kind != LINUX:
            self._unport(port)  # a tap already back may still be a stale port
        run_batch(["ip"], self._joined_lines(port))
        self._joined(port)
        if self.limits is not None and (inside is not None or back):  # it came back: its qdiscs stayed behind
            shape_tap(self.tap, self.limits, tap_tc)

    def _give_name_back(self) -> None:
        """The VM is gone (no tap): the veth end leaves the VN bridge and takes its staging name again."""
        port = self._need_port()
        self._unport(port)
        run_batch(["ip"], [f"link set {self.tap} down"] + ([f"link set {self.tap} nomaster"]
                                                         if port.kind == LINUX else []) +
                  [f"link set {self.tap} name {self.staging}"])
        self.fresh.staged = True
