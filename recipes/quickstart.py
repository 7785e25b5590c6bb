"""`inv quickstart`: lkbuild's main job end to end on this machine's best default.

Each step is the command a user would type, shown as such and run as such (a child lkbuild
with those flags), so what the quick start proves is exactly what those lines do, and a step
that fails leaves its own one-line error above the summary. On a Debian machine with Debian's
kernel source (scripts/setup-debian.sh installs it) everything runs offline: the build image
made with debootstrap, a small kernel for this arch booted in qemu, the hello module built
and loaded there, and the no-op rebuild. Elsewhere (a Mac with Docker Desktop) it builds the
series' kernel for the engine's arch, or the target's with --profile when desktop.yaml exists.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import ui
from .arch import Arch, from_uname, host, resolve
from .settings import ROOT, Settings

DEBIAN_SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")
OFFLINE_IMAGE = "lkbuild/build:bookworm"
PROFILE = Path("desktop.yaml")
# The small test configs need a few GB, not the 30 GB a full config's preflight asks for.
SMALL_FREE_GB = "10"


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # the task and its flags, as typed after `inv`
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self) -> str:
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        return prefix + "inv " + shlex.join(self.argv)


@dataclass
class Outcome:
    step: Step
    code: int | None  # None: not run (an earlier step failed)
    seconds: float

    @property
    def status(self) -> str:
        return "skipped" if self.code is None else "passed" if self.code == 0 else \
            f"failed (exit {self.code})"


@dataclass
class Summary:
    mode: str
    outcomes: list[Outcome]

    @property
    def passed(self) -> bool:
        return all(o.code == 0 for o in self.outcomes)

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "passed": self.passed,
                "seconds": round(sum(o.seconds for o in self.outcomes), 1),
                "steps": [{"step": o.step.name, "command": o.step.command(),
                           "status": o.status, "exit": o.code, "seconds": round(o.seconds, 1)}
                          for o in self.outcomes]}


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def offline_steps(arch: Arch) -> list[Step]:
    """Debian's source, the debootstrapped build image and a small config: nothing pulled."""
    config = ROOT / "tests" / "data" / f"small-{arch.uname}.config"
    kernel = ("--source", str(DEBIAN_SOURCE), "--arch", arch.name, "--config", _relative(config),
              "--build-image", OFFLINE_IMAGE)
    env = {"LKBUILD_MIN_FREE_GB": os.environ.get("LKBUILD_MIN_FREE_GB") or SMALL_FREE_GB}
    return [
        Step("check the machine", ("doctor",)),
        Step("make the offline build image", ("bootstrap-image",)),
        Step("take Debian's kernel source", ("fetch", "--source", str(DEBIAN_SOURCE))),
        Step("build a small kernel", ("build", *kernel), env),
        Step("boot it in qemu", ("vmtest", *kernel), env),
        Step("build the hello module", ("buildmodule", *kernel, "--module", "hello"), env),
        Step("load it in qemu", ("vmtest", *kernel, "--module", "hello"), env),
        Step("build again: up to date", ("build", *kernel), env),
    ]


def online_steps(settings: Settings, arch: Arch) -> list[Step]:
    """The series' kernel (or the profiled target's) from kernel.org for the engine's arch."""
    if PROFILE.is_file():
        kernel: tuple[str, ...] = ("--profile", str(PROFILE))
    else:
        from .series import KernelTree

        tree = KernelTree(settings.kernel_dir)
        version = tree.series[tree.names()[-1]].version
        kernel = ("--version", version, "--arch", arch.name)
    return [
        Step("check the engine", ("doctor",)),
        Step("build the kernel", ("build", *kernel)),
        Step("build again: up to date", ("build", *kernel)),
    ]


def engine_arch(settings: Settings) -> Arch:
    """The arch the current engine runs (Docker Desktop's VM on a Mac); this machine's when
    the engine does not say (doctor then says why)."""
    from .engine import connect
    from .errors import LkbuildError

    try:
        found = str(connect(settings).info().get("Architecture") or "")
    except LkbuildError:
        return host()
    return (from_uname(found) or resolve(found)) if found else host()


def plan(settings: Settings) -> tuple[str, list[Step]]:
    if DEBIAN_SOURCE.is_file() and (ROOT / "tests" / "data").is_dir():
        return "offline (Debian's kernel source)", offline_steps(host())
    return "online (kernel.org)", online_steps(settings, engine_arch(settings))


def run(settings: Settings) -> Summary:
    """Every step in order, each shown as its command first; a failed step ends the run (the
    later ones need what it makes)."""
    mode, steps = plan(settings)
    ui.info(f"lkbuild quick start, {mode}: {len(steps)} steps")
    outcomes: list[Outcome] = []
    failed = False
    for number, step in enumerate(steps, 1):
        if failed:
            outcomes.append(Outcome(step, None, 0.0))
            continue
        ui.info(f"\n[{number}/{len(steps)}] {step.name}\n$ {step.command()}")
        started = time.monotonic()
        # The step's results go to stderr with its progress: stdout is the summary's
        code = subprocess.call([sys.executable, "-m", "recipes", *step.argv], cwd=ROOT,
                               env={**os.environ, **step.env}, stdout=2)
        outcomes.append(Outcome(step, code, time.monotonic() - started))
        failed = code != 0
    return Summary(mode, outcomes)


def show(summary: Summary) -> None:
    ui.table(["step", "command", "result", "seconds"],
             [(o.step.name, o.step.command(), o.status, f"{o.seconds:.1f}")
              for o in summary.outcomes],
             title=f"lkbuild quick start, {summary.mode}")
