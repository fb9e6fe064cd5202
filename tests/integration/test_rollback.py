"""A failure at any command of attach or detach leaves namespaces, links and rules exactly as before."""

from __future__ import annotations

import pytest

from netfw import api, runner
from netfw.model.spec import NicSpec
from netfw.transaction import TransactionError

from .lab import ping, snapshot


class FailAt:
    """Wrap runner._execute: the n-th command (1-based) fails as a real command would, with exit code 99."""

    def __init__(self, n: int | None):
        self.n, self.seen, self.failed = n, [], None
        self.real = runner._execute

    def __call__(self, argv, stdin, timeout):
        self.seen.append(argv)
        if len(self.seen) == self.n:
            self.failed = argv
            return runner.Result(tuple(argv), 99, "", "injected failure")
        return self.real(argv, stdin, timeout)


def _count(monkeypatch, fn) -> int:
    counter = FailAt(None)
    monkeypatch.setattr(runner, "_execute", counter)
    fn()
    monkeypatch.setattr(runner, "_execute", counter.real)
    return len(counter.seen)


def _setup(lab):
    lab.bridge()
    g1 = lab.vm(1, 0, "10.9.0.1/24")
    lab.vm(2, 0, "10.9.0.2/24")
    api.attach(NicSpec(2, 0, "vnbr0"))  # another VM attached: must not be disturbed either
    return g1


def _spec():
    return NicSpec(1, 0, "vnbr0")


def test_attach_failing_at_each_command_rolls_back_exactly(lab, monkeypatch, state_dir):
    g1 = _setup(lab)
    total = _count(monkeypatch, lambda: api.attach(_spec()))
    api.detach(1, 0)
    before, records = snapshot(), sorted(p.name for p in state_dir.rglob("*.json"))
    assert total >= 10
    for n in range(1, total + 1):
        fault = FailAt(n)
        monkeypatch.setattr(runner, "_execute", fault)
        with pytest.raises((TransactionError, runner.CommandError)) as info:  # CommandError: a probe, before any change
            api.attach(_spec())
        monkeypatch.setattr(runner, "_execute", fault.real)
        assert "injected failure" in str(info.value), fault.failed
        assert not getattr(info.value, "undo_failures", None), (n, fault.failed, info.value.undo_failures)
        assert snapshot() == before, f"attach failing at command {n} ({fault.failed}) left a trace"
        assert sorted(p.name for p in state_dir.rglob("*.json")) == records
    assert ping(g1, "10.9.0.2")


def test_detach_failing_at_each_command_rolls_back_exactly(lab, monkeypatch, state_dir):
    g1 = _setup(lab)
    api.attach(_spec())
    total = _count(monkeypatch, lambda: api.detach(1, 0))
    api.attach(_spec())
    before = snapshot()
    assert total >= 7  # a detach of the last NIC runs 7 commands (issue 12)
    for n in range(1, total + 1):
        fault = FailAt(n)
        monkeypatch.setattr(runner, "_execute", fault)
        with pytest.raises((TransactionError, runner.CommandError)) as info:
            api.detach(1, 0)
        assert "injected failure" in str(info.value)
        assert not getattr(info.value, "undo_failures", None), (n, fault.failed, info.value.undo_failures)
        monkeypatch.setattr(runner, "_execute", fault.real)
        assert snapshot() == before, f"detach failing at command {n} ({fault.failed}) left a trace"
        assert api.verify(1, 0) == {0: []}
    assert ping(g1, "10.9.0.2")
