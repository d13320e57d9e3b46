"""EpollPoller over real socket pairs: pysyncobj's poller contract, and a descriptor that an
event loop can watch."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest
from pysyncobj.poller import POLL_EVENT_TYPE

from pipeorch.raft.ticker import EpollPoller

READ, WRITE, ERROR = POLL_EVENT_TYPE.READ, POLL_EVENT_TYPE.WRITE, POLL_EVENT_TYPE.ERROR


@pytest.fixture
def poller() -> Iterator[EpollPoller]:
    p = EpollPoller()
    yield p
    p.close()


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_events_are_dispatched_and_announced_on_its_own_descriptor(poller) -> None:
    a, b = socket.socketpair()
    seen: list[tuple[int, int]] = []
    poller.subscribe(a.fileno(), lambda fd, mask: seen.append((fd, mask)), READ | ERROR)
    poller.poll(0)
    assert (seen, poller.dispatched, readable(poller.fileno())) == ([], 0, False)

    b.send(b"x")
    assert readable(poller.fileno())  # what the event loop watches
    poller.poll(0)
    assert seen == [(a.fileno(), READ)]
    assert poller.dispatched == 1
    a.recv(1)
    assert not readable(poller.fileno())
    a.close(), b.close()


def test_subscribing_again_changes_the_mask(poller) -> None:
    a, b = socket.socketpair()
    seen: list[int] = []
    poller.subscribe(a.fileno(), lambda fd, mask: seen.append(mask), READ)
    poller.subscribe(a.fileno(), lambda fd, mask: seen.append(mask), READ | WRITE)
    poller.poll(0)
    assert seen == [WRITE]  # an idle socket can be written to
    a.close(), b.close()


def test_a_closed_peer_reports_read_and_error(poller) -> None:
    a, b = socket.socketpair()
    seen: list[int] = []
    poller.subscribe(a.fileno(), lambda fd, mask: seen.append(mask), READ | ERROR)
    b.close()
    poller.poll(0)
    assert seen
    assert seen[0] & READ  # the library reads, gets b"", and disconnects
    a.close()


def test_unsubscribing_a_closed_or_unknown_descriptor_is_harmless(poller) -> None:
    a, b = socket.socketpair()
    fd = a.fileno()
    poller.subscribe(fd, lambda fd, mask: None, READ)
    a.close()  # closing removes it from the epoll set
    poller.unsubscribe(fd)
    poller.unsubscribe(12345)
    b.close()


def test_a_callback_that_unsubscribes_another_descriptor_stops_its_dispatch(poller) -> None:
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    seen: list[int] = []

    def first(fd: int, mask: int) -> None:
        seen.append(fd)
        poller.unsubscribe(c.fileno() if fd == a.fileno() else a.fileno())

    poller.subscribe(a.fileno(), first, READ)
    poller.subscribe(c.fileno(), first, READ)
    b.send(b"x"), d.send(b"x")
    poller.poll(0)
    assert len(seen) == 1
    for s in (a, b, c, d):
        s.close()
