"""What the operator writes to Kubernetes, as pure functions of the replicated state.

Task objects, the status of every kind, each region's worker Deployment and the latency
ConfigMap. Nothing here talks to the API server, so all of it is unit-tested without a
cluster; ``pipeorch.k8s.operator`` only sends what these functions return.

Status is built through the models of ``pipeorch.k8s.models`` (which generate the CRDs), so a
field the API server would silently drop fails here instead. Timestamps come from the state,
never from the clock, so the same state always yields the same status and the mirror can tell
"nothing changed" by comparing dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from pipeorch.core.regions import CloudRegionSpec
from pipeorch.core.runs import TERMINAL, Run, RunPhase, Task, TaskPhase, progress, started_at
from pipeorch.k8s.models import CloudRegionStatus, Condition, PipelineStatus, TaskStatus
from pipeorch.netem.rules import latency_data

GROUP = "pipeorch.dev"
API_VERSION = f"{GROUP}/v1alpha1"
#: On every Task: the Pipeline it belongs to (``kubectl get ptask -l pipeorch.dev/pipeline=X``).
PIPELINE_LABEL = f"{GROUP}/pipeline"
#: The node label of a region pool; worker pods are pinned by it.
REGION_LABEL = f"{GROUP}/region"
#: The ConfigMap the netem DaemonSet reads (see charts/.../netem.yaml), and its key.
LATENCY_CONFIGMAP = "pipeorch-latency"
LATENCY_KEY = "latency.json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "pipeorch-operator"}

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The object a child belongs to: deleting it deletes the child (garbage collection)."""

    kind: str
    name: str
    uid: str
    api_version: str = API_VERSION

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


# ---- Tasks -----------------------------------------------------------------------------------


def task_name(pipeline: str, step: str) -> str:
    """Deterministic, so that a retried or resumed handler finds the Task it made before."""
    return f"{pipeline}-{step}"


def task_manifest(owner: Owner, namespace: str, step: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {
            "name": task_name(owner.name, step),
            "namespace": namespace,
            "labels": {PIPELINE_LABEL: owner.name, **MANAGED_BY},
            "ownerReferences": [owner.reference()],
        },
        "spec": {"pipeline": owner.name, "step": step, "taskId": f"{owner.name}.{step}"},
    }


# ---- status ----------------------------------------------------------------------------------


def rfc3339(seconds: float) -> str | None:
    """Whole seconds, UTC, as Kubernetes writes its own times; None for "not yet" (0)."""
    if not seconds:
        return None
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def succeeded(status: str, reason: str, message: str, at: float) -> Condition:
    """The Succeeded condition `kubectl wait --for=condition=Succeeded` waits on."""
    return Condition.model_validate(
        {
            "type": "Succeeded",
            "status": status,
            "reason": reason,
            "message": message[:32768],
            "lastTransitionTime": rfc3339(at),
        }
    )


def _dump(model: BaseModel) -> Manifest:
    return model.model_dump(mode="json", exclude_none=True)


_TASK_FAILED = {TaskPhase.FAILED, TaskPhase.SKIPPED, TaskPhase.CANCELLED}


def task_status(task: Task) -> Manifest:
    """A Task's status from its state. The condition is Unknown until the task ends."""
    if task.phase is TaskPhase.SUCCEEDED:
        state = "True"
    elif task.phase in _TASK_FAILED:
        state = "False"
    else:
        state = "Unknown"
    changed = task.finished_at or task.started_at or task.scheduled_at or task.ready_at
    status = TaskStatus(
        phase=task.phase.value,
        region=task.region or None,
        worker=task.worker_id or None,
        attempt=task.attempt,
        message=task.message or None,
        failureClass=task.failure_class or None,
        startedAt=rfc3339(task.started_at),
        finishedAt=rfc3339(task.finished_at) if task.phase in TERMINAL else None,
        estimatedTransferSeconds=round(task.estimated_transfer_seconds, 6),
        outputs=[
            {"name": a.name, "key": a.key, "size": a.size, "sha256": a.sha256} for a in task.outputs
        ]
        or None,
        conditions=[succeeded(state, task.phase.value, task.message, changed)],
    )
    return _dump(status)


def pipeline_status(run: Run, tasks: list[Task], generation: int | None = None) -> Manifest:
    """A Pipeline's status from its run: phase, progress "done/all", times, condition."""
    if run.phase is RunPhase.SUCCEEDED:
        state = "True"
    elif run.phase is RunPhase.RUNNING:
        state = "Unknown"
    else:
        state = "False"
    status = PipelineStatus(
        phase=run.phase.value,
        progress=progress(tasks),
        message=run.message or None,
        revision=run.revision,
        observedGeneration=generation,
        startedAt=rfc3339(started_at(tasks)),
        finishedAt=rfc3339(run.finished_at),
        conditions=[
            succeeded(state, run.phase.value, run.message, run.finished_at or run.submitted_at)
        ],
    )
    return _dump(status)


def refused_status(phase: str, reason: str, message: str, now: float) -> Manifest:
    """A Pipeline the control plane did not take: Invalid (it can never run as written) or
    Pending (the name is taken by another submission)."""
    status = PipelineStatus(
        phase=phase, message=message[:32768], conditions=[succeeded("False", reason, message, now)]
    )
    return _dump(status)


def region_status(ready_workers: int, wanted: int, generation: int | None) -> Manifest:
    """Ready when every worker the region asks for is registered and online."""
    ready = ready_workers >= wanted
    condition = Condition(
        type="Ready",
        status="True" if ready else "False",
        reason="WorkersOnline" if ready else "WorkersMissing",
        message=f"{ready_workers} of {wanted} workers online",
    )
    status = CloudRegionStatus(
        readyWorkers=ready_workers, observedGeneration=generation, conditions=[condition]
    )
    return _dump(status)


# ---- regions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPodSettings:
    """How a worker pod reaches the rest of the system (the chart's service names)."""

    image: str
    control_plane: str
    store_endpoint: str
    store_secret: str
    store_bucket: str = "pipeorch"
    store_region: str = ""


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def worker_deployment_name(region: str) -> str:
    return f"pipeorch-worker-{region}"


def worker_deployment(
    owner: Owner, namespace: str, spec: CloudRegionSpec, pod: WorkerPodSettings
) -> Manifest:
    """The region's workers: pinned to its nodes, as many as ``spec.workers.replicas``."""
    region = owner.name
    labels = {"app.kubernetes.io/name": "pipeorch-worker", REGION_LABEL: region}
    secret = {"name": pod.store_secret}
    env = [
        {"name": "PIPEORCH_WORKER_REGION", "value": region},
        {"name": "PIPEORCH_WORKER_CONTROL_PLANE", "value": f'["{pod.control_plane}"]'},
        {"name": "PIPEORCH_WORKER_SLOTS", "value": str(spec.workers.slots)},
        {"name": "PIPEORCH_WORKER_STORE_ENDPOINT", "value": pod.store_endpoint},
        {"name": "PIPEORCH_WORKER_STORE_BUCKET", "value": pod.store_bucket},
        {"name": "PIPEORCH_WORKER_STATE_DIR", "value": "/tmp/state"},
        {"name": "PIPEORCH_WORKER_WORK_DIR", "value": "/tmp/work"},
        {
            "name": "PIPEORCH_WORKER_STORE_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {**secret, "key": "accessKey"}},
        },
        {
            "name": "PIPEORCH_WORKER_STORE_SECRET_KEY",
            "valueFrom": {"secretKeyRef": {**secret, "key": "secretKey"}},
        },
    ]
    if pod.store_region:
        env.append({"name": "PIPEORCH_WORKER_STORE_REGION", "value": pod.store_region})
    container = {
        "name": "worker",
        "image": spec.workers.image or pod.image,
        "env": env,
        "securityContext": RESTRICTED,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": worker_deployment_name(region),
            "namespace": namespace,
            "labels": {**labels, **MANAGED_BY},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": spec.workers.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {REGION_LABEL: region},
                    "securityContext": POD_SECURITY,
                    "automountServiceAccountToken": False,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def latency_configmap(namespace: str, regions: dict[str, CloudRegionSpec]) -> Manifest:
    """The round trips of every CloudRegion in the namespace, for the netem DaemonSet."""
    rtt = {name: dict(spec.latencyMs) for name, spec in regions.items()}
    jitter = {name: spec.jitterMs for name, spec in regions.items()}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": LATENCY_CONFIGMAP, "namespace": namespace, "labels": MANAGED_BY},
        "data": {LATENCY_KEY: latency_data(rtt, jitter)},
    }
