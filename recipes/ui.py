"""Output: results on stdout, everything else on stderr.

Tasks are chained in shell scripts, so stdout carries only what a script would capture (image
references, a table that is the answer, or JSON); progress, warnings and logs go to stderr.
Colour follows rich's own rules, which honour NO_COLOR and plain pipes.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

err = Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    """A console for stdout made per call, so tests that swap sys.stdout see the output."""
    return Console(file=sys.stdout, highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else 200)


def info(message: str) -> None:
    err.print(message, markup=False)


def warn(message: str) -> None:
    err.print(f"lkbuild: warning: {message}", style="yellow", markup=False)


def result(line: str) -> None:
    """One result line (an image reference, a path) for scripts to capture."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=_plain) + "\n")
    sys.stdout.flush()


def size(n: int) -> str:
    """Bytes as docker shows image sizes (decimal units)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def age(seconds: int) -> str:
    """How long ago, in the largest whole unit."""
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds // scale} {unit} ago"
    return "just now"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> None:
    """A table that is the task's answer, on stdout."""
    t = Table(title=title or None, show_lines=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(Text("" if v is None else str(v)) for v in row))
    out_console().print(t)
