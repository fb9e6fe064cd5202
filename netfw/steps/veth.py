"""VethPair: one end in the hypervisor namespace (for the VN bridge), the other on the firewall bridge."""

from __future__ import annotations

from .. import names, probe, runner, script
from .base import Fresh, Step, quote, remove, run_batch


class VethPair(Step):
    def __init__(self, vm: int, nic: int, mtu: int, fresh: Fresh | None = None):
        self.ns, self.mtu, self.fresh = names.netns(vm), mtu, fresh or Fresh()
        self.host, self.fw, self.bridge = names.veth_host(vm, nic), names.veth_fw(vm, nic), names.bridge(vm, nic)
        self.host_alias = names.alias(vm, nic, names.VETH_HOST)
        self.fw_alias = names.alias(vm, nic, names.VETH_FW)
        self._created = False
        self._old_mtu: int | None = None  # the MTU a repair changed
        self._removed: tuple[str, str] | None = None  # the MACs of (host, fw) when teardown removed the pair

    def describe(self) -> str:
        return f"veth pair {self.host} <-> {self.ns}/{self.fw} on {self.bridge} (mtu {self.mtu})"

    def _host_lines(self, macs: tuple[str, str] | None = None) -> list[str]:
        hmac, fmac = (f" address {macs[0]}", f" address {macs[1]}") if macs else ("", "")
        return [
            f"link add {self.host} mtu {self.mtu}{hmac} type veth peer name {self.fw} netns {self.ns}"
            f" mtu {self.mtu}{fmac}",
            f"link set {self.host} alias {quote(self.host_alias)} up",
        ]

    def _fw_lines(self) -> list[str]:
        return [f"link set {self.fw} alias {quote(self.fw_alias)} master {self.bridge} up"]

    def commands(self):
        return [
            (["ip", "-batch", "-"], script.join(self._host_lines())),
            (probe.ip(self.ns, "-batch", "-"), script.join(self._fw_lines())),
        ]

    def teardown_commands(self):
        return [(["ip", "link", "del", self.host], None)]

    def _create(self, macs: tuple[str, str] | None = None) -> None:
        # The peer is created directly inside the VM namespace: there is no half-moved state.
        self._created = True
        try:
            run_batch(["ip"], self._host_lines(macs))
        except runner.CommandError as e:
            if "File exists" in e.stderr:  # someone else's link with our name: not ours to delete on undo
                self._created = False
            raise
        run_batch(probe.ip(self.ns), self._fw_lines())

    def apply(self) -> bool:
        """Create the pair, or re-enslave and bring up an existing one."""
        self._created, self._old_mtu = False, None
        # In a namespace this run created there is no peer, so no pair (a pair dies with either end's namespace).
        host = None if self.fresh.created else probe.links(None, [self.host]).get(self.host)
        # Without the host end there is no pair (deleting one end deletes both): a stray fw end makes the creation
        # below fail with "File exists", and the step undoes itself.
        fw = probe.links(self.ns, [self.fw]).get(self.fw) if host is not None else None
        if host is None:
            self._or_undo(self._create)
            return True
        if fw is None:
            raise runner.refused("veth", f"only one end of {self.host}/{self.fw} exists: run detach first")
        if self._drift(host, fw):
            self._old_mtu = host["mtu"] if host["mtu"] != self.mtu else None
            self._set(self.mtu)
        return self._old_mtu is not None  # a repair is never undone by deleting; undo puts the MTU back

    def _set(self, mtu: int) -> None:
        """Bring both ends to mtu, their aliases, the fw end onto the bridge, up."""
        run_batch(["ip"], [f"link set {self.host} mtu {mtu} alias {quote(self.host_alias)} up"])
        run_batch(probe.ip(self.ns), [f"link set {self.fw} mtu {mtu} alias {quote(self.fw_alias)}"
                                      f" master {self.bridge} up"])

    def _delete(self, host_only: bool = False) -> None:
        # Deleting one end deletes its peer, wherever it is. host_only: a lone fw end is not ours to delete (undo).
        if not remove(["ip", "link", "del", self.host]) and not host_only:
            remove(probe.ip(self.ns, "link", "del", self.fw))

    def undo(self) -> None:
        if self._created:
            self._delete(host_only=True)
            self._created = False
        if self._old_mtu is not None:
            self._set(self._old_mtu)
            self._old_mtu = None

    def teardown(self) -> bool:
        host = probe.links(None, [self.host]).get(self.host)
        if host is not None and probe.kind(host) != "veth":
            raise runner.refused("detach",
                f"{self.host} is a {probe.kind(host) or 'plain link'}, not netfw's veth: left alone")
        fw = probe.links(self.ns, [self.fw]).get(self.fw)
        self._removed = (host["address"], fw["address"]) if host and fw else None
        if host is None and fw is None:
            return False
        self.mtu = (host or fw)["mtu"]  # restore() recreates it as it was
        self._delete()
        return self._removed is not None

    def restore(self) -> None:
        if self._removed is not None and self.host not in probe.links(None, [self.host]):
            self._create(self._removed)
            self._removed = None

    def _drift(self, host: dict | None, fw: dict | None) -> list[str]:
        drift = []
        for where, name, link, alias in ((None, self.host, host, self.host_alias), (self.ns, self.fw, fw, self.fw_alias)):
            label = f"{where}/{name}" if where else name
            if link is None:
                drift.append(f"veth end {label} is missing")
                continue
            if probe.kind(link) != "veth":
                drift.append(f"{label} is a {probe.kind(link)}, not a veth")
            if link.get("mtu") != self.mtu:
                drift.append(f"veth end {label} has mtu {link.get('mtu')}, expected {self.mtu}")
            if not probe.is_up(link):
                drift.append(f"veth end {label} is down")
            if link.get("ifalias") != alias:
                drift.append(f"veth end {label} has alias {link.get('ifalias')!r}, expected {alias!r}")
        if fw is not None and probe.master(fw) != self.bridge:
            drift.append(f"veth end {self.ns}/{self.fw} is not on {self.bridge} (master: {probe.master(fw)})")
        if host is not None and fw is not None and host.get("link_index") != fw.get("ifindex"):
            drift.append(f"{self.host} and {self.ns}/{self.fw} are not peers")
        return drift

    def check(self) -> list[str]:
        return self._drift(probe.links(None, [self.host]).get(self.host), probe.links(self.ns, [self.fw]).get(self.fw))
