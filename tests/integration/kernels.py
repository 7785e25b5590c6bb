"""Small kernels built once per test session through the real engine and BuildKit.

The builds use Debian's 6.12 source and the offline build image, with the small configs in
tests/data, into a cache dir shared by the session so later tests reuse what earlier ones built.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from recipes.settings import BY_NAME
from tests.run import Run

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DEBIAN_SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")
BUILD_IMAGE = "lkbuild/build:bookworm"
# Each session tags under its own org.
SESSION = uuid.uuid4().hex[:8]
ORG = f"lkbuild-test-{SESSION}"
SCOPE = BY_NAME["cache_id"].default()
"""The cache scope of the session's kernel builds: lkbuild's default, the one the user's own
builds and the README's quick start use. A kernel the quick start built is then found in
BuildKit's cache, not built again, and its build dir is where incremental builds start. Tags go
under the session's ORG, so only those are removed when the session ends."""
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}
# The one variant kernel: the small config with another localversion (-other), for the
# loader's refusal and the Desktop target. A localversion recompiles a few objects, so it is
# built in the shared scope. (The small amd64 config has what OpenZFS needs: zfs builds against
# the small kernel itself.)
OTHER_VARIANT = ("other-localversion.fragment",)


def source_version() -> str:
    from recipes.sources import tarball_version

    if not DEBIAN_SOURCE.is_file():
        pytest.fail(f"{DEBIAN_SOURCE} is missing: scripts/setup-debian.sh installs it")
    return tarball_version(DEBIAN_SOURCE, Path(os.environ.get("XDG_CACHE_HOME", "/tmp")))


def lkbuild(cache: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 1800, prefix: list[str] | None = None) -> Run:
    """Run lkbuild as a user would (`prefix`, e.g. nsenter, runs it inside a namespace).

    It runs in a session of its own: past `timeout`, or when the test itself is stopped (its
    hang guard, Ctrl-C), it gets Ctrl-C as a user would give it (lkbuild then cancels its
    build), then the whole session is killed, so no build client it started outlives the test
    and slows the ones after it."""
    proc = subprocess.Popen([*(prefix or []), sys.executable, "-m", "recipes", *args], cwd=ROOT,
                            env=lkbuild_env(cache, env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=wait)
        raise
    return Run(proc.returncode, out, err)


def lkbuild_env(cache: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The session's environment for lkbuild: its cache dir, org, scope and build image, no
    LKBUILD_* of the caller's, and this checkout on the path; `env` on top."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    full.update({"LKBUILD_CACHE_DIR": str(cache), "LKBUILD_ORG": ORG,
                 "LKBUILD_BUILD_IMAGE": BUILD_IMAGE, "LKBUILD_MIN_FREE_GB": "5",
                 "LKBUILD_CACHE_ID": SCOPE,
                 "LKBUILD_CONFIG": str(cache / "no-config.yaml"), "NO_COLOR": "1",
                 "PYTHONPATH": str(ROOT)})
    full.update(env or {})
    return full


def small_args(version: str, arch: str, *extra: str) -> list[str]:
    return ["--version", version, "--arch", arch, "--source", str(DEBIAN_SOURCE),
            "--config", str(DATA / f"small-{UNAME[arch]}.config"), *extra]


def config_body(text: str | bytes) -> str:
    """A .config without kconfig's "# Linux/ARCH VERSION Kernel Configuration" stamp: the
    shipped test configs are made once, and the source's point release moves under them."""
    if isinstance(text, bytes):
        text = text.decode()
    return re.sub(r"^# Linux/\S+ \S+ Kernel Configuration$", "# Linux", text, count=1,
                  flags=re.M)


def objects_in(log: str) -> int:
    """The objects the build dir held after make (compile.sh says), what rebuilds are
    measured against."""
    found = re.findall(r"lkbuild: (\d+) objects in the build dir", log)
    assert found, "the log has no object count: the compile step did not run"
    return int(found[-1])


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
