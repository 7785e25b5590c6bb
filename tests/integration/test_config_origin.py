"""Configs made elsewhere: by the kernel's own olddefconfig, outside lkbuild, with another
compiler (clang-14) or for an earlier point release of the series (6.12.113), then checked by
lkbuild against Debian's later source and its build image's gcc."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.kernels import DATA, DEBIAN_SOURCE, lkbuild, small_args

pytestmark = pytest.mark.ci

EARLIER_SOURCE = Path("/usr/local/lib/lkbuild/sources/linux-source-6.12.113.tar.xz")
# What olddefconfig needs of a tree: its Kconfig files, Makefiles and scripts/ (kconfig's own
# sources among them); a fraction of the whole, unpacked in seconds.
CONFIG_TOOL_FILES = ["*Kconfig*", "*/Makefile", "*/scripts/*", "*/arch/x86/Makefile*"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The later (the build's) and the earlier source, unpacked side by side."""
    for tarball in (DEBIAN_SOURCE, EARLIER_SOURCE):
        if not tarball.is_file():
            pytest.fail(f"{tarball} is missing: scripts/setup-debian.sh installs it")
    root = tmp_path_factory.mktemp("trees")
    procs = {}
    for name, tarball in (("later", DEBIAN_SOURCE), ("earlier", EARLIER_SOURCE)):
        (root / name).mkdir()
        procs[name] = subprocess.Popen(["tar", "-xJf", str(tarball), "-C", str(root / name),
                                        "--wildcards", *CONFIG_TOOL_FILES])
    assert all(p.wait() == 0 for p in procs.values())
    return {name: next((root / name).iterdir()) for name in procs}


@pytest.fixture
def olddefconfig(tmp_path: Path) -> Callable[[Path, str, str], Path]:
    """A config made the way another machine makes it: `make olddefconfig` in the tree."""
    def make(tree: Path, config: str, cc: str) -> Path:
        out = tmp_path / f"build-{cc}-{tree.parent.name}"
        out.mkdir()
        (out / ".config").write_text(config)
        subprocess.run(["make", "-s", f"O={out}", "ARCH=x86_64", f"CC={cc}", "olddefconfig"],
                       cwd=tree, check=True, capture_output=True)
        made = tmp_path / f"{cc}-{tree.parent.name}.config"
        made.write_text((out / ".config").read_text())
        return made
    return make


def kconfig_json(kernel_cache: Path, kver: str, config: Path) -> dict:
    args = small_args(kver, "amd64")
    args[args.index("--config") + 1] = str(config)
    run = lkbuild(kernel_cache, "kconfig", *args, "--json")
    assert run.code == 0, run.err[-3000:]
    return run.json()


def test_a_config_another_compiler_made_is_final_with_toolchain_notices(
        kernel_cache, kver, trees, olddefconfig):
    config = olddefconfig(trees["later"], (DATA / "small-x86_64.config").read_text(),
                          "clang-14")
    assert "CONFIG_CC_IS_CLANG=y" in config.read_text()
    result = kconfig_json(kernel_cache, kver, config)
    assert result["final"] and result["nonfinal"] == [], result["nonfinal"]
    # GCC_ASM_GOTO_OUTPUT_BROKEN calls no compiler: it follows GCC_VERSION, which does
    assert "CONFIG_CC_IS_CLANG: y -> not set" in result["toolchain"]
    assert "CONFIG_GCC_ASM_GOTO_OUTPUT_BROKEN: absent -> y" in result["toolchain"]
    assert result["version"] == []

    # linuxkit's rule refuses it, before anything compiles
    args = small_args(kver, "amd64", "--strict-config")
    args[args.index("--config") + 1] = str(config)
    run = lkbuild(kernel_cache, "buildplainkernel", *args)
    assert run.code != 0 and run.out == ""
    last = run.err_lines[-1]
    assert "is not final" in last and "--strict-config" in last, last
    assert "CONFIG_AS_IS_GNU: absent -> y" in last and "Traceback" not in run.err


def test_a_config_made_for_an_earlier_point_release_is_final_with_version_notices(
        kernel_cache, kver, trees, olddefconfig):
    # SATA_INIC162X is in 6.12.113 and gone by the later release; it selects SATA_HOST
    text = (DATA / "small-x86_64.config").read_text() + \
        "CONFIG_PCI=y\nCONFIG_ATA=y\nCONFIG_SATA_INIC162X=m\n"
    config = olddefconfig(trees["earlier"], text, "gcc")
    assert "Linux/x86_64 6.12.113 Kernel Configuration" in config.read_text()
    assert "CONFIG_SATA_INIC162X=m" in config.read_text()
    result = kconfig_json(kernel_cache, kver, config)
    assert result["final"] and result["nonfinal"] == [], result["nonfinal"]
    assert "CONFIG_SATA_INIC162X: m -> not set" in result["version"]
    assert "CONFIG_SATA_HOST: y -> not set" in result["computed"]
