import pytest

from recipes import arch
from recipes.errors import UserError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["arm64", "aarch64", "ARM64", "AArch64", " arm64 "])
def test_every_spelling_of_arm64_resolves_to_arm64(name):
    a = arch.resolve(name)
    assert a.name == "arm64"
    assert (a.kernel_arch, a.platform, a.uname) == ("arm64", "linux/arm64", "aarch64")
    assert a.image_name == "Image.gz" and a.cross_compile == "aarch64-linux-gnu-"
    assert a.qemu == "qemu-system-aarch64"


@pytest.mark.parametrize("name", ["amd64", "x86_64", "X86_64", "AMD64"])
def test_every_spelling_of_amd64_resolves_to_amd64(name):
    a = arch.resolve(name)
    assert a.name == "amd64"
    assert (a.kernel_arch, a.platform, a.uname) == ("x86_64", "linux/amd64", "x86_64")
    assert a.image_name == "bzImage" and a.qemu == "qemu-system-x86_64"


@pytest.mark.parametrize("name", ["riscv64", "", "arm", "x86", "arm64;ls"])
def test_unknown_arch_is_refused_with_the_supported_list(name):
    with pytest.raises(UserError) as info:
        arch.resolve(name)
    line = info.value.line()
    assert repr(name) in line
    for spelling in ("aarch64", "amd64", "arm64", "x86_64"):
        assert spelling in line
    assert "\n" not in line


def test_uname_suffixes_map_back_to_arches():
    assert arch.from_uname("aarch64").name == "arm64"
    assert arch.from_uname("x86_64").name == "amd64"
    assert arch.from_uname("arm64") is None


def test_cross_prefix_is_empty_only_for_the_build_arch():
    amd, arm = arch.resolve("amd64"), arch.resolve("arm64")
    assert arm.cross_prefix_from(amd) == "aarch64-linux-gnu-"
    assert amd.cross_prefix_from(amd) == ""
    assert amd.cross_prefix_from(arm) == "x86_64-linux-gnu-"
