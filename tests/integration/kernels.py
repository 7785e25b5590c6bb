"""Small kernels built once per test session through the real engine and BuildKit.

The builds use Debian's 6.12 source and the offline build image, with the small configs in
tests/data, into a cache dir shared by the session so later tests reuse what earlier ones built.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.run import Run

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DEBIAN_SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")
BUILD_IMAGE = "lkbuild/build:bookworm"
# Each session builds cold in its own cache scope and tags under its own org.
SESSION = uuid.uuid4().hex[:8]
ORG = f"lkbuild-test-{SESSION}"
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}


def source_version() -> str:
    from recipes.sources import tarball_version

    if not DEBIAN_SOURCE.is_file():
        pytest.fail(f"{DEBIAN_SOURCE} is missing: scripts/setup-debian.sh installs it")
    return tarball_version(DEBIAN_SOURCE, Path(os.environ.get("XDG_CACHE_HOME", "/tmp")))


def lkbuild(cache: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 1800, prefix: list[str] | None = None) -> Run:
    """Run lkbuild as a user would (`prefix`, e.g. nsenter, runs it inside a namespace)."""
    proc = subprocess.run([*(prefix or []), sys.executable, "-m", "recipes", *args], cwd=ROOT,
                          env=lkbuild_env(cache, env),
                          capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def lkbuild_env(cache: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The session's environment for lkbuild: its cache dir, org, scope and build image, no
    LKBUILD_* of the caller's, and this checkout on the path; `env` on top."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    full.update({"LKBUILD_CACHE_DIR": str(cache), "LKBUILD_ORG": ORG,
                 "LKBUILD_BUILD_IMAGE": BUILD_IMAGE, "LKBUILD_MIN_FREE_GB": "5",
                 "LKBUILD_CACHE_ID": f"test-{SESSION}",
                 "LKBUILD_CONFIG": str(cache / "no-config.yaml"), "NO_COLOR": "1",
                 "PYTHONPATH": str(ROOT)})
    full.update(env or {})
    return full


def small_args(version: str, arch: str, *extra: str) -> list[str]:
    return ["--version", version, "--arch", arch, "--source", str(DEBIAN_SOURCE),
            "--config", str(DATA / f"small-{UNAME[arch]}.config"), *extra]


def remove_images(org: str = ORG) -> None:
    """Remove what a session tagged under its org (images only it made)."""
    import docker

    client = docker.from_env()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{org}/"):
                client.images.remove(tag, noprune=False)


def image_files(ref: str) -> dict[str, tarfile.TarInfo | bytes]:
    """Every regular file of a scratch image, read through a created (never started) container."""
    import docker

    client = docker.from_env()
    container = client.containers.create(ref, command=["none"])
    try:
        stream = io.BytesIO(b"".join(container.export()))
    finally:
        container.remove(force=True)
    out: dict = {}
    with tarfile.open(fileobj=stream) as tar:
        for member in tar.getmembers():
            if member.isfile() and not member.name.startswith(("dev/", "etc/", "proc/", "sys/")) \
                    and member.name != ".dockerenv":
                out[member.name] = tar.extractfile(member).read()
    return out


def labels(ref: str) -> dict[str, str]:
    import docker

    return docker.from_env().images.get(ref).labels


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lkbuild: error:")]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err
    return lines[0]
