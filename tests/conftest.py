"""Fixtures shared by every test. Unit tests (tests/unit) need no server; integration tests
(tests/integration, fixtures in tests/integration/conftest.py) need the local lab (`make lab`).
"""
from __future__ import annotations

import pathlib

import pytest
from testlib import REPO


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO
