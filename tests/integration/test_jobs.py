"""The jobs model against a real memory limit: a second dockerd whose containers and BuildKit
steps all run under a memory-capped cgroup, as in a small Docker Desktop VM or a CI runner.
The engine reports the machine's memory; only the builder sees the cap. Under it, automatic
jobs build the small config without an OOM kill, and a deliberately high --jobs is killed by
the kernel's OOM killer and diagnosed with the jobs that fit."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemons import DockerEngine, MemoryCap
from tests.integration.kernels import BUILD_IMAGE, SESSION, lkbuild, one_error_line, small_args

pytestmark = pytest.mark.full
MiB = 1024 ** 2
CAP = 512 * MiB  # the engine reports 23 GiB, the builder holds half a GiB: room for -j1
HIGH_CAP = 128 * MiB  # a dozen small compiles fit in 256 MiB: they crawl instead of dying


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


def test_automatic_jobs_fit_a_capped_builder_the_engine_does_not_report(
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
    assert "lkbuild: builder memory: cgroup limit 512 MiB" in log  # the cap, seen inside
    if built["jobs"] < 2:  # the model gave each job more than half the cap
        assert f"(cgroup limit 512 MiB) allows -j{built['jobs']}: using it" in log
    assert cap.oom_kills() == before, "an automatic-jobs build was OOM-killed"


@pytest.mark.timeout(1800)
def test_too_many_jobs_on_a_capped_builder_are_oom_killed_and_the_jobs_that_fit_are_named(
        capped, kernel_cache, kver):
    """-j12 fits the 23 GiB the engine reports, so lkbuild lets it start; inside the builder,
    capped at an eighth of a GiB for this test, a dozen cc1 processes do not fit, and the
    kernel kills them. (Under 512 or 256 MiB a dozen small compiles nearly fit: the build
    then crawls on the page cache for many minutes, or finishes, before any kill.)"""
    engine, cap = capped
    org = f"lkbuild-test-{SESSION}-cap-high"
    cap.set_limit(HIGH_CAP)
    before = cap.oom_kills()
    run = lkbuild(kernel_cache, "buildplainkernel", *small_args(kver, "amd64"), "--jobs", "12",
                  env={"DOCKER_HOST": engine.host, "LKBUILD_ORG": org,
                       "LKBUILD_CACHE_ID": f"test-{SESSION}-cap-high"})
    assert run.code == 5, run.err[-3000:]
    line = one_error_line(run.err)
    assert "the build ran out of memory" in line, line
    assert "use --jobs 1, what the builder's memory (cgroup limit 128 MiB) allows" in line
    assert "log: " in line and run.out == ""
    assert cap.oom_kills() > before, "the failure was not the kernel's OOM killer"
    images = engine.docker("images", "--format", "{{.Repository}}", org).stdout.split()
    assert images == [], "a killed build tagged an image"

