"""Module recipes: module/<name>/recipe.yml, checked against a schema kept as data.

A recipe says where a module's sources come from (a pinned tarball or Debian package, or a
directory), which kernel config options it needs and how to build it. A plain directory with
a Makefile (docker-module-builder's convention) is a module too, without a recipe. Everything
here is pure or reads files only, so it is unit-tested without an engine.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .settings import ROOT, Settings, read_yaml

RECIPE_FILE = "recipe.yml"
IN_TREE_VERSION = "in-tree"  # an in-tree module's version is its kernel's release
IN_TREE_REQUIRE = ("CONFIG_MODULES",)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
MODULE_VERSION_RE = re.compile(r'MODULE_VERSION\(\s*"([A-Za-z0-9_.+~-]{1,64})"\s*\)')
TARGET_RE = re.compile(r"^[A-Za-z0-9_.$()/%-][^=:#\t]*:(?!:?:?=)", re.M)
"""A make rule (`all:`), as opposed to an assignment (`obj-m := x.o`)."""
BUILD_ARTIFACTS = re.compile(r"(.*\.(o|ko|mod|mod\.c|cmd|order|symvers)|\.tmp_versions|\.git)")
"""Files a module dir holds after a build on the host; never part of the build input."""


@functools.cache
def schema() -> dict[str, Any]:
    text = resources.files("recipes").joinpath("data/module-recipe.yaml").read_text()
    fields: dict[str, Any] = yaml.safe_load(text)["fields"]
    return fields


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    if kind == "map":
        return isinstance(value, dict)
    raise AssertionError(kind)


def validate(data: Any, fields: Mapping[str, Any] | None = None, where: str = "") -> list[str]:
    """Every way `data` breaks the schema, as `path: problem` lines (empty when valid)."""
    fields = schema() if fields is None else fields
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        return [f"{where or 'recipe'}: must be a mapping"]
    errors = [f"{prefix}{key}: unknown field (known: {', '.join(fields)})"
              for key in data if str(key) not in fields]
    for name, spec in fields.items():
        path = f"{prefix}{name}"
        if name not in data or data[name] is None:
            if spec.get("required"):
                errors.append(f"{path}: required")
            continue
        value = data[name]
        kind = spec["type"]
        if not _type_ok(kind, value):
            errors.append(f"{path}: must be a {kind}, got {type(value).__name__}")
            continue
        if kind == "map":
            errors += validate(value, spec.get("fields", {}), path)
            one_of = spec.get("one_of")
            if one_of:
                given = [k for k in one_of if value.get(k) is not None]
                if len(given) != 1:
                    errors.append(f"{path}: give exactly one of {', '.join(one_of)}"
                                  + (f" (got {', '.join(given)})" if given else ""))
            continue
        items = value if kind == "list" else [value]
        for i, item in enumerate(items):
            at = f"{path}[{i}]" if kind == "list" else path
            if kind == "list" and not _type_ok("str", item):
                errors.append(f"{at}: must be a string, got {type(item).__name__}")
                continue
            text = str(item)
            if "pattern" in spec and not re.fullmatch(spec["pattern"], text):
                errors.append(f"{at}: {text!r} does not match {spec['pattern']}")
            if "enum" in spec and text not in spec["enum"]:
                errors.append(f"{at}: {text!r} is not one of {', '.join(spec['enum'])}")
    return errors


IN_TREE_ONLY = ("configure", "build", "modules", "tools", "kernel_config")
"""Fields an in-tree recipe has no use for: the kernel's Kbuild builds it, Kconfig checks it."""


def kind_errors(data: dict[str, Any]) -> list[str]:
    """A recipe builds sources of its own (with a version) or the kernel's (in_tree)."""
    errors = []
    if bool(data.get("source")) == bool(data.get("in_tree")):
        errors.append("source: give exactly one of source and in_tree")
    if data.get("source") and not data.get("version"):
        errors.append("version: required with source")
    if data.get("in_tree"):
        errors += [f"{key}: not used with in_tree (the kernel's own Makefiles build it)"
                   for key in IN_TREE_ONLY if data.get(key)]
    return errors


def cross_field_errors(data: dict[str, Any]) -> list[str]:
    """Rules the table cannot say: pins for downloads, a dir source takes no subdir."""
    errors = []
    source = data.get("source")
    if isinstance(source, dict):
        if (source.get("url") or source.get("debian")) and not source.get("sha256"):
            errors.append("source.sha256: required with url and debian (the download is "
                          "verified against it)")
        if source.get("dir") is not None and (source.get("sha256") or source.get("subdir")):
            errors.append("source.dir: takes no sha256 or subdir")
    return errors


@dataclass(frozen=True)
class Module:
    """A module to build: from a recipe, or a directory in the Makefile convention."""

    name: str
    version: str
    base: Path  # the recipe's dir, or the module dir itself
    recipe: Path | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    require: tuple[str, ...] = ()
    forbid: tuple[str, ...] = ()
    configure: tuple[str, ...] | None = None
    build: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    description: str = ""
    in_tree: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()

    @property
    def source_dir(self) -> Path | None:
        """The local directory the sources are in, for dir sources and plain module dirs."""
        if self.recipe is None:
            return self.base
        if self.source.get("dir") is not None:
            return (self.base / str(self.source["dir"])).resolve()
        return None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "base": str(self.base),
                "recipe": str(self.recipe) if self.recipe else None,
                "require": list(self.require), "forbid": list(self.forbid),
                "modules": list(self.modules), "tools": list(self.tools),
                "in_tree": list(self.in_tree), "check": list(self.checks)}


def load(path: Path) -> Module:
    """Read and check one recipe file; all its errors in one UserError."""
    path = Path(path)
    data = read_yaml(path, "recipe")
    errors = validate(data)
    if isinstance(data, dict):
        errors += kind_errors(data) + cross_field_errors(data)
    if not errors and data["name"] != path.parent.name:
        errors.append(f"name: {data['name']!r} differs from its directory "
                      f"{path.parent.name!r}")
    if errors:
        raise UserError(f"recipe {path} has {len(errors)} error(s): {'; '.join(errors)}",
                        f"the recipe format is in {ROOT / 'module' / 'README.md'}")
    config = data.get("kernel_config") or {}
    module = Module(
        name=str(data["name"]), version=str(data.get("version") or IN_TREE_VERSION),
        base=path.parent.resolve(), recipe=path, source=dict(data.get("source") or {}),
        require=tuple(config.get("require") or ()) or IN_TREE_REQUIRE * bool(data.get("in_tree")),
        forbid=tuple(config.get("forbid") or ()),
        configure=tuple(str(f) for f in data["configure"]) if data.get("configure") is not None
        else None,
        build=tuple(str(c) for c in data.get("build") or ()),
        modules=tuple(str(m) for m in data.get("modules") or ()),
        tools=tuple(str(t) for t in data.get("tools") or ()),
        description=str(data.get("description") or ""),
        in_tree=tuple(str(t) for t in data.get("in_tree") or ()),
        checks=tuple(str(t) for t in data.get("check") or ()))
    if module.source_dir is not None and not module.source_dir.is_dir():
        raise UserError(f"recipe {path}: source dir {module.source_dir} does not exist")
    return module


def known(module_dir: Path) -> list[str]:
    """Names of the recipes under the module dir."""
    try:
        return sorted(d.name for d in Path(module_dir).iterdir()
                      if (d / RECIPE_FILE).is_file())
    except OSError:
        return []


def looks_like_path(spec: str) -> bool:
    return "/" in spec or spec.startswith((".", "~"))


def build_mode(directory: Path) -> str:
    """`make` when the Makefile has its own rules, `kbuild` for a bare obj-m dir."""
    makefile = next((directory / n for n in ("GNUmakefile", "Makefile", "makefile")
                     if (directory / n).is_file()), None)
    if makefile is None:
        if (directory / "Kbuild").is_file():
            return "kbuild"
        raise UserError(f"module dir {directory} has no Makefile",
                        "add a Makefile whose default target builds the .ko files, or a "
                        "Kbuild file with obj-m (see module/hello)")
    text = makefile.read_text(errors="replace")
    return "make" if TARGET_RE.search(text) else "kbuild"


def path_version(directory: Path) -> str:
    """MODULE_VERSION("x") from the sources, else 0: a plain dir has no other version."""
    for src in sorted(Path(directory).glob("*.c")):
        match = MODULE_VERSION_RE.search(src.read_text(errors="replace"))
        if match:
            return match.group(1)
    return "0"


def resolve(settings: Settings, spec: str, version: str = "") -> Module:
    """--module NAME (a recipe under module_dir) or PATH (a recipe dir or a Makefile dir)."""
    spec = (spec or "").strip()
    module_dir = Path(settings.module_dir)
    if not spec:
        raise UserError("--module is required",
                        f"a recipe name ({', '.join(known(module_dir)) or 'none found'}) or "
                        "a path to a module dir")
    if looks_like_path(spec) or (not NAME_RE.fullmatch(spec) and Path(spec).exists()):
        directory = Path(spec).expanduser().resolve()
        if not directory.is_dir():
            raise UserError(f"module dir {directory} does not exist",
                            "give a directory with a Makefile, or a recipe name")
        if (directory / RECIPE_FILE).is_file():
            module = load(directory / RECIPE_FILE)
        else:
            build_mode(directory)
            name = re.sub(r"[^a-z0-9_.-]", "-", directory.name.lower()).strip("-._") or "module"
            module = Module(name=name, version=path_version(directory), base=directory)
    else:
        if not NAME_RE.fullmatch(spec) or not (module_dir / spec / RECIPE_FILE).is_file():
            names = known(module_dir)
            raise UserError(f"unknown module {spec!r}",
                            f"known modules: {', '.join(names) or 'none'} (in {module_dir}); "
                            "or give a path such as ./mymodule")
        module = load(module_dir / spec / RECIPE_FILE)
    if version and version != module.version:
        raise UserError(f"module {module.name} is version {module.version}, not {version}",
                        f"edit {module.recipe or 'its sources'} to build {version}")
    if module.recipe is not None and module.source_dir is not None and not module.in_tree:
        build_mode_or_steps(module)  # a dir recipe without build steps needs a Makefile
    return module


def in_tree_status(module_dir: Path, config: Mapping[str, str]) -> dict[str, str]:
    """For each in-tree recipe, how a kernel with `config` has it: built-in, module, partly
    or missing (what a user can build with buildmodule --module NAME)."""
    from .intree import status

    out = {}
    for name in known(module_dir):
        try:
            module = load(Path(module_dir) / name / RECIPE_FILE)
        except UserError:
            continue
        if module.in_tree:
            out[name] = status(config, module.in_tree)
    return out


def in_tree_module(symbols: Sequence[str]) -> Module:
    """The module `--in-tree CONFIG_X` builds: named after its symbols."""
    from .intree import module_name, symbol

    names = tuple(dict.fromkeys(symbol(s) for s in symbols))
    return Module(name=module_name(names) or "in-tree", version=IN_TREE_VERSION, base=ROOT,
                  in_tree=names, require=IN_TREE_REQUIRE)


def build_mode_or_steps(module: Module) -> str:
    """How a module is built: its recipe's steps, else the Makefile convention."""
    if module.build or module.configure is not None:
        return "steps"
    src = module.source_dir
    if src is None:
        return "make"
    return build_mode(src)


def debian_url(mirror: str, debian: Mapping[str, Any]) -> str:
    """The pool URL of a Debian package: pool/<component>/<prefix>/<source>/<file>."""
    package = str(debian["package"])
    source = str(debian.get("source_package") or package)
    version = str(debian["version"]).split(":", 1)[-1]
    prefix = source[:4] if source.startswith("lib") else source[0]
    component = str(debian.get("component") or "main")
    arch = str(debian.get("arch") or "all")
    return (f"{mirror.rstrip('/')}/pool/{component}/{prefix}/{source}/"
            f"{package}_{version}_{arch}.deb")


def source_url(module: Module, debian_mirror: str) -> str:
    """Where a downloaded source comes from; empty for dir sources."""
    if module.source.get("debian"):
        return debian_url(debian_mirror, module.source["debian"])
    url = str(module.source.get("url") or "")
    return url.replace("{debian_mirror}", debian_mirror.rstrip("/"))


def steps_script(module: Module, mode: str) -> str:
    """The shell script the compile stage runs in the source dir."""
    lines = ["#!/bin/sh", "# generated by lkbuild from the module's recipe or convention",
             "set -eu"]
    if mode == "steps":
        if module.configure is not None:
            lines.append("./configure " + " ".join(module.configure)
                         + ' ${CROSS_HOST:+--host="$CROSS_HOST"}')
        lines += list(module.build) or ['make -j"$JOBS"']
    elif mode == "make":
        lines.append('make -j"$JOBS"')
    else:
        lines.append('make -C "$KERNELDIR" M="$PWD" -j"$JOBS" modules')
    return "\n".join(lines) + "\n"


def dir_files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """A source dir's files (relative path -> bytes, mode), without build artifacts."""
    out: dict[str, tuple[bytes, int]] = {}
    directory = Path(directory)
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not BUILD_ARTIFACTS.fullmatch(d))
        for name in sorted(files):
            if BUILD_ARTIFACTS.fullmatch(name) or (name.startswith(".") and name.endswith(".cmd")):
                continue
            path = Path(root) / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = path.relative_to(directory).as_posix()
            out[rel] = (path.read_bytes(), 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
    return out


def files_digest(files: Mapping[str, tuple[bytes, int]]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        data, mode = files[rel]
        h.update(f"{rel}\0{mode:o}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()
