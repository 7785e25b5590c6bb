"""Module recipes and module dirs: the schema, the conventions, where sources come from."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipes import modrecipe
from recipes.errors import UserError
from recipes.settings import Settings

GOOD = {"name": "wg", "version": "1.0.2",
        "source": {"url": "https://example.org/wg-1.0.2.tar.xz", "sha256": "a" * 64}}


def write_recipe(root: Path, name: str, text: str) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / "recipe.yml"
    path.write_text(text)
    return path


def test_a_valid_recipe_has_no_errors():
    assert modrecipe.validate(GOOD) == [] and modrecipe.cross_field_errors(GOOD) == []


def test_every_schema_error_is_reported_at_once():
    errors = modrecipe.validate({"name": "Bad Name", "version": 3, "colour": "blue",
                                 "source": {"url": "ftp://x", "dir": "."},
                                 "kernel_config": {"require": ["BLOCK"]}, "modules": "zfs"})
    text = "\n".join(errors)
    assert "colour: unknown field" in text
    assert "name: 'Bad Name' does not match" in text
    assert "source.url: 'ftp://x' does not match" in text
    assert "source: give exactly one of url, dir, debian (got url, dir)" in text
    assert "kernel_config.require[0]: 'BLOCK' does not match" in text
    assert "modules: must be a list, got str" in text
    assert len(errors) == 6


def test_required_fields_and_an_empty_source_are_named():
    errors = modrecipe.validate({"source": {}})
    assert "name: required" in errors and "version: required" in errors
    assert any(e.startswith("source: give exactly one of") for e in errors)


def test_an_enum_field_lists_its_values():
    errors = modrecipe.validate({**GOOD, "source": {"debian": {"package": "zfs-dkms",
                                                               "version": "2.3.2-1",
                                                               "component": "free"}}})
    assert errors == ["source.debian.component: 'free' is not one of main, contrib, non-free, "
                      "non-free-firmware"]


def test_downloads_must_be_pinned_and_a_dir_takes_no_pin():
    assert modrecipe.cross_field_errors({"source": {"url": "https://x/y.tar"}})[0].startswith(
        "source.sha256: required")
    assert modrecipe.cross_field_errors({"source": {"dir": ".", "subdir": "x"}}) == [
        "source.dir: takes no sha256 or subdir"]


def test_a_bad_recipe_is_one_error_line_with_all_its_problems(tmp_path):
    path = write_recipe(tmp_path, "wg", "name: wg\nversion: '1'\nsource: {url: 'https://x/a'}\n"
                                        "tools: [1, 2]\nbuild: nope\n")
    with pytest.raises(UserError) as info:
        modrecipe.load(path)
    line = info.value.line()
    assert "\n" not in line and "has 2 error(s)" in line
    assert "build: must be a list" in line and "source.sha256: required" in line
    assert "module/README.md" in line


def test_a_recipe_named_unlike_its_dir_is_refused(tmp_path):
    path = write_recipe(tmp_path, "wireguard", "name: wg\nversion: '1'\nsource: {dir: .}\n")
    with pytest.raises(UserError, match="differs from its directory 'wireguard'"):
        modrecipe.load(path)


def test_bad_yaml_names_the_line(tmp_path):
    path = write_recipe(tmp_path, "wg", "name: wg\nversion: [1\n")
    with pytest.raises(UserError, match=r"bad YAML in recipe .* line 3"):
        modrecipe.load(path)


@pytest.mark.parametrize("name", ["hello", "zfs"])
def test_the_shipped_recipes_load(name):
    module = modrecipe.load(Settings(files=[], env={}).module_dir / name / "recipe.yml")
    assert module.name == name and module.modules


def test_the_zfs_recipe_points_at_the_debian_pool():
    module = modrecipe.load(Settings(files=[], env={}).module_dir / "zfs" / "recipe.yml")
    assert modrecipe.source_url(module, "http://deb.debian.org/debian/") == (
        "http://deb.debian.org/debian/pool/contrib/z/zfs-linux/"
        "zfs-dkms_2.3.2-2~bpo12+2_all.deb")
    assert "CONFIG_BLOCK" in module.require and "CONFIG_TRIM_UNUSED_KSYMS" in module.forbid


def test_debian_pool_paths_use_lib_prefixes_and_drop_the_epoch():
    url = modrecipe.debian_url("http://m/debian", {"package": "libfoo-dev", "version": "1:2.0-3",
                                                   "arch": "amd64"})
    assert url == "http://m/debian/pool/main/libf/libfoo-dev/libfoo-dev_2.0-3_amd64.deb"


def test_a_makefile_with_rules_is_run_and_a_bare_obj_m_one_is_kbuild(tmp_path):
    (tmp_path / "Makefile").write_text("obj-m := x.o\nKDIR ?= /k\nall:\n\t$(MAKE) -C $(KDIR)\n")
    assert modrecipe.build_mode(tmp_path) == "make"
    (tmp_path / "Makefile").write_text("obj-m := x.o\nx-objs := a.o b.o\n")
    assert modrecipe.build_mode(tmp_path) == "kbuild"
    (tmp_path / "Makefile").unlink()
    (tmp_path / "Kbuild").write_text("obj-m := x.o\n")
    assert modrecipe.build_mode(tmp_path) == "kbuild"


def test_a_dir_without_a_makefile_is_refused(tmp_path):
    with pytest.raises(UserError, match="has no Makefile"):
        modrecipe.build_mode(tmp_path)


def test_the_steps_script_follows_the_mode():
    hello = modrecipe.Module("hello", "1.0", Path("/m"))
    assert modrecipe.steps_script(hello, "make").endswith('make -j"$JOBS"\n')
    assert 'make -C "$KERNELDIR" M="$PWD" -j"$JOBS" modules' in \
        modrecipe.steps_script(hello, "kbuild")
    zfs = modrecipe.Module("zfs", "2.3.2", Path("/m"), configure=("--with-config=kernel",),
                           build=("make -C module",))
    script = modrecipe.steps_script(zfs, "steps")
    assert './configure --with-config=kernel ${CROSS_HOST:+--host="$CROSS_HOST"}' in script
    assert script.index("./configure") < script.index("make -C module")


def test_unknown_names_list_the_known_modules(tmp_path):
    write_recipe(tmp_path, "hello", "name: hello\nversion: '1'\nsource: {dir: .}\n")
    (tmp_path / "hello" / "Makefile").write_text("all:\n\ttrue\n")
    s = Settings(flags={"module_dir": str(tmp_path)}, files=[], env={})
    with pytest.raises(UserError) as info:
        modrecipe.resolve(s, "wireguard")
    assert "unknown module 'wireguard'" in info.value.line() and "hello" in info.value.line()
    assert modrecipe.resolve(s, "hello").name == "hello"
    with pytest.raises(UserError, match="is version 1, not 2"):
        modrecipe.resolve(s, "hello", "2")


def test_a_path_module_takes_its_name_from_the_dir_and_its_version_from_the_source(tmp_path):
    mod = tmp_path / "My_Mod"
    mod.mkdir()
    (mod / "Makefile").write_text("obj-m := m.o\n")
    (mod / "m.c").write_text('MODULE_VERSION("0.9.1");\n')
    module = modrecipe.resolve(Settings(files=[], env={}), str(mod))
    assert (module.name, module.version, module.recipe) == ("my_mod", "0.9.1", None)
    with pytest.raises(UserError, match="does not exist"):
        modrecipe.resolve(Settings(files=[], env={}), str(tmp_path / "nope"))


def test_source_files_leave_out_what_a_host_build_left_behind(tmp_path):
    for name in ("m.c", "Makefile", "m.o", "m.ko", ".m.o.cmd", "modules.order", "Module.symvers",
                 "m.mod.c"):
        (tmp_path / name).write_text(name)
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    files = modrecipe.dir_files(tmp_path)
    assert sorted(files) == ["Makefile", "m.c", "run.sh"] and files["run.sh"][1] == 0o755


def test_the_source_digest_follows_content_and_mode_only():
    a = {"m.c": (b"x", 0o644)}
    assert modrecipe.files_digest(a) == modrecipe.files_digest(dict(a))
    assert modrecipe.files_digest(a) != modrecipe.files_digest({"m.c": (b"y", 0o644)})
    assert modrecipe.files_digest(a) != modrecipe.files_digest({"m.c": (b"x", 0o755)})
