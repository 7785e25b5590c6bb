"""`inv bench`: every benchmark in one run, then the goals table from their JSON.

Each benchmark runs as its own process, one after another (they would skew each other's
timings), and writes bench/results/<name>.json; this writes bench/results/bench.json with
every figure against its goal.

usage: python bench/run.py [--quick] [--only kernel_build,module_build,jobs,remote,full_config]
                           [--report]
"""
from __future__ import annotations

import argparse
import json
import operator
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, ROOT, machine, write

BENCHES = ("kernel_build", "module_build", "jobs", "remote", "full_config")
FULL_ONLY = {"full_config"}  # the shipped configs themselves: nothing to run with --quick
LINK = "1000 Mbit/s link"
# figure, benchmark, path in its JSON, comparison, goal
GOALS: tuple[tuple[str, str, tuple[str, ...], str, float], ...] = (
    ("cold buildplainkernel / bare make -jN", "kernel_build", ("ratios", "cold_over_bare_make"),
     "<=", 1.10),
    ("rebuild after a one-symbol config change / cold", "kernel_build",
     ("ratios", "rebuild_over_cold"), "<=", 0.15),
    ("no-op build when the image exists (s)", "kernel_build", ("seconds", "noop"), "<=", 2),
    ("arm64 cross-built / x86_64 native", "kernel_build",
     ("ratios", "arm64_cross_over_x86_64_native"), "<=", 1.15),
    ("OOM kills, automatic jobs on a capped builder", "jobs", ("oom_kills_auto",), "<=", 0),
    ("automatic jobs / best fixed -j", "jobs", ("auto_over_best_fixed",), "<=", 1.05),
    *(row for path in ("loopback", LINK, "100 Mbit/s link") for row in (
        (f"cold image transfer / ssh docker save | docker load, {path}", "remote",
         ("transfer", path, "cold_vs_hand"), "<=", 1.0),
        (f"one changed layer / ssh docker save | docker load, {path}", "remote",
         ("transfer", path, "one_layer_vs_hand"), "<=", 0.3),
        (f"image transfer / raw ssh cat, {path} (the wire, for reference)", "remote",
         ("transfer", path, "transfer_vs_openssh_cat"), "", 0.0))),
    ("buildmodule hello - bare make M= (s)", "module_build",
     ("buildmodule_seconds_over_bare",), "<=", 5),
    ("buildmodule zfs / bare configure + make", "module_build",
     ("ratios", "buildmodule_zfs_over_bare"), "<=", 1.10),
    *((f"{label} {arch} shipped config, cold build (s; for reference)", "full_config",
       ("configs", f"{label} {arch}", "seconds", "cold"), "", 0.0)
      for label in ("after", "before") for arch in ("arm64", "amd64")),
)
COMPARE = {"<=": operator.le, ">=": operator.ge}


def figure(results: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def table(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name, bench, path, op, goal in GOALS:
        value = figure(found.get(bench, {}), path)
        met = None if value is None or not op else COMPARE[op](value, goal)
        rows.append({"figure": name, "goal": f"{op} {goal:g}" if op else "-",
                     "measured": value, "met": met})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small configs")
    parser.add_argument("--only", default=",".join(BENCHES))
    parser.add_argument("--report", action="store_true",
                        help="run nothing: the table from the results already written")
    args = parser.parse_args()
    chosen = [b for b in args.only.split(",") if b]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    found: dict[str, dict[str, Any]] = {}
    failed = []
    for bench in chosen:
        if args.report:
            done = RESULTS / f"{bench}.json"
            if done.is_file():
                found[bench] = json.loads(done.read_text())
            continue
        if args.quick and bench in FULL_ONLY:
            print(f"== {bench}: skipped (--quick; it builds the shipped configs)", flush=True)
            continue
        print(f"== {bench}", flush=True)
        argv = [sys.executable, str(ROOT / "bench" / f"{bench}.py")] + \
            (["--quick"] if args.quick else [])
        if subprocess.run(argv, cwd=ROOT).returncode != 0:
            failed.append(bench)
            continue
        found[bench] = json.loads((RESULTS / f"{bench}.json").read_text())
    rows = table(found)
    path = write("bench", {"machine": machine(), "quick": args.quick, "goals": rows,
                           "results": found})
    width = max(len(r["figure"]) for r in rows)
    for r in rows:
        state = {True: "met", False: "MISSED", None: "not run"}[r["met"]]
        print(f"{r['figure']:<{width}}  {r['goal']:>7}  {r['measured']!s:>8}  {state}")
    print(f"written to {path}")
    if failed:
        sys.exit(f"benchmark {', '.join(failed)} failed")


if __name__ == "__main__":
    main()
