"""Kernel images: names and tags (DESIGN.md section 3).

Tags carry the version, the content hash and the arch, so an unchanged build is found by name
and any change of input gives a new tag instead of overwriting an old one.
"""
from __future__ import annotations

from .arch import Arch
from .settings import Settings

IMAGE = "kernel"


def repository(settings: Settings, image: str = IMAGE) -> str:
    """`[registry/]org/image`: the registry prefix only when one is set."""
    prefix = f"{settings.registry.rstrip('/')}/" if settings.registry else ""
    return f"{prefix}{settings.org}/{image}"


def tag(version: str, digest: str | None, arch: Arch | None, debug: bool = False,
        builder: bool = False) -> str:
    """`<v>[-dbg][-<hash>][-<arch>][-builder]`, the linuxkit tag scheme plus the debug marker."""
    parts = [version]
    if debug:
        parts.append("dbg")
    if digest:
        parts.append(digest)
    if arch is not None:
        parts.append(arch.name)
    if builder:
        parts.append("builder")
    return "-".join(parts)


def ref(settings: Settings, version: str, digest: str | None, arch: Arch | None,
        debug: bool = False, builder: bool = False) -> str:
    return f"{repository(settings)}:{tag(version, digest, arch, debug, builder)}"
