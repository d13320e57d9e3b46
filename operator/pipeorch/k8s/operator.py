"""The kopf handlers: Pipeline -> replicated state + Tasks; CloudRegion -> workers + latency.

Handlers are thin: parse, call the control plane or the pure builders of
``pipeorch.k8s.manifests``, send what they return. Every one is idempotent (kopf re-runs
in-progress handlers after a restart, and a new Raft leader resumes every object): a submission
is keyed by the Pipeline's uid, a Task has a deterministic name and a 409 means it exists, a
Deployment or ConfigMap is created or patched to the same content.

No handler returns a value (kopf would store it in status) and there is no deletion handler
(it would add a finalizer that blocks deletion while no replica leads): a deleted Pipeline is
seen as a DELETED event, or by the mirror as a 404, and its run cancelled; its Tasks go with it
by owner reference.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from pipeorch.controlplane.service import ControlPlane
from pipeorch.core.regions import CloudRegionSpec
from pipeorch.core.spec import InvalidPipeline
from pipeorch.errors import Conflict, KubernetesError, NotFound, Unavailable
from pipeorch.k8s import manifests as m
from pipeorch.k8s.api import Kube, connection_info
from pipeorch.k8s.mirror import Mirror, Ref, RegionRef, cancel_run

log = logging.getLogger(__name__)
VERSION = m.API_VERSION.split("/")[1]
#: A write that found no Raft quorum is retried this soon.
UNAVAILABLE_RETRY = 1.0
#: A name held by another Pipeline's running run is tried again this often.
CONFLICT_RETRY = 5.0
#: Tasks of a deleted Pipeline of the same name: look again this soon.
GC_RETRY = 2.0


@dataclass
class Context:
    """What the handlers need; one per operator run, handed over as kopf's ``memo``."""

    control: ControlPlane
    kube: Kube
    mirror: Mirror
    pod: m.WorkerPodSettings
    login: Any  # the client configuration kopf logs in with


# ---- Pipelines -------------------------------------------------------------------------------


async def submit_pipeline(ctx: Context, body: kopf.Body, patch: kopf.Patch) -> None:
    """Validate, submit (keyed by uid), create one Task per step, start mirroring."""
    meta = body["metadata"]
    ref = Ref(meta["namespace"], meta["name"], meta["uid"])
    manifest = {
        "apiVersion": body["apiVersion"],
        "kind": "Pipeline",
        "metadata": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
        "spec": dict(body["spec"]),
    }
    if not _submitted(ctx.control, ref):
        try:
            # replace: a finished run of a deleted Pipeline of this name makes way for this one.
            await ctx.control.submit(json.dumps(manifest), key=ref.uid, replace=True)
        except InvalidPipeline as e:
            await _refuse(ctx, ref, body, patch, "Invalid", str(e))
            return
        except Conflict as e:
            # Still running for another object (here or in another namespace): look again
            # later, as a deleted Pipeline's run is cancelled soon.
            await _refuse(ctx, ref, body, patch, "Conflict", str(e), phase="Pending")
            raise kopf.TemporaryError(str(e), delay=CONFLICT_RETRY) from e
    # The steps of the run as submitted (the object's spec may have been edited since).
    steps = ctx.control.render(ref.name, lambda run, _: list(run.steps))
    await _create_tasks(ctx, m.Owner("Pipeline", ref.name, ref.uid), ref.namespace, steps)
    # Mirrored once its Tasks exist (before, every patch would miss); the revision its status
    # already shows spares a resumed pipeline's writes.
    ctx.mirror.track(ref, (body.get("status") or {}).get("revision"))


def _submitted(control: ControlPlane, ref: Ref) -> bool:
    """Already in the replicated state from this very object (a resumed pipeline): a new
    leader resuming every pipeline then writes nothing to Raft."""
    try:
        return control.render(ref.name, lambda run, _: run.submission_key) == ref.uid
    except NotFound:
        return False


async def _refuse(
    ctx: Context,
    ref: Ref,
    body: kopf.Body,
    patch: kopf.Patch,
    reason: str,
    message: str,
    phase: str = "Invalid",
) -> None:
    """Say why in status and in an Event, once (a retried refusal repeats neither)."""
    if (body.get("status") or {}).get("message") == message:
        return
    patch.status.update(m.refused_status(phase, reason, message, time.time()))
    involved = {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}
    await ctx.kube.event(involved, "Pipeline", reason, message)


async def _create_tasks(ctx: Context, owner: m.Owner, namespace: str, steps: list[str]) -> None:
    """The Tasks not there yet (one list, not a 409 per step, when a new leader resumes)."""
    selector = f"{m.PIPELINE_LABEL}={owner.name}"
    present = {
        t["metadata"]["name"]: t
        for t in await ctx.kube.list_custom("tasks", namespace, label_selector=selector)
    }
    wanted = [m.task_manifest(owner, namespace, step) for step in steps]
    missing = [body for body in wanted if body["metadata"]["name"] not in present]
    created = await asyncio.gather(*(ctx.kube.create_custom("tasks", b) for b in missing))
    for body, new in zip(missing, created, strict=True):
        if not new:  # created meanwhile, or another object holds the name: check below
            present[body["metadata"]["name"]] = await ctx.kube.get_custom(
                "tasks", namespace, body["metadata"]["name"]
            )
    for body in wanted:
        name = body["metadata"]["name"]
        existing = present.get(name)
        if existing is None:
            continue
        if existing["spec"].get("taskId") != body["spec"]["taskId"]:
            # `a-b` + step `c` and `a` + step `b-c` share a name: say so rather than adopt.
            raise kopf.PermanentError(
                f"Task {name} already exists for {existing['spec'].get('taskId')}: "
                "rename the pipeline or the step"
            )
        owners = {o.get("uid") for o in existing["metadata"].get("ownerReferences", [])}
        if owner.uid not in owners:
            # A deleted Pipeline's Task that garbage collection has not removed yet.
            raise kopf.TemporaryError(
                f"Task {name} of a deleted Pipeline {owner.name} is still being collected",
                delay=GC_RETRY,
            )


async def pipeline_deleted(ctx: Context, body: kopf.Body) -> None:
    meta = body["metadata"]
    ref = Ref(meta["namespace"], meta["name"], meta["uid"])
    ctx.mirror.forget(ref.uid)
    await cancel_run(ctx.control, ref)


# ---- CloudRegions ----------------------------------------------------------------------------


async def reconcile_region(ctx: Context, body: kopf.Body, patch: kopf.Patch) -> None:
    """The region's worker Deployment, the namespace's latency ConfigMap, readyWorkers."""
    meta = body["metadata"]
    try:
        spec = CloudRegionSpec.model_validate(dict(body["spec"]))
    except ValidationError as e:
        raise kopf.PermanentError(f"spec: {e}") from e
    owner = m.Owner("CloudRegion", meta["name"], meta["uid"])
    await ctx.kube.apply_deployment(m.worker_deployment(owner, meta["namespace"], spec, ctx.pod))
    await refresh_latency(ctx, meta["namespace"])
    ctx.mirror.track_region(
        RegionRef(
            meta["namespace"],
            meta["name"],
            meta["uid"],
            wanted=spec.workers.replicas,
            generation=meta.get("generation"),
        )
    )


async def refresh_latency(ctx: Context, namespace: str) -> None:
    """Rebuild the latency ConfigMap from every CloudRegion now in the namespace."""
    specs: dict[str, CloudRegionSpec] = {}
    for item in await ctx.kube.list_custom("cloudregions", namespace):
        if item["metadata"].get("deletionTimestamp"):
            continue
        try:
            specs[item["metadata"]["name"]] = CloudRegionSpec.model_validate(item["spec"])
        except ValidationError as e:
            log.warning(
                "cloudregion %s left out of the latency map: %s", item["metadata"]["name"], e
            )
    await ctx.kube.apply_configmap(m.latency_configmap(namespace, specs))


async def region_deleted(ctx: Context, body: kopf.Body) -> None:
    meta = body["metadata"]
    ctx.mirror.forget_region(meta["namespace"], meta["name"])
    await refresh_latency(ctx, meta["namespace"])


# ---- kopf wiring -----------------------------------------------------------------------------


def _ctx(memo: kopf.Memo) -> Context:
    ctx: Context = memo["ctx"]
    return ctx


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf settings (see notes: our own annotation prefix from day one, bounded watches)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=m.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=m.GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{m.GROUP}/finalizer"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 30
    settings.posting.level = logging.WARNING  # our own Events say what happened
    settings.execution.max_workers = 4


def _deleted(event: kopf.RawEvent, **_: Any) -> bool:
    # Only deletions reach the event handlers (kopf logs every handled event otherwise).
    return event["type"] == "DELETED"


def registry() -> kopf.OperatorRegistry:
    """A fresh registry per operator run (no module-level state shared between runs)."""
    reg = kopf.OperatorRegistry()
    pipelines = (m.GROUP, VERSION, "pipelines")
    regions = (m.GROUP, VERSION, "cloudregions")

    @kopf.on.startup(registry=reg)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    @kopf.on.login(registry=reg)
    def _login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        return connection_info(_ctx(memo).login)

    # Stable handler ids: kopf keys its progress annotations by them.
    @kopf.on.resume(*pipelines, id="pipeline-resumed", registry=reg)
    @kopf.on.create(*pipelines, id="pipeline-created", registry=reg)
    async def _pipeline(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _handled(submit_pipeline(_ctx(memo), body, patch))

    @kopf.on.event(*pipelines, id="pipeline-gone", when=_deleted, registry=reg)
    async def _pipeline_gone(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _handled(pipeline_deleted(_ctx(memo), body))

    @kopf.on.resume(*regions, id="region-resumed", registry=reg)
    @kopf.on.create(*regions, id="region-created", registry=reg)
    @kopf.on.update(*regions, id="region-updated", registry=reg)
    async def _region(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        await _handled(reconcile_region(_ctx(memo), body, patch))

    @kopf.on.event(*regions, id="region-gone", when=_deleted, registry=reg)
    async def _region_gone(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _handled(region_deleted(_ctx(memo), body))

    return reg


async def _handled(work: Any) -> None:
    """Our errors as kopf's: unreachable or refused-for-now retries soon, the rest later."""
    try:
        await work
    except Unavailable as e:
        raise kopf.TemporaryError(str(e), delay=UNAVAILABLE_RETRY) from e
    except KubernetesError as e:
        if e.status in (400, 403, 422):
            raise kopf.PermanentError(str(e)) from e
        raise kopf.TemporaryError(str(e), delay=UNAVAILABLE_RETRY) from e
