"""Tasks about this machine and its engines: config, detect, doctor, bootstrap-image, prune.

None of them builds a kernel: they show settings, read a target, check and prepare an
engine, or free what builds left behind.
"""
from __future__ import annotations

import sys
from pathlib import Path

from invoke import Context, Exit

from recipes import ui
from recipes.errors import UserError

from .common import JSON_HELP, edge, settings, task


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
    from recipes import desktop, fidelity

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
    """Check the engine, buildx, credentials, disk, memory, qemu and build hosts, with fixes."""
    from recipes import offload, resources

    s = settings(context=context)
    checks = resources.doctor(s) + offload.check_build_hosts(s)
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
    "verbose": "stream debootstrap's every line instead of its steps (default: setting "
               "verbose); the log holds them either way",
})
@edge
def bootstrap_image(c: Context, name: str = "", mirror: str = "", suite: str = "",
                    force: bool = False, verbose: bool = False) -> None:
    """Make the offline build image from a Debian mirror (debootstrap + import)."""
    from recipes import buildimage

    s = settings(bootstrap_image=name, debian_mirror=mirror, debian_suite=suite,
                 verbose=verbose or None)
    ui.result(buildimage.bootstrap(s, force=force))


@task(help={"build_image": "image to run the cleanup in (default: setting build_image, then "
                           "bootstrap_image)",
            "context": "Docker context whose build cache to prune"})
@edge
def prune(c: Context, build_image: str = "", context: str = "") -> None:
    """Remove lkbuild's unpacked sources and build dirs for your cache id; say what it freed."""
    from recipes import kernel

    freed = kernel.prune(settings(context=context), build_image)
    ui.result(f"freed {freed / 1000**3:.2f} GB")
