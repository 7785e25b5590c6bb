"""The versions matrix file: rows, comments, and every bad row at once."""
from __future__ import annotations

import pytest

from recipes import matrix
from recipes.errors import UserError


def test_rows_have_three_or_four_columns_and_comments_are_ignored():
    rows = matrix.parse("# kernel arch module version\n\n6.12.54 arm64 zfs 2.3.2  # Desktop\n"
                        "linuxkit/kernel:6.12.52 x86_64 hello\n")
    assert [(r.line, r.kernel, r.arch, r.module, r.version) for r in rows] == [
        (3, "6.12.54", "arm64", "zfs", "2.3.2"),
        (4, "linuxkit/kernel:6.12.52", "x86_64", "hello", "")]


def test_every_bad_row_is_reported_at_once_with_its_line():
    with pytest.raises(UserError) as info:
        matrix.parse("6.12.54 arm64\n6.12.54 sparc zfs\n6.12.54 arm64 zfs 1 extra\n")
    line = info.value.line()
    assert "has 3 bad row(s)" in line and "line 1:" in line and "line 2: unknown arch 'sparc'" \
        in line and "line 3:" in line and "supported arches are" in line


def test_a_matrix_without_rows_is_refused():
    with pytest.raises(UserError, match="has no rows"):
        matrix.parse("# nothing yet\n")


def test_a_missing_matrix_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read matrix file"):
        matrix.read(tmp_path / "versions")
