"""Pure helpers for the filter table: parse `*tables-save` output, compose `*tables-restore --noflush` input."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import script

#: Built-in chains whose policy netfw sets in the VM namespace: nothing is routed or delivered there, and a
#: bridged packet that matches no NIC's jump is dropped.
POLICIES = {"INPUT": "DROP", "FORWARD": "DROP"}


@dataclass
class Table:
    """The filter table of one family as *tables-save printed it."""

    policies: dict[str, str] = field(default_factory=dict)  # chain -> policy ("-" for iptables user chains)
    rules: dict[str, list[str]] = field(default_factory=dict)  # chain -> its "-A chain ..." lines, in order

    def chain(self, name: str) -> tuple[str, ...] | None:
        """The rules of chain `name`, or None when it does not exist."""
        return tuple(self.rules.get(name, ())) if name in self.policies else None

    def count(self, line: str) -> int:
        """How often an exact "-A CHAIN ..." line occurs."""
        chain = line.split(" ", 2)[1]
        return self.rules.get(chain, []).count(line)


def parse_save(text: str, name: str = "filter") -> Table:
    """Parse table `name` out of iptables-save / ip6tables-save / ebtables-save output."""
    table, inside = Table(), False
    for line in text.splitlines():
        if line.startswith("*"):
            inside = line == f"*{name}"
        elif not inside or line.startswith("#") or not line.strip():
            continue
        elif line.startswith(":"):
            name, policy = (line[1:].split() + ["-"])[:2]
            table.policies[name] = policy
            table.rules.setdefault(name, [])
        elif line.startswith("-A "):
            table.rules.setdefault(line.split(" ", 2)[1], []).append(line)
    return table


def declare(family: str, chain: str, policy: str | None = None) -> str:
    """A chain line: declares a user chain (and, with --noflush, flushes it) or sets a built-in chain's policy."""
    if family == "eb":
        return f":{chain} {policy or 'RETURN'}"
    return f":{chain} {policy or '-'} [0:0]"


def delete_line(rule: str) -> str:
    """The `-D` form of an `-A CHAIN spec` line."""
    return "-D " + rule[3:]


def insert_line(rule: str, position: int) -> str:
    """The `-I CHAIN POSITION spec` form of an `-A CHAIN spec` line."""
    _, chain, spec = rule.split(" ", 2)
    return f"-I {chain} {position} {spec}"


def restore_text(family: str, body: list[str], table: str = "filter") -> str:
    """A complete restore input for one table around body (ebtables-restore accepts the COMMIT too). Pure."""
    return script.join([f"*{table}", *body, "COMMIT"])
