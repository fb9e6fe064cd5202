"""The transaction runner: order, unwinding newest first, undo failures attached to the original error."""

from __future__ import annotations

import pytest

from netfw.steps.base import Reverse, Step
from netfw.transaction import TransactionError, run


class Recorder(Step):
    def __init__(self, name, log, changes=True, fail=False, fail_undo=False):
        self.name, self.log, self.changes, self.fail, self.fail_undo = name, log, changes, fail, fail_undo

    def describe(self):
        return self.name

    def commands(self):
        return []

    def apply(self):
        self.log.append(f"apply {self.name}")
        if self.fail:
            raise RuntimeError(f"{self.name} broke")
        return self.changes

    def undo(self):
        self.log.append(f"undo {self.name}")
        if self.fail_undo:
            raise RuntimeError(f"undo of {self.name} broke")

    def teardown(self):
        self.log.append(f"teardown {self.name}")
        return True

    def restore(self):
        self.log.append(f"restore {self.name}")

    def check(self):
        return []


def test_applies_in_order_and_returns_the_steps_that_changed():
    log = []
    steps = [Recorder("a", log), Recorder("b", log, changes=False), Recorder("c", log)]
    assert [s.name for s in run(steps)] == ["a", "c"]
    assert log == ["apply a", "apply b", "apply c"]


def test_failure_undoes_what_this_run_changed_newest_first():
    log = []
    steps = [Recorder("a", log), Recorder("b", log, changes=False), Recorder("c", log), Recorder("d", log, fail=True),
             Recorder("e", log)]
    with pytest.raises(TransactionError) as info:
        run(steps)
    assert log == ["apply a", "apply b", "apply c", "apply d", "undo c", "undo a"]
    assert info.value.step is steps[3]
    assert str(info.value.error) == "d broke"
    assert info.value.undo_failures == []


def test_a_failing_undo_does_not_stop_the_others_and_is_attached():
    log = []
    steps = [Recorder("a", log), Recorder("b", log, fail_undo=True), Recorder("c", log, fail=True)]
    with pytest.raises(TransactionError) as info:
        run(steps)
    assert log == ["apply a", "apply b", "apply c", "undo b", "undo a"]
    assert [(s.name, str(e)) for s, e in info.value.undo_failures] == [("b", "undo of b broke")]
    assert "rollback incomplete: b: undo of b broke" in str(info.value)


def test_keyboard_interrupt_also_rolls_back():
    log = []

    class Interrupted(Recorder):
        def apply(self):
            raise KeyboardInterrupt

    with pytest.raises(TransactionError):
        run([Recorder("a", log), Interrupted("b", log)])
    assert log == ["apply a", "undo a"]


def test_reverse_turns_a_step_around():
    log = []
    run([Reverse(Recorder("a", log))])
    with pytest.raises(TransactionError):
        run([Reverse(Recorder("b", log)), Recorder("c", log, fail=True)])
    assert log == ["teardown a", "teardown b", "apply c", "restore b"]
