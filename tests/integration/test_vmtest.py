"""Booting real kernel images in real qemu (TCG): pass, fail fast, time out, missing image.

The images come from `small_kernel_image`: the session's small kernels, built by lkbuild.
"""
from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import ContainerCollection

from recipes import arch, engine, vm
from recipes.errors import UserError
from recipes.settings import Settings
from tests.conftest import alive

pytestmark = pytest.mark.ci

UNAME = {"amd64": "x86_64", "arm64": "aarch64"}
TIMEOUT = 90


@pytest.fixture(scope="session")
def small_kernel_image(small_kernel: Callable[[str], dict]) -> Callable[[str], str]:
    """arch name -> the ref of the session's small kernel image for it (built by lkbuild)."""

    def image(arch_name: str) -> str:
        return small_kernel(arch_name)["refs"][0]

    return image


def image_release(client: docker.DockerClient, ref: str) -> str:
    """KERNEL_RELEASE from the image's /kernel-source-info, read without vm.py."""
    container = client.containers.create(ref, command=["/none"])
    try:
        chunks, _ = container.get_archive("/kernel-source-info")
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            text = tar.extractfile("kernel-source-info").read().decode()
    finally:
        container.remove(force=True)
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)[
        "KERNEL_RELEASE"]


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile at a dir of our own, so leftovers of a boot are visible."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.parametrize("arch_name", ["amd64", "arm64"])
def test_the_small_kernel_boots_to_init_and_passes(
        arch_name: str, small_kernel_image: Callable[[str], str], settings: Settings,
        docker_client: docker.DockerClient, private_tmp: Path) -> None:
    ref = small_kernel_image(arch_name)
    release = image_release(docker_client, ref)
    a = arch.resolve(arch_name)
    result = vm.boot(settings, ref, a, timeout=TIMEOUT)
    print(f"{arch_name}: {result.verdict} (qemu {result.seconds:.2f}s)")
    assert result.passed, f"{result.verdict}; log {result.log}"
    assert result.release == release and release in result.verdict
    log = result.log.read_text(errors="replace")
    assert f"{vm.MARK_BEGIN} {release} {UNAME[arch_name]}" in log
    assert vm.MARK_PASS in log
    assert result.log.parent == settings.cache_dir / "logs"
    assert list(private_tmp.iterdir()) == []


def test_extra_files_kernel_modules_and_commands_reach_the_guest(
        small_kernel_image: Callable[[str], str], settings: Settings, tmp_path: Path) -> None:
    ref = small_kernel_image("amd64")
    probe = tmp_path / "probe"
    probe.write_text("probe-4711\n")
    result = vm.boot(settings, ref, arch.resolve("amd64"), timeout=TIMEOUT,
                     extra_files={"etc/lkbuild/probe": probe}, kernel_modules=True,
                     commands=["grep -q probe-4711 /etc/lkbuild/probe",
                               "test -f /lib/modules/$(uname -r)/modules.dep",
                               "cat /proc/cmdline"])
    assert result.passed, f"{result.verdict}; log {result.log}"
    log = result.log.read_text(errors="replace")
    assert f"{vm.MARK_RUN} 3: cat /proc/cmdline" in log and "panic=-1" in log


@pytest.mark.parametrize("arch_name", ["amd64", "arm64"])
def test_a_failing_command_fails_at_once_with_one_line(
        arch_name: str, small_kernel_image: Callable[[str], str], settings: Settings) -> None:
    ref = small_kernel_image(arch_name)
    result = vm.boot(settings, ref, arch.resolve(arch_name), timeout=TIMEOUT,
                     commands=["true", "exit 3"])
    assert not result.passed
    assert result.verdict == "init failed: command 2 exited 3: exit 3"  # not a timeout's


def test_an_init_that_exits_fails_with_one_line_and_does_not_hang(
        small_kernel_image: Callable[[str], str], settings: Settings) -> None:
    ref = small_kernel_image("amd64")
    result = vm.boot(settings, ref, arch.resolve("amd64"), timeout=TIMEOUT,
                     init_script="#!/bin/sh\nexit 1\n")
    assert not result.passed
    assert result.verdict.startswith("init exited with status 1 (kernel panic: "
                                     "Attempted to kill init!")
    assert "\n" not in result.verdict  # the panic's verdict, not a timeout's


def test_a_missing_init_fails_with_the_kernel_panic_line(
        small_kernel_image: Callable[[str], str], settings: Settings) -> None:
    ref = small_kernel_image("arm64")
    result = vm.boot(settings, ref, arch.resolve("arm64"), timeout=TIMEOUT,
                     append="rdinit=/does-not-exist init=/does-not-exist")
    assert not result.passed
    assert result.verdict.startswith("kernel panic: Requested init /does-not-exist failed")
    assert "\n" not in result.verdict  # the panic's verdict, not a timeout's


@pytest.mark.timeout(300)  # a runner that waited for the guest's `sleep 600` fails here
def test_a_hung_guest_times_out_and_its_qemu_is_gone(
        small_kernel_image: Callable[[str], str], settings: Settings,
        private_tmp: Path) -> None:
    ref = small_kernel_image("amd64")
    pids: list[int] = []
    timeout = 12
    result = vm.boot(settings, ref, arch.resolve("amd64"), timeout=timeout,
                     commands=["sleep 600"], on_start=pids.append)
    assert not result.passed
    assert result.verdict == f"timed out after {timeout}s in command 1: sleep 600"
    assert len(pids) == 1 and not alive(pids[0])
    assert not Path(f"/proc/{pids[0]}").exists()
    assert list(private_tmp.iterdir()) == []
    assert "qemu stopped" in result.log.read_text(errors="replace")


def test_the_image_is_read_through_a_container_that_is_removed_again(
        small_kernel_image: Callable[[str], str], settings: Settings, tmp_path: Path,
        docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = small_kernel_image("arm64")
    release = image_release(docker_client, ref)
    eng = engine.connect(settings)
    created: list[str] = []
    real_create = ContainerCollection.create

    def spy(self: ContainerCollection, *args: Any, **kwargs: Any) -> Any:
        container = real_create(self, *args, **kwargs)
        created.append(container.id)
        return container

    monkeypatch.setattr(ContainerCollection, "create", spy)
    try:
        files = vm.extract_kernel(eng, ref, tmp_path / "k", arch.resolve("arm64"))
    finally:
        eng.close()
    assert files.kernel.read_bytes()[:2] == b"\x1f\x8b"  # Image.gz
    assert files.modules_tar is not None and files.config is not None
    assert files.release == release
    assert len(created) == 1
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(created[0])
    assert not (tmp_path / "k" / "kernel-dev.tar").exists()


def test_an_image_for_the_other_arch_is_refused(
        small_kernel_image: Callable[[str], str], settings: Settings) -> None:
    ref = small_kernel_image("arm64")
    with pytest.raises(UserError) as info:
        vm.boot(settings, ref, arch.resolve("amd64"), timeout=TIMEOUT)
    assert "is for arm64, not amd64" in info.value.line()


def test_a_missing_image_is_one_user_error_line(settings: Settings) -> None:
    ref = "lkbuild-test/kernel:6.12.54-0000000000-amd64"
    with pytest.raises(UserError) as info:
        vm.boot(settings, ref, arch.resolve("amd64"), timeout=TIMEOUT)
    line = info.value.line()
    assert "\n" not in line and line.startswith("lkbuild: error: ")
    assert f"kernel image {ref} does not exist" in line
    assert "inv build --version 6.12.54 --arch amd64" in line


def test_vmtest_on_the_command_line_reports_a_missing_image_in_one_line(lk: Callable) -> None:
    ref = "lkbuild-test/kernel:6.12.54-0000000000-arm64"
    run = lk("vmtest", "--kernel", ref, "--arch", "arm64")
    if "No idea what 'vmtest' is" in run.err:
        pytest.skip("the vmtest task is not in the command line yet")
    assert run.code == UserError.exit_code and run.out == ""
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith("lkbuild: error: ")
    assert ref in run.err_lines[0] and "inv build --version 6.12.54 --arch arm64" in run.err
