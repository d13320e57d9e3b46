"""The sealing of Raft messages: AES-GCM under per-process session keys (see raft/cipher.py)."""

from __future__ import annotations

import pysyncobj.syncobj as syncobj_module
import pytest
from pysyncobj import encryptor as fernet

from pipeorch.raft import cipher
from pipeorch.raft.cipher import HEADER_BYTES, InvalidToken, SessionCipher


@pytest.fixture(scope="module")
def master() -> bytes:
    return cipher.master_key("shared-secret")  # stretching costs ~0.1 s: once for the module


def test_a_peer_with_the_same_password_reads_what_was_sealed(master: bytes) -> None:
    sender, receiver = SessionCipher(master), SessionCipher(master)
    token = sender.encrypt_at_time(b"append_entries", 1234)
    assert receiver.extract_timestamp(token) == 1234
    assert receiver.decrypt(token) == b"append_entries"
    # Without extract_timestamp first (and a second time) it opens the token itself.
    assert receiver.decrypt(token) == b"append_entries"
    assert b"append_entries" not in token


def test_a_different_password_cannot_read_it(master: bytes) -> None:
    token = SessionCipher(master).encrypt_at_time(b"x", 1)
    intruder = SessionCipher(cipher.master_key("wrong"))
    with pytest.raises(InvalidToken, match="fails authentication"):
        intruder.extract_timestamp(token)


@pytest.mark.parametrize("where", [0, 1, 20, 30, HEADER_BYTES, -1])
def test_any_changed_byte_is_refused(master: bytes, where: int) -> None:
    # The version, the session id, the counter, the timestamp, the ciphertext and the tag.
    token = bytearray(SessionCipher(master).encrypt_at_time(b"commit index 7", 99))
    token[where] ^= 0x01
    with pytest.raises(InvalidToken):
        SessionCipher(master).decrypt(bytes(token))


def test_the_timestamp_pysyncobj_checks_is_authenticated(master: bytes) -> None:
    token = bytearray(SessionCipher(master).encrypt_at_time(b"x", 5))
    token[HEADER_BYTES - 1] ^= 0x80  # the timestamp's last byte: 5 -> 133
    with pytest.raises(InvalidToken):
        SessionCipher(master).extract_timestamp(bytes(token))


def test_no_nonce_repeats_under_a_key(master: bytes) -> None:
    one, other = SessionCipher(master), SessionCipher(master)
    headers = [one.encrypt_at_time(b"same", 1)[:HEADER_BYTES] for _ in range(3)]
    # One session: the counter moves on with every message.
    assert len({h[17:25] for h in headers}) == 3
    assert {h[1:17] for h in headers} == {headers[0][1:17]}
    # Another process: another session id, so another key, even at the same counter.
    assert other.encrypt_at_time(b"same", 1)[1:17] != headers[0][1:17]


def test_a_fernet_message_of_an_older_replica_is_refused_by_name(master: bytes) -> None:
    token = fernet.getEncryptor("shared-secret").encrypt_at_time(b"x", 1)
    with pytest.raises(InvalidToken, match="older or foreign sender"):
        SessionCipher(master).decrypt(token)


def test_only_authentic_sessions_are_remembered(master: bytes) -> None:
    receiver = SessionCipher(master)
    forged = bytearray(SessionCipher(master).encrypt_at_time(b"x", 1))
    forged[-1] ^= 0x01
    with pytest.raises(InvalidToken):
        receiver.decrypt(bytes(forged))
    assert receiver._peers == {}
    for _ in range(cipher.MAX_PEER_SESSIONS + 1):
        receiver.decrypt(SessionCipher(master).encrypt_at_time(b"x", 1))
    assert 0 < len(receiver._peers) <= cipher.MAX_PEER_SESSIONS


def test_install_gives_every_new_syncobj_the_session_cipher() -> None:
    cipher.install()
    assert syncobj_module.getEncryptor is cipher.make_cipher
    assert isinstance(syncobj_module.getEncryptor("pw"), SessionCipher)
