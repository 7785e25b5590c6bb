"""What kernels a tree defines and which of them are built: `inv list` and `inv add-kernel`."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import kconfig, kernel, module, ui
from .arch import resolve
from .errors import InfraError
from .modrecipe import in_tree_status
from .series import KernelTree, bump_version, parse_version, series_of, start_series
from .settings import Settings

KERNEL_HASH_IN_REF = re.compile(r"-([0-9a-f]{16})-[a-z0-9]+$")
"""The content hash in a kernel image's `<v>-<hash>-<arch>` tag (a module's kernel label)."""


def image_kind(tags: list[str], labels: dict[str, str]) -> str:
    """kernel, builder, module or loader: the labels say kernel or module; lkbuild's own tag
    names say which image of the two."""
    if f"{kernel.LABEL}.hash" in labels:
        return "builder" if any("-builder" in t.split(":")[-1] for t in tags) else "kernel"
    return "loader" if any("-loader-" in t.split(":")[-1] for t in tags) else "module"


def image_rows(images: list[dict[str, Any]], current: set[str],
               now: float | None = None) -> list[dict[str, Any]]:
    """One row per tagged local image lkbuild built, newest first (an untagged one is an
    earlier build whose tags moved on). `current` holds the kernel hashes of the series'
    current inputs: a kernel or its builder with one of them, and a module built against
    one, is current."""
    now = time.time() if now is None else now
    rows = []
    for image in images:
        labels = image.get("Labels") or {}
        tags = sorted(t for t in image.get("RepoTags") or [] if t != "<none>:<none>")
        if not tags:
            continue
        kind = image_kind(tags, labels)
        if kind in ("kernel", "builder"):
            digest = labels.get(f"{kernel.LABEL}.hash", "")
            kernel_hash, version = digest, labels.get(f"{kernel.LABEL}.version", "")
            release = labels.get(f"{kernel.LABEL}.release", "")
            arch = labels.get(f"{kernel.LABEL}.arch", "")
        else:
            digest = labels.get(f"{module.LABEL}.hash", "")
            found = KERNEL_HASH_IN_REF.search(labels.get(f"{module.LABEL}.kernel.image", ""))
            kernel_hash = found.group(1) if found else ""
            version = labels.get(f"{module.LABEL}.version", "")
            release = labels.get(f"{module.LABEL}.kernel.release", "")
            arch = labels.get(f"{module.LABEL}.arch", "")
        name = tags[0].rsplit(":", 1)[0]
        rows.append({"kind": kind, "name": name, "version": version, "release": release,
                     "arch": arch, "hash": digest, "id": str(image.get("Id", "")),
                     "size": int(image.get("Size") or 0), "created": int(image.get("Created") or 0),
                     "age_s": max(0, int(now - int(image.get("Created") or 0))), "tags": tags,
                     "current": bool(kernel_hash) and kernel_hash in current})
    return sorted(rows, key=lambda r: (-r["created"], r["kind"], r["tags"]))


def local_images(settings: Settings, current: set[str]) -> list[dict[str, Any]] | None:
    """The kernel and module images lkbuild built on this engine (None: it cannot be reached)."""
    from . import engine

    try:
        eng = engine.connect(settings)
        found = {i["Id"]: i for label in (f"{kernel.LABEL}.hash", f"{module.LABEL}.hash")
                 for i in eng.labelled_images(label)}
    except InfraError as exc:
        ui.warn(f"cannot list the images on the engine: {exc.message}")
        return None
    return image_rows(list(found.values()), current)


def settle_built(rows: list[dict[str, Any]], images: list[dict[str, Any]] | None) -> None:
    """A series row whose image could not be looked up (no hash without the source) is not
    built when the engine holds no kernel of its version and arch at all."""
    if images is None:
        return
    have = {(i["version"], i["arch"]) for i in images if i["kind"] == "kernel"}
    for row in rows:
        if row["built"] is None and row["arch"] and (row["version"], row["arch"]) not in have:
            row["built"] = False


def _image_lookup(settings: Settings) -> Callable[[str], bool | None]:
    """ref -> exists (None when the engine cannot be reached); connects on first use only."""
    from . import engine

    state: dict[str, Any] = {}

    def exists(ref: str) -> bool | None:
        if "engine" not in state:
            try:
                state["engine"] = engine.connect(settings)
                state["engine"].info()
            except InfraError as exc:
                ui.warn(f"cannot tell which images exist: {exc.message}")
                state["engine"] = None
        eng = state["engine"]
        return None if eng is None else eng.image_exists(ref)

    return exists


def kernels(settings: Settings, version: str = "", arch_name: str = "",
            source: str = "") -> list[dict[str, Any]]:
    """One row per series and arch with a config (one row with arch None when it has none).

    `version` narrows to the series it belongs to (any version of the series, as a build
    would take it) and `arch_name` to one arch, which must then have a config. `source` is
    the --source a build would use, whose digest is part of the hash.
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
        # The hash needs the source's digest: a given --source, or a verified cached tarball
        # (never a download just to list).
        have_source = bool(source) or sources.cached_sha256(settings, kver) is not None
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
            # What a kernel of this config has of the in-tree recipes' modules (sctp: built-in,
            # module or missing), before anyone builds it.
            has = in_tree_status(Path(settings.module_dir),
                                 kconfig.parse(series.config(arch).read_text()))
            if have_source:
                p = kernel.plan(settings, kernel.Request(version=kver, arch=arch,
                                                         source=source or None))
                digest, image = p.digest, p.refs[0]
                built = exists(image)
            rows.append({**base, "arch": arch.name, "hash": digest, "image": image,
                         "built": built, "in_tree_modules": has})
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
