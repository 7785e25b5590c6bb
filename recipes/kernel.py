"""Kernel images: names and tags, and the build (config check, compile, package, builder).

Tags carry the version, the content hash and the arch (DESIGN.md section 3), so an unchanged
build is found by name and skipped, and any change of input gives a new tag. A build runs in
three BuildKit steps against one staged context: the config (checked for finality before
anything compiles), the compile (whose facts become labels), and the image itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from . import (
    atomic,
    buildx,
    context,
    fidelity,
    kconfig,
    kconfig_tree,
    progress,
    resources,
    sources,
    ui,
)
from .arch import Arch, resolve
from .diagnose import step_error
from .engine import Engine, connect, realign
from .errors import BuildError, InfraError, UserError
from .series import BuildInputs, KernelTree, parse_version
from .settings import ROOT, Settings

IMAGE = "kernel"
RECIPE_DIR = ROOT / "kernel"
"""lkbuild's own Dockerfile and scripts: used whatever tree the series data comes from."""
LABEL = "org.lkbuild.kernel"
DEBUG_LOCALVERSION = "-dbg"
GB = 1000 ** 3


def repository(settings: Settings, image: str = IMAGE) -> str:
    """`[registry/]org/image`: the registry prefix only when one is set."""
    prefix = f"{settings.registry.rstrip('/')}/" if settings.registry else ""
    return f"{prefix}{settings.org}/{image}"


def tag(version: str, digest: str | None, arch: Arch | None, debug: bool = False,
        builder: bool = False) -> str:
    """`<v>[-dbg][-builder][-<hash>][-<arch>]`: linuxkit's scheme with the kind after the
    version."""
    parts = [version]
    if debug:
        parts.append("dbg")
    if builder:
        parts.append("builder")
    if digest:
        parts.append(digest)
    if arch is not None:
        parts.append(arch.name)
    return "-".join(parts)


def ref(settings: Settings, version: str, digest: str | None, arch: Arch | None,
        debug: bool = False, builder: bool = False) -> str:
    return f"{repository(settings)}:{tag(version, digest, arch, debug, builder)}"


def cache_scope(cache_id: str) -> str:
    """The cache id as it names dirs in the build cache (one scope per user by default)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", cache_id) or "lkbuild"


@dataclass
class Request:
    """What the user asked to build."""

    version: str
    arch: Arch
    debug: bool = False
    variant: str = ""
    config: Path | None = None
    fragments: tuple[Path, ...] = ()
    jobs: int = 0
    force: bool = False
    source: str | None = None
    build_image: str = ""
    native: bool = False
    builders: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)  # over the series' build-args
    builder_image: bool = False  # also make the -builder image
    profile: fidelity.Profile | None = None  # the target this build must reproduce
    allow_mismatch: bool = False  # build a profile's kernel with another compiler anyway
    strict_config: bool = False  # linuxkit's rule: any change olddefconfig makes is non-final


@dataclass
class Plan:
    """A request resolved against the tree and the source: everything but the engine."""

    request: Request
    tree: KernelTree
    inputs: BuildInputs
    source: sources.SourceTarball
    build_image: str
    digest: str
    refs: list[str]
    builder_refs: list[str]
    cache_id: str = ""

    @property
    def arch(self) -> Arch:
        return self.request.arch

    @property
    def cache_key(self) -> str:
        r = self.request
        parts = [r.version, r.arch.name] + ([r.variant] if r.variant else []) \
            + (["dbg"] if r.debug else []) + (["native"] if r.native else [])
        return f"{cache_scope(self.cache_id)}-" + "-".join(parts)

    def source_key(self) -> str:
        h = hashlib.sha256(self.source.sha256.encode())
        for patch in self.inputs.series.patches(self.request.variant):
            h.update(patch.name.encode() + b"\0" + patch.read_bytes())
        return h.hexdigest()[:16]


@dataclass
class Result:
    refs: list[str]
    image_id: str
    release: str
    vermagic: str
    digest: str
    arch: str
    version: str
    seconds: float
    jobs: int
    skipped: bool
    log: str = ""
    config: kconfig.Finality | None = None  # the config check's notices (None: not run)
    host: str = ""  # the build host it ran on ("": this engine)
    summary: progress.Summary | None = None  # its steps' times (None: skipped, or remote)

    def as_json(self) -> dict[str, Any]:
        return {"refs": self.refs, "image_id": self.image_id, "release": self.release,
                "vermagic": self.vermagic, "hash": self.digest, "arch": self.arch,
                "version": self.version, "seconds": round(self.seconds, 2), "jobs": self.jobs,
                "skipped": self.skipped, "log": self.log,
                "config": self.config.as_json() if self.config else None,
                "host": self.host,
                "summary": self.summary.as_json() if self.summary else None}


def _check_file(path: Path, what: str, flag: str) -> Path:
    """A config or fragment: a readable file of Kconfig lines, refused before anything runs."""
    path = Path(path).expanduser().resolve()
    hint = f"check the {flag} path"
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file", hint)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist", hint)
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}", hint) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not a text file", "give a kernel config (lines "
                        "CONFIG_X=y and # CONFIG_X is not set)") from None
    bad = kconfig.first_bad_line(text)
    if bad:
        raise UserError(f"{what} {path} line {bad} is not a config line: "
                        f"{text.splitlines()[bad - 1].strip()[:60]!r}",
                        "a kernel config holds only CONFIG_X=value lines and # comments")
    return path


def _check_patches(patches: list[Path]) -> None:
    """Every patch must look like a diff before the source is touched: patch(1) would take
    a file of anything else as a patch that changes nothing, or fail deep in the build."""
    for patch in patches:
        try:
            text = patch.read_bytes().decode(errors="replace")
        except OSError as exc:
            raise UserError(f"cannot read patch {patch}: {exc.strerror}") from None
        lines = text.splitlines()
        if not any(ln.startswith("diff ") for ln in lines) and not (
                any(ln.startswith("--- ") for ln in lines)
                and any(ln.startswith("+++ ") for ln in lines)):
            raise UserError(f"patch {patch} is not a diff (no '---'/'+++' file lines)",
                            "make it with `git format-patch` or `diff -u`, or remove it from "
                            "the series' patches/")


def debug_fragment(tree: KernelTree) -> Path:
    """The tree's own debug fragment (linuxkit's config-dbg), else lkbuild's."""
    own = tree.path / "config-dbg"
    return own if own.is_file() else RECIPE_DIR / "config-dbg"


def plan(settings: Settings, request: Request, need_config: bool = True,
         source: sources.SourceTarball | None = None) -> Plan:
    """Resolve series, config, fragments and the verified source (or the one given, already
    verified elsewhere); compute the tags."""
    parse_version(request.version)
    tree = KernelTree(settings.kernel_dir)
    series = tree.for_version(request.version)
    series.dirs(request.variant)
    config = _check_file(request.config, "config file", "--config") if request.config \
        else None
    if config is None and need_config:
        series.config(request.arch)
    fragments = tuple(_check_file(f, "fragment", "--fragment") for f in request.fragments)
    _check_patches(series.patches(request.variant))
    if request.debug:
        fragments = (debug_fragment(tree), *fragments)
    source = source or sources.fetch(settings, request.version, request.source)
    build_image = request.build_image or settings.build_image \
        or series.build_args.get("BUILD_IMAGE", "")
    if not build_image:
        raise UserError(f"no build image for {series.name}",
                        "set BUILD_IMAGE in its build-args, or pass --build-image")
    extra = {**request.build_args, "BUILD_IMAGE": build_image}
    if request.profile is not None and request.profile.randstruct_seed:
        extra["RANDSTRUCT_SEED"] = request.profile.randstruct_seed  # kernel/scripts/compile.sh
    inputs = BuildInputs(tree, series, request.version, request.arch, variant=request.variant,
                         debug=request.debug, config=config, fragments=fragments,
                         extra_args=extra, source_sha256=source.sha256,
                         recipe_dir=RECIPE_DIR)
    digest = inputs.digest()
    if series.deprecated:
        ui.warn(f"series {series.name} is marked deprecated")
    v, a, d = request.version, request.arch, request.debug
    refs = [ref(settings, v, digest, a, d), ref(settings, v, None, a, d)]
    builder_refs = [ref(settings, v, digest, a, d, builder=True),
                    ref(settings, v, None, a, d, builder=True)]
    return Plan(request, tree, inputs, source, build_image, digest, refs, builder_refs,
                settings.cache_id)


def choose_jobs(engine: Engine, requested: int,
                model: resources.JobModel = resources.DEFAULT_MODEL) -> int:
    """Make jobs: the request, else what the engine's cpus and memory allow; refuse too many."""
    memory = engine.memory
    if requested:
        need = resources.memory_needed(requested, model)
        if memory and need > memory:
            fits = resources.jobs_for(max(engine.cpus, requested), memory, model)
            raise UserError(
                f"-j{requested} needs about {need / 2**30:.1f} GiB but the engine on "
                f"{engine.describe()} has {memory / 2**30:.1f} GiB",
                f"use --jobs {fits} or give the engine more memory")
        return requested
    return resources.jobs_for(engine.cpus or 1, memory or resources.memory_needed(1, model),
                              model)


def job_request(settings: Settings, p: Plan) -> tuple[int, resources.JobModel]:
    """The make jobs asked for (0: sized from the engine) and the memory model to size them
    with: what an earlier build of this kernel and config measured, else the default."""
    requested = p.request.jobs or settings.jobs or series_jobs(p)
    return requested, resources.model_for(settings.cache_dir, jobs_key(p))


def jobs_key(p: Plan) -> str:
    """What a measured job size belongs to: the kernel, arch, flavour and config, not the
    cache scope (another user's or a fresh scope's build of it takes as much memory)."""
    h = hashlib.sha256()
    for f in ([p.inputs.config] if p.inputs.config else []) + list(p.inputs.fragments):
        h.update(f.read_bytes() + b"\0")
    return f"{p.cache_key[len(cache_scope(p.cache_id)) + 1:]}-{h.hexdigest()[:12]}"


def progress_key(p: Plan, ctx: Path) -> str:
    """What a build's object count and compile time belong to: the series, arch, flavour and
    the staged config (series config or --config, variant's, fragments), not the version or
    cache scope (a point release or another user compiles about as much)."""
    h = hashlib.sha256()
    for f in sorted((ctx / "config").rglob("*")):
        if f.is_file():
            h.update(f.relative_to(ctx).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    r = p.request
    parts = [p.inputs.series.name, r.arch.name] + ([r.variant] if r.variant else []) \
        + (["dbg"] if r.debug else []) + (["native"] if r.native else [])
    return "-".join([*parts, h.hexdigest()[:12]])


def series_jobs(p: Plan) -> int:
    """MAKE_JOBS from the build-args (how linuxkit users cap jobs today), or 0."""
    raw = p.inputs.build_args().get("MAKE_JOBS", "")
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) < 1:
        raise UserError(f"MAKE_JOBS={raw!r} in the build-args is not a positive number")
    return int(raw)


def check_disk(settings: Settings, engine: Engine, image: str = "", key: str = "") -> None:
    """Refuse before starting when the cache, the engine's disk (measured in a container of
    `image` when it is not this machine's) or, for Docker Desktop, the Mac disk its disk image
    grows into cannot hold a build (`key`: the build whose measured disk to expect)."""
    need, how = resources.disk_needed(settings, key)
    places = [("the cache dir", str(settings.cache_dir),
               resources.free_bytes(settings.cache_dir))]
    engine_free = engine.data_root_free(image)
    if engine_free is not None:
        places.append(("the engine's data root", engine.data_root, engine_free))
    if engine.in_vm:
        disk = resources.DiskImage.read(settings.desktop_disk_image)
        if disk is not None:
            places.append((f"the disk that holds {disk.path.name}", str(disk.path.parent),
                           disk.host_free))
    for what, path, free in places:
        if free < need:
            raise InfraError(
                f"only {free / GB:.1f} GB free in {what} {path}; a kernel build needs "
                f"{how}",
                "free disk space (docker system prune), or lower LKBUILD_MIN_FREE_GB for a "
                "small config")


def ensure_build_image(engine: Engine, image: str) -> None:
    """The build image must exist on the builder's engine, or be pullable there."""
    if engine.image_exists(image):
        return
    ui.info(f"pulling build image {image}")
    try:
        engine.client.images.pull(image)
    except Exception as exc:  # the SDK raises several unrelated types for a failed pull
        reason = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
        raise UserError(
            f"build image {image} is not on {engine.describe()} and cannot be pulled: {reason}",
            "make the offline one with `inv bootstrap-image` and pass --build-image "
            "lkbuild/build:bookworm (or set LKBUILD_BUILD_IMAGE)") from None


def stage(p: Plan, ctx: Path, with_source: bool = True) -> None:
    """The build context: Dockerfile, scripts, source, patches in order, config, fragments.
    Without the source, source/ stays empty (a build host fetches it itself)."""
    context.put_file(ctx / "Dockerfile", (RECIPE_DIR / "Dockerfile").read_bytes())
    context.sync_tree(ctx / "scripts", {f.name: (f.read_bytes(), 0o755)
                                for f in sorted((RECIPE_DIR / "scripts").glob("*.sh"))})
    if with_source:
        context.link_file(ctx / "source", p.source.path)
    else:
        context.sync_tree(ctx / "source", {})
    patches = p.inputs.series.patches(p.request.variant)
    context.sync_tree(ctx / "patches", {f"{i:04d}-{f.name}": (f.read_bytes(), 0o644)
                                for i, f in enumerate(patches, 1)})
    series_config = p.inputs.series.path / f"config-{p.arch.uname}"
    if p.inputs.config is not None:
        config = p.inputs.config.read_bytes()
    elif series_config.is_file():
        config = series_config.read_bytes()
    else:  # kconfig from one of the kernel's own base configs
        config = b""
    for d in p.inputs.series.dirs(p.request.variant)[1:]:
        extra = d / f"config-{p.arch.uname}"
        if extra.is_file():
            config += b"\n" + extra.read_bytes()
    context.sync_tree(ctx / "config", {
        "config": (config, 0o644),
        **{f"fragments/{i:02d}-{f.name}": (f.read_bytes(), 0o644)
           for i, f in enumerate(p.inputs.fragments, 1)}})


def engine_arch(engine: Engine) -> Arch:
    """The arch the engine builds on: where a cross toolchain's binaries run."""
    return resolve(str(engine.info().get("Architecture") or "x86_64"))


def builder_platform(engine: Engine) -> str:
    return engine_arch(engine).platform


def build_args(p: Plan, build_arch: Arch, jobs: int,
               auto: resources.JobModel | None = None) -> dict[str, str]:
    """`auto`: the model automatic jobs came from (None: the jobs were asked for)."""
    model = auto or resources.DEFAULT_MODEL
    arch = p.arch
    native = p.request.native or build_arch.name == arch.name
    args = dict(p.inputs.build_args())
    args.update({
        "BUILD_IMAGE": p.build_image,
        "TOOLCHAIN": "native" if p.request.native else "cross",
        "KARCH": arch.kernel_arch,
        "SRCARCH": arch.kernel_srcarch,
        "CROSS_COMPILE": "" if native else arch.cross_compile,
        "KIMAGE": arch.image_file,
        "MAKE_JOBS": str(jobs),
        # compile.sh lowers automatic jobs to what a builder's own memory limit allows.
        "JOBS_AUTO": "0" if auto is None else "1",
        "JOBS_RESERVE_MB": str(model.reserve // resources.MiB),
        "JOBS_PER_JOB_MB": str(model.per_job // resources.MiB),
        "CACHE_KEY": p.cache_key,
        "SOURCE_KEY": p.source_key(),
        "SOURCE_SHA256": p.source.sha256,
        "LOCALVERSION": DEBUG_LOCALVERSION if p.request.debug else "",
        "DEBUG": "1" if p.request.debug else "0",
    })
    return args


def log_path(settings: Settings, p: Plan) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    kind = "kernel-dbg" if p.request.debug else "kernel"
    name = f"{kind}-{p.request.version}-{p.arch.name}-{stamp}.log"
    return Path(settings.cache_dir) / "logs" / name


def _run(engine: Engine, b: buildx.Build, log: Path, what: str) -> None:
    argv = buildx.command(b, engine.cli_args())
    check_exit(buildx.run(argv, engine.cli_env(), log), log, what)


def check_exit(code: int, log: Path, what: str) -> None:
    """A failed step becomes one line: the diagnosed cause and fix, or the exit code and log."""
    if code == 0:
        return
    raise step_error(code, log, what)


def config_finality(p: Plan, out: Path) -> kconfig.Finality:
    """The config step's changes to the requested config, sorted by the tree's own facts."""
    requested = kconfig.parse((out / "requested").read_text())
    changed = kconfig.parse((out / "base").read_text())
    facts = kconfig_tree.read(out / "kconfig.tgz", p.arch.kernel_arch)
    return kconfig.classify(requested, changed, facts, p.request.strict_config)


def warn_notices(finality: kconfig.Finality) -> None:
    for name, found in finality.notices().items():
        if found:
            ui.warn(f"{len(found)} {kconfig.NOTICE_GROUPS[name]}: {kconfig.summary(found, 3)}")


def check_config(p: Plan, out: Path) -> kconfig.Finality:
    """Stop before compiling when the config is not final or a fragment did not stick."""
    final = kconfig.parse((out / "config").read_text())
    finality = config_finality(p, out)
    v, a = p.request.version, p.arch.name
    if not finality.final:
        user = finality.nonfinal
        where = f"--config {p.inputs.config}" if p.inputs.config else \
            f"{p.inputs.series.name}/config-{p.arch.uname}"
        save = f"--config {p.inputs.config} --save" if p.inputs.config else "--save"
        rule = " (--strict-config: every change counts)" if p.request.strict_config else ""
        raise UserError(
            f"config {where} is not final ({len(user)} symbols change{rule}): "
            f"{kconfig.summary(user)}",
            f"run `inv kconfig --version {v} --arch {a} --olddefconfig {save}` and review the "
            "changes")
    warn_notices(finality)
    fragments = [kconfig.parse(f.read_text()) for f in sorted((out / "fragments").iterdir())] \
        if (out / "fragments").is_dir() else []
    missed = kconfig.unmet(fragments, final)
    if missed:
        raise UserError(
            f"fragment settings did not stick ({len(missed)}): {kconfig.summary(missed)}",
            "a dependency of each is not enabled: add it to the fragment")
    return finality


@dataclass
class Session:
    """One build's engine, staged context and arguments, held under the context's lock."""

    plan: Plan
    engine: Engine
    jobs: int
    log: Path
    ctx: Path
    base: dict[str, Any]

    def run(self, what: str, **kw: Any) -> None:
        _run(self.engine, buildx.Build(**{**self.base, **kw}), self.log, what)


@contextlib.contextmanager
def staged(settings: Settings, p: Plan, build_arch: Arch, jobs: int,
           kconfig_base: str = "", with_source: bool = True,
           auto: resources.JobModel | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Stage the context under its lock and hold the lock while the build uses it; yield it
    with the arguments every step shares."""
    ctx = Path(settings.cache_dir) / "context" / p.cache_key
    with context.locked(ctx, f"{p.request.version} {p.arch.name}"):
        stage(p, ctx, with_source)
        args = build_args(p, build_arch, jobs, auto)
        if kconfig_base:
            args["KCONFIG_BASE"] = kconfig_base
        yield ctx, dict(context=ctx, platform=p.arch.platform, args=args,
                        builder=settings.builder_name)


@contextlib.contextmanager
def session(settings: Settings, p: Plan, engine: Engine, jobs: int,
            kconfig_base: str = "", auto: resources.JobModel | None = None
            ) -> Iterator[Session]:
    with staged(settings, p, engine_arch(engine), jobs, kconfig_base, auto=auto) as (ctx, base):
        yield Session(p, engine, jobs, log_path(settings, p), ctx, base)


def configure(s: Steps, tmp: Path) -> Path:
    """Run the config step; its files (requested, base, config, fragments) land in tmp."""
    out = tmp / "config"
    s.run("configuring the kernel", target="config", local_output=out)
    return out


class Steps(Protocol):
    """What runs a build's BuildKit steps: a local Session, or a remote one."""

    def run(self, what: str, **kw: Any) -> None: ...


def make_images(s: Steps, p: Plan, build_platform: str
                ) -> tuple[dict[str, str], kconfig.Finality | None]:
    """Config check, compile, kernel image (and -builder): the steps of every build, local or
    remote; the compile's facts become the images' labels. The facts, and the config check's
    notices (None for a profile's build, which the fidelity check reports)."""
    request = p.request
    # One nonce for the compile and both packaging steps: each runs from the compile step,
    # which without it would come from the layer cache (an older compile) for the images.
    rerun = str(time.time_ns()) if request.force else ""
    with tempfile.TemporaryDirectory(prefix="lkbuild-") as tmp:
        out = configure(s, Path(tmp))
        finality = None
        if request.profile is not None:
            fidelity.check_config(request.profile, out, request.allow_mismatch)
        else:
            finality = check_config(p, out)
        facts_dir = Path(tmp) / "facts"
        s.run("compiling the kernel", target="facts", local_output=facts_dir, rerun=rerun)
        facts = {f.name: f.read_text().strip() for f in facts_dir.iterdir()}
    if request.profile is not None:
        fidelity.check_built(request.profile, facts.get("release", ""),
                             facts.get("vermagic", ""), request.allow_mismatch)
    labels = {
        f"{LABEL}.release": facts.get("release", ""),
        f"{LABEL}.vermagic": facts.get("vermagic", ""),
        f"{LABEL}.config.sha256": facts.get("config-sha256", ""),
        f"{LABEL}.source.sha256": p.source.sha256,
        f"{LABEL}.compiler": facts.get("compiler", ""),
        f"{LABEL}.build-image": p.build_image,
        f"{LABEL}.hash": p.digest,
        f"{LABEL}.version": request.version,
        f"{LABEL}.arch": p.arch.name,
    }
    if request.builder_image:
        labels[f"{LABEL}.builder"] = p.builder_refs[0]
    s.run("packaging the kernel image", target="kernel", labels=labels, tags=p.refs,
          rerun=rerun)
    if request.builder_image:
        # It runs where it was built (cross compiler, host tools for the build
        # platform), so it carries the build platform, unless it is the target's own.
        s.run("making the builder image", target="builder", labels=labels,
              tags=p.builder_refs, platform=p.arch.platform if request.native else build_platform,
              rerun=rerun)
    return facts, finality


def remember_jobs(settings: Settings, p: Plan, facts: dict[str, str], jobs: int) -> int:
    """Keep the compile's measured peak for the next build's jobs; the jobs make really ran
    with (the builder may have lowered them to its own memory limit)."""
    used = int(facts["jobs"]) if facts.get("jobs", "").isdigit() else jobs
    peak, disk = facts.get("peak-rss", ""), facts.get("disk-bytes", "")
    if peak.isdigit() or disk.isdigit():
        resources.remember_peak(settings.cache_dir, jobs_key(p),
                                int(peak) if peak.isdigit() else 0, used,
                                int(disk) if disk.isdigit() else 0)
    return used


def tag_groups(p: Plan, builder_image: bool) -> list[list[str]]:
    """The refs a build tags, per image: its hash tag first, then the plain tag."""
    return [p.refs] + ([p.builder_refs] if builder_image else [])


def build(settings: Settings, request: Request) -> Result:
    """Build one kernel image (and its -builder image when asked); skip it when it exists."""
    started = time.monotonic()
    p = plan(settings, request)
    engine = buildx.engine_for(settings, request.arch, request.builders)
    groups = tag_groups(p, request.builder_image)
    wanted = [r for group in groups for r in group]
    existing = engine.image(p.refs[0])
    if existing and not request.force and all(engine.image_exists(g[0]) for g in groups[1:]):
        labels = (existing.get("Config") or {}).get("Labels") or {}
        ui.info(f"{p.refs[0]} is up to date (hash {p.digest}); --force rebuilds it")
        for ref in realign(engine, groups):
            ui.info(f"{ref} now names this build again")
        return Result(wanted, existing["Id"], labels.get(f"{LABEL}.release", ""),
                      labels.get(f"{LABEL}.vermagic", ""), p.digest, p.arch.name,
                      request.version, time.monotonic() - started, 0, True)
    requested, model = job_request(settings, p)
    jobs = choose_jobs(engine, requested, model)
    ensure_build_image(engine, p.build_image)
    check_disk(settings, engine, p.build_image, jobs_key(p))
    if request.native and resolve(str(engine.info().get("Architecture"))).name != p.arch.name:
        ui.warn(f"--native builds {p.arch.name} under emulation on {engine.describe()}: "
                "expect it to be many times slower than a cross build")
    with session(settings, p, engine, jobs, auto=None if requested else model) as s:
        how = "" if requested else f" ({model.describe()})"
        ui.info(f"building {p.refs[0]} on {engine.describe()} with make -j{jobs}{how}; "
                f"log: {s.log}")
        key = progress_key(p, s.ctx)
        with ui.build_view("kernel", settings.verbose,
                           progress.earlier(settings.cache_dir, key)) as view:
            facts, finality = make_images(s, p, builder_platform(engine))
        log = s.log
    summary = view.final if view is not None else None
    measured = view.tracker.record() if view is not None else None
    if measured is not None:
        progress.remember(settings.cache_dir, key, measured)
    jobs = remember_jobs(settings, p, facts, jobs)
    image = engine.image(p.refs[0])
    if image is None:
        raise BuildError(f"the build finished but {p.refs[0]} is not in the engine",
                         f"see the log: {log}")
    return Result(wanted, image["Id"], facts.get("release", ""), facts.get("vermagic", ""),
                  p.digest, p.arch.name, request.version, time.monotonic() - started, jobs,
                  False, str(log), finality, summary=summary)


@dataclass
class KconfigResult:
    config: str  # the resulting config text
    changed: list[kconfig.Change]
    saved: Path | None
    finality: kconfig.Finality  # the input config's changes, as a build's check sorts them
    in_tree: dict[str, str] = field(default_factory=dict)  # recipe -> built-in/module/missing

    @property
    def counts(self) -> dict[str, int]:
        """How big the config is: symbols built in (=y) and built as modules (=m)."""
        values = kconfig.parse(self.config).values()
        return {"builtin": sum(v == "y" for v in values), "modules": sum(v == "m" for v in values)}

    def as_json(self) -> dict[str, Any]:
        return {"changed": [str(c) for c in self.changed],
                "saved": str(self.saved) if self.saved else None, **self.counts,
                "in_tree_modules": self.in_tree, **self.finality.as_json()}


def kconfig_target(p: Plan, output: Path | None) -> Path:
    """Where --save writes: --output, else the --config file, else the series config."""
    if output is not None:
        return Path(output).expanduser().resolve()
    if p.inputs.config is not None:
        return p.inputs.config
    return p.inputs.series.path / f"config-{p.arch.uname}"


def kconfig_run(settings: Settings, request: Request, *, base: str = "", save: bool = False,
                output: Path | None = None, menuconfig: bool = False) -> KconfigResult:
    """Config work without compiling: olddefconfig, fragments, a kernel base config, menuconfig.

    The result is checked like a build's, except that the changes are the point: they are
    reported, and written back (atomically) only with --save.
    """
    p = plan(settings, request, need_config=not base)
    engine = buildx.engine_for(settings, request.arch, request.builders)
    ensure_build_image(engine, p.build_image)
    if menuconfig and not (os.isatty(0) and os.isatty(1)):
        raise UserError("--menuconfig needs an interactive terminal",
                        "run it from a terminal, or use --fragment/--olddefconfig")
    with session(settings, p, engine, jobs=1, kconfig_base=base) as s, \
            tempfile.TemporaryDirectory(prefix="lkbuild-") as tmp:
        out = configure(s, Path(tmp))
        text = (out / "config").read_text()
        if menuconfig:
            text = _menuconfig(s, p, Path(tmp))
        requested = kconfig.parse((out / "requested").read_text())
        changed = kconfig.changes(requested, kconfig.parse(text))
        finality = config_finality(p, out)
        fragments = [kconfig.parse(f.read_text()) for f in sorted((out / "fragments").iterdir())] \
            if (out / "fragments").is_dir() else []
        missed = kconfig.unmet(fragments, kconfig.parse(text))
        if missed:
            raise UserError(
                f"fragment settings did not stick ({len(missed)}): {kconfig.summary(missed)}",
                "a dependency of each is not enabled: add it to the fragment")
    saved = None
    if save:
        saved = kconfig_target(p, output)
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(saved, text, mode=0o644)
    from .modrecipe import in_tree_status

    return KconfigResult(text, changed, saved, finality,
                         in_tree_status(Path(settings.module_dir), kconfig.parse(text)))


def _menuconfig(s: Session, p: Plan, tmp: Path) -> str:
    """Build the kconfig image and run menuconfig in it on the user's terminal."""
    image = f"lkbuild/kconfig:{p.request.version}-{p.arch.name}"
    s.run("making the kconfig image", target="kconfig", tags=[image])
    outdir = tmp / "menuconfig"
    outdir.mkdir()
    argv = ["docker", *s.engine.cli_args(), "run", "--rm", "-it", "--network", "none",
            "-v", f"{outdir}:/out", image, "sh", "-c",
            "make menuconfig && cp .config /out/config"]
    code = subprocess.call(argv, env=s.engine.cli_env())
    result = outdir / "config"
    if code != 0 or not result.is_file():
        raise UserError("menuconfig did not save a config", "nothing was changed")
    return result.read_text()


def prune(settings: Settings, build_image: str = "") -> int:
    """Remove this cache id's unpacked sources and build dirs; return the bytes freed.

    Only the scope of `cache_id` is touched, inside lkbuild's own cache mount, so other
    users' caches on a shared builder survive.
    """
    engine = connect(settings)
    image = build_image or settings.build_image or settings.bootstrap_image
    ensure_build_image(engine, image)
    scope = cache_scope(settings.cache_id)
    with tempfile.TemporaryDirectory(prefix="lkbuild-prune-") as tmp:
        ctx = Path(tmp) / "ctx"
        (ctx / "scripts").mkdir(parents=True)
        shutil.copy2(RECIPE_DIR / "Dockerfile", ctx / "Dockerfile")
        shutil.copy2(RECIPE_DIR / "scripts" / "prune.sh", ctx / "scripts" / "prune.sh")
        out = Path(tmp) / "out"
        arch = resolve(str(engine.info().get("Architecture") or "x86_64"))
        b = buildx.Build(context=ctx, target="prune", platform=arch.platform, local_output=out,
                         builder=settings.builder_name,
                         args={"BUILD_IMAGE": image, "PRUNE_SCOPE": scope},
                         rerun=str(time.time_ns()))
        log = Path(settings.cache_dir) / "logs" / f"prune-{datetime.now():%Y%m%d-%H%M%S}.log"
        code = buildx.run(buildx.command(b, engine.cli_args()), engine.cli_env(), log,
                          echo=False)
        if code != 0:
            raise BuildError("pruning the build cache failed", f"see the log: {log}")
        freed = int((out / "freed").read_text().strip() or 0)
    staged = Path(settings.cache_dir) / "context"
    if staged.is_dir():
        for child in staged.iterdir():
            if child.name.startswith(f"{scope}-"):
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
    return freed
