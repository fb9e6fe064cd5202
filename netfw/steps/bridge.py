"""FirewallBridge: one-br-<VM>-<NIC> inside the VM namespace, holding the tap and the veth end.

Its MAC is set (names.bridge_mac): a Linux bridge without a set MAC takes its lowest port's, which may be the tap's,
and a frame to the bridge's own MAC stays in the bridge. The tap's MAC can be the VN bridge's (a VN bridge without
an uplink takes a tap's MAC, LIBVIRT.md): the guest's frames to the host's address would never leave the VM
namespace. The tap's own local entry is CutOver's.
"""

from __future__ import annotations

from netfw.model import names
from netfw.kernel import probe
from netfw import runner
from netfw.rules import script
from .base import Fresh, Step, quote, remove, run_batch


class FirewallBridge(Step):
    def __init__(self, vm: int, nic: int, mtu: int, fresh: Fresh | None = None):
        self.ns, self.name, self.mtu, self.fresh = names.netns(vm), names.bridge(vm, nic), mtu, fresh or Fresh()
        self.alias = names.alias(vm, nic, names.BRIDGE)
        self.mac = names.bridge_mac(vm, nic)
        self._created = False
        self._old_mtu: int | None = None  # the MTU a repair changed
        self._removed: dict | None = None

    def describe(self) -> str:
        return f"firewall bridge {self.name} in {self.ns} (mtu {self.mtu})"

    def _lines(self) -> list[str]:
        return [
            f"link add {self.name} address {self.mac} mtu {self.mtu} type bridge"
            " nf_call_iptables 1 nf_call_ip6tables 1",
            f"link set {self.name} alias {quote(self.alias)} up",
        ]

    def commands(self):
        return [(probe.ip(self.ns, "-batch", "-"), script.join(self._lines()))]

    def teardown_commands(self):
        return [(probe.ip(self.ns, "link", "del", self.name), None)]

    def _create(self) -> None:
        self._created = True
        run_batch(probe.ip(self.ns), self._lines())

    def apply(self) -> bool:
        """Create the bridge, or bring an existing one back to the options, MTU and state attach sets."""
        self._created, self._old_mtu = False, None
        link = None if self.fresh.created else probe.links(self.ns, [self.name]).get(self.name)
        if link is None:
            self._or_undo(self._create)
            return True
        if not self.check_link(link):
            return False
        self._old_mtu = link["mtu"] if link["mtu"] != self.mtu else None
        self._or_undo(lambda: run_batch(probe.ip(self.ns), [
            f"link set {self.name} type bridge nf_call_iptables 1 nf_call_ip6tables 1",
            f"link set {self.name} mtu {self.mtu} address {self.mac} alias {quote(self.alias)} up",
        ]))
        return self._old_mtu is not None  # an existing bridge is repaired, never deleted; undo puts its MTU back

    def _delete(self) -> None:
        remove(probe.ip(self.ns, "link", "del", self.name), devices=[self.name], ns=self.ns)

    def undo(self) -> None:
        if self._created:
            self._delete()
            self._created = False
        if self._old_mtu is not None:
            runner.run(probe.ip(self.ns, "link", "set", self.name, "mtu", str(self._old_mtu)))
            self._old_mtu = None

    def teardown(self) -> bool:
        link = probe.links(self.ns, [self.name]).get(self.name)
        if link is not None and probe.kind(link) != "bridge":
            raise runner.refused("detach",
                f"{self.ns}/{self.name} is a {probe.kind(link) or 'plain link'}, not netfw's bridge: left alone")
        self._removed = link
        if link is not None:
            self.mtu = link["mtu"]  # restore() recreates it as it was
            self._delete()
        return link is not None

    def restore(self) -> None:
        if self._removed is not None and self.name not in probe.links(self.ns, [self.name]):
            self._create()
            self._removed = None

    def check_link(self, link: dict | None) -> list[str]:
        if link is None:
            return [f"{self.ns}: bridge {self.name} is missing"]
        drift = []
        if probe.kind(link) != "bridge":
            drift.append(f"{self.ns}: {self.name} is a {probe.kind(link)}, not a bridge")
        for opt in ("nf_call_iptables", "nf_call_ip6tables"):
            if probe.bridge_option(link, opt) != 1:
                drift.append(f"{self.ns}: bridge {self.name} has {opt} off")
        if link.get("mtu") != self.mtu:
            drift.append(f"{self.ns}: bridge {self.name} has mtu {link.get('mtu')}, expected {self.mtu}")
        if not probe.is_up(link):
            drift.append(f"{self.ns}: bridge {self.name} is down")
        if link.get("address") != self.mac:
            drift.append(f"{self.ns}: bridge {self.name} has MAC {link.get('address')}, expected {self.mac}")
        if link.get("ifalias") != self.alias:
            drift.append(f"{self.ns}: bridge {self.name} has alias {link.get('ifalias')!r}, expected {self.alias!r}")
        return drift

    def check(self) -> list[str]:
        return self.check_link(probe.links(self.ns, [self.name]).get(self.name))
