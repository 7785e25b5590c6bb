"""`bootstrap-image` with the real debootstrap, the real Debian mirror and the real engine.

The module's first use builds the default image (about a minute) unless an image with the same
recipe is already there, which is the case in CI (it runs `inv bootstrap-image` first).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from recipes import arch, buildimage

pytestmark = pytest.mark.ci

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REF = "lkbuild/build:bookworm"
HOST = arch.host()
CROSS_GCC = next(arch.resolve(n) for n in arch.canonical() if n != HOST.name).cross_compile + "gcc"
TOOLS = (f"gcc --version && {CROSS_GCC} --version && make --version && ccache --version && "
         "bc --version && flex --version && bison --version && cpio --version && "
         "depmod --version && busybox")


def clean_env(home: Path) -> dict[str, str]:
    """The environment `lk` gives a test, for use outside a test function."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    env.update(XDG_CACHE_HOME=str(home / "cache"), XDG_CONFIG_HOME=str(home / "config"),
               LKBUILD_CONFIG=str(home / "config" / "lkbuild.yaml"), NO_COLOR="1")
    return env


def run_lk(env: dict[str, str], *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recipes", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lkbuild: error:")]


@pytest.fixture(scope="module")
def engine(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory,
          engine: docker.DockerClient) -> subprocess.CompletedProcess:
    """`bootstrap-image` once for the module: a build, or a no-op when the image is current."""
    home = tmp_path_factory.mktemp("bootstrap-home")
    proc = run_lk(clean_env(home), "bootstrap-image")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def gone(engine: docker.DockerClient) -> Iterator[Callable[[str], None]]:
    """Remove these test references before and after the test."""
    refs: list[str] = []

    def remove(ref: str) -> None:
        refs.append(ref)
        _untag(engine, ref)

    yield remove
    for ref in refs:
        _untag(engine, ref)


def _untag(engine: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.images.remove(ref)


def _exists(engine: docker.DockerClient, ref: str) -> bool:
    try:
        engine.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_stdout_is_exactly_the_image_reference(built):
    assert built.stdout == DEFAULT_REF + "\n"
    assert "Traceback" not in built.stderr


def test_the_image_carries_this_hosts_recipe(built, engine):
    image = engine.images.get(DEFAULT_REF)
    expected = buildimage.recipe("bookworm")
    assert image.labels[buildimage.LABEL_RECIPE] == expected.digest
    assert image.labels[buildimage.LABEL_SUITE] == "bookworm"
    config = image.attrs["Config"]
    assert config["Cmd"] == ["/bin/bash"]
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in config["Env"])


def test_the_toolchain_runs_in_an_unprivileged_container_without_network(built):
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", DEFAULT_REF,
                           "sh", "-c", TOOLS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for expected in ("gcc (Debian", "linux-gnu-gcc (Debian", "GNU Make", "ccache version",
                     "bc ", "flex ", "bison (GNU Bison)", "cpio (GNU cpio)", "kmod version",
                     "BusyBox"):
        assert expected in proc.stdout + proc.stderr, expected


def test_the_cross_compiler_links_a_program_and_the_rootfs_is_trimmed(built):
    script = (f"printf 'int main(void){{return 0;}}\\n' > /tmp/a.c && "
              f"{CROSS_GCC} -o /tmp/a /tmp/a.c && test -s /tmp/a && "
              "! test -e /usr/share/man/man1/gcc.1.gz && "
              "! ls /var/lib/apt/lists/*_Packages 2>/dev/null && "
              "! ls /var/cache/apt/archives/*.deb 2>/dev/null && "
              "test -f /usr/share/doc/gcc-12/copyright")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", DEFAULT_REF,
                           "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_second_run_is_a_no_op_that_keeps_the_image(built, engine, tmp_path):
    before = engine.images.get(DEFAULT_REF).id
    proc = run_lk(clean_env(tmp_path), "bootstrap-image", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == DEFAULT_REF + "\n"
    assert "up to date" in proc.stderr
    assert engine.images.get(DEFAULT_REF).id == before
    assert not (tmp_path / "cache" / "lkbuild" / "tmp").exists()


def test_a_bad_reference_is_one_error_line_and_no_traceback(lk):
    run = lk("bootstrap-image", "--name", "Bad Ref!", cwd=ROOT)
    assert run.code == 2
    assert run.out == ""
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("lkbuild: error: invalid image reference 'Bad Ref!'")
    assert "Traceback" not in run.err


def test_an_unreachable_mirror_fails_in_one_line_and_leaves_nothing(lk, engine, gone, hermetic):
    ref = "lkbuild-test/unreachable:x"
    gone(ref)
    mirror = "http://127.0.0.1:9/debian"
    run = lk("bootstrap-image", "--mirror", mirror, "--name", ref, "--force", cwd=ROOT)
    assert run.code != 0
    assert run.out == ""
    errors = error_lines(run.err)
    assert len(errors) == 1, run.err
    assert mirror in errors[0] and "unreachable" in errors[0]
    assert "Traceback" not in run.err
    assert not _exists(engine, ref)
    tmp = hermetic / "cache" / "lkbuild" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []
    assert not [line for line in Path("/proc/mounts").read_text().splitlines()
                if str(hermetic) in line]


def test_a_failed_rebuild_leaves_the_existing_tag_alone(built, lk, engine, gone):
    ref = "lkbuild-test/keep:x"
    gone(ref)
    good = engine.images.get(DEFAULT_REF)
    assert good.tag("lkbuild-test/keep", "x")
    run = lk("bootstrap-image", "--mirror", "http://127.0.0.1:9/debian", "--name", ref,
             "--force", cwd=ROOT)
    assert run.code != 0 and len(error_lines(run.err)) == 1
    assert engine.images.get(ref).id == good.id


def test_ctrl_c_during_debootstrap_removes_the_rootfs_and_creates_no_image(
        lk, engine, gone, hermetic, tmp_path):
    ref = "lkbuild-test/interrupted:x"
    gone(ref)
    env = clean_env(tmp_path / "home")
    proc = subprocess.Popen([sys.executable, "-m", "recipes", "bootstrap-image", "--force",
                             "--name", ref], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    tmp = tmp_path / "home" / "cache" / "lkbuild" / "tmp"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            work = list(tmp.glob(f"{buildimage.TMP_PREFIX}*/rootfs/debootstrap"))
            if work:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert work, "debootstrap never started"
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert out == ""
    assert err.splitlines()[-1] == "lkbuild: interrupted"
    assert "Traceback" not in err
    assert list(tmp.iterdir()) == []
    assert not [line for line in Path("/proc/mounts").read_text().splitlines()
                if str(tmp_path) in line]
    assert not _exists(engine, ref)

