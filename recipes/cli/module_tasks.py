"""Tasks that take a kernel and build or boot against it: buildmodule and vmtest.

Both name the kernel by version with the build's own flags (KERNEL_FLAGS_HELP), which
kernel_planner turns into the image those flags make.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Context, Exit

from recipes import arch as archmod, ui
from recipes.errors import UserError
from recipes.settings import Settings

from .common import KERNEL_DIR_HELP, edge, settings, task, version_of
from .kernel_tasks import BUILD_HELP, check_builders, check_jobs, profile_flags

KERNEL_FLAGS_HELP = {
    "kernel_dir": KERNEL_DIR_HELP, "source": BUILD_HELP["source"],
    "build_image": BUILD_HELP["build_image"], "config": BUILD_HELP["config"],
    "fragment": BUILD_HELP["fragment"], "variant": BUILD_HELP["variant"],
    "debug": "the debug kernel of that version",
}
"""Flags that pick lkbuild's kernel image when --kernel is a version: the build's own flags."""


def kernel_request(version: str, a: archmod.Arch, source: str, build_image: str, config: str,
                   fragment: list[str], variant: str, debug: bool, **more: Any) -> Any:
    """The kernel build request those build flags name (`more`: the rest of its fields)."""
    from recipes import kernel as kernelmod

    return kernelmod.Request(version=version, arch=a, debug=debug, variant=variant,
                             config=Path(config) if config else None,
                             fragments=tuple(Path(f) for f in fragment),
                             source=source or None, build_image=build_image, **more)


def kernel_planner(s: Settings, source: str, build_image: str, config: str,
                   fragment: list[str], variant: str, debug: bool, profile: Any = None
                   ) -> Callable[..., Any]:
    """plan(version, arch) for the kernel image those build flags (or that profile) make."""
    from recipes import kernel as kernelmod

    def plan_for(version: str, a: archmod.Arch) -> kernelmod.Plan:
        return kernelmod.plan(s, kernel_request(version, a, source, build_image, config,
                                                fragment, variant, debug, profile=profile))

    return plan_for


@task(help={
    "kernel": "the kernel: a version (lkbuild's image for it, built with the same flags) or "
              "any kernel image in linuxkit's layout (linuxkit/kernel:6.12.52); default: the "
              "version of a local --source",
    "arch": "arch of the kernel (default: the kernel image's)",
    "module": "a recipe name under module/ (hello, zfs) or a PATH to a module dir with a "
              "Makefile",
    "in_tree": "a tristate symbol of the kernel's own (CONFIG_IP_SCTP) to build as a module "
               "from the kernel's source, with what the kernel's Kconfig says it needs "
               "(repeatable)",
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
    "verbose": BUILD_HELP["verbose"],
    "where": "auto (a build host builds the module and its kernel when the kernel image is "
             "not here and this engine cannot fit its build), local, or a build host "
             "[USER@]HOST[:PORT] (default: setting where; auto when build_hosts is set)",
    **KERNEL_FLAGS_HELP,
}, iterable=["fragment", "builders", "in_tree"])
@edge
def buildmodule(c: Context, kernel: str = "", arch: str = "", module: str = "",
                in_tree: list[str] | None = None,
                module_version: str = "", module_source: str = "", builder_image: str = "",
                matrix: str = "", jobs: int = 0, force: bool = False,
                builders: list[str] | None = None, kernel_dir: str = "", source: str = "",
                build_image: str = "", config: str = "", fragment: list[str] | None = None,
                variant: str = "", debug: bool = False, profile: str = "", where: str = "",
                verbose: bool = False, json: bool = False) -> None:
    """Build kernel modules against a kernel; make the module image and its loader image."""
    from recipes import matrix as matrixmod, module as modulemod, offload

    check_jobs(jobs)
    s = settings(kernel_dir=kernel_dir, builders=builders or [], verbose=verbose or None)
    ui.plain_progress(json)
    check_builders(s, builders or [])
    place = offload.where_of(s, where)
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
                             builders=list(builders or []), profile=target,
                             in_tree=list(in_tree or []), kernel_source=source)
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
    result = None
    if in_tree and place not in (offload.LOCAL, offload.AUTO):
        raise UserError(f"--in-tree builds on this engine, not on {place}",
                        "leave --where out, or give the symbols a recipe (module/NAME/recipe.yml "
                        "with in_tree) and build it with --module NAME")
    if place != offload.LOCAL and not profile and not in_tree:
        result = _offloaded(s, base, place, source, build_image, config, fragment or [], variant,
                            debug)
    if result is None:
        result = modulemod.build(s, base, plan_for)
    if json:
        ui.emit_json(result.as_json())
        return
    for ref in result.refs + result.loader_refs:
        ui.result(ref)


def _offloaded(s: Settings, base: Any, place: str, source: str, build_image: str,
               config: str, fragment: list[str], variant: str, debug: bool) -> Any:
    """buildmodule on a build host (offload.build_module), for a kernel named by version;
    None when it is built here."""
    from recipes import offload, series as seriesmod

    try:
        seriesmod.parse_version(base.kernel)
    except UserError:  # a kernel image by name: nothing to build, so nothing to place
        if place == offload.AUTO:
            return None
        raise UserError(f"--where {place} builds against a kernel version, not the image "
                        f"{base.kernel}", "give --kernel VERSION with the build's flags, or "
                        "leave --where out") from None
    request = kernel_request(base.kernel, base.arch or archmod.host(), source, build_image,
                             config, fragment, variant, debug, jobs=base.jobs, force=base.force,
                             builder_image=True)
    return offload.build_module(s, base, request, place)


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

    from recipes import engine as enginemod, module as modulemod, vm
    from recipes.errors import BuildError

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
                                        builder_image=builder_image, kernel_source=source)
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
