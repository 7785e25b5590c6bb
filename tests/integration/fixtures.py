"""The session's shared parts for the slow suites: the real engine, one kernel cache, the small
kernels and hello built once, and the daemons (registries, a second engine, sshd).

tests/conftest.py registers them once for every suite, so integration and reliability tests
share one instance of each (a session fixture imported by two conftests would run twice).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from tests.integration.kernels import (
    BUILD_IMAGE,
    DATA,
    lkbuild,
    remove_images,
    small_args,
    source_version,
)


@pytest.fixture(scope="session")
def build_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The offline build image the builds compile in: `inv quickstart` (or the README's
    `inv bootstrap-image`) made it, or the session makes it here, so `inv test` passes on a
    machine that only ran scripts/setup-debian.sh."""
    client = docker.from_env(timeout=300)
    try:
        client.images.get(BUILD_IMAGE)
    except docker.errors.ImageNotFound:
        run = lkbuild(tmp_path_factory.mktemp("bootstrap-cache"), "bootstrap-image")
        assert run.code == 0, run.err[-3000:]
    finally:
        client.close()
    return BUILD_IMAGE


@pytest.fixture(scope="session")
def docker_client(build_image: str) -> Iterator[docker.DockerClient]:
    """The real engine, for checks made beside lkbuild (never to build or load modules)."""
    client = docker.from_env(timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory: pytest.TempPathFactory, build_image: str) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("kernel-cache")
    yield cache
    remove_images()
    # The shared scope's build dirs stay: they are the user's cache as much as the session's.


@pytest.fixture(scope="session")
def kver() -> str:
    return source_version()


@pytest.fixture(scope="session")
def small_kernel(kernel_cache: Path, kver: str, docker_client: docker.DockerClient
                 ) -> Callable[[str], dict]:
    """`inv build` of the small config for an arch (kernel + builder image), once a session.

    A test that forces it again leaves the same tags on a new image: the result then names
    that image, and `earlier_image_ids` the ones before it (its log stays the cold build's)."""
    built: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in built:
            run = lkbuild(kernel_cache, "build", *small_args(kver, arch), "--json")
            assert run.code == 0, run.err[-3000:]
            (result,) = run.json()
            built[arch] = result
        now = docker_client.images.get(built[arch]["refs"][0]).id
        if now != built[arch]["image_id"]:
            earlier = [*built[arch].get("earlier_image_ids", []), built[arch]["image_id"]]
            built[arch] = {**built[arch], "image_id": now, "earlier_image_ids": earlier}
        return built[arch]

    return get


@pytest.fixture(scope="session")
def hello(kernel_cache: Path, small_kernel: Callable[[str], dict]) -> Callable[[str], dict]:
    """`inv buildmodule --module hello` against the session's small kernel, once per arch and
    kernel image: a test that forces the kernel again makes a new image, and the module built
    for the old one no longer matches it."""
    built: dict[tuple[str, str], dict] = {}

    def get(arch: str) -> dict:
        kernel = small_kernel(arch)
        key = (arch, kernel["image_id"])
        if key not in built:
            run = lkbuild(kernel_cache, "buildmodule", "--kernel", kernel["refs"][0], "--module",
                          "hello", "--json")
            assert run.code == 0, run.err[-3000:]
            built[key] = run.json()
        return built[key]

    return get


@pytest.fixture(scope="session")
def kernel_variant(kernel_cache: Path, kver: str) -> Callable[..., dict]:
    """The small kernel with fragments on top, merged in order, once a session per arch and
    fragments."""
    built: dict[tuple[str, ...], dict] = {}

    def get(arch: str, *fragments: str) -> dict:
        key = (arch, *fragments)
        if key not in built:
            frags = [arg for f in fragments for arg in ("--fragment", str(DATA / f))]
            run = lkbuild(kernel_cache, "build", *small_args(kver, arch, *frags), "--json")
            assert run.code == 0, run.err[-3000:]
            (built[key],) = run.json()
        return built[key]

    return get
