"""The framing pysyncobj's connections use: stored zlib streams any pysyncobj can read."""

from __future__ import annotations

import os
import zlib

import pysyncobj.tcp_connection as tcp_connection
import pytest

from pipeorch.raft import wire


@pytest.mark.parametrize("size", [0, 1, 373, wire.DEFLATE_FROM - 1])
def test_short_messages_are_stored_and_read_back_by_zlib(size: int) -> None:
    data = os.urandom(size)
    framed = wire.compress(data, 3)
    assert zlib.decompress(framed) == data
    # Stored, not deflated: the data itself is in the frame, after the 2-byte stream header
    # and the 5-byte block header, with the 4-byte checksum last.
    assert framed[7:-4] == data


def test_long_messages_are_still_deflated() -> None:
    data = b"pipeline step " * (wire.DEFLATE_FROM // 8)
    framed = wire.compress(data)
    assert zlib.decompress(framed) == data
    assert len(framed) < len(data) // 10


def test_install_frames_the_library_connections_with_it() -> None:
    wire.install()
    assert tcp_connection.zlib.compress is wire.compress
    message = os.urandom(100)
    assert tcp_connection.zlib.decompress(tcp_connection.zlib.compress(message, 3)) == message
