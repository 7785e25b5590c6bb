"""The quick start's plan and its run, with steps that are real lkbuild commands."""
import json

import pytest

from recipes import quickstart
from recipes.arch import resolve
from recipes.settings import Settings

pytestmark = pytest.mark.unit


def test_the_offline_steps_are_the_readme_s_commands_for_this_arch():
    steps = quickstart.offline_steps(resolve("amd64"))
    commands = [s.command() for s in steps]
    assert commands[0] == "inv doctor"
    assert commands[1] == "inv bootstrap-image"
    assert commands[3] == ("LKBUILD_MIN_FREE_GB=10 inv build --source "
                           "/usr/src/linux-source-6.12.tar.xz --arch amd64 --config "
                           "tests/data/small-x86_64.config --build-image lkbuild/build:bookworm")
    assert [s.argv[0] for s in steps] == ["doctor", "bootstrap-image", "fetch", "build",
                                         "vmtest", "buildmodule", "vmtest", "build"]
    assert steps[-2].argv[-2:] == ("--module", "hello")
    assert (quickstart.ROOT / "tests/data/small-aarch64.config").is_file()


def test_the_online_steps_build_the_newest_series_for_the_engine_s_arch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no desktop.yaml here
    steps = quickstart.online_steps(Settings(flags={}), resolve("arm64"))
    assert [s.command() for s in steps][1:] == ["inv build --version 6.12.54 --arch arm64"] * 2
    (tmp_path / "desktop.yaml").write_text("lkbuild-profile: 1\n")
    steps = quickstart.online_steps(Settings(flags={}), resolve("arm64"))
    assert steps[1].argv == ("build", "--profile", "desktop.yaml")


def test_a_failed_step_ends_the_run_and_the_summary_says_which(monkeypatch):
    steps = [quickstart.Step("show the settings", ("config", "--json")),
             quickstart.Step("a bad flag", ("build", "--jobs", "lots")),
             quickstart.Step("never run", ("config",))]
    monkeypatch.setattr(quickstart, "plan", lambda settings: ("test", steps))
    summary = quickstart.run(Settings(flags={}))
    assert [o.status for o in summary.outcomes] == ["passed", "failed (exit 2)", "skipped"]
    assert not summary.passed
    data = json.loads(json.dumps(summary.as_json()))
    assert data["passed"] is False and data["steps"][1]["exit"] == 2
    assert data["steps"][1]["command"] == "inv build --jobs lots"
