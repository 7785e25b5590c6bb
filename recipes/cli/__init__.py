"""The Invoke tasks: parse flags, call a recipe, print the result.

`tasks.py` at the top of the checkout re-exports `ns`, so `inv TASK` works there; the
`lkbuild` console script runs the same namespace through invoke.Program anywhere.
Every task goes through `edge` (in `common`), the one place where our exceptions become one
stderr line and an exit code.

The tasks are split by capability, one module each: `kernel_tasks` (list, add-kernel, fetch,
the builds, kconfig), `module_tasks` (buildmodule, vmtest), `remote_tasks` (remote-build),
`registry_tasks` (push, pull), `machine_tasks` (config, detect, doctor, bootstrap-image,
prune) and `dev_tasks` (quickstart, test, bench). This module puts them in one namespace, in
the order `inv --list` has always had them, and turns Invoke's parse errors into lkbuild's
usage line.
"""
from __future__ import annotations

import re

from invoke import Collection, Exit, Program

from recipes.settings import ROOT

from .common import (
    JSON_HELP,
    KERNEL_DIR_HELP,
    USAGE_HINT,
    CheckedFlag,
    CheckedTask,
    edge,
    settings,
    task,
    version_of,
    whole_number_error,
)
from .dev_tasks import CODE_CHECKS, TEST_TIERS, bench, check_code, quickstart, test
from .kernel_tasks import (
    BUILD_HELP,
    add_kernel,
    build,
    builddebugkernel,
    buildplainkernel,
    fetch,
    kconfig,
    list_,
)
from .machine_tasks import bootstrap_image, config, detect, doctor, prune
from .module_tasks import buildmodule, kernel_planner, vmtest
from .registry_tasks import pull, push
from .remote_tasks import remote_build

__all__ = [
    "BUILD_HELP", "CODE_CHECKS", "JSON_HELP", "KERNEL_DIR_HELP", "ROOT", "TEST_TIERS",
    "USAGE_HINT", "CheckedFlag", "CheckedTask", "LkbuildProgram", "add_kernel", "bench",
    "bootstrap_image", "build", "builddebugkernel", "buildmodule", "buildplainkernel",
    "check_code", "config", "detect", "doctor", "edge", "fetch", "kconfig", "kernel_planner",
    "list_", "main", "ns", "prune", "pull", "push", "quickstart", "remote_build", "settings",
    "task", "test", "usage_error", "version_of", "vmtest", "whole_number_error",
]

ns = Collection(config, list_, add_kernel, fetch, doctor, bootstrap_image, buildplainkernel,
                builddebugkernel, build, kconfig, buildmodule, vmtest, remote_build, push,
                detect, pull, prune, quickstart, test, bench)
ns.configure({"run": {"echo": False}})


def usage_error(exc: Exception) -> Exit:
    """A command line Invoke could not parse, as lkbuild's one error line (exit 2)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"Flag <\w+: ([\w-]+)[^>]*>",
                  lambda m: "flag --" + m.group(1).replace("_", "-"), text)
    text = re.sub(r"^Flag (--[\w-]+)", r"flag \1", text)
    return Exit(f"lkbuild: error: {text} ({USAGE_HINT})", 2)


class LkbuildProgram(Program):
    """Invoke's Program with its parse errors in lkbuild's one-line form."""

    def parse_tasks(self) -> None:
        from invoke.exceptions import ParseError

        try:
            super().parse_tasks()
        except ParseError as exc:
            raise usage_error(exc) from None


def main() -> None:
    """Console script `lkbuild`: the same namespace, usable outside the checkout."""
    LkbuildProgram(namespace=ns, name="lkbuild", binary="lkbuild", version=_version()).run()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lkbuild")
    except PackageNotFoundError:
        return "unknown"
