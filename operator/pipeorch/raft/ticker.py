"""Run pysyncobj on an asyncio event loop instead of on a thread of its own.

pysyncobj's ``autoTick`` thread costs every commit two hand-overs between threads: the proposal
waits for the tick thread to wake and get the GIL, and the result waits for the event loop to do
the same. Under load each took a few tenths of a millisecond, a third of a commit. With
``autoTick=False`` the library does its work in ``doTick`` calls, whenever its caller likes; this
module makes the event loop that caller:

* ``EpollPoller`` is pysyncobj's poller over an epoll set. The set has a descriptor of its own,
  which the loop watches: it turns readable when any of the library's sockets (or its wake-up
  pipe, written by a proposal) has an event.
* ``LoopTicker`` ticks when that happens, and on a timer for heartbeats and election deadlines.
  Woken, it first dispatches the events that woke it, then ticks, and ticks again while a tick
  finds more events, so a follower's acknowledgement is committed, applied and answered in the
  same turn of the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import select
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pysyncobj.syncobj as syncobj_module
from pysyncobj.poller import POLL_EVENT_TYPE, Poller

log = logging.getLogger(__name__)

#: The ``pollerType`` that selects ``EpollPoller``.
EPOLL = "pipeorch-epoll"
#: Whether this platform has epoll (Linux); elsewhere pysyncobj keeps its own thread.
SUPPORTED = hasattr(select, "epoll")
#: Ticks in one turn of the loop at most: a flood of messages must not starve the loop; what is
#: left keeps the epoll descriptor readable and gets the next turn.
MAX_TICKS_PER_TURN = 8

Callback = Callable[[int, int], None]
T = TypeVar("T")


class EpollPoller(Poller):  # type: ignore[misc]
    """pysyncobj's Poller interface on ``select.epoll``, whose own descriptor can be watched."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callback] = {}
        #: How many events the last ``poll`` dispatched.
        self.dispatched = 0

    def fileno(self) -> int:
        return self._epoll.fileno()

    def subscribe(self, descr: int, callback: Callback, eventMask: int) -> None:  # noqa: N803
        mask = select.EPOLLERR | select.EPOLLHUP
        if eventMask & POLL_EVENT_TYPE.READ:
            mask |= select.EPOLLIN
        if eventMask & POLL_EVENT_TYPE.WRITE:
            mask |= select.EPOLLOUT
        self._callbacks[descr] = callback
        try:
            self._epoll.register(descr, mask)
        except FileExistsError:
            self._epoll.modify(descr, mask)

    def unsubscribe(self, descr: int) -> None:
        self._callbacks.pop(descr, None)
        # Never registered, or already closed (which removed it from the set): nothing to do.
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(descr)

    def poll(self, timeout: float) -> None:
        events = self._epoll.poll(timeout)
        self.dispatched = len(events)
        for descr, event in events:
            mask = 0
            if event & select.EPOLLIN:
                mask |= POLL_EVENT_TYPE.READ
            if event & select.EPOLLOUT:
                mask |= POLL_EVENT_TYPE.WRITE
            if event & (select.EPOLLERR | select.EPOLLHUP):
                mask |= POLL_EVENT_TYPE.ERROR
            callback = self._callbacks.get(descr)
            if callback is not None:  # an earlier callback of this round may have closed it
                callback(descr, mask)

    def close(self) -> None:
        self._epoll.close()


class LoopTicker:
    """Drives a ``SyncObj`` built with ``autoTick=False`` and ``pollerType=EPOLL`` from ``loop``.

    Everything the library does, its callbacks included, then runs on the loop's thread.
    """

    def __init__(self, syncobj: Any, loop: asyncio.AbstractEventLoop, period: float) -> None:
        poller = syncobj._poller
        if not isinstance(poller, EpollPoller):
            raise TypeError(f"the SyncObj must be built with pollerType={EPOLL!r}")
        self._syncobj = syncobj
        self._poller = poller
        self._loop = loop
        self._period = period
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._thread: int | None = None

    def start(self) -> None:
        """Start ticking; call on the loop's thread."""
        self._thread = threading.get_ident()
        self._loop.add_reader(self._poller.fileno(), self.tick)
        self._timer = self._loop.call_later(self._period, self._on_timer)

    def tick(self) -> None:
        """Dispatch the events that woke us, then act on them (which dispatches whatever
        arrived meanwhile) until no event is left."""
        try:
            self._poller.poll(0.0)
            if self._poller.dispatched:
                self._tick_while_busy()
        except Exception:  # as pysyncobj's own thread does: log, and tick again next time
            log.exception("raft tick failed")

    def _tick_while_busy(self) -> None:
        for _ in range(MAX_TICKS_PER_TURN):
            self._syncobj.doTick(0.0)
            if not self._poller.dispatched:
                return

    def _on_timer(self) -> None:
        try:
            self._tick_while_busy()  # heartbeats, elections and deadlines are due by time
        except Exception:
            log.exception("raft tick failed")
        if not self._stopped:
            self._timer = self._loop.call_later(self._period, self._on_timer)

    def on_loop_thread(self) -> bool:
        return self._thread == threading.get_ident()

    def drives_running_loop(self) -> bool:
        """Whether the caller runs on the loop this ticker drives (``follow`` is for it)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def follow(self, future: concurrent.futures.Future[T]) -> asyncio.Future[T]:
        """A future of the loop with ``future``'s outcome. A write's future is resolved in a
        tick, on the loop's thread, so the outcome is copied at once: ``asyncio.wrap_future``
        would hand it over through the loop's self-pipe and one more turn of the loop. For a
        coroutine of this loop only (see ``drives_running_loop``)."""
        waiter: asyncio.Future[T] = self._loop.create_future()

        def relay(done: concurrent.futures.Future[T]) -> None:
            if self.on_loop_thread():
                _copy_outcome(done, waiter)
            else:
                self._loop.call_soon_threadsafe(_copy_outcome, done, waiter)

        future.add_done_callback(relay)
        return waiter

    def stop(self) -> None:
        """No more ticks. The SyncObj is destroyed after this, then ``close`` is called."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._poller.fileno())

    def close(self) -> None:
        self._poller.close()


_library_create_poller = syncobj_module.createPoller


def _copy_outcome(done: concurrent.futures.Future[T], waiter: asyncio.Future[T]) -> None:
    if waiter.done():  # the awaiting side gave up (a timeout)
        return
    if done.cancelled():
        waiter.cancel()
        return
    error = done.exception()
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


def _create_poller(poller_type: str) -> Poller:
    return EpollPoller() if poller_type == EPOLL else _library_create_poller(poller_type)


def install() -> None:
    """Let ``SyncObjConf(pollerType=EPOLL)`` build an ``EpollPoller``. SyncObj builds its
    poller from ``conf.pollerType`` and hands it to the transport inside its constructor, with
    no hook in between. Idempotent; other poller types are built as before."""
    syncobj_module.createPoller = _create_poller
