"""Kernel and module build benchmark: lkbuild against bare make, side by side in one run.

Prints, and writes as JSON:
  cold `buildplainkernel` / bare `make -jN` of the same tree and config (same N, same compiler),
    with the unpack of the source tarball in the bare run or not
  rebuild after a one-symbol fragment / cold
  no-op `build` seconds (the image exists)
  arm64 cross-built on this x86_64 host / x86_64 native, same small config
  make jobs lkbuild chose, its measured largest process, and peak memory in use

Bare make runs in a plain container of the same build image, so the ratio is lkbuild's own
cost: unpacking, config check, packaging and image export. It is timed from the config in
an empty build dir to the built kernel: `make olddefconfig` (which compiles kconfig's tools,
as the first make of a build dir does) and `make -jN all`, each reported. Every lkbuild build
runs in a fresh cache scope and org so nothing is reused from earlier runs.

usage: python bench/kernel_build.py [--quick] [--source TARBALL] [--out FILE]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    BUILD_IMAGE,
    ROOT,
    SOURCE,
    MemoryPeak,
    config,
    lkbuild,
    machine,
    prune,
    write,
)
from tests.integration.kernels import remove_images

RUN = uuid.uuid4().hex[:8]
ORG = f"lkbuild-bench-{RUN}"


def bare_make(source: Path, config: Path, karch: str, cross: str, jobs: int
              ) -> tuple[float, float, float]:
    """Seconds of `tar -xf` of the tarball, of `make olddefconfig` on the config (kconfig's
    tools are compiled in it, as the first make of a build dir does) and of `make -jN all`,
    in a plain container of the build image (the host may lack flex and bison)."""
    with tempfile.TemporaryDirectory(prefix="lkbuild-bench-", dir="/var/tmp") as tmp:
        shutil.copy(config, Path(tmp) / "config")
        make = f"make -s O=/w/build ARCH={karch} CROSS_COMPILE={cross}"
        script = (f"t0=$(date +%s.%N) && mkdir -p /w/linux /w/build && "
                  f"tar -xf /src/{source.name} -C /w/linux --strip-components=1 && "
                  f"t1=$(date +%s.%N) && cp /w/config /w/build/.config && cd /w/linux && "
                  f"{make} olddefconfig && t2=$(date +%s.%N) && {make} -j{jobs} all && "
                  f"echo TIMES $(echo \"$t1 - $t0\" | bc) $(echo \"$t2 - $t1\" | bc) "
                  f"$(echo \"$(date +%s.%N) - $t2\" | bc)")
        proc = subprocess.run(["docker", "run", "--rm", "--network", "none", "-v",
                               f"{tmp}:/w", "-v", f"{source.parent}:/src:ro", BUILD_IMAGE,
                               "sh", "-c", script], capture_output=True, text=True)
        subprocess.run(["docker", "run", "--rm", "-v", f"{tmp}:/w", BUILD_IMAGE,
                        "rm", "-rf", "/w/linux", "/w/build"], capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"bare make failed:\n{proc.stderr[-3000:]}")
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TIMES ")][-1]
        unpack, config_s, make_s = (float(x) for x in line.split()[1:])
        return unpack, config_s, make_s


def steps(log: str) -> dict[str, Any]:
    """Where a build's seconds went, from BuildKit's step timings and compile.sh's lines: the
    config step (with the unpack or link of the source), make, the packaging after it."""
    text = Path(log).read_text(errors="replace")
    out: dict[str, Any] = {}
    make = re.search(r"lkbuild: make took (\d+) s", text)
    if make:
        out["make"] = float(make.group(1))
    # The config step's two BuildKit steps (either may come from the layer cache), in the
    # first buildx invocation: the later ones number their steps afresh.
    first = ([p for p in re.split(r"^#0 building", text, flags=re.M)[1:] if p] or [text])[0]
    config = 0.0
    for step in re.findall(r"#(\d+) \[configure(?:-base)? 2/2\] RUN", first):
        done = re.search(rf"#{step} DONE ([\d.]+)s", first)
        config += float(done.group(1)) if done else 0.0
    out["config_step"] = round(config, 1)
    out["source"] = "unpacked" if "lkbuild: unpacking" in text else \
        "linked" if "linked from" in text else "present"
    start = re.search(r"#\d+ ([\d.]+) lkbuild: packaging modules", text)
    end = re.search(r"#\d+ ([\d.]+) lkbuild: built ", text)
    if start and end:
        out["packaging"] = round(float(end.group(1)) - float(start.group(1)), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small test configs")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    source = Path(args.source)
    configs = {a: config(a, args.quick) for a in ("amd64", "arm64")}
    work = Path(tempfile.mkdtemp(prefix="lkbuild-bench-"))
    base = {"LKBUILD_CACHE_DIR": str(work / "cache"), "LKBUILD_ORG": ORG}

    def build(task: str, arch: str, scope: str, *extra: str, org: str = ORG
              ) -> tuple[float, dict]:
        seconds, out, _ = lkbuild(task, "--arch", arch, "--config", str(configs[arch]),
                                  "--source", str(source), *extra,
                                  env={**base, "LKBUILD_CACHE_ID": f"bench-{RUN}-{scope}",
                                       "LKBUILD_ORG": org})
        return seconds, out

    try:
        # The first build of a source unpacks it; a cold build of another scope (or arch, or
        # variant) links that tree instead, which is what bare make is given.
        first_s, first = build("buildplainkernel", "amd64", "first", org=f"{ORG}-first")
        with MemoryPeak() as mem:
            cold_s, cold = build("buildplainkernel", "amd64", "x86")
        assert not first["skipped"] and not cold["skipped"], "a cold build was skipped"
        jobs = cold["jobs"]
        unpack_s, bare_config_s, bare_make_s = bare_make(source, configs["amd64"], "x86_64",
                                                         "", jobs)
        bare_s = bare_config_s + bare_make_s  # the tree and config to a built kernel
        with tempfile.NamedTemporaryFile("w", suffix=".fragment", delete=False) as frag:
            frag.write("CONFIG_PRINTK_TIME=y\n")
        rebuild_s, _ = build("buildplainkernel", "amd64", "x86", "--fragment", frag.name)
        Path(frag.name).unlink()
        noop_s, noop = build("buildplainkernel", "amd64", "x86")
        assert noop["skipped"], "the no-op build was not skipped"
        arm_s, _ = build("buildplainkernel", "arm64", "arm64")
        peak = next((work / "cache" / "jobs").glob("*.json")).read_text()
        breakdown = steps(cold["log"])
        first_breakdown = steps(first["log"])
    finally:
        remove_images(ORG)
        remove_images(f"{ORG}-first")
        for scope in ("first", "x86", "arm64"):
            prune({**base, "LKBUILD_CACHE_ID": f"bench-{RUN}-{scope}"})
        shutil.rmtree(work, ignore_errors=True)
    results: dict[str, Any] = {
        "inputs": {**machine(), "source": str(source), "version": cold["version"],
                   "quick": args.quick, "jobs": jobs,
                   "config": {a: str(c.relative_to(ROOT)) for a, c in configs.items()}},
        "seconds": {"lkbuild_first": round(first_s, 1), "first_steps": first_breakdown,
                    "lkbuild_cold": round(cold_s, 1), "bare_unpack": round(unpack_s, 1),
                    "bare": round(bare_s, 1), "bare_olddefconfig": round(bare_config_s, 1),
                    "bare_make": round(bare_make_s, 1), "cold_steps": breakdown,
                    "rebuild_one_symbol": round(rebuild_s, 1), "noop": round(noop_s, 2),
                    "arm64_cross_cold": round(arm_s, 1)},
        "ratios": {"cold_over_bare_make": round(cold_s / bare_s, 3),
                   "first_over_bare_unpack_and_make": round(first_s / (unpack_s + bare_s), 3),
                   "rebuild_over_cold": round(rebuild_s / cold_s, 3),
                   "arm64_cross_over_x86_64_native": round(arm_s / cold_s, 3)},
        "measured_peak": peak.strip(),
        "peak_memory_gib": round(mem.peak / 2**30, 2),
    }
    path = write("kernel_build", results, args.out)
    r, sec = results["ratios"], results["seconds"]
    print(f"inputs: {results['inputs']}")
    print(f"cold buildplainkernel / bare make -j{jobs}: {r['cold_over_bare_make']:.2f} "
          f"({sec['lkbuild_cold']} s / {sec['bare']} s: olddefconfig "
          f"{sec['bare_olddefconfig']} s, make {sec['bare_make']} s; goal <= 1.10); "
          f"cold steps {breakdown}")
    print(f"first build of the source (unpacks it) / bare tar -xf + make: "
          f"{r['first_over_bare_unpack_and_make']:.2f} ({sec['lkbuild_first']} s / "
          f"{sec['bare_unpack'] + sec['bare']:.1f} s); steps {first_breakdown}")
    print(f"one-symbol rebuild / cold: {r['rebuild_over_cold']:.2f} (goal <= 0.15)")
    print(f"no-op build: {sec['noop']} s (goal <= 2 s)")
    print(f"arm64 cross / x86_64 native: {r['arm64_cross_over_x86_64_native']:.2f} "
          "(goal <= 1.15)")
    print(f"jobs: {jobs}; peak memory in use during the cold build: "
          f"{results['peak_memory_gib']} GiB; measured: {results['measured_peak']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
