"""RaftNode: the replicated state of one control-plane replica, behind a typed facade.

Callers hand in pure commands (``pipeorch.core.state``) and get their results back once the
command is committed and applied on *this* replica (read-your-writes). Reads see the state as
applied here. Everything pysyncobj-specific stays in this package.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, TypeVar

from pysyncobj import SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode

from pipeorch.core import state as core
from pipeorch.errors import ConfigError, InvalidInput, Unavailable
from pipeorch.raft import cipher, ticker, wire
from pipeorch.raft.commit import (
    ENTRY_CHUNK_BYTES,
    MAX_BATCH_COMMANDS,
    MAX_COMMAND_BYTES,
    GroupCommitter,
)
from pipeorch.raft.guard import GuardedSyncObj
from pipeorch.settings import ControlPlaneSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# pysyncobj hooks: cheaper message framing and a poller that an event loop can watch (both
# wire-compatible with an unhooked replica), and AES-GCM in place of Fernet (which is not).
wire.install()
ticker.install()
cipher.install()

_STATE_NAMES = {0: "follower", 1: "candidate", 2: "leader"}
_FAILURES = {
    FAIL_REASON.QUEUE_FULL: "the command queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader is elected",
    FAIL_REASON.DISCARDED: "a new leader discarded the write",
    FAIL_REASON.NOT_LEADER: "the leader changed before the write committed",
    FAIL_REASON.LEADER_CHANGED: "the leader changed before the write committed",
    FAIL_REASON.REQUEST_DENIED: "the write was refused",
    FAIL_REASON.UNKNOWN_OUTCOME: "the write's outcome is unknown",
}


class DialNode(TCPNode):  # type: ignore[misc]
    """A peer whose identity is ``address`` but which is dialled at ``dial`` (a proxy).

    pysyncobj uses the address string both as the node's identity (compared, exchanged in the
    handshake) and as where to connect; only ``ip`` and ``port`` are used to connect, so those
    are the only ones redirected.
    """

    def __init__(self, address: str, dial: str) -> None:
        super().__init__(address)
        host, port = dial.rsplit(":", 1)
        self._dial_host = host
        self._dial_port = int(port)

    @property
    def ip(self) -> str:
        return str(globalDnsResolver().resolve(self._dial_host))

    @property
    def port(self) -> int:
        return self._dial_port


class _Machine(SyncObjConsumer):  # type: ignore[misc]
    """The pysyncobj consumer that owns the core state: one replicated method.

    Versioning happens at two levels. Commands carry versioned names (``worker.register/1``)
    and a changed behaviour is a new name, so an old journal replays exactly. Should the batch
    method itself ever change, the new body is added as ``@replicated(ver=1)`` beside this one
    and switched on cluster-wide with ``setCodeVersion(1)`` once every replica runs the new
    code; pysyncobj enables a method version only from that switch on.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.state = core.State()
        self.listeners: list[Callable[[], None]] = []

    @replicated(ver=0)  # type: ignore[untyped-decorator]
    def apply_batch(self, commands: list[core.Command]) -> list[Any]:
        with self.lock:
            results = core.apply_batch(self.state, commands)
        for listener in self.listeners:
            listener()
        return results

    # Dumps hold plain data, not pickled classes, so renaming a class never breaks a dump.
    def _serialize(self) -> dict[str, Any]:
        with self.lock:
            return {"state": self.state.to_dict()}

    def _deserialize(self, data: dict[str, Any]) -> None:
        with self.lock:
            self.state = core.State.from_dict(data["state"])


@dataclass(frozen=True)
class PeerStatus:
    node_id: str
    address: str
    connected: bool
    match_index: int


@dataclass(frozen=True)
class RaftStatus:
    node_id: str
    address: str
    state: str
    leader_id: str | None
    leader_address: str | None
    term: int
    commit_index: int
    applied_index: int
    leader_commit_index: int
    has_quorum: bool
    ready: bool
    peers: tuple[PeerStatus, ...]
    revision: int
    digest: str
    stale_appends_neutralised: int
    applied_truncations: int

    @property
    def is_leader(self) -> bool:
        return self.state == "leader"

    def caught_up(self, max_lag: int = 100) -> bool:
        """Ready for traffic: initially synced, a leader known, a majority reachable, and the
        applied index within ``max_lag`` entries of the leader's commit index."""
        return (
            self.ready
            and self.leader_address is not None
            and self.has_quorum
            and self.leader_commit_index - self.applied_index <= max_lag
        )


class RaftNode:
    """One replica's Raft node. Thread-safe; async helpers for asyncio callers."""

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        observe_commit: Callable[[float, int], None] = lambda seconds, size: None,
        on_state_change: Callable[[str], None] = lambda state: None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """With ``loop`` (called on that loop's thread) the node does all its work, callbacks
        included, on that loop (see ``raft/ticker.py``); without, on pysyncobj's own thread."""
        self._settings = settings
        self._timing = settings.raft
        self._on_state_change = on_state_change
        self._ids_by_address = {addr: node_id for node_id, addr in settings.members.items()}
        self.elections = 0
        self._last_leader: str | None = None
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._machine = _Machine()
        on_loop = loop is not None and ticker.SUPPORTED
        try:
            self._syncobj = GuardedSyncObj(
                self._self_bind_node(),
                self._partner_nodes(),
                self._conf(on_loop),
                consumers=[self._machine],
                quorum_first=self._timing.quorum_first,
            )
        except SyncObjException as e:  # raised when the Raft address cannot be bound
            raise ConfigError(
                f"cannot listen for Raft on {settings.raft_address}: {e} (is the port in use?)"
            ) from e
        self._destroyed = False
        self._ticker: ticker.LoopTicker | None = None
        if on_loop:
            assert loop is not None
            self._ticker = ticker.LoopTicker(self._syncobj, loop, self._timing.tick_period)
            self._ticker.start()
        self._committer = GroupCommitter(
            self._propose,
            max_inflight=self._timing.max_inflight_batches,
            stuck_after=self._timing.write_timeout,
            describe_failure=self._failure,
            observe_commit=observe_commit,
        )

    # ---- construction ---------------------------------------------------------------------

    def _self_bind_node(self) -> str:
        return self._settings.raft_address

    def _partner_nodes(self) -> list[TCPNode]:
        nodes = []
        for node_id, address in sorted(self._settings.members.items()):
            if node_id == self._settings.node_id:
                continue
            dial = self._settings.dial.get(node_id)
            nodes.append(DialNode(address, dial) if dial else TCPNode(address))
        return nodes

    def _conf(self, on_loop: bool) -> SyncObjConf:
        timing = self._timing
        data = self._settings.data_dir
        host = self._settings.raft_address.rsplit(":", 1)[0]
        conf = SyncObjConf(
            password=self._settings.password(),
            # Unbatched: each proposal is sent at once; GroupCommitter does the batching.
            appendEntriesUseBatch=timing.batching == "pysyncobj",
            appendEntriesPeriod=timing.append_entries_period,
            # Far above any entry GroupCommitter builds: pysyncobj's chunked transfer of larger
            # entries is broken (see raft/commit.py).
            appendEntriesBatchSizeBytes=ENTRY_CHUNK_BYTES,
            autoTick=not on_loop,
            pollerType=ticker.EPOLL if on_loop else "auto",
            # Ticked by the loop, the constructor binds, retrying at once until it succeeds:
            # a port in use must fail it, not spin it. (Its own thread retries every second.)
            maxBindRetries=1 if on_loop else 0,
            autoTickPeriod=timing.tick_period,
            raftMinTimeout=timing.min_timeout,
            raftMaxTimeout=timing.max_timeout,
            connectionTimeout=timing.connection_timeout,
            connectionRetryTime=timing.connection_retry,
            leaderFallbackTimeout=timing.leader_fallback_timeout,
            dnsCacheTime=timing.dns_cache_seconds,
            dnsFailCacheTime=min(timing.dns_cache_seconds, 1.0),
            sendBufferSize=timing.buffer_bytes,
            recvBufferSize=timing.buffer_bytes,
            # Both files, always: with a journal alone, compaction keeps the snapshot only in
            # memory and a restarted replica comes back empty.
            journalFile=str(data / "raft.journal"),
            fullDumpFile=str(data / "raft.dump"),
            # Forking a process that runs gRPC threads is unsafe; the state is small.
            useFork=False,
            dynamicMembershipChange=False,
            onStateChanged=self._state_changed,
            bindAddress=self._settings.raft_address if _is_ip(host) else None,
        )
        conf.validate()
        return conf

    # ---- writes ---------------------------------------------------------------------------

    def submit(self, command: core.Command) -> Future[Any]:
        """Propose a command; the future resolves once it is applied here."""
        size = _checked_size(command)
        return self._unless_no_quorum() or self._committer.submit(command, size)

    def submit_all(self, commands: list[core.Command]) -> Future[list[Any]]:
        """Propose commands to commit together, in order, in one entry; the future resolves to
        their results once applied here. Together they are held to one command's size limit."""
        if len(commands) > MAX_BATCH_COMMANDS:
            raise InvalidInput("commands", f"at most {MAX_BATCH_COMMANDS} in one write")
        size = sum(_checked_size(c) for c in commands)
        if size > MAX_COMMAND_BYTES:
            raise InvalidInput(
                "commands", f"{size} bytes together, over the {MAX_COMMAND_BYTES}-byte limit"
            )
        return self._unless_no_quorum() or self._committer.submit_all(commands, size)

    def _unless_no_quorum(self) -> Future[Any] | None:
        """A failed future when this replica cannot reach a majority, else None."""
        if self._quorum_reachable():
            return None
        failed: Future[Any] = Future()
        failed.set_exception(
            Unavailable("no quorum: this replica cannot reach a majority", self.last_leader())
        )
        return failed

    def write(self, command: core.Command, timeout: float | None = None) -> Any:
        """Propose and wait (blocking). Raises Unavailable if not committed in time. Not on
        the loop that drives this node: that loop commits the write, so use ``awrite``."""
        if self._ticker is not None and self._ticker.on_loop_thread():
            raise RuntimeError("RaftNode.write would block the loop that commits it: use awrite")
        future = self.submit(command)
        wait = self._timing.write_timeout if timeout is None else timeout
        try:
            return future.result(wait)
        except FutureTimeout as e:
            raise Unavailable(f"write not committed within {wait:g}s", self.last_leader()) from e

    async def awrite(
        self,
        command: core.Command,
        timeout: float | None = None,
        on_applied: Callable[[Any], None] | None = None,
    ) -> Any:
        """Propose and wait without blocking the event loop. ``on_applied`` is called with the
        result where the command is applied (see ``on_apply``), before the awaiting coroutine
        resumes: for a hand-over that must not wait for that coroutine's turn of the loop."""
        future = self.submit(command)
        if on_applied is not None:
            future.add_done_callback(functools.partial(_call_if_applied, on_applied))
        return await self._await(future, timeout)

    async def awrite_all(
        self, commands: list[core.Command], timeout: float | None = None
    ) -> list[Any]:
        """``submit_all`` without blocking the event loop: one future and one wake-up for
        all the commands."""
        results: list[Any] = await self._await(self.submit_all(commands), timeout)
        return results

    async def _await(self, future: Future[Any], timeout: float | None) -> Any:
        wait = self._timing.write_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                if self._ticker is not None and self._ticker.drives_running_loop():
                    return await self._ticker.follow(future)
                # Another loop (the operator's thread): its own hand-over.
                return await asyncio.wrap_future(future)
        except TimeoutError as e:
            raise Unavailable(f"write not committed within {wait:g}s", self.last_leader()) from e

    def _propose(self, commands: list[core.Command], callback: Callable[[Any, int], None]) -> None:
        self._machine.apply_batch(commands, callback=callback)

    def _failure(self, code: int) -> Unavailable:
        reason = _FAILURES.get(code, f"pysyncobj failure {code}")
        return Unavailable(f"write not committed: {reason}", self.last_leader())

    # ---- reads ----------------------------------------------------------------------------

    def on_apply(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every applied batch, where pysyncobj ticks (its thread, or
        the loop given to the node): it must not block (hand over with
        ``loop.call_soon_threadsafe``)."""
        self._machine.listeners.append(listener)

    def read(self, query: Callable[[core.State], T]) -> T:
        """Run ``query`` against the state as applied on this replica."""
        with self._machine.lock:
            return query(self._machine.state)

    def status(self, with_digest: bool = False) -> RaftStatus:
        """This replica's Raft view. ``with_digest`` also hashes the whole state (under the
        apply lock, so only the views that compare replicas ask for it); else digest is ""."""
        raw = self._raw_status()
        leader = raw.get("leader")
        leader_address = leader.address if leader is not None else None
        if leader_address:
            self._last_leader = leader_address
        peers = []
        for node_id, address in sorted(self._settings.members.items()):
            if node_id == self._settings.node_id:
                continue
            peers.append(
                PeerStatus(
                    node_id=node_id,
                    address=address,
                    connected=raw.get(f"partner_node_status_server_{address}", 0) == 2,
                    match_index=int(raw.get(f"match_idx_server_{address}", 0)),
                )
            )
        revision, digest = self.read(lambda s: (s.revision, s.digest() if with_digest else ""))
        return RaftStatus(
            node_id=self._settings.node_id,
            address=self._settings.raft_address,
            state=_STATE_NAMES.get(raw["state"], str(raw["state"])),
            leader_id=self._ids_by_address.get(leader_address) if leader_address else None,
            leader_address=leader_address,
            term=int(raw["raft_term"]),
            commit_index=int(raw["commit_idx"]),
            applied_index=int(raw["last_applied"]),
            leader_commit_index=int(raw["leader_commit_idx"] or 0),
            has_quorum=bool(raw["has_quorum"]),
            ready=bool(self._syncobj.isReady()),
            peers=tuple(peers),
            revision=revision,
            digest=digest,
            stale_appends_neutralised=self._syncobj.stale_appends_neutralised,
            applied_truncations=self._syncobj.applied_truncations,
        )

    def _raw_status(self) -> dict[str, Any]:
        # getStatus() walks dicts that the tick thread mutates; a concurrent change makes it
        # raise, and a second look a moment later succeeds.
        for _ in range(20):
            try:
                return dict(self._syncobj.getStatus())
            except RuntimeError:
                time.sleep(0.001)
        return dict(self._syncobj.getStatus())

    def is_leader(self) -> bool:
        return bool(self._syncobj._isLeader())

    def is_settled_leader(self) -> bool:
        """Leads, and its state holds every write committed before it led (see
        ``GuardedSyncObj.is_settled_leader``): for work that trusts what the state lacks."""
        return self._syncobj.is_settled_leader()

    def last_leader(self) -> str | None:
        leader = self._syncobj._getLeader()
        if leader is not None:
            self._last_leader = leader.address
        if self._last_leader is None:
            return None
        return self._ids_by_address.get(self._last_leader, self._last_leader)

    def _quorum_reachable(self) -> bool:
        try:
            return bool(self._syncobj.hasQuorum)
        except RuntimeError:  # the connected-set changed under us: assume yes, the write decides
            return True

    def is_caught_up(self, max_lag: int = 100) -> bool:
        return self.status().caught_up(max_lag)

    # ---- lifecycle ------------------------------------------------------------------------

    def _state_changed(self, old: int, new: int) -> None:
        # Runs where pysyncobj ticks (its thread, or the loop): record and hand over, never
        # block.
        if new == 1:
            self.elections += 1
        name = _STATE_NAMES.get(new, str(new))
        log.info("raft state %s -> %s", _STATE_NAMES.get(old, old), name)
        self._on_state_change(name)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_caught_up():
                return True
            time.sleep(0.05)
        return False

    def destroy(self) -> None:
        """Stop the node and close its sockets. Idempotent."""
        if self._destroyed:
            return
        self._destroyed = True
        if self._ticker is not None:
            self._ticker.stop()
        self._syncobj.destroy()
        if self._ticker is not None:
            self._ticker.close()


def _call_if_applied(callback: Callable[[Any], None], done: Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        callback(done.result())


def _checked_size(command: core.Command) -> int:
    """The command's pickled size, which must be within one replicated write's limit."""
    size = len(pickle.dumps(command, protocol=2))
    if size > MAX_COMMAND_BYTES:
        raise InvalidInput(
            command[0],
            f"command is {size} bytes, over the {MAX_COMMAND_BYTES}-byte limit of one "
            "replicated write: large data belongs in the artifact store",
        )
    return size


def _is_ip(host: str) -> bool:
    try:
        ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
