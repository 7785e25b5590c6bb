"""Output: results on stdout, everything else on stderr.

Tasks are chained in shell scripts, so stdout carries only what a script would capture (image
references, a table that is the answer, or JSON); progress, warnings and logs go to stderr.
Colour follows rich's own rules, which honour NO_COLOR and plain pipes.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO, cast

from rich.console import Console, Group, RenderableType
from rich.errors import LiveError
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import progress

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


# --- build progress --------------------------------------------------------------------------

RECIPES = {"kernel": progress.KERNEL, "module": progress.MODULE}
_plain_progress = False
_view: ContextVar[BuildView | None] = ContextVar("lkbuild_build_view", default=None)


def plain_progress(plain: bool) -> None:
    """Progress as plain lines even on a terminal (--json: whoever reads it is a script)."""
    global _plain_progress
    _plain_progress = plain


def current_view() -> BuildView | None:
    """The build progress buildx output goes to (None: stream it as it comes)."""
    return _view.get()


class BuildView:
    """One build's progress on stderr, fed buildx's plain lines.

    On a terminal a live display (steps, a compile bar with objects done of those expected,
    elapsed and left, the last make lines); elsewhere a line per step and a progress line
    every 30 seconds, never a control code. The whole output is in the build's log."""

    def __init__(self, recipe: progress.Recipe, console: Console,
                 earlier: progress.Earlier | None = None, estimate: bool = True,
                 mode: str = "plain", clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = progress.Tracker(recipe, clock)
        self.console = console
        self.earlier = earlier
        self.estimate = estimate
        self.mode = mode  # live | plain | raw (buildx's own lines, as they come)
        self.final: progress.Summary | None = None
        self.throttle = progress.Throttle(progress.EVERY, clock)
        self._shown_step = ""
        self._said_cached = False

    # what buildx.run calls
    def start(self, argv: Sequence[str]) -> None:
        self.tracker.start(argv)

    def line(self, raw: str) -> None:
        self.tracker.feed(raw)
        if self.mode == "plain":
            self._plain()
        elif self.mode == "raw":
            self.console.print(raw.rstrip("\n"), markup=False, style="dim")

    # plain lines
    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, style=None)

    def _plain(self) -> None:
        t = self.tracker
        if t.step != self._shown_step and not self._waiting(t):
            self._shown_step = t.step
            self.throttle.reset()
            self._say(f"step {t.recipe.steps.index(t.step) + 1}/{len(t.recipe.steps)}: "
                      f"{t.step}{self._expectation()}")
        if t.compile_cached and not self._said_cached:
            self._said_cached = True
            self._say(f"{t.step}: cached (BuildKit reused an earlier compile of these inputs)")
        if t.step and t.step == self._shown_step and self.throttle.due():
            self._say(self.status())

    @staticmethod
    def _waiting(t: progress.Tracker) -> bool:
        """A kernel's compile step is named once compile.sh has said whether its build dir
        held objects (a rebuild has no estimate), or BuildKit's cache gave it."""
        return t.recipe.reports and t.step == t.recipe.compile and t.objects_before is None \
            and not t.compile_cached and t.make_seconds is None and not t.objects

    def _expectation(self) -> str:
        t = self.tracker
        if t.step != t.recipe.compile or not self.estimate:
            return ""
        if t.rebuild:
            return f" (a rebuild: the build dir holds {t.held} objects)"
        if self.earlier is None:
            return f" ({t.recipe.first_build})"
        return (f" (expecting {self.earlier.objects} objects in about "
                f"{progress.duration(self.earlier.seconds)}, as the last build of "
                f"{t.recipe.subject})")

    def forecast(self) -> progress.Forecast:
        t = self.tracker
        return progress.forecast(t.objects, t.compile_elapsed(),
                                 self.earlier if self.estimate else None,
                                 t.held)

    def status(self) -> str:
        """`compile: 4629/9619 objects, 21 min elapsed, about 22 min left`; in another
        step its time and what it last said."""
        t = self.tracker
        if t.step == t.recipe.compile and not t.compile_cached:
            text = self.forecast().describe(t.recipe.first_build)
            if not self.estimate:
                text = text.replace(f" ({t.recipe.first_build})", "")
            used = t.resources()
            return f"{t.step}: {text}" + (f"; {used}" if used else "")
        note = f" ({t.note})" if t.note else ""
        return f"{t.step}: {progress.duration(t.step_elapsed())} elapsed{note}"

    # the live display
    def __rich__(self) -> RenderableType:
        return render(self)

    def summary(self) -> progress.Summary:
        """The build's summary: as it ended, or so far."""
        return self.final or self.tracker.summary()


def render(view: BuildView) -> RenderableType:
    """The live display: the steps, the compile bar, the last make lines."""
    t = view.tracker
    steps = Text()
    current = t.recipe.steps.index(t.step) if t.step else -1
    for n, step in enumerate(t.recipe.steps):
        mark, style = ("✓", "green") if n < current else ("●", "bold") if n == current \
            else ("·", "dim")
        steps.append(f"{mark} {step}  ", style=style)
    steps.append(progress.duration(t.elapsed()), style="dim")
    rows: list[RenderableType] = [steps]
    if t.step == t.recipe.compile and not t.compile_cached:
        f = view.forecast()
        bar = Table.grid(padding=(0, 1))
        bar.add_column(width=40)
        bar.add_column()
        text = f.describe(t.recipe.first_build)
        if not view.estimate:
            text = text.replace(f" ({t.recipe.first_build})", "")
        bar.add_row(ProgressBar(total=f.total, completed=f.done, width=40),
                    Text(text))
        rows.append(bar)
        if t.resources():
            rows.append(Text(t.resources(), style=memory_style(t.memory)))
        rows += [Text(f"  {line}", style="dim", overflow="ellipsis", no_wrap=True)
                 for line in list(t.tail)]
    else:
        rows.append(Text(view.status(), overflow="ellipsis", no_wrap=True))
    return Group(*rows)


def memory_style(memory: tuple[int, int] | None) -> str:
    """Red from 90% of the builder's limit: the next make job may be killed."""
    return "bold red" if memory and memory[0] >= 0.9 * memory[1] else ""


@contextlib.contextmanager
def build_view(kind: str, raw: bool = False, earlier: progress.Earlier | None = None
               ) -> Iterator[BuildView | None]:
    """Show one build's progress while it runs, then its summary; `raw` (--verbose) streams
    buildx's own lines instead. None inside another build's view (that one shows it)."""
    if current_view() is not None:
        yield None
        return
    mode = "raw" if raw else "live" if err.is_terminal and not _plain_progress else "plain"
    view = BuildView(RECIPES[kind], err, earlier, mode=mode)
    token = _view.set(view)
    display = Live(view, console=err, refresh_per_second=4, transient=True,
                   redirect_stdout=False, redirect_stderr=False) if mode == "live" else None
    try:
        if display is not None:
            try:
                display.start()
            except LiveError:  # another live display on this console: plain lines then
                display, view.mode = None, "plain"
        yield view
    except BaseException:
        if display is not None:
            display.stop()
            display = None
        t = view.tracker
        if t.step:
            view._say(f"stopped in {t.step} after {progress.duration(t.elapsed())}")
        raise
    finally:
        if display is not None:
            display.stop()
        _view.reset(token)
    view.final = view.tracker.summary()
    view._say(view.final.line())


# --- bytes on the move -----------------------------------------------------------------------

class Transfer:
    """Bytes of one transfer (a download, an image from a build host, layers to a registry).

    On a terminal a bar with the rate and time left; elsewhere (a pipe, CI, --json) a line
    every 30 seconds and one at the end, never a control code."""

    def __init__(self, label: str, total: int | None, console: Console, live: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.console = console
        self.clock = clock
        self.started = clock()
        self.throttle = progress.Throttle(progress.EVERY, clock)
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if live:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
            self._task = self._bar.add_task(label, total=total)

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, done: int, total: int | None = None) -> None:
        """`done` bytes so far (of `total`, when it became known)."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=self.total)
        elif self.throttle.due():
            self._say(self.describe())

    def reader(self, fh: BinaryIO) -> BinaryIO:
        """fh, its reads counted here (what an HTTP client sends from)."""
        return cast(BinaryIO, _Counted(fh, self))

    def rate(self) -> float:
        took = self.clock() - self.started
        return self.done / took if took > 0 else 0.0

    def describe(self) -> str:
        """`fetching X: 120.3 MB of 681.0 MB, 45.1 MB/s`."""
        of = f" of {size(self.total)}" if self.total else ""
        return f"{self.label}: {size(self.done)}{of}, {size(int(self.rate()))}/s"

    def finished(self) -> str:
        took = self.clock() - self.started
        return f"{self.label}: {size(self.done)} in {progress.duration(took)} " \
            f"({size(int(self.rate()))}/s)"

    def _say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, style=None)


class _Counted:
    def __init__(self, fh: BinaryIO, moved: Transfer) -> None:
        self._fh = fh
        self._moved = moved

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._moved.advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@contextlib.contextmanager
def transfer(label: str, total: int | None = None) -> Iterator[Transfer]:
    """Show one transfer while it runs, then a line with its bytes, time and rate."""
    t = Transfer(label, total, err, err.is_terminal and not _plain_progress)
    if t._bar is not None:
        try:
            t._bar.start()
        except LiveError:  # a build's live display holds the console: lines then
            t._bar = None
    try:
        yield t
    finally:
        if t._bar is not None:
            t._bar.stop()
    if t.done:
        t._say(t.finished())
