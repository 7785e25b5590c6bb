"""Automatic jobs on a memory-capped builder: OOM kills, and time against the best fixed -j.

A second dockerd runs with `--cgroup-parent` under a cgroup limited to --cap-gib (4 by
default), so every BuildKit step of the build shares that limit while the engine still
reports the machine's memory, as a small Docker Desktop VM or a CI runner does. Every build
is cold (its own cache scope and org). Order: automatic jobs on a builder lkbuild has never
measured (the cautious default model), the fixed -j runs (the first of which leaves the
measurement every later automatic build uses), then automatic jobs again.

Prints, and writes as JSON: OOM kills during the automatic builds (goal 0) and automatic /
best fixed -j seconds (goal <= 1.05).

usage: python bench/jobs.py [--quick] [--cap-gib N] [--fixed 1,2,3] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BUILD_IMAGE, SOURCE, config, lkbuild, machine, write
from tests.integration.daemons import DockerEngine, MemoryCap

RUN = uuid.uuid4().hex[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small config")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--cap-gib", type=float, default=4.0)
    parser.add_argument("--fixed", default="1,2,3", help="the fixed -j values to time")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    cfg = config("amd64", args.quick)
    cap = MemoryCap(f"lkbuild-bench-{RUN}", int(args.cap_gib * 2**30))
    work = Path(tempfile.mkdtemp(prefix="lkbuild-bench-"))
    engine = DockerEngine(Path(tempfile.mkdtemp(prefix="lkj-", dir="/tmp")),
                          ("--cgroup-parent", cap.parent))
    runs: dict[str, dict] = {}
    cap.start()
    try:
        engine.start()
        engine.load_from_host(BUILD_IMAGE)

        def build(label: str, *extra: str) -> None:
            before = cap.oom_kills()
            seconds, out, proc = lkbuild(
                "build", "--version", "6.12.117", "--arch", "amd64", "--source", args.source,
                "--config", str(cfg), *extra, check=False,
                env={"DOCKER_HOST": engine.host, "LKBUILD_CACHE_DIR": str(work / "cache"),
                     "LKBUILD_CACHE_ID": f"bench-{RUN}-{label}",
                     "LKBUILD_ORG": f"lkbuild-bench-{RUN}-{label}"})
            runs[label] = {"seconds": round(seconds, 1), "ok": out is not None,
                           "jobs": out["jobs"] if out else None,
                           "oom_kills": cap.oom_kills() - before,
                           "error": "" if out else proc.stderr.strip().splitlines()[-1:]}
            print(f"{label}: {runs[label]}", flush=True)

        build("auto-unmeasured")
        fixed = [int(j) for j in args.fixed.split(",")]
        for j in fixed:
            build(f"j{j}", "--jobs", str(j))
        build("auto")
        peak = json.loads(next((work / "cache" / "jobs").glob("*.json")).read_text())
    finally:
        engine.stop()
        shutil.rmtree(engine.root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        cap.stop()
    ok_fixed = {k: v["seconds"] for k, v in runs.items() if k.startswith("j") and v["ok"]}
    best = min(ok_fixed, key=ok_fixed.__getitem__)
    results = {
        "inputs": {**machine(), "source": args.source, "config": str(cfg), "cap_gib": args.cap_gib,
                   "fixed_jobs": fixed, "measured_peak_rss_mib": peak["peak_rss"] // 2**20},
        "runs": runs,
        "oom_kills_auto": runs["auto"]["oom_kills"] + runs["auto-unmeasured"]["oom_kills"],
        "best_fixed": best,
        "auto_over_best_fixed": round(runs["auto"]["seconds"] / ok_fixed[best], 3),
        "unmeasured_auto_over_best_fixed": round(runs["auto-unmeasured"]["seconds"]
                                                 / ok_fixed[best], 3),
    }
    path = write("jobs", results, args.out)
    print(f"OOM kills in automatic-jobs builds on a {args.cap_gib:g} GiB builder: "
          f"{results['oom_kills_auto']} (goal 0)")
    print(f"automatic (-j{runs['auto']['jobs']}) / best fixed ({best}): "
          f"{results['auto_over_best_fixed']} (goal <= 1.05); before any measurement "
          f"(-j{runs['auto-unmeasured']['jobs']}): {results['unmeasured_auto_over_best_fixed']}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
