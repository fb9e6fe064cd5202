"""Integration tests need the unprivileged sandbox: run them with `scripts/sandbox pytest tests/integration`."""

from __future__ import annotations

import os

import pytest

from . import lab as lab_mod
from .ovs import ovs  # noqa: F401  (the session's private Open vSwitch, for any integration test that asks)

IN_SANDBOX = os.environ.get("NETFW_IN_SANDBOX") == "1"


def pytest_collection_modifyitems(config, items):
    if IN_SANDBOX:
        return
    skip = pytest.mark.skip(reason="needs the sandbox: scripts/sandbox .venv/bin/pytest tests/integration")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("NETFW_STATE_DIR", str(path))
    return path


@pytest.fixture
def lab(state_dir):
    """A clean sandbox with a lab in it; everything is removed afterwards, whatever the test did."""
    lab_mod.reset()
    yield lab_mod.Lab()
    lab_mod.reset()
