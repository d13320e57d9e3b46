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
    with conn, conn.makefile("rb") as requests:
        for line in requests:
            request = json.loads(line)
            if loaded.changed():
                conn.sendall(b'{"retire": true}\n')
                return 0
            status = run_request(request)
            loaded.scan()
            conn.sendall(json.dumps({"exit": status}).encode() + b"\n")
    return 0


def run_request(request: dict[str, Any]) -> int:
    with _as_step_process(request["log"], request["cwd"], request["env"]):
        return run_callable(request["ref"], StepContext.from_json(request["context"]))


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


@contextlib.contextmanager
def _as_step_process(log_path: str, cwd: str, env: dict[str, str]) -> Iterator[None]:
    """Point fds 1 and 2 at the log, chdir and set the step's variables; undo it all after."""
    saved_env = {k: os.environ.get(k) for k in env}
    saved_fds = os.dup(1), os.dup(2)
    saved_cwd = os.getcwd()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.chdir(cwd)
        os.environ.update(env)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.dup2(saved_fds[0], 1)
        os.dup2(saved_fds[1], 2)
        for fd in (*saved_fds, log_fd):
            os.close(fd)


class ModuleWatch:
    """The modification times of the step modules this interpreter has imported."""

    def __init__(self, roots: list[Path]) -> None:
        self._roots = roots
        self._mtimes: dict[str, int] = {}
        self._seen: set[str] = set()
        self.scan()

    def scan(self) -> None:
        """Note the modules imported since the last scan (a few microseconds when none were)."""
        for name, module in list(sys.modules.items()):
            if name in self._seen:
                continue
            self._seen.add(name)
            path = getattr(module, "__file__", None)
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
