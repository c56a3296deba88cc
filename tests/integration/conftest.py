"""Fixtures shared by integration tests that run the runner as a local process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codex_devenv import fake_model as fm


@pytest.fixture(scope="module")
def loopback_model() -> Iterator[fm.FakeModelServer]:
    """The scripted fake model on 127.0.0.1 (no node needed), one per module."""
    with fm.FakeModelServer() as server:
        yield server


@pytest.fixture
def fake(loopback_model: fm.FakeModelServer) -> Iterator[fm.FakeModelServer]:
    """The loopback fake model, reset for this test; it must have seen no protocol errors."""
    loopback_model.reset()
    yield loopback_model
    assert loopback_model.errors == []
