"""A failure at every command (reads included), before the command runs and after it ran, leaves the host exactly
as it was (issues 10 and 13): attach with ipsets, ebtables, anti-spoofing and bandwidth limits, update (anti-spoofing
turned off, new rules), detach of one NIC among two, detach of the last. An operation that reports success despite
an injected failure would have to leave exactly the state asked for: none may (no failure is "absent" here)."""

from __future__ import annotations

import json

import pytest

from netfw import api, runner
from netfw.model.spec import Bandwidth, NicSpec
from netfw.model.rules import load_rules_json
from netfw.transaction import TransactionError

from .lab import ping, sh, snapshot

RULES = load_rules_json("""[
 {"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22,80:90", "IP": "10.9.0.3", "SIZE": "300"},
 {"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "ICMP_TYPE": "8"},
 {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]""")  # 10.9.0.3 + 300 addresses: an ipset
OTHER_RULES = load_rules_json('[{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "IP": "10.9.0.0", "SIZE": "200"},'
                              ' {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]')


class FailAt:
    """Wrap runner._execute: the n-th command fails with exit code 99, before it runs or after it ran."""

    def __init__(self, n: int | None, after: bool = False):
        self.n, self.after, self.seen, self.failed = n, after, [], None
        self.real = runner._execute

    def __call__(self, argv, stdin, timeout):
        self.seen.append(argv)
        if len(self.seen) == self.n:
            self.failed = argv
            if self.after:
                self.real(argv, stdin, timeout)
            return runner.Result(tuple(argv), 99, "", "injected failure")
        return self.real(argv, stdin, timeout)


def commands_of(monkeypatch, fn) -> int:
    counter = FailAt(None)
    monkeypatch.setattr(runner, "_execute", counter)
    try:
        fn()
    finally:
        monkeypatch.setattr(runner, "_execute", counter.real)
    return len(counter.seen)


def inject_all(monkeypatch, state_dir, op, reset, what: str) -> int:
    """Run op once cleanly to count its commands (then reset), then fail it at each command before and after the
    command ran. After each failure the host (snapshot) and the state directory must be exactly as before; an op
    that reports success anyway must have left exactly what a clean run leaves (and never does so for a failure
    before the command: nothing is read as done that was not done). Returns how many commands op runs."""
    before, records = snapshot(), _files(state_dir)
    total = commands_of(monkeypatch, op)
    done, done_records = snapshot(), _files(state_dir)
    reset()
    before, records = snapshot(), _files(state_dir)
    for after in (False, True):
        for n in range(1, total + 1):
            fault = FailAt(n, after)
            monkeypatch.setattr(runner, "_execute", fault)
            error = None
            try:
                op()
            except (TransactionError, runner.CommandError) as e:
                error = e
            finally:
                monkeypatch.setattr(runner, "_execute", fault.real)
            where = f"{what} failing {'after' if after else 'before'} command {n} ({' '.join(fault.failed or [])})"
            if error is None:  # success reported: only where the work was really done (a failure after it ran)
                assert after, f"{where} reported success"
                assert snapshot() == done and _files(state_dir) == done_records, f"{where}: success, but not done"
                reset()
                before, records = snapshot(), _files(state_dir)
                continue
            assert "injected failure" in str(error), where
            assert not getattr(error, "undo_failures", None), (where, error.undo_failures)
            assert snapshot() == before, f"{where} left a trace"
            assert _files(state_dir) == records, f"{where} changed the state directory"
    return total


def _files(state_dir) -> dict[str, str]:
    return {str(p.relative_to(state_dir)): p.read_text() for p in sorted(state_dir.rglob("*.json"))}


@pytest.fixture
def vms(lab):
    lab.bridge("vnbr0")
    lab.bridge("vnbr1")
    guests = {"g10": lab.vm(1, 0, "10.9.0.1/24", mac="02:00:0a:09:00:01"), "g11": lab.vm(1, 1, "10.8.0.1/24",
                                                                                     bridge="vnbr1"),
              "g2": lab.vm(2, 0, "10.9.0.2/24"), "g3": lab.vm(3, 0, "10.9.0.3/24")}
    api.attach(NicSpec(2, 0, "vnbr0"))  # another VM, attached: it must not be disturbed either
    return guests


def rich(rules=RULES, spoofing: bool = True) -> NicSpec:
    return NicSpec(1, 0, "vnbr0", rules=rules, mac="02:00:0a:09:00:01", ips=("10.9.0.1",), filter_mac=spoofing,
                   filter_ip=spoofing, bandwidth=Bandwidth(inbound_avg=5000, outbound_avg=5000))


def test_attach_with_ipsets_ebtables_spoofing_and_limits(vms, monkeypatch, state_dir):
    total = inject_all(monkeypatch, state_dir, lambda: api.attach(rich()), lambda: api.detach(1, 0), "attach")
    assert total >= 14
    api.attach(rich())
    assert api.verify(1, 0) == {0: []}
    assert ping(vms["g3"], "10.9.0.1") and ping(vms["g10"], "10.9.0.3")


def test_update_turning_spoofing_off(vms, monkeypatch, state_dir):
    api.attach(rich())
    target = rich(OTHER_RULES, spoofing=False)
    total = inject_all(monkeypatch, state_dir, lambda: api.update(target), lambda: api.update(rich()), "update")
    assert total >= 6
    api.update(target)
    assert api.verify(1, 0) == {0: []}


def test_detach_of_one_nic_among_two(vms, monkeypatch, state_dir):
    api.attach(rich())
    api.attach(NicSpec(1, 1, "vnbr1"))
    inject_all(monkeypatch, state_dir, lambda: api.detach(1, 1), lambda: api.attach(NicSpec(1, 1, "vnbr1")),
               "detach of NIC 1")
    api.detach(1, 1)
    assert api.verify(1, 0) == {0: []}
    tap = json.loads(sh("ip", "-j", "link", "show", "one-1-1").stdout)[0]
    assert tap["master"] == "vnbr1" and "UP" in tap["flags"] and "ifalias" not in tap  # the tap, back


def test_detach_of_the_last_nic(vms, monkeypatch, state_dir):
    api.attach(rich())
    inject_all(monkeypatch, state_dir, lambda: api.detach(1, 0), lambda: api.attach(rich()), "detach")
    api.detach(1, 0)
    assert "one-1" not in sh("ip", "netns", "list").stdout
    assert ping(vms["g10"], "10.9.0.2")
