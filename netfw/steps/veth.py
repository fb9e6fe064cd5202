"""VethPair: one end in the hypervisor namespace (it takes the tap's place on the VN bridge at the cut-over), the
other on the firewall bridge in the VM namespace.

The hypervisor end is made under its staging name (names.veth_host), down (a link must be down to be renamed) and
with the tap's MAC, so that the VN bridge, which takes its ports' MACs as its own, keeps its MAC when the veth end
replaces the tap. The cut-over renames it to the tap's name; it is found by its alias under either name.

It has no IPv6 (disable_ipv6, set while it is down, before it ever comes up): a bridge port needs no address, and
every device with IPv6 puts three routes in the hypervisor's IPv6 table (its link-local address, fe80::/64,
ff00::/8), which the kernel walks whole whenever a link of that namespace goes down or away (fib6_ifdown). With
1,000 VMs that walk over 6,000 routes made each attach and detach cost up to 45 ms more than with one (issue 22).
"""

from __future__ import annotations

from netfw.model import names
from netfw.kernel import probe
from netfw import runner
from .base import Fresh, Step, port_drift, quote, remove, run_batch


class VethPair(Step):
    def __init__(self, vm: int, nic: int, mtu: int, tap: str | None = None, mac: str | None = None,
                 fresh: Fresh | None = None):
        self.vm, self.nic, self.ns, self.mtu, self.fresh = vm, nic, names.netns(vm), mtu, fresh or Fresh()
        self.tap, self.mac = tap or names.tap(vm, nic), mac
        self.host, self.fw, self.bridge = names.veth_host(vm, nic), names.veth_fw(vm, nic), names.bridge(vm, nic)
        self.host_alias = names.alias(vm, nic, names.VETH_HOST)
        self.fw_alias = names.alias(vm, nic, names.VETH_FW)
        self._created = False
        self._old_mtu: int | None = None  # the MTU a repair changed
        self._removed: tuple[str, str] | None = None  # the MACs of (host, fw) when teardown removed the pair

    def describe(self) -> str:
        return f"veth pair {self.host} <-> {self.ns}/{self.fw} on {self.bridge} (mtu {self.mtu})"

    def _host_lines(self, macs: tuple[str, str] | None = None) -> list[str]:
        hmac = macs[0] if macs else self.mac
        fmac = f" address {macs[1]}" if macs else ""
        return [
            f"link add {self.host} mtu {self.mtu}{f' address {hmac}' if hmac else ''} type veth"
            f" peer name {self.fw} netns {self.ns} mtu {self.mtu}{fmac}",
            f"link set {self.host} alias {quote(self.host_alias)}",
        ]

    def _fw_lines(self) -> list[str]:
        # The firewall bridge has two ports and nothing to learn (see CutOver).
        return [f"link set {self.fw} alias {quote(self.fw_alias)} master {self.bridge}",
                f"link set {self.fw} type bridge_slave learning off", f"link set {self.fw} up"]

    def commands(self):
        return []

    def _create(self, macs: tuple[str, str] | None = None) -> None:
        # The peer is created directly inside the VM namespace: there is no half-moved state.
        self._created = True
        try:
            run_batch(["ip"], self._host_lines(macs))
        except runner.CommandError as e:
            if "File exists" in e.stderr:  # someone else's link with our name: not ours to delete on undo
                self._created = False
            raise
        self.fresh.veth = True
        runner.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{self.host}.disable_ipv6=1"])
        run_batch(probe.ip(self.ns), self._fw_lines())

    def _ours(self, link: dict | None) -> bool:
        return link is not None and probe.kind(link) == "veth" and \
            probe.alias_of(link) == (self.vm, self.nic, names.VETH_HOST)

    def host_end(self, refuse_stray: bool = False) -> dict | None:
        """The hypervisor end: under the tap's name after the cut-over, under its staging name before. Read-only.

        refuse_stray: a link that is not netfw's under the staging name is in the way (not ours to use or delete).
        """
        found = probe.links(None, [self.host, self.tap])
        ours = next((link for link in (found.get(self.tap), found.get(self.host)) if self._ours(link)), None)
        stray = found.get(self.host)
        if refuse_stray and stray is not None and not self._ours(stray):
            raise runner.refused("veth", f"{self.host} is in the way: not netfw's veth end "
                                 f"({probe.kind(stray) or 'a link'} without netfw's alias)")
        return ours

    def apply(self) -> bool:
        """Create the pair, or bring an existing one back to its MTU, aliases, bridge and state."""
        self._created, self._old_mtu = False, None
        # In a namespace this run created there is no peer, so no pair (a pair dies with either end's namespace).
        host = None if self.fresh.created else self.host_end(refuse_stray=True)
        # Without the host end there is no pair (deleting one end deletes both): a stray fw end makes the creation
        # below fail with "File exists", and the step undoes itself.
        fw = probe.links(self.ns, [self.fw]).get(self.fw) if host is not None else None
        if host is None:
            self._or_undo(self._create)
            return True
        if fw is None:
            raise runner.refused("veth", f"only one end of {host['ifname']}/{self.fw} exists: run detach first")
        if self._drift(host, fw):
            self._old_mtu = host["mtu"] if host["mtu"] != self.mtu else None
            self._or_undo(lambda: self._set(host["ifname"], self.mtu))
        return self._old_mtu is not None  # a repair is never undone by deleting; undo puts the MTU back

    def _set(self, host: str, mtu: int) -> None:
        """Bring both ends to mtu and their aliases, the fw end onto the bridge (not learning), up."""
        run_batch(["ip"], [f"link set {host} mtu {mtu} alias {quote(self.host_alias)}"])
        run_batch(probe.ip(self.ns), [f"link set {self.fw} mtu {mtu}", *self._fw_lines()])

    def _delete(self, host: str | None = None, host_only: bool = False) -> None:
        # Deleting one end deletes its peer, wherever it is. host_only: a lone fw end is not ours to delete (undo).
        name = host or self.host
        if not remove(["ip", "link", "del", name], devices=[name]) and not host_only:
            remove(probe.ip(self.ns, "link", "del", self.fw), devices=[self.fw], ns=self.ns)

    def undo(self) -> None:
        if self._created:
            self._delete(host_only=True)
            self._created = False
        if self._old_mtu is not None:
            host = self.host_end()
            if host is not None:
                self._set(host["ifname"], self._old_mtu)
            self._old_mtu = None

    def teardown(self) -> bool:
        host = self.host_end(refuse_stray=True)  # a link of someone else's under the staging name is left alone
        fw = probe.links(self.ns, [self.fw]).get(self.fw)
        self._removed = (host["address"], fw["address"]) if host and fw else None
        if host is None and fw is None:
            return False
        self.mtu = (host or fw)["mtu"]  # restore() recreates it as it was
        # After this plan's cut-over gave the tap's name back, the end is under its staging name (a dry run, which
        # only recorded the rename, sees the old name: the plan knows better).
        self._delete(None if (host is None or self.fresh.staged) else host["ifname"])
        return self._removed is not None

    def restore(self) -> None:
        if self._removed is not None and self.host_end() is None:
            self._create(self._removed)
            self._removed = None

    def _drift(self, host: dict | None, fw: dict | None) -> list[str]:
        drift = []
        for where, name, link, alias in ((None, self.host, host, self.host_alias), (self.ns, self.fw, fw, self.fw_alias)):
            label = f"{where}/{name}" if where else (link or {}).get("ifname", name)
            if link is None:
                drift.append(f"veth end {label} is missing")
                continue
            if probe.kind(link) != "veth":
                drift.append(f"{label} is a {probe.kind(link)}, not a veth")
            if link.get("mtu") != self.mtu:
                drift.append(f"veth end {label} has mtu {link.get('mtu')}, expected {self.mtu}")
            if link.get("ifalias") != alias:
                drift.append(f"veth end {label} has alias {link.get('ifalias')!r}, expected {alias!r}")
        if fw is not None:
            drift += port_drift(f"veth end {self.ns}/{self.fw}", fw, self.bridge)
        if host is not None and fw is not None and host.get("link_index") != fw.get("ifindex"):
            drift.append(f"{host['ifname']} and {self.ns}/{self.fw} are not peers")
        return drift

    def check(self) -> list[str]:
        return self._drift(self.host_end(), probe.links(self.ns, [self.fw]).get(self.fw))
