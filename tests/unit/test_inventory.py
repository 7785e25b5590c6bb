"""`inv list`, `inv add-kernel` and `inv config` through the real program, on tiny trees."""
import json
from pathlib import Path

import pytest

from tests.conftest import make_tree

pytestmark = pytest.mark.unit

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_list_shows_series_arches_variants_and_deprecation(lk, tree):
    run = lk("list", "--kernel-dir", str(tree), "--json", env=NO_ENGINE)
    assert run.code == 0, run.err
    rows = json.loads(run.out)
    assert [(r["series"], r["arch"]) for r in rows] == [
        ("6.6.x", "amd64"), ("6.12.x", "arm64"), ("6.12.x", "amd64")]
    assert rows[1]["variants"] == ["rt"] and rows[0]["deprecated"]
    assert all(r["hash"] is None and r["built"] is None for r in rows)
    assert "inv fetch" in run.err  # the hash needs the source, and nothing needed the engine


def test_list_narrows_to_a_version_and_arch(lk, tree):
    run = lk("list", "--kernel-dir", str(tree), "--version", "6.12.117", "--arch", "aarch64",
             "--json", env=NO_ENGINE)
    rows = json.loads(run.out)
    assert [(r["version"], r["arch"]) for r in rows] == [("6.12.117", "arm64")]


def test_add_kernel_bumps_an_existing_series(lk, tree):
    run = lk("add-kernel", "--version", "6.12.60", "--kernel-dir", str(tree))
    assert run.code == 0, run.err
    assert run.out.strip() == str(tree / "6.12.x" / "build-args")
    assert "KERNEL_VERSION=6.12.60" in (tree / "6.12.x" / "build-args").read_text()
    assert "6.12.54 -> 6.12.60" in run.err


def test_add_kernel_starts_a_new_series_and_says_configs_need_kconfig(lk, tree):
    run = lk("add-kernel", "--version", "6.13.2", "--kernel-dir", str(tree))
    assert run.code == 0, run.err
    assert run.out.strip() == str(tree / "6.13.x")
    assert "inv kconfig --version 6.13.2 --arch x86_64" in run.err


@pytest.mark.parametrize("args,needle", [
    (["list", "--arch", "mips"], "unknown arch 'mips'"),
    (["list", "--version", "v6.12.54"], "malformed kernel version 'v6.12.54'"),
    (["list", "--version", "6.12.54; rm -rf ~"], "malformed kernel version"),
    (["list", "--version", "7.1.1"], "no series 7.1.x"),
    (["list", "--version", "6.6.60", "--arch", "arm64"], "has no config for arm64"),
    (["list", "--kernel-dir", "{tmp}/missing"], "does not exist"),
    (["list", "--kernel-dir", "{tmp}/empty"], "has no series"),
    (["add-kernel", "--version", "6.12"], "malformed kernel version '6.12'"),
    (["add-kernel", "--version", "5.4.1"], "no series earlier than 5.4.x"),
])
def test_bad_input_is_one_line_with_no_traceback_and_no_change(lk, tree, tmp_path, args,
                                                                needle):
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    before = snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--kernel-dir" not in argv:
        argv += ["--kernel-dir", str(tree)]
    run = lk(*argv, env=NO_ENGINE)
    assert run.code != 0 and run.out == ""
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("lkbuild: error: ") and needle in run.err_lines[0]
    assert snapshot(tmp_path) == before


def test_build_args_without_kernel_version_is_refused(lk, tmp_path):
    tree = make_tree(tmp_path / "k", {"6.12.x": {"build-args": "KERNEL_SERIES=6.12.x\n"}})
    run = lk("list", "--kernel-dir", str(tree), env=NO_ENGINE)
    assert run.code == 2 and "has no KERNEL_VERSION" in run.err_lines[-1]


@pytest.mark.parametrize("text,needle", [
    ("org: a\nregistry: b: c\n", "line 2"),
    ("kernel_dri: /x\n", "did you mean 'kernel_dir'"),
    ("jobs: many\n", "must be an integer"),
])
def test_a_bad_config_file_stops_every_task_with_its_name(lk, tmp_path, text, needle):
    cfg = tmp_path / "lkbuild.yaml"
    cfg.write_text(text)
    run = lk("config", env={"LKBUILD_CONFIG": str(cfg)})
    assert run.code == 2 and len(run.err_lines) == 1
    assert str(cfg) in run.err_lines[0] and needle in run.err_lines[0]


def test_config_shows_each_value_and_its_source(lk):
    run = lk("config", "--json", env={"LKBUILD_ORG": "myorg"})
    data = json.loads(run.out)
    assert data["org"] == {"value": "myorg", "source": "env LKBUILD_ORG"}
    assert data["jobs"]["source"] == "default"


def test_every_task_is_listed_with_a_one_line_help(lk):
    run = lk("--list")
    for name in ("config", "list", "add-kernel", "fetch", "doctor", "bootstrap-image",
                 "buildplainkernel", "builddebugkernel", "build", "kconfig", "vmtest",
                 "prune", "test"):
        assert f"  {name} " in run.out, name
