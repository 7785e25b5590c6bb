"""Tasks on kernel series and kernel images: list, add-kernel, fetch, the builds and kconfig.

The build flags' help (BUILD_HELP) and checks live here; the module and remote tasks take
the same flags and reuse them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from invoke import Context

from recipes import arch as archmod, series as seriesmod, ui
from recipes.errors import UserError
from recipes.settings import Settings

from .common import JSON_HELP, KERNEL_DIR_HELP, edge, settings, task, version_of


@task(name="list", help={"kernel_dir": KERNEL_DIR_HELP, "json": JSON_HELP,
                         "version": "only the series of this full version (as a build takes it)",
                         "arch": "only this arch (arm64, aarch64, amd64, x86_64)",
                         "source": "the --source the builds use (its digest is in the hash)"})
@edge
def list_(c: Context, kernel_dir: str = "", version: str = "", arch: str = "",
          source: str = "", json: bool = False) -> None:
    """List kernel series (version, arches, variants, hash) and the images built here."""
    from recipes import inventory

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
    from recipes import inventory

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
    from recipes import sources

    s = settings(keyring=keyring)
    version = version_of(version, source, s)
    src = sources.fetch(s, version, source or None)
    if json:
        ui.emit_json(src.as_json())
    else:
        ui.result(str(src.path))


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
    "where": "auto (here when this engine fits the build, else the first build host that "
             "does), local, or a build host [USER@]HOST[:PORT] (default: setting where; auto "
             "when build_hosts is set)",
    "strict_config": "linuxkit's rule: any symbol olddefconfig changes makes the config "
                     "non-final (default: only a prompted symbol the config sets)",
    "verbose": "stream BuildKit's whole output (every make line) to stderr instead of the "
               "progress (default: setting verbose); the build's log holds it either way",
    "json": "print JSON (refs, image id, release, hash, seconds, jobs, config notices, the "
            "steps' times) instead of references; progress is then plain lines",
}
BUILD_ITERABLE = ["arch", "fragment", "builders", "build_arg"]
# A kernel config target (defconfig, tinyconfig), then fragment targets the kernel merges
# (virt.config from arch/*/configs, kvm_guest.config from kernel/configs): defconfig+virt.config
BASE_CONFIG_RE = re.compile(r"[a-z0-9_]*config(\+[a-z0-9_-]+\.config)*")


def check_jobs(jobs: int) -> int:
    """--jobs: 0 (from the builder's cpus and memory) or a positive number of make jobs."""
    if jobs < 0:
        raise UserError(f"--jobs must be 0 or more, got {jobs}",
                        "leave it out to size make jobs from the builder's cpus and memory, "
                        "or give a number such as --jobs 4")
    return jobs


def check_builders(s: Settings, flags: list[str]) -> None:
    """--builders (or the setting) well-formed before any source is read or engine asked."""
    from recipes import buildx

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
           strict_config: bool = False, where: str = "", verbose: bool = False) -> None:
    from recipes import kernel, offload

    check_jobs(jobs)
    s = settings(kernel_dir=kernel_dir, builders=builders, verbose=verbose or None)
    ui.plain_progress(json)
    check_builders(s, builders)
    place = offload.where_of(s, where)
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
            result = offload.build(s, request, place)
            results.append(result)
            if not json:
                for r in result.refs:
                    ui.result(r)
    if json:
        ui.emit_json([r.as_json() for r in results])


def profile_flags(s: Settings, path: str, version: str, arch: list[str], config: str
                  ) -> tuple[Any, str, str]:
    """--profile: the target, and the version and config file a build of it takes."""
    from recipes import fidelity

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
                     strict_config: bool = False, where: str = "", verbose: bool = False,
                     json: bool = False) -> None:
    """Build the kernel image of a version for each arch; print its references."""
    _build("plain", version, arch or [], kernel_dir, source, build_image, config,
           fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], strict_config=strict_config, where=where, verbose=verbose)


@task(help=BUILD_HELP, iterable=BUILD_ITERABLE)
@edge
def builddebugkernel(c: Context, version: str = "", arch: list[str] | None = None,
                     kernel_dir: str = "", source: str = "", build_image: str = "",
                     config: str = "", fragment: list[str] | None = None, variant: str = "",
                     jobs: int = 0, builders: list[str] | None = None, native: bool = False,
                     force: bool = False, build_arg: list[str] | None = None,
                     strict_config: bool = False, where: str = "", verbose: bool = False,
                     json: bool = False) -> None:
    """Build the debug kernel (-dbg release, debug fragment, vmlinux); print its references."""
    _build("debug", version, arch or [], kernel_dir, source, build_image, config,
           fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], strict_config=strict_config, where=where, verbose=verbose)


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
          allow_mismatch: bool = False, strict_config: bool = False, where: str = "",
          verbose: bool = False, json: bool = False) -> None:
    """Build the kernel and its -builder image (and the debug kernel with --debug)."""
    _build("both" if debug else "build", version, arch or [], kernel_dir, source, build_image,
           config, fragment or [], variant, jobs, builders or [], native, force, json,
           build_arg or [], profile, allow_mismatch, strict_config, where, verbose)


@task(help={
    "version": BUILD_HELP["version"], "arch": "target arch (default: this machine's)",
    "kernel_dir": KERNEL_DIR_HELP, "source": BUILD_HELP["source"],
    "build_image": BUILD_HELP["build_image"],
    "config": "work on this config file instead of the series config",
    "fragment": "merge this fragment; repeatable, merged in order",
    "variant": BUILD_HELP["variant"], "builders": BUILD_HELP["builders"],
    "base": "start from the kernel's own config target instead of a file "
            "(defconfig, tinyconfig, allnoconfig, ...), with the kernel's own fragments "
            "after a + (defconfig+virt.config)",
    "olddefconfig": "run olddefconfig (always done; kept for the linuxkit workflow)",
    "menuconfig": "run menuconfig interactively in the kconfig image",
    "save": "write the result back (atomically) to the series config, --config or --output",
    "output": "with --save: write to this file instead",
    "strict_config": "judge the input config by linuxkit's rule (any change is non-final)",
    "regenerate": "make every arch's series config from the series' configs.yml (base and "
                  "fragments) and save it; with --output DIR, into DIR/config-<arch>",
    "json": "print JSON (changed symbols, saved path, built-in and module counts, final, the "
            "changes by group)",
}, iterable=["fragment", "builders"])
@edge
def kconfig(c: Context, version: str = "", arch: str = "", kernel_dir: str = "",
            source: str = "", build_image: str = "", config: str = "",
            fragment: list[str] | None = None, variant: str = "",
            builders: list[str] | None = None, base: str = "", olddefconfig: bool = False,
            menuconfig: bool = False, save: bool = False, output: str = "",
            strict_config: bool = False, regenerate: bool = False, json: bool = False) -> None:
    """Config work for a series: olddefconfig, fragments, base configs, menuconfig, --save."""
    from recipes import kernel, shipped

    if regenerate:
        given = [f"--{n}" for n, v in (("arch", arch), ("config", config), ("base", base),
                                       ("fragment", fragment), ("menuconfig", menuconfig))
                 if v]
        if given:
            raise UserError(f"--regenerate takes the arches, base and fragments from the "
                            f"series' configs.yml, not {' '.join(given)}",
                            "leave them out, or change configs.yml")
        s = settings(kernel_dir=kernel_dir, builders=builders or [])
        version = version_of(version, source, s)
        request = kernel.Request(version=version, arch=archmod.host(), variant=variant,
                                 source=source or None, build_image=build_image,
                                 builders=list(builders or []), strict_config=strict_config)
        results = shipped.regenerate(s, request, Path(output) if output else None)
        if json:
            ui.emit_json([r.as_json() for r in results])
            return
        for r in results:
            ui.info(f"{r.saved}: {r.counts['builtin']} built in, {r.counts['modules']} modules, "
                    f"{len(r.changed)} symbols changed")
            ui.result(str(r.saved))
        return

    if base and not BASE_CONFIG_RE.fullmatch(base):
        raise UserError(f"unknown base config {base!r}",
                        "use a kernel config target such as defconfig or tinyconfig")
    if output and not save:
        raise UserError("--output needs --save (or --regenerate)",
                        "add --save to write the result")
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
