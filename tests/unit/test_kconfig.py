import pytest

from recipes import kconfig

pytestmark = pytest.mark.unit

BASE = """\
CONFIG_A=y
# CONFIG_B is not set
CONFIG_C="text"
CONFIG_N=4
CONFIG_CC_VERSION_TEXT="gcc 12"
"""


def test_not_set_reads_as_n_and_values_keep_their_quotes():
    assert kconfig.parse(BASE) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"text"',
                                   "CONFIG_N": "4", "CONFIG_CC_VERSION_TEXT": '"gcc 12"'}


def test_changes_are_listed_by_symbol_and_read_as_a_user_would():
    after = kconfig.parse(BASE.replace("CONFIG_A=y", "# CONFIG_A is not set") + "CONFIG_NEW=m\n")
    found = kconfig.changes(kconfig.parse(BASE), after)
    assert [str(c) for c in found] == ["CONFIG_A: y -> not set", "CONFIG_NEW: absent -> m"]


def test_absent_and_not_set_are_the_same_to_kconfig():
    assert kconfig.changes({"CONFIG_B": "n"}, {}) == []


def test_fragment_settings_that_did_not_stick_are_reported_with_later_fragments_winning():
    result = {"CONFIG_A": "y", "CONFIG_B": "n"}
    missed = kconfig.unmet([{"CONFIG_A": "n", "CONFIG_B": "y"}, {"CONFIG_A": "y"}], result)
    assert [str(c) for c in missed] == ["CONFIG_B: y -> not set"]


def test_summary_shortens_long_lists():
    found = [kconfig.Change(f"CONFIG_{i}", "y", None) for i in range(12)]
    text = kconfig.summary(found, limit=3)
    assert text.count("->") == 3 and text.endswith("and 9 more")


def test_a_config_of_settings_comments_and_blank_lines_has_no_bad_line():
    assert kconfig.first_bad_line("#\n# CONFIG_A is not set\nCONFIG_B=y\n\nCONFIG_C=\"x y\"\n") == 0


def test_the_first_line_that_is_no_setting_is_named():
    assert kconfig.first_bad_line("CONFIG_A=y\nremember to rebase\nCONFIG_B=y\n") == 2
    assert kconfig.first_bad_line("CONFIG_A\n") == 1
