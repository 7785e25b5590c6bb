"""The series configs lkbuild ships, made from their recipe and never edited by hand.

A series dir may hold `configs.yml`: for each arch (by `uname -m`), the kernel's own config
target with its own fragments (`defconfig+virt.config`) and lkbuild's fragments merged after
it. `inv kconfig --regenerate` makes every arch's config from it, so the shipped configs can
be checked to be exactly what their inputs make.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import kernel
from .arch import Arch, from_uname
from .errors import UserError
from .series import KernelTree
from .settings import Settings, read_yaml

RECIPE = "configs.yml"


@dataclass(frozen=True)
class Recipe:
    arch: Arch
    base: str  # config target, then fragment targets after a +
    fragments: tuple[Path, ...]


def recipes(settings: Settings, version: str) -> list[Recipe]:
    """The series' recipe for each arch, checked before anything runs."""
    series = KernelTree(settings.kernel_dir).for_version(version)
    path = series.path / RECIPE
    if not path.is_file():
        raise UserError(f"series {series.name} has no {RECIPE}",
                        f"add {path} naming each arch's base and fragments")
    data = read_yaml(path, "config recipe")
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path} must map each arch (x86_64, aarch64) to its base and "
                        "fragments")
    out = []
    for uname, entry in data.items():
        arch = from_uname(str(uname))
        if arch is None or not isinstance(entry, dict) or not entry.get("base"):
            raise UserError(f"{path}: {uname!r} is not an arch with a base",
                            "e.g. aarch64: {base: defconfig+virt.config, fragments: [...]}")
        fragments = tuple((path.parent / str(f)).resolve() for f in entry.get("fragments") or [])
        for fragment in fragments:
            if not fragment.is_file():
                raise UserError(f"{path}: fragment {fragment} does not exist")
        out.append(Recipe(arch, str(entry["base"]), fragments))
    return out


def regenerate(settings: Settings, request: kernel.Request, output: Path | None
               ) -> list[kernel.KconfigResult]:
    """Every arch's config from the recipe, saved over the series config (or into `output`,
    a directory, as config-<uname>)."""
    results = []
    for recipe in recipes(settings, request.version):
        arch_request = replace(request, arch=recipe.arch, fragments=recipe.fragments,
                               config=None)
        target = output / f"config-{recipe.arch.uname}" if output is not None else None
        results.append(kernel.kconfig_run(settings, arch_request, base=recipe.base, save=True,
                                          output=target))
    return results
