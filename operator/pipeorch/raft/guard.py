"""A pysyncobj SyncObj that never truncates its log without a term conflict, whose peer links
never go stale, whose split votes are retried sooner, and whose leader sends new entries to a
quorum first (``raft/pacing.py``).

**Idle links.** pysyncobj drops a connection that has *received* nothing for
``connectionTimeout`` at the moment something is *sent* on it, and the message is lost.
Follower-to-follower links carry no Raft traffic, so after a quiet spell the first vote request
of an election vanished and the election took one more timeout (seen as 2.5-3.6 s failovers
instead of 1-2 s). ``GuardedSyncObj`` sends every peer a tiny keepalive a few times per
``connectionTimeout`` and swallows the ones it receives.

**Split votes.** When the leader dies, both survivors may time out within one vote's trip of each
other, each vote for itself, and neither win. pysyncobj then has each wait a new election
timeout, drawn from the follower's range, before trying again: a whole timeout more (1 to 2 s
at the defaults; a failover took 2.7-3.2 s instead of 1.1-1.8 in about one kill in ten through
the regions). A candidate here waits for its votes ``(1 + rank) * min/4``, plus up to ``min/8`` at
random, ``rank`` being its place among the members' ids. ``min/4`` is a few worst round trips,
as the timing rules size ``min``: the votes have time to come back, and after a split the
survivors retry a quarter of ``min`` apart, so the first one's request has reached the other
before that one retries. A split then costs a quarter to three quarters of ``min``.

**Truncation.**
pysyncobj 0.3.17 handles an AppendEntries whose ``prevLogIdx`` is older than the follower's last
entry by deleting *every* entry after ``prevLogIdx`` (the ``len(prevEntries) > 1`` branch of
``SyncObj.__onMessageReceived``), including entries the follower has acknowledged and applied.
Such a message is routine: a reordered or stale AppendEntries after the leader moved its
``nextIndex`` back. Raft's rule (Figure 2, receiver step 3) is narrower: delete an existing entry
only if it *conflicts* with a new one (same index, different term), and everything after it.

``GuardedSyncObj`` rewrites each AppendEntries before the library sees it:

* entries the follower already holds with the same term are dropped from the message, and the
  message is re-anchored at the last of them, so the library's truncation branch is never taken;
* if every entry is already held, the message becomes a heartbeat (leader, term, commit index
  capped at the last entry the message vouches for) and the success reply, naming the index after
  the message's last entry, is sent here, as Raft prescribes;
* a genuine conflict is re-anchored just before the first conflicting entry, so the library
  deletes exactly what Raft deletes. If that would remove an applied entry (impossible in a
  correct Raft run) it is counted in ``applied_truncations``, which must stay zero.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from pysyncobj import SyncObj
from pysyncobj.pickle import loads as pickle_loads
from pysyncobj.syncobj import _RAFT_STATE

from pipeorch.raft.pacing import FollowerPacing

log = logging.getLogger(__name__)

Entry = tuple[bytes, int, int]  # (command, index, term)
KEEPALIVE = "pipeorch.keepalive"


class GuardedSyncObj(SyncObj):  # type: ignore[misc]
    """SyncObj whose follower side deletes log entries only on a term conflict.

    With ``quorum_first`` the leader sends new entries at once only to the followers a
    majority needs, and the others theirs a tick period later (see ``raft/pacing.py``)."""

    def __init__(self, *args: Any, quorum_first: bool = True, **kwargs: Any) -> None:
        #: Stale AppendEntries that would have truncated the log and were neutralised.
        self.stale_appends_neutralised = 0
        #: Truncations of already-applied entries that still happened. Must stay zero.
        self.applied_truncations = 0
        super().__init__(*args, **kwargs)
        self._keepalive_every = self.conf.connectionTimeout / 4
        self._next_keepalive = 0.0
        self.addOnTickCallback(self._send_keepalives)
        #: When the followers must hear of the latest commit index, if no entry tells them.
        self._commit_news_due = 0.0
        self.addOnTickCallback(self._send_commit_news)
        #: Log indexes of writes that followers forwarded here and wait to see committed.
        self._forwarded: list[tuple[int, Any]] = []
        #: Followers that forwarded a write: whatever AppendEntries tells them it committed goes
        #: out at once, never held (they answer their callers only then).
        self._awaiting_news: set[Any] = set()
        transport = self._SyncObj__transport
        self._library_send = transport.send
        transport.send = self._send
        #: Which AppendEntries go out at once and which wait (None: all at once).
        self.pacing = FollowerPacing(hold=self.conf.autoTickPeriod) if quorum_first else None
        self.addOnTickCallback(self._pace)
        #: The term of this node's latest candidacy, and its place among the members' ids (see
        #: ``_hasten_candidacy``).
        self._candidacy_term: int | None = None
        ids = sorted(n.id for n in (self._SyncObj__selfNode, *self._SyncObj__otherNodes) if n)
        self._rank = ids.index(self._SyncObj__selfNode.id) if self._SyncObj__selfNode else 0
        self.addOnTickCallback(self._hasten_candidacy)

    def is_settled_leader(self) -> bool:
        """Leads and has applied the no-op that opened its term, so its state holds every
        write committed before it led. A new leader's state may lack some for a moment: it
        applies the earlier entries once its own first entry commits."""
        noop = self._SyncObj__noopIDx
        return bool(self._isLeader()) and noop is not None and self.raftLastApplied >= noop

    def candidate_timeout(self) -> float:
        """How long a candidate waits for its votes before it tries again (see the module's
        docstring on split votes)."""
        step = float(self.conf.raftMinTimeout) / 4
        return step * (1 + self._rank) + step / 2 * random.random()

    def _hasten_candidacy(self) -> None:
        # Runs in the tick that made this node a candidate, after the library drew the deadline
        # of its election from the follower's range and sent the vote requests.
        if self._SyncObj__raftState != _RAFT_STATE.CANDIDATE:
            return
        term = self._SyncObj__raftCurrentTerm
        if term == self._candidacy_term:
            return
        self._candidacy_term = term
        # The library's clock is time.monotonic too.
        self._SyncObj__raftElectionDeadline = time.monotonic() + self.candidate_timeout()

    def _send_keepalives(self) -> None:
        # Runs in a tick, like all of the library's own sends.
        now = time.monotonic()
        if now < self._next_keepalive:
            return
        self._next_keepalive = now + self._keepalive_every
        transport = self._SyncObj__transport
        for node in self._SyncObj__otherNodes:
            transport.send(node, {"type": KEEPALIVE})

    # ---- commit news ------------------------------------------------------------------------
    #
    # Unbatched, the library sends every follower an AppendEntries right after each apply on the
    # leader, only to carry the new commit index, and each follower answers it: four messages
    # more per entry at the leader, sent just when the committed write's answer should go out.
    # Every AppendEntries carries the commit index, so under load the next entry tells the
    # followers anyway; when none follows within a tick period, the news goes out on its own.

    # A write a follower forwarded is different: that follower answers its caller only once it
    # knows the entry committed, so the news goes out at once (else a write through a follower
    # took a tick period longer).

    def _send(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "apply_command_response" and "log_idx" in message:
            # The leader took a forwarded write.
            self._forwarded.append((message["log_idx"], node))
            self._awaiting_news.add(node)
        if kind == "append_entries" and self.pacing is not None:
            # A new leader announces itself to every follower at once; a follower that forwarded
            # a write hears of its commit at once (it answers its caller only then).
            holdable = node not in self._awaiting_news and self.is_settled_leader()
            for out in self.pacing.route(node, message, holdable):
                self._send_append(node, out)
            return
        self._library_send(node, message)

    def _send_append(self, node: Any, message: dict[str, Any]) -> None:
        self._library_send(node, message)
        assert self.pacing is not None
        self.pacing.sent(node, message)

    # ---- quorum first (see raft/pacing.py) ----------------------------------------------------

    def _pace(self) -> None:
        """Each tick: settle which followers get entries at once, and send what has waited."""
        if self.pacing is None:
            return
        leading = bool(self._isLeader())
        others = self._SyncObj__otherNodes
        connected = [n for n in others if n in self._SyncObj__connectedNodes]
        if leading:
            self.pacing.choose(connected, needed=(len(others) + 1) // 2)
        for node, messages in self.pacing.due(leading, connected).items():
            for message in messages:
                self._send_append(node, message)

    def _SyncObj__applyLogEntries(self) -> bool:
        if not super()._SyncObj__applyLogEntries():
            return False
        applied = self._SyncObj__raftLastApplied
        if self._forwarded and min(i for i, _ in self._forwarded) <= applied:
            self._forwarded = [(i, n) for i, n in self._forwarded if i > applied]
            return True  # the library sends the news now
        if not self._commit_news_due:
            self._commit_news_due = time.monotonic() + self.conf.autoTickPeriod
        return False

    def _SyncObj__sendAppendEntries(self) -> None:
        self._commit_news_due = 0.0  # whatever it sends carries the commit index
        super()._SyncObj__sendAppendEntries()
        # Told, unless another forwarded write still waits to commit.
        self._awaiting_news = {n for _, n in self._forwarded}

    def _send_commit_news(self) -> None:
        if self._commit_news_due and time.monotonic() >= self._commit_news_due:
            self._commit_news_due = 0.0
            if self._isLeader():
                self._SyncObj__sendAppendEntries()

    # The library binds its transport callback to ``self.__onMessageReceived`` (name-mangled to
    # the attribute below), so overriding the mangled name routes every message through here.
    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == KEEPALIVE:
            return  # its arrival already refreshed the link; nothing else to do
        if kind == "next_node_idx" and message.get("success") and self.pacing is not None:
            self.pacing.answered(node, message["next_node_idx"])
        if kind == "append_entries" and "prevLogIdx" in message:
            guarded = self._guard_append_entries(node, message)
            if guarded is None:
                return
            message = guarded
        super()._SyncObj__onMessageReceived(node, message)

    # ---- helpers over the library's private log -----------------------------------------

    def _last_index(self) -> int:
        return int(self._SyncObj__getCurrentLogIndex())

    def _entry(self, index: int) -> Entry | None:
        entries = self._SyncObj__getEntries(index, 1)
        return entries[0] if entries else None

    def _last_applied(self) -> int:
        return int(self._SyncObj__raftLastApplied)

    # ---- the guard ------------------------------------------------------------------------

    def _guard_append_entries(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """Return the message to hand to the library, or None when it was handled here."""
        if message["term"] < self._SyncObj__raftCurrentTerm:
            return message  # the library ignores messages from old terms
        transmission = message.get("transmission")
        if transmission in ("start", "process"):
            return message  # chunks of one large entry; nothing is appended yet
        if transmission == "finish":
            assembled = self._assemble_transmission(message)
            if assembled is None:
                return None
            message = assembled

        prev_index = message["prevLogIdx"]
        last = self._last_index()
        if prev_index >= last:
            return message  # nothing after prevLogIdx: the library cannot truncate anything
        prev = self._entry(prev_index)
        if prev is None or prev[2] != message["prevLogTerm"]:
            return message  # the library answers "mismatch" without touching the log

        entries: list[Entry] = list(message.get("entries", []))
        for position, entry in enumerate(entries):
            index, term = entry[1], entry[2]
            held = self._entry(index) if index <= last else None
            if held is not None and held[2] == term:
                continue
            if position:
                self.stale_appends_neutralised += 1
            if held is not None and index <= self._last_applied():
                self.applied_truncations += 1
                log.critical(
                    "raft log conflict at applied index %d (term %d vs %d)", index, held[2], term
                )
            return self._reanchor(message, index - 1, entries[position:])

        # Every entry is already in the log: answer as Raft does, without deleting anything.
        self.stale_appends_neutralised += 1
        vouched = entries[-1][1] if entries else prev_index
        heartbeat = {
            key: value
            for key, value in message.items()
            if key not in ("prevLogIdx", "prevLogTerm", "entries")
        }
        heartbeat["commit_index"] = min(message["commit_index"], vouched)
        super()._SyncObj__onMessageReceived(node, heartbeat)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=vouched + 1, success=True)
        return None

    def _reanchor(
        self, message: dict[str, Any], prev_index: int, entries: list[Entry]
    ) -> dict[str, Any]:
        prev = self._entry(prev_index)
        assert prev is not None, "re-anchoring inside the held log prefix"
        return {**message, "prevLogIdx": prev_index, "prevLogTerm": prev[2], "entries": entries}

    def _assemble_transmission(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Turn the last chunk of a large entry into an ordinary one-entry message.

        Our entries never get here (raft/commit.py keeps them far below the chunk size); if one
        did, a malformed transfer is dropped instead of crashing the tick, as the library would.
        """
        received = getattr(self, "_SyncObj__recvTransmission")  # noqa: B009
        self._SyncObj__recvTransmission = ""
        try:
            entry = pickle_loads(received + message["data"])
        except (TypeError, EOFError, ValueError) as e:
            log.error("dropping a malformed chunked AppendEntries: %s", e)
            return None
        assembled = {k: v for k, v in message.items() if k not in ("transmission", "data")}
        assembled["entries"] = [entry]
        return assembled
