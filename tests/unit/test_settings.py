from pathlib import Path

import pytest

from recipes.errors import UserError
from recipes.settings import SETTINGS, Settings, read_config_file

pytestmark = pytest.mark.unit


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_is_set():
    s = Settings(env={}, files=[])
    assert s.org == "lkbuild" and s.source("org") == "default"
    assert s.jobs == 0 and s.builders == []


def test_flag_beats_env_beats_file_beats_default(tmp_path):
    cfg = write(tmp_path / "lkbuild.yaml", "org: fromfile\njobs: 3\nregistry: file.example\n")
    env = {"LKBUILD_ORG": "fromenv", "LKBUILD_JOBS": "5"}
    s = Settings(flags={"org": "fromflag"}, env=env, files=[cfg])
    assert (s.org, s.source("org")) == ("fromflag", "flag")
    assert (s.jobs, s.source("jobs")) == (5, "env LKBUILD_JOBS")
    assert (s.registry, s.source("registry")) == ("file.example", f"file {cfg}")
    assert s.source("kernel_mirror") == "default"


def test_project_file_beats_user_file(tmp_path):
    project = write(tmp_path / "p" / "lkbuild.yaml", "org: project\n")
    user = write(tmp_path / "u" / "lkbuild.yaml", "org: user\nregistry: userreg\n")
    s = Settings(env={}, files=[project, user])
    assert s.org == "project" and s.registry == "userreg"


def test_empty_flags_and_env_values_do_not_override(tmp_path):
    s = Settings(flags={"org": "", "builders": []}, env={"LKBUILD_ORG": ""}, files=[])
    assert s.source("org") == "default" and s.source("builders") == "default"


def test_lists_come_from_commas_or_yaml_lists(tmp_path):
    env = {"LKBUILD_BUILDERS": "linux/arm64=desktop-linux, linux/amd64=remote-{arch}"}
    assert Settings(env=env, files=[]).builders == ["linux/arm64=desktop-linux",
                                                      "linux/amd64=remote-{arch}"]
    cfg = write(tmp_path / "c.yaml", "builders:\n  - linux/arm64=a\n")
    assert Settings(env={}, files=[cfg]).builders == ["linux/arm64=a"]


def test_relative_paths_in_a_file_are_relative_to_that_file(tmp_path):
    cfg = write(tmp_path / "conf" / "lkbuild.yaml", "kernel-dir: ../kernels\n")
    s = Settings(env={}, files=[cfg])
    assert s.kernel_dir == tmp_path / "conf" / ".." / "kernels"


def test_bad_yaml_names_the_file_and_line(tmp_path):
    cfg = write(tmp_path / "lkbuild.yaml", "org: a\njobs: [1, 2\nregistry: x\n")
    with pytest.raises(UserError) as info:
        read_config_file(cfg)
    assert str(cfg) in info.value.message and "line " in info.value.message


def test_unknown_key_in_a_file_is_refused_with_a_suggestion(tmp_path):
    cfg = write(tmp_path / "lkbuild.yaml", "kernal_dir: /x\n")
    with pytest.raises(UserError) as info:
        Settings(env={}, files=[cfg])
    assert "kernal_dir" in info.value.message and "kernel_dir" in info.value.hint


def test_unknown_lkbuild_environment_variable_is_refused():
    with pytest.raises(UserError) as info:
        Settings(env={"LKBUILD_JBOS": "4"}, files=[])
    assert "LKBUILD_JBOS" in info.value.message and "jobs" in info.value.hint


@pytest.mark.parametrize("raw", ["four", "-1", "2.5"])
def test_integer_settings_refuse_non_integers(raw):
    with pytest.raises(UserError) as info:
        Settings(env={"LKBUILD_JOBS": raw}, files=[])
    assert "LKBUILD_JOBS" in info.value.message and raw.strip("-") in info.value.message


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    cfg = write(tmp_path / "lkbuild.yaml", "- a\n- b\n")
    with pytest.raises(UserError, match="mapping"):
        read_config_file(cfg)


def test_every_setting_has_an_environment_name_and_help():
    for s in SETTINGS:
        assert s.env == "LKBUILD_" + s.name.upper()
        assert s.help and s.kind in {"str", "int", "bool", "path", "list"}


def test_json_view_says_where_each_value_came_from():
    data = Settings(env={"LKBUILD_ORG": "me"}, files=[]).as_json()
    assert data["org"] == {"value": "me", "source": "env LKBUILD_ORG"}
    assert isinstance(data["kernel_dir"]["value"], str)


def test_invoke_yaml_s_lkbuild_section_is_read_below_lkbuild_s_own_files(tmp_path):
    inv = tmp_path / "invoke.yaml"
    inv.write_text("run: {echo: true}\nlkbuild:\n  build_hosts: [me@big, me@other:2222]\n"
                   "  org: frominvoke\n")
    own = tmp_path / "lkbuild.yaml"
    own.write_text("org: fromlkbuild\n")
    s = Settings(env={}, files=[own, inv])
    assert s.build_hosts == ["me@big", "me@other:2222"]
    assert s.org == "fromlkbuild" and s.source("build_hosts") == f"file {inv}"
    no_section = tmp_path / ".invoke.yaml"
    no_section.write_text("run: {echo: true}\n")
    assert Settings(env={}, files=[no_section]).build_hosts == []
    inv.write_text("lkbuild:\n  bulid_hosts: [me@big]\n")
    with pytest.raises(UserError) as err:
        Settings(env={}, files=[inv])
    assert "unknown setting 'bulid_hosts'" in err.value.line()


@pytest.mark.parametrize("raw,value", [("1", True), ("true", True), ("yes", True),
                                       ("0", False), ("off", False)])
def test_verbose_is_a_yes_or_no_setting_from_the_environment(raw, value):
    assert Settings(env={"LKBUILD_VERBOSE": raw}, files=[]).verbose is value
    assert Settings(env={}, files=[]).verbose is False


def test_a_verbose_setting_that_is_not_yes_or_no_is_refused_with_an_example():
    with pytest.raises(UserError, match="must be true or false") as info:
        Settings(env={"LKBUILD_VERBOSE": "loud"}, files=[])
    assert "LKBUILD_VERBOSE=true" in info.value.hint
