"""Architecture names: one table (data/arches.yaml) behind one lookup.

Users say arm64, aarch64, AMD64 or x86_64 depending on which tool taught them; the kernel,
OCI, uname and qemu each want a different spelling. Keeping them as data means a new arch is
a YAML entry, not code.
"""
from __future__ import annotations

import functools
import platform as _platform
from dataclasses import dataclass
from importlib import resources

import yaml

from .errors import UserError


@dataclass(frozen=True)
class Arch:
    name: str
    aliases: tuple[str, ...]
    kernel_arch: str
    kernel_srcarch: str
    platform: str
    uname: str
    image_file: str
    image_name: str
    cross_compile: str
    cross_package: str
    qemu: str
    console: str
    vermagic: str

    def cross_prefix_from(self, build: Arch) -> str:
        """CROSS_COMPILE for building this arch on `build`; empty when native."""
        return "" if build.name == self.name else self.cross_compile


@functools.cache
def _table() -> dict[str, Arch]:
    text = resources.files("recipes").joinpath("data/arches.yaml").read_text()
    table: dict[str, Arch] = {}
    for name, fields in yaml.safe_load(text).items():
        table[name] = Arch(name=name, **{**fields, "aliases": tuple(fields["aliases"])})
    return table


def supported() -> list[str]:
    """Every accepted spelling, for error messages and help."""
    return sorted({alias for a in _table().values() for alias in a.aliases})


def canonical() -> list[str]:
    return sorted(_table())


def resolve(name: str) -> Arch:
    """Map any accepted spelling (any case) to its Arch, or refuse with the supported list."""
    key = (name or "").strip().lower()
    for arch in _table().values():
        if key in arch.aliases:
            return arch
    raise UserError(
        f"unknown arch {name!r}",
        f"supported are {', '.join(supported())}",
    )


def host() -> Arch:
    """The arch of the machine lkbuild runs on (the build platform for cross builds)."""
    return resolve(_platform.machine())


def from_uname(uname: str) -> Arch | None:
    """The arch whose `uname -m` is `uname`, or None: used to read config-<uname> file names."""
    for arch in _table().values():
        if arch.uname == uname:
            return arch
    return None
