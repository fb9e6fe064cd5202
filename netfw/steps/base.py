"""The Step contract shared by every kernel object netfw makes, and Reverse, which turns an attach step around."""

from __future__ import annotations

import shlex
from abc import ABC, abstractmethod

from netfw.kernel import probe
from netfw import runner
from netfw.rules import script


class Step(ABC):
    """One kernel object or one move.

    apply()    ensure the object is as attach wants it; safe to repeat; True when it changed something.
    undo()     undo what the last apply() changed, and nothing else; tolerates "already gone".
    teardown() ensure the object is gone (detach); safe to repeat; True when it removed something.
    restore()  put back what the last teardown() removed, also after a teardown that failed part-way.
    check()    read-only: what differs from what apply() would make (empty list: all holds).
    commands() the commands apply() runs on a host where nothing exists yet (for --dry-run).
    A step whose apply() or teardown() fails part-way cleans up its own partial work before raising.
    """

    #: A step whose undo must not run once an earlier undo failed (the journal: it must stay for the next run).
    undo_only_if_clean = False
    #: netfw's own bookkeeping (the journal): undone like any step, not reported as a change to the host.
    bookkeeping = False

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def commands(self) -> list[tuple[list[str], str | None]]: ...

    @abstractmethod
    def apply(self) -> bool: ...

    @abstractmethod
    def undo(self) -> None: ...

    @abstractmethod
    def teardown(self) -> bool: ...

    @abstractmethod
    def restore(self) -> None: ...

    @abstractmethod
    def check(self) -> list[str]: ...

    def teardown_commands(self) -> list[tuple[list[str], str | None]]:
        """The commands teardown() runs when everything exists (for detach --dry-run)."""
        return []

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"

    def _or_undo(self, make) -> None:
        """Run make(); if it fails part-way, undo what it made (the step's flags say what) and re-raise."""
        try:
            make()
        except BaseException:
            self.undo()
            raise


class ForwardOnly(Step):
    """A step with no detach counterpart (it only runs inside attach, update or detach plans)."""

    def teardown(self) -> bool:
        return False

    def restore(self) -> None:
        pass

    def check(self) -> list[str]:
        return []


class Fresh:
    """Shared by the steps of one plan: set when the plan's own VmNamespace created the namespace, so that the
    steps after it know the namespace is empty and need not look into it (fewer processes per attach)."""

    def __init__(self) -> None:
        self.created = False  # the plan's VmNamespace made the namespace (it holds nothing yet)
        self.veth = False  # the plan's VethPair made the veth pair (the cut-over need not look for it)
        self.staged = False  # the plan's cut-over gave the veth end its staging name back (detach)


class Reverse(Step):
    """A detach step: applying it tears the object down, undoing it restores it."""

    def __init__(self, step: Step):
        self.step = step

    def describe(self) -> str:
        return f"remove {self.step.describe()}"

    def commands(self):
        return self.step.teardown_commands()

    def apply(self) -> bool:
        try:
            return self.step.teardown()
        except BaseException:
            self.step.restore()  # teardown failed part-way: put back what it had already removed
            raise

    def undo(self) -> None:
        self.step.restore()

    def teardown(self) -> bool:
        return self.step.apply()

    def restore(self) -> None:
        self.step.undo()

    def check(self) -> list[str]:
        return []


def port_drift(label: str, link: dict, bridge: str) -> list[str]:
    """What is wrong with a port of a firewall bridge (the tap, the veth end -f): on bridge, up, not learning."""
    drift = []
    if probe.master(link) != bridge:
        drift.append(f"{label} is not on {bridge} (master: {probe.master(link)})")
    if not probe.is_up(link):
        drift.append(f"{label} is down")
    if probe.slave_data(link).get("learning") is not False:
        drift.append(f"{label} learns on {bridge} (learning should be off)")
    return drift


def remove(argv: list[str], devices: list[str] | tuple[str, ...] = (), ns: str | None = None) -> bool:
    """Run a delete command; the named devices (or namespace ns) being already gone is fine (False); any other
    failure raises."""
    try:
        runner.run(argv)
    except runner.CommandError as e:
        if not probe.gone(e, devices, ns):
            raise
        return False
    return True


def run_batch(argv: list[str], lines: list[str]) -> runner.Result:
    """Run several `ip` commands in one process (`ip -batch -`); stops at the first that fails."""
    return runner.run([*argv, "-batch", "-"], stdin=script.join(lines))


def quote(text: str) -> str:
    """Quote one `ip -batch` argument (the batch reader honours double quotes)."""
    return '"' + text.replace('"', "") + '"' if (" " in text or not text) else text


def show(commands: list[tuple[list[str], str | None]]) -> list[str]:
    """Human-readable lines for commands() output: argv, then the stdin it gets, indented."""
    out = []
    for argv, stdin in commands:
        out.append(shlex.join(argv))
        out.extend(f"    {line}" for line in (stdin or "").splitlines())
    return out
