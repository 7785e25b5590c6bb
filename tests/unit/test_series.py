import os
import shutil

import pytest

from recipes import arch
from recipes.errors import UserError
from recipes.series import (
    BuildInputs,
    KernelTree,
    bump_version,
    parse_build_args,
    parse_version,
    series_of,
    start_series,
)
from tests.conftest import make_tree

pytestmark = pytest.mark.unit

AMD = arch.resolve("amd64")
ARM = arch.resolve("arm64")


@pytest.mark.parametrize("text", ["6.12.54", "5.15.0", "6.1.117", "10.0.1"])
def test_full_versions_are_accepted(text):
    assert series_of(text) == ".".join(text.split(".")[:2]) + ".x"


@pytest.mark.parametrize("text", ["6.12", "v6.12.54", "6.12.x", "6.12.54; rm -rf ~", "",
                                  "6.12.54-rc1", "06.12.54", "6.12.54 ", "6..54", "6.12.54.1"])
def test_malformed_versions_are_refused(text):
    with pytest.raises(UserError) as info:
        parse_version(text)
    assert repr(text) in info.value.line()


def test_build_args_ignore_comments_and_blank_lines(tmp_path):
    path = tmp_path / "build-args"
    path.write_text("# series\n\nKERNEL_VERSION=6.12.54\nEXTRA = a=b\n")
    assert parse_build_args(path) == {"KERNEL_VERSION": "6.12.54", "EXTRA": "a=b"}


def test_malformed_build_args_line_names_file_and_line(tmp_path):
    path = tmp_path / "build-args"
    path.write_text("KERNEL_VERSION=6.12.54\nthis is not an arg\n")
    with pytest.raises(UserError, match="line 2"):
        parse_build_args(path)


def test_tree_reads_series_variants_arches_and_deprecation(tree):
    t = KernelTree(tree)
    assert t.names() == ["6.6.x", "6.12.x"]
    s = t.series["6.12.x"]
    assert s.version == "6.12.54"
    assert [a.name for a in s.arches()] == ["arm64", "amd64"]
    assert list(s.variants) == ["rt"]
    assert not s.deprecated and t.series["6.6.x"].deprecated
    assert [p.name for p in s.patches("rt")] == ["0001-a.patch", "0001-rt.patch"]


def test_any_version_of_an_existing_series_finds_it(tree):
    assert KernelTree(tree).for_version("6.12.117").name == "6.12.x"


def test_version_whose_series_has_no_dir_says_how_to_start_it(tree):
    with pytest.raises(UserError) as info:
        KernelTree(tree).for_version("6.13.2")
    assert "6.13.x" in info.value.message and "add-kernel --version 6.13.2" in info.value.hint


def test_missing_kernel_dir_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        KernelTree(tmp_path / "nope")


def test_kernel_dir_without_series_is_refused(tmp_path):
    (tmp_path / "k" / "docs").mkdir(parents=True)
    with pytest.raises(UserError, match="has no series"):
        KernelTree(tmp_path / "k")


def test_build_args_without_kernel_version_is_refused(tmp_path):
    make_tree(tmp_path / "k", {"6.12.x": {"build-args": "KERNEL_SERIES=6.12.x\n"}})
    with pytest.raises(UserError, match="no KERNEL_VERSION"):
        KernelTree(tmp_path / "k")


def test_kernel_version_outside_its_series_is_refused(tmp_path):
    make_tree(tmp_path / "k", {"6.12.x": {"build-args": "KERNEL_VERSION=6.6.1\n"}})
    with pytest.raises(UserError, match=r"not in series 6.12.x"):
        KernelTree(tmp_path / "k")


def test_series_without_config_for_the_arch_names_the_fix(tree):
    s = KernelTree(tree).series["6.6.x"]
    with pytest.raises(UserError) as info:
        s.config(ARM)
    assert "config-aarch64" in info.value.message and "amd64" in info.value.hint


def test_unknown_variant_lists_the_variants(tree):
    with pytest.raises(UserError) as info:
        KernelTree(tree).series["6.12.x"].dirs("debug")
    assert "'debug'" in info.value.message and info.value.hint == "variants: rt"


def inputs(path, **kw):
    t = KernelTree(path)
    kw.setdefault("source_sha256", "ab" * 32)
    return BuildInputs(t, t.series["6.12.x"], kw.pop("version", "6.12.54"),
                       kw.pop("arch", AMD), **kw)


def test_hash_is_stable_across_checkout_paths(tmp_path):
    a = make_tree(tmp_path / "one" / "kernel")
    b = make_tree(tmp_path / "two" / "deeper" / "kernel")
    assert inputs(a).digest() == inputs(b).digest()
    assert len(inputs(a).digest()) == 16


def test_hash_does_not_depend_on_file_creation_order(tmp_path):
    a = make_tree(tmp_path / "a")
    b = tmp_path / "b"
    files = sorted(p for p in a.rglob("*") if p.is_file())
    for path in reversed(files):
        target = b / path.relative_to(a)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert inputs(a).digest() == inputs(b).digest()


def test_hash_changes_with_the_executable_bit(tree):
    before = inputs(tree).digest()
    os.chmod(tree / "6.12.x" / "patches" / "0001-a.patch", 0o755)
    assert inputs(tree).digest() != before


@pytest.mark.parametrize("change", [
    lambda t: (t / "Dockerfile").write_text("FROM scratch\nRUN true\n"),
    lambda t: (t / "6.12.x" / "config-x86_64").write_text("CONFIG_MODULES=n\n"),
    lambda t: (t / "6.12.x" / "patches" / "0002-b.patch").write_text("x\n"),
    lambda t: (t / "6.12.x" / "build-args").write_text(
        "KERNEL_VERSION=6.12.54\nKERNEL_SERIES=6.12.x\nBUILD_IMAGE=other\n"),
    lambda t: (t / "scripts").mkdir() or (t / "scripts" / "helper.sh").write_text("x"),
])
def test_any_input_change_gives_a_new_hash(tree, change):
    before = inputs(tree).digest()
    change(tree)
    assert inputs(tree).digest() != before


def test_other_arches_configs_and_docs_do_not_change_the_hash(tree):
    before = inputs(tree).digest()
    (tree / "6.12.x" / "config-aarch64").write_text("CONFIG_OTHER=y\n")
    (tree / "README.md").write_text("docs\n")
    (tree / "6.6.x" / "config-x86_64").write_text("CONFIG_OTHER=y\n")
    assert inputs(tree).digest() == before


def test_arch_version_source_variant_debug_fragments_each_change_the_hash(tree, tmp_path):
    frag = tmp_path / "frag"
    frag.write_text("CONFIG_X=y\n")
    frag2 = tmp_path / "frag2"
    frag2.write_text("CONFIG_Y=y\n")
    base = inputs(tree).digest()
    variants = [
        inputs(tree, arch=ARM), inputs(tree, version="6.12.55"),
        inputs(tree, source_sha256="cd" * 32), inputs(tree, variant="rt"),
        inputs(tree, debug=True), inputs(tree, fragments=(frag,)),
        inputs(tree, config=frag), inputs(tree, extra_args={"MAKE_JOBS": "3"}),
    ]
    digests = [v.digest() for v in variants]
    assert base not in digests and len(set(digests)) == len(digests)
    assert inputs(tree, fragments=(frag, frag2)).digest() != \
        inputs(tree, fragments=(frag2, frag)).digest()


def test_version_flag_overrides_kernel_version_in_build_args(tree):
    assert inputs(tree, version="6.12.117").build_args()["KERNEL_VERSION"] == "6.12.117"
    assert inputs(tree, debug=True).build_args()["EXTRA"] == "-dbg"


def test_bump_rewrites_only_the_version_line(tree):
    t = KernelTree(tree)
    assert bump_version(t.series["6.12.x"], "6.12.60")
    text = (tree / "6.12.x" / "build-args").read_text()
    assert "KERNEL_VERSION=6.12.60\n" in text and "BUILD_IMAGE=linuxkit/alpine:35b" in text
    assert not bump_version(KernelTree(tree).series["6.12.x"], "6.12.60")
    assert not list((tree / "6.12.x").glob(".*tmp"))


def test_new_series_starts_from_the_nearest_earlier_one(tree):
    target, base = start_series(KernelTree(tree), "6.13.1")
    assert base.name == "6.12.x" and target == tree / "6.13.x"
    assert parse_build_args(target / "build-args")["KERNEL_VERSION"] == "6.13.1"
    assert parse_build_args(target / "build-args")["KERNEL_SERIES"] == "6.13.x"
    assert sorted(p.name for p in target.iterdir()) == ["build-args", "config-aarch64",
                                                        "config-x86_64"]
    assert KernelTree(tree).for_version("6.13.1").version == "6.13.1"


def test_new_series_older_than_every_series_is_refused(tree):
    with pytest.raises(UserError, match="no series earlier"):
        start_series(KernelTree(tree), "5.4.1")
    assert not (tree / "5.4.x").exists()
