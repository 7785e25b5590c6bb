"""Full-config kernel builds: what a user plans a build around, the shipped configs against
the ones they replaced, measured in one run.

For each config (the series' shipped config of each arch, and the same file at --before), in a
fresh cache scope: a cold `buildplainkernel`, a rebuild after a one-option change
(PRINTK_TIME off) and a no-op. Prints, and writes as JSON:
  seconds of each, with make's own seconds and the objects compiled
  the machine's busy core-seconds during the cold build, and the seconds when fewer than
    1.5 cores were busy (the serial part: kconfig, links, modpost, packaging), from which
    the time at -jN on cores of this machine's speed is projected as serial + rest / N
  peak memory in use during the cold build, per make job, and the largest make process
  the disk the build dir holds after it, and the kernel image's size
  the lines the cold build printed on a pipe and the lines its log holds

arm64 is cross-built on an x86_64 host. Each config's figures are written as soon as they are
measured, so a run cut short keeps what it finished.

usage: python bench/full_config.py [--before REV] [--only after|before] [--arch ARCH]
                                   [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SOURCE, UNAME, MemoryPeak, lkbuild, machine, prune, write
from tests.integration.kernels import remove_images

RUN = uuid.uuid4().hex[:8]
ORG = f"lkbuild-bench-{RUN}"
# The commit before the shipped configs became a container-host VM's: arm64 built every
# SoC platform of its defconfig.
BEFORE = "8b103c6^"
ONE_OPTION = "# CONFIG_PRINTK_TIME is not set\n"
PROJECT_JOBS = (3, 8)  # the build notes' Macs: 8 GB at -j3, 16 GB at -j8
SEEDS = {3: "30-40 min", 8: "10-15 min"}  # what those notes report for linuxkit's config


class BusyCores:
    """The machine's busy core-seconds, and the seconds fewer than 1.5 cores were busy,
    from /proc/stat once a second."""

    def __init__(self) -> None:
        self.core_seconds = 0.0
        self.serial_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _sample() -> tuple[float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return time.monotonic(), (sum(fields[:8]) - idle) / 100.0  # USER_HZ ticks

    def _run(self) -> None:
        last_t, last_busy = self._sample()
        while not self._stop.wait(1.0):
            t, busy = self._sample()
            cores = (busy - last_busy) / (t - last_t) if t > last_t else 0.0
            self.core_seconds += busy - last_busy
            if cores < 1.5:
                self.serial_seconds += t - last_t
            last_t, last_busy = t, busy

    def __enter__(self) -> BusyCores:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def config_at(rev: str, arch: str, into: Path) -> Path:
    """The series config of arch as it was at rev."""
    rel = f"kernel/6.12.x/config-{UNAME[arch]}"
    if rev == "HEAD":
        return ROOT / rel
    text = subprocess.run(["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    path = into / f"config-{UNAME[arch]}-{rev.replace('^', '-parent')}"
    path.write_text(text)
    return path


def counts(config: Path) -> dict[str, int]:
    lines = config.read_text().splitlines()
    return {"builtin": sum(1 for x in lines if x.startswith("CONFIG_") and x.endswith("=y")),
            "modules": sum(1 for x in lines if x.startswith("CONFIG_") and x.endswith("=m"))}


def image_bytes(ref: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", ref],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else 0


def projected(core_seconds: float, serial: float, jobs: int) -> float:
    """Seconds at -jN on cores like these: the serial part, then the rest spread over N."""
    return serial + max(core_seconds - serial, 0.0) / jobs


def measure(label: str, arch: str, config: Path, work: Path) -> dict[str, Any]:
    scope = f"bench-{RUN}-{label}-{arch}"
    env = {"LKBUILD_CACHE_DIR": str(work / "cache"), "LKBUILD_ORG": ORG,
           "LKBUILD_CACHE_ID": scope, "LKBUILD_MIN_FREE_GB": "5"}
    common = ("--arch", arch, "--config", str(config), "--source", SOURCE)
    fragment = work / "one-option.fragment"
    fragment.write_text(ONE_OPTION)
    jobs_dir = work / "cache" / "jobs"
    shutil.rmtree(jobs_dir, ignore_errors=True)  # the measurements of the configs before
    try:
        with BusyCores() as cpu, MemoryPeak() as mem:
            cold_s, cold, proc = lkbuild("buildplainkernel", *common, env=env)
        assert not cold["skipped"], "the cold build was skipped"
        # What the cold build measured of itself (the rebuild's config has its own record).
        jobs_record = json.loads(next(jobs_dir.glob("*.json")).read_text())
        piped_lines = len(proc.stderr.splitlines())
        log_lines = len(Path(cold["log"]).read_text(errors="replace").splitlines())
        rebuild_s, rebuild, _ = lkbuild("buildplainkernel", *common, "--fragment",
                                        str(fragment), env=env)
        assert not rebuild["skipped"], "the one-option rebuild was skipped"
        noop_s, noop, _ = lkbuild("buildplainkernel", *common, env=env)
        assert noop["skipped"], "the no-op build was not skipped"
        size = image_bytes(cold["refs"][0])
    finally:
        remove_images(ORG)
        prune(env)
    jobs = cold["jobs"]
    summary, rebuilt = cold["summary"] or {}, rebuild["summary"] or {}
    return {
        "config": str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else label,
        "counts": counts(config), "jobs": jobs,
        "seconds": {"cold": round(cold_s, 1), "cold_make": summary.get("make_seconds"),
                    "one_option_rebuild": round(rebuild_s, 1),
                    "rebuild_make": rebuilt.get("make_seconds"), "noop": round(noop_s, 2)},
        "objects": {"cold": summary.get("objects_compiled"),
                    "build_dir": summary.get("build_dir_objects"),
                    "one_option_rebuild": rebuilt.get("objects_compiled")},
        "cold_steps": summary.get("steps"),
        "cpu": {"core_seconds": round(cpu.core_seconds), "serial_seconds":
                round(cpu.serial_seconds),
                "projected_seconds": {f"-j{n}": round(projected(cpu.core_seconds,
                                                                cpu.serial_seconds, n))
                                      for n in PROJECT_JOBS}},
        "memory": {"peak_gib": round(mem.peak / 2**30, 2),
                   "peak_gib_per_job": round(mem.peak / 2**30 / jobs, 2),
                   "largest_make_process_gib": round(jobs_record.get("peak_rss", 0) / 2**30, 2)},
        "disk": {"build_dir_gb": round(jobs_record.get("disk_bytes", 0) / 1e9, 2),
                 "kernel_image_mb": round(size / 1e6)},
        "output": {"piped_lines": piped_lines, "log_lines": log_lines},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=BEFORE, help="the revision of the earlier configs")
    parser.add_argument("--only", choices=("after", "before"), default="")
    parser.add_argument("--arch", action="append", choices=tuple(UNAME), default=[])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    arches = args.arch or ["arm64", "amd64"]
    # The configs of this change first: a run cut short keeps the figures users plan around.
    plan = [(label, rev, arch) for label, rev in (("after", "HEAD"), ("before", args.before))
            if args.only in ("", label) for arch in arches]
    work = Path(tempfile.mkdtemp(prefix="lkbuild-bench-"))
    path = Path()
    results: dict[str, Any] = {"inputs": {**machine(), "source": SOURCE, "before": args.before,
                                          "one_option": ONE_OPTION.strip(),
                                          "seeds_reported": {f"-j{n}": t
                                                             for n, t in SEEDS.items()}},
                               "configs": {}}
    try:
        for label, rev, arch in plan:
            print(f"{label} {arch}: building ...", flush=True)
            figures = measure(label, arch, config_at(rev, arch, work), work)
            results["configs"][f"{label} {arch}"] = figures
            path = write("full_config", results, args.out)
            sec, cpu, mem = figures["seconds"], figures["cpu"], figures["memory"]
            print(f"{label} {arch} ({figures['counts']['builtin']} built in, "
                  f"{figures['counts']['modules']} modules, -j{figures['jobs']}): cold "
                  f"{sec['cold']} s, one-option rebuild {sec['one_option_rebuild']} s, no-op "
                  f"{sec['noop']} s; {figures['objects']['cold']} objects; "
                  f"{cpu['core_seconds']} core-s ({cpu['serial_seconds']} s serial), "
                  f"projected {cpu['projected_seconds']}; peak {mem['peak_gib']} GiB "
                  f"({mem['peak_gib_per_job']} per job, largest process "
                  f"{mem['largest_make_process_gib']}); build dir "
                  f"{figures['disk']['build_dir_gb']} GB; piped {figures['output']} lines",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
