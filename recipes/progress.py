"""Build progress read from BuildKit's plain output: steps, make's objects and estimates.

`docker buildx build --progress=plain` prints one line per event of a vertex (`#12 [compile
1/1] RUN ...`, `#12 1868.3   CC      drivers/x.o`, `#12 DONE 12.3s`, `#12 CACHED`). A person
wants the step, how many objects make has compiled out of how many, and how long is left:
this module turns the lines into that, and a build's object count and compile time into the
estimate for the next build of the same series, arch and config. Everything here is pure but
the two small functions that keep that record in the cache dir; ui.py draws it.
"""
from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import write_text

FIRST_BUILD = "first build of this config: no estimate yet"
EVERY = 30.0
"""Seconds between two progress lines where nothing is drawn (a pipe, CI): logs stay short."""
TAIL = 5
"""make lines shown under the compile bar."""

# --- BuildKit's plain lines ------------------------------------------------------------------

_VERTEX = re.compile(r"^#(\d+) (.*)$")
_OUTPUT = re.compile(r"^(\d+(?:\.\d+)?) (.*)$")
_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")
_ERROR = re.compile(r"^ERROR:? ?(.*)$")
# kbuild's quiet lines: `  CC      init/main.o`, `  CC [M]  fs/x.o`, `  AS      arch/x.o`.
_OBJECT = re.compile(r"^\s+[A-Z][A-Z0-9_]*(?: \[M\])?\s+(\S+\.o)\s*$")


@dataclass(frozen=True)
class Line:
    """One line of buildx's plain output.

    kind: "text" (a vertex's name the first time its number is seen, else its status),
    "output" (a line its process printed, `seconds` after it started), "done" (it finished in
    `seconds`), "cached", "error", "canceled", or "other" (not a vertex's: buildx's own)."""

    kind: str
    vertex: int = 0
    text: str = ""
    seconds: float | None = None


def parse(raw: str) -> Line:
    """A plain line as BuildKit prints it; never fails (anything unknown is "other")."""
    raw = raw.rstrip("\r\n")
    m = _VERTEX.match(raw)
    if m is None:
        return Line("other", text=raw)
    vertex, rest = int(m.group(1)), m.group(2)
    if rest == "CACHED":
        return Line("cached", vertex)
    if rest == "CANCELED":
        return Line("canceled", vertex)
    done = _DONE.match(rest)
    if done:
        return Line("done", vertex, seconds=float(done.group(1)))
    out = _OUTPUT.match(rest)
    if out:
        return Line("output", vertex, out.group(2), float(out.group(1)))
    err = _ERROR.match(rest)
    if err and rest.startswith("ERROR"):
        return Line("error", vertex, err.group(1))
    return Line("text", vertex, rest)


def make_object(text: str) -> str | None:
    """The object a make line says it built (`  CC      drivers/x.o` -> drivers/x.o)."""
    m = _OBJECT.match(text)
    return m.group(1) if m else None


# --- steps -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A vertex whose name matches `vertex`, or a line a vertex prints that matches `line`,
    starts `step`."""

    step: str
    vertex: str = ""
    line: str = ""


@dataclass(frozen=True)
class Recipe:
    """A build's steps in order, what starts each, and the step make compiles in."""

    steps: tuple[str, ...]
    rules: tuple[Rule, ...]
    compile: str = "compile"
    # compile.sh says make's seconds and the objects its build dir holds; otherwise the
    # compile step's time and the objects it made are what the next build expects.
    reports: bool = False
    subject: str = "this config"  # what an estimate comes from the last build of

    @property
    def first_build(self) -> str:
        return f"first build of {self.subject}: no estimate yet"


KERNEL = Recipe(
    steps=("source", "config", "compile", "package", "images"),
    rules=(
        # The base config step unpacks the source first (kernel/scripts/configure.sh).
        Rule("source", vertex=r"configure\.sh base|load build context"),
        Rule("config", vertex=r"configure\.sh final"),
        Rule("compile", vertex=r"compile\.sh"),
        Rule("compile", line=r"^lkbuild: make -j"),
        Rule("package", line=r"^lkbuild: packaging"),
        Rule("images", vertex=r"^\[(kernel|builder) |^exporting to image"),
    ),
    reports=True)

MODULE = Recipe(
    steps=("headers", "compile", "images"),
    rules=(
        Rule("headers", vertex=r"load build context|^\[kdev|^\[kfacts"),
        Rule("compile", vertex=r"^\[compile "),
        Rule("images", vertex=r"^\[(modules|loader) |^exporting to image"),
    ),
    subject="this module")

_MAKE_TOOK = re.compile(r"^lkbuild: make took (\d+) s$")
_MAKE_JOBS = re.compile(r"^lkbuild: make -j(\d+) ")
_MEMORY = re.compile(r"^lkbuild: memory in use: (\d+) MiB of (\d+) MiB$")
_IN_BUILD_DIR = re.compile(r"^lkbuild: (\d+) objects in the build dir$")
_BEFORE_MAKE = re.compile(r"^lkbuild: (\d+) objects in the build dir before make"
                          r"(?:, built from a config that differs in (\d+) of (\d+) symbols)?$")
REBUILD_SHARE = 0.05
"""A build dir whose last make built a config this close to the new one (the share of its
symbols that changed) is a rebuild: make recompiles what changed. Further off (the small
config's build dir given the full one) make compiles most of it again, as a cold build."""


class Tracker:
    """What one build's buildx runs have shown so far: the step, its times, make's objects.

    Steps only move forward (each buildx run replays the earlier steps' vertices as CACHED);
    time is charged to the step that was current, by the injected clock."""

    def __init__(self, recipe: Recipe, clock: Callable[[], float] = time.monotonic,
                 tail: int = TAIL) -> None:
        self.recipe = recipe
        self.clock = clock
        self.started = clock()
        self.step = ""
        self._since = self.started
        self.seconds: dict[str, float] = dict.fromkeys(recipe.steps, 0.0)
        self.objects = 0  # objects make built in this build
        self.compile_started: float | None = None
        self.make_seconds: int | None = None  # what compile.sh measured
        self.build_dir_objects: int | None = None  # what compile.sh counted after make
        self.objects_before: int | None = None  # and before it
        self.config_changed: tuple[int, int] | None = None  # symbols changed, of the config's
        self.compile_cached = False
        self.tail: deque[str] = deque(maxlen=tail)
        self.note = ""  # the last `lkbuild:` line a step printed
        self.jobs: int | None = None  # make's -j
        self.memory: tuple[int, int] | None = None  # MiB in use, and the builder's limit
        self.memory_peak = 0  # MiB, the most in use seen while make ran
        self._names: dict[int, str] = {}
        self._steps_of: dict[int, str] = {}
        self._rules = [(r.step, re.compile(r.vertex) if r.vertex else None,
                        re.compile(r.line) if r.line else None) for r in recipe.rules]

    def start(self, argv: Sequence[str] = ()) -> None:
        """A new buildx run: its vertices are numbered from #1 again."""
        self._names.clear()
        self._steps_of.clear()

    def _enter(self, step: str) -> None:
        order = self.recipe.steps
        if self.step and order.index(step) <= order.index(self.step):
            return
        now = self.clock()
        if self.step:  # the first step is charged from the start: buildx's own set-up
            self.seconds[self.step] += now - self._since
            self._since = now
        self.step = step
        if step == self.recipe.compile and self.compile_started is None:
            self.compile_started = now

    def feed(self, raw: str) -> Line:
        line = parse(raw)
        if line.kind == "text" and line.vertex not in self._names:
            self._names[line.vertex] = line.text
            for step, vertex, _ in self._rules:
                if vertex is not None and vertex.search(line.text):
                    self._steps_of[line.vertex] = step
                    self._enter(step)
                    break
        elif line.kind == "cached":
            if self._steps_of.get(line.vertex) == self.recipe.compile \
                    and self.step == self.recipe.compile and not self.objects \
                    and self.make_seconds is None:
                self.compile_cached = True
        elif line.kind == "output":
            self._output(line.text)
        return line

    def _output(self, text: str) -> None:
        for step, _, pattern in self._rules:
            if pattern is not None and pattern.search(text):
                self._enter(step)
                break
        if text.startswith("lkbuild: "):
            memory = _MEMORY.match(text)
            if memory:  # peak.sh, while make runs: not a note of the step
                self.memory = (int(memory.group(1)), int(memory.group(2)))
                self.memory_peak = max(self.memory_peak, self.memory[0])
                return
            self.note = text.removeprefix("lkbuild: ")
            jobs = _MAKE_JOBS.match(text)
            if jobs:
                self.jobs = int(jobs.group(1))
            before = _BEFORE_MAKE.match(text)
            if before:
                self.objects_before = int(before.group(1))
                if before.group(2):
                    self.config_changed = (int(before.group(2)), int(before.group(3)))
            took, counted = _MAKE_TOOK.match(text), _IN_BUILD_DIR.match(text)
            if took:
                self.make_seconds = int(took.group(1))
            if counted:
                self.build_dir_objects = int(counted.group(1))
            return
        if self.step == self.recipe.compile:
            if make_object(text):
                self.objects += 1
            if text.strip():
                self.tail.append(text.strip())

    def elapsed(self) -> float:
        return self.clock() - self.started

    def compile_elapsed(self) -> float:
        if self.compile_started is None:
            return 0.0
        if self.make_seconds is not None:
            return float(self.make_seconds)
        return self.clock() - self.compile_started

    def step_elapsed(self) -> float:
        return self.clock() - self._since if self.step else 0.0

    def summary(self) -> Summary:
        """The build's times per step (the current step charged up to now)."""
        seconds = dict(self.seconds)
        if self.step:
            seconds[self.step] += self.clock() - self._since
        limit = self.memory[1] if self.memory else None
        return Summary(self.elapsed(), seconds, self.objects, self.build_dir_objects,
                       self.make_seconds, self.compile_cached, self.jobs,
                       self.memory_peak or None, limit)

    @property
    def rebuild(self) -> bool:
        """make started on a build dir that held objects of this config or one close to it:
        it recompiles what changed."""
        if not self.objects_before:
            return False
        if self.config_changed is None:
            return True
        changed, of = self.config_changed
        return changed <= REBUILD_SHARE * of

    @property
    def held(self) -> int:
        """The objects a rebuild starts from (0: not a rebuild)."""
        return (self.objects_before or 0) if self.rebuild else 0

    def resources(self) -> str:
        """`make -j2, memory in use 3.1 of 7.8 GiB`: what a person checks when a build
        slows down or dies ("" before make started)."""
        parts = [f"make -j{self.jobs}"] if self.jobs else []
        if self.memory:
            parts.append(f"memory in use {gib(self.memory[0])} of {gib(self.memory[1])} GiB")
        return ", ".join(parts)

    def record(self) -> Earlier | None:
        """What the next build of this config estimates from; None when make did not run."""
        if self.compile_cached:
            return None
        if not self.recipe.reports:
            seconds = self.summary().steps.get(self.recipe.compile, 0.0)
            return Earlier(self.objects, seconds, self.objects) if self.objects else None
        if self.make_seconds is None or not self.build_dir_objects:
            return None
        return Earlier(self.build_dir_objects, float(self.make_seconds), self.objects)


# --- estimates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Earlier:
    """An earlier build of the same series, arch and config: the objects its build dir held,
    make's seconds, and the objects make compiled in those seconds."""

    objects: int
    seconds: float
    compiled: int

    def as_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "seconds": self.seconds, "compiled": self.compiled}


@dataclass(frozen=True)
class Forecast:
    done: int
    elapsed: float
    total: int | None  # None: no earlier build to know it from
    left: float | None
    held: int = 0  # the objects a rebuild's build dir held: no total or time left then

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def describe(self, first: str = FIRST_BUILD) -> str:
        """`4629/9619 objects, 21 min elapsed, about 22 min left`, or the first build's
        count and rate."""
        took = f"{duration(self.elapsed)} elapsed"
        if self.held:
            return (f"{self.done} objects recompiled, {took} (a rebuild: make recompiles what "
                    f"changed of the {self.held} in the build dir)")
        if self.total is None:
            return f"{self.done} objects, {took}, {self.rate:.1f} objects/s ({first})"
        left = "almost done" if not self.left or self.left < 1 else \
            f"about {duration(self.left)} left"
        return f"{self.done}/{self.total} objects, {took}, {left}"


def forecast(done: int, elapsed: float, earlier: Earlier | None, held: int = 0) -> Forecast:
    """Objects done out of the earlier build's count, and the time left: at first the
    earlier build's pace per object, then more and more this build's own (the machine may be
    busier or idler than it was), weighted by how far the build is. A rebuild (its build dir
    `held` objects) has neither: what changed decides."""
    if held:
        return Forecast(done, elapsed, None, None, held)
    if earlier is None or earlier.objects <= 0:
        return Forecast(done, elapsed, None, None)
    total = max(earlier.objects, done)
    remaining = total - done
    fraction = done / total
    per_object = earlier.seconds / earlier.compiled if earlier.compiled > 0 else 0.0
    stored = remaining * per_object
    own = remaining * elapsed / done if done > 0 and elapsed > 0 else stored
    if not per_object:
        stored = own
    return Forecast(done, elapsed, total, (1 - fraction) * stored + fraction * own)


def gib(mib: int) -> str:
    return f"{mib / 1024:.1f}"


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 12 s, 21 min, 1 h 05 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


class Throttle:
    """True at most once per `every` seconds of the injected clock."""

    def __init__(self, every: float = EVERY, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.every = every
        self.clock = clock
        self._last = clock()

    def due(self) -> bool:
        now = self.clock()
        if now - self._last < self.every:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        self._last = self.clock()


@dataclass
class Summary:
    """A finished build: its time, each step's, and what make did."""

    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    objects: int = 0  # compiled in this build
    build_dir_objects: int | None = None
    make_seconds: int | None = None
    cache_reused: bool = False  # the compile step came from BuildKit's cache
    jobs: int | None = None
    memory_peak_mib: int | None = None  # the most in use while make ran
    memory_limit_mib: int | None = None

    def shares(self) -> dict[str, int]:
        total = sum(self.steps.values()) or 1.0
        return {s: round(100 * t / total) for s, t in self.steps.items()}

    def line(self) -> str:
        shares = ", ".join(f"{s} {p}%" for s, p in self.shares().items())
        if self.cache_reused:
            made = "compile reused from BuildKit's cache"
        else:
            made = f"{self.objects} objects compiled"
            if self.build_dir_objects is not None:
                made += f" (the build dir holds {self.build_dir_objects})"
            if self.jobs and self.memory_peak_mib and self.memory_limit_mib:
                made += (f"; -j{self.jobs}, peak memory in use {gib(self.memory_peak_mib)} of "
                         f"{gib(self.memory_limit_mib)} GiB")
        return f"built in {duration(self.seconds)} ({shares}); {made}"

    def as_json(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1),
                "steps": [{"step": s, "seconds": round(t, 1), "share": self.shares()[s]}
                          for s, t in self.steps.items()],  # in order: JSON sorts keys
                "objects_compiled": self.objects, "build_dir_objects": self.build_dir_objects,
                "make_seconds": self.make_seconds, "cache_reused": self.cache_reused,
                "jobs": self.jobs, "memory_peak_mib": self.memory_peak_mib,
                "memory_limit_mib": self.memory_limit_mib}


# --- the record kept in the cache dir --------------------------------------------------------

def _record_file(cache_dir: Path | str, key: str) -> Path:
    return Path(cache_dir) / "progress" / f"{key}.json"


def earlier(cache_dir: Path | str, key: str) -> Earlier | None:
    """What the last build of this key measured (None: never built, or unreadable)."""
    try:
        found = json.loads(_record_file(cache_dir, key).read_text())
        e = Earlier(int(found["objects"]), float(found["seconds"]), int(found["compiled"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return e if e.objects > 0 else None


def remember(cache_dir: Path | str, key: str, new: Earlier) -> None:
    """Keep the build dir's latest object count, and the pace of the largest compile seen:
    an incremental rebuild compiles a few objects and says little of a cold build's time."""
    old = earlier(cache_dir, key)
    if old is not None and old.compiled > new.compiled:
        new = Earlier(new.objects, old.seconds, old.compiled)
    write_text(_record_file(cache_dir, key), json.dumps(new.as_json()) + "\n")
