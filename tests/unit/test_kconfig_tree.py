"""The Kconfig reader on a small tree written the way the kernel's own is."""
import io
import tarfile

import pytest

from recipes import kconfig, kconfig_tree

pytestmark = pytest.mark.unit

TREE = {
    "Kconfig": """\
mainmenu "Linux/$(ARCH) $(KERNELVERSION) Kernel Configuration"

source "scripts/Kconfig.include"
source "init/Kconfig"
source "arch/$(SRCARCH)/Kconfig"
source "drivers/Kconfig"
""",
    "scripts/Kconfig.include": """\
# Kconfig macros: not symbols
cc-option = $(success,$(CC) -Werror $(1) -E -x c /dev/null -o /dev/null)
cc-version := $(shell,echo 120200)
""",
    "init/Kconfig": """\
config CC_VERSION_TEXT
	string
	default "$(CC_VERSION_TEXT)"

config GCC_VERSION
	int
	default $(cc-version)

config CC_HAS_X
	def_bool $(cc-option,-fx)

config BROKEN_ASM
	bool
	default y if GCC_VERSION < 110500 # not $(shell,true): a comment

config USES_X
	bool "Use X"
	depends on CC_HAS_X
	help
		Help text may say anything:
		config FAKE
		default y if $(shell,true)

		even across a blank line.

config AFTER_HELP
	bool "After the help"
""",
    "arch/x86/Kconfig": """\
config X86
	def_bool y
	select HAVE_THING

config HAVE_THING
	bool
""",
    "arch/arm64/Kconfig": """\
config ARM64_ONLY
	bool "Only on arm64"
""",
    "drivers/Kconfig": """\
menu "Drivers"
	depends on X86

menuconfig ATA
	tristate "ATA"

if ATA
config SATA_HOST
	bool

config SATA_PMP
	bool "Port multipliers" \\
		if SATA_HOST
	default y

config SATA_INIC
	tristate "Initio"
	select SATA_HOST
endif

choice
	prompt "Stack init"
	default STACK_ZERO if CC_HAS_X

config STACK_NONE
	bool "None"

config STACK_ZERO
	bool "Zero"
	depends on CC_HAS_X
endchoice

rsource "sub/Kconfig"
endmenu
""",
    "drivers/sub/Kconfig": """\
config SUB
	tristate "A driver in a subdirectory"
""",
}


@pytest.fixture(scope="module")
def facts() -> kconfig_tree.Facts:
    return kconfig_tree.parse(TREE, "x86")


def c(*names: str) -> set[str]:
    return {f"CONFIG_{n}" for n in names}


def test_the_arch_s_files_are_followed_and_help_text_is_not_read(facts):
    assert c("X86", "HAVE_THING", "SUB", "AFTER_HELP", "STACK_NONE") <= facts.defined
    assert not c("ARM64_ONLY", "FAKE") & facts.defined


def test_a_prompt_on_the_type_line_a_continued_line_or_a_choice_value_counts(facts):
    assert c("USES_X", "AFTER_HELP", "ATA", "SATA_PMP", "SATA_INIC", "STACK_NONE",
             "STACK_ZERO", "SUB") <= facts.prompted
    assert not c("HAVE_THING", "SATA_HOST", "BROKEN_ASM", "X86") & facts.prompted


def test_an_entry_that_calls_the_toolchain_is_one_and_a_comment_or_help_is_not(facts):
    assert c("CC_VERSION_TEXT", "GCC_VERSION", "CC_HAS_X") <= facts.toolchain
    assert not c("BROKEN_ASM", "USES_X", "X86") & facts.toolchain


def test_refs_come_from_blocks_selects_defaults_and_choice_siblings(facts):
    assert c("ATA", "X86", "SATA_INIC") <= facts.refs["CONFIG_SATA_HOST"]
    assert c("SATA_HOST") <= facts.refs["CONFIG_SATA_PMP"]
    assert c("CC_HAS_X", "STACK_ZERO") <= facts.refs["CONFIG_STACK_NONE"]
    assert c("X86") <= facts.refs["CONFIG_HAVE_THING"]
    assert c("GCC_VERSION") <= facts.refs["CONFIG_BROKEN_ASM"]


def test_the_config_step_s_tarball_is_read_for_the_make_arch(tmp_path):
    path = tmp_path / "kconfig.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in TREE.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    facts = kconfig_tree.read(path, "x86_64")
    assert facts is not None and "CONFIG_X86" in facts.defined
    assert kconfig_tree.read(tmp_path / "none.tgz", "x86_64") is None


GCC = """\
CONFIG_CC_VERSION_TEXT="gcc 12"
CONFIG_GCC_VERSION=120200
CONFIG_BROKEN_ASM=y
CONFIG_X86=y
CONFIG_HAVE_THING=y
CONFIG_ATA=y
CONFIG_SATA_HOST=y
CONFIG_SATA_PMP=y
CONFIG_SATA_INIC=m
# CONFIG_USES_X is not set
CONFIG_STACK_NONE=y
"""
CLANG = """\
CONFIG_CC_VERSION_TEXT="clang 14"
CONFIG_GCC_VERSION=0
CONFIG_CC_HAS_X=y
CONFIG_X86=y
CONFIG_HAVE_THING=y
CONFIG_ATA=y
CONFIG_SATA_HOST=y
CONFIG_SATA_PMP=y
CONFIG_SATA_INIC=m
CONFIG_USES_X=y
CONFIG_STACK_ZERO=y
"""


def names(found: list[kconfig.Change]) -> set[str]:
    return {ch.symbol for ch in found}


def test_another_compiler_s_config_is_final_and_what_moved_with_it_is_the_toolchain_s(facts):
    sorted_ = kconfig.classify(kconfig.parse(CLANG), kconfig.parse(GCC), facts)
    assert sorted_.final
    assert names(sorted_.toolchain) == c("CC_VERSION_TEXT", "GCC_VERSION", "CC_HAS_X",
                                         "BROKEN_ASM", "USES_X", "STACK_NONE", "STACK_ZERO")
    assert not sorted_.computed and not sorted_.version


def test_an_earlier_point_release_s_config_is_final_with_what_the_kernel_moved(facts):
    older = GCC + "CONFIG_GONE_DRIVER=m\n"
    newer = GCC.replace("CONFIG_SATA_INIC=m", "# CONFIG_SATA_INIC is not set") \
        .replace("CONFIG_SATA_HOST=y", "# CONFIG_SATA_HOST is not set") \
        .replace("CONFIG_SATA_PMP=y", "# CONFIG_SATA_PMP is not set") + "CONFIG_SUB=m\n"
    # SATA_INIC stands for a driver removed in the newer release: drop it from the facts
    gone = kconfig_tree.Facts(facts.defined - c("SATA_INIC"), facts.prompted, facts.toolchain,
                              facts.refs)
    sorted_ = kconfig.classify(kconfig.parse(older), kconfig.parse(newer), gone)
    assert sorted_.final
    assert names(sorted_.version) == c("GONE_DRIVER", "SATA_INIC", "SUB")
    assert names(sorted_.computed) == c("SATA_HOST", "SATA_PMP")
    assert str(sorted_.computed[0]) == "CONFIG_SATA_HOST: y -> not set"


def test_a_chosen_symbol_that_moves_on_its_own_makes_the_config_non_final(facts):
    chosen = GCC.replace("CONFIG_SATA_HOST=y\n", "")
    result = chosen.replace("CONFIG_SATA_PMP=y", "# CONFIG_SATA_PMP is not set")
    sorted_ = kconfig.classify(kconfig.parse(chosen), kconfig.parse(result), facts)
    assert not sorted_.final
    assert [str(ch) for ch in sorted_.nonfinal] == ["CONFIG_SATA_PMP: y -> not set"]
    assert sorted_.as_json()["nonfinal"] == ["CONFIG_SATA_PMP: y -> not set"]


def test_strict_is_linuxkit_s_rule_every_change_counts(facts):
    sorted_ = kconfig.classify(kconfig.parse(CLANG), kconfig.parse(GCC), facts, strict=True)
    assert not sorted_.final and len(sorted_.nonfinal) == 7
    assert not sorted_.toolchain


def test_without_the_tree_only_the_toolchain_s_identity_is_a_notice():
    sorted_ = kconfig.classify(kconfig.parse(CLANG), kconfig.parse(GCC), None)
    assert names(sorted_.toolchain) == c("CC_VERSION_TEXT", "GCC_VERSION")
    assert c("BROKEN_ASM", "USES_X") <= names(sorted_.nonfinal)
