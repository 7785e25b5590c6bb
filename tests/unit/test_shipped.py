"""The shipped configs' recipe (configs.yml), the base targets kconfig takes, and the shape of
the committed series configs."""
import math
import re

import pytest

from recipes import kconfig, shipped
from recipes.cli.kernel_tasks import BASE_CONFIG_RE
from recipes.errors import UserError
from recipes.settings import ROOT, Settings

pytestmark = pytest.mark.unit


def test_the_series_recipe_names_both_arches_with_existing_fragments():
    found = {r.arch.name: r for r in shipped.recipes(Settings(flags={}), "6.12.54")}
    assert set(found) == {"arm64", "amd64"}
    assert found["arm64"].base == "defconfig+virt.config"
    assert found["amd64"].base == "defconfig+kvm_guest.config"
    assert all(f.is_file() and f.is_relative_to(ROOT / "kernel" / "fragments")
               for r in found.values() for f in r.fragments)


@pytest.mark.parametrize("text,words", [
    ("sparc: {base: defconfig}\n", ["'sparc' is not an arch with a base"]),
    ("x86_64: {fragments: [a.config]}\n", ["'x86_64' is not an arch with a base"]),
    ("x86_64: {base: defconfig, fragments: [missing.config]}\n", ["missing.config",
                                                                   "does not exist"]),
    ("[just, a, list]\n", ["must map each arch"]),
])
def test_a_bad_recipe_is_one_line(tree, text, words):
    (tree / "6.12.x" / "configs.yml").write_text(text)
    with pytest.raises(UserError) as err:
        shipped.recipes(Settings(flags={"kernel_dir": tree}), "6.12.54")
    for word in words:
        assert word in err.value.line()


def test_a_series_without_a_recipe_says_where_it_goes(tree):
    with pytest.raises(UserError) as err:
        shipped.recipes(Settings(flags={"kernel_dir": tree}), "6.12.54")
    assert "has no configs.yml" in err.value.line()


@pytest.mark.parametrize("base,ok", [("defconfig", True), ("tinyconfig", True),
                                     ("defconfig+virt.config", True),
                                     ("defconfig+kvm_guest.config+hardening.config", True),
                                     ("defconfig virt.config", False), ("virt.config", False),
                                     ("defconfig+../x.config", False), ("defconfig+", False)])
def test_a_base_is_a_config_target_then_the_kernel_s_own_fragments(base, ok):
    assert bool(BASE_CONFIG_RE.fullmatch(base)) == ok


# linuxkit's 6.12 kernels (the ones Docker Desktop ships), counted in linuxkit's
# kernel/6.12.x/config-aarch64 and kernel/6.12.x/config-x86_64: symbols built in
# (=y) and built as modules (=m). The shipped configs are sized like them, within a quarter.
LINUXKIT_COUNTS = {"config-aarch64": {"builtin": 2020, "modules": 206},
                   "config-x86_64": {"builtin": 2063, "modules": 181}}
SIZE_TOLERANCE = 0.25
SERIES = ROOT / "kernel" / "6.12.x"


@pytest.mark.parametrize("name", sorted(LINUXKIT_COUNTS))
@pytest.mark.parametrize("kind", ["builtin", "modules"])
def test_a_shipped_config_is_sized_like_linuxkit_s(name, kind):
    values = kconfig.parse((SERIES / name).read_text()).values()
    count = sum(v == {"builtin": "y", "modules": "m"}[kind] for v in values)
    theirs = LINUXKIT_COUNTS[name][kind]
    low = math.ceil(theirs * (1 - SIZE_TOLERANCE))
    high = math.floor(theirs * (1 + SIZE_TOLERANCE))
    assert low <= count <= high, (
        f"{name} has {count} {kind} against linuxkit's {theirs}: outside [{low}, {high}] "
        f"(change kernel/fragments, then inv kconfig --regenerate)")


# What arch/arm64/configs/virt.config keeps of arm64's SoC platforms: none (it turns each one
# off; a VM's devices are virtio, PCI and the generic ARM ones). A platform newer than its list
# shows up in the config's "Platform selection" menu and must be turned off in arm64-vm.config.
VIRT_PLATFORMS: set[str] = set()


def test_the_arm64_config_builds_in_no_soc_platform():
    text = (SERIES / "config-aarch64").read_text()
    menu = re.search(r"^# Platform selection$(.*?)^# end of Platform selection$", text,
                     re.M | re.S)
    assert menu, "config-aarch64 has no Platform selection menu"
    assert re.search(r"^# CONFIG_ARCH_\w+ is not set$", menu[1], re.M), menu[1]  # the real menu
    platforms = set(re.findall(r"^CONFIG_(ARCH_\w+)=y$", menu[1], re.M))
    assert platforms - VIRT_PLATFORMS == set(), \
        f"config-aarch64 builds in SoC platforms: {sorted(platforms - VIRT_PLATFORMS)}"
