"""Quorum first: the leader sends a new entry at once only to the followers a majority needs.

A write commits once the leader and enough followers to make a majority hold it: with three
replicas, the leader and one follower. Sent to every follower at once, each entry also makes the
spare follower receive, store and acknowledge it, and the leader send to it and read its answer,
all at the moment the write's answer is due. Where the replicas share CPUs (the embedded system
runs all three on one machine) that work competes with the commit itself.

``FollowerPacing`` splits the followers in two:

* the **quorum**: the fastest followers the majority needs, which get every AppendEntries at
  once, exactly as before;
* the **spares**: the others, whose AppendEntries are held and sent together once they are
  ``hold`` seconds old (a tick period), joined into as few messages as their log ranges allow.

A spare's messages are only delayed, never dropped or reordered: the same AppendEntries reach
it, in the same order, a few milliseconds later, as a slower network would deliver them. Raft
allows any delay, so safety does not depend on it. A spare still holds every entry within
about a tick period, can still be elected (its log is at most that much behind), and answers
every held message, so the leader keeps hearing from it.

A quorum follower that stops answering is replaced: its latency counts as the age of its
oldest unanswered entry, and once that exceeds a spare's measured latency by a quarter plus
half a hold period, the spare takes its place and gets what was held for it first. A follower
that disconnects leaves the quorum at once. Until a swap the spare's batch, sent after ``hold``,
still lets a write commit: a stalled quorum follower costs a write at most about a hold period.

Pure logic over opaque node objects and message dicts (pysyncobj's); ``GuardedSyncObj`` feeds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]

#: A spare replaces a quorum follower whose latency exceeds the spare's by this factor ...
SWAP_FACTOR = 1.25
#: ... plus this share of the hold period: jitter on a busy machine must not swap them.
SWAP_MARGIN = 0.5
#: Entries in one joined AppendEntries at most.
MAX_JOINED_ENTRIES = 256
#: Weight of a new latency sample in the moving average.
SAMPLE_WEIGHT = 0.2


@dataclass
class _Follower:
    #: Moving average of the time from sending an entry to its acknowledgement; None unmeasured.
    latency: float | None = None
    #: (last log index, when sent) of the oldest AppendEntries with entries not yet answered.
    unanswered: tuple[int, float] | None = None
    held: list[Message] = field(default_factory=list)
    held_since: float = 0.0


class FollowerPacing:
    """Decides, message by message, whether an AppendEntries goes out now or waits."""

    def __init__(self, hold: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold = hold
        self._clock = clock
        self._followers: dict[Hashable, _Follower] = {}
        self._quorum: list[Hashable] = []
        #: AppendEntries held for a spare, and messages they were sent as, in all.
        self.held_messages = 0
        self.sent_batches = 0

    @property
    def quorum(self) -> list[Hashable]:
        """The followers that get new entries at once."""
        return list(self._quorum)

    def _follower(self, node: Hashable) -> _Follower:
        follower = self._followers.get(node)
        if follower is None:
            follower = self._followers[node] = _Follower()
        return follower

    # ---- which followers form the quorum ----------------------------------------------------

    def choose(self, connected: Iterable[Hashable], needed: int) -> list[Hashable]:
        """Settle the quorum among the connected followers (``needed`` of them make a
        majority with the leader); returns it. Followers that left are replaced at once; a
        slow member only when a spare is clearly faster (see the module's docstring)."""
        candidates = list(connected)
        if len(candidates) <= needed:
            self._quorum = candidates
            return self.quorum
        now = self._clock()
        if len(self._quorum) == needed and not any(
            n not in candidates or self._effective(n, now) > SWAP_MARGIN * self.hold
            for n in self._quorum
        ):
            return self.quorum  # every member answers within the margin: no spare can beat it
        quorum = [n for n in self._quorum if n in candidates]
        spares = sorted((n for n in candidates if n not in quorum), key=self._measured)
        while len(quorum) < needed:
            quorum.append(spares.pop(0))
        if spares:
            slowest = max(quorum, key=lambda n: self._effective(n, now))
            best = spares[0]
            margin = SWAP_MARGIN * self.hold
            if self._effective(slowest, now) > SWAP_FACTOR * self._measured(best) + margin:
                quorum[quorum.index(slowest)] = best
        self._quorum = quorum
        return self.quorum

    def _measured(self, node: Hashable) -> float:
        return self._follower(node).latency or 0.0

    def _effective(self, node: Hashable, now: float) -> float:
        """The measured latency, or longer while an entry waits for an answer that long."""
        follower = self._follower(node)
        waited = now - follower.unanswered[1] if follower.unanswered else 0.0
        return max(follower.latency or 0.0, waited)

    # ---- messages -----------------------------------------------------------------------------

    def route(self, node: Hashable, message: Message, holdable: bool) -> list[Message]:
        """What to send ``node`` now for ``message``: nothing (held), or what was held for it
        and then the message, in order. ``holdable`` is False when the caller needs the message
        out at once (not leading, or a follower waits for a commit it forwarded)."""
        follower = self._follower(node)
        if holdable and node not in self._quorum and _plain_append(message):
            if not follower.held:
                follower.held_since = self._clock()
            follower.held.append(message)
            self.held_messages += 1
            return []
        return [*self._release(follower), message]

    def due(self, leading: bool, connected: Collection[Hashable]) -> dict[Hashable, list[Message]]:
        """Held messages to send now: each spare's once they are ``hold`` old, and what was
        held for a follower that has since joined the quorum.

        Not leading, they are dropped: the new leader sends its own, and an old term's
        AppendEntries would be refused anyway. For a follower that disconnected they are lost
        as a broken connection loses what it had not sent: once it is back, its answer to the
        next AppendEntries tells the leader where to resume."""
        out: dict[Hashable, list[Message]] = {}
        now = self._clock()
        for node, follower in self._followers.items():
            if node not in connected:
                follower.unanswered = None
            if not follower.held:
                continue
            if not leading or node not in connected:
                follower.held.clear()
            elif node in self._quorum or now - follower.held_since >= self.hold:
                out[node] = self._release(follower)
        return out

    def _release(self, follower: _Follower) -> list[Message]:
        if not follower.held:
            return []
        joined = join_appends(follower.held)
        follower.held = []
        self.sent_batches += 1
        return joined

    # ---- latency ------------------------------------------------------------------------------

    def sent(self, node: Hashable, message: Message) -> None:
        """``message`` went out to ``node``: time its entries' acknowledgement."""
        entries = message.get("entries")
        follower = self._follower(node)
        if entries and follower.unanswered is None:
            follower.unanswered = (entries[-1][1], self._clock())

    def answered(self, node: Hashable, next_index: int) -> None:
        """``node`` acknowledged everything before ``next_index``."""
        follower = self._followers.get(node)
        if follower is None or follower.unanswered is None:
            return
        index, sent_at = follower.unanswered
        if next_index - 1 < index:
            return
        follower.unanswered = None
        sample = self._clock() - sent_at
        if follower.latency is None:
            follower.latency = sample
        else:
            follower.latency += SAMPLE_WEIGHT * (sample - follower.latency)


def _plain_append(message: Message) -> bool:
    """An ordinary AppendEntries: not a chunk of a large entry, not a snapshot transfer."""
    return (
        message.get("type") == "append_entries"
        and "entries" in message
        and "transmission" not in message
        and "serialized" not in message
    )


def join_appends(messages: Collection[Message]) -> list[Message]:
    """The same AppendEntries in fewer messages: one that continues the previous one's log
    range in the same term is folded into it, taking its newer commit index; an empty one
    (a heartbeat) is replaced by the next that starts where it does."""
    out: list[Message] = []
    for message in messages:
        if out and _continues(out[-1], message):
            previous = out[-1]
            if previous["entries"]:
                entries = [*previous["entries"], *message["entries"]]
                message = {**previous, "entries": entries, "commit_index": message["commit_index"]}
            out[-1] = message
        else:
            out.append(message)
    return out


def _continues(previous: Message, message: Message) -> bool:
    if not (_plain_append(previous) and _plain_append(message)):
        return False
    if previous["term"] != message["term"]:
        return False
    entries = previous["entries"]
    if len(entries) + len(message["entries"]) > MAX_JOINED_ENTRIES:
        return False
    if not entries:
        return bool(
            message["prevLogIdx"] == previous["prevLogIdx"]
            and message["prevLogTerm"] == previous["prevLogTerm"]
        )
    last_index, last_term = entries[-1][1], entries[-1][2]
    return bool(message["prevLogIdx"] == last_index and message["prevLogTerm"] == last_term)
