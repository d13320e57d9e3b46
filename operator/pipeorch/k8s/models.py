"""The Kubernetes-side models of pipeorch.dev/v1alpha1: Task and CloudRegion specs, and the
status of every kind. The Pipeline spec is ``pipeorch.core.spec.PipelineSpec`` itself.

Status models are what the operator writes; they are declared in full (the API server drops
status fields its schema does not name) and phases come from the core's own enums, so a phase
added to the task state machine changes the generated CRDs and `make crds-check` notices.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from pipeorch.core.runs import FailureClass, RunPhase, TaskPhase
from pipeorch.core.spec import DNS1123_LABEL, Name

#: A Pipeline is Pending until the control plane accepts it, Invalid when it cannot run.
PIPELINE_PHASES = ["Pending", *(p.value for p in RunPhase), "Invalid"]
TASK_PHASES = [p.value for p in TaskPhase]
FAILURE_CLASSES = [c.value for c in FailureClass]
#: What `Task.spec.taskId` looks like: ``pipeorch.core.runs.task_id`` of pipeline and step.
TASK_ID = DNS1123_LABEL[:-1] + r"\." + DNS1123_LABEL[1:]
#: metav1.Condition's reason: CamelCase, machine-readable.
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Message = Annotated[str, StringConstraints(max_length=32768)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Model):
    """A Kubernetes condition; `kubectl wait --for=condition=TYPE` reads these."""

    type: str = Field(max_length=316, description="Succeeded, Ready, ...")
    status: Literal["True", "False", "Unknown"]
    reason: str | None = Field(None, max_length=1024, pattern=CONDITION_REASON)
    message: Message | None = None
    lastTransitionTime: datetime | None = None
    observedGeneration: int | None = Field(None, ge=0)


Conditions = list[Condition]


def _phase(values: list[str], description: str) -> Any:
    # A Field whose JSON schema lists the allowed values without a Literal type (the values
    # are the core's enums, known only at import time).
    allowed: list[JsonValue] = list(values)
    return Field(None, description=description, json_schema_extra={"enum": allowed})


class PipelineStatus(_Model):
    phase: str | None = _phase(PIPELINE_PHASES, "Where the pipeline is; Invalid names why.")
    progress: str | None = Field(
        None, pattern=r"^[0-9]+/[0-9]+$", description="Succeeded steps / all steps, as 3/7."
    )
    message: Message | None = None
    revision: int | None = Field(
        None, ge=0, description="The run's revision in the replicated state last mirrored here."
    )
    observedGeneration: int | None = Field(None, ge=0)
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    conditions: Conditions | None = None


class TaskSpec(_Model):
    """Written by the operator from its Pipeline; never changed afterwards."""

    pipeline: Name = Field(description="The Pipeline this task is a step of.")
    step: Name = Field(description="The step's name in the Pipeline.")
    taskId: str = Field(
        max_length=127, pattern=TASK_ID, description="The id in the replicated state."
    )


class TaskOutput(_Model):
    """An artifact the committed attempt wrote (the data stays in the object store)."""

    name: str = Field(max_length=128)
    key: str = Field(max_length=1024, description="Object key in the artifact store.")
    size: int = Field(ge=0, description="Bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TaskStatus(_Model):
    phase: str | None = _phase(TASK_PHASES, "The task's phase in the replicated state.")
    region: str | None = Field(None, max_length=63)
    worker: str | None = Field(None, max_length=253)
    attempt: int | None = Field(None, ge=0)
    message: Message | None = None
    failureClass: str | None = _phase(
        FAILURE_CLASSES, "What the last failure was: application or infrastructure."
    )
    startedAt: datetime | None = None
    finishedAt: datetime | None = None
    estimatedTransferSeconds: float | None = Field(
        None, ge=0, description="Placement's estimate of the time to fetch the inputs."
    )
    outputs: list[TaskOutput] | None = Field(None, max_length=1024)
    observedGeneration: int | None = Field(None, ge=0)
    conditions: Conditions | None = None


class CloudRegionStatus(_Model):
    readyWorkers: int | None = Field(None, ge=0, description="Workers registered and online.")
    observedGeneration: int | None = Field(None, ge=0)
    conditions: Conditions | None = None
