"""What every benchmark shares: running lkbuild as a user does, and the machine it ran on."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD_IMAGE = "lkbuild/build:bookworm"
SOURCE = "/usr/src/linux-source-6.12.tar.xz"
UNAME = {"amd64": "x86_64", "arm64": "aarch64"}
RESULTS = ROOT / "bench" / "results"


def config(arch: str, quick: bool) -> Path:
    """The small test config (--quick), else the series' full one."""
    if quick:
        return ROOT / "tests" / "data" / f"small-{UNAME[arch]}.config"
    return ROOT / "kernel" / "6.12.x" / f"config-{UNAME[arch]}"


def lkbuild(*args: str, env: dict[str, str] | None = None, check: bool = True
            ) -> tuple[float, Any, subprocess.CompletedProcess]:
    """Seconds, the parsed --json output (None when it failed) and the process."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "recipes", *args, "--json"], cwd=ROOT,
                          env=lkbuild_env(env), capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        if check:
            sys.exit(f"lkbuild {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
        return elapsed, None, proc
    out = json.loads(proc.stdout)
    return elapsed, out[0] if isinstance(out, list) and len(out) == 1 else out, proc


def lkbuild_env(env: dict[str, str] | None = None) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    full.update({"LKBUILD_BUILD_IMAGE": BUILD_IMAGE, "LKBUILD_MIN_FREE_GB": "5",
                 "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})})
    return full


def prune(env: dict[str, str]) -> None:
    """`inv prune` of a benchmark's cache scope: its unpacked source and build dirs live in
    BuildKit's cache mount, would outlive the run, and later builds would link from them."""
    subprocess.run([sys.executable, "-m", "recipes", "prune"], cwd=ROOT, env=lkbuild_env(env),
                   capture_output=True, text=True)


def median(values: list[float]) -> float:
    """The middle of an odd number of runs (the upper middle of an even one)."""
    return sorted(values)[len(values) // 2]


def machine() -> dict[str, Any]:
    info = json.loads(subprocess.run(["docker", "info", "--format", "{{json .}}"],
                                     capture_output=True, text=True).stdout or "{}")
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "kernel": platform.release(), "engine": info.get("ServerVersion", ""),
            "storage_driver": info.get("Driver", ""), "build_image": BUILD_IMAGE}


def write(name: str, results: dict[str, Any], out: str = "") -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


class MemoryPeak:
    """Peak of the machine's used memory above its level at start, sampled twice a second."""

    def __init__(self) -> None:
        self.base = self._used()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _used() -> int:
        info = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0]) * 1024
        return info["MemTotal"] - info["MemAvailable"]

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._used() - self.base)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
