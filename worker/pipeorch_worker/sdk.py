"""What a step written as a Python callable receives: ``def my_step(ctx: StepContext) -> None``.

The callable reads its parameters from ``ctx.params``, its inputs from ``ctx.input(...)`` and
writes each declared output to the path ``ctx.output(name)`` gives. Anything it prints is kept
as the step's log. Raising an exception fails the attempt (an application failure).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StepContext:
    pipeline: str
    step: str
    task_id: str
    attempt: int
    params: dict[str, Any]
    #: ``{"step/artifact": path}`` for every input.
    inputs: dict[str, Path]
    #: ``{"artifact": path}`` for every declared output.
    outputs: dict[str, Path]
    output_dir: Path

    def input(self, ref: str) -> Path:
        """An input by ``step/artifact``, or by artifact name when that is unambiguous."""
        if ref in self.inputs:
            return self.inputs[ref]
        matches = [path for key, path in self.inputs.items() if key.split("/", 1)[1] == ref]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(self.inputs)) or "none"
        raise KeyError(f"no input {ref!r} (inputs: {known})")

    def output(self, name: str) -> Path:
        """Where to write the declared output ``name``."""
        if name not in self.outputs:
            declared = ", ".join(sorted(self.outputs)) or "none"
            raise KeyError(f"{name!r} is not a declared output (outputs: {declared})")
        return self.outputs[name]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StepContext:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what ``from_dict`` takes back."""
        return {
            "pipeline": self.pipeline,
            "step": self.step,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "params": self.params,
            "inputs": {k: str(v) for k, v in self.inputs.items()},
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "output_dir": str(self.output_dir),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepContext:
        return cls(
            pipeline=data["pipeline"],
            step=data["step"],
            task_id=data["task_id"],
            attempt=int(data["attempt"]),
            params=data["params"],
            inputs={k: _path(v) for k, v in data["inputs"].items()},
            outputs={k: _path(v) for k, v in data["outputs"].items()},
            output_dir=_path(data["output_dir"]),
        )


@functools.lru_cache(maxsize=1024)
def _path(text: str) -> Path:
    """``Path(text)``, remembered: a warm step host sees the same few scratch directories
    over and over, and a Path costs more to build than to look up (it is immutable)."""
    return Path(text)
