"""VmNamespace: the network namespace one-<VM>, shared by all NICs of the VM."""

from __future__ import annotations

from loguru import logger

from .. import names, probe, runner
from .base import Fresh, Step, remove

#: Set right after creation: no IPv6 autoconfiguration (no DAD/RS/MLD from netfw's links); bridged traffic goes
#: through iptables/ip6tables (br_netfilter's switches are per namespace since Linux 5.3).
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
}


class NamespaceBusy(Exception):
    """The namespace still holds links of another NIC: it must not be deleted."""


class VmNamespace(Step):
    def __init__(self, vm: int, fresh: Fresh | None = None):
        self.vm, self.fresh = vm, fresh or Fresh()
        self.ns = names.netns(vm)
        self._created = False
        self._removed = False

    def describe(self) -> str:
        return f"namespace {self.ns}"

    def _configure_cmds(self) -> list[list[str]]:
        settings = [f"{k}={v}" for k, v in SYSCTLS.items()]
        return [probe.in_netns(self.ns, "sysctl", "-q", "-w", *settings), probe.ip(self.ns, "link", "set", "lo", "up")]

    def commands(self):
        return [(["ip", "netns", "add", self.ns], None)] + [(c, None) for c in self._configure_cmds()]

    def teardown_commands(self):
        return [(probe.ip(self.ns, "-j", "link", "show"), None), (["ip", "netns", "del", self.ns], None)]

    def _create(self) -> None:
        self._created = True
        runner.run(["ip", "netns", "add", self.ns])
        self.fresh.created = True
        for argv in self._configure_cmds():
            runner.run(argv)

    def apply(self) -> bool:
        """Create and configure the namespace unless it exists (an existing one is left as it is)."""
        self._created = self.fresh.created = False
        if probe.netns_exists(self.ns):
            return False
        self._or_undo(self._create)
        return True

    def _delete(self) -> None:
        remove(["ip", "netns", "del", self.ns])

    def undo(self) -> None:
        if self._created:
            self._delete_if_empty()
            self._created = self.fresh.created = False

    def _delete_if_empty(self) -> bool:
        """Delete the namespace only when nothing but lo is left: `ip netns del` destroys a tap inside."""
        if not probe.netns_exists(self.ns):
            return False
        left = [n for n in probe.links(self.ns) if n != "lo"]
        if left:
            raise NamespaceBusy(f"namespace {self.ns} still holds {', '.join(sorted(left))}: not deleted")
        self._delete()
        return True

    def teardown(self) -> bool:
        """Delete the namespace when no other NIC of the VM is left in it."""
        self._removed = False
        try:
            self._removed = self._delete_if_empty()
        except NamespaceBusy as e:
            logger.info("keeping {}: {}", self.ns, e)
        return self._removed

    def restore(self) -> None:
        if self._removed and not probe.netns_exists(self.ns):
            self._create()
            self._removed = False

    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return [f"namespace {self.ns} is missing"]
        drift = []
        lo = probe.links(self.ns, ["lo"]).get("lo")
        if not probe.is_up(lo):
            drift.append(f"{self.ns}: lo is down")
        for key, value in probe.sysctls(self.ns, list(SYSCTLS)).items():
            if value != SYSCTLS[key]:
                drift.append(f"{self.ns}: sysctl {key} is {value}, expected {SYSCTLS[key]}")
        return drift
