"""The status mirror: replicated state -> Task, Pipeline and CloudRegion status, on the leader.

Woken by every applied Raft batch (and at least every ``period`` seconds), it compares each
tracked run's ``revision`` with the last one it mirrored and patches only the objects whose
status changed since it last wrote them. The cache is per operator run: a new leader writes
every status once, then only changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeorch.controlplane.service import ControlPlane
from pipeorch.core.runs import RunPhase
from pipeorch.errors import KubernetesError, NotFound, PipeorchError
from pipeorch.k8s import manifests as m
from pipeorch.k8s.api import Kube

log = logging.getLogger(__name__)
#: After a failed patch, look again this soon rather than at the next change.
RETRY_SECONDS = 0.2
#: How often running runs are checked against the Pipelines that still exist (the first time
#: at the start of each operator run).
SWEEP_SECONDS = 30.0
#: A Kubernetes uid: the submission key of a run the operator (or a manifest from the API
#: server) submitted. Runs with other keys are the CLI's and never swept.
UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Ref:
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class RegionRef(Ref):
    wanted: int = 0
    generation: int | None = None


class Mirror:
    def __init__(
        self,
        control: ControlPlane,
        kube: Kube,
        period: float,
        is_leader: Callable[[], bool],
        namespace: str | None = None,
        on_status: Callable[[str, str], None] = lambda plural, name: None,
    ) -> None:
        self.control = control
        self.kube = kube
        self.period = period
        self.is_leader = is_leader
        self.namespace = namespace
        self._swept = 0.0
        #: Called after each status patch (the benchmark times them).
        self.on_status = on_status
        self.pipelines: dict[str, Ref] = {}  # by uid
        self.regions: dict[tuple[str, str], RegionRef] = {}
        self._revisions: dict[str, int] = {}
        self._written: dict[tuple[str, str, str], m.Manifest] = {}
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    # ---- what to mirror ----------------------------------------------------------------------

    def track(self, ref: Ref, revision: int | None = None) -> None:
        """Mirror ``ref`` from now on; ``revision``: the one its status already shows (the
        Tasks are written before the Pipeline, so theirs are at least as new)."""
        self.pipelines[ref.uid] = ref
        if revision is not None:
            self._revisions.setdefault(ref.uid, revision)
        self.notify()

    def forget(self, uid: str) -> Ref | None:
        self._revisions.pop(uid, None)
        return self.pipelines.pop(uid, None)

    def track_region(self, ref: RegionRef) -> None:
        self.regions[(ref.namespace, ref.name)] = ref
        self.notify()

    def forget_region(self, namespace: str, name: str) -> None:
        self.regions.pop((namespace, name), None)
        self._written.pop(("cloudregions", namespace, name), None)

    def notify(self) -> None:
        self._wake.set()

    def notify_threadsafe(self) -> None:
        """After each applied batch, from wherever Raft ticks (any thread)."""
        self._loop.call_soon_threadsafe(self._wake.set)

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period)
            self._wake.clear()
            if not self.is_leader():
                continue  # the supervisor is stopping us; write nothing meanwhile
            try:
                await self.sync()
                if time.monotonic() - self._swept >= SWEEP_SECONDS:
                    await self.sweep()
                    self._swept = time.monotonic()
            except PipeorchError as e:
                log.warning("status mirror: %s", e)
                self._loop.call_later(RETRY_SECONDS, self._wake.set)

    async def sync(self) -> None:
        for ref in list(self.pipelines.values()):
            await self._sync_pipeline(ref)
        if self.regions:
            online = self.control.online_workers()
            for region in list(self.regions.values()):
                status = m.region_status(
                    online.get(region.name, 0), region.wanted, region.generation
                )
                await self._write("cloudregions", "CloudRegion", region, status)

    async def sweep(self) -> None:
        """Cancel the runs of Pipelines deleted while no operator watched (no event told).

        The runs are read before the Pipelines are listed: a run seen here was submitted from a
        Pipeline created before the list, so the list has it unless it was deleted."""
        runs = self.control.render_all(lambda run, _: (run.name, run.submission_key, run.phase))
        running = {
            name: key for name, key, phase in runs if phase is RunPhase.RUNNING and UID.match(key)
        }
        if not running:
            return
        present = {p["metadata"]["uid"] for p in await self.kube.list_pipelines(self.namespace)}
        for name, uid in running.items():
            if uid not in present:
                self.forget(uid)
                await cancel_run(self.control, Ref(self.namespace or "", name, uid))

    async def _sync_pipeline(self, ref: Ref) -> None:
        try:
            view = self.control.get(ref.name)
        except NotFound:
            return  # submitted by the handler in a moment, or refused: the handler says
        if view.run.submission_key != ref.uid or self._revisions.get(ref.uid) == view.run.revision:
            return
        writes = [
            self._write(
                "tasks",
                "Task",
                Ref(ref.namespace, m.task_name(ref.name, task.step), ""),
                m.task_status(task),
            )
            for task in view.tasks
        ]
        results = await asyncio.gather(*writes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            # A Task not created yet, a refused patch, or the Pipeline (and so its Tasks) gone.
            log.debug("status mirror: %d task patches failed: %s", len(failed), failed[0])
            if not await self._exists(ref):
                await self._gone(ref)
                return
            self._loop.call_later(RETRY_SECONDS, self._wake.set)
            return
        # The Pipeline last: its status.revision then says every Task is mirrored up to it.
        try:
            await self._write("pipelines", "Pipeline", ref, m.pipeline_status(view.run, view.tasks))
        except KubernetesError as e:
            if e.status != 404:
                raise
            await self._gone(ref)
            return
        self._revisions[ref.uid] = view.run.revision

    async def _exists(self, ref: Ref) -> bool:
        try:
            body = await self.kube.get_custom("pipelines", ref.namespace, ref.name)
        except KubernetesError as e:
            if e.status == 404:
                return False
            raise
        return bool(body["metadata"].get("uid") == ref.uid)

    async def _gone(self, ref: Ref) -> None:
        """The Pipeline was deleted: its run is cancelled (its Tasks go by garbage collection)."""
        self.forget(ref.uid)
        await cancel_run(self.control, ref)

    async def _write(self, plural: str, kind: str, ref: Ref, status: m.Manifest) -> None:
        key = (plural, ref.namespace, ref.name)
        old = self._written.get(key)
        if old == status:
            return
        await self.kube.patch_status(plural, ref.namespace, ref.name, status)
        self._written[key] = status
        self.on_status(plural, ref.name)
        phase = status.get("phase")
        if old is not None and phase and old.get("phase") != phase:
            involved = {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid or None}
            message = status.get("message") or f"{kind} is {phase}"
            try:
                await self.kube.event(involved, kind, phase, message)
            except PipeorchError as e:  # an event is a courtesy: never hold the mirror for one
                log.debug("event for %s/%s not posted: %s", plural, ref.name, e)


async def cancel_run(control: ControlPlane, ref: Ref) -> None:
    """Cancel the run of a deleted Pipeline, if it is that Pipeline's (same uid) and runs."""
    try:
        key, phase = control.render(ref.name, lambda run, _: (run.submission_key, run.phase))
    except NotFound:
        return
    if key == ref.uid and phase is RunPhase.RUNNING:
        await control.cancel(ref.name)
        log.info("pipeline %s/%s deleted: its run is cancelled", ref.namespace, ref.name)
