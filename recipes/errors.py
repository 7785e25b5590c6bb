"""lkbuild's exception types.

Everything a user can get wrong, or the machine can lack, is raised as one of these deep in
the recipes and turned into exactly one stderr line and an exit code at the task edge
(`recipes.cli`). Nothing below the task edge calls sys.exit or prints a traceback.
"""
from __future__ import annotations


class LkbuildError(Exception):
    """Base type: a one-line message plus, optionally, the fix."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The single line printed for this error: cause, then the fix."""
        text = " ".join(self.message.split())
        if self.hint:
            text = f"{text} ({' '.join(self.hint.split())})"
        return f"lkbuild: error: {text}"


class UserError(LkbuildError):
    """Bad input: a flag, setting, file or tree the user gave us."""

    exit_code = 2


class InfraError(LkbuildError):
    """The machine or a service is not in a state we can work with (engine, disk, network)."""

    exit_code = 3


class VerifyError(LkbuildError):
    """Content did not match what it claims to be (checksum, signature, version)."""

    exit_code = 4


class BuildError(LkbuildError):
    """A build ran and failed; the log path is part of the message."""

    exit_code = 5
