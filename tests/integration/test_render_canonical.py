"""render() output is exactly what iptables-save / ip6tables-save / ebtables-save print back (nft backend).

Each case loads the rendering into a fresh namespace with `*tables-restore --noflush` and compares the save output
of the NIC's chains and the FORWARD chain with the rendering by plain equality, as `verify` does.
"""

from __future__ import annotations

import os
import uuid

import pytest

from netfw import runner
from netfw.kernel.backend import tool
from netfw.rules.chains import EB, Ruleset
from netfw.rules.render import ipset_restore_text, render, restore_text
from tests.test_render import CASES  # every expected render file is proven canonical here

pytestmark = pytest.mark.skipif(
    os.environ.get("NETFW_IN_SANDBOX") != "1",
    reason="needs the kernel: run inside scripts/sandbox (NETFW_IN_SANDBOX=1)",
)


@pytest.fixture
def netns():
    """A throwaway namespace inside the sandbox, removed even if the test failed."""
    name = f"nfr-{uuid.uuid4().hex[:8]}"
    runner.run(["ip", "netns", "add", name])
    yield name
    runner.run(["ip", "netns", "del", name], ok=(0, 1))


def _in(ns: str, *argv: str, stdin: str | None = None) -> str:
    return runner.run(["nsenter", f"--net=/run/netns/{ns}", *argv], stdin=stdin).stdout


def _saved(ns: str, family: str, backend: str = "auto") -> dict[str, list[str]]:
    """`<family>tables-save` of the filter table: chain -> its '-A' lines, in order."""
    chains: dict[str, list[str]] = {}
    for line in _in(ns, tool(family, "save", backend)).splitlines():
        if line.startswith("-A "):
            chains.setdefault(line.split()[1], []).append(line)
    return chains


def _load(ns: str, ruleset: Ruleset, backend: str = "auto") -> None:
    _in(ns, "ipset", "restore", stdin=ipset_restore_text(ruleset.ipsets))
    for rules in ruleset.families:
        _in(ns, tool(rules.family, "restore", backend), "--noflush", stdin=restore_text(rules))


@pytest.mark.parametrize("backend", ["nft", "legacy"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_save_output_equals_rendering(netns, case, backend):
    ruleset = render(CASES[case])
    _load(netns, ruleset, backend)
    for rules in ruleset.families:
        saved = _saved(netns, rules.family, backend)
        for chain, lines in rules.chains.items():
            assert saved.get(chain, []) == list(lines), f"{rules.family} {chain}"
        assert saved.get("FORWARD", []) == list(rules.jumps), rules.family


def test_reload_replaces_chains(netns):
    """Loading the same chains again (without the jumps) leaves exactly one copy: a chain declaration flushes it."""
    ruleset = render(CASES["every-rule-spoofing"])
    _load(netns, ruleset)
    for rules in ruleset.families:
        _in(netns, f"{rules.family}tables-restore", "--noflush", stdin=restore_text(rules, with_jumps=False))
        saved = _saved(netns, rules.family)
        assert {c: saved.get(c, []) for c in rules.chains} == {c: list(v) for c, v in rules.chains.items()}


def test_every_family_and_ipsets_rendered():
    """The spoofing case exercises all three families and both ipset families."""
    ruleset = render(CASES["every-rule-spoofing"])
    assert [f.family for f in ruleset.families] == ["ip", "ip6", EB]
    assert {s.family for s in ruleset.ipsets} == {"inet", "inet6"}


def test_temporary_ipsets_load_twice(netns):
    """A temporary set left over by an interrupted run is reused and emptied with `ipset restore -exist`."""
    sets = render(CASES["every-rule-spoofing"]).ipsets
    for _ in range(2):
        _in(netns, "ipset", "restore", "-exist", stdin=ipset_restore_text(sets, temporary=True))
    for s in sets:
        members = _in(netns, "ipset", "list", s.temporary_name).split("Members:\n", 1)[1].split()
        assert sorted(members) == sorted(m.removesuffix("/32").removesuffix("/128") for m in s.members)
