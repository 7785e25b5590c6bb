"""The shipped configs' recipe (configs.yml) and the base targets kconfig takes."""
import pytest

from recipes import shipped
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
