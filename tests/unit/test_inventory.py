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


def test_list_says_which_in_tree_recipes_each_series_config_has(lk, tree):
    config = tree / "6.12.x" / "config-aarch64"
    config.write_text(config.read_text() + "CONFIG_IP_SCTP=y\nCONFIG_WIREGUARD=m\n")
    run = lk("list", "--kernel-dir", str(tree), "--version", "6.12.117", "--json",
             env=NO_ENGINE)
    assert run.code == 0, run.err
    arm64, amd64 = json.loads(run.out)
    assert arm64["in_tree_modules"] == {"openvswitch": "missing", "sctp": "built-in",
                                        "wireguard": "module"}
    assert set(amd64["in_tree_modules"].values()) == {"missing"}


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


KERNEL_LABELS = {"org.lkbuild.kernel.hash": "40f0378942681923",
                 "org.lkbuild.kernel.version": "6.12.118", "org.lkbuild.kernel.arch": "amd64",
                 "org.lkbuild.kernel.release": "6.12.118-linuxkit"}
MODULE_LABELS = {"org.lkbuild.module.hash": "b20d4cd7ee61", "org.lkbuild.module.name": "hello",
                 "org.lkbuild.module.version": "1.0", "org.lkbuild.module.arch": "amd64",
                 "org.lkbuild.module.kernel.release": "6.12.118-linuxkit",
                 "org.lkbuild.module.kernel.image":
                     "lkbuild/kernel:6.12.118-40f0378942681923-amd64"}


def entry(image_id: str, tags: list[str], labels: dict, created: int = 1000) -> dict:
    return {"Id": f"sha256:{image_id}", "RepoTags": tags, "Labels": labels, "Size": 78_600_000,
            "Created": created}


def test_local_images_are_told_apart_by_their_labels_and_lkbuilds_tag_names():
    from recipes.inventory import image_rows

    rows = image_rows([
        entry("k", ["lkbuild/kernel:6.12.118-amd64",
                    "lkbuild/kernel:6.12.118-40f0378942681923-amd64"], KERNEL_LABELS, created=1004),
        entry("b", ["lkbuild/kernel:6.12.118-builder-amd64"], KERNEL_LABELS, created=1003),
        entry("m", ["lkbuild/hello:1.0-6.12.118-linuxkit-amd64"], MODULE_LABELS, created=1002),
        entry("l", ["lkbuild/hello:1.0-6.12.118-linuxkit-loader-amd64"], MODULE_LABELS,
              created=1001),
        entry("old", ["<none>:<none>"], KERNEL_LABELS, created=1005),  # its tags moved on
    ], current={"40f0378942681923"}, now=1000 + 3600)
    assert [(r["kind"], r["name"], r["version"], r["hash"]) for r in rows] == [
        ("kernel", "lkbuild/kernel", "6.12.118", "40f0378942681923"),
        ("builder", "lkbuild/kernel", "6.12.118", "40f0378942681923"),
        ("module", "lkbuild/hello", "1.0", "b20d4cd7ee61"),
        ("loader", "lkbuild/hello", "1.0", "b20d4cd7ee61")]
    assert all(r["current"] for r in rows)  # the module was built against the current kernel
    assert rows[0]["age_s"] == 3596 and rows[0]["release"] == "6.12.118-linuxkit"
    assert not image_rows([entry("k", ["x/kernel:1"], KERNEL_LABELS)], current=set())[0]["current"]


def test_a_series_row_without_a_hash_is_none_only_when_no_kernel_of_it_is_here():
    from recipes.inventory import settle_built

    rows = [{"version": "6.12.118", "arch": "amd64", "built": None},
            {"version": "6.12.54", "arch": "amd64", "built": None},
            {"version": "6.12.54", "arch": "arm64", "built": True}]
    settle_built(rows, [{"kind": "kernel", "version": "6.12.118", "arch": "amd64"},
                        {"kind": "module", "version": "6.12.54", "arch": "amd64"}])
    assert [r["built"] for r in rows] == [None, False, True]
    unreachable = [{"version": "6.12.54", "arch": "amd64", "built": None}]
    settle_built(unreachable, None)
    assert unreachable[0]["built"] is None


@pytest.mark.parametrize("n,shown", [(512, "512 B"), (4_828, "4.8 kB"), (78_600_000, "78.6 MB"),
                                     (1_500_000_000, "1.5 GB")])
def test_sizes_read_as_docker_shows_them(n, shown):
    from recipes.ui import size

    assert size(n) == shown


@pytest.mark.parametrize("s,shown", [(5, "just now"), (299, "4 min ago"), (7200, "2 h ago"),
                                     (200_000, "2 d ago")])
def test_ages_read_in_their_largest_whole_unit(s, shown):
    from recipes.ui import age

    assert age(s) == shown
