"""Ipsets: the peer sets of a NIC's long rules, built before the rules that name them, destroyed after them.

An update never refills a set that live rules reference: the new sets are built under the NIC's other generation of
names (names.ipset(..., temporary=True) and back), the one restore of the new rules switches every reference at once,
and only then IpsetGc destroys the old generation, which no rule references any more.
"""

from __future__ import annotations

from netfw.kernel import probe
from netfw import runner
from netfw.rules import script
from netfw.rules.chains import IpsetSpec
from netfw.rules.render import ipset_restore_text
from .base import ForwardOnly, Fresh, Step


def _restore(ns: str, text: str) -> None:
    runner.run(probe.in_netns(ns, "ipset", "restore", "-exist"), stdin=text)


def _create_text(sets: list[IpsetSpec] | tuple[IpsetSpec, ...]) -> str:
    # create + flush with -exist: a set left over by an interrupted run is reused and emptied, never merged.
    return ipset_restore_text(sets, flush=True)


def _specs(found: dict[str, tuple[str, set[str]]]) -> list[IpsetSpec]:
    """IpsetSpecs of sets as probe.ipsets() read them (to put them back)."""
    return [IpsetSpec(n, f, tuple(sorted(m)), "") for n, (f, m) in found.items()]


def _destroy_text(names: list[str]) -> str:
    return script.join(f"destroy {n}" for n in names)


def _canonical(member: str) -> str:
    """`ipset save` prints host blocks without their /32 or /128."""
    return member.rsplit("/", 1)[0] if member.endswith(("/32", "/128")) else member


class Ipsets(Step):
    """Ensure the NIC's sets exist with exactly the rendered members (one `ipset restore`)."""

    def __init__(self, ns: str, sets: tuple[IpsetSpec, ...], prefix: str, fresh: Fresh | None = None):
        self.ns, self.sets, self.prefix, self.fresh = ns, sets, prefix, fresh or Fresh()
        self._created: list[str] = []
        self._refilled: dict[str, tuple[str, set[str]]] = {}
        self._removed: dict[str, tuple[str, set[str]]] = {}

    def describe(self) -> str:
        return f"{len(self.sets)} ipset(s) of {self.prefix[:-1]} in {self.ns}"

    def commands(self):
        return [(probe.in_netns(self.ns, "ipset", "restore", "-exist"), _create_text(self.sets))] if self.sets else []

    def teardown_commands(self):
        return [(probe.ipset_list_argv(self.ns), None)] if self.sets else []

    def _drift_of(self, live: dict) -> list[IpsetSpec]:
        return [s for s in self.sets
                if live.get(s.name) != (s.family, {_canonical(m) for m in s.members})]

    def apply(self) -> bool:
        self._created, self._refilled = [], {}
        if not self.sets:
            return False
        live = {} if self.fresh.created else probe.ipsets(self.ns)  # a namespace this run made has no set
        todo = self._drift_of(live)
        if not todo:
            return False
        self._created = [s.name for s in todo if s.name not in live]
        self._refilled = {s.name: live[s.name] for s in todo if s.name in live}
        self._or_undo(lambda: _restore(self.ns, _create_text(todo)))
        return True

    def undo(self) -> None:
        if self._refilled:
            _restore(self.ns, _create_text(_specs(self._refilled)))
        live = probe.ipsets(self.ns) if self._created else {}
        gone = [n for n in self._created if n in live]
        if gone:
            _restore(self.ns, _destroy_text(gone))
        self._created, self._refilled = [], {}

    def teardown(self) -> bool:
        """Destroy every set of this NIC, of either generation (call once no rule references them)."""
        self._removed = {}
        if not probe.netns_exists(self.ns):
            return False
        live = probe.ipsets(self.ns)
        self._removed = {n: v for n, v in live.items() if n.startswith(self.prefix)}
        if self._removed:
            _restore(self.ns, _destroy_text(list(self._removed)))
        return bool(self._removed)

    def restore(self) -> None:
        if self._removed:
            live = probe.ipsets(self.ns)
            back = _specs({n: v for n, v in self._removed.items() if n not in live})
            if back:
                _restore(self.ns, _create_text(back))
            self._removed = {}

    def check(self) -> list[str]:
        if not self.sets or not probe.netns_exists(self.ns):
            return []
        return [f"{self.ns}: ipset {s.name} is missing or differs from what attach loads"
                for s in self._drift_of(probe.ipsets(self.ns))]


class IpsetGc(ForwardOnly):
    """After the rules switched to the new sets: destroy this NIC's sets that the rules no longer name."""

    def __init__(self, ns: str, keep: tuple[str, ...], prefix: str, fresh: Fresh | None = None):
        self.ns, self.keep, self.prefix, self.fresh = ns, set(keep), prefix, fresh or Fresh()
        self._destroyed: dict[str, tuple[str, set[str]]] = {}

    def describe(self) -> str:
        return f"unused ipsets of {self.prefix[:-1]} in {self.ns}"

    def commands(self):
        return []

    def apply(self) -> bool:
        self._destroyed = {}
        if self.fresh.created or not probe.netns_exists(self.ns):  # a namespace this run made has no stale set
            return False
        live = probe.ipsets(self.ns)
        self._destroyed = {n: v for n, v in live.items() if n.startswith(self.prefix) and n not in self.keep}
        if self._destroyed:
            self._or_undo(lambda: _restore(self.ns, _destroy_text(list(self._destroyed))))
        return bool(self._destroyed)

    def undo(self) -> None:
        if self._destroyed:
            _restore(self.ns, _create_text(_specs(self._destroyed)))
            self._destroyed = {}



    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return []
        stale = [n for n in probe.ipsets(self.ns) if n.startswith(self.prefix) and n not in self.keep]
        return [f"{self.ns}: stale ipset {n}" for n in stale]
