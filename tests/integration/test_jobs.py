"""The jobs model against a real memory limit: a second dockerd whose containers and BuildKit
steps all run under a memory-capped cgroup, as in a small Docker Desktop VM or a CI runner.
The engine reports the machine's memory; only the builder sees the cap."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.daemons import DockerEngine, MemoryCap
from tests.integration.kernels import BUILD_IMAGE, SESSION, lkbuild, one_error_line, small_args

pytestmark = pytest.mark.slow
MiB = 1024 ** 2
CAP = 2048 * MiB  # the automatic build: the engine reports 23 GiB, the builder holds 2
TIGHT = 384 * MiB  # the high --jobs build: a dozen cc1 at once cannot fit
TOO_MANY = "14"  # within what the engine's reported memory allows, so only the cap stops it


@pytest.fixture(scope="module")
def capped() -> Iterator[tuple[DockerEngine, MemoryCap]]:
    cap = MemoryCap(f"lkbuild-cap-{uuid.uuid4().hex[:8]}", CAP)
    cap.start()
    root = Path(tempfile.mkdtemp(prefix="lkm-", dir="/tmp"))
    engine = DockerEngine(root, ("--cgroup-parent", cap.parent))
    try:
        engine.start()
        engine.load_from_host(BUILD_IMAGE)
        yield engine, cap
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
        cap.stop()


def test_auto_jobs_fit_a_capped_builder_and_too_many_are_killed_and_diagnosed(
        capped, kernel_cache, kver):
    engine, cap = capped
    env = {"DOCKER_HOST": engine.host}
    before = cap.oom_kills()
    auto = lkbuild(kernel_cache, "build", *small_args(kver, "amd64"), "--json",
                   env={**env, "LKBUILD_CACHE_ID": f"test-{SESSION}-cap-auto"})
    assert auto.code == 0, auto.err[-3000:]
    (built,) = auto.json()
    log = Path(built["log"]).read_text()
    assert f"lkbuild: make -j{built['jobs']} " in log
    if built["jobs"] < 2:  # the model gave each job more than half the cap
        assert f"(cgroup limit 2048 MiB) allows -j{built['jobs']}: using it" in log
    assert cap.oom_kills() == before, "an automatic-jobs build was OOM-killed"

    cap.set_limit(TIGHT)
    high = lkbuild(kernel_cache, "build", *small_args(kver, "amd64"), "--jobs", TOO_MANY,
                   "--force", env={**env, "LKBUILD_CACHE_ID": f"test-{SESSION}-cap-high"})
    assert high.code == 5, high.err[-3000:]
    line = one_error_line(high.err)
    assert "ran out of memory" in line and "use --jobs 1" in line, line
    assert "cgroup limit 384 MiB" in line and "/logs/kernel-" in line
    assert cap.oom_kills() > before, "the failure was not an OOM kill"
    assert high.out == ""
