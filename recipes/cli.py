"""The Invoke tasks: parse flags, call a recipe, print the result.

`tasks.py` at the top of the checkout re-exports `ns`, so `inv TASK` works there; the
`lkbuild` console script runs the same namespace through invoke.Program anywhere.
Every task goes through `edge`, the one place where our exceptions become one stderr line and
an exit code.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Collection, Context, Exit, Program, Task, task as invoke_task
from invoke.parser import Argument

from . import arch as archmod, series as seriesmod, ui
from .errors import LkbuildError, UserError
from .settings import ROOT, Settings

KERNEL_DIR_HELP = "kernel tree in linuxkit's layout (default: setting kernel_dir)"
JSON_HELP = "print JSON on stdout instead of a table"


USAGE_HINT = "`lkbuild --list` lists the tasks, `lkbuild -h TASK` a task's flags"


def whole_number_error(flag: str, value: str) -> Exit:
    """The usage line for a word given where a count or seconds go."""
    return Exit(f"lkbuild: error: {flag} takes a whole number, got {value!r} "
                f"(give digits only after {flag}; {USAGE_HINT})", 2)


class CheckedFlag(Argument):
    """A task flag whose value is checked as it is parsed.

    Invoke casts a typed flag's value (`--jobs lots` through int()) while it parses, before
    any task runs, so no task can catch the failure, and `inv` prints it as a traceback.
    Here it is lkbuild's one usage line, the same under `inv` and `lkbuild`."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        try:
            super().set_value(value, cast)
        except (TypeError, ValueError):
            raise whole_number_error(f"--{self.names[0]}", str(value)) from None

    def __repr__(self) -> str:
        # Invoke's parse errors name a flag by its repr ("Flag ... needed value"): the flag
        # as typed reads better there than the class's own <Argument: ...>
        return "--" + self.names[0].replace("_", "-")


class CheckedTask(Task):
    """Invoke's Task with CheckedFlag arguments."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        for arg in args:
            arg.__class__ = CheckedFlag
        return args


task = functools.partial(invoke_task, klass=CheckedTask)


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn lkbuild errors, Ctrl-C and surprises into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        try:
            from . import resources
            for found in resources.adopt_helpers():
                ui.info(f"using the credential helper in {found}, which is not on PATH here "
                        f"(for docker itself: export PATH=\"{found}:$PATH\")")
            return fn(c, *args, **kwargs)
        except LkbuildError as exc:
            raise Exit(exc.line(), exc.exit_code) from None
        except KeyboardInterrupt:
            raise Exit("lkbuild: interrupted", 130) from None
        except Exit:
            raise
        except Exception as exc:  # the last line of defence: still one line, no traceback
            if os.environ.get("LKBUILD_DEBUG"):
                traceback.print_exc()
            first = " ".join(str(exc).split()) or type(exc).__name__
            raise Exit(f"lkbuild: internal error: {type(exc).__name__}: {first} "
                       "(set LKBUILD_DEBUG=1 for a traceback)", 70) from None

    return wrapper


def settings(**flags: Any) -> Settings:
    return Settings(flags=flags)


def version_of(version: str, source: str, s: Settings) -> str:
    """The --version, or, when only a local --source is given, the version inside it."""
    from . import sources

    if not version and source and not sources.is_url(source):
        version = sources.tarball_version(sources.local_path(source), s.cache_dir)
    if not version:
        raise UserError("--version is required", "e.g. --version 6.12.54, or give a local "
                        "--source tarball to take the version from")
    seriesmod.parse_version(version)
    return version


@task(help={"json": JSON_HELP})
@edge
def config(c: Context, json: bool = False) -> None:
    """Show every setting's effective value and where it came from."""
    s = settings()
    if json:
        ui.emit_json(s.as_json())
        return
    ui.table(["setting", "value", "source"],
             [(v.name, "" if v.value is None else v.value, v.source) for v in s.values()])


@task(name="list", help={"kernel_dir": KERNEL_DIR_HELP, "json": JSON_HELP,
                         "version": "only the series of this full version (as a build takes it)",
                         "arch": "only this arch (arm64, aarch64, amd64, x86_64)",
                         "source": "the --source the builds use (its digest is in the hash)"})
@edge
def list_(c: Context, kernel_dir: str = "", version: str = "", arch: str = "",
          source: str = "", json: bool = False) -> None:
    """List kernel series (version, arches, variants, hash) and the images built here."""
    from . import inventory

    s = settings(kernel_dir=kernel_dir)
    if version or source:
        version = version_of(version, source, s)
    rows = inventory.kernels(s, version, arch, source)
    images = inventory.local_images(s, {r["hash"] for r in rows if r["hash"]})
    inventory.settle_built(rows, images)
    if json:
        ui.emit_json([{"kind": "series", **r} for r in rows] + (images or []))
        return
    ui.table(["series", "version", "arch", "variants", "hash", "local image"],
             [(r["series"] + (" (deprecated)" if r["deprecated"] else ""), r["version"],
               r["arch"] or "-", ",".join(r["variants"]) or "-", r["hash"] or "-",
               r["image"] if r["built"] else ("none" if r["built"] is False else "unknown"))
              for r in rows], title="kernel series")
    if images is None:
        return
    if not images:
        ui.info("no kernel or module images built by lkbuild on this engine")
        return
    ui.table(["kind", "name", "version", "kernel", "arch", "hash", "image id", "size", "age",
              "current"],
             [(i["kind"], i["name"], i["version"], i["release"], i["arch"], i["hash"],
               i["id"].removeprefix("sha256:")[:12], ui.size(i["size"]), ui.age(i["age_s"]),
               "yes" if i["current"] else "-") for i in images],
             title="images on this engine")


@task(name="add-kernel", help={"version": "full kernel version, e.g. 6.12.54",
                               "kernel_dir": KERNEL_DIR_HELP})
@edge
def add_kernel(c: Context, version: str = "", kernel_dir: str = "") -> None:
    """Bump a series' KERNEL_VERSION, or start a new series from the nearest earlier one."""
    from . import inventory

    path = inventory.add_kernel(settings(kernel_dir=kernel_dir), version)
    ui.result(str(path))


@task(help={
    "version": "full kernel version, e.g. 6.12.54 (read from the tarball when --source is a file)",
    "source": "a local kernel tarball, or an http(s) URL (append #sha256=<hex> to pin its "
              "digest), instead of the mirror (setting kernel_mirror)",
    "keyring": "OpenPGP keyring to check the signature of sha256sums.asc with",
    "json": JSON_HELP,
})
@edge
def fetch(c: Context, version: str = "", source: str = "", keyring: str = "",
          json: bool = False) -> None:
    """Fetch and verify a kernel source tarball into the cache; print its path."""
    from . import sources

    s = settings(keyring=keyring)
    version = version_of(version, source, s)
    src = sources.fetch(s, version, source or None)
    if json:
        ui.emit_json(src.as_json())
    else:
        ui.result(str(src.path))


@task(help={"context": "Docker context of the target engine (default: DOCKER_HOST, then the "
                       "active one)",
            "privileged": "on Docker Desktop, also read the kernel image name from its VM's "
                          "/etc/linuxkit.yml (a privileged container in the VM's pid namespace)",
            "from_dir": "read a capture made elsewhere: the dir `sh capture.sh DIR` wrote on "
                        "the target (a VM, any Linux host), or a file holding the output of "
                        "`sh capture.sh` (a console log will do)",
            "image": "image to run the capture in (any with sh; default: setting "
                     "build_image, else alpine:3.20)",
            "save": "save the target as a profile for `build --profile` and `buildmodule "
                    "--profile` (written atomically)",
            "script": "print capture.sh (to run on a target by hand) and exit",
            "randstruct_seed": "the target kernel's scripts/basic/randstruct.seed, for a "
                               "RANDSTRUCT target: kept in the profile, checked against the "
                               "hash in the target's vermagic",
            "json": JSON_HELP})
@edge
def detect(c: Context, context: str = "", privileged: bool = False, from_dir: str = "",
           image: str = "", save: str = "", script: bool = False, randstruct_seed: str = "",
           json: bool = False) -> None:
    """Read the target kernel (release, arch, build, compiler, config, vermagic, image)."""
    from . import desktop, fidelity

    if script:
        sys.stdout.write(desktop.CAPTURE_SCRIPT.read_text())
        return
    if from_dir and (context or privileged):
        raise UserError("--from-dir reads a capture made elsewhere: it takes no --context or "
                        "--privileged")
    s = settings(context=context)
    found = desktop.detect(s, from_dir=from_dir, image=image, privileged=privileged)
    if randstruct_seed:
        found.profile = fidelity.with_seed(found.profile, randstruct_seed)
    for note in found.capture.notes:
        ui.warn(note)
    if save:
        fidelity.save(found.profile, Path(save))
        ui.info(f"profile saved to {save}")
    if json:
        ui.emit_json(found.as_json())
    else:
        ui.table(["", "target"], found.rows(), title="detect")


@task(help={"context": "Docker context to check (default: DOCKER_HOST, then the active one)",
            "json": JSON_HELP})
@edge
def doctor(c: Context, context: str = "", json: bool = False) -> None:
    """Check the engine, buildx, credentials, disk, memory and qemu; say how to fix each."""
    from . import resources

    checks = resources.doctor(settings(context=context))
    if json:
        ui.emit_json([ch.as_json() for ch in checks])
    else:
        ui.table(["check", "status", "detail", "fix"],
                 [(ch.name, ch.status, ch.detail, ch.fix) for ch in checks])
    failed = [ch.name for ch in checks if ch.status == "fail" and ch.blocker]
    if failed:
        raise Exit(f"lkbuild: error: doctor found blockers: {', '.join(failed)}", 3)


@task(name="bootstrap-image", help={
    "name": "image reference to create (default: setting bootstrap_image)",
    "mirror": "Debian mirror (default: setting debian_mirror)",
    "suite": "Debian suite (default: setting debian_suite)",
    "force": "rebuild even when an image with the same recipe exists",
})
@edge
def bootstrap_image(c: Context, name: str = "", mirror: str = "", suite: str = "",
                    force: bool = False) -> None:
    """Make the offline build image from a Debian mirror (debootstrap + import)."""
    from . import buildimage

    s = settings(bootstrap_image=name, debian_mirror=mirror, debian_suite=suite)
    ui.result(buildimage.bootstrap(s, force=force))


BUILD_HELP = {
    "version": "full kernel version; any version of an existing series, e.g. 6.12.117 "
               "(default: the version inside a local --source)",
    "arch": "target arch (arm64, aarch64, amd64, x86_64); repeatable; default: this machine's",
    "kernel_dir": KERNEL_DIR_HELP,
    "source": "a local kernel tarball or a URL instead of the mirror (verified either way)",
    "build_image": "image to compile in (default: setting build_image, then the series' "
                   "BUILD_IMAGE)",
    "config": "a full config file that replaces the series config",
    "fragment": "a config fragment merged on top; repeatable, merged in order",
    "variant": "a variant of the series, e.g. rt for 6.12.x-rt",
    "jobs": "make jobs (default: what the builder's cpus and memory allow)",
    "builders": "PLATFORM=CONTEXT to build that platform on another engine; repeatable; "
                "{arch} is replaced",
    "native": "compile in a target-arch container (emulated on a foreign host) instead of "
              "cross-compiling",
    "build_arg": "KEY=VALUE build argument over the series' build-args; repeatable",
    "force": "rebuild even when the image for this hash exists",
    "strict_config": "linuxkit's rule: any symbol olddefconfig changes makes the config "
                     "non-final (default: only a prompted symbol the config sets)",
    "json": "print JSON (refs, image id, release, hash, seconds, jobs, config notices) "
            "instead of references",
}
BUILD_ITERABLE = ["arch", "fragment", "builders", "build_arg"]
BASE_CONFIG_RE = re.compile(r"[a-z0-9_]*config")


def check_jobs(jobs: int) -> int:
    """--jobs: 0 (from the builder's cpus and memory) or a positive number of make jobs."""
    if jobs < 0:
        raise UserError(f"--jobs must be 0 or more, got {jobs}",
                        "leave it out to size make jobs from the builder's cpus and memory, "
                        "or give a number such as --jobs 4")
    return jobs


def check_builders(s: Settings, flags: list[str]) -> None:
    """--builders (or the setting) well-formed before any source is read or engine asked."""
    from . import buildx

    buildx.parse_builders(list(flags) or list(s.builders))


def build_args_of(pairs: list[str]) -> dict[str, str]:
    """--build-arg KEY=VALUE flags, checked like build-args file lines."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not seriesmod.ARG_KEY_RE.fullmatch(key):
            raise UserError(f"bad --build-arg {pair!r}", "use KEY=VALUE")
        out[key] = value
    return out


def _build(kind: str, version: str, arch: list[str], kernel_dir: str, source: str,
           build_image: str, config: str, fragment: list[str], variant: str, jobs: int,
           builders: list[str], native: bool, force: bool, json: bool,
           build_arg: list[str], profile: str = "", allow_mismatch: bool = False,
           strict_config: bool = False) -> None:
    from . import kernel

    check_jobs(jobs)
    s = settings(kernel_dir=kernel_dir, builders=builders)
    check_builders(s, builders)
    target = None
    if profile:
        target, version, config = profile_flags(s, profile, version, arch, config)
        arch = [target.arch.name]
    elif allow_mismatch:
        raise UserError("--allow-mismatch needs --profile")
    version = version_of(version, source, s)
    arches = [archmod.resolve(a) for a in (arch or [archmod.host().name])]
    extra_args = build_args_of(build_arg)
    results = []
    for a in arches:
        kinds = [False, True] if kind == "both" else [kind == "debug"]
        for debug in kinds:
            request = kernel.Request(
                version=version, arch=a, debug=debug, variant=variant,
                config=Path(config) if config else None,
                fragments=tuple(Path(f) for f in fragment), jobs=jobs, force=force,
                source=source or None, build_image=build_image, native=native,
                builders=list(builders), build_args=extra_args,
                builder_image=not debug and kind in ("build", "both"),
                profile=None if debug else target, allow_mismatch=allow_mismatch,
                strict_config=strict_config)
            result = kernel.build(s, request)
            results.append(result)
            if not json:
                for r in result.refs:
                    ui.result(r)
    if json:
        ui.emit_json([r.as_json() for r in results])


def profile_flags(s: Settings, path: str, version: str, arch: list[str], config: str
                  ) -> tuple[Any, str, str]:
    """--profile: the target, and the version and config file a build of it takes."""
    from . import fidelity

    if len(arch) > 1:
        raise UserError("--profile builds the profile's arch only", "leave --arch out")
    target = fidelity.load(path, archmod.resolve(arch[0]) if arch else None)
    if version and version != target.version:
        raise UserError(f"--version {version} differs from the profile's {target.version} "
                        f"(release {target.release})", "leave --version out")
    if config:
        ui.warn(f"--config {config} replaces the profile's config: the build matches the "
                "target only as far as that file does")
    else:
        config = str(fidelity.config_file(target, Path(s.cache_dir)))
    return target, target.version, config


@task(help=BUILD_HELP, iterable=BUILD_ITERABLE)
@edge
def buildplainkernel(c: Context, version: str = "", arch: list[str] | None = None,
                     kernel_dir: str = "", source: str = "", build_image: str = "",
                     config: str = "", fragment: list[str] | None = None, variant: str = "",
                     jobs: int = 0, builders: list[str] | None = None, native: bool = False,
                     force: bool = False, build_arg: list[str] | None = None,
                     strict_config: bool = False, json: bool = False) -> None:
    """Build the kernel image of a version for each arch; print its references."""
    _build("plain", version, arch or [], kernel_dir, source, build_image, config,
           fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], strict_config=strict_config)


@task(help=BUILD_HELP, iterable=BUILD_ITERABLE)
@edge
def builddebugkernel(c: Context, version: str = "", arch: list[str] | None = None,
                     kernel_dir: str = "", source: str = "", build_image: str = "",
                     config: str = "", fragment: list[str] | None = None, variant: str = "",
                     jobs: int = 0, builders: list[str] | None = None, native: bool = False,
                     force: bool = False, build_arg: list[str] | None = None,
                     strict_config: bool = False, json: bool = False) -> None:
    """Build the debug kernel (-dbg release, debug fragment, vmlinux); print its references."""
    _build("debug", version, arch or [], kernel_dir, source, build_image, config,
           fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], strict_config=strict_config)


@task(help={**BUILD_HELP, "debug": "also build the debug kernel",
            "profile": "build the kernel of a target profile (inv detect --save): its version, "
                       "arch and config; the compiler must match and every config symbol "
                       "olddefconfig moves is reported",
            "allow_mismatch": "with --profile, build even when the compiler differs from the "
                              "target's"}, iterable=BUILD_ITERABLE)
@edge
def build(c: Context, version: str = "", arch: list[str] | None = None, kernel_dir: str = "",
          source: str = "", build_image: str = "", config: str = "",
          fragment: list[str] | None = None, variant: str = "", jobs: int = 0,
          builders: list[str] | None = None, native: bool = False, force: bool = False,
          debug: bool = False, build_arg: list[str] | None = None, profile: str = "",
          allow_mismatch: bool = False, strict_config: bool = False, json: bool = False) -> None:
    """Build the kernel and its -builder image (and the debug kernel with --debug)."""
    _build("both" if debug else "build", version, arch or [], kernel_dir, source, build_image,
           config, fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], profile, allow_mismatch, strict_config)


@task(help={
    "version": BUILD_HELP["version"], "arch": "target arch (default: this machine's)",
    "kernel_dir": KERNEL_DIR_HELP, "source": BUILD_HELP["source"],
    "build_image": BUILD_HELP["build_image"],
    "config": "work on this config file instead of the series config",
    "fragment": "merge this fragment; repeatable, merged in order",
    "variant": BUILD_HELP["variant"], "builders": BUILD_HELP["builders"],
    "base": "start from the kernel's own config target instead of a file "
            "(defconfig, tinyconfig, allnoconfig, ...)",
    "olddefconfig": "run olddefconfig (always done; kept for the linuxkit workflow)",
    "menuconfig": "run menuconfig interactively in the kconfig image",
    "save": "write the result back (atomically) to the series config, --config or --output",
    "output": "with --save: write to this file instead",
    "strict_config": "judge the input config by linuxkit's rule (any change is non-final)",
    "json": "print JSON (changed symbols, saved path, final, the changes by group)",
}, iterable=["fragment", "builders"])
@edge
def kconfig(c: Context, version: str = "", arch: str = "", kernel_dir: str = "",
            source: str = "", build_image: str = "", config: str = "",
            fragment: list[str] | None = None, variant: str = "",
            builders: list[str] | None = None, base: str = "", olddefconfig: bool = False,
            menuconfig: bool = False, save: bool = False, output: str = "",
            strict_config: bool = False, json: bool = False) -> None:
    """Config work for a series: olddefconfig, fragments, base configs, menuconfig, --save."""
    from . import kernel

    if base and not BASE_CONFIG_RE.fullmatch(base):
        raise UserError(f"unknown base config {base!r}",
                        "use a kernel config target such as defconfig or tinyconfig")
    if output and not save:
        raise UserError("--output needs --save", "add --save to write the result")
    if menuconfig and not (os.isatty(0) and os.isatty(1)):
        raise UserError("--menuconfig needs an interactive terminal",
                        "run it from a terminal, or use --fragment/--olddefconfig")
    s = settings(kernel_dir=kernel_dir, builders=builders or [])
    check_builders(s, builders or [])
    version = version_of(version, source, s)
    a = archmod.resolve(arch) if arch else archmod.host()
    request = kernel.Request(version=version, arch=a, variant=variant,
                             config=Path(config) if config else None,
                             fragments=tuple(Path(f) for f in fragment or []),
                             source=source or None, build_image=build_image,
                             builders=list(builders or []), strict_config=strict_config)
    result = kernel.kconfig_run(s, request, base=base, save=save,
                                output=Path(output) if output else None, menuconfig=menuconfig)
    if json:
        ui.emit_json(result.as_json())
        return
    for change in result.changed:
        ui.info(f"  {change}")
    ui.info(f"{len(result.changed)} symbols differ from the input config")
    found = result.finality
    if found.nonfinal:
        ui.warn(f"the input config is not final ({len(found.nonfinal)} symbols it sets change): "
                f"{kernel.kconfig.summary(found.nonfinal)}")
    kernel.warn_notices(found)
    if result.saved:
        ui.result(str(result.saved))


KERNEL_FLAGS_HELP = {
    "kernel_dir": KERNEL_DIR_HELP, "source": BUILD_HELP["source"],
    "build_image": BUILD_HELP["build_image"], "config": BUILD_HELP["config"],
    "fragment": BUILD_HELP["fragment"], "variant": BUILD_HELP["variant"],
    "debug": "the debug kernel of that version",
}
"""Flags that pick lkbuild's kernel image when --kernel is a version: the build's own flags."""


def kernel_planner(s: Settings, source: str, build_image: str, config: str,
                   fragment: list[str], variant: str, debug: bool, profile: Any = None
                   ) -> Callable[..., Any]:
    """plan(version, arch) for the kernel image those build flags (or that profile) make."""
    from . import kernel as kernelmod

    def plan_for(version: str, a: archmod.Arch) -> kernelmod.Plan:
        request = kernelmod.Request(version=version, arch=a, debug=debug, variant=variant,
                                    config=Path(config) if config else None,
                                    fragments=tuple(Path(f) for f in fragment),
                                    source=source or None, build_image=build_image,
                                    profile=profile)
        return kernelmod.plan(s, request)

    return plan_for


@task(help={
    "kernel": "the kernel: a version (lkbuild's image for it, built with the same flags) or "
              "any kernel image in linuxkit's layout (linuxkit/kernel:6.12.52); default: the "
              "version of a local --source",
    "arch": "arch of the kernel (default: the kernel image's)",
    "module": "a recipe name under module/ (hello, zfs) or a PATH to a module dir with a "
              "Makefile",
    "module_version": "refuse unless the module is this version",
    "module_source": "a local copy of the recipe's source archive (checked against its "
                     "sha256) or a source directory, instead of downloading",
    "builder_image": "the image with the kernel's compiler (default: the kernel's -builder "
                     "image, or the one it names)",
    "matrix": "a versions file: build every row (KERNEL ARCH MODULE [VERSION]); rows whose "
              "images exist are skipped",
    "jobs": BUILD_HELP["jobs"], "force": "rebuild even when the images for this hash exist",
    "builders": BUILD_HELP["builders"],
    "profile": "a target profile (inv detect --save): build against the kernel built from it "
               "(inv build --profile) and refuse a kernel whose vermagic is not the target's",
    "json": "print JSON (refs, loader refs, release, vermagic, modules, hash) instead of "
            "references",
    **KERNEL_FLAGS_HELP,
}, iterable=["fragment", "builders"])
@edge
def buildmodule(c: Context, kernel: str = "", arch: str = "", module: str = "",
                module_version: str = "", module_source: str = "", builder_image: str = "",
                matrix: str = "", jobs: int = 0, force: bool = False,
                builders: list[str] | None = None, kernel_dir: str = "", source: str = "",
                build_image: str = "", config: str = "", fragment: list[str] | None = None,
                variant: str = "", debug: bool = False, profile: str = "",
                json: bool = False) -> None:
    """Build kernel modules against a kernel; make the module image and its loader image."""
    from . import matrix as matrixmod, module as modulemod

    check_jobs(jobs)
    s = settings(kernel_dir=kernel_dir, builders=builders or [])
    check_builders(s, builders or [])
    target = None
    if profile:
        if matrix:
            raise UserError("--profile and --matrix do not go together",
                            "a profile is one target: build its modules without --matrix")
        target, version, config = profile_flags(s, profile, "", [arch] if arch else [], config)
        kernel, arch = kernel or version, target.arch.name
    if not kernel and not matrix:
        kernel = version_of("", source, s)
    plan_for = kernel_planner(s, source, build_image, config, fragment or [], variant, debug,
                              target)
    base = modulemod.Request(module=module, kernel=kernel,
                             arch=archmod.resolve(arch) if arch else None,
                             version=module_version, source=module_source,
                             builder_image=builder_image, jobs=jobs, force=force,
                             builders=list(builders or []), profile=target)
    if matrix:
        rows = matrixmod.run(s, Path(matrix), base, plan_for)
        if json:
            ui.emit_json([r.as_json() for r in rows])
        else:
            ui.table(["kernel", "arch", "module", "status", "image", "detail"],
                     [r.cells() for r in rows], title="buildmodule --matrix")
        failed = [r for r in rows if r.status == "failed"]
        if failed:
            raise Exit(f"lkbuild: error: {len(failed)} of {len(rows)} matrix rows failed", 5)
        return
    result = modulemod.build(s, base, plan_for)
    if json:
        ui.emit_json(result.as_json())
        return
    for ref in result.refs + result.loader_refs:
        ui.result(ref)


@task(help={
    "kernel": "a kernel version (the image lkbuild built for it with the same flags), an "
              "image reference, or a directory in the kernel image layout (default: the "
              "version of a local --source)",
    "arch": "arch of the kernel (default: this machine's)",
    "module": "also load a module: its loader image (or module image) reference, or a "
              "recipe NAME or PATH as buildmodule built it for this kernel",
    "module_version": "with a NAME or PATH: refuse unless the module is this version",
    "module_source": "with a NAME or PATH: the --module-source buildmodule was given",
    "builder_image": "with a NAME or PATH: the --builder-image buildmodule was given",
    "timeout": "seconds before the VM is stopped and the test fails",
    "memory": "VM memory in MB (default: 256, or 1024 with --module)",
    "accel": "qemu accelerator: auto (hvf on a Mac of the same arch, else tcg), tcg, kvm, hvf",
    "json": "print JSON (passed, verdict, log, seconds, release)",
    **KERNEL_FLAGS_HELP,
}, iterable=["fragment"])
@edge
def vmtest(c: Context, kernel: str = "", arch: str = "", module: str = "",
           module_version: str = "", module_source: str = "", builder_image: str = "",
           timeout: int = 120, memory: int = 0, kernel_dir: str = "", source: str = "",
           build_image: str = "", config: str = "", fragment: list[str] | None = None,
           variant: str = "", debug: bool = False, accel: str = "auto",
           json: bool = False) -> None:
    """Boot a kernel in qemu (and load a module image's modules with its own loader)."""
    import tempfile

    from . import engine as enginemod, module as modulemod, vm
    from .errors import BuildError

    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}",
                        "give the seconds the VM may run, e.g. --timeout 120")
    if memory < 0 or 0 < memory < 64:
        raise UserError(f"--memory must be at least 64 (MB), got {memory}",
                        "give the VM's memory in MB, e.g. --memory 512, or leave it out")
    s = settings(kernel_dir=kernel_dir)
    if not kernel:
        kernel = version_of("", source, s)
    a = archmod.resolve(arch) if arch else archmod.host()
    plan_for = kernel_planner(s, source, build_image, config, fragment or [], variant, debug)
    target = plan_for(kernel, a).refs[0] if vm.is_version(kernel) else kernel
    stream = sys.stderr.isatty() and not json
    with tempfile.TemporaryDirectory(prefix="lkbuild-vm-") as tmp:
        tars: list[Path] = []
        commands: list[str] = []
        if module:
            engine = enginemod.connect(s)
            request = modulemod.Request(module=module, kernel=kernel, arch=a,
                                        version=module_version, source=module_source,
                                        builder_image=builder_image)
            try:
                loader = modulemod.loader_files(
                    engine, modulemod.loader_ref(s, engine, module, request, plan_for),
                    Path(tmp))
            finally:
                engine.close()
            tars, commands = [loader.tar], loader.commands()
            ui.info(f"loading {', '.join(loader.modules)} from {loader.ref} in the VM")
        result = vm.boot(s, target, a, timeout=timeout, stream=stream, accel=accel,
                         commands=commands, tars=tars, kernel_modules=bool(module),
                         memory_mb=memory or (1024 if module else vm.MEMORY_MB))
    if json:
        ui.emit_json(result.as_json())
    elif result.passed:
        ui.result(result.verdict)
    if not result.passed:
        if not stream:
            for line in vm.console_tail(result.log):
                ui.info(f"  | {line}")
        raise BuildError(f"vmtest failed: {result.verdict}", f"console log: {result.log}")


@task(help={
    **{k: v for k, v in BUILD_HELP.items() if k != "builders"},
    "version": "kernel version to build; repeatable (each with each --arch) (default: the "
               "version inside a local --source)",
    "host": "[USER@]HOST[:PORT] to build on over SSH (~/.ssh/config applies); repeatable: the "
            "builds are spread over the hosts",
    "identity": "SSH private key file (default: ~/.ssh/config, ssh-agent, ~/.ssh/id_*)",
    "known_hosts": "known_hosts file to check host keys against (default: ~/.ssh/known_hosts)",
    "accept_new_host_key": "trust a host key seen for the first time and add it to "
                           "known_hosts (a changed key is always refused)",
    "connect_timeout": "seconds to wait for SSH to answer",
    "fetch": "bring the images back into the local engine (--no-fetch leaves them there)",
    "ship_sources": "send the kernel source from here (fetched and verified here) instead of "
                    "letting the host fetch it from the mirror or URL and verify it there",
    "module": "also build this module (recipe name or dir) there against each kernel; its "
              "module and loader images are what comes back or is pushed",
    "module_version": "module version (default: the recipe's)",
    "module_source": "module source dir or tarball instead of the recipe's",
    "push": "the host pushes the images to --registry itself (with its own docker login) "
            "instead of sending them here; the multi-arch indexes are written from here",
    "registry": "registry host[:port] for --push (default: setting registry)",
    "force_push": "with --push, move tags that hold other content",
    "json": "print JSON (host, refs, image id, status, seconds, bytes sent) instead of a table",
}, iterable=["host", "version", "arch", "fragment", "build_arg"])
@edge
def remote_build(c: Context, host: list[str] | None = None, version: list[str] | None = None,
                 arch: list[str] | None = None, identity: str = "", known_hosts: str = "",
                 accept_new_host_key: bool = False, connect_timeout: int = 15,
                 fetch: bool = True, ship_sources: bool = False, kernel_dir: str = "",
                 source: str = "",
                 build_image: str = "", config: str = "", fragment: list[str] | None = None,
                 variant: str = "", jobs: int = 0, native: bool = False, force: bool = False,
                 build_arg: list[str] | None = None, module: str = "", module_version: str = "",
                 module_source: str = "", push: bool = False, registry: str = "",
                 force_push: bool = False, strict_config: bool = False,
                 json: bool = False) -> None:
    """Build kernels (and modules) on Linux hosts over SSH (only Docker and buildx there)."""
    from . import fanout, kernel, remote, ssh

    if not host:
        raise UserError("--host is required", "e.g. --host me@server or --host server:2222")
    check_jobs(jobs)
    if connect_timeout <= 0:
        raise UserError(f"--connect-timeout must be positive, got {connect_timeout}",
                        "give the seconds to wait for SSH, e.g. --connect-timeout 15")
    for h in host:
        ssh.parse_host(h)
    if force_push and not push:
        raise UserError("--force-push needs --push")
    s = settings(kernel_dir=kernel_dir)
    push_to = settings(kernel_dir=kernel_dir, registry=registry) if push else None
    if push_to is not None:  # a bad registry name fails before any build
        from . import push as pushmod
        pushmod.target(push_to)
    versions = [version_of(v, source, s) for v in (version or [""])]
    arches = [archmod.resolve(a) for a in (arch or [archmod.host().name])]
    extra = build_args_of(build_arg or [])
    targets = [remote.Target(h, identity, known_hosts, accept_new_host_key,
                             float(connect_timeout)) for h in host]

    def request_for(job: fanout.Job) -> kernel.Request:
        return kernel.Request(version=job.version, arch=job.arch, config=Path(config)
                              if config else None, fragments=tuple(Path(f) for f in fragment
                                                                   or []),
                              variant=variant, jobs=jobs, force=force, source=source or None,
                              build_image=build_image, native=native, build_args=extra,
                              builder_image=True, strict_config=strict_config)

    job = remote.ModuleJob(module, module_version, module_source) if module else None
    outcomes = fanout.run(s, fanout.jobs_of(versions, arches), targets, request_for,
                          fetch=fetch and not push, ship_sources=ship_sources, module=job,
                          push_to=push_to, force_push=force_push)
    if json:
        ui.emit_json([o.as_json() for o in outcomes])
    elif len(outcomes) == 1 and not outcomes[0].error:
        for ref in outcomes[0].pushed or outcomes[0].refs:
            ui.result(ref)
    else:
        ui.table(["version", "arch", "host", "status", "image", "seconds"],
                 [[o.version, o.arch, o.host, o.status, o.refs[0] if o.refs else o.error,
                   f"{o.seconds:.0f}"] for o in outcomes], title="remote-build")
    failed = [o for o in outcomes if o.error]
    if failed:
        raise Exit(f"lkbuild: error: {len(failed)} of {len(outcomes)} remote builds failed", 5)


PUSH_HELP = {
    "version": "the kernel version whose images to push",
    "arch": "push only this arch (repeatable; default: every arch built locally)",
    "org": "image organisation (default: setting org)",
    "registry": "registry host[:port] (default: setting registry, else Docker Hub)",
    "debug": "also push the debug kernel (-dbg)",
}


@task(help={
    **PUSH_HELP,
    "org": "the organisation the images go under (default: setting org), whatever org they "
           "were built under",
    "from_org": "take the local images built under this org only (default: --org's, then "
                "the setting org's, then any org's when only one build fits)",
    "module": "push a module's images (module and loader) instead of the kernel's",
    "kernel": "with --module: the kernel version or release they were built for",
    "force": "move tags that already point at other content in the registry",
    "dry_run": "print every reference and digest that would be pushed; send nothing",
    "context": "Docker context whose images to push",
    "json": "print JSON (ref, digest, status, kind, platforms) instead of references",
}, iterable=["arch"])
@edge
def push(c: Context, version: str = "", arch: list[str] | None = None, org: str = "",
         registry: str = "", debug: bool = False, module: str = "", kernel: str = "",
         force: bool = False, dry_run: bool = False, context: str = "",
         json: bool = False, from_org: str = "") -> None:
    """Push per-arch tags and the multi-arch OCI indexes of a kernel (or a module) to a registry."""
    from . import engine as enginemod, push as pushmod, registry as registrymod

    s = settings(org=org, registry=registry, context=context)
    # Where `inv build` put them: the setting org, which --org overrides for the push alone.
    orgs = [from_org] if from_org else \
        list(dict.fromkeys([s.org, settings(registry=registry, context=context).org]))
    if from_org:
        registrymod.check_repository(f"{from_org}/{module or 'kernel'}")
    arches = [archmod.resolve(a) for a in arch or []]
    engine = enginemod.connect(s)
    try:
        if module:
            if not (kernel or version):
                raise UserError("--module needs --kernel", "e.g. --module zfs --kernel 6.12.54")
            images = pushmod.module_images(s, engine, module, kernel or version, arches, orgs,
                                           elsewhere=not from_org)
        else:
            if not version:
                raise UserError("--version is required", "e.g. inv push --version 6.12.54")
            images = pushmod.kernel_images(s, engine, version, arches, debug, orgs,
                                           elsewhere=not from_org)
        outcomes = pushmod.push(s, engine, images, force=force, dry_run=dry_run)
    finally:
        engine.close()
    if json:
        ui.emit_json([o.as_json() for o in outcomes])
        return
    for o in outcomes:
        ui.info(f"{('would push' if dry_run and o.status != 'unchanged' else o.status):>10}  "
                f"{o.kind:5}  {o.ref}")
        ui.result(f"{o.ref}@{o.digest}")
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    ui.info(("dry run: " if dry_run else "") +
            ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


@task(help={**PUSH_HELP, "arch": "pull this arch (repeatable; default: this machine's)",
            "debug": "pull the debug kernel instead", "context": "Docker context to pull into"},
      iterable=["arch"])
@edge
def pull(c: Context, version: str = "", arch: list[str] | None = None, org: str = "",
         registry: str = "", debug: bool = False, context: str = "") -> None:
    """Pull a kernel's images (and its -builder) and tag them as a local build would."""
    from . import engine as enginemod, push as pushmod

    if not version:
        raise UserError("--version is required", "e.g. inv pull --version 6.12.54")
    s = settings(org=org, registry=registry, context=context)
    arches = [archmod.resolve(a) for a in arch or [archmod.host().name]]
    engine = enginemod.connect(s)
    try:
        refs = pushmod.pull(s, engine, version, arches, debug)
    finally:
        engine.close()
    for ref in refs:
        ui.result(ref)


@task(help={"build_image": "image to run the cleanup in (default: setting build_image, then "
                           "bootstrap_image)",
            "context": "Docker context whose build cache to prune"})
@edge
def prune(c: Context, build_image: str = "", context: str = "") -> None:
    """Remove lkbuild's unpacked sources and build dirs for your cache id; say what it freed."""
    from . import kernel

    freed = kernel.prune(settings(context=context), build_image)
    ui.result(f"freed {freed / 1000**3:.2f} GB")


TEST_TIERS = {"quick": "unit", "ci": "unit or ci", "full": "unit or ci or full"}
"""pytest markers each tier runs (tests/conftest.py gives every test exactly one of them)."""

CODE_CHECKS = (
    ("ruff", ("check", "."), "`ruff check --fix` fixes some; the rules are in pyproject.toml"),
    ("mypy", (), "the settings are in pyproject.toml"),
)
"""What every tier runs first, in the checkout: (module, its arguments, the hint on a failure)."""


def check_code() -> None:
    """ruff, then mypy, over the checkout; the first that finds a problem fails the task."""
    for name, args, hint in CODE_CHECKS:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"{name} is not installed", "python3 -m pip install -e '.[test]'")
        if subprocess.call([sys.executable, "-m", name, *args], cwd=ROOT) != 0:
            raise LkbuildError(f"{name} found problems, listed above", hint)


@task(help={"quick": "ruff, mypy and the unit tests alone (about a minute)",
            "full": "every test: the CI tier and the full tier (over an hour on 2 cores)",
            "k": "only tests matching this pytest -k expression"})
@edge
def test(c: Context, quick: bool = False, full: bool = False, k: str = "") -> None:
    """Run ruff, mypy, then the unit and CI-tier tests (--quick: unit alone; --full: all)."""
    if quick and full:
        raise UserError("--quick and --full name two tiers", "give one of them, or neither "
                                                             "for the CI tier")
    tier = "quick" if quick else "full" if full else "ci"
    check_code()
    args = [sys.executable, "-m", "pytest", str(ROOT / "tests"), "-m", TEST_TIERS[tier]]
    if tier != "quick":  # where the time went, in every log of a run for real
        args += ["--durations=25"]
    if k:
        args += ["-k", k]
    code = os.spawnv(os.P_WAIT, sys.executable, args)
    if code:
        raise Exit(code=code)


@task(help={"quick": "the small test configs (about an hour on 2 cores) instead of the "
                     "series' full ones (hours)",
            "only": "comma-separated benchmarks: kernel_build, jobs, remote (default: all)",
            "report": "run nothing: the goals table from the results already written"})
def bench(c: Context, quick: bool = False, only: str = "", report: bool = False) -> None:
    """Run the benchmarks side by side; print each figure against its goal (docs/benchmarks.md)."""
    args = [sys.executable, str(ROOT / "bench" / "run.py")] + (["--quick"] if quick else []) \
        + (["--only", only] if only else []) + (["--report"] if report else [])
    code = os.spawnv(os.P_WAIT, sys.executable, args)
    if code:
        raise Exit(code=code)


ns = Collection(config, list_, add_kernel, fetch, doctor, bootstrap_image, buildplainkernel,
                builddebugkernel, build, kconfig, buildmodule, vmtest, remote_build, push,
                detect, pull, prune, test, bench)
ns.configure({"run": {"echo": False}})


def usage_error(exc: Exception) -> Exit:
    """A command line Invoke could not parse, as lkbuild's one error line (exit 2)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"Flag <\w+: ([\w-]+)[^>]*>",
                  lambda m: "flag --" + m.group(1).replace("_", "-"), text)
    text = re.sub(r"^Flag (--[\w-]+)", r"flag \1", text)
    return Exit(f"lkbuild: error: {text} ({USAGE_HINT})", 2)


class LkbuildProgram(Program):
    """Invoke's Program with its parse errors in lkbuild's one-line form."""

    def parse_tasks(self) -> None:
        from invoke.exceptions import ParseError

        try:
            super().parse_tasks()
        except ParseError as exc:
            raise usage_error(exc) from None


def main() -> None:
    """Console script `lkbuild`: the same namespace, usable outside the checkout."""
    LkbuildProgram(namespace=ns, name="lkbuild", binary="lkbuild", version=_version()).run()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lkbuild")
    except PackageNotFoundError:
        return "unknown"

