"""Guards on what lkbuild may run with more rights than a build needs.

A privileged container on the user's engine can load modules into its kernel (on Docker
Desktop, into the VM's): lkbuild starts one only in `inv detect --privileged`, which says why
before it does. These read the source, so a new privileged run anywhere else fails here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {("recipes/desktop.py", "run_capture")}
"""Where a container may run privileged: the detect capture that reads /etc/linuxkit.yml."""


STARTS = {"run", "create", "container", "start"}
"""Names of the calls that make a container (the SDK's containers.run/create, Engine's)."""


def privileged_calls() -> set[tuple[str, str]]:
    """(file, enclosing function) of every container-making call passing privileged= that is
    not False, or a pid or network namespace of the host."""
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "recipes").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                name = getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    if isinstance(node, ast.Call) else ""
                if name in STARTS and any(
                        kw.arg in ("privileged", "pid_mode", "network_mode")
                        and not (isinstance(kw.value, ast.Constant)
                                 and kw.value.value in (False, None, "none"))
                        for kw in node.keywords):
                    found.add((path.relative_to(ROOT).as_posix(), func.name))
    return found


def test_only_the_privileged_detect_capture_runs_a_privileged_container() -> None:
    assert privileged_calls() == ALLOWED


def test_the_privileged_capture_says_why_before_it_runs() -> None:
    source = (ROOT / "recipes" / "desktop.py").read_text()
    detect = source[source.index("def detect("):]
    said, ran = detect.index("--privileged: reading /etc/linuxkit.yml"), \
        detect.index("run_capture(")
    assert said < ran


def test_no_dockerfile_or_build_script_asks_for_more_rights() -> None:
    """BuildKit's insecure entitlements and host networking stay off in every build."""
    risky = re.compile(r"--security=insecure|--network=host|network\.host|security\.insecure|"
                       r"--allow[ =]")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in [*ROOT.glob("kernel/**/*"),
                                                   *ROOT.glob("module/**/*"),
                                                   *ROOT.glob("recipes/*.py")]
            if p.is_file() and p.suffix not in (".pyc",)
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if risky.search(line)]
    assert hits == []
