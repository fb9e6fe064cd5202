"""The transaction runner: apply steps in order; on failure undo what this run changed, newest first."""

from __future__ import annotations

from typing import Protocol

from loguru import logger


class Step(Protocol):
    """What the runner needs of a step (netfw.steps.base.Step is the contract every step follows): the runner sits
    below the steps and knows them only by this."""

    undo_only_if_clean: bool

    def describe(self) -> str: ...

    def apply(self) -> bool: ...

    def undo(self) -> None: ...


class TransactionError(Exception):
    """A step failed; the steps this run had changed were undone (undo_failures lists those that could not be)."""

    def __init__(self, step: Step, error: BaseException, undo_failures: list[tuple[Step, BaseException]]):
        self.step, self.error, self.undo_failures = step, error, undo_failures
        msg = f"{step.describe()}: {error}"
        if undo_failures:
            msg += "; rollback incomplete: " + "; ".join(f"{s.describe()}: {e}" for s, e in undo_failures)
        super().__init__(msg)


def run(steps: list[Step]) -> list[Step]:
    """Apply every step; return those that changed something. On any failure, roll back and raise TransactionError."""
    changed: list[Step] = []
    for step in steps:
        logger.info("{}", step.describe())
        try:
            if step.apply():
                changed.append(step)
        except BaseException as error:  # also Ctrl-C: the host must be left as it was
            logger.warning("failed: {}: {}", step.describe(), error)
            raise TransactionError(step, error, rollback(changed)) from error
    return changed


def rollback(done: list[Step]) -> list[tuple[Step, BaseException]]:
    """Undo done newest first; keep going when an undo fails, and return the failures."""
    failures = []
    for step in reversed(done):
        if failures and step.undo_only_if_clean:
            logger.warning("kept: {} (the rollback is incomplete)", step.describe())
            continue
        logger.info("undo: {}", step.describe())
        try:
            step.undo()
        except Exception as error:  # an undo failure must not stop the others; it is reported with the original
            logger.warning("undo failed: {}: {}", step.describe(), error)
            failures.append((step, error))
    return failures
