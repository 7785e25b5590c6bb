"""Kernel modules: built against a kernel image, checked, packaged as module and loader images.

A module is only useful if it loads into one exact kernel, so everything here is checked
against that kernel before anything is tagged: its config has what the module needs, the
compiler is the one the kernel was built with, and every .ko carries the kernel's vermagic
and ELF machine. The kernel is an lkbuild kernel (by version) or any image in linuxkit's
layout (by reference); the compiler is its -builder image or the one it names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from . import (
    buildx,
    context,
    intree,
    kconfig,
    kconfig_tree,
    kernel,
    modrecipe,
    progress,
    sources,
    ui,
)
from .arch import Arch, host, resolve
from .diagnose import diagnose_file, error_lines, step_error
from .engine import Engine, Images, realign
from .errors import BuildError, LkbuildError, UserError, VerifyError
from .fidelity import Profile, check_vermagic, config_vermagic, same_vermagic, vermagic_diff, words
from .modrecipe import Module
from .settings import ROOT, Settings
from .vm import ELF_MACHINE, elf_facts, find_busybox, is_version

RECIPE_DIR = ROOT / "module"
"""lkbuild's module Dockerfile and scripts (whatever module_dir the recipes come from)."""
LABEL = "org.lkbuild.module"
HASH_LEN = 12
HASH_SCHEMA = "lkbuild-module-inputs v1"
TAG_BAD = re.compile(r"[^A-Za-z0-9_.-]")


# --- pure parts: tags, load order, facts -----------------------------------------------------

def tag_part(text: str) -> str:
    """A kernel release or version as it may stand in an image tag (6.12.0+ -> 6.12.0_)."""
    return TAG_BAD.sub("_", text)


def tags(version: str, release: str, arch: Arch, digest: str | None,
         loader: bool = False) -> str:
    """`<modver>-<release>[-loader][-<hash>]-<arch>`: the module, or the loader beside it."""
    tail = "-".join((["loader"] if loader else []) + ([digest] if digest else []) + [arch.name])
    head = f"{tag_part(version)}-{tag_part(release)}"
    return f"{head[:127 - len(tail)]}-{tail}"  # a tag holds 128 characters; the kind stays


@dataclass(frozen=True)
class Built:
    """One .ko the build made: its module name, file under lib/modules/<rel>/, facts."""

    name: str
    file: str
    vermagic: str
    depends: tuple[str, ...]


def parse_module_facts(text: str) -> list[Built]:
    """build.sh's facts: name TAB file TAB vermagic TAB depends(comma-separated)."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [*line.split("\t"), "", "", "", ""][:4]
        deps = tuple(d.strip().replace("-", "_") for d in fields[3].split(",") if d.strip())
        out.append(Built(fields[0].strip(), fields[1].strip(), fields[2], deps))
    return out


def load_order(built: Sequence[Built]) -> list[Built]:
    """Dependencies first (depth-first over `depends`, ties by name); a cycle is an error."""
    by_name = {b.name.replace("-", "_"): b for b in built}
    done: list[Built] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if state.get(name) == "done" or name not in by_name:
            return
        if state.get(name) == "busy":
            raise BuildError(f"the modules depend on each other in a cycle: "
                             f"{' -> '.join((*chain, name))}")
        state[name] = "busy"
        for dep in sorted(by_name[name].depends):
            visit(dep, (*chain, name))
        state[name] = "done"
        done.append(by_name[name])

    for name in sorted(by_name):
        visit(name, ())
    return done


def missing_config(config: Mapping[str, str], require: Sequence[str],
                   forbid: Sequence[str]) -> list[str]:
    """Every required option that is off and every forbidden one that is on."""
    out = [f"{sym} must be y or m (is {kconfig.show(config.get(sym) or kconfig.NOT_SET)})"
           for sym in require if config.get(sym) not in ("y", "m")]
    out += [f"{sym} must be off (is {config[sym]})"
            for sym in forbid if config.get(sym) not in (None, kconfig.NOT_SET)]
    return out


def loader_conf(module: Module, release: str, vermagic: str, arch: Arch,
                config_sha256: str) -> str:
    """The loader's settings, as sh assignments with single-quoted values."""
    def q(value: str) -> str:
        return "'" + str(value).replace("'", "'\\''") + "'"

    values = {"LK_MODULE": module.name, "LK_VERSION": module.version, "LK_RELEASE": release,
              "LK_VERMAGIC": words(vermagic), "LK_UNAME": arch.uname,
              "LK_ARCH_VERMAGIC": arch.vermagic, "LK_CONFIG_SHA256": config_sha256}
    return "".join(f"{k}={q(v)}\n" for k, v in values.items())


def builder_candidates(ref: str, labels: Mapping[str, str], arch: Arch,
                       builder_file: str = "") -> list[str]:
    """Images that may hold the kernel's compiler, best first.

    lkbuild's own label; the -builder tag beside the kernel's (linuxkit publishes
    `linuxkit/kernel:6.6.13-builder` beside `6.6.13`; lkbuild puts the kind after the
    version); then what /kernel-builder or the build-image label name (the plain compiler
    image, headers unpacked by the module build).
    """
    out: list[str] = []

    def add(candidate: str) -> None:
        candidate = candidate.strip()
        if candidate and candidate not in out and candidate != ref:
            out.append(candidate)

    add(labels.get(f"{kernel.LABEL}.builder", ""))
    repo, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag and "@" not in ref:
        digest = labels.get(f"{kernel.LABEL}.hash", "")
        if digest and f"-{digest}-" in tag:  # lkbuild's scheme: the kind before the hash
            add(f"{repo}:{tag.replace(f'-{digest}-', f'-builder-{digest}-', 1)}")
        suffix = f"-{arch.name}"
        if tag.endswith(suffix):
            add(f"{repo}:{tag[:-len(suffix)]}-builder{suffix}")
            add(f"{repo}:{tag[:-len(suffix)]}-builder")
        add(f"{repo}:{tag}-builder")
    add(builder_file)
    add(labels.get(f"{kernel.LABEL}.build-image", ""))
    return out


# --- sources ---------------------------------------------------------------------------------

def _archive_members(data: bytes, name: str) -> tarfile.TarFile:
    """A tar from a .deb's data member or a (compressed) tarball, for reading."""
    if data[:8] == b"!<arch>\n":  # a .deb: an ar archive holding data.tar.*
        pos = 8
        while pos + 60 <= len(data):
            header = data[pos:pos + 60]
            member = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = data[pos + 60:pos + 60 + size]
            pos += 60 + size + (size % 2)
            if member.startswith("data.tar"):
                if member.endswith(".zst"):
                    body = subprocess.run(["zstd", "-dc"], input=body, capture_output=True,
                                          check=True).stdout
                return tarfile.open(fileobj=io.BytesIO(body))
        raise VerifyError(f"{name} is a .deb without a data.tar member")
    return tarfile.open(fileobj=io.BytesIO(data))


def archive_files(path: Path, subdir: str = "") -> dict[str, tuple[bytes, int]]:
    """The regular files under `subdir` of a tarball or .deb, as relative path -> (bytes, mode)."""
    try:
        data = Path(path).read_bytes()
        tar = _archive_members(data, Path(path).name)
    except (OSError, tarfile.TarError, subprocess.CalledProcessError, ValueError) as exc:
        raise VerifyError(f"cannot read the module source {path}: "
                          f"{' '.join(str(exc).split())}") from None
    prefix = subdir.strip("/").removeprefix("./")
    out: dict[str, tuple[bytes, int]] = {}
    with tar:
        for member in tar:
            name = member.name.removeprefix("./").strip("/")
            if prefix:
                if not name.startswith(prefix + "/"):
                    continue
                name = name[len(prefix) + 1:]
            if not member.isfile() or ".." in name.split("/"):
                continue
            src = tar.extractfile(member)
            out[name] = (src.read() if src else b"", 0o755 if member.mode & 0o100 else 0o644)
    if not out:
        where = f" under {prefix}/" if prefix else ""
        raise VerifyError(f"the module source {path} has no files{where}",
                          "check source.subdir in the recipe")
    return out


@dataclass
class Sources:
    files: dict[str, tuple[bytes, int]]
    digest: str
    origin: str


def module_sources(settings: Settings, module: Module, override: str = "") -> Sources:
    """The module's source files, verified: a dir as it is, a download against its sha256."""
    if override:
        path = Path(override).expanduser().resolve()
        if path.is_dir():
            files = modrecipe.dir_files(path)
            return Sources(files, modrecipe.files_digest(files), str(path))
        if not path.is_file():
            raise UserError(f"module source {path} does not exist",
                            "give the recipe's archive or a source directory")
        pinned = str(module.source.get("sha256") or "")
        actual = sources.digest(path, Path(settings.cache_dir))
        if pinned and actual != pinned:
            url = modrecipe.source_url(module, settings.debian_mirror)
            raise VerifyError(f"{path} does not match the recipe of {module.name}: expected "
                              f"sha256 {pinned}, got {actual}",
                              f"use the file the recipe names ({url})")
        files = archive_files(path, str(module.source.get("subdir") or ""))
        return Sources(files, modrecipe.files_digest(files), str(path))
    if module.source_dir is not None:
        files = modrecipe.dir_files(module.source_dir)
        if not files:
            raise UserError(f"module dir {module.source_dir} is empty")
        return Sources(files, modrecipe.files_digest(files), str(module.source_dir))
    url = modrecipe.source_url(module, settings.debian_mirror)
    path = sources.fetch_pinned(settings, url, str(module.source["sha256"]),
                                f"modules/{module.name}")
    files = archive_files(path, str(module.source.get("subdir") or ""))
    return Sources(files, modrecipe.files_digest(files), url)


def in_tree_sources(settings: Settings, target: KernelTarget, given: str) -> Sources:
    """An in-tree module's source: the tarball the kernel was built from. Only the dirs its
    modules are in are read out of it, once the kernel's Kconfig has named them."""
    if target.patches:
        raise UserError(f"kernel {target.ref} was built with the series' patches, which an "
                        "in-tree module build does not apply yet",
                        "build the module as part of the kernel (inv build --fragment with "
                        "CONFIG_X=m)")
    path = target.source
    pinned = target.labels.get(f"{kernel.LABEL}.source.sha256", "")
    if given:
        path = sources.local_path(given)
        if not path.is_file():
            raise UserError(f"kernel source {path} does not exist",
                            "give the kernel's source tarball (linux-<version>.tar.xz)")
    if path is None:
        raise UserError(f"an in-tree module needs the source kernel {target.ref} was built "
                        "from", "give it with --source linux-<version>.tar.xz")
    actual = sources.digest(path, Path(settings.cache_dir))
    if pinned and actual != pinned:
        raise VerifyError(f"{path} is not the source kernel {target.ref} was built from "
                          f"(sha256 {actual}, the kernel's label says {pinned})",
                          "give the kernel's own source tarball with --source")
    return Sources({}, hashlib.sha256(f"in-tree {actual}".encode()).hexdigest(), str(path))


def tree_dirs(tarball: Path, dirs: Sequence[str]) -> dict[str, tuple[bytes, int]]:
    """The files under `dirs` of a kernel source tarball (its top directory left out)."""
    prefixes = tuple(f"{d.strip('/')}/" for d in dirs)
    out: dict[str, tuple[bytes, int]] = {}
    with tarfile.open(tarball, "r:*") as tar:
        for member in tar:
            rel = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not member.isfile() or not rel.startswith(prefixes):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                out[rel] = (handle.read(), 0o755 if member.mode & 0o100 else 0o644)
    return out


# --- the kernel a module is built for --------------------------------------------------------

@dataclass
class KernelTarget:
    """The kernel image a module is built against, and the image that has its compiler."""

    ref: str
    image_id: str
    arch: Arch
    labels: dict[str, str]
    builder: str = ""
    builder_id: str = ""
    builder_arch: str = ""
    builder_labels: dict[str, str] = field(default_factory=dict)
    builder_env: list[str] = field(default_factory=list)
    source: Path | None = None  # the verified source tarball lkbuild built the kernel from
    patches: tuple[Path, ...] = ()

    @property
    def release(self) -> str:
        return self.labels.get(f"{kernel.LABEL}.release", "")


def kernel_target(settings: Settings, engine: Images, spec: str, arch: Arch | None,
                  plan_for: Callable[[str, Arch], kernel.Plan]) -> KernelTarget:
    """--kernel V (lkbuild's image for that version and the build flags) or an image ref."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError("--kernel is required", "a kernel version (6.12.54) or an image "
                        "reference (linuxkit/kernel:6.12.52)")
    source: Path | None = None
    patches: tuple[Path, ...] = ()
    if is_version(spec):
        a = arch or host()
        p = plan_for(spec, a)
        ref = p.refs[0]
        source, patches = p.source.path, tuple(p.inputs.series.patches(p.request.variant))
        attrs = engine.image(ref)
        if attrs is None:
            raise UserError(f"kernel image {ref} does not exist on {engine.describe()}",
                            f"build it first with `inv build --version {spec} --arch {a.name}` "
                            "and the same flags")
    else:
        ref = spec
        attrs = engine.image(ref)
        if attrs is None:
            raise UserError(f"kernel image {ref} does not exist on {engine.describe()}",
                            f"pull it (docker pull {ref}) or build it with inv build")
    image_arch = str(attrs.get("Architecture") or "")
    if arch is None:
        arch = resolve(image_arch) if image_arch else host()
    elif image_arch and resolve(image_arch).name != arch.name:
        raise UserError(f"kernel image {ref} is for {image_arch}, not {arch.name}",
                        f"use --arch {image_arch} or the {arch.name} image")
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    return KernelTarget(ref, str(attrs["Id"]), arch, labels, source=source, patches=patches)


def dev_present(target: KernelTarget) -> bool:
    """The builder is lkbuild's -builder image of this very kernel: kernel-dev is in it."""
    digest = target.labels.get(f"{kernel.LABEL}.hash", "")
    return bool(digest and target.release) \
        and target.builder_labels.get(f"{kernel.LABEL}.hash") == digest \
        and target.builder_labels.get(f"{kernel.LABEL}.release") == target.release


def toolchain_of(target: KernelTarget, build_arch: Arch) -> tuple[str, str]:
    """How the builder runs: ("cross", CROSS_COMPILE) on the build platform, or ("native",
    "") as the target arch (emulated when that is foreign).

    lkbuild's -builder image of a cross-built kernel says so in its environment
    (CROSS_COMPILE); its image platform is the target's, its binaries the build platform's.
    A plain image for the build platform (the offline build image) cross-compiles when it
    has the target's compiler.
    """
    env = dict(e.split("=", 1) for e in target.builder_env if "=" in e)
    if env.get("CROSS_COMPILE"):
        return "cross", env["CROSS_COMPILE"]
    runs_as = resolve(target.builder_arch) if target.builder_arch else build_arch
    if runs_as.name == build_arch.name:
        return "cross", "" if build_arch.name == target.arch.name else target.arch.cross_compile
    return "native", ""


def image_compiler(engine: Images, ref: str) -> str:
    """CONFIG_CC_VERSION_TEXT from a kernel image's kernel-dev.tar (slow: only for messages)."""
    with tempfile.TemporaryDirectory(prefix="lkbuild-") as tmp:
        spooled = engine.archives(ref, ["/kernel-dev.tar"], Path(tmp))
        if "/kernel-dev.tar" not in spooled:
            return ""
        try:
            with tarfile.open(spooled["/kernel-dev.tar"]) as outer:
                inner = outer.extractfile("kernel-dev.tar")
                if inner is None:
                    return ""
                with tarfile.open(fileobj=inner, mode="r|*") as dev:
                    for member in dev:
                        if member.isfile() and re.fullmatch(r"(\./)?usr/src/[^/]+/\.config",
                                                            member.name):
                            data = dev.extractfile(member)
                            assert data is not None, "a regular member always has data"
                            text = data.read().decode(errors="replace")
                            return kconfig.parse(text).get("CONFIG_CC_VERSION_TEXT",
                                                           "").strip('"')
        except (tarfile.TarError, OSError, KeyError):
            return ""
    return ""


def find_builder(engine: Images, target: KernelTarget, override: str = "") -> None:
    """Fill in the builder image: --builder-image, else the first candidate on the engine."""
    if override:
        candidates = [override]
    else:
        builder_file = ""
        if f"{kernel.LABEL}.builder" not in target.labels:
            with tempfile.TemporaryDirectory(prefix="lkbuild-") as tmp:
                spooled = engine.archives(target.ref, ["/kernel-builder"], Path(tmp))
                if "/kernel-builder" in spooled:
                    with tarfile.open(spooled["/kernel-builder"]) as tar:
                        member = tar.extractfile("kernel-builder")
                        builder_file = member.read().decode(errors="replace").strip() \
                            if member else ""
        candidates = builder_candidates(target.ref, target.labels, target.arch, builder_file)
    for candidate in candidates:
        attrs = engine.image(candidate)
        if attrs is not None:
            target.builder = candidate
            target.builder_id = str(attrs["Id"])
            target.builder_arch = str(attrs.get("Architecture") or "")
            target.builder_labels = dict((attrs.get("Config") or {}).get("Labels") or {})
            target.builder_env = list((attrs.get("Config") or {}).get("Env") or [])
            return
    needs = target.labels.get(f"{kernel.LABEL}.compiler", "") \
        or image_compiler(engine, target.ref)
    need = f"it was built with {needs!r}; " if needs else ""
    raise UserError(
        f"no compiler image for kernel {target.ref} on {engine.describe()}: {need}looked for "
        f"{', '.join(candidates) or 'nothing (the image names no builder)'}",
        "pull or build the kernel's -builder image, or pass --builder-image with the same "
        "compiler")


# --- the build -------------------------------------------------------------------------------

@dataclass
class Request:
    module: str
    kernel: str
    arch: Arch | None = None
    version: str = ""
    source: str = ""
    builder_image: str = ""
    jobs: int = 0
    force: bool = False
    builders: list[str] = field(default_factory=list)
    profile: Profile | None = None  # the kernel's vermagic must be the target's
    in_tree: list[str] = field(default_factory=list)  # --in-tree CONFIG_X: the kernel's own
    kernel_source: str = ""  # the kernel's source tarball, for in-tree modules of an image


@dataclass
class Result:
    module: str
    version: str
    arch: str
    release: str
    vermagic: str
    kernel: str
    refs: list[str]
    loader_refs: list[str]
    modules: list[str]
    digest: str
    skipped: bool
    seconds: float
    log: str = ""
    summary: progress.Summary | None = None  # the build's, when this one showed it

    def as_json(self) -> dict[str, Any]:
        return {"module": self.module, "version": self.version, "arch": self.arch,
                "release": self.release, "vermagic": self.vermagic, "kernel": self.kernel,
                "refs": self.refs, "loader_refs": self.loader_refs, "modules": self.modules,
                "hash": self.digest, "skipped": self.skipped,
                "seconds": round(self.seconds, 2), "log": self.log,
                "summary": self.summary.as_json() if self.summary else None}


def repository(settings: Settings, module: Module) -> str:
    return kernel.repository(settings, module.name)


def inputs_digest(module: Module, src: Sources, steps: str, target: KernelTarget,
                  busybox_sha: str, toolchain: str, cross_compile: str) -> str:
    """Everything that decides the images: recipe, sources, steps, lkbuild's module recipe
    files, the kernel and builder images (by ID), the loader's busybox and the arch."""
    lines = [HASH_SCHEMA, f"module {module.name} {module.version}", f"arch {target.arch.name}",
             f"toolchain {toolchain} {cross_compile}", f"sources {src.digest}",
             f"steps {hashlib.sha256(steps.encode()).hexdigest()}",
             f"modules {' '.join(module.modules)}",
             f"kernel {target.image_id}", f"builder {target.builder_id}",
             f"busybox {busybox_sha}"]
    if module.recipe is not None:
        lines.append(f"recipe {hashlib.sha256(module.recipe.read_bytes()).hexdigest()}")
    for path in sorted(RECIPE_DIR.rglob("*")):
        rel = path.relative_to(RECIPE_DIR)
        if path.is_file() and rel.parts[0] in ("Dockerfile", "scripts"):
            lines.append(f"file {rel.as_posix()} {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()[:HASH_LEN]


def stage(ctx: Path, module: Module, src: Sources, steps: str, busybox: Path) -> None:
    """The module build context: Dockerfile, scripts, sources, steps and the loader's busybox."""
    context.put_file(ctx / "Dockerfile", (RECIPE_DIR / "Dockerfile").read_bytes())
    context.sync_tree(ctx / "scripts", {f.name: (f.read_bytes(), 0o755)
                                 for f in sorted((RECIPE_DIR / "scripts").glob("*.sh"))})
    context.sync_tree(ctx / "src", src.files)
    context.sync_tree(ctx / "steps", {
        "build.sh": (steps.encode(), 0o755),
        "modules": ("".join(f"{m}\n" for m in module.modules).encode(), 0o644),
        "tools": ("".join(f"{t}\n" for t in module.tools).encode(), 0o644)})
    context.sync_tree(ctx / "busybox", {"busybox": (busybox.read_bytes(), 0o755)})
    context.sync_tree(ctx / "loader", {"checks": (b"", 0o644), "loader.conf": (b"", 0o644),
                                       "modules": (b"", 0o644)})


def log_path(settings: Settings, module: Module, arch: Arch) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(settings.cache_dir) / "logs" / f"module-{module.name}-{arch.name}-{stamp}.log"


def _run(engine: Engine, b: buildx.Build, log: Path, what: str) -> None:
    """One buildx step; a failure becomes one line with its cause, fix and log."""
    code = buildx.run(buildx.command(b, engine.cli_args()), engine.cli_env(), log)
    if code == 0:
        return
    found = diagnose_file(log)
    if found is not None and found.name == "compile":
        for line in error_lines(log):
            ui.info(f"  {line}")
    raise step_error(code, log, what)


def _facts(directory: Path) -> dict[str, str]:
    return {f.name: f.read_text().strip("\n") for f in directory.iterdir() if f.is_file()}


# --- the loader in a VM ----------------------------------------------------------------------

LOADER_DIR = "/lkbuild"


@dataclass
class Loader:
    """A loader image's own files, ready for a test VM's initramfs."""

    ref: str
    tar: Path  # /lkbuild as a tar (lkbuild/...)
    modules: list[str]
    release: str
    checks: list[str] = field(default_factory=list)  # the recipe's proof the kernel has it

    def commands(self) -> list[str]:
        """Run the image's entrypoint logic, prove each module is live and the recipe's
        checks pass, then run it again: a second `docker run` of the loader must find them
        loaded and succeed."""
        load = f"{LOADER_DIR}/bin/busybox sh {LOADER_DIR}/load"
        return [load] + [f"grep -q '^{m} ' /proc/modules || {{ echo '{m} is not in "
                         "/proc/modules'; exit 1; }" for m in self.modules] \
            + self.checks + [load]


def loader_ref(settings: Settings, engine: Images, spec: str, request: Request,
               plan_for: Callable[[str, Arch], kernel.Plan]) -> str:
    """--module for vmtest: a module or loader image ref, or NAME|PATH built for --kernel."""
    spec = spec.strip()
    if (":" in spec or "@" in spec) and not Path(spec).expanduser().exists():
        attrs = engine.image(spec)
        if attrs is None:
            raise UserError(f"module image {spec} does not exist on {engine.describe()}",
                            "build it with inv buildmodule, or pull it")
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        loader = labels.get(f"{LABEL}.loader", "")
        if not loader:
            raise UserError(f"{spec} is not an lkbuild module or loader image (no "
                            f"{LABEL}.loader label)", "give the image inv buildmodule printed")
        # A loader image is tested as named (a digest, or an image made FROM one): its label
        # names a tag that may have moved since. A module image leads to its loader.
        entrypoint = (attrs.get("Config") or {}).get("Entrypoint") or []
        return spec if f"{LOADER_DIR}/load" in entrypoint else loader
    p = plan(settings, dataclasses.replace(request, module=spec), plan_for)
    release = p.target.release
    found = existing(p, release, time.monotonic()) if release else None
    if found is None:
        raise UserError(f"module {p.module.name} is not built for {p.target.ref} with these "
                        "inputs", f"build it first: inv buildmodule --kernel {request.kernel} "
                        f"--arch {p.arch.name} --module {spec}")
    return found.loader_refs[0]


def loader_files(engine: Images, ref: str, dest: Path) -> Loader:
    """Copy /lkbuild out of a loader image (never running it) and read its module list."""
    attrs = engine.image(ref)
    if attrs is None:
        raise UserError(f"loader image {ref} does not exist on {engine.describe()}",
                        "build it with inv buildmodule")
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    spooled = engine.archives(ref, [LOADER_DIR], dest)
    if LOADER_DIR not in spooled:
        raise UserError(f"{ref} has no {LOADER_DIR}: not an lkbuild loader image")
    modules = labels.get(f"{LABEL}.modules", "").split()
    checks: list[str] = []
    with tarfile.open(spooled[LOADER_DIR]) as tar:
        member = next((m for m in tar if m.name.removeprefix("./") == "lkbuild/checks"), None)
        handle = tar.extractfile(member) if member is not None and member.isfile() else None
        if handle is not None:
            checks = [line for line in handle.read().decode().splitlines() if line.strip()]
    return Loader(ref, spooled[LOADER_DIR], modules, labels.get(f"{LABEL}.kernel.release", ""),
                  checks)


@dataclass
class Plan:
    """A module request resolved against the engine: everything but the compile."""

    module: Module
    target: KernelTarget
    engine: Images
    steps: str
    src: Sources
    busybox: Path
    toolchain: str
    cross_compile: str
    digest: str
    repo: str

    @property
    def arch(self) -> Arch:
        return self.target.arch

    def refs(self, release: str, loader: bool = False) -> list[str]:
        v, a = self.module.version, self.arch
        return [f"{self.repo}:{tags(v, release, a, self.digest, loader)}",
                f"{self.repo}:{tags(v, release, a, None, loader)}"]


def plan(settings: Settings, request: Request,
         plan_for: Callable[[str, Arch], kernel.Plan], engine: Images | None = None) -> Plan:
    """Resolve module, kernel, compiler and sources, and hash them, without building.

    `engine` is where the kernel images are looked up (a remote host's, for remote builds);
    by default the engine that builds the arch.
    """
    if request.in_tree and request.module:
        raise UserError("--module and --in-tree do not go together",
                        "give a recipe name, or the kernel's symbols with --in-tree")
    module = modrecipe.in_tree_module(request.in_tree) if request.in_tree \
        else modrecipe.resolve(settings, request.module, request.version)
    steps = "" if module.in_tree \
        else modrecipe.steps_script(module, modrecipe.build_mode_or_steps(module))
    if engine is None:
        engine = buildx.engine_for(settings, request.arch or host(), request.builders)
    target = kernel_target(settings, engine, request.kernel, request.arch, plan_for)
    arch = target.arch
    find_builder(engine, target, request.builder_image)
    build_arch = resolve(str(engine.info().get("Architecture") or "x86_64"))
    toolchain, cross_compile = toolchain_of(target, build_arch)
    if toolchain == "native" and build_arch.name != arch.name:
        ui.warn(f"{target.builder} runs as {arch.name}: the module build is emulated on "
                f"{engine.describe()} and slow")
    busybox = find_busybox(arch)
    src = in_tree_sources(settings, target, request.kernel_source) if module.in_tree \
        else module_sources(settings, module, request.source)
    digest = inputs_digest(module, src, steps, target,
                           sources.digest(busybox, Path(settings.cache_dir)), toolchain,
                           cross_compile)
    return Plan(module, target, engine, steps, src, busybox, toolchain, cross_compile, digest,
                repository(settings, module))


def existing(p: Plan, release: str, started: float) -> Result | None:
    """The result of an earlier build with the same inputs, when all its images are there."""
    refs, loader_refs = p.refs(release), p.refs(release, loader=True)
    found = p.engine.image(refs[0])
    if found is None or not p.engine.image_exists(loader_refs[0]):
        return None
    labels = (found.get("Config") or {}).get("Labels") or {}
    ui.info(f"{refs[0]} is up to date (hash {p.digest}); --force rebuilds it")
    for ref in realign(p.engine, [refs, loader_refs]):
        ui.info(f"{ref} now names this build again")
    return Result(p.module.name, p.module.version, p.arch.name, release,
                  labels.get(f"{LABEL}.vermagic", ""), p.target.ref, refs, loader_refs,
                  labels.get(f"{LABEL}.modules", "").split(), p.digest, True,
                  time.monotonic() - started)


class Runner(Protocol):
    """Where a module build's BuildKit steps run: the local engine, or a remote host's."""

    @property
    def engine(self) -> Images: ...

    def jobs(self, requested: int) -> int: ...

    def run(self, ctx: Path, base: dict[str, Any], log: Path, what: str, **kw: Any) -> None: ...


class LocalRunner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def jobs(self, requested: int) -> int:
        return kernel.choose_jobs(self.engine, requested)

    def run(self, ctx: Path, base: dict[str, Any], log: Path, what: str, **kw: Any) -> None:
        _run(self.engine, buildx.Build(**{**base, **kw}), log, what)


def build(settings: Settings, request: Request,
          plan_for: Callable[[str, Arch], kernel.Plan], runner: Runner | None = None) -> Result:
    """Build one module for one kernel; skip it when its images exist for these inputs."""
    started = time.monotonic()
    p = plan(settings, request, plan_for, runner.engine if runner else None)
    module, target, arch, engine = p.module, p.target, p.arch, p.engine
    where = runner
    if where is None:
        assert isinstance(engine, Engine), "plan() looked up on the engine that builds the arch"
        where = LocalRunner(engine)
    labelled = target.labels.get(f"{kernel.LABEL}.vermagic", "")
    if request.profile is not None and labelled:  # before an earlier build is reused
        check_vermagic(request.profile, target.ref, labelled)
    if target.release and not request.force and (request.profile is None or labelled):
        done = existing(p, target.release, started)
        if done is not None:
            return done
    jobs = where.jobs(request.jobs or settings.jobs)
    log = log_path(settings, module, arch)
    # What the next build's estimate comes from: this module, version and arch (the kernel's
    # config changes its object count little).
    key = f"module-{module.name}-{module.version}-{arch.name}"
    ctx = Path(settings.cache_dir) / "context" / \
        f"module-{kernel.cache_scope(settings.cache_id)}-{module.name}-{arch.name}"
    with context.locked(ctx, f"module {module.name} for {arch.name}"), \
            tempfile.TemporaryDirectory(prefix="lkbuild-") as tmp, \
            ui.build_view("module", settings.verbose or runner is not None,
                          progress.earlier(settings.cache_dir, key)) as view:
        stage(ctx, module, p.src, p.steps, p.busybox)
        args = {"KERNEL_IMAGE": target.ref, "BUILDER_IMAGE": target.builder,
                "TOOLCHAIN": p.toolchain, "LK_ARCH": arch.kernel_arch,
                "LK_CROSS_COMPILE": p.cross_compile,
                "LK_CROSS_HOST": p.cross_compile.rstrip("-"), "MAKE_JOBS": str(jobs),
                "KDEV": "present" if dev_present(target) else "unpack",
                "LK_FIND_VERMAGIC": "0" if target.labels.get(f"{kernel.LABEL}.vermagic")
                else "1"}
        base: dict[str, Any] = dict(context=ctx, platform=arch.platform, args=args,
                                    builder=settings.builder_name)

        def step(what: str, **kw: Any) -> None:
            where.run(ctx, base, log, what, **kw)

        ui.info(f"building module {module.name} {module.version} for {target.ref} with "
                f"{target.builder} (make -j{jobs}); log: {log}")
        kfacts = Path(tmp) / "kfacts"
        step("reading the kernel's headers", target="kfacts", local_output=kfacts)
        facts = _facts(kfacts)
        release = facts.get("release", "") or target.release
        if not target.release and not request.force:
            done = existing(p, release, started)
            if done is not None:
                return done
        config = kconfig.parse(facts.get("config", ""))
        problems = missing_config(config, module.require, module.forbid)
        if problems:
            raise UserError(f"kernel {target.ref} lacks what {module.name} needs "
                            f"({len(problems)}): {'; '.join(problems)}",
                            "build a kernel with them (inv build --fragment FILE)")
        need, have = facts.get("kernel-compiler", ""), facts.get("builder-compiler", "")
        if need and need != have:  # none read from the kernel's own -builder: it built it
            raise UserError(
                f"kernel {target.ref} was built with {need!r} but {target.builder} has "
                f"{have or 'no such compiler'!r}",
                "use the kernel's own -builder image or pass --builder-image with that "
                "compiler")
        kernel_vermagic = target.labels.get(f"{kernel.LABEL}.vermagic", "") \
            or facts.get("vermagic", "") or config_vermagic(release, config, arch)
        if request.profile is not None:
            check_vermagic(request.profile, target.ref, kernel_vermagic)
        config_sha = hashlib.sha256((kfacts / "config").read_bytes()).hexdigest()

        made = module
        if module.in_tree:
            args["LK_INTREE"] = " ".join(module.in_tree)
            step("asking the kernel's Kconfig what the module takes", target="intree",
                 local_output=Path(tmp) / "intree")
            made = prepare_in_tree(p, ctx, Path(tmp) / "intree")
        out = Path(tmp) / "built"
        # One nonce for the three steps below, so the images package the very .ko files
        # checked here, not an older compile of the same inputs from BuildKit's cache.
        rerun = str(time.time_ns()) if request.force else ""
        try:
            step(f"compiling {module.name}", target="built", local_output=out, rerun=rerun)
        except LkbuildError:
            if module.in_tree:
                not_exported(target.ref, module, log)
            raise
        built = parse_module_facts((out / "facts" / "modules").read_text())
        check_built(made, built, out / "root" / "lib" / "modules" / release, arch,
                    kernel_vermagic, log)
        order = load_order(built)
        context.sync_tree(ctx / "loader", {
            "checks": ("".join(f"{c}\n" for c in module.checks).encode(), 0o644),
            "loader.conf": (loader_conf(module, release, kernel_vermagic, arch,
                                        config_sha).encode(), 0o644),
            "modules": (loader_modules(order, out / "root" / "lib" / "modules" / release
                                       ).encode(), 0o644)})
        refs, loader_refs = p.refs(release), p.refs(release, loader=True)
        names = " ".join(b.name for b in order)
        labels = {f"{LABEL}.name": module.name, f"{LABEL}.version": module.version,
                  f"{LABEL}.modules": names, f"{LABEL}.kernel.release": release,
                  f"{LABEL}.vermagic": words(kernel_vermagic),
                  f"{LABEL}.kernel.config.sha256": config_sha,
                  f"{LABEL}.kernel.image": target.ref, f"{LABEL}.builder": target.builder,
                  f"{LABEL}.arch": arch.name, f"{LABEL}.hash": p.digest,
                  f"{LABEL}.loader": loader_refs[0]}
        step("packaging the module image", target="modules", labels=labels, tags=refs,
             rerun=rerun)
        step("packaging the loader image", target="loader", labels=labels, tags=loader_refs,
             rerun=rerun)
    measured = view.tracker.record() if view is not None else None
    if measured is not None:
        progress.remember(settings.cache_dir, key, measured)
    return Result(module.name, module.version, arch.name, release, words(kernel_vermagic),
                  target.ref, refs, loader_refs, names.split(), p.digest, False,
                  time.monotonic() - started, str(log),
                  summary=view.final if view is not None else None)


def prepare_in_tree(p: Plan, ctx: Path, facts_dir: Path) -> Module:
    """Sort what the kernel's Kconfig said into a module build, or refuse the kernel; stage
    the dirs of the modules from the kernel's source, the symbols and the steps. The module
    returned names the modules the build must make."""
    module, target = p.module, p.target
    files = kconfig_tree.tree_files(facts_dir / "tree.tgz")
    facts = kconfig_tree.parse(files, kconfig_tree.srcarch_of(p.arch.kernel_arch))
    before = kconfig.parse((facts_dir / "config").read_text())
    after = kconfig.parse((facts_dir / "intree.config").read_text())
    headers = intree.header_uses((facts_dir / "headers").read_text(errors="replace")
                                 .splitlines(), [c.symbol for c in kconfig.changes(before, after)])
    closure = intree.close(module.in_tree, before, after, facts, headers)
    refused = intree.refusal(closure, target.ref, module.name)
    if refused is not None:
        raise refused
    if closure.built_in:
        ui.warn(f"kernel {target.ref} has {', '.join(closure.built_in)} built in: nothing to "
                "build for it")
    paths = intree.objects(files, closure.modules,
                           kconfig_tree.srcarch_of(p.arch.kernel_arch))
    wanted = [s for s in module.in_tree if s not in closure.built_in]
    if not wanted:
        raise UserError(f"kernel {target.ref} has {', '.join(closure.built_in)} built in",
                        "the kernel has the feature already: no module is needed")
    none = [s for s in wanted if not paths.get(s)]
    if none:
        raise UserError(f"{', '.join(none)} builds no module of its own in this kernel's "
                        "Makefiles", "give the tristate symbol of the module itself")
    made = [m for s in closure.modules for m in paths.get(s, [])]
    made = list(dict.fromkeys(made))
    ui.info(f"{module.name}: {len(made)} module(s) from the kernel's source "
            f"({', '.join(m.rsplit('/', 1)[1] for m in made)})"
            + (f", with {len(closure.options)} of their options" if closure.options else ""))
    tree = tree_dirs(Path(p.src.origin), sorted({m.rsplit("/", 1)[0] for m in made}))
    files_out = {f"tree/{rel}": data for rel, data in tree.items()}
    files_out["intree.h"] = (closure.header().encode(), 0o644)
    context.sync_tree(ctx / "src", files_out)
    context.sync_tree(ctx / "steps", {
        "build.sh": (intree.steps_script(made, closure.make_vars()).encode(), 0o755),
        "modules": (b"", 0o644), "tools": (b"", 0o644)})
    names = tuple(m.rsplit("/", 1)[1].replace("-", "_") for m in made)
    return dataclasses.replace(module, modules=names)


def not_exported(ref: str, module: Module, log: Path) -> None:
    """An in-tree module that needs what the kernel does not export: the kernel cannot take
    it, which is the user's answer, not a build failure."""
    missing = intree.unresolved(log.read_text(errors="replace"))
    if missing:
        need = "; ".join(f"{ko} needs {', '.join(syms[:5])}" for ko, syms in missing.items())
        raise UserError(f"kernel {ref} does not export what {module.name} needs ({need}): it "
                        "cannot take it as a module; nothing was tagged",
                        "rebuild the kernel with a fragment holding "
                        f"{' '.join(f'{s}=m' for s in module.in_tree)} (inv build --fragment "
                        f"FILE); log: {log}")


def loader_modules(order: Sequence[Built], root: Path) -> str:
    """The loader's list: name TAB file TAB sha256 TAB depends, in load order. The digest
    lets the loader refuse a .ko that is not the one built here (a layer or a bind mount
    over its dir), so it only ever loads its own modules."""
    return "".join(f"{b.name}\t{b.file}\t{hashlib.sha256((root / b.file).read_bytes()).hexdigest()}"
                   f"\t{','.join(b.depends)}\n" for b in order)


def check_built(module: Module, built: Sequence[Built], root: Path, arch: Arch,
                kernel_vermagic: str, log: Path) -> None:
    """Nothing is tagged unless every .ko matches the kernel's vermagic and arch."""
    if not built:
        raise UserError(f"the build of {module.name} made no .ko files",
                        f"its Makefile's default target must build them; log: {log}")
    for b in built:
        if not same_vermagic(kernel_vermagic, b.vermagic):
            raise BuildError(
                f"{b.name}.ko has vermagic {words(b.vermagic)!r}, the kernel has "
                f"{words(kernel_vermagic)!r} ({vermagic_diff(kernel_vermagic, b.vermagic)})",
                f"nothing was tagged; build against the kernel's own headers; log: {log}")
        machine, _ = elf_facts(root / b.file)
        if machine != ELF_MACHINE[arch.name]:
            raise BuildError(f"{b.name}.ko is not an {arch.name} object (ELF machine "
                             f"{machine})", f"nothing was tagged; log: {log}")
    missing = sorted(set(module.modules) - {b.name for b in built})
    if missing:
        raise BuildError(f"the build of {module.name} did not make {', '.join(missing)}",
                         f"nothing was tagged; log: {log}")
