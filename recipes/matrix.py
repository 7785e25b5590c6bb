"""A versions matrix: one module build per row, every row tried, one table at the end.

The file is zfs-linuxkit's `versions` idea as plain text: a row per kernel x module, so one
command keeps a set of loader images current. Rows whose images exist are skipped by the
build's own content hash; a failing row is reported and the others still run.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import arch as archmod, module as modulemod, ui
from .errors import LkbuildError, UserError
from .settings import Settings


@dataclass(frozen=True)
class Row:
    line: int
    kernel: str
    arch: str
    module: str
    version: str = ""


@dataclass
class Outcome:
    row: Row
    status: str  # built | exists | failed
    image: str = ""
    detail: str = ""

    def cells(self) -> list[str]:
        return [self.row.kernel, self.row.arch, self.row.module, self.status, self.image,
                self.detail]

    def as_json(self) -> dict[str, Any]:
        return {"line": self.row.line, "kernel": self.row.kernel, "arch": self.row.arch,
                "module": self.row.module, "version": self.row.version, "status": self.status,
                "image": self.image, "detail": self.detail}


def parse(text: str, where: str = "the matrix") -> list[Row]:
    """Rows of `KERNEL ARCH MODULE [VERSION]`; # starts a comment. All errors at once."""
    rows, errors = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) not in (3, 4):
            errors.append(f"line {number}: expected KERNEL ARCH MODULE [VERSION], got {line!r}")
            continue
        try:
            archmod.resolve(fields[1])
        except UserError:
            errors.append(f"line {number}: unknown arch {fields[1]!r}")
            continue
        rows.append(Row(number, fields[0], fields[1], fields[2],
                        fields[3] if len(fields) == 4 else ""))
    if errors:
        raise UserError(f"{where} has {len(errors)} bad row(s): {'; '.join(errors)}",
                        f"supported arches are {', '.join(archmod.supported())}")
    if not rows:
        raise UserError(f"{where} has no rows", "add lines such as: 6.12.54 arm64 zfs")
    return rows


MATRIX_HINT = ("give a versions file with one KERNEL ARCH MODULE [VERSION] row per line, "
               "e.g. 6.12.54 arm64 zfs")


def read(path: Path) -> list[Row]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"cannot read matrix file {path}: {exc.strerror}", MATRIX_HINT) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"matrix file {path} is not text (byte {exc.start} is not UTF-8)",
                        MATRIX_HINT) from None
    return parse(text, f"matrix file {path}")


def run(settings: Settings, path: Path, base: modulemod.Request,
        plan_for: Callable[..., Any]) -> list[Outcome]:
    """Build every row in order; a failure is recorded and the next row runs."""
    rows = read(path)
    outcomes = []
    for index, row in enumerate(rows, 1):
        request = dataclasses.replace(base, kernel=row.kernel, module=row.module,
                                      arch=archmod.resolve(row.arch), version=row.version)
        label = f"[{index}/{len(rows)}] {row.module} for {row.kernel} ({row.arch})"
        started = time.monotonic()
        try:
            result = modulemod.build(settings, request, plan_for)
        except LkbuildError as exc:
            outcome = Outcome(row, "failed", "", exc.line().removeprefix("lkbuild: error: "))
        else:
            outcome = Outcome(row, "exists" if result.skipped else "built",
                              result.loader_refs[0],
                              f"{time.monotonic() - started:.0f} s")
        ui.info(f"{label}: {outcome.status} {outcome.detail}")
        outcomes.append(outcome)
    return outcomes
