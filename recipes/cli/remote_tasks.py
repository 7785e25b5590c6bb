"""The remote-build task: kernels (and modules) built on other Linux hosts over SSH.

It takes the local build's flags (BUILD_HELP, less --builders) and spreads the builds over
the hosts given.
"""
from __future__ import annotations

from pathlib import Path

from invoke import Context, Exit

from recipes import arch as archmod, ui
from recipes.errors import UserError

from .common import edge, settings, task, version_of
from .kernel_tasks import BUILD_HELP, build_args_of, check_jobs


@task(help={
    **{k: v for k, v in BUILD_HELP.items() if k not in ("builders", "where", "verbose")},
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
    "verbose": "stream the remote BuildKit's whole output (every make line) instead of the "
               "progress (default: setting verbose); the build's log holds it either way",
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
                 json: bool = False, verbose: bool = False) -> None:
    """Build kernels (and modules) on Linux hosts over SSH (only Docker and buildx there)."""
    from recipes import fanout, kernel, remote, ssh

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
    s = settings(kernel_dir=kernel_dir, verbose=verbose or None)
    push_to = settings(kernel_dir=kernel_dir, registry=registry) if push else None
    if push_to is not None:  # a bad registry name fails before any build
        from recipes import push as pushmod
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
