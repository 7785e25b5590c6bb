"""Tasks that prove lkbuild works, in the checkout: quickstart (the main job end to end), test
(after ruff and mypy) and bench."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from invoke import Context, Exit

from recipes.errors import LkbuildError, UserError
from recipes.settings import ROOT

from .common import edge, settings, task

TEST_TIERS = {"quick": "unit", "ci": "unit or ci", "full": "unit or ci or full"}
"""pytest markers each tier runs (tests/conftest.py gives every test exactly one of them)."""

CODE_CHECKS = (
    ("ruff", ("check", "."), "`ruff check --fix` fixes some; the rules are in pyproject.toml"),
    ("mypy", (), "the settings are in pyproject.toml"),
)
"""What every tier runs first, in the checkout: (module, its arguments, the hint on a failure)."""


def check_code() -> None:
    """ruff, then mypy, over the checkout; the first that finds a problem fails the task."""
    for name, args, hint in CODE_CHECKS:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{name} is not installed", "python3 -m pip install -e '.[test]'")
        if subprocess.call([sys.executable, "-m", name, *args], cwd=ROOT) != 0:
            raise LkbuildError(f"{name} found problems, listed above", hint)


@task(help={"quick": "ruff, mypy and the unit tests alone (about a minute)",
            "full": "every test: the CI tier and the full tier (over an hour on 2 cores)",
            "k": "only tests matching this pytest -k expression"})
@edge
def test(c: Context, quick: bool = False, full: bool = False, k: str = "") -> None:
    """Run ruff, mypy, then the unit and CI-tier tests (--quick: unit alone; --full: all)."""
    if quick and full:
        raise UserError("--quick and --full name two tiers", "give one of them, or neither "
                                                             "for the CI tier")
    tier = "quick" if quick else "full" if full else "ci"
    check_code()
    args = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", TEST_TIERS[tier]]
    if tier != "quick":  # where the time went, in every log of a run for real
        args += ["--durations=25"]
    if k:
        args += ["-k", k]
    code = os.spawnv(os.P_WAIT, sys.executable, args)
    if code:
        raise Exit(code=code)


@task(help={"quick": "the small test configs (about an hour on 2 cores) instead of the "
                     "series' full ones (hours)",
            "only": "comma-separated benchmarks: kernel_build, module_build, jobs, remote, "
                    "full_config (default: all)",
            "report": "run nothing: the goals table from the results already written"})
def bench(c: Context, quick: bool = False, only: str = "", report: bool = False) -> None:
    """Run the benchmarks side by side; print each figure against its goal (docs/benchmarks.md)."""
    args = [sys.executable, str(ROOT / "bench" / "run.py")] + (["--quick"] if quick else []) \
        + (["--only", only] if only else []) + (["--report"] if report else [])
    code = os.spawnv(os.P_WAIT, sys.executable, args)
    if code:
        raise Exit(code=code)


@task(help={"json": "print the summary as JSON (mode, passed, each step's command, status "
                    "and seconds) instead of a table"})
@edge
def quickstart(c: Context, json: bool = False) -> None:
    """Run lkbuild's main job end to end here, step by step, as the commands you would type."""
    from recipes import quickstart as quickstartmod, ui

    summary = quickstartmod.run(settings())
    if json:
        ui.emit_json(summary.as_json())
    else:
        quickstartmod.show(summary)
    if not summary.passed:
        failed = next(o for o in summary.outcomes if o.code not in (0, None))
        raise LkbuildError(f"quick start step '{failed.step.name}' failed: "
                           f"{failed.step.command()}", "its error is above the summary")
