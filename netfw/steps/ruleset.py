"""FamilyRuleset: one NIC's chains and the jumps to them, in every table of one family, loaded with one restore."""

from __future__ import annotations

from netfw.kernel import probe
from netfw import runner
from netfw.rules import tables
from netfw.kernel.backend import tool
from netfw.rules.chains import FamilyRules
from .base import Fresh, Step



class _Part:
    """The NIC's share of one table: composes the restore lines that load it, or turn it back."""

    def __init__(self, rules: FamilyRules, stale: tuple[str, ...]):
        self.rules, self.family, self.table = rules, rules.family, rules.table
        # Chains an earlier ruleset of the NIC had and this one has not (e.g. `-s` once IP spoofing is off).
        self.stale = tuple(c for c in stale if c not in rules.chains)
        self.managed = (*rules.chains, *self.stale)
        # The built-in chain the jumps hang from (FORWARD; PREROUTING in raw), and the policies netfw owns there.
        self.parent = next((l.split(" ", 2)[1] for l in (*rules.jumps, *rules.retired)), "FORWARD")
        self.policies = tables.POLICIES if (self.table == "filter" and self.family != "eb") else {}

    def _policies(self, live: tables.Table | None = None) -> list[str]:
        if live is None:
            return [tables.declare(self.family, c, p) for c, p in self.policies.items()]
        return [tables.declare(self.family, c, live.policies[c]) for c in self.policies if c in live.policies]

    def want(self, live: tables.Table) -> list[str]:
        """Lines that make live hold exactly the rendered chains, each jump once, and the policies."""
        body = self._policies() + [tables.declare(self.family, c) for c in self.rules.chains]
        for rules in self.rules.chains.values():
            body.extend(rules)
        body += [j for j in self.rules.jumps if live.count(j) == 0]
        body += [tables.delete_line(j) for j in self.rules.jumps for _ in range(live.count(j) - 1)]
        body += [tables.delete_line(r) for r in self.rules.retired for _ in range(live.count(r))]
        for chain in self.stale:  # nothing names it once the NIC's chains are refilled in this same restore...
            if live.chain(chain) is not None:
                # ... but a jump of the parent chain (ebtables `a` once spoofing filters are off, `e` staying)
                body += [tables.delete_line(j) for j in live.rules.get(self.parent, []) if j.endswith(f" -j {chain}")]
                body += [tables.declare(self.family, chain), f"-X {chain}"]
        return body

    def jumps_in(self, live: tables.Table) -> list[str]:
        """Every rule of the parent chain that jumps to one of this NIC's chains (whatever tap it names), in order."""
        targets = tuple(f" -j {c}" for c in self.managed)
        found = [r for r in live.rules.get(self.parent, []) if r.endswith(targets) or r in self.rules.retired]
        return list(dict.fromkeys(found + list(self.rules.jumps)))

    def back_to(self, before: tables.Table, live: tables.Table) -> list[str]:
        """Lines that turn this NIC's part of live back into what it was in before."""
        declared, chains, deletes, dropped = [], [], [], []
        for chain in self.managed:
            old = before.chain(chain)
            if old is not None:  # all declared before any rule, as one chain may jump to another
                policy = before.policies[chain] if self.family == "eb" else None
                declared.append(tables.declare(self.family, chain, policy))
                chains += old
            elif live.chain(chain) is not None:
                dropped += [tables.declare(self.family, chain), f"-X {chain}"]
        for jump in self.jumps_in(live):
            deletes += [tables.delete_line(jump)] * max(live.count(jump) - before.count(jump), 0)
        # Missing jumps go back where they were (ascending positions rebuild the exact order).
        mine = set(self.jumps_in(before))
        inserts = [tables.insert_line(rule, pos)
                   for pos, rule in enumerate(before.rules.get(self.parent, []), start=1)
                   if rule in mine and live.count(rule) < before.count(rule)]
        # Chains exist before a jump names them; jumps are gone before their chain is deleted.
        return self._policies(before) + declared + chains + deletes + inserts + dropped

    def absent(self, live: tables.Table) -> tables.Table:
        """live without this NIC's chains and jumps (what teardown leaves)."""
        return tables.Table(policies={c: p for c, p in live.policies.items() if c not in self.managed})

    def present(self, live: tables.Table) -> bool:
        return any(live.chain(c) is not None for c in self.managed) or any(map(live.count, self.jumps_in(live)))

    def drift(self, ns: str, live: tables.Table) -> list[str]:
        tool = f"{self.family}tables" + ("" if self.table == "filter" else f" {self.table}")
        drift = []
        for chain, want in self.rules.chains.items():
            have = live.chain(chain)
            if have is None:
                drift.append(f"{ns}: {tool} chain {chain} is missing")
            elif have != want:
                drift.append(f"{ns}: {tool} chain {chain} differs from what attach loads "
                             f"({len(have)} rules, expected {len(want)})")
        for chain in self.stale:
            if live.chain(chain) is not None:
                drift.append(f"{ns}: {tool} chain {chain} is left over from earlier rules")
        for jump in self.rules.jumps:
            if live.count(jump) != 1:
                drift.append(f"{ns}: {tool} jump `{jump}` occurs {live.count(jump)} times, expected once")
        for line in self.rules.retired:
            if live.count(line):
                drift.append(f"{ns}: {tool} `{line}` is left over from an earlier netfw (update removes it)")
        for chain, policy in self.policies.items():
            if live.policies.get(chain) != policy:
                drift.append(f"{ns}: {tool} {chain} policy is {live.policies.get(chain)}, expected {policy}")
        return drift


Snapshot = dict[str, tables.Table]  # table name -> its parsed save


class FamilyRuleset(Step):
    """Ensure the NIC's chains hold exactly the rendered rules and the jumps to them exist once.

    The chains are declared (which flushes them) and refilled in the same restore, so an update swaps the old rules
    for the new in one kernel transaction per table: the NIC is never unfiltered. One save and one restore per
    family cover all its tables (filter, and raw for the NIC's conntrack zone).
    """

    def __init__(self, ns: str, parts: FamilyRules | list[FamilyRules], stale: tuple[str, ...] = (),
                 backend: str = "auto", fresh: Fresh | None = None):
        parts = [parts] if isinstance(parts, FamilyRules) else list(parts)
        self.ns, self.family, self.backend, self.fresh = ns, parts[0].family, backend, fresh or Fresh()
        self.parts = [_Part(p, stale if p.table == "filter" else ()) for p in parts]
        self._before: Snapshot | None = None  # the tables before the last apply/teardown that changed them

    def describe(self) -> str:
        chains = ", ".join(c for p in self.parts for c in p.rules.chains)
        return f"{self.family}tables rules of {chains} in {self.ns}"

    def _text(self, bodies: dict[str, list[str]]) -> str:
        return "".join(tables.restore_text(self.family, body, table) for table, body in bodies.items() if body)

    def _argv(self) -> list[str]:
        # Each *-restore applies every table of its input in one transaction per table.
        return probe.in_netns(self.ns, tool(self.family, "restore", self.backend), "--noflush")

    def commands(self):
        empty = tables.Table()
        return [(self._argv(), self._text({p.table: p.want(empty) for p in self.parts}))]

    def teardown_commands(self):
        lines = {}
        for p in self.parts:
            live = tables.Table(policies={**p.policies, **{c: "-" for c in p.rules.chains}},
                                rules={p.parent: list(p.rules.jumps), **{c: list(r) for c, r in p.rules.chains.items()}})
            lines[p.table] = p.back_to(tables.Table(policies=dict(p.policies)), live)
        return [(self._argv(), self._text(lines))]

    def _live(self) -> Snapshot:
        text = probe.save(self.ns, self.family, None if len(self.parts) > 1 else self.parts[0].table, self.backend)
        return {p.table: tables.parse_save(text, p.table) for p in self.parts}

    def _load(self, bodies: dict[str, list[str]]) -> None:
        text = self._text(bodies)
        if text:
            runner.run(self._argv(), stdin=text)

    def apply(self) -> bool:
        """Load the chains and jumps in one restore, unless they already hold exactly what is rendered."""
        self._before = None
        if self.fresh.created:  # the namespace was made by this very run: its tables are empty
            live = {p.table: tables.Table() for p in self.parts}
        else:
            live = self._live()
        if not any(p.drift(self.ns, live[p.table]) for p in self.parts):
            return False
        self._before = live  # set first: a restore that fails may still have loaded (undo turns it back)
        self._or_undo(lambda: self._load({p.table: p.want(live[p.table]) for p in self.parts}))
        return True

    def _turn_back(self) -> None:
        live = self._live()
        self._load({p.table: p.back_to(self._before[p.table], live[p.table]) for p in self.parts})
        self._before = None

    def undo(self) -> None:
        if self._before is not None:
            self._turn_back()

    def teardown(self) -> bool:
        """Delete the jumps and chains (policies stay: other NICs of the VM may still rely on them)."""
        self._before = None
        if not probe.netns_exists(self.ns):
            return False
        live = self._live()
        if not any(p.present(live[p.table]) for p in self.parts):
            return False
        self._before = live  # set first: a restore that fails may still have loaded (restore turns it back)
        self._load({p.table: p.back_to(p.absent(live[p.table]), live[p.table]) for p in self.parts})
        return True

    def restore(self) -> None:
        if self._before is not None:
            self._turn_back()

    @property
    def changed(self) -> bool:
        """True when the last apply() loaded new rules."""
        return self._before is not None

    @property
    def retired_removed(self) -> bool:
        """True when the last apply() took out a retired line (FlushZone then flushes that line's zone too)."""
        return self._before is not None and any(
            self._before[p.table].count(r) for p in self.parts for r in p.rules.retired)

    def check(self) -> list[str]:
        if not probe.netns_exists(self.ns):
            return []  # VmNamespace reports it
        live = self._live()
        return [d for p in self.parts for d in p.drift(self.ns, live[p.table])]
