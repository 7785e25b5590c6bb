"""Tasks that move built images to and from a registry: push and pull."""
from __future__ import annotations

from invoke import Context

from recipes import arch as archmod, ui
from recipes.errors import UserError

from .common import edge, settings, task

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
    from recipes import engine as enginemod, push as pushmod, registry as registrymod

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
    from recipes import engine as enginemod, push as pushmod

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
