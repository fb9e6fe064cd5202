"""`--dry-run` prints exactly the commands the real run executes, read-only probes aside (issue 13): attach with
ipsets, ebtables, anti-spoofing and limits, an update that turns anti-spoofing off, detach of one NIC of two and of
the last, on a Linux bridge and on Open vSwitch. A dry run changes nothing, the state directory included."""

from __future__ import annotations

import pytest

from netfw import api, runner
from netfw.model.spec import Bandwidth, NicSpec
from netfw.model.rules import load_rules_json
from netfw.steps.base import show

from .lab import snapshot

RULES = load_rules_json('[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22", "IP": "10.9.0.3", "SIZE": "300"},'
                        ' {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]')
OTHER = load_rules_json('[{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]')


def spec(bridge: str, rules=RULES, spoofing: bool = True, nic: int = 0) -> NicSpec:
    return NicSpec(1, nic, bridge, rules=rules, mac="02:00:0a:09:00:01" if nic == 0 else None,
                   ips=("10.9.0.1",) if spoofing else (), filter_mac=spoofing and nic == 0, filter_ip=spoofing,
                   bandwidth=Bandwidth(inbound_avg=5000, outbound_avg=2500))


def executed(monkeypatch, op) -> list[str]:
    """The changing commands a real run of op starts (runner.run; runner.read is the probes), as dry runs print
    them."""
    seen: list[tuple[list[str], str | None]] = []
    real = runner.run

    def run(argv, stdin=None, ok=(0,), timeout=None):
        seen.append((list(argv), stdin))
        return real(argv, stdin=stdin, ok=ok, timeout=timeout)

    monkeypatch.setattr(runner, "run", run)
    try:
        op()
    finally:
        monkeypatch.setattr(runner, "run", real)
    return show(seen)


def same(monkeypatch, state_dir, dry, real) -> list[str]:
    """The dry run's commands equal the real run's, and the dry run changed nothing."""
    before, files = snapshot(), sorted(p.name for p in state_dir.rglob("*"))
    printed = dry().commands
    assert snapshot() == before and sorted(p.name for p in state_dir.rglob("*")) == files  # nothing touched
    ran = executed(monkeypatch, real)
    assert printed == ran
    assert ran  # (something ran: the comparison is not vacuous)
    return ran


@pytest.fixture(params=["linux", "ovs"])
def bridges(request, lab):
    if request.param == "ovs":
        request.getfixturevalue("ovs")
        b0, b1 = lab.ovs_bridge("ovsbr0"), lab.ovs_bridge("ovsbr1")
    else:
        b0, b1 = lab.bridge("vnbr0"), lab.bridge("vnbr1")
    lab.vm(1, 0, "10.9.0.1/24", bridge=b0, mac="02:00:0a:09:00:01")
    lab.vm(1, 1, "10.8.0.1/24", bridge=b1)
    lab.vm(2, 0, "10.9.0.2/24", bridge=b0)
    api.attach(NicSpec(2, 0, b0))
    return b0, b1


def test_attach_update_and_detach_print_what_they_run(bridges, monkeypatch, state_dir):
    b0, b1 = bridges
    ran = same(monkeypatch, state_dir, lambda: api.attach(spec(b0), dry_run=True), lambda: api.attach(spec(b0)))
    assert any("netns add one-1" in line for line in ran)
    off = spec(b0, OTHER, spoofing=False)  # anti-spoofing turned off: chains -s/-t/-l/-a go, jumps too
    ran = same(monkeypatch, state_dir, lambda: api.update(off, dry_run=True), lambda: api.update(off))
    assert any("-X one-1-0-s" in line for line in ran)
    same(monkeypatch, state_dir, lambda: api.attach(spec(b1, nic=1), dry_run=True),
         lambda: api.attach(spec(b1, nic=1)))
    ran = same(monkeypatch, state_dir, lambda: api.detach(1, 1, dry_run=True), lambda: api.detach(1, 1))
    assert not any("netns del" in line for line in ran)  # NIC 0 is still inside
    ran = same(monkeypatch, state_dir, lambda: api.detach(1, 0, dry_run=True), lambda: api.detach(1, 0))
    assert any("netns del one-1" in line for line in ran)
    assert api.verify(2, 0) == {0: []}
