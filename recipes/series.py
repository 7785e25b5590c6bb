"""Kernel series in linuxkit's layout, and the content hash of a build's inputs.

A kernel dir holds one dir per series (`6.12.x/`: build-args, config-<uname -m>, patches/),
variant dirs (`6.12.x-rt/`) layered on their series, and shared files (Dockerfile, debug
fragment). A linuxkit checkout's kernel/ must read unchanged, so nothing here requires files
linuxkit does not have.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import atomic
from .arch import Arch, from_uname
from .errors import UserError

VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,4})")
SERIES_RE = re.compile(r"(0|[1-9][0-9]{0,3})\.(0|[1-9][0-9]{0,3})\.x(?:-([a-z0-9][a-z0-9_]*))?")
ARG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
HASH_LEN = 16
HASH_SCHEMA = "lkbuild-kernel-inputs v1"

# Files at the top of a kernel dir that describe or drive the tree but are not build inputs.
NOT_INPUTS = re.compile(r"(README.*|.*\.md|Makefile|\.git.*|\.dockerignore|.*\.yml|.*\.yaml)")


def parse_version(text: str) -> tuple[int, int, int]:
    """A full kernel version (6.12.54). Refuses series names, prefixes and anything shell-ish."""
    match = VERSION_RE.fullmatch(text or "")
    if not match:
        raise UserError(
            f"malformed kernel version {text!r}",
            "give a full version such as 6.12.54 (not 6.12, v6.12.54 or 6.12.x)",
        )
    major, minor, sub = (int(g) for g in match.groups())
    return major, minor, sub


def series_of(version: str) -> str:
    major, minor, _ = parse_version(version)
    return f"{major}.{minor}.x"


def _series_key(name: str) -> tuple[int, int]:
    match = SERIES_RE.fullmatch(name)
    assert match
    return int(match.group(1)), int(match.group(2))


def parse_build_args(path: Path) -> dict[str, str]:
    """linuxkit's build-args: KEY=VALUE lines; blank lines and # comments ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}",
                        "check the file and its permissions") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not text (byte {exc.start} is not UTF-8)",
                        "a build-args file holds KEY=VALUE lines, e.g. KERNEL_SERIES=6.12.x") \
            from None
    args: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not ARG_KEY_RE.fullmatch(key):
            raise UserError(f"{path} line {number}: expected KEY=VALUE, got {text!r}",
                            "write one KEY=VALUE per line (# starts a comment), "
                            "e.g. KERNEL_SERIES=6.12.x")
        args[key] = value.strip()
    return args


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Series:
    """One series dir, with its variants' dirs beside it."""

    name: str
    path: Path
    build_args: dict[str, str]
    variants: dict[str, Path] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.build_args["KERNEL_VERSION"]

    @property
    def deprecated(self) -> bool:
        return (self.path / "deprecated").exists()

    @property
    def key(self) -> tuple[int, int]:
        return _series_key(self.name)

    def arches(self) -> list[Arch]:
        """Arches this series has a config for (config-<uname -m>)."""
        found = []
        for cfg in sorted(self.path.glob("config-*")):
            arch = from_uname(cfg.name[len("config-"):])
            if arch is not None and cfg.is_file():
                found.append(arch)
        return found

    def config(self, arch: Arch) -> Path:
        path = self.path / f"config-{arch.uname}"
        if not path.is_file():
            have = ", ".join(a.name for a in self.arches()) or "none"
            raise UserError(
                f"series {self.name} has no config for {arch.name} ({path} is missing)",
                f"arches with a config: {have}; make one with "
                f"`inv kconfig --version {self.version} --arch {arch.name} --base defconfig "
                "--save`",
            )
        return path

    def dirs(self, variant: str = "") -> list[Path]:
        """The dirs a build reads, base first: the series, then the variant on top."""
        if not variant:
            return [self.path]
        if variant not in self.variants:
            have = ", ".join(sorted(self.variants)) or "none"
            raise UserError(f"series {self.name} has no variant {variant!r}",
                            f"variants: {have}")
        return [self.path, self.variants[variant]]

    def patches(self, variant: str = "") -> list[Path]:
        """Patches in the order they apply: the series' by name, then the variant's."""
        out: list[Path] = []
        for d in self.dirs(variant):
            out.extend(sorted((d / "patches").glob("*.patch")))
        return out


class KernelTree:
    """A kernel dir: its series, variants and shared files."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            what = "is not a directory" if self.path.exists() else "does not exist"
            raise UserError(f"kernel dir {self.path} {what}",
                            "point --kernel-dir or LKBUILD_KERNEL_DIR at a tree with "
                            "<series>/build-args")
        self.series: dict[str, Series] = {}
        variants: dict[str, dict[str, Path]] = {}
        for child in sorted(self.path.iterdir()):
            match = SERIES_RE.fullmatch(child.name)
            if not match or not child.is_dir():
                continue
            base = f"{match.group(1)}.{match.group(2)}.x"
            if match.group(3):
                variants.setdefault(base, {})[match.group(3)] = child
                continue
            args_file = child / "build-args"
            if not args_file.is_file():
                continue
            args = parse_build_args(args_file)
            if "KERNEL_VERSION" not in args:
                raise UserError(f"{args_file} has no KERNEL_VERSION",
                                f"add a line KERNEL_VERSION=<full version in {child.name}>")
            version = args["KERNEL_VERSION"]
            fix = f"set it to a full version of {base}, e.g. KERNEL_VERSION={base[:-1]}1"
            if not VERSION_RE.fullmatch(version):
                raise UserError(f"{args_file}: KERNEL_VERSION={version} is not a full kernel "
                                "version", fix)
            if series_of(version) != base:
                raise UserError(f"{args_file}: KERNEL_VERSION={version} is not in series {base}",
                                fix)
            self.series[base] = Series(base, child, args)
        for base, found in variants.items():
            if base in self.series:
                self.series[base].variants = found
        if not self.series:
            raise UserError(f"kernel dir {self.path} has no series",
                            "expected dirs such as 6.12.x/ holding a build-args file")

    def names(self) -> list[str]:
        return sorted(self.series, key=_series_key)

    def for_version(self, version: str) -> Series:
        """The series a version belongs to; any version of an existing series is accepted."""
        name = series_of(version)
        if name not in self.series:
            raise UserError(
                f"no series {name} for kernel {version} in {self.path}",
                f"series here: {', '.join(self.names())}; start it with "
                f"`inv add-kernel --version {version}`",
            )
        return self.series[name]

    def shared_files(self) -> list[Path]:
        """Files outside series dirs that a build reads (Dockerfile, debug fragment, scripts)."""
        out = []
        for path in sorted(self.path.rglob("*")):
            rel = path.relative_to(self.path)
            top = rel.parts[0]
            if SERIES_RE.fullmatch(top) or top.startswith(".") or NOT_INPUTS.fullmatch(top):
                continue
            if path.is_file():
                out.append(path)
        return out


@dataclass
class BuildInputs:
    """Everything that decides what a kernel build produces. Its digest is the image's hash."""

    tree: KernelTree
    series: Series
    version: str
    arch: Arch
    variant: str = ""
    debug: bool = False
    config: Path | None = None  # replaces the series config
    fragments: tuple[Path, ...] = ()
    extra_args: Mapping[str, str] = field(default_factory=dict)
    source_sha256: str = ""
    recipe_dir: Path | None = None  # lkbuild's own Dockerfile and scripts, when they build it

    def build_args(self) -> dict[str, str]:
        """Series build-args, then the variant's, the debug args, flags; version last."""
        args = dict(self.series.build_args)
        for d in self.series.dirs(self.variant)[1:]:
            if (d / "build-args").is_file():
                args.update(parse_build_args(d / "build-args"))
        if self.debug and (self.tree.path / "build-args-debug").is_file():
            args.update(parse_build_args(self.tree.path / "build-args-debug"))
        args.update(self.extra_args)
        args["KERNEL_VERSION"] = self.version
        return args

    def input_files(self) -> list[Path]:
        """Shared files, then every file of the series and variant dirs this arch reads."""
        files = list(self.tree.shared_files())
        for d in self.series.dirs(self.variant):
            for path in sorted(d.rglob("*")):
                name = path.name
                if not path.is_file() or name.startswith("."):
                    continue
                if name.startswith("config-") and name != f"config-{self.arch.uname}":
                    continue
                if self.config is not None and name == f"config-{self.arch.uname}" \
                        and d == self.series.path:
                    continue
                files.append(path)
        return files

    def manifest(self) -> list[str]:
        """The canonical, path-independent description that is hashed."""
        lines = [HASH_SCHEMA, f"arch {self.arch.name}", f"variant {self.variant or '-'}",
                 f"debug {int(self.debug)}"]
        entries = []
        for path in self.input_files():
            rel = path.relative_to(self.tree.path).as_posix()
            mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
            entries.append(f"file {rel} {mode} {_file_digest(path)}")
        lines.extend(sorted(entries))
        if self.recipe_dir is not None:
            recipe = []
            for path in sorted(self.recipe_dir.rglob("*")):
                relpath = path.relative_to(self.recipe_dir)
                if not path.is_file() or SERIES_RE.fullmatch(relpath.parts[0]) \
                        or NOT_INPUTS.fullmatch(relpath.parts[0]) \
                        or relpath.parts[0].startswith("."):
                    continue
                mode = "x" if path.stat().st_mode & stat.S_IXUSR else "-"
                recipe.append(f"recipe {relpath.as_posix()} {mode} {_file_digest(path)}")
            lines.extend(recipe)
        if self.config is not None:
            lines.append(f"config {_file_digest(self.config)}")
        for index, frag in enumerate(self.fragments):
            lines.append(f"fragment {index} {_file_digest(frag)}")
        lines.extend(f"arg {k}={v}" for k, v in sorted(self.build_args().items()))
        lines.append(f"source {self.source_sha256 or '-'}")
        return lines

    def digest(self) -> str:
        text = "\n".join(self.manifest()) + "\n"
        return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def bump_version(series: Series, version: str) -> bool:
    """Set KERNEL_VERSION in the series' build-args in place; False when already there."""
    path = series.path / "build-args"
    text = path.read_text()
    pattern = re.compile(r"^(\s*KERNEL_VERSION\s*=\s*)(\S*)(.*)$", re.M)
    if series.build_args.get("KERNEL_VERSION") == version:
        return False
    new, count = pattern.subn(lambda m: f"{m.group(1)}{version}{m.group(3)}", text, count=1)
    if count != 1:
        raise UserError(f"{path} has no KERNEL_VERSION line to change")
    atomic.write_text(path, new)
    return True


def start_series(tree: KernelTree, version: str) -> tuple[Path, Series]:
    """Start a new series dir from the nearest earlier series: its build-args and configs.

    Patches are not carried over: they rarely apply across series, and a silent failure to
    apply is worse than a visible absence.
    """
    name = series_of(version)
    key = _series_key(name)
    earlier = [s for s in tree.series.values() if s.key < key]
    if not earlier:
        raise UserError(f"no series earlier than {name} in {tree.path} to start {name} from",
                        "create the series dir by hand with build-args and config-<arch>")
    base = max(earlier, key=lambda s: s.key)
    target = tree.path / name
    if target.exists():
        raise UserError(f"{target} exists but is not a series (no build-args)",
                        "add a build-args file to it or remove it")
    with atomic.new_dir(target) as tmp:
        lines = []
        for line in (base.path / "build-args").read_text().splitlines():
            key_part = line.split("=", 1)[0].strip()
            if key_part == "KERNEL_VERSION":
                line = f"KERNEL_VERSION={version}"
            elif key_part == "KERNEL_SERIES":
                line = f"KERNEL_SERIES={name}"
            lines.append(line)
        if not any(line.split("=", 1)[0].strip() == "KERNEL_SERIES" for line in lines):
            lines.append(f"KERNEL_SERIES={name}")
        (tmp / "build-args").write_text("\n".join(lines) + "\n")
        for cfg in base.path.glob("config-*"):
            if cfg.is_file():
                shutil.copy2(cfg, tmp / cfg.name)
    return target, base

