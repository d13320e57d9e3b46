"""The worker registry: who can run steps, where, and whether they are alive.

Every function here is deterministic: the time is an argument, never read from a clock, so the
same sequence of commands yields the same registry on every replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeorch.errors import InvalidInput

#: A worker is offline once this many heartbeat intervals have passed without a heartbeat.
MISSED_HEARTBEATS_OFFLINE = 3

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_ADDRESS = 253
_MAX_LABELS = 32


class WorkerStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(slots=True)
class Worker:
    worker_id: str
    region: str
    address: str
    heartbeat_interval: float
    registered_at: float
    last_heartbeat: float
    status: WorkerStatus = WorkerStatus.ONLINE
    labels: dict[str, str] = field(default_factory=dict)
    #: Steps the worker runs at once (0: it takes none, e.g. no artifact store configured).
    slots: int = 1

    @property
    def offline_after(self) -> float:
        """Seconds of silence after which the leader marks this worker offline."""
        return MISSED_HEARTBEATS_OFFLINE * self.heartbeat_interval

    def is_expired(self, now: float) -> bool:
        return (
            self.status is WorkerStatus.ONLINE and now - self.last_heartbeat >= self.offline_after
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "region": self.region,
            "address": self.address,
            "heartbeat_interval": self.heartbeat_interval,
            "registered_at": self.registered_at,
            "last_heartbeat": self.last_heartbeat,
            "status": self.status.value,
            "labels": dict(sorted(self.labels.items())),
            "slots": self.slots,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Worker:
        return cls(
            worker_id=data["worker_id"],
            region=data["region"],
            address=data["address"],
            heartbeat_interval=float(data["heartbeat_interval"]),
            registered_at=float(data["registered_at"]),
            last_heartbeat=float(data["last_heartbeat"]),
            status=WorkerStatus(data["status"]),
            labels=dict(data.get("labels", {})),
            slots=int(data.get("slots", 1)),
        )


@dataclass(frozen=True, slots=True)
class Registration:
    """A validated registration request, ready to be replicated."""

    worker_id: str
    region: str
    address: str
    heartbeat_interval: float
    labels: dict[str, str]
    slots: int = 1


def validate_registration(
    worker_id: str,
    region: str,
    address: str,
    heartbeat_interval: float,
    labels: dict[str, str] | None = None,
    slots: int = 1,
) -> Registration:
    """Check a registration; raise InvalidInput naming the first bad field."""
    check_worker_id(worker_id)
    if not _DNS1123_LABEL.match(region) or len(region) > 63:
        raise InvalidInput("region", f"{region!r} is not a DNS-1123 label (e.g. 'aws')")
    if len(address) > _MAX_ADDRESS:
        raise InvalidInput("address", f"longer than {_MAX_ADDRESS} characters")
    if not 0.05 <= heartbeat_interval <= 3600:
        raise InvalidInput(
            "heartbeat_interval_seconds",
            f"must be between 0.05 and 3600 seconds, got {heartbeat_interval!r}",
        )
    labels = dict(labels or {})
    if len(labels) > _MAX_LABELS:
        raise InvalidInput("labels", f"at most {_MAX_LABELS} labels, got {len(labels)}")
    if not 0 <= slots <= 256:
        raise InvalidInput("slots", f"must be between 0 and 256, got {slots}")
    return Registration(worker_id, region, address, float(heartbeat_interval), labels, slots)


def check_worker_id(worker_id: str) -> None:
    if not worker_id:
        raise InvalidInput("worker_id", "is required")
    if len(worker_id) > 63 or not _DNS1123_LABEL.match(worker_id):
        raise InvalidInput(
            "worker_id",
            f"{worker_id!r} is not a DNS-1123 label "
            "(lowercase letters, digits and '-', at most 63 characters)",
        )
