"""matrix.parse(): a versions matrix as rows, comments ignored, every bad row at once."""
from __future__ import annotations

import pytest

from recipes import matrix
from recipes.errors import UserError
from recipes.matrix import Row

pytestmark = pytest.mark.unit


def rows(text: str) -> list[tuple]:
    return [(r.line, r.kernel, r.arch, r.module, r.version) for r in matrix.parse(text)]


def test_comments_and_blank_lines_are_skipped_but_keep_the_line_numbers():
    text = "# kernel arch module [version]\n\n   \n6.12.54 arm64 zfs\n  # indented\n" \
           "6.6.60 amd64 hello  # trailing comment\n"
    assert rows(text) == [(4, "6.12.54", "arm64", "zfs", ""), (6, "6.6.60", "amd64", "hello", "")]


def test_a_fourth_column_is_the_module_version():
    assert rows("6.12.54 arm64 zfs 2.3.2\n") == [(1, "6.12.54", "arm64", "zfs", "2.3.2")]


def test_columns_may_be_separated_by_tabs_and_runs_of_spaces():
    assert rows("\tlinuxkit/kernel:6.12.52 \t x86_64   ./mods/hello\t1.0\n") == [
        (1, "linuxkit/kernel:6.12.52", "x86_64", "./mods/hello", "1.0")]


def test_rows_keep_the_arch_as_written_in_any_accepted_spelling():
    assert [r.arch for r in matrix.parse("6.12.54 AArch64 zfs\n6.12.54 X86_64 zfs\n")] == [
        "AArch64", "X86_64"]


def test_a_file_without_a_final_newline_reads_its_last_row():
    assert matrix.parse("6.12.54 arm64 zfs") == [Row(1, "6.12.54", "arm64", "zfs")]


@pytest.mark.parametrize("line", ["6.12.54 arm64", "6.12.54", "6.12.54 arm64 zfs 2.3.2 extra"])
def test_a_row_with_the_wrong_number_of_columns_is_refused(line):
    with pytest.raises(UserError) as info:
        matrix.parse(f"# header\n{line}\n")
    assert info.value.message == (f"the matrix has 1 bad row(s): line 2: expected KERNEL ARCH "
                                  f"MODULE [VERSION], got {line!r}")


def test_an_unknown_arch_is_named_with_the_supported_ones():
    with pytest.raises(UserError) as info:
        matrix.parse("6.12.54 riscv64 zfs\n")
    assert info.value.message == "the matrix has 1 bad row(s): line 1: unknown arch 'riscv64'"
    assert info.value.hint.startswith("supported arches are ") and "aarch64" in info.value.hint


def test_every_bad_row_is_reported_at_once_in_one_line():
    text = "6.12.54 arm64 zfs\n6.12.54 sparc zfs\n\n6.12.54 arm64\n6.6.60 amd64 hello\n" \
           "a b c d e\n"
    with pytest.raises(UserError) as info:
        matrix.parse(text, where="matrix file versions")
    line = info.value.line()
    assert "\n" not in line and line.startswith(
        "lkbuild: error: matrix file versions has 3 bad row(s): line 2: unknown arch 'sparc'; "
        "line 4: expected KERNEL ARCH MODULE [VERSION], got '6.12.54 arm64'; line 6: ")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n   # another\n"])
def test_a_matrix_without_rows_is_refused_with_an_example(text):
    with pytest.raises(UserError) as info:
        matrix.parse(text)
    assert info.value.message == "the matrix has no rows"
    assert "6.12.54 arm64 zfs" in info.value.hint


def test_a_matrix_file_is_named_in_its_errors(tmp_path):
    path = tmp_path / "versions"
    path.write_text("6.12.54 mips zfs\n")
    with pytest.raises(UserError, match=f"matrix file {path} has 1 bad row"):
        matrix.read(path)
