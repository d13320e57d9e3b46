"""The project's small, typed error hierarchy.

Adapters (Raft, gRPC, HTTP, Kubernetes, object storage) translate the errors of the libraries they
wrap into these, with ``raise ... from e``, so callers handle one vocabulary.
"""

from __future__ import annotations


class PipeorchError(Exception):
    """Base class of every error the project raises on purpose."""


class InvalidInput(PipeorchError):
    """Input that can never succeed as given. ``field`` names the offending field path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(PipeorchError):
    """A named object (worker, pipeline, task) does not exist."""


class Conflict(PipeorchError):
    """The request contradicts the current state (e.g. a name taken by another submission)."""


class Unavailable(PipeorchError):
    """The replicated state cannot be written or read right now (no quorum, no leader).

    ``leader`` is the last leader this replica knew of, so a client can say where to look.
    """

    def __init__(self, message: str, leader: str | None = None) -> None:
        hint = f" (last known leader: {leader})" if leader else " (no leader known)"
        super().__init__(message + hint)
        self.leader = leader


class ConfigError(PipeorchError):
    """Settings that cannot work together."""


class GatewayError(PipeorchError):
    """The local latency gateway (toxiproxy) could not be started or refused a change."""


class KubernetesError(PipeorchError):
    """The Kubernetes API server refused a request or could not be reached.

    ``status`` is the HTTP status when there was an answer (0 when there was none)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
