"""Fixtures for the stress tests: a fake streaming server per test (Prefect: tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stress.fakeserver import FakeServer


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer(tokens=8) as srv:
        yield srv
