"""Runs one `module:function` step in its own process: `python -m pipeorch_worker.step_main
REF CONTEXT_JSON`. A separate process lets the agent enforce the timeout and survive a step
that crashes the interpreter."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from pipeorch_worker.sdk import StepContext


def main(argv: list[str]) -> int:
    ref, context_path = argv
    module_name, function_name = ref.split(":", 1)
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
        print(f"pipeorch: cannot load step callable {ref!r}: {e}", file=sys.stderr)
        return 2
    context = StepContext.from_json(Path(context_path).read_text())
    try:
        function(context)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
