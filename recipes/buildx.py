"""BuildKit builds through `docker buildx build`.

The docker SDK cannot drive BuildKit (no cache mounts, no targets with local outputs), so
builds run the buildx CLI against the same engine the SDK talks to. The command line is a
pure function of a `Build`; running it streams the output to stderr and a log file, and
Ctrl-C cancels the build inside BuildKit instead of orphaning it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import ui
from .arch import Arch
from .engine import Engine, connect, connect_endpoint, docker_cli, resolve
from .errors import InfraError, UserError
from .settings import Settings


@dataclass
class Build:
    context: Path
    target: str
    platform: str
    dockerfile: Path | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    local_output: Path | None = None  # None: load the image into the engine
    builder: str = ""
    # A nonce for steps that declare `ARG RERUN_NONCE`: they run again instead of being
    # taken from the layer cache. Never `--no-cache`: BuildKit then empties every cache mount
    # the build uses, every user's compiled objects with them.
    rerun: str = ""


def command(build: Build, engine_args: list[str]) -> list[str]:
    """The `docker buildx build` argv for `build`; engine_args select the engine (--context)."""
    argv = ["docker", *engine_args, "buildx", "build", "--progress=plain",
            "--platform", build.platform, "--target", build.target]
    if build.builder:
        argv += ["--builder", build.builder]
    if build.dockerfile is not None:
        argv += ["--file", str(build.dockerfile)]
    for key, value in sorted(build.args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(build.labels.items()):
        argv += ["--label", f"{key}={value}"]
    for tag in build.tags:
        argv += ["--tag", tag]
    if build.rerun:
        argv += ["--build-arg", f"RERUN_NONCE={build.rerun}"]
    if build.local_output is not None:
        argv += ["--output", f"type=local,dest={build.local_output}"]
    else:
        argv.append("--load")
    argv.append(str(build.context))
    return argv


def parse_builders(entries: list[str]) -> dict[str, str]:
    """`linux/arm64=CTX` entries (or comma-joined) -> {platform: name}."""
    out: dict[str, str] = {}
    for entry in entries:
        for item in entry.split(","):
            item = item.strip()
            if not item:
                continue
            platform, sep, name = item.partition("=")
            if not sep or not platform.startswith("linux/") or not name.strip():
                raise UserError(f"bad builder mapping {item!r}",
                                "use PLATFORM=CONTEXT, e.g. linux/arm64=desktop-linux")
            out[platform.strip()] = name.strip()
    return out


def builder_context(settings: Settings, arch: Arch, flags: list[str] | None = None) -> str:
    """The context named for this arch's platform (`{arch}` replaced), or "" for the default."""
    mapping = parse_builders(list(flags or []) or list(settings.builders))
    name = mapping.get(arch.platform, "")
    return name.replace("{arch}", arch.name)


def engine_for(settings: Settings, arch: Arch, flags: list[str] | None = None) -> Engine:
    """The engine that builds `arch`: its mapped context, else the current one."""
    name = builder_context(settings, arch, flags)
    if not name:
        return connect(settings)
    return connect_endpoint(resolve(name, None, f"--builders {arch.platform}"))


def run(argv: list[str], env: Mapping[str, str], log: Path, echo: bool = True) -> int:
    """Run buildx, streaming its output to stderr and `log`; Ctrl-C cancels the build.
    Inside a build's progress view (ui.build_view) stderr gets the progress instead."""
    if docker_cli() is None:
        raise InfraError("the docker CLI is not on PATH", "install docker and the buildx plugin")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as sink:
        sink.write("$ " + " ".join(argv) + "\n")
        sink.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env), text=True,
                                errors="replace", bufsize=1, start_new_session=True)
        view = ui.current_view() if echo else None
        try:
            assert proc.stdout is not None
            if view is not None:
                view.start(argv)
            for line in proc.stdout:
                sink.write(line)
                if view is not None:
                    view.line(line)
                elif echo:
                    ui.err.print(line.rstrip("\n"), markup=False, style="dim")
            return proc.wait()
        except BaseException:
            _cancel(proc)
            sink.write("lkbuild: build interrupted\n")
            raise


def _cancel(proc: subprocess.Popen[str]) -> None:
    """Stop buildx the way a terminal Ctrl-C would, so BuildKit cancels the solve."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return
            time.sleep(0.1)
