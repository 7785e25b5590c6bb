from pathlib import Path

import pytest

from recipes import arch, buildx
from recipes.errors import UserError
from recipes.settings import Settings

pytestmark = pytest.mark.unit


def test_command_for_a_local_output_target():
    b = buildx.Build(context=Path("/ctx"), target="config", platform="linux/arm64",
                     args={"B": "2", "A": "1"}, local_output=Path("/out"))
    assert buildx.command(b, []) == [
        "docker", "buildx", "build", "--progress=plain", "--platform", "linux/arm64",
        "--target", "config", "--build-arg", "A=1", "--build-arg", "B=2",
        "--output", "type=local,dest=/out", "/ctx"]


def test_command_loads_tagged_labelled_images_on_the_chosen_engine_and_builder():
    b = buildx.Build(context=Path("/ctx"), target="kernel", platform="linux/amd64",
                     labels={"l": "v"}, tags=["o/k:1", "o/k:2"], builder="b1", rerun="42")
    argv = buildx.command(b, ["--context", "desktop-linux"])
    assert argv[:3] == ["docker", "--context", "desktop-linux"]
    assert argv[argv.index("--builder") + 1] == "b1"
    assert argv.count("--tag") == 2 and "--label" in argv and "l=v" in argv
    assert "RERUN_NONCE=42" in argv and "--load" in argv and argv[-1] == "/ctx"
    # --no-cache would empty every cache mount the build uses: every user's build dirs.
    assert "--no-cache" not in argv


def test_builder_mappings_come_from_flags_or_the_setting_with_arch_substituted():
    s = Settings(env={"LKBUILD_BUILDERS": "linux/arm64=remote-{arch},linux/amd64=x"}, files=[])
    assert buildx.builder_context(s, arch.resolve("arm64")) == "remote-arm64"
    assert buildx.builder_context(s, arch.resolve("amd64"), ["linux/amd64=flag"]) == "flag"
    assert buildx.builder_context(Settings(env={}, files=[]), arch.resolve("arm64")) == ""


@pytest.mark.parametrize("bad", ["desktop-linux", "arm64=ctx", "linux/arm64=", "=x"])
def test_malformed_builder_mappings_are_refused(bad):
    with pytest.raises(UserError, match="bad builder mapping"):
        buildx.parse_builders([bad])
