"""VmNamespace: the network namespace one-<VM>, shared by all NICs of the VM."""

from __future__ import annotations

from loguru import logger

from netfw.model import names
from netfw.kernel import probe
from netfw import runner
from netfw.rules import script
from .base import ForwardOnly, Fresh, Step, remove

#: Set right after creation: no IPv6 autoconfiguration (no DAD/RS/MLD from netfw's links); bridged traffic goes
#: through iptables/ip6tables (br_netfilter's switches are per namespace since Linux 5.3), VLAN-tagged and PPPoE
#: IP too. Each NIC's ebtables chain `e` drops tagged and PPPoE frames before iptables would see them; these two
#: (default 0, which lets such IP past every rule) make a frame that ever gets past `e` meet the rules like an
#: untagged one, at no cost: they ride in the same `sysctl` process.
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.bridge.bridge-nf-call-ip6tables": "1",
    "net.bridge.bridge-nf-filter-vlan-tagged": "1",
    "net.bridge.bridge-nf-filter-pppoe-tagged": "1",
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
        # No `lo up`: nothing in a namespace that only bridges talks to itself, and it would cost a process.
        settings = [f"{k}={v}" for k, v in SYSCTLS.items()]
        return [probe.in_netns(self.ns, "sysctl", "-q", "-w", *settings)]

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
        """Create and configure the namespace; an existing one gets its sysctls again."""
        self._created = self.fresh.created = False
        if probe.netns_exists(self.ns):
            # Writing the settings again costs less than reading them first and leaves them as attach wants.
            for argv in self._configure_cmds():
                runner.run(argv)
            return False
        self._or_undo(self._create)
        return True

    def _delete(self) -> None:
        remove(["ip", "netns", "del", self.ns], ns=self.ns)

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
        self._removed = probe.netns_exists(self.ns)  # first: a delete that fails may still have deleted it
        try:
            self._removed = self._delete_if_empty()
        except NamespaceBusy as e:
            self._removed = False
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
        for key, value in probe.sysctls(self.ns, list(SYSCTLS)).items():
            if value != SYSCTLS[key]:
                drift.append(f"{self.ns}: sysctl {key} is {value}, expected {SYSCTLS[key]}")
        return drift


class DropNamespace(ForwardOnly):
    """Detach's last step: when the namespace holds nothing but lo and this NIC's own bridge and veth end, delete
    the veth and the namespace in one `ip -batch` (rules, sets and the conntrack table go with the namespace):
    two processes instead of a teardown per object. Otherwise run the per-object teardown (`fallback`).

    The veth is deleted explicitly (under its staging name: the cut-over gave the tap's name back) because a
    namespace is destroyed asynchronously: its veth ends would linger in the hypervisor namespace for a moment.
    This step comes last, after the tap left and the record was removed, so nothing after it can fail and ask for
    an undo; if the batch fails part-way, `rebuild` (the attach steps) puts back what is missing before the error
    goes up. A namespace that still holds any other link (a tap above all: `ip netns del` destroys it) is never
    deleted.
    """

    def __init__(self, vm: int, nic: int, tap: str, fallback: list[Step], rebuild: list[Step]):
        self.ns, self.host, self.tap = names.netns(vm), names.veth_host(vm, nic), tap
        self.own = {names.bridge(vm, nic), names.veth_fw(vm, nic)}
        self.fallback, self.rebuild = fallback, rebuild
        self._fell_back: list[Step] = []

    def describe(self) -> str:
        return f"namespace {self.ns} with what is left of the NIC"

    def commands(self):
        return []

    def _alone(self) -> bool:
        """True when nothing but lo and this NIC's own links is in the namespace (a dry run: its tap would have left
        it by now, as the cut-over before this step was only recorded)."""
        own = self.own | ({self.tap} if runner.dry() else set())
        return probe.netns_exists(self.ns) and {n for n in probe.links(self.ns) if n != "lo"} <= own

    def apply(self) -> bool:
        from netfw.transaction import run  # the fallback is a transaction of its own

        self._fell_back = []
        if not self._alone():  # other NICs still inside, or no namespace (then this cleans up what is left outside)
            self._fell_back = run(self.fallback)
            return bool(self._fell_back)
        try:
            try:  # -force: the namespace goes even when the veth end is already gone
                runner.run(["ip", "-force", "-batch", "-"],
                           stdin=script.join([f"link del {self.host}", f"netns del {self.ns}"]))
            except runner.CommandError as e:
                if not probe.gone(e, [self.host]):
                    raise
        except runner.CommandError as e:
            if not probe.netns_exists(self.ns) and self.host not in probe.links(None, [self.host]):
                # read again, not assumed: what was asked for is done (a failure reported after the work)
                logger.warning("{} reported a failure, but the namespace and the veth are gone: {}", self.describe(), e)
                return True
            self._rebuild()
            raise
        except BaseException:
            self._rebuild()
            raise
        return True

    def _rebuild(self) -> None:
        if probe.netns_exists(self.ns):
            for step in self.rebuild:
                step.apply()

    def undo(self) -> None:
        from netfw.transaction import rollback

        failures = rollback(self._fell_back) if self._fell_back else []
        self._fell_back = []
        if failures:
            raise failures[0][1]
