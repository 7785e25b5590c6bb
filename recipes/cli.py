"""The Invoke tasks: parse flags, call a recipe, print the result.

`tasks.py` at the top of the checkout re-exports `ns`, so `inv TASK` works there; the
`lkbuild` console script runs the same namespace through invoke.Program anywhere.
Every task goes through `edge`, the one place where our exceptions become one stderr line and
an exit code.
"""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable

from invoke import Collection, Context, Exit, Program, task

from . import series as seriesmod
from . import ui
from .errors import LkbuildError
from .settings import ROOT, Settings

KERNEL_DIR_HELP = "kernel tree in linuxkit's layout (default: setting kernel_dir)"
JSON_HELP = "print JSON on stdout instead of a table"


def edge(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn lkbuild errors, Ctrl-C and surprises into one stderr line and an exit code."""

    @functools.wraps(fn)
    def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
        try:
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
                         "arch": "only this arch (arm64, aarch64, amd64, x86_64)"})
@edge
def list_(c: Context, kernel_dir: str = "", version: str = "", arch: str = "",
          json: bool = False) -> None:
    """List kernel series: version, arches with a config, variants, hash, built locally."""
    from . import inventory

    if version:
        seriesmod.parse_version(version)
    rows = inventory.kernels(settings(kernel_dir=kernel_dir), version, arch)
    if json:
        ui.emit_json(rows)
        return
    ui.table(["series", "version", "arch", "variants", "hash", "local image"],
             [(r["series"] + (" (deprecated)" if r["deprecated"] else ""), r["version"],
               r["arch"] or "-", ",".join(r["variants"]) or "-", r["hash"] or "-",
               r["image"] if r["built"] else ("no" if r["built"] is False else "unknown"))
              for r in rows])


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
    if not version and source and not sources.is_url(source):
        version = sources.tarball_version(sources.local_path(source), s.cache_dir)
    seriesmod.parse_version(version)
    src = sources.fetch(s, version, source or None)
    if json:
        ui.emit_json(src.as_json())
    else:
        ui.result(str(src.path))


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


@task(help={"quick": "run only the fast unit tests",
            "k": "only tests matching this pytest -k expression"})
@edge
def test(c: Context, quick: bool = False, k: str = "") -> None:
    """Run the test suite (unit and integration; --quick for unit only)."""
    args = [sys.executable, "-m", "pytest", str(ROOT / "tests")]
    if quick:
        args += ["-m", "not slow"]
    if k:
        args += ["-k", k]
    code = os.spawnv(os.P_WAIT, sys.executable, args)
    if code:
        raise Exit(code=code)


ns = Collection(config, list_, add_kernel, fetch, doctor, bootstrap_image, test)
ns.configure({"run": {"echo": False}})


def main() -> None:
    """Console script `lkbuild`: the same namespace, usable outside the checkout."""
    Program(namespace=ns, name="lkbuild", binary="lkbuild", version=_version()).run()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lkbuild")
    except PackageNotFoundError:
        return "unknown"

