"""Module build benchmark: `inv buildmodule` against bare make in the same builder image.

Prints, and writes as JSON:
  `buildmodule` of hello - bare `make M=` against the same kernel-dev (seconds over; medians
    of 5 alternating runs, each lkbuild run forced to compile and package again)
  `buildmodule` of OpenZFS / its bare configure and module make, as its recipe runs them

The kernel is built once, with its -builder image, in a fresh cache scope and org. Bare make
runs in a container of that -builder image (the build image with the kernel's kernel-dev
unpacked, KERNELDIR set), timed inside it, so the difference is lkbuild's own cost: the
kernel's facts and config check, the BuildKit steps, the module and loader images.

usage: python bench/module_build.py [--quick] [--source TARBALL] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, SOURCE, config, lkbuild, machine, median, prune, write
from tests.integration.kernels import remove_images

RUN = uuid.uuid4().hex[:8]
ORG = f"lkbuild-bench-{RUN}"
ZFS_SOURCE = Path("/usr/local/lib/lkbuild/sources/zfs-dkms_2.3.2-2~bpo12+2_all.deb")
ZFS_SUBDIR = "usr/src/zfs-2.3.2"
RUNS = 5  # module builds each way, alternating; the figure is the median


def bare_in_builder(builder: str, tree: Path, script: str) -> float:
    """Seconds `script` takes in a container of the -builder image with `tree` at /m, timed
    inside."""
    timed = (f"t0=$(date +%s.%N) && {script} && "
             "echo TIME $(echo \"$(date +%s.%N) - $t0\" | bc)")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{tree}:/m",
                           builder, "sh", "-c", timed], capture_output=True, text=True)
    subprocess.run(["docker", "run", "--rm", "-v", f"{tree}:/m", builder, "sh", "-c",
                    "rm -rf /m/*"], capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"bare build failed:\n{proc.stderr[-3000:]}")
    return float([ln for ln in proc.stdout.splitlines() if ln.startswith("TIME ")][-1]
                 .split()[1])


def bare_module(builder: str) -> float:
    """Seconds of `make M=` of the hello module in the -builder image."""
    with tempfile.TemporaryDirectory(prefix="lkbuild-bench-") as tmp:
        shutil.copytree(ROOT / "module" / "hello", Path(tmp) / "hello")
        return bare_in_builder(builder, Path(tmp),
                               "make -s -C $KERNELDIR M=/m/hello modules")


def bare_zfs(builder: str, jobs: int) -> float:
    """Seconds of OpenZFS's configure and module make, as its recipe runs them, in the
    -builder image: what a user does by hand with the same sources."""
    with tempfile.TemporaryDirectory(prefix="lkbuild-bench-") as tmp:
        subprocess.run(["dpkg-deb", "-x", str(ZFS_SOURCE), tmp], check=True)
        src = Path(tmp) / ZFS_SUBDIR
        return bare_in_builder(builder, src, (
            "cd /m && ./configure -q --with-config=kernel --with-linux=$KERNELDIR "
            "--with-linux-obj=$KERNELDIR --disable-dependency-tracking && "
            f"make -s -C module -j{jobs}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small test config")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    kconfig = config("amd64", args.quick)
    work = Path(tempfile.mkdtemp(prefix="lkbuild-bench-"))
    env = {"LKBUILD_CACHE_DIR": str(work / "cache"), "LKBUILD_ORG": ORG,
           "LKBUILD_CACHE_ID": f"bench-{RUN}-modules"}
    try:
        _, kernel, _ = lkbuild("build", "--arch", "amd64", "--config", str(kconfig), "--source",
                            args.source, env=env)
        ref = kernel["refs"][0]
        builder = next(r for r in kernel["refs"] if "-builder-" in r)
        jobs = kernel["jobs"] or os.cpu_count() or 1  # 0: the kernel was there already
        lkbuild("buildmodule", "--kernel", ref, "--module", "hello", env=env)
        module_runs, bare_runs = [], []
        for _ in range(RUNS):  # alternating, so a slow spell of the machine hits both
            seconds, _, _ = lkbuild("buildmodule", "--kernel", ref, "--module", "hello",
                                    "--force", env=env)
            module_runs.append(seconds)
            bare_runs.append(bare_module(builder))
        zfs_s = bare_zfs_s = 0.0
        if ZFS_SOURCE.is_file():
            zfs_s, _, _ = lkbuild("buildmodule", "--kernel", ref, "--module", "zfs",
                                  "--module-source", str(ZFS_SOURCE), "--force", env=env)
            bare_zfs_s = bare_zfs(builder, jobs)
    finally:
        remove_images(ORG)
        prune(env)
        shutil.rmtree(work, ignore_errors=True)
    module_s, bare_s = median(module_runs), median(bare_runs)
    results: dict[str, Any] = {
        "inputs": {**machine(), "source": args.source, "version": kernel["version"],
                   "quick": args.quick, "jobs": jobs, "config": str(kconfig.relative_to(ROOT))},
        "seconds": {"buildmodule_hello": round(module_s, 1), "bare_make_m": round(bare_s, 1),
                    "buildmodule_hello_runs": [round(x, 1) for x in module_runs],
                    "bare_make_m_runs": [round(x, 1) for x in bare_runs],
                    "buildmodule_zfs": round(zfs_s, 1), "bare_zfs": round(bare_zfs_s, 1)},
        "ratios": ({"buildmodule_zfs_over_bare": round(zfs_s / bare_zfs_s, 3)}
                   if bare_zfs_s else {}),
        "buildmodule_seconds_over_bare": round(module_s - bare_s, 1),
    }
    path = write("module_build", results, args.out)
    sec = results["seconds"]
    print(f"buildmodule hello: {sec['buildmodule_hello']} s, bare make M=: "
          f"{sec['bare_make_m']} s: {results['buildmodule_seconds_over_bare']} s over "
          f"(medians of {RUNS}; goal <= 5 s)")
    if results["ratios"]:
        print(f"buildmodule zfs / bare configure + make: "
              f"{results['ratios']['buildmodule_zfs_over_bare']:.2f} "
              f"({sec['buildmodule_zfs']} s / {sec['bare_zfs']} s; goal <= 1.10)")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
