"""Runs one attempt of a step: fetch inputs, run in a subprocess with a timeout, keep outputs.

Outputs and the log are written under an attempt-scoped prefix, so a retried or duplicated
attempt never overwrites what another attempt committed; only the committed attempt's keys are
ever handed to downstream steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeorch_worker.hosts import HostPool
from pipeorch_worker.process import die_with_worker, kill_group
from pipeorch_worker.sdk import StepContext
from pipeorch_worker.store import ArtifactCorrupt, ArtifactStore, StorageUnavailable

log = logging.getLogger(__name__)

APPLICATION = "application"
INFRASTRUCTURE = "infrastructure"
LOG_TAIL_BYTES = 2048
#: The step's stdout and stderr, in its scratch directory.
LOG_NAME = "log.txt"


@dataclass(frozen=True)
class InputArtifact:
    step: str
    name: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Attempt:
    task_id: str
    attempt: int
    pipeline: str
    step: str
    run: str
    command: list[str]
    params: dict[str, object]
    inputs: list[InputArtifact]
    outputs: list[str]
    timeout: float
    output_prefix: str
    #: ``params`` as the control plane sent them (sorted JSON): the step's PIPEORCH_PARAMS.
    params_json: str = ""
    #: When this worker received the attempt (unix seconds), reported with its completion.
    received_at: float = 0.0


@dataclass(frozen=True)
class OutputArtifact:
    name: str
    key: str
    size: int
    sha256: str


@dataclass
class AttemptResult:
    ok: bool
    failure_class: str = ""
    message: str = ""
    exit_code: int = 0
    outputs: list[OutputArtifact] = field(default_factory=list)
    log_key: str = ""
    log_tail: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


class StepRunner:
    """Runs attempts: `command` steps in a process each, `run` steps in warm step hosts
    (``warm_hosts`` > 0, see step_host) or, with none, in a fresh interpreter each."""

    def __init__(
        self, store: ArtifactStore, work_dir: Path, code_path: list[Path], warm_hosts: int = 0
    ) -> None:
        self._store = store
        # Absolute: a step runs with its scratch directory as cwd, and finds its files by path.
        self._work_dir = work_dir.resolve()
        self._code_path = [p.resolve() for p in code_path]
        self._hosts = HostPool(self._base_environment(), warm_hosts) if warm_hosts else None
        self._scratch = ScratchDirectories(self._work_dir)

    async def prepare(self) -> None:
        """Make sure the bucket exists (raises StorageUnavailable while the store is down)."""
        await asyncio.to_thread(self._store.ensure_bucket)
        if self._hosts is not None:
            await self._hosts.warm()

    async def close(self) -> None:
        if self._hosts is not None:
            await self._hosts.close()

    @property
    def warm_hosts(self) -> int:
        """Warm step interpreters started (they fill up to one per slot after ``prepare``)."""
        return self._hosts.ready if self._hosts is not None else 0

    async def run(self, attempt: Attempt) -> AttemptResult:
        scratch = self._scratch.take()
        if attempt.outputs:
            scratch.outputs.mkdir()
        started = time.time()
        result, logged = await self._run_in(scratch, attempt)
        result.started_at, result.finished_at = started, time.time()
        if logged != 0:  # 0: the step host saw it print nothing, so there is no log to keep
            result.log_tail = _tail(scratch.log)
            result.log_key = await self._keep_log(attempt, scratch.log)
        self._scratch.give_back(scratch)
        return result

    async def _run_in(self, scratch: Scratch, attempt: Attempt) -> tuple[AttemptResult, int | None]:
        """The attempt's result, and the bytes it logged if the step host counted them."""
        try:
            inputs = (
                await asyncio.to_thread(self._fetch_inputs, scratch.path / "inputs", attempt)
                if attempt.inputs
                else {}
            )
        except (StorageUnavailable, ArtifactCorrupt) as e:
            return AttemptResult(ok=False, failure_class=INFRASTRUCTURE, message=str(e)), None
        context = StepContext(
            pipeline=attempt.pipeline,
            step=attempt.step,
            task_id=attempt.task_id,
            attempt=attempt.attempt,
            params=attempt.params,
            inputs=inputs,
            outputs={name: scratch.outputs / name for name in attempt.outputs},
            output_dir=scratch.outputs,
        )
        exit_code, timed_out, logged = await self._execute(scratch, attempt, context)
        return await self._judge(attempt, context, scratch.log, exit_code, timed_out), logged

    async def _judge(
        self,
        attempt: Attempt,
        context: StepContext,
        log_path: Path,
        exit_code: int,
        timed_out: bool,
    ) -> AttemptResult:
        """What the attempt came to, from how the step ended; outputs are kept if it succeeded."""
        if timed_out:
            return AttemptResult(
                ok=False,
                failure_class=APPLICATION,
                message=f"timed out after {attempt.timeout:g}s",
                exit_code=exit_code,
            )
        if exit_code != 0:
            last = _last_line(log_path)
            return AttemptResult(
                ok=False,
                failure_class=APPLICATION,
                message=f"exit code {exit_code}" + (f": {last}" if last else ""),
                exit_code=exit_code,
            )
        missing = [name for name, path in context.outputs.items() if not path.is_file()]
        if missing:
            return AttemptResult(
                ok=False,
                failure_class=APPLICATION,
                message=f"step did not write its declared outputs: {', '.join(missing)}",
            )
        try:
            outputs = (
                await asyncio.to_thread(self._keep_outputs, attempt, context)
                if context.outputs
                else []
            )
        except StorageUnavailable as e:
            return AttemptResult(ok=False, failure_class=INFRASTRUCTURE, message=str(e))
        return AttemptResult(ok=True, outputs=outputs)

    def _fetch_inputs(self, directory: Path, attempt: Attempt) -> dict[str, Path]:
        paths = {}
        for artifact in attempt.inputs:
            path = directory / artifact.step / artifact.name
            self._store.get_file(artifact.key, path, artifact.size, artifact.sha256)
            paths[f"{artifact.step}/{artifact.name}"] = path
        return paths

    def _keep_outputs(self, attempt: Attempt, context: StepContext) -> list[OutputArtifact]:
        kept = []
        for name, path in context.outputs.items():
            stored = self._store.put_file(attempt.output_prefix + name, path)
            kept.append(OutputArtifact(name, stored.key, stored.size, stored.sha256))
        return kept

    async def _keep_log(self, attempt: Attempt, log_path: Path) -> str:
        """Upload the step's log; a step that printed nothing has none (no key, no upload)."""
        if not _printed_something(log_path):  # a local stat: cheaper than a thread hop
            return ""
        key = attempt.output_prefix + "log.txt"
        try:
            await asyncio.to_thread(self._store.put_file, key, log_path)
        except StorageUnavailable:
            return ""  # the tail still reaches the status
        return key

    async def _execute(
        self, scratch: Scratch, attempt: Attempt, context: StepContext
    ) -> tuple[int, bool, int | None]:
        """Run the step: (exit status, timed out, bytes it logged if a step host counted)."""
        env = self._step_variables(attempt, context)
        log_path = scratch.log
        if attempt.run and self._hosts is not None:
            request = {
                "ref": attempt.run,
                "context": context.to_dict(),
                "cwd": scratch.path_text,
                "log": scratch.log_text,
                "env": env,
            }
            code, timed_out, logged = await self._hosts.run(request, attempt.timeout)
            if timed_out:
                with log_path.open("ab") as log:
                    log.write(_killed_after(attempt.timeout))
            return code, timed_out, logged
        # A process of its own reads its context from a file (`command` steps may too).
        (scratch.path / "context.json").write_text(context.to_json())
        env["PIPEORCH_CONTEXT"] = str(scratch.path / "context.json")
        if attempt.run:
            argv = [sys.executable, "-m", "pipeorch_worker.step_main", attempt.run, "context.json"]
        else:
            argv = list(attempt.command)
        code, timed_out = await self._run_process(
            argv, {**self._base_environment(), **env}, scratch.path, log_path, attempt.timeout
        )
        return code, timed_out, None

    async def _run_process(
        self, argv: list[str], env: dict[str, str], scratch: Path, log_path: Path, timeout: float
    ) -> tuple[int, bool]:
        argv = die_with_worker(argv, os.getpid())
        with log_path.open("ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=scratch,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # a process group of its own: the timeout kills it all
                )
            except OSError as e:
                log.write(f"pipeorch: cannot start {argv[0]!r}: {e}\n".encode())
                return 127, False
            try:
                return await asyncio.wait_for(process.wait(), timeout), False
            except TimeoutError:
                kill_group(process.pid)
                await process.wait()
                log.write(_killed_after(timeout))
                return -9, True
            except asyncio.CancelledError:
                kill_group(process.pid)
                raise

    def _base_environment(self) -> dict[str, str]:
        """The worker's environment, with the step code on PYTHONPATH."""
        env = dict(os.environ)
        path = [str(p) for p in self._code_path] + [env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        return env

    def _step_variables(self, attempt: Attempt, context: StepContext) -> dict[str, str]:
        """What the step finds in its environment: who it is and where its files are."""
        env = {
            "PIPEORCH_PIPELINE": attempt.pipeline,
            "PIPEORCH_STEP": attempt.step,
            "PIPEORCH_TASK_ID": attempt.task_id,
            "PIPEORCH_ATTEMPT": str(attempt.attempt),
            "PIPEORCH_PARAMS": attempt.params_json or json.dumps(attempt.params, sort_keys=True),
            "PIPEORCH_OUTPUT_DIR": str(context.output_dir),
        }
        for ref, path_ in context.inputs.items():
            env[f"PIPEORCH_INPUT_{_env_name(ref)}"] = str(path_)
        for name, path_ in context.outputs.items():
            env[f"PIPEORCH_OUTPUT_{_env_name(name)}"] = str(path_)
        return env


def _killed_after(timeout: float) -> bytes:
    return f"\npipeorch: killed after {timeout:g}s timeout\n".encode()


def _env_name(ref: str) -> str:
    """``gen/readings.csv`` -> ``GEN__READINGS_CSV``."""
    return re.sub(r"[^A-Z0-9]", "_", ref.upper().replace("/", "__"))


@dataclass(frozen=True)
class Scratch:
    """A scratch directory and the paths an attempt uses in it, made once per directory (the
    directories are reused): building them for every attempt cost more than a tenth of a
    no-op step's time in the worker."""

    path: Path
    log: Path
    outputs: Path
    path_text: str
    log_text: str

    @classmethod
    def at(cls, path: Path) -> Scratch:
        log = path / LOG_NAME
        return cls(path, log, path / "outputs", str(path), str(log))


class ScratchDirectories:
    """Empty directories for attempts to run in, emptied and reused afterwards.

    Creating and removing a directory per attempt costs more than a short step (rmdir took
    about 0.1 ms here when idle, over 1 ms under load); emptying one of a few plain files is
    a few unlinks. An empty log stays for the next attempt to append to: most short steps print
    nothing, and a file made and removed per attempt cost worker and step host together some
    45 us of a no-op step's 400. One directory per slot ends up in use.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._free: list[Scratch] = []
        self._made = 0

    def take(self) -> Scratch:
        if self._free:
            return self._free.pop()
        self._made += 1
        path = self._root / f"scratch-{self._made}"
        shutil.rmtree(path, ignore_errors=True)  # left by an earlier worker process
        path.mkdir(parents=True)
        return Scratch.at(path)

    def give_back(self, scratch: Scratch) -> None:
        try:
            with os.scandir(scratch.path) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    elif entry.name != LOG_NAME or entry.stat(follow_symlinks=False).st_size:
                        os.unlink(entry.path)
        except OSError:
            # Not reused: the next take makes another.
            shutil.rmtree(scratch.path, ignore_errors=True)
            return
        self._free.append(scratch)


def _printed_something(log_path: Path) -> bool:
    return log_path.exists() and log_path.stat().st_size > 0


def _tail(path: Path) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return f.read().decode(errors="replace")


def _last_line(path: Path) -> str:
    lines = [line for line in _tail(path).splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
