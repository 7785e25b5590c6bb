"""The task edge every task module shares: checked flags, `edge`, settings and shared help.

`edge` is the one place where our exceptions become one stderr line and an exit code; the
help texts and helpers here are the ones several task modules use, so they read the same.
"""
from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from typing import Any

from invoke import Context, Exit, Task, task as invoke_task
from invoke.parser import Argument

from recipes import series as seriesmod, ui
from recipes.errors import LkbuildError, UserError
from recipes.settings import Settings

KERNEL_DIR_HELP = "kernel tree in linuxkit's layout (default: setting kernel_dir)"
JSON_HELP = "print JSON on stdout instead of a table"


USAGE_HINT = "`lkbuild --list` lists the tasks, `lkbuild -h TASK` a task's flags"


def whole_number_error(flag: str, value: str) -> Exit:
    """The usage line for a word given where a count or seconds go."""
    return Exit(f"lkbuild: error: {flag} takes a whole number, got {value!r} "
                f"(give digits only after {flag}; {USAGE_HINT})", 2)


class CheckedFlag(Argument):
    """A task flag whose value is checked as it is parsed.

    Invoke casts a typed flag's value (`--jobs lots` through int()) while it parses, before
    any task runs, so no task can catch the failure, and `inv` prints it as a traceback.
    Here it is lkbuild's one usage line, the same under `inv` and `lkbuild`."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except (TypeError, ValueError):
            raise whole_number_error(f"--{self.names[0]}", str(value)) from None

    def __repr__(self) -> str:
        # Invoke's parse errors name a flag by its repr ("Flag ... needed value"): the flag
        # as typed reads better there than the class's own <Argument: ...>
        return "--" + self.names[0].replace("_", "-")


class CheckedTask(Task):
    """Invoke's Task with CheckedFlag arguments."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            arg.__class__ = CheckedFlag
        return args


task = functools.partial(invoke_task, klass=CheckedTask)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn lkbuild errors, Ctrl-C and surprises into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        try:
            from recipes import resources
            for found in resources.adopt_helpers():
                ui.info(f"using the credential helper in {found}, which is not on PATH here "
                        f"(for docker itself: export PATH=\"{found}:$PATH\")")
            return fn(c, *args, **kwargs)
        except LkbuildError as exc:
            raise Exit(exc.line(), exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("lkbuild: interrupted", 130) from None
        except Exit:
            raise
        except Exception as exc:  # the last line of defence: still one line, no traceback
            if os.environ.get("LKBUILD_DEBUG"):
                traceback.print_exc()
            first = " ".join(str(exc).split()) or type(exc).__name__
            raise Exit(f"lkbuild: internal error: {type(exc).__name__}: {first} "
                       "(set LKBUILD_DEBUG=1 for a traceback)", 70) from None

    return wrapper


def settings(**flags: Any) -> Settings:
    return Settings(flags=flags)


def version_of(version: str, source: str, s: Settings) -> str:
    """The --version, or, when only a local --source is given, the version inside it."""
    from recipes import sources

    if not version and source and not sources.is_url(source):
        version = sources.tarball_version(sources.local_path(source), s.cache_dir)
    if not version:
        raise UserError("--version is required", "e.g. --version 6.12.54, or give a local "
                        "--source tarball to take the version from")
    seriesmod.parse_version(version)
    return version
