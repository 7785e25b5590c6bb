from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import docker
import pytest

from tests.integration.daemons import (auth_registry, registry, remote_engine,  # noqa: F401
                                      ssh_server, ssh_server2)
from tests.integration.kernels import DATA, lkbuild, remove_images, small_args, source_version


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real engine, for checks made beside lkbuild (never to build or load modules)."""
    client = docker.from_env(timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("kernel-cache")
    yield cache
    remove_images()
    lkbuild(cache, "prune")  # the session's build dirs and unpacked sources


@pytest.fixture(scope="session")
def kver() -> str:
    return source_version()


@pytest.fixture(scope="session")
def small_kernel(kernel_cache: Path, kver: str) -> Callable[[str], dict]:
    """`inv build` of the small config for an arch (kernel + builder image), once a session."""
    built: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in built:
            run = lkbuild(kernel_cache, "build", *small_args(kver, arch), "--json")
            assert run.code == 0, run.err[-3000:]
            (result,) = run.json()
            built[arch] = result
        return built[arch]

    return get


@pytest.fixture(scope="session")
def hello(kernel_cache: Path, small_kernel: Callable[[str], dict]) -> Callable[[str], dict]:
    """`inv buildmodule --module hello` against the session's small kernel, once per arch."""
    built: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in built:
            kernel = small_kernel(arch)["refs"][0]
            run = lkbuild(kernel_cache, "buildmodule", "--kernel", kernel, "--module", "hello",
                          "--json")
            assert run.code == 0, run.err[-3000:]
            built[arch] = run.json()
        return built[arch]

    return get


@pytest.fixture(scope="session")
def kernel_variant(kernel_cache: Path, kver: str) -> Callable[[str, str], dict]:
    """The small kernel with a fragment on top (zfs, another localversion), once a session."""
    built: dict[tuple[str, str], dict] = {}

    def get(arch: str, fragment: str) -> dict:
        key = (arch, fragment)
        if key not in built:
            run = lkbuild(kernel_cache, "build", *small_args(kver, arch), "--fragment",
                          str(DATA / fragment), "--json")
            assert run.code == 0, run.err[-3000:]
            (built[key],) = run.json()
        return built[key]

    return get
