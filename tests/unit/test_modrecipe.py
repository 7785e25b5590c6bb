"""modrecipe.py: the recipe schema, loading, module dirs, resolving --module, source URLs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from recipes import modrecipe
from recipes.errors import UserError
from recipes.modrecipe import Module
from recipes.settings import ROOT, Settings

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef" * 4
GOOD = {"name": "wg", "version": "1.0.2",
        "source": {"url": "https://example.org/wg-1.0.2.tar.xz", "sha256": SHA}}


def recipe(root: Path, name: str, text: str) -> Path:
    """module/<name>/recipe.yml with `text`."""
    path = root / name / "recipe.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def settings_for(module_dir: Path) -> Settings:
    return Settings(flags={"module_dir": str(module_dir)}, files=[], env={})


def makefile_dir(path: Path, text: str = "all:\n\t$(MAKE) -C $(KERNELDIR) M=$(CURDIR)\n") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Makefile").write_text(text)
    return path


# --- validate() --------------------------------------------------------------------------------

def test_a_complete_valid_recipe_has_no_schema_errors():
    data = {**GOOD, "description": "WireGuard", "kernel_config": {"require": ["CONFIG_NET"],
                                                                  "forbid": ["CONFIG_X"]},
            "configure": ["--x"], "build": ["make"], "modules": ["wg"], "tools": ["bin/wg"]}
    assert modrecipe.validate(data) == []


def test_an_unknown_field_is_named_with_the_known_ones():
    errors = modrecipe.validate({**GOOD, "colour": "blue"})
    assert len(errors) == 1
    assert errors[0].startswith("colour: unknown field (known: name, version, description,")


def test_an_unknown_field_inside_a_map_carries_its_path():
    errors = modrecipe.validate({**GOOD, "source": {**GOOD["source"], "mirror": "x"}})
    assert len(errors) == 1 and errors[0].startswith("source.mirror: unknown field")


def test_missing_required_fields_are_each_named():
    data = {"source": {"dir": "."}}
    assert modrecipe.validate(data) == ["name: required"]
    assert modrecipe.kind_errors(data) == ["version: required with source"]
    assert modrecipe.kind_errors({"name": "x"}) == [
        "source: give exactly one of source and in_tree"]


def test_a_null_required_field_counts_as_missing():
    assert modrecipe.validate({**GOOD, "name": None}) == ["name: required"]
    assert modrecipe.kind_errors({**GOOD, "version": None}) == ["version: required with source"]


def test_a_required_field_inside_a_nested_map_is_named_with_its_path():
    errors = modrecipe.validate({**GOOD, "source": {"debian": {"package": "zfs-dkms"},
                                                    "sha256": SHA}})
    assert errors == ["source.debian.version: required"]


@pytest.mark.parametrize("field,value,expected", [
    ("source", "https://x/y.tar", "source: must be a map, got str"),
    ("modules", "zfs", "modules: must be a list, got str"),
    ("name", True, "name: must be a str, got bool"),
    ("name", ["wg"], "name: must be a str, got list"),
    ("description", {"a": 1}, "description: must be a str, got dict"),
])
def test_a_value_of_the_wrong_type_is_refused(field, value, expected):
    assert modrecipe.validate({**GOOD, field: value}) == [expected]


def test_a_number_is_accepted_where_a_string_is_wanted():
    assert modrecipe.validate({**GOOD, "version": 2}) == []


def test_a_list_item_that_is_not_a_string_is_named_by_its_index():
    assert modrecipe.validate({**GOOD, "tools": ["bin/wg", {"x": 1}]}) == [
        "tools[1]: must be a string, got dict"]


def test_a_pattern_mismatch_quotes_the_value_and_the_pattern():
    errors = modrecipe.validate({**GOOD, "name": "Wire Guard"})
    assert errors == ["name: 'Wire Guard' does not match [a-z0-9][a-z0-9_.-]{0,63}"]


def test_a_pattern_must_match_the_whole_value():
    errors = modrecipe.validate({**GOOD, "source": {**GOOD["source"], "sha256": SHA + "00"}})
    assert len(errors) == 1 and errors[0].startswith("source.sha256:")


def test_list_items_are_checked_against_the_pattern_one_by_one():
    errors = modrecipe.validate({**GOOD, "kernel_config": {"require": ["CONFIG_A", "B", "C"]}})
    assert errors == ["kernel_config.require[1]: 'B' does not match CONFIG_[A-Za-z0-9_]+",
                      "kernel_config.require[2]: 'C' does not match CONFIG_[A-Za-z0-9_]+"]


def test_an_enum_mismatch_lists_the_allowed_values():
    source = {"debian": {"package": "zfs-dkms", "version": "2.3.2-1", "component": "universe"},
              "sha256": SHA}
    assert modrecipe.validate({**GOOD, "source": source}) == [
        "source.debian.component: 'universe' is not one of main, contrib, non-free, "
        "non-free-firmware"]


def test_a_source_with_none_of_url_dir_debian_is_refused():
    assert modrecipe.validate({**GOOD, "source": {"sha256": SHA}}) == [
        "source: give exactly one of url, dir, debian"]


def test_a_source_with_two_of_url_dir_debian_names_both():
    assert modrecipe.validate({**GOOD, "source": {"url": "https://x/a.tar", "dir": "."}}) == [
        "source: give exactly one of url, dir, debian (got url, dir)"]


def test_a_recipe_that_is_not_a_mapping_is_one_error():
    assert modrecipe.validate(["name", "wg"]) == ["recipe: must be a mapping"]
    assert modrecipe.validate(None) == ["recipe: must be a mapping"]


def test_errors_at_every_level_are_reported_together():
    errors = modrecipe.validate({
        "name": "WG", "extra": 1, "build": "make",
        "source": {"debian": {"package": "Z", "version": "1", "component": "x", "foo": 1}},
        "kernel_config": {"require": ["NET"]}})
    paths = sorted(e.split(":", 1)[0] for e in errors)
    assert paths == ["build", "extra", "kernel_config.require[0]", "name",
                     "source.debian.component", "source.debian.foo", "source.debian.package"]


# --- cross_field_errors() ----------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    {"url": "https://x/a.tar.gz"},
    {"debian": {"package": "zfs-dkms", "version": "1"}},
])
def test_a_download_without_a_sha256_is_refused(source):
    errors = modrecipe.cross_field_errors({"source": source})
    assert len(errors) == 1 and errors[0].startswith("source.sha256: required with url and debian")


@pytest.mark.parametrize("extra", [{"sha256": SHA}, {"subdir": "src"}])
def test_a_dir_source_takes_no_pin_or_subdir(extra):
    assert modrecipe.cross_field_errors({"source": {"dir": ".", **extra}}) == [
        "source.dir: takes no sha256 or subdir"]


def test_pinned_downloads_and_plain_dirs_pass_the_cross_field_rules():
    assert modrecipe.cross_field_errors(GOOD) == []
    assert modrecipe.cross_field_errors({"source": {"dir": "."}}) == []
    assert modrecipe.cross_field_errors({"source": "not a map"}) == []


# --- load() ------------------------------------------------------------------------------------

def test_a_valid_recipe_loads_into_a_module(tmp_path):
    path = recipe(tmp_path, "wg", f"""\
name: wg
version: 1.0.2
description: WireGuard
source: {{url: "https://example.org/wg.tar.xz", sha256: "{SHA}", subdir: wg-1.0.2/src}}
kernel_config: {{require: [CONFIG_NET], forbid: [CONFIG_X]}}
configure: [--a, 2]
build: [make -C src]
modules: [wireguard]
tools: [usr/bin/wg]
""")
    m = modrecipe.load(path)
    assert (m.name, m.version, m.description) == ("wg", "1.0.2", "WireGuard")
    assert m.base == path.parent.resolve() and m.recipe == path
    assert m.require == ("CONFIG_NET",) and m.forbid == ("CONFIG_X",)
    assert m.configure == ("--a", "2") and m.build == ("make -C src",)
    assert m.modules == ("wireguard",) and m.tools == ("usr/bin/wg",)
    assert m.source["subdir"] == "wg-1.0.2/src" and m.source_dir is None


def test_a_recipe_without_configure_has_none_but_an_empty_list_is_kept(tmp_path):
    base = "name: wg\nversion: '1'\nsource: {dir: .}\n"
    assert modrecipe.load(recipe(tmp_path, "wg", base)).configure is None
    assert modrecipe.load(recipe(tmp_path, "wg", base + "configure: []\n")).configure == ()


def test_a_numeric_version_in_yaml_is_kept_as_text(tmp_path):
    m = modrecipe.load(recipe(tmp_path, "wg", "name: wg\nversion: 1.0\nsource: {dir: .}\n"))
    assert m.version == "1.0"


def test_a_dir_recipe_resolves_its_source_dir_against_the_recipe(tmp_path):
    (tmp_path / "wg" / "src").mkdir(parents=True)
    m = modrecipe.load(recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource: {dir: src}\n"))
    assert m.source_dir == (tmp_path / "wg" / "src").resolve()


def test_a_dir_recipe_whose_dir_is_missing_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"source dir .*nope does not exist"):
        modrecipe.load(recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource: {dir: nope}\n"))


def test_every_error_of_a_bad_recipe_is_in_one_line(tmp_path):
    path = recipe(tmp_path, "wg", "name: wg\nversion: '1 0'\ncolour: red\n"
                                  "source: {url: 'https://x/a.tar'}\nmodules: wg\n")
    with pytest.raises(UserError) as info:
        modrecipe.load(path)
    line = info.value.line()
    assert "\n" not in line and line.startswith(f"lkbuild: error: recipe {path} has 4 error(s): ")
    for part in ("version: '1 0' does not match", "colour: unknown field",
                 "modules: must be a list", "source.sha256: required"):
        assert part in line
    assert str(ROOT / "module" / "README.md") in info.value.hint


def test_a_recipe_named_unlike_its_directory_is_refused(tmp_path):
    path = recipe(tmp_path, "wireguard", "name: wg\nversion: '1'\nsource: {dir: .}\n")
    with pytest.raises(UserError) as info:
        modrecipe.load(path)
    assert "name: 'wg' differs from its directory 'wireguard'" in info.value.message


def test_bad_yaml_is_refused_with_its_line_number(tmp_path):
    path = recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource:\n  dir: .\n   bad: [\n")
    with pytest.raises(UserError) as info:
        modrecipe.load(path)
    assert info.value.message.startswith(f"bad YAML in recipe {path} line 5: ")


def test_an_unreadable_recipe_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read recipe"):
        modrecipe.load(tmp_path / "wg" / "recipe.yml")


@pytest.mark.parametrize("name", ["hello", "zfs"])
def test_the_shipped_recipes_load_without_errors(name, monkeypatch):
    monkeypatch.delenv("LKBUILD_MODULE_DIR", raising=False)
    module_dir = Settings(files=[]).module_dir
    assert Path(module_dir) == ROOT / "module"
    m = modrecipe.load(Path(module_dir) / name / "recipe.yml")
    assert m.name == name and "CONFIG_MODULES" in m.require and m.modules


def test_the_shipped_hello_builds_by_its_makefile_and_zfs_by_its_steps(monkeypatch):
    monkeypatch.delenv("LKBUILD_MODULE_DIR", raising=False)
    s = Settings(files=[])
    assert modrecipe.build_mode_or_steps(modrecipe.resolve(s, "hello")) == "make"
    assert modrecipe.build_mode_or_steps(modrecipe.resolve(s, "zfs")) == "steps"


# --- known(), looks_like_path() ----------------------------------------------------------------

def test_known_lists_only_dirs_with_a_recipe_in_order(tmp_path):
    for name in ("zfs", "hello", "wg"):
        recipe(tmp_path, name, "x")
    (tmp_path / "notes").mkdir()
    (tmp_path / "README.md").write_text("x")
    assert modrecipe.known(tmp_path) == ["hello", "wg", "zfs"]


def test_known_of_a_missing_module_dir_is_empty(tmp_path):
    assert modrecipe.known(tmp_path / "nope") == []


@pytest.mark.parametrize("spec", ["./hello", "../m", "~/m", "/abs/m", "a/b", ".", ".hidden"])
def test_specs_with_a_slash_or_a_leading_dot_or_tilde_are_paths(spec):
    assert modrecipe.looks_like_path(spec)


@pytest.mark.parametrize("spec", ["hello", "zfs", "wire-guard", "a.b", "x~"])
def test_bare_names_are_not_paths(spec):
    assert not modrecipe.looks_like_path(spec)


# --- build_mode(), path_version() --------------------------------------------------------------

def test_a_makefile_with_rules_is_built_with_make(tmp_path):
    makefile_dir(tmp_path, "obj-m := hello.o\nKERNELDIR ?= /k\n\nall:\n\t$(MAKE) -C $(KERNELDIR)\n")
    assert modrecipe.build_mode(tmp_path) == "make"


def test_a_kbuild_style_makefile_with_a_default_rule_is_built_with_make(tmp_path):
    makefile_dir(tmp_path, "ifneq ($(KERNELRELEASE),)\nobj-m := x.o\nelse\n"
                           "default:\n\t$(MAKE) -C $(KDIR) M=$$PWD\nendif\n")
    assert modrecipe.build_mode(tmp_path) == "make"


def test_a_bare_obj_m_makefile_is_built_with_kbuild(tmp_path):
    makefile_dir(tmp_path, "obj-m := hello.o\nhello-objs := a.o b.o\n"
                           "ccflags-y += -I$(src)/include -DX=1\nKVER ?= $(shell uname -r)\n"
                           "# usage: make -C /k M=$PWD\n")
    assert modrecipe.build_mode(tmp_path) == "kbuild"


def test_a_posix_simple_assignment_is_not_a_rule(tmp_path):
    makefile_dir(tmp_path, "obj-m ::= hello.o\n")
    assert modrecipe.build_mode(tmp_path) == "kbuild"


def test_a_dir_with_only_a_kbuild_file_is_built_with_kbuild(tmp_path):
    (tmp_path / "Kbuild").write_text("obj-m := hello.o\n")
    assert modrecipe.build_mode(tmp_path) == "kbuild"


@pytest.mark.parametrize("name", ["GNUmakefile", "makefile"])
def test_other_makefile_spellings_count(tmp_path, name):
    (tmp_path / name).write_text("all:\n\ttrue\n")
    assert modrecipe.build_mode(tmp_path) == "make"


def test_a_dir_without_makefile_or_kbuild_is_refused_with_the_fix(tmp_path):
    (tmp_path / "hello.c").write_text("")
    with pytest.raises(UserError) as info:
        modrecipe.build_mode(tmp_path)
    assert f"module dir {tmp_path} has no Makefile" == info.value.message
    assert "module/hello" in info.value.hint


def test_the_version_of_a_plain_dir_comes_from_module_version(tmp_path):
    (tmp_path / "a.c").write_text("int x;\n")
    (tmp_path / "b.c").write_text('MODULE_LICENSE("GPL");\nMODULE_VERSION( "2.1.0-rc1" );\n')
    assert modrecipe.path_version(tmp_path) == "2.1.0-rc1"


def test_a_plain_dir_without_module_version_is_version_0(tmp_path):
    (tmp_path / "a.c").write_text('MODULE_VERSION(VERSION);\n')
    (tmp_path / "a.h").write_text('MODULE_VERSION("9");\n')
    assert modrecipe.path_version(tmp_path) == "0"


def test_the_first_source_in_name_order_gives_the_version(tmp_path):
    (tmp_path / "z.c").write_text('MODULE_VERSION("2");\n')
    (tmp_path / "m.c").write_text('MODULE_VERSION("1");\n')
    assert modrecipe.path_version(tmp_path) == "1"


# --- resolve() ---------------------------------------------------------------------------------

def test_an_unknown_name_lists_the_known_modules(tmp_path):
    recipe(tmp_path, "zfs", "x")
    recipe(tmp_path, "hello", "x")
    with pytest.raises(UserError) as info:
        modrecipe.resolve(settings_for(tmp_path), "wireguard")
    assert info.value.message == "unknown module 'wireguard'"
    assert info.value.hint.startswith(f"known modules: hello, zfs (in {tmp_path})")


def test_an_unknown_name_in_an_empty_module_dir_says_none(tmp_path):
    with pytest.raises(UserError) as info:
        modrecipe.resolve(settings_for(tmp_path / "empty"), "wg")
    assert info.value.hint.startswith("known modules: none")


def test_no_module_at_all_is_refused(tmp_path):
    with pytest.raises(UserError, match="--module is required"):
        modrecipe.resolve(settings_for(tmp_path), "  ")


def test_a_name_finds_its_recipe_in_the_module_dir(tmp_path):
    recipe(tmp_path, "wg", f"name: wg\nversion: '1.0'\nsource: {{url: 'https://x/a.tar', "
                           f"sha256: '{SHA}'}}\n")
    m = modrecipe.resolve(settings_for(tmp_path), "wg")
    assert (m.name, m.version, m.recipe) == ("wg", "1.0", tmp_path / "wg" / "recipe.yml")


def test_a_path_to_a_dir_with_a_makefile_is_a_module_named_after_it(tmp_path):
    d = makefile_dir(tmp_path / "My Module")
    (d / "m.c").write_text('MODULE_VERSION("3.1");\n')
    m = modrecipe.resolve(settings_for(tmp_path / "none"), str(d))
    assert (m.name, m.version, m.recipe, m.base) == ("my-module", "3.1", None, d.resolve())
    assert m.source_dir == d.resolve()


def test_a_relative_path_is_taken_from_the_working_dir(tmp_path, monkeypatch):
    makefile_dir(tmp_path / "mymod")
    monkeypatch.chdir(tmp_path)
    assert modrecipe.resolve(settings_for(tmp_path / "none"), "./mymod").base == \
        (tmp_path / "mymod").resolve()


def test_a_path_to_a_dir_with_a_recipe_loads_the_recipe(tmp_path):
    recipe(tmp_path, "wg", "name: wg\nversion: '7'\nsource: {dir: .}\n")
    (tmp_path / "wg" / "Makefile").write_text("all:\n\ttrue\n")
    m = modrecipe.resolve(settings_for(tmp_path / "none"), str(tmp_path / "wg"))
    assert (m.version, m.recipe) == ("7", tmp_path / "wg" / "recipe.yml")


def test_a_path_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(UserError) as info:
        modrecipe.resolve(settings_for(tmp_path), str(tmp_path / "nope"))
    assert info.value.message == f"module dir {tmp_path / 'nope'} does not exist"


def test_a_path_dir_without_a_makefile_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="has no Makefile"):
        modrecipe.resolve(settings_for(tmp_path), str(tmp_path / "m"))


def test_a_dir_recipe_without_steps_needs_a_makefile(tmp_path):
    recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource: {dir: .}\n")
    with pytest.raises(UserError, match="has no Makefile"):
        modrecipe.resolve(settings_for(tmp_path), "wg")


def test_a_version_other_than_the_recipes_is_refused(tmp_path):
    recipe(tmp_path, "wg", "name: wg\nversion: '1.0'\nsource: {dir: .}\n")
    (tmp_path / "wg" / "Makefile").write_text("all:\n\ttrue\n")
    s = settings_for(tmp_path)
    assert modrecipe.resolve(s, "wg", "1.0").version == "1.0"
    with pytest.raises(UserError) as info:
        modrecipe.resolve(s, "wg", "1.1")
    assert info.value.message == "module wg is version 1.0, not 1.1"
    assert str(tmp_path / "wg" / "recipe.yml") in info.value.hint


def test_a_version_other_than_a_plain_dirs_is_refused(tmp_path):
    d = makefile_dir(tmp_path / "m")
    with pytest.raises(UserError, match="module m is version 0, not 2"):
        modrecipe.resolve(settings_for(tmp_path), str(d), "2")


def test_a_name_made_from_a_dir_name_is_a_valid_module_name(tmp_path):
    d = makefile_dir(tmp_path / "_private_")
    name = modrecipe.resolve(settings_for(tmp_path), str(d)).name
    assert modrecipe.NAME_RE.fullmatch(name) and name[-1].isalnum()


# --- source URLs -------------------------------------------------------------------------------

def test_a_debian_package_lives_under_the_first_letter_of_its_source():
    url = modrecipe.debian_url("http://deb.debian.org/debian/", {
        "package": "zfs-dkms", "source_package": "zfs-linux", "version": "2.3.2-2~bpo12+2",
        "component": "contrib"})
    assert url == ("http://deb.debian.org/debian/pool/contrib/z/zfs-linux/"
                   "zfs-dkms_2.3.2-2~bpo12+2_all.deb")


@pytest.mark.parametrize("source,prefix", [("libfoo", "libf"), ("libzstd", "libz"),
                                           ("lirc", "l"), ("li", "l"), ("glibc", "g")])
def test_lib_sources_are_pooled_under_four_letters_and_others_under_one(source, prefix):
    url = modrecipe.debian_url("http://m", {"package": source + "-dev", "source_package": source,
                                            "version": "1"})
    assert url == f"http://m/pool/main/{prefix}/{source}/{source}-dev_1_all.deb"


def test_the_package_is_its_own_source_when_none_is_given():
    assert modrecipe.debian_url("http://m", {"package": "libfoo1", "version": "1.0-1",
                                             "arch": "arm64"}) == \
        "http://m/pool/main/libf/libfoo1/libfoo1_1.0-1_arm64.deb"


@pytest.mark.parametrize("version", ["1:2.0-3", "12:2.0-3"])
def test_the_epoch_is_not_part_of_a_debian_file_name(version):
    url = modrecipe.debian_url("http://m", {"package": "x", "version": version})
    assert url.endswith("/x_2.0-3_all.deb")


def recipe_module(source: dict) -> Module:
    return Module("wg", "1", Path("/m"), recipe=Path("/m/recipe.yml"), source=source)


def test_a_url_source_has_the_debian_mirror_filled_in():
    m = recipe_module({"url": "{debian_mirror}/pool/main/w/wg/wg_1.orig.tar.xz", "sha256": SHA})
    assert modrecipe.source_url(m, "http://mirror.example/debian/") == \
        "http://mirror.example/debian/pool/main/w/wg/wg_1.orig.tar.xz"


def test_a_plain_url_source_is_used_as_it_is():
    m = recipe_module({"url": "https://example.org/wg.tar.xz"})
    assert modrecipe.source_url(m, "http://mirror") == "https://example.org/wg.tar.xz"


def test_a_debian_source_is_a_pool_url_on_the_mirror_and_a_dir_has_none():
    m = recipe_module({"debian": {"package": "wg", "version": "1"}})
    assert modrecipe.source_url(m, "http://mirror/") == "http://mirror/pool/main/w/wg/wg_1_all.deb"
    assert modrecipe.source_url(recipe_module({"dir": "."}), "http://mirror") == ""


def test_a_recipe_may_use_the_debian_mirror_placeholder_in_its_url(tmp_path):
    path = recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource:\n"
                                  "  url: '{debian_mirror}/pool/main/w/wg/wg_1.orig.tar.xz'\n"
                                  f"  sha256: '{SHA}'\n")
    m = modrecipe.load(path)
    assert modrecipe.source_url(m, "http://m/debian") == \
        "http://m/debian/pool/main/w/wg/wg_1.orig.tar.xz"


# --- steps_script() ----------------------------------------------------------------------------

def test_the_make_mode_runs_the_modules_own_makefile():
    script = modrecipe.steps_script(Module("m", "1", Path("/m")), "make")
    assert script == ("#!/bin/sh\n# generated by lkbuild from the module's recipe or convention\n"
                      'set -eu\nmake -j"$JOBS"\n')


def test_the_kbuild_mode_runs_the_kernels_makefile_on_the_dir():
    script = modrecipe.steps_script(Module("m", "1", Path("/m")), "kbuild")
    assert script.splitlines()[-1] == 'make -C "$KERNELDIR" M="$PWD" -j"$JOBS" modules'
    assert script.startswith("#!/bin/sh\n") and "set -eu\n" in script


def test_the_steps_mode_configures_for_the_cross_host_then_runs_each_step():
    m = Module("zfs", "2", Path("/m"), configure=("--with-config=kernel",
                                                  '--with-linux="$KERNELDIR"'),
               build=("make -C module", "make -C module/x"))
    lines = modrecipe.steps_script(m, "steps").splitlines()
    assert lines[3:] == ['./configure --with-config=kernel --with-linux="$KERNELDIR" '
                         '${CROSS_HOST:+--host="$CROSS_HOST"}',
                         "make -C module", "make -C module/x"]


def test_the_steps_mode_without_build_steps_runs_make_after_configure():
    lines = modrecipe.steps_script(Module("m", "1", Path("/m"), configure=()), "steps").splitlines()
    assert lines[3:] == ['./configure  ${CROSS_HOST:+--host="$CROSS_HOST"}', 'make -j"$JOBS"']


def test_the_steps_mode_without_configure_does_not_run_it():
    script = modrecipe.steps_script(Module("m", "1", Path("/m"), build=("make a",)), "steps")
    assert "configure" not in script and script.endswith("set -eu\nmake a\n")


# --- dir_files(), files_digest() ---------------------------------------------------------------

def test_dir_files_leave_out_build_artifacts(tmp_path):
    for name in ("hello.c", "Makefile", "Kbuild", "hello.o", "hello.ko", "hello.mod",
                 "hello.mod.c", ".hello.o.cmd", ".hello.ko.cmd", "modules.order",
                 "Module.symvers", "sub/x.c", "sub/x.o", ".tmp_versions/hello.mod", ".git/HEAD"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    assert sorted(modrecipe.dir_files(tmp_path)) == ["Kbuild", "Makefile", "hello.c", "sub/x.c"]


def test_dir_files_keep_content_and_the_executable_bit(tmp_path):
    (tmp_path / "configure").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "configure").chmod(0o750)
    (tmp_path / "m.c").write_bytes(b"int x;\n")
    (tmp_path / "m.c").chmod(0o600)
    assert modrecipe.dir_files(tmp_path) == {"configure": (b"#!/bin/sh\n", 0o755),
                                             "m.c": (b"int x;\n", 0o644)}


def test_dir_files_skip_symlinks(tmp_path):
    (tmp_path / "m.c").write_text("x")
    os.symlink("m.c", tmp_path / "link.c")
    assert list(modrecipe.dir_files(tmp_path)) == ["m.c"]


def test_the_files_digest_is_a_sha256_independent_of_dict_order():
    a = {"a.c": (b"1", 0o644), "b/c.c": (b"2", 0o755)}
    b = dict(reversed(list(a.items())))
    assert modrecipe.files_digest(a) == modrecipe.files_digest(b)
    assert len(modrecipe.files_digest(a)) == 64 and int(modrecipe.files_digest(a), 16) >= 0


@pytest.mark.parametrize("other", [
    {"a.c": (b"2", 0o644)},
    {"a.c": (b"1", 0o755)},
    {"b.c": (b"1", 0o644)},
    {"a.c": (b"1", 0o644), "b.c": (b"", 0o644)},
    {},
])
def test_the_files_digest_follows_content_mode_names_and_the_file_set(other):
    assert modrecipe.files_digest({"a.c": (b"1", 0o644)}) != modrecipe.files_digest(other)


def test_the_files_digest_does_not_confuse_name_and_content_boundaries():
    assert modrecipe.files_digest({"a": (b"bc", 0o644)}) != \
        modrecipe.files_digest({"ab": (b"c", 0o644)})


def test_the_digest_of_a_dir_does_not_change_after_a_host_build(tmp_path):
    (tmp_path / "m.c").write_text("x")
    before = modrecipe.files_digest(modrecipe.dir_files(tmp_path))
    (tmp_path / "m.ko").write_text("built")
    (tmp_path / ".m.ko.cmd").write_text("cmd")
    assert modrecipe.files_digest(modrecipe.dir_files(tmp_path)) == before
    (tmp_path / "m.c").write_text("y")
    assert modrecipe.files_digest(modrecipe.dir_files(tmp_path)) != before
