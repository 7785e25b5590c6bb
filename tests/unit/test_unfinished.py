"""kernel/scripts/unfinished.sh: what a make killed mid-write leaves in a persistent build dir
goes before the next make, and nothing else does."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).parents[2] / "kernel" / "scripts" / "unfinished.sh"
MARK = ".lkbuild-unfinished"


def run(step: str, build: Path) -> str:
    out = subprocess.run(["sh", str(SCRIPT), step, str(build)], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return out.stdout


def write(path: Path, text: str, at: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (at, at))


def fixdep(target: str, complete: bool = True) -> str:
    """A .cmd as kbuild's fixdep writes it (cut before its last rules when not complete)."""
    text = (f"savedcmd_{target} := gcc -c -o {target} x.c\n\nsource_{target} := x.c\n\n"
            f"deps_{target} := \\\n  include/linux/kconfig.h \\\n"
            "  $(wildcard include/config/X) \\\n")
    return text + (f"\n{target}: $(deps_{target})\n\n$(deps_{target}):\n" if complete else "  inc")


def test_after_a_killed_make_only_targets_not_followed_by_their_cmd_are_removed(
        tmp_path: Path) -> None:
    build = tmp_path / "kbuild"
    build.mkdir()
    old = 1_700_000_000.0
    write(build / "kernel" / "done.o", "obj", old)  # an earlier, finished build's
    write(build / "kernel" / ".done.o.cmd", fixdep("kernel/done.o"), old + 1)
    write(build / "arch" / "x86" / "kernel" / "asm-offsets.s", "full", old)
    write(build / "arch" / "x86" / "kernel" / ".asm-offsets.s.cmd",
          fixdep("arch/x86/kernel/asm-offsets.s"), old + 1)
    assert run("start", build) == ""  # no mark: nothing to repair, the mark is made
    mark = build / MARK
    os.utime(mark, (old + 10, old + 10))
    # What the killed make wrote after the mark:
    write(build / "arch" / "x86" / "kernel" / "asm-offsets.s", "", old + 20)  # cut short
    write(build / "init" / "main.o", "obj", old + 20)  # finished: its .cmd came after it
    write(build / "init" / ".main.o.cmd", fixdep("init/main.o"), old + 21)
    write(build / "init" / "calibrate.o", "obj", old + 20)  # finished, objtool's rule appended
    write(build / "init" / ".calibrate.o.cmd", fixdep("init/calibrate.o") +
          "\ninit/calibrate.o: $(wildcard ./tools/objtool/objtool)\n", old + 21)
    write(build / "init" / "version.o", "obj", old + 20)  # fixdep killed mid-write
    write(build / "init" / ".version.o.cmd", fixdep("init/version.o", complete=False), old + 21)
    write(build / "mm" / "slub.o", "ob", old + 20)  # first compile: no .cmd yet, make redoes it
    write(build / "include" / "generated" / "compile.h", "#define X\n", old + 20)  # no .cmd
    write(build / "scripts" / "mod" / ".empty.o.cmd", "savedcmd_x := gcc", old + 20)  # no \n

    said = run("start", build)
    assert said == "lkbuild: the last make in this build dir did not finish; removed 4 files " \
        "it may have left half-written: arch/x86/kernel/asm-offsets.s, init/.version.o.cmd, " \
        "init/version.o, scripts/mod/.empty.o.cmd\n"
    left = {str(p.relative_to(build)) for p in build.rglob("*") if p.is_file()}
    assert left == {
        "kernel/done.o", "kernel/.done.o.cmd", "arch/x86/kernel/.asm-offsets.s.cmd",
        "init/main.o", "init/.main.o.cmd", "init/calibrate.o", "init/.calibrate.o.cmd",
        "mm/slub.o", "include/generated/compile.h", MARK}
    assert mark.stat().st_mtime > old + 21, "the mark is made again for the make that starts"

    run("done", build)
    assert not mark.exists()
    assert run("start", build) == "", "a finished make leaves nothing to repair"
