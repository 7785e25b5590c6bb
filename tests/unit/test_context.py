"""Staged build contexts: only what changed is written, and nothing else is left behind."""
from __future__ import annotations

import os

import pytest

from recipes import context

pytestmark = pytest.mark.unit


def test_an_unchanged_file_is_not_rewritten(tmp_path):
    path = tmp_path / "a"
    context.put_file(path, b"same", 0o644)
    before = os.stat(path).st_ino, os.stat(path).st_mtime_ns
    context.put_file(path, b"same", 0o644)
    assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == before


def test_a_changed_mode_or_content_is_written(tmp_path):
    path = tmp_path / "a"
    context.put_file(path, b"one", 0o644)
    context.put_file(path, b"one", 0o755)
    assert path.stat().st_mode & 0o777 == 0o755
    context.put_file(path, b"two", 0o755)
    assert path.read_bytes() == b"two"


def test_a_synced_tree_holds_exactly_the_given_files(tmp_path):
    root = tmp_path / "ctx"
    context.sync_tree(root, {"a": (b"1", 0o644), "sub/b": (b"2", 0o755),
                             "sub/deep/c": (b"3", 0o644)})
    context.sync_tree(root, {"a": (b"1", 0o644), "sub/b": (b"22", 0o755), "new": (b"4", 0o644)})
    found = {p.relative_to(root).as_posix() for p in root.rglob("*")}
    assert found == {"a", "sub", "sub/b", "new"}
    assert (root / "sub" / "b").read_bytes() == b"22"


def test_a_file_may_replace_a_directory_of_the_same_name(tmp_path):
    root = tmp_path / "ctx"
    context.sync_tree(root, {"x/y": (b"1", 0o644)})
    context.sync_tree(root, {"x": (b"2", 0o644)})
    assert (root / "x").read_bytes() == b"2"


def test_a_linked_file_is_the_only_file_and_shares_the_inode(tmp_path):
    src = tmp_path / "linux.tar.xz"
    src.write_bytes(b"tarball")
    target = tmp_path / "ctx" / "source"
    target.mkdir(parents=True)
    (target / "old.tar.xz").write_bytes(b"old")
    context.link_file(target, src)
    assert [p.name for p in target.iterdir()] == ["linux.tar.xz"]
    assert os.path.samestat((target / "linux.tar.xz").stat(), src.stat())


def test_keys_that_differ_after_a_dot_hold_locks_of_their_own(tmp_path, capsys):
    """`<scope>-6.12.117-amd64` and `<scope>-6.12.117-arm64` (and 6.12.54) must not share a
    lock: a build of one never waits for the other."""
    import fcntl

    keys = ["test-6.12.117-amd64", "test-6.12.117-arm64", "test-6.12.54-amd64"]
    with context.locked(tmp_path / keys[0], "6.12.117 amd64"):
        for key in keys[1:]:
            with context.locked(tmp_path / key, key):
                pass
        held = (tmp_path / f"{keys[0]}.lock").open("w")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the first key's lock was not held")
        except BlockingIOError:
            pass
        finally:
            held.close()
    assert "waiting" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.lock")) == sorted(f"{k}.lock" for k in keys)
