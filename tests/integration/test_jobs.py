"""The jobs model against a real memory limit: a second dockerd whose containers and BuildKit
steps all run under a memory-capped cgroup, as in a small Docker Desktop VM or a CI runner.
The engine reports the machine's memory; only the builder sees the cap.

Too many jobs under a cap is not tested here with a real build: the small config's cc1
processes are small, and a builder capped below what they need together thrashes on
re-read compiler pages for many minutes before the kernel OOM-kills anything. The diagnosis
of that kill, with the jobs the builder's memory allows, is tested on its log lines."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.daemons import DockerEngine, MemoryCap
from tests.integration.kernels import BUILD_IMAGE, SESSION, lkbuild, small_args

pytestmark = pytest.mark.slow
MiB = 1024 ** 2
CAP = 2048 * MiB  # the automatic build: the engine reports 23 GiB, the builder holds 2


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
    assert "lkbuild: builder memory: cgroup limit 2048 MiB" in log  # the cap, seen inside
    if built["jobs"] < 2:  # the model gave each job more than half the cap
        assert f"(cgroup limit 2048 MiB) allows -j{built['jobs']}: using it" in log
    assert cap.oom_kills() == before, "an automatic-jobs build was OOM-killed"

