"""The snapshot and the error-line check themselves: a battery that cannot see a leftover file
or a missing fix would pass every case for nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    EngineState,
    Snapshot,
    changes,
    engine_changes,
    file_state,
    refused,
    split_hint,
)
from tests.run import Run

pytestmark = pytest.mark.unit


def files(root: Path) -> Snapshot:
    return Snapshot(file_state([root]))


def test_a_created_changed_or_removed_file_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "kept").write_text("a")
    (tmp_path / "edited").write_text("a")
    (tmp_path / "gone").write_text("a")
    before = files(tmp_path)
    (tmp_path / "new").write_text("a")
    (tmp_path / "edited").write_text("bb")
    (tmp_path / "gone").unlink()
    assert changes(before, files(tmp_path)) == [
        f"changed {tmp_path / 'edited'} (size, mtime)", f"removed {tmp_path / 'gone'}",
        f"created {tmp_path / 'new'}"]


def test_a_mode_change_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    before = files(tmp_path)
    os.chmod(tmp_path / "script", 0o755)
    assert changes(before, files(tmp_path)) == [f"changed {tmp_path / 'script'} (mode)"]


def test_a_temp_file_that_came_and_went_is_no_change(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    before = files(tmp_path)
    (tmp_path / "cache" / ".x.part").write_text("a")
    (tmp_path / "cache" / ".x.part").unlink()
    assert changes(before, files(tmp_path)) == []


def test_an_empty_dir_left_behind_is_a_change(tmp_path: Path) -> None:
    before = files(tmp_path)
    (tmp_path / "sources").mkdir()
    assert changes(before, files(tmp_path)) == [f"created {tmp_path / 'sources'}"]


def test_a_new_tag_or_container_is_an_engine_change() -> None:
    before = EngineState({"sha256:a": ("lkbuild/build:bookworm",)}, {})
    after = EngineState({"sha256:a": ("lkbuild/build:bookworm", "me/kernel:1")},
                        {"c1": ("capture", "sha256:a", "exited")})
    assert engine_changes(before, after) == [
        "image sha256:a: tags ['lkbuild/build:bookworm'] -> "
        "['lkbuild/build:bookworm', 'me/kernel:1']",
        "container c1 capture: absent -> exited"]


def test_what_other_lkbuild_sessions_tag_meanwhile_is_not_the_cases() -> None:
    before = EngineState({"sha256:old": ("lkbuild-test-1a2b/kernel:6.12.117-amd64",)}, {})
    after = EngineState({"sha256:old": (),
                         "sha256:new": ("lkbuild-test-1a2b/kernel:6.12.117-amd64",)},
                        {"c1": ("x", "sha256:new", "created")})
    assert engine_changes(before, after) == []


def test_the_hint_is_the_last_parenthesised_part_of_the_line() -> None:
    line = "lkbuild: error: series 6.12.x has no config for arm64 (/k/config-aarch64 is " \
           "missing) (make one with (this) command)"
    assert split_hint(line) == ("series 6.12.x has no config for arm64 (/k/config-aarch64 is "
                                "missing)", "make one with (this) command")
    assert split_hint("lkbuild: error: no hint here") == ("no hint here", "")


def test_a_line_without_a_fix_does_not_pass_as_refused() -> None:
    run = Run(2, "", "lkbuild: error: bad thing 'x'\n")
    try:
        refused(run, ["'x'"], "anything")
    except AssertionError as exc:
        assert "gives no fix" in str(exc)
    else:
        raise AssertionError("a line without a hint passed")


def test_two_error_lines_do_not_pass_as_refused() -> None:
    run = Run(2, "", "lkbuild: error: a 'x' (fix a)\nlkbuild: error: b 'x' (fix b)\n")
    try:
        refused(run, ["'x'"], "fix")
    except AssertionError as exc:
        assert "2 error lines" in str(exc)
    else:
        raise AssertionError("two error lines passed")
