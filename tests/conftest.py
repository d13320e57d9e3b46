"""Tiers follow the directories: tests/unit -> unit, tests/integration -> integration,
tests/k8s -> k8s."""

from __future__ import annotations

from pathlib import Path

import pytest

_TIERS = {"unit", "integration", "k8s"}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the test item, so fixtures can tell that the test failed
    (and, for example, print the logs of the processes it ran)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is not None and report.failed


_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Only the directory right under tests/ names the tier: tests/unit/k8s is unit.
        path = Path(str(item.fspath)).resolve()
        tier = path.relative_to(_TESTS).parts[0] if path.is_relative_to(_TESTS) else None
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))
