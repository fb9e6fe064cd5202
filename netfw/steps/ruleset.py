"""FamilyRuleset: one NIC's chains and the jumps to them, of one family and table, loaded with one atomic restore."""

from __future__ import annotations

from .. import probe, runner, tables
from ..render import FamilyRules
from .base import Step

# What the restore tools are called; iptables-restore and friends apply a whole batch in one transaction.
RESTORE = {"ip": ["iptables-restore", "--noflush"], "ip6": ["ip6tables-restore", "--noflush"],
           "eb": ["ebtables-restore", "--noflush"]}


class FamilyRuleset(Step):
    """Ensure the NIC's chains hold exactly the rendered rules and the jumps to them exist once.

    The chains are declared (which flushes them) and refilled in the same restore, so an update swaps the old rules
    for the new in one kernel transaction: the NIC is never unfiltered.
    """

    def __init__(self, ns: str, rules: FamilyRules, stale: tuple[str, ...] = ()):
        self.ns, self.rules, self.family, self.table = ns, rules, rules.family, rules.table
        # Chains an earlier ruleset of the NIC had and this one has not (e.g. `-s` once IP spoofing is off).
        self.stale = tuple(c for c in stale if c not in rules.chains)
        self.managed = (*rules.chains, *self.stale)
        # The built-in chain the jumps hang from (FORWARD; PREROUTING in raw), and the policies netfw owns there.
        self.parent = rules.jumps[0].split(" ", 2)[1] if rules.jumps else "FORWARD"
        self.policies = tables.POLICIES if (self.table == "filter" and self.family != "eb") else {}
        self._before: tables.Table | None = None  # the table before the last apply/teardown that changed it

    def describe(self) -> str:
        chains = ", ".join(self.rules.chains)
        where = "" if self.table == "filter" else f" ({self.table} table)"
        return f"{self.family}tables rules of {chains}{where} in {self.ns}"

    # -- composing restore input -------------------------------------------------------------------------------
    def _policies(self, live: tables.Table | None = None) -> list[str]:
        if live is None:
            return [tables.declare(self.family, c, p) for c, p in self.policies.items()]
        return [tables.declare(self.family, c, live.policies[c]) for c in self.policies if c in live.policies]

    def _load_body(self, chains: dict[str, tuple[str, ...]], jumps: list[str]) -> list[str]:
        body = [tables.declare(self.family, c) for c in chains]
        for rules in chains.values():
            body.extend(rules)
        return body + jumps

    def _want_text(self, live: tables.Table) -> str:
        jumps = [j for j in self.rules.jumps if live.count(j) == 0]
        extra = [tables.delete_line(j) for j in self.rules.jumps for _ in range(live.count(j) - 1)]
        for chain in self.stale:  # nothing names it once the NIC's chains are refilled in this same restore
            if live.chain(chain) is not None:
                extra += [tables.declare(self.family, chain), f"-X {chain}"]
        body = self._policies() + self._load_body(self.rules.chains, jumps) + extra
        return tables.restore_text(self.family, body, self.table)

    def _jumps_in(self, live: tables.Table) -> list[str]:
        """Every rule of the parent chain that jumps to one of this NIC's chains (whatever tap it names), in order."""
        targets = tuple(f" -j {c}" for c in self.managed)
        found = [r for r in live.rules.get(self.parent, []) if r.endswith(targets)]
        return list(dict.fromkeys(found + list(self.rules.jumps)))

    def _back_to(self, before: tables.Table, live: tables.Table) -> str:
        """Restore input that turns this NIC's part of `live` back into what it was in `before`."""
        declared, chains, deletes, dropped = [], [], [], []
        for chain in self.managed:
            old = before.chain(chain)
            if old is not None:  # all declared before any rule, as one chain may jump to another
                policy = before.policies[chain] if self.family == "eb" else None
                declared.append(tables.declare(self.family, chain, policy))
                chains += old
            elif live.chain(chain) is not None:
                dropped += [tables.declare(self.family, chain), f"-X {chain}"]
        for jump in self._jumps_in(live):
            deletes += [tables.delete_line(jump)] * max(live.count(jump) - before.count(jump), 0)
        # Missing jumps go back where they were (ascending positions rebuild the exact order).
        mine = set(self._jumps_in(before))
        inserts = [tables.insert_line(rule, pos)
                   for pos, rule in enumerate(before.rules.get(self.parent, []), start=1)
                   if rule in mine and live.count(rule) < before.count(rule)]
        # Chains exist before a jump names them; jumps are gone before their chain is deleted.
        body = self._policies(before) + declared + chains + deletes + inserts + dropped
        return tables.restore_text(self.family, body, self.table)

    def commands(self):
        empty = tables.Table()
        return [(probe.in_netns(self.ns, *RESTORE[self.family]), self._want_text(empty))]

    def teardown_commands(self):
        gone = tables.Table(policies=dict(self.policies))
        present = tables.Table(policies={**self.policies, **{c: "-" for c in self.rules.chains}},
                               rules={self.parent: list(self.rules.jumps),
                                      **{c: list(r) for c, r in self.rules.chains.items()}})
        return [(probe.in_netns(self.ns, *RESTORE[self.family]), self._back_to(gone, present))]

    # -- running -----------------------------------------------------------------------------------------------
    def _live(self) -> tables.Table:
        return tables.parse_save(probe.save(self.ns, self.family, self.table), self.table)

    def _load(self, text: str) -> None:
        runner.run(probe.in_netns(self.ns, *RESTORE[self.family]), stdin=text)

    def _drift(self, live: tables.Table) -> list[str]:
        tool = f"{self.family}tables" + ("" if self.table == "filter" else f" {self.table}")
        drift = []
        for chain, want in self.rules.chains.items():
            have = live.chain(chain)
            if have is None:
                drift.append(f"{self.ns}: {tool} chain {chain} is missing")
            elif have != want:
                drift.append(f"{self.ns}: {tool} chain {chain} differs from what attach loads "
                             f"({len(have)} rules, expected {len(want)})")
        for chain in self.stale:
            if live.chain(chain) is not None:
                drift.append(f"{self.ns}: {tool} chain {chain} is left over from earlier rules")
        for jump in self.rules.jumps:
            if live.count(jump) != 1:
                drift.append(f"{self.ns}: {tool} jump `{jump}` occurs {live.count(jump)} times, expected once")
        for chain, policy in self.policies.items():
            if live.policies.get(chain) != policy:
                drift.append(f"{self.ns}: {tool} {chain} policy is {live.policies.get(chain)}, expected {policy}")
        return drift

    def apply(self) -> bool:
        """Load the chains and jumps in one restore, unless they already hold exactly what is rendered."""
        self._before = None
        live = self._live()
        if not self._drift(live):
            return False
        self._load(self._want_text(live))
        self._before = live
        return True

    def undo(self) -> None:
        if self._before is not None:
            self._load(self._back_to(self._before, self._live()))
            self._before = None

    def teardown(self) -> bool:
        """Delete the jumps and chains (policies stay: other NICs of the VM may still rely on them)."""
        self._before = None
        if not probe.netns_exists(self.ns):
            return False
        live = self._live()
        gone = tables.Table(policies={c: p for c, p in live.policies.items() if c not in self.managed})
        if all(live.chain(c) is None for c in self.managed) and not any(map(live.count, self._jumps_in(live))):
            return False
        self._load(self._back_to(gone, live))
        self._before = live
        return True

    def restore(self) -> None:
        if self._before is not None:
            self._load(self._back_to(self._before, self._live()))
            self._before = None

    @property
    def changed(self) -> bool:
        """True when the last apply() loaded new rules."""
        return self._before is not None

    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return []  # VmNamespace reports it
        return self._drift(self._live())
