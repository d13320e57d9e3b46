"""Scratch directories: empty for every attempt, reused rather than made anew."""

from __future__ import annotations

from pipeorch_worker.runner import LOG_NAME, ScratchDirectories


def test_a_directory_comes_back_empty_but_for_an_empty_log(tmp_path):
    scratch = ScratchDirectories(tmp_path)
    first = scratch.take()
    first.log.write_bytes(b"")
    first.outputs.mkdir()
    (first.outputs / "model.pkl").write_bytes(b"x")
    (first.path / "left-behind.csv").write_text("a,b\n")
    scratch.give_back(first)

    again = scratch.take()
    assert again == first
    # The empty log stays for the next attempt to write into (no file made and removed for a
    # step that prints nothing); everything the attempt made is gone.
    assert [p.name for p in again.path.iterdir()] == [LOG_NAME]
    assert again.log.stat().st_size == 0
    assert (again.path_text, again.log_text) == (str(again.path), str(again.path / LOG_NAME))


def test_a_log_that_holds_anything_is_removed(tmp_path):
    scratch = ScratchDirectories(tmp_path)
    first = scratch.take()
    first.log.write_text("hello from the last attempt\n")
    scratch.give_back(first)
    assert list(scratch.take().path.iterdir()) == []


def test_directories_in_use_are_distinct(tmp_path):
    scratch = ScratchDirectories(tmp_path)
    a, b = scratch.take(), scratch.take()
    assert a != b
    scratch.give_back(b)
    assert scratch.take() == b
