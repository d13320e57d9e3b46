"""Cheaper framing of pysyncobj's messages, readable by any pysyncobj.

pysyncobj deflates every message it sends (``zlib.compress(data, 3)``). Setting up a deflate
stream costs about 40 µs whatever the level and however short the message, and a Raft entry
takes six messages at the leader and followers together: a sixth of the leader's Raft CPU, and a
delay before each follower sees an entry. Most messages are a few hundred bytes.

Below ``DEFLATE_FROM`` bytes, ``compress`` writes a zlib stream of *stored* blocks instead
(RFC 1950 header, RFC 1951 uncompressed blocks, Adler-32 trailer): no deflate state, one copy.
The receiver's ``zlib.decompress`` reads either form, so replicas with and without this change
still understand each other. Larger messages (catch-up batches, big submissions) are still
deflated, at the fastest level, because bytes on a slow link cost more than the set-up.
"""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import pysyncobj.tcp_connection as tcp_connection

#: Messages at least this long are deflated; shorter ones fit one stored block.
DEFLATE_FROM = 0xFFFF + 1
_HEADER = b"\x78\x01"  # deflate, 32 KiB window, fastest level; (0x7801 % 31 == 0)


def compress(data: bytes, level: int = -1) -> bytes:
    """A zlib stream of ``data`` that ``zlib.decompress`` reads; ``level`` is ignored."""
    if len(data) >= DEFLATE_FROM:
        return zlib.compress(data, 1)
    # One final stored block: a header byte (BFINAL=1, BTYPE=00), LEN and its complement.
    block = struct.pack("<BHH", 1, len(data), len(data) ^ 0xFFFF)
    return b"".join((_HEADER, block, data, struct.pack(">I", zlib.adler32(data))))


def install() -> None:
    """Make pysyncobj's connections frame with ``compress``. pysyncobj's TcpConnection calls
    ``zlib.compress`` and ``zlib.decompress`` through its module's ``zlib`` name; only compress
    changes. Idempotent."""
    tcp_connection.zlib = SimpleNamespace(compress=compress, decompress=zlib.decompress)
