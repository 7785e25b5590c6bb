"""Hermetic fixtures: every test gets its own cache and config dirs and no LKBUILD_* leaking in."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The slow suites' shared session fixtures, registered here once for all of them.
from tests.integration.daemons import (  # noqa: F401
    auth_registry,
    registry,
    remote_engine,
    ssh_server,
    ssh_server2,
)
from tests.integration.fixtures import (  # noqa: F401
    build_image,
    docker_client,
    hello,
    kernel_cache,
    kernel_variant,
    kver,
    small_kernel,
)
from tests.run import Run

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "ci", "full")
"""unit: pure logic, seconds (`inv test --quick`); ci: the real pipeline, each capability once
(`inv test`, with unit); full: everything else (`inv test --full`)."""
HANG_GUARD = {"unit": 60, "ci": 900, "full": 900}
"""Seconds a test may take, setup included, unless it names its own `timeout`: a hang fails
with the test's name instead of eating the run. Integration tests' guard covers the one cold
small-kernel build a session fixture may make first; longer tests say their own."""


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background (`inv test &`, nohup, some CI runners) inherits Ctrl-C
    ignored, and every lkbuild a test starts would too: the tests that press Ctrl-C need the
    default, so the children get it back (a handler is reset to the default on exec)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in exactly one tier, and every test under a hang guard. The unit tests run
    first: they answer in seconds, and the session fixtures' teardown (removing the images a
    run built) then falls to the last integration test's guard, not to a unit test's."""
    items.sort(key=lambda item: item.get_closest_marker("unit") is None)
    wrong = []
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(sorted(tiers)) or 'no tier'}")
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(HANG_GUARD[tiers.pop()]))
    if wrong:
        raise pytest.UsageError("each test needs exactly one tier marker "
                                f"({', '.join(TIERS)}):\n  " + "\n  ".join(wrong))


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated XDG dirs; the checkout's own lkbuild.yaml and the user's are not read."""
    home = tmp_path / "xdg"
    for key in list(os.environ):
        if key.startswith("LKBUILD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("LKBUILD_CONFIG", str(home / "config" / "lkbuild" / "lkbuild.yaml"))
    monkeypatch.setenv("NO_COLOR", "1")
    return home


@pytest.fixture
def lk(tmp_path: Path) -> Callable[..., Run]:
    """Run the `lkbuild` program (the console script's namespace) in a subprocess."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            cwd: Path | None = None, input: str | None = None) -> Run:
        full_env = dict(os.environ)
        # The checkout under test, whatever an installed lkbuild points at.
        full_env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH", "")] if p])
        full_env.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "recipes", *args], cwd=cwd or tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout,
                              input=input)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


def make_tree(root: Path, series: dict[str, dict[str, str]] | None = None) -> Path:
    """A tiny linuxkit-layout kernel dir: {series: {relative file: content}}."""
    series = series or {
        "6.12.x": {
            "build-args": "KERNEL_VERSION=6.12.54\nKERNEL_SERIES=6.12.x\n"
                          "BUILD_IMAGE=linuxkit/alpine:35b33c6b03c40e51046c3b053dd131a68a26c37a\n",
            "config-x86_64": "CONFIG_MODULES=y\n",
            "config-aarch64": "CONFIG_MODULES=y\nCONFIG_ARM64=y\n",
            "patches/0001-a.patch": "--- a\n+++ b\n",
        },
        "6.12.x-rt": {"config-x86_64": "CONFIG_PREEMPT_RT=y\n",
                      "patches/0001-rt.patch": "--- a/rt\n+++ b/rt\n"},
        "6.6.x": {
            "build-args": "KERNEL_VERSION=6.6.60\nKERNEL_SERIES=6.6.x\nBUILD_IMAGE=b\n",
            "config-x86_64": "CONFIG_MODULES=y\n",
            "deprecated": "",
        },
    }
    (root / "Dockerfile").parent.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "config-dbg").write_text("CONFIG_DEBUG_INFO=y\n")
    (root / "build-args-debug").write_text("EXTRA=-dbg\n")
    for name, files in series.items():
        for rel, content in files.items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "kernel")


def alive(pid: int) -> bool:
    """Whether a process we started is still running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
