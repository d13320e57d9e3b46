"""One settings object per process, every field documented.

Values come from keyword arguments (the CLI passes its flags), then ``PIPEORCH_*`` environment
variables, then the defaults below. The Raft timing defaults are sized for a worst cross-region
round trip of 125 ms; the validators enforce pysyncobj's own rules (``SyncObjConf.validate``) and
ours, so a bad combination fails at start-up with a message instead of an assertion deep inside
the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeorch.errors import ConfigError


def _host_port(value: str) -> str:
    """HOST:PORT; port 0 is allowed (a listen address on a port the system picks)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]


class RaftTiming(BaseSettings):
    """Raft timing. See the README's "Raft timing" section for the measurements behind them."""

    model_config = SettingsConfigDict(env_prefix="PIPEORCH_RAFT_", extra="forbid")

    append_entries_period: float = Field(
        0.1,
        gt=0,
        description="Seconds between leader heartbeats (AppendEntries with no new entries).",
    )
    tick_period: float = Field(
        0.01,
        gt=0,
        description="Longest time between two Raft ticks when no event comes (a replica ticks "
        "on its event loop). Election deadlines are checked once per tick: pysyncobj's 50 ms "
        "lets two followers time out in the same tick and split the vote about one election in "
        "ten, adding a whole election timeout. Also how long a leader waits for a next entry to "
        "carry a new commit index to the followers before sending it on its own.",
    )
    min_timeout: float = Field(
        1.0,
        description="Shortest election timeout in seconds: a follower that hears nothing from "
        "the leader for this long (plus a random share of max-min) starts an election. Must "
        "exceed 3 heartbeat periods and several worst round trips (125 ms by default): a "
        "candidate waits (1 + its rank among the members) x min_timeout/4 for its votes.",
    )
    max_timeout: float = Field(
        2.0, description="Longest election timeout in seconds; the spread avoids split votes."
    )
    connection_timeout: float = Field(
        2.5,
        description="Seconds without traffic after which a peer connection is considered dead. "
        "pysyncobj requires it to be at least max_timeout.",
    )
    connection_retry: float = Field(
        0.2,
        gt=0,
        description="Seconds between attempts to redial a lost peer (pysyncobj's default of 5 s "
        "slows a restarted replica's return).",
    )
    leader_fallback_timeout: float = Field(
        2.5,
        description="A leader that has not heard from a majority for this long steps down. "
        "pysyncobj's default of 30 s would leave a cut-off leader running leader-only work.",
    )
    dns_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a peer's resolved IP is trusted (a restarted pod may get a new IP).",
    )
    buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=65536,
        description="Socket send/receive buffers; pysyncobj's 64 KiB disables Linux autotuning "
        "and throttles a WAN link.",
    )
    write_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a write may wait to commit before the caller is told UNAVAILABLE. "
        "The write may still commit later: every command is idempotent.",
    )
    batching: Literal["group", "pysyncobj"] = Field(
        "group",
        description="'group': each batch is sent at once (pysyncobj's unbatched mode) and writes "
        "that arrive meanwhile share the next batch; a lone write costs one round trip. "
        "'pysyncobj': the library's own batching, which holds writes until the next heartbeat "
        "(about append_entries_period per write); kept for comparison in the benchmarks.",
    )
    quorum_first: bool = Field(
        True,
        description="The leader sends each new entry at once only to the fastest followers that "
        "make a majority with it (one of two); the others get theirs joined, a tick_period "
        "later. A write still commits in one round trip to the nearest follower, and the spare "
        "follower's work per entry moves off the moment a write is answered. A quorum follower "
        "that stops answering is replaced by a spare (see raft/pacing.py).",
    )
    max_inflight_batches: int = Field(
        2,
        ge=1,
        le=64,
        description="Command batches proposed but not yet committed. A lone write is proposed at "
        "once (one round trip); writes that arrive meanwhile are grouped into the next batch.",
    )

    @model_validator(mode="after")
    def _pysyncobj_rules(self) -> RaftTiming:
        if self.min_timeout <= 3 * self.append_entries_period:
            raise ValueError(
                f"min_timeout ({self.min_timeout}) must exceed 3 x append_entries_period "
                f"({3 * self.append_entries_period}): followers would time out between heartbeats"
            )
        if self.max_timeout <= self.min_timeout:
            raise ValueError(
                f"max_timeout ({self.max_timeout}) must exceed min_timeout ({self.min_timeout})"
            )
        if self.connection_timeout < self.max_timeout:
            raise ValueError(
                f"connection_timeout ({self.connection_timeout}) must be at least max_timeout "
                f"({self.max_timeout})"
            )
        if self.tick_period >= self.append_entries_period:
            raise ValueError(
                f"tick_period ({self.tick_period}) must be shorter than append_entries_period "
                f"({self.append_entries_period})"
            )
        if self.leader_fallback_timeout <= self.append_entries_period:
            raise ValueError("leader_fallback_timeout must exceed append_entries_period")
        return self


class KubernetesSettings(BaseSettings):
    """The operator: kopf on the Raft leader, turning the pipeorch.dev resources into replicated
    state and mirroring that state back into their status. Off unless `enabled`."""

    model_config = SettingsConfigDict(env_prefix="PIPEORCH_K8S_", extra="forbid")

    enabled: bool = Field(
        False,
        description="Run the operator on whichever replica leads the Raft group. Off, the "
        "control plane never talks to Kubernetes (local mode without a cluster).",
    )
    kubeconfig: Path | None = Field(
        None,
        description="Kubeconfig to reach the API server with; unset: the pod's service "
        "account inside a cluster, else $KUBECONFIG or ~/.kube/config.",
    )
    namespace: str | None = Field(
        None,
        description="Watch only this namespace (the chart's Role is namespaced); unset: all "
        "namespaces (needs cluster-wide rights).",
    )
    worker_image: str = Field(
        "pipeorch/worker:dev", description="Worker image when a CloudRegion names none."
    )
    control_plane_service: str = Field(
        "pipeorch-control-plane:7100",
        description="HOST:PORT at which a worker pod reaches the control plane's gRPC.",
    )
    store_endpoint: str = Field(
        "pipeorch-minio:9000", description="HOST:PORT at which a worker pod reaches MinIO."
    )
    store_secret: str = Field(
        "pipeorch-minio",
        description="Secret with the worker pods' store credentials (keys accessKey and "
        "secretKey).",
    )
    store_bucket: str = Field("pipeorch", description="The worker pods' artifact bucket.")
    mirror_period: float = Field(
        1.0,
        gt=0,
        description="Longest wait of the status mirror between two looks at the replicated "
        "state; applied changes wake it sooner.",
    )


class ControlPlaneSettings(BaseSettings):
    """A control-plane replica: one Raft node, its gRPC server and its HTTP server."""

    model_config = SettingsConfigDict(env_prefix="PIPEORCH_", extra="forbid")

    node_id: str = Field(description="This replica's name; a key of `members` (e.g. 'cp-0').")
    members: dict[str, HostPort] = Field(
        description="Every replica's Raft identity address, by node id, this one included. "
        "The identity is also where peers dial, unless `dial` overrides it. Same on every replica."
    )
    dial: dict[str, HostPort] = Field(
        default_factory=dict,
        description="Node id -> address to dial that peer at, when it differs from its identity "
        "(a latency gateway in between). Only the side that dials uses it.",
    )
    region: str = Field("local", description="The region this replica runs in (informational).")
    grpc_listen: HostPort = Field("127.0.0.1:7100", description="gRPC server address.")
    http_listen: HostPort = Field("127.0.0.1:7200", description="HTTP server address.")
    data_dir: Path = Field(
        Path("./data"),
        description="Directory for the Raft journal and full dump (both are always written).",
    )
    raft_password: SecretStr | None = Field(
        None,
        description="Shared secret that encrypts Raft traffic (pysyncobj pickles its messages: "
        "anyone who can reach the port unauthenticated could inject state).",
    )
    raft_password_file: Path | None = Field(
        None, description="File holding the Raft password; wins over `raft_password`."
    )
    raft: RaftTiming = Field(default_factory=RaftTiming, description="Raft timing and batching.")
    task_lease: float = Field(
        15.0,
        gt=0,
        description="Seconds a worker holds a task without renewing it (heartbeats renew). A "
        "worker that stops renewing loses the task back to Ready (infrastructure failure).",
    )
    scheduler_tick: float = Field(
        0.1,
        gt=0,
        description="Waiting AcquireTask calls re-plan on every applied change and at least "
        "this often (for retry backoffs); the leader checks task leases as often.",
    )
    latency_ms: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Round trips between regions, `{region: {other: ms}}` (the CloudRegion "
        "`latencyMs`); placement uses them to run steps near their inputs.",
    )
    bandwidth_mbps: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Bandwidth between regions, `{region: {other: Mbit/s}}`."
    )
    store_endpoint: str | None = Field(
        None,
        description="The artifact store's HOST:PORT, checked by /healthz (the control plane "
        "never reads artifacts; it holds no store credentials).",
    )
    liveness_check_period: float = Field(
        0.25, gt=0, description="How often the leader looks for workers that missed heartbeats."
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings, description="The operator (off by default)."
    )
    log_json: bool = Field(False, description="Log one JSON object per line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")

    @model_validator(mode="after")
    def _membership(self) -> ControlPlaneSettings:
        if self.node_id not in self.members:
            raise ValueError(
                f"node_id {self.node_id!r} is not one of members {sorted(self.members)}"
            )
        unknown = set(self.dial) - set(self.members)
        if unknown:
            raise ValueError(f"dial names unknown members: {sorted(unknown)}")
        if len(set(self.members.values())) != len(self.members):
            raise ValueError("two members share one identity address")
        return self

    @property
    def raft_address(self) -> str:
        return self.members[self.node_id]

    def password(self) -> str | None:
        if self.raft_password_file is not None:
            try:
                return self.raft_password_file.read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"cannot read raft_password_file: {e}") from e
        return self.raft_password.get_secret_value() if self.raft_password else None


class WorkerSettings(BaseSettings):
    """A worker agent."""

    model_config = SettingsConfigDict(env_prefix="PIPEORCH_WORKER_", extra="forbid")

    worker_id: str | None = Field(
        None,
        description="Stable id; when unset, one is generated on first start and kept in "
        "`state_dir`, so a restarted worker re-registers under the same id.",
    )
    region: str = Field("local", description="Region the worker runs in.")
    control_plane: list[HostPort] = Field(
        description="gRPC addresses of the control-plane replicas, nearest first. The worker "
        "fails over to the next one when its replica stops answering."
    )
    heartbeat_interval: float = Field(
        1.0, ge=0.05, le=3600, description="Seconds between heartbeats."
    )
    rpc_timeout: float = Field(
        3.0, gt=0, description="Seconds before an RPC to a replica is abandoned for the next one."
    )
    http_listen: HostPort = Field("127.0.0.1:0", description="HTTP (/healthz) address.")
    state_dir: Path = Field(Path("./worker-state"), description="Where the worker id is kept.")
    slots: int = Field(1, ge=0, le=256, description="Steps run at once.")
    warm_step_hosts: bool = Field(
        True,
        description="Run `run:` steps in warm interpreters, one per slot, started at worker start "
        "as a prefork pool is, instead of a fresh interpreter per attempt (about 90 ms of CPU "
        "each). As in Celery, Dask and Ray, what a "
        "step leaves in its interpreter persists; a step module that changed on disk is "
        "re-imported in a fresh one.",
    )
    acquire_wait: float = Field(
        20.0, gt=0, le=30, description="Seconds one AcquireTask long-poll may wait."
    )
    store_endpoint: str | None = Field(
        None,
        description="S3/MinIO endpoint HOST:PORT for artifacts. Without one the worker takes "
        "no tasks (it registers with 0 slots).",
    )
    store_access_key: SecretStr | None = Field(None, description="Object store access key.")
    store_secret_key: SecretStr | None = Field(None, description="Object store secret key.")
    store_bucket: str = Field("pipeorch", description="Bucket for artifacts and logs.")
    store_secure: bool = Field(False, description="Use HTTPS to reach the object store.")
    store_region: str | None = Field(
        None, description="Region the object store is in (default: the worker's region)."
    )
    work_dir: Path = Field(Path("./worker-work"), description="Scratch space, one dir per attempt.")
    code_path: list[Path] = Field(
        default_factory=list,
        description="Directories put on PYTHONPATH for steps (where `run:` callables live).",
    )
    log_json: bool = Field(False, description="Log one JSON object per line.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
