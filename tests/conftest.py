"""Tiers follow the directories: tests/unit -> unit, tests/integration -> integration."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = {"unit", "integration", "k8s"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = set(Path(str(item.fspath)).parts)
        for tier in _TIERS & parts:
            item.add_marker(getattr(pytest.mark, tier))
