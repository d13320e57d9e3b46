"""A worker configured with relative directories still hands its steps paths that work from
the step's own working directory (its scratch directory)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pipeorch_worker.runner import Attempt, StepRunner

CHECK = (
    "import os, sys; p = os.environ['PIPEORCH_CONTEXT']; "
    "sys.exit(0 if os.path.isabs(p) and os.path.exists(p) else 9)"
)


class NoStore:
    """The step reads and writes no artifact and prints nothing: the store is never used."""


def test_a_relative_work_dir_still_gives_the_step_paths_it_can_open(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = StepRunner(NoStore(), Path("work"), [])  # type: ignore[arg-type]
    attempt = Attempt(
        task_id="p.check", attempt=1, pipeline="p", step="check", run="",
        command=[sys.executable, "-c", CHECK], params={}, inputs=[], outputs=[],
        timeout=60.0, output_prefix="runs/p/check/attempt-1/",
    )  # fmt: skip
    result = asyncio.run(runner.run(attempt))
    assert result.ok, result.message


def params_check(expected: str) -> list[str]:
    code = f"import os, sys; sys.exit(0 if os.environ['PIPEORCH_PARAMS'] == {expected!r} else 9)"
    return [sys.executable, "-c", code]


def test_a_step_finds_its_params_as_the_control_plane_sent_them(tmp_path):
    runner = StepRunner(NoStore(), tmp_path / "work", [])  # type: ignore[arg-type]
    sent = '{"a": 1, "b": [2, 3]}'
    attempt = Attempt(
        task_id="p.check", attempt=1, pipeline="p", step="check", run="",
        command=params_check(sent), params={"b": [2, 3], "a": 1}, inputs=[], outputs=[],
        timeout=60.0, output_prefix="runs/p/check/attempt-1/", params_json=sent,
    )  # fmt: skip
    assert asyncio.run(runner.run(attempt)).ok
    # Without the control plane's text (an attempt made in code), the params are written
    # the same way: keys sorted.
    unsent = Attempt(**{**attempt.__dict__, "params_json": ""})
    assert asyncio.run(runner.run(unsent)).ok
