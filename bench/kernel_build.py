"""Kernel build benchmark: lkbuild against bare make, measured side by side in one run.

Prints, and writes as JSON:
  cold `buildplainkernel` / bare `make -jN` of the same tree and config (same N, same compiler)
  rebuild after a one-symbol fragment / cold
  no-op `build` seconds (the image exists)
  arm64 cross-built on this x86_64 host / x86_64 native, same small config
  make jobs lkbuild chose, and peak memory in use during the cold build

Bare make runs in a plain container of the same build image (the host lacks flex and bison),
with the source unpacked beforehand, so the ratio is lkbuild's own cost: unpacking, config
check, packaging and image export. Every lkbuild build runs in a fresh cache scope and org so
nothing is reused from earlier runs.

usage: python bench/kernel_build.py [--quick] [--source TARBALL] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_IMAGE = "lkbuild/build:bookworm"
SCOPE = f"bench-{uuid.uuid4().hex[:8]}"


def lkbuild(*args: str, scope: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    full.update({"LKBUILD_BUILD_IMAGE": BUILD_IMAGE, "LKBUILD_CACHE_ID": scope,
                 "LKBUILD_ORG": f"lkbuild-{SCOPE}", "PYTHONPATH": str(ROOT),
                 "LKBUILD_MIN_FREE_GB": "5"})
    full.update(env or {})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "recipes", *args, "--json"], cwd=ROOT,
                          env=full, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"lkbuild {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, json.loads(proc.stdout)[0]


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

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bare_make(source: Path, config: Path, karch: str, cross: str, jobs: int) -> float:
    """`make -jN` of the unpacked tree in a plain container of the build image."""
    with tempfile.TemporaryDirectory(prefix="lkbuild-bench-", dir="/var/tmp") as tmp:
        tree = Path(tmp) / "linux"
        tree.mkdir()
        subprocess.run(["tar", "-xf", str(source), "-C", str(tree), "--strip-components=1"],
                       check=True)
        shutil.copy(config, Path(tmp) / "config")
        script = (f"mkdir -p /w/build && cp /w/config /w/build/.config && cd /w/linux && "
                  f"make -s O=/w/build ARCH={karch} CROSS_COMPILE={cross} olddefconfig && "
                  f"start=$(date +%s.%N) && "
                  f"make -s O=/w/build ARCH={karch} CROSS_COMPILE={cross} -j{jobs} all && "
                  f"echo ELAPSED $(echo \"$(date +%s.%N) - $start\" | bc)")
        proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v",
                               f"{tmp}:/w", BUILD_IMAGE, "sh", "-c", script],
                              capture_output=True, text=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{tmp}:/w", BUILD_IMAGE,
                        "rm", "-rf", "/w/linux", "/w/build"], capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"bare make failed:\n{proc.stderr[-3000:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ELAPSED ")][-1]
        return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small test configs")
    parser.add_argument("--source", default="/usr/src/linux-source-6.12.tar.xz")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "kernel_build.json"))
    args = parser.parse_args()
    source = Path(args.source)
    configs = {
        "amd64": ROOT / ("tests/data/small-x86_64.config" if args.quick
                         else "kernel/6.12.x/config-x86_64"),
        "arm64": ROOT / ("tests/data/small-aarch64.config" if args.quick
                         else "kernel/6.12.x/config-aarch64"),
    }
    common = ["--source", str(source)]

    def build(arch: str, scope: str, *extra: str) -> tuple[float, dict]:
        return lkbuild("buildplainkernel", "--arch", arch, "--config", str(configs[arch]),
                       *common, *extra, scope=scope)

    with MemoryPeak() as mem:
        cold_s, cold = build("amd64", SCOPE)
    jobs = cold["jobs"]
    bare_s = bare_make(source, configs["amd64"], "x86_64", "", jobs)
    with tempfile.NamedTemporaryFile("w", suffix=".fragment", delete=False) as frag:
        frag.write("CONFIG_PRINTK_TIME=y\n")
    rebuild_s, _ = build("amd64", SCOPE, "--fragment", frag.name)
    os.unlink(frag.name)
    noop_s, noop = build("amd64", SCOPE)
    assert noop["skipped"], "the no-op build was not skipped"
    arm_s, _ = build("arm64", SCOPE + "-arm64")
    results = {
        "inputs": {
            "source": str(source), "version": cold["version"], "quick": args.quick,
            "config": {a: str(c.relative_to(ROOT)) for a, c in configs.items()},
            "jobs": jobs, "cpus": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "machine": platform.machine(), "build_image": BUILD_IMAGE,
        },
        "seconds": {"lkbuild_cold": round(cold_s, 1), "bare_make": round(bare_s, 1),
                    "rebuild_one_symbol": round(rebuild_s, 1), "noop": round(noop_s, 2),
                    "arm64_cross_cold": round(arm_s, 1)},
        "ratios": {"cold_over_bare_make": round(cold_s / bare_s, 3),
                   "rebuild_over_cold": round(rebuild_s / cold_s, 3),
                   "arm64_cross_over_x86_64_native": round(arm_s / cold_s, 3)},
        "peak_memory_gib": round(mem.peak / 2**30, 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    r, sec = results["ratios"], results["seconds"]
    print(f"inputs: {results['inputs']}")
    print(f"cold buildplainkernel / bare make -j{jobs}: {r['cold_over_bare_make']:.2f} "
          f"({sec['lkbuild_cold']} s / {sec['bare_make']} s; goal <= 1.10)")
    print(f"one-symbol rebuild / cold: {r['rebuild_over_cold']:.2f} (goal <= 0.15)")
    print(f"no-op build: {sec['noop']} s (goal <= 2 s)")
    print(f"arm64 cross / x86_64 native: {r['arm64_cross_over_x86_64_native']:.2f} "
          "(goal <= 1.15)")
    print(f"jobs: {jobs}; peak memory in use during the cold build: "
          f"{results['peak_memory_gib']} GiB")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
