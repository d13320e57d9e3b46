"""A warm interpreter that runs `module:function` steps one after another.

Started by the worker's host pool (`python -m pipeorch_worker.step_host FD`), it reads one JSON
request per line from the socket FD and answers one JSON line per request. A fresh interpreter
costs about 90 ms of CPU before a step's first line runs; a warm one answers in well under a
millisecond, which is what makes short steps cheap.

For the step, it looks like a process of its own: stdout and stderr go to the attempt's log
file, the working directory is the attempt's scratch directory and the PIPEORCH_* variables
are set. What a step leaves behind in the interpreter (imported modules, globals) stays, as in
Celery, Dask and Ray; a step module whose file changed since it was imported makes the host
retire itself (answer ``{"retire": true}`` without running), so edited code is never run stale.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeorch_worker.sdk import StepContext

#: Exit statuses, as a step process would have them.
OK, RAISED, CANNOT_LOAD = 0, 1, 2


def main(argv: list[str]) -> int:
    conn = socket.socket(fileno=int(argv[0]))
    roots = [Path(p).resolve() for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    loaded = ModuleWatch(roots)
    process = StepProcess()
    with conn, conn.makefile("rb") as requests:
        for line in requests:
            request = json.loads(line)
            if loaded.changed():
                conn.sendall(b'{"retire": true}\n')
                return 0
            status, log_bytes = process.run(request)
            loaded.scan()
            conn.sendall(b'{"exit": %d, "log_bytes": %d}\n' % (status, log_bytes))
    return 0


def run_callable(ref: str, context: StepContext) -> int:
    """Load and call ``module:function``; the exit status a step process would have."""
    module_name, _, function_name = ref.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as e:
        print(f"pipeorch: cannot load step callable {ref!r}: {e}", file=sys.stderr)
        return CANNOT_LOAD
    try:
        function(context)
    except Exception:
        traceback.print_exc()
        return RAISED
    return OK


class StepProcess:
    """Makes the interpreter look like a fresh process to each step: fds 1 and 2 on its log,
    its scratch directory as cwd, its PIPEORCH_* variables (and no other step's) set.

    Kept cheap, as a step can be shorter than the setting up: the interpreter's own stdout and
    stderr are duplicated once, and only variables that differ from what the environment holds
    are written (a step's variables stay until the next step's replace them)."""

    def __init__(self) -> None:
        self._home = os.getcwd()
        self._stdout, self._stderr = os.dup(1), os.dup(2)
        self._env: dict[str, str] = {}

    def run(self, request: dict[str, Any]) -> tuple[int, int]:
        """Run one step request: (exit status, bytes the step wrote to its log)."""
        with self._as_step(request["log"], request["cwd"], request["env"]) as log_fd:
            status = run_callable(request["ref"], StepContext.from_dict(request["context"]))
            sys.stdout.flush()
            sys.stderr.flush()
            return status, os.fstat(log_fd).st_size

    @contextlib.contextmanager
    def _as_step(self, log_path: str, cwd: str, env: dict[str, str]) -> Iterator[int]:
        self._set_env(env)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.chdir(cwd)
            yield log_fd
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.chdir(self._home)
            os.dup2(self._stdout, 1)
            os.dup2(self._stderr, 2)
            os.close(log_fd)

    def _set_env(self, env: dict[str, str]) -> None:
        for key in self._env.keys() - env.keys():
            os.environ.pop(key, None)
        # Every one, unchecked: the last step may have changed any of them, and reading one
        # back through os.environ costs what setting it does.
        for key, value in env.items():
            os.environ[key] = value
        self._env = env


class ModuleWatch:
    """The modification times of the step modules this interpreter has imported."""

    def __init__(self, roots: list[Path]) -> None:
        self._roots = roots
        self._mtimes: dict[str, int] = {}
        self._seen: set[str] = set()
        self.scan()

    def scan(self) -> None:
        """Note the modules imported since the last scan (a few microseconds when none were)."""
        for name in sys.modules.keys() - self._seen:
            self._seen.add(name)
            path = getattr(sys.modules.get(name), "__file__", None)
            if path and self._is_step_code(path):
                with contextlib.suppress(OSError):
                    self._mtimes[path] = os.stat(path).st_mtime_ns

    def changed(self) -> bool:
        for path, mtime in self._mtimes.items():
            try:
                if os.stat(path).st_mtime_ns != mtime:
                    return True
            except OSError:
                return True
        return False

    def _is_step_code(self, path: str) -> bool:
        resolved = Path(path).resolve()
        return any(resolved.is_relative_to(root) for root in self._roots)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
