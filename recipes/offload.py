"""Where a build runs: here, or on a build host when this engine cannot fit it.

A Mac often lacks the disk or the memory for a kernel build, and the user finds out when the
build fails. With build hosts configured, `--where auto` runs the preflight a build would run
anyway (free disk for the build, memory for one make job at least, the jobs asked for), here
first, then on each host in turn, and builds on the first that fits, saying in one line why.
The images come back as with remote-build, and the result is the one a local build gives, so
scripts that chain tasks need no change.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import buildx, kernel, module as modulemod, remote, resources, ssh, ui
from .errors import InfraError, LkbuildError, UserError
from .settings import Settings

LOCAL = "local"
AUTO = "auto"


def where_of(settings: Settings, flag: str) -> str:
    """--where, else the setting, else auto when build hosts are set, local when none are."""
    where = flag or settings.where or (AUTO if settings.build_hosts else LOCAL)
    if where not in (AUTO, LOCAL):
        ssh.parse_host(where)  # a host spec, checked before anything runs
    elif where == AUTO and not settings.build_hosts:
        raise UserError("--where auto needs build hosts",
                        "set build_hosts (LKBUILD_BUILD_HOSTS=me@server, or build_hosts: in "
                        "lkbuild.yaml), or use --where local")
    for spec in settings.build_hosts:
        ssh.parse_host(spec)
    return where


def target(settings: Settings, spec: str) -> remote.Target:
    return remote.Target(spec, str(settings.build_host_identity or ""),
                         str(settings.build_host_known_hosts or ""))


def local_misfit(settings: Settings, p: kernel.Plan) -> str:
    """Why this engine cannot fit the build ("" when it can): the build's own preflight."""
    request = p.request
    engine = buildx.engine_for(settings, request.arch, request.builders)
    try:
        requested, model = kernel.job_request(settings, p)
        kernel.choose_jobs(engine, requested, model)
        one = resources.memory_needed(1, model)
        if engine.memory and one > engine.memory:
            return (f"the engine has {engine.memory / 2**30:.1f} GiB, one make job needs "
                    f"about {one / 2**30:.1f} GiB")
        kernel.check_disk(settings, engine, p.build_image, kernel.jobs_key(p))
    except LkbuildError as exc:
        return exc.message
    finally:
        engine.close()
    return ""


def host_misfit(settings: Settings, p: kernel.Plan, spec: str) -> str:
    """Why the host cannot take the build ("" when it can): reachable, ready, room, memory."""
    try:
        r = remote.open_host(target(settings, spec))
    except LkbuildError as exc:
        return exc.message
    try:
        requested, model = kernel.job_request(settings, p)
        remote.check_room(settings, r, kernel.jobs_key(p))
        remote.choose_jobs(r, requested, model)
        one = resources.memory_needed(1, model)
        if r.facts.memory and one > r.facts.memory:
            return (f"{r.describe()}: its engine has {r.facts.memory / 2**30:.1f} GiB, one make "
                    f"job needs about {one / 2**30:.1f} GiB")
    except LkbuildError as exc:
        return exc.message
    finally:
        r.conn.close()
    return ""


@dataclass(frozen=True)
class Decision:
    host: str  # "" for this engine
    reason: str  # why the build left this engine ("" when it did not)


def decide(settings: Settings, p: kernel.Plan, where: str) -> Decision:
    """Where the build runs; refuses in one line, naming what each place lacked, when none
    fits."""
    if where == LOCAL:
        return Decision("", "")
    if where != AUTO:
        return Decision(where, f"--where {where}")
    reason = local_misfit(settings, p)
    if not reason:
        return Decision("", "")
    lacks = [f"this engine: {reason}"]
    for spec in settings.build_hosts:
        why = host_misfit(settings, p, spec)
        if not why:
            return Decision(spec, f"this engine cannot fit the build ({reason})")
        lacks.append(why if spec in why else f"{spec}: {why}")
    raise InfraError("no place fits this build: " + "; ".join(lacks),
                     "free disk or memory on one of them, add a build host (build_hosts), "
                     "or use --where local to try here anyway")


def labels_here(settings: Settings, request: kernel.Request, ref: str) -> dict[str, str]:
    """The labels of an image brought back: the result a local build would print is in them."""
    engine = buildx.engine_for(settings, request.arch, request.builders)
    try:
        image = engine.image(ref) or {}
    finally:
        engine.close()
    return dict((image.get("Config") or {}).get("Labels") or {})


def build(settings: Settings, request: kernel.Request, where: str) -> kernel.Result:
    """kernel.build here, or on the host the decision names with the images brought back;
    the same Result either way."""
    if where == LOCAL:
        return kernel.build(settings, request)
    # Planned as remote-build plans: a source from the mirror or a URL is located, not
    # downloaded here, since the build may well go where there is room for it.
    p, _ = remote.located_plan(settings, request, ship_sources=False)
    engine = buildx.engine_for(settings, request.arch, request.builders)
    try:
        here = not request.force and all(
            engine.image_exists(g[0]) for g in kernel.tag_groups(p, request.builder_image))
    finally:
        engine.close()
    if here:  # up to date here: nothing to place
        return kernel.build(settings, request)
    decision = decide(settings, p, where)
    if not decision.host:
        return kernel.build(settings, request)
    ui.info(f"{decision.reason}: building on {decision.host}")
    out = remote.build(settings, request, target(settings, decision.host))
    labels = labels_here(settings, request, p.refs[0])
    return kernel.Result(out.refs, out.image_id, labels.get(f"{kernel.LABEL}.release", ""),
                         labels.get(f"{kernel.LABEL}.vermagic", ""), p.digest, p.arch.name,
                         request.version, out.seconds, 0, out.skipped, out.log,
                         host=decision.host)


def check_build_hosts(settings: Settings) -> list[resources.Check]:
    """One doctor row per build host: reachable, ready (docker, buildx), and what it would
    fit (cpus, memory, the jobs they allow, free disk against min_free_gb)."""
    checks = []
    for spec in settings.build_hosts:
        name = f"build-host {spec}"
        try:
            r = remote.open_host(target(settings, spec))
        except LkbuildError as exc:
            checks.append(resources.Check(name, "fail", exc.message, exc.hint, False))
            continue
        try:
            f = r.facts
            free = min((x for x in (f.docker_free, f.work_free) if x is not None), default=None)
            detail = (f"{f.arch}, {f.cpus} cpus, {f.memory / 2**30:.1f} GiB (-j{f.jobs}), "
                      + (f"{free / 1e9:.1f} GB free" if free is not None else "free disk unknown"))
            data = {"arch": f.arch, "cpus": f.cpus, "memory": f.memory, "jobs": f.jobs,
                    "free": free}
            try:
                remote.check_room(settings, r)
            except LkbuildError as exc:
                checks.append(resources.Check(name, "warn", f"{detail}: {exc.message}",
                                              exc.hint, False, data))
                continue
            checks.append(resources.Check(name, "ok", f"{detail}: fits a build", "", False,
                                          data))
        finally:
            r.conn.close()
    return checks


def build_module(settings: Settings, request: modulemod.Request, kernel_request: kernel.Request,
                 where: str) -> modulemod.Result | None:
    """The module built on the host the decision names, against the kernel built (or found)
    there, its module and loader images brought back; None when it is to be built here.

    A module build itself is small: the kernel under it is what needs the room. So a build
    host is used when asked for by name, or with auto when the kernel image is not here and
    this engine cannot fit its build."""
    if where == LOCAL:
        return None
    p, _ = remote.located_plan(settings, kernel_request, ship_sources=False)
    if where == AUTO:
        engine = buildx.engine_for(settings, kernel_request.arch, kernel_request.builders)
        try:
            if engine.image_exists(p.refs[0]):
                return None
        finally:
            engine.close()
    decision = decide(settings, p, where)
    if not decision.host:
        return None
    ui.info(f"{decision.reason}: building {request.module} and its kernel on {decision.host}")
    job = remote.ModuleJob(request.module, request.version, request.source)
    out = remote.build(settings, kernel_request, target(settings, decision.host), module=job)
    labels = labels_here(settings, kernel_request, out.refs[0])
    label = modulemod.LABEL
    half = len(out.refs) // 2  # the module image's refs, then the loader's (remote.build)
    refs, loaders = out.refs[:half], out.refs[half:]
    return modulemod.Result(labels.get(f"{label}.name", request.module),
                            labels.get(f"{label}.version", ""), p.arch.name,
                            labels.get(f"{label}.kernel.release", ""),
                            labels.get(f"{label}.vermagic", ""),
                            labels.get(f"{label}.kernel.image", p.refs[0]), refs, loaders,
                            labels.get(f"{label}.modules", "").split(),
                            labels.get(f"{label}.hash", ""), out.skipped, out.seconds, out.log)
