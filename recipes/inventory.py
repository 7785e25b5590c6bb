"""What kernels a tree defines and which of them are built: `inv list` and `inv add-kernel`."""
from __future__ import annotations

from typing import Any

from . import kernel, ui
from .arch import resolve
from .errors import InfraError
from .series import BuildInputs, KernelTree, bump_version, parse_version, series_of, start_series
from .settings import Settings


def _image_lookup(settings: Settings) -> Any:
    """A function ref -> bool|None; None everywhere when the engine cannot be reached."""
    from . import engine

    try:
        eng = engine.connect(settings)
        eng.info()
    except InfraError as exc:
        ui.warn(f"cannot tell which images exist: {exc.message}")
        return lambda ref: None
    return eng.image_exists


def kernels(settings: Settings, version: str = "", arch_name: str = "") -> list[dict[str, Any]]:
    """One row per series and arch with a config (one row with arch None when it has none).

    `version` narrows to the series it belongs to (any version of the series, as a build
    would take it) and `arch_name` to one arch, which must then have a config.
    """
    from . import sources

    only_arch = resolve(arch_name) if arch_name else None
    tree = KernelTree(settings.kernel_dir)
    wanted = [tree.for_version(version).name] if version else tree.names()
    exists = _image_lookup(settings)
    rows: list[dict[str, Any]] = []
    for name in wanted:
        series = tree.series[name]
        kver = version or series.version
        source_sha = sources.cached_sha256(settings, kver)
        base = {"series": name, "version": kver, "variants": sorted(series.variants),
                "deprecated": series.deprecated, "path": str(series.path),
                "build_image": series.build_args.get("BUILD_IMAGE", "")}
        arches = series.arches()
        if only_arch is not None:
            series.config(only_arch)
            arches = [only_arch]
        if not arches:
            rows.append({**base, "arch": None, "hash": None, "image": None, "built": None})
        for arch in arches:
            digest = None
            image = None
            built = None
            if source_sha:
                inputs = BuildInputs(tree, series, kver, arch, source_sha256=source_sha)
                digest = inputs.digest()
                image = kernel.ref(settings, kver, digest, arch)
                built = exists(image)
            rows.append({**base, "arch": arch.name, "hash": digest, "image": image,
                         "built": built})
    if any(r["arch"] and not r["hash"] for r in rows):
        ui.info("hash needs the verified source: `inv fetch --version V` (or build once)")
    return rows


def add_kernel(settings: Settings, version: str) -> str:
    """Bump the series' KERNEL_VERSION, or start the series from the nearest earlier one."""
    parse_version(version)
    tree = KernelTree(settings.kernel_dir)
    name = series_of(version)
    if name in tree.series:
        series = tree.series[name]
        old = series.version
        if bump_version(series, version):
            ui.info(f"{name}: KERNEL_VERSION {old} -> {version}")
        else:
            ui.info(f"{name}: KERNEL_VERSION is already {version}; nothing changed")
        return str(series.path / "build-args")
    target, base = start_series(tree, version)
    ui.info(f"started {name} from {base.name} (build-args and configs; patches not carried over)")
    for cfg in sorted(target.glob("config-*")):
        ui.info(f"  {cfg.name} comes from {base.name} and needs a kconfig pass: "
                f"inv kconfig --version {version} --arch {cfg.name[len('config-'):]} "
                "--olddefconfig --save")
    return str(target)
