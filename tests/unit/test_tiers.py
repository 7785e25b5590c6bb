"""The test tiers and the hang guard (tests/conftest.py), run through a real pytest."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD, ROOT
from tests.run import Run

pytestmark = pytest.mark.unit

SHOW_GUARDS = '''
def pytest_collection_finish(session):
    for item in session.items:
        mark = item.get_closest_marker("timeout")
        print("GUARD", item.name, mark and mark.args[0])
'''


def pytest_run(tmp_path: Path, body: str, *args: str) -> Run:
    """pytest on one test file, with this project's conftest hooks and pytest settings."""
    (tmp_path / "test_it.py").write_text("import time\n\nimport pytest\n\n" + body)
    (tmp_path / "show_guards.py").write_text(SHOW_GUARDS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p",
         "tests.conftest", "-p", "show_guards", "--rootdir", str(tmp_path), "-q",
         "-p", "no:cacheprovider", *args, str(tmp_path / "test_it.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_a_hung_test_is_stopped_by_its_timeout_and_named(tmp_path):
    run = pytest_run(tmp_path, "@pytest.mark.unit\n@pytest.mark.timeout(2)\n"
                               "def test_waits_forever():\n    time.sleep(300)\n\n\n"
                               "@pytest.mark.unit\ndef test_after_it():\n    pass\n")
    assert run.code == 1, run.out + run.err
    assert "FAILED test_it.py::test_waits_forever - Failed: Timeout" in run.out, run.out
    assert "1 failed, 1 passed" in run.out  # the run went on past the hung test


def test_a_test_without_its_own_timeout_gets_its_tiers_guard(tmp_path):
    run = pytest_run(tmp_path, "pytestmark = pytest.mark.ci\n\n\n"
                               "def test_plain():\n    pass\n\n\n"
                               "@pytest.mark.timeout(5000)\ndef test_long():\n    pass\n",
                     "--collect-only")
    assert run.code == 0, run.out + run.err
    assert f"GUARD test_plain {HANG_GUARD['ci']}" in run.out
    assert "GUARD test_long 5000" in run.out


@pytest.mark.parametrize("marks,shown", [("", "no tier"), ("@pytest.mark.ci\n@pytest.mark.full\n",
                                                           "ci, full")])
def test_a_test_in_no_tier_or_in_two_is_refused_by_name(tmp_path, marks, shown):
    run = pytest_run(tmp_path, f"{marks}def test_untiered():\n    pass\n", "--collect-only")
    assert run.code != 0
    assert f"test_it.py::test_untiered: {shown}" in run.err, run.err
