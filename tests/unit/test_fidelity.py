"""fidelity.py: vermagic as a kernel gives it and as builds compare it, the profile file and
its RANDSTRUCT seed, and the fidelity gate's decisions."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipes import fidelity, kconfig
from recipes.arch import resolve
from recipes.errors import UserError

pytestmark = pytest.mark.unit

AMD64, ARM64 = resolve("amd64"), resolve("arm64")
REL = "6.12.54-linuxkit"
DESKTOP_CONFIG = ('CONFIG_CC_VERSION_TEXT="gcc (Alpine 14.2.0) 14.2.0"\n'
                  'CONFIG_LOCALVERSION="-linuxkit"\nCONFIG_SMP=y\nCONFIG_PREEMPT_BUILD=y\n'
                  "CONFIG_MODULES=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_ZFS_DUMMY=m\n"
                  "# CONFIG_RANDSTRUCT_FULL is not set\nCONFIG_RANDSTRUCT_NONE=y\n")


# --- vermagic ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("6.12.54 SMP mod_unload ", "6.12.54 SMP mod_unload"),
    ("  6.12.54\tSMP\n mod_unload", "6.12.54 SMP mod_unload"),
    ("", ""),
])
def test_words_normalise_the_spacing_of_a_vermagic(text, expected):
    assert fidelity.words(text) == expected


def test_a_bare_config_gives_the_release_alone():
    assert fidelity.config_vermagic(REL, {}, AMD64) == REL


def test_the_arm64_vermagic_ends_with_its_arch_word_and_amd64_has_none():
    assert fidelity.config_vermagic(REL, {}, ARM64) == f"{REL} aarch64"
    config = {"CONFIG_SMP": "y", "CONFIG_MODULE_UNLOAD": "y"}
    assert fidelity.config_vermagic(REL, config, AMD64) == f"{REL} SMP mod_unload"
    assert fidelity.config_vermagic(REL, config, ARM64) == f"{REL} SMP mod_unload aarch64"


@pytest.mark.parametrize("arch", [AMD64, ARM64])
def test_every_vermagic_word_comes_in_the_kernels_order(arch):
    config = {"CONFIG_MODVERSIONS": "y", "CONFIG_MODULE_UNLOAD": "y", "CONFIG_PREEMPT_BUILD": "y",
              "CONFIG_SMP": "y", "CONFIG_RANDSTRUCT_FULL": "y"}
    tail = " aarch64" if arch is ARM64 else ""
    assert fidelity.config_vermagic(REL, config, arch) == \
        f"{REL} SMP preempt mod_unload modversions{tail} RANDSTRUCT_?"


def test_preempt_rt_is_its_own_word_and_preempt_build_wins_over_it():
    assert fidelity.config_vermagic(REL, {"CONFIG_PREEMPT_RT": "y"}, AMD64) == f"{REL} preempt_rt"
    assert fidelity.config_vermagic(REL, {"CONFIG_PREEMPT_RT": "y", "CONFIG_PREEMPT_BUILD": "y"},
                                  AMD64) == f"{REL} preempt"


def test_randstruct_performance_also_leaves_the_seed_unknown():
    assert fidelity.config_vermagic(REL, {"CONFIG_RANDSTRUCT_PERFORMANCE": "y"}, AMD64) == \
        f"{REL} RANDSTRUCT_?"


def test_options_that_are_off_or_modules_add_no_words():
    config = {"CONFIG_SMP": "n", "CONFIG_MODULE_UNLOAD": "m", "CONFIG_MODVERSIONS": "",
              "CONFIG_RANDSTRUCT_NONE": "y"}
    assert fidelity.config_vermagic(REL, config, AMD64) == REL


def test_the_same_vermagic_ignores_spacing_and_the_kernels_trailing_space():
    assert fidelity.same_vermagic(f"{REL} SMP preempt mod_unload aarch64 ",
                                f"{REL}  SMP preempt mod_unload aarch64")


@pytest.mark.parametrize("module_side", [
    f"{REL} SMP mod_unload", f"{REL}-x SMP preempt mod_unload", f"{REL} SMP mod_unload preempt",
    f"{REL} SMP preempt mod_unload modversions"])
def test_any_other_word_or_order_is_another_vermagic(module_side):
    assert not fidelity.same_vermagic(f"{REL} SMP preempt mod_unload", module_side)


def test_an_unknown_randstruct_seed_matches_any_seed():
    kernel = f"{REL} SMP mod_unload aarch64 RANDSTRUCT_?"
    assert fidelity.same_vermagic(kernel, f"{REL} SMP mod_unload aarch64 RANDSTRUCT_1a2b3c ")
    assert fidelity.same_vermagic(kernel, f"{REL} SMP mod_unload aarch64 RANDSTRUCT_ffff")
    assert not fidelity.same_vermagic(kernel, f"{REL} mod_unload aarch64 RANDSTRUCT_1a2b3c")


def test_a_known_randstruct_seed_must_match_exactly():
    assert not fidelity.same_vermagic(f"{REL} RANDSTRUCT_aaaa", f"{REL} RANDSTRUCT_bbbb")
    assert fidelity.same_vermagic(f"{REL} RANDSTRUCT_aaaa", f"{REL} RANDSTRUCT_aaaa")


def test_a_module_without_randstruct_does_not_match_a_randstruct_kernel():
    assert not fidelity.same_vermagic(f"{REL} SMP RANDSTRUCT_?", f"{REL} SMP")


def test_a_vermagic_diff_names_release_and_the_words_each_side_lacks():
    assert fidelity.vermagic_diff(f"{REL} SMP preempt mod_unload", "6.12.55 SMP mod_unload "
                                "modversions") == \
        f"release {REL} vs 6.12.55, kernel has preempt, module has modversions"


def test_a_vermagic_diff_of_one_side_only_names_that_side():
    assert fidelity.vermagic_diff(f"{REL} SMP", f"{REL} SMP mod_unload") == "module has mod_unload"
    assert fidelity.vermagic_diff(f"{REL} SMP mod_unload", f"{REL} SMP") == "kernel has mod_unload"


def test_a_vermagic_diff_of_the_same_words_says_the_order_differs():
    assert fidelity.vermagic_diff(f"{REL} SMP mod_unload", f"{REL} mod_unload SMP") == \
        "same words in another order"


def test_a_vermagic_diff_with_an_empty_side_does_not_fail():
    assert fidelity.vermagic_diff("", f"{REL} SMP") == f"release ? vs {REL}, module has SMP"


# --- the profile and the gate ------------------------------------------------------------------

def _profile(**kw) -> fidelity.Profile:
    base = dict(release="6.12.54-linuxkit", arch=resolve("arm64"),
                compiler="gcc (Alpine 14.2.0) 14.2.0", config=DESKTOP_CONFIG)
    base.update(kw)
    return fidelity.Profile(**base)


def test_a_profile_survives_save_and_load(tmp_path):
    p = _profile(vermagic="6.12.54-linuxkit SMP preempt mod_unload aarch64",
                 kernel_image="docker/for-desktop-kernel:6.12.54-a4b3")
    fidelity.save(p, tmp_path / "p.yaml")
    text = (tmp_path / "p.yaml").read_text()
    assert "config: |" in text and "CONFIG_SMP=y" in text
    back = fidelity.load(tmp_path / "p.yaml", resolve("aarch64"))
    assert (back.release, back.arch, back.compiler, back.config, back.vermagic,
            back.kernel_image) == (p.release, p.arch, p.compiler, p.config, p.vermagic,
                                   p.kernel_image)


@pytest.mark.parametrize("text,words", [
    ("lkbuild-profile: 1\nrelease: [unclosed\n", ["not valid YAML", "line"]),
    ("just: a map\n", ["not an lkbuild profile"]),
    ("lkbuild-profile: 1\nrelease: 6.12.54-linuxkit\narch: arm64\n", ["lacks compiler"]),
    ("lkbuild-profile: 1\nrelease: 6.12.54-linuxkit\narch: sparc\ncompiler: gcc\n",
     ["unknown arch 'sparc'"]),
    ("lkbuild-profile: 1\nrelease: 6.12.54-linuxkit\narch: amd64\ncompiler: gcc\n",
     ["is for amd64, not arm64", "--arch amd64"]),
    ("lkbuild-profile: 1\nrelease: 6.12.54-linuxkit\narch: arm64\ncompiler: gcc\n"
     "config_sha256: '" + "0" * 64 + "'\nconfig: |\n  CONFIG_SMP=y\n", ["does not match"]),
    ("lkbuild-profile: 1\nrelease: linuxkit\narch: arm64\ncompiler: gcc\n",
     ["does not start with a version"]),
    ("lkbuild-profile: 1\nrelease: 6.1.1\narch: arm64\ncompiler: gcc\nrandstruct_seed: xyz\n",
     ["64 lowercase hex"]),
])
def test_a_bad_profile_is_one_line(tmp_path, text, words):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        fidelity.load(path, resolve("arm64"))
    for word in words:
        assert word in err.value.line()


def _config_out(tmp_path: Path, final: str) -> Path:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "config").write_text(final)
    return out


def test_the_gate_refuses_another_compiler_unless_allowed(tmp_path, capsys):
    ours = DESKTOP_CONFIG.replace("Alpine 14.2.0) 14.2.0", "Debian 12.2.0-14) 12.2.0")
    out = _config_out(tmp_path, ours)
    with pytest.raises(UserError) as err:
        fidelity.check_config(_profile(), out, allow_mismatch=False)
    line = err.value.line()
    assert "gcc (Debian 12.2.0-14) 12.2.0" in line and "gcc (Alpine 14.2.0) 14.2.0" in line
    fidelity.check_config(_profile(), out, allow_mismatch=True)
    assert "--allow-mismatch" in capsys.readouterr().err


def test_every_symbol_olddefconfig_moves_is_a_fidelity_risk(tmp_path, capsys):
    final = DESKTOP_CONFIG.replace("CONFIG_ZFS_DUMMY=m\n", "") + "CONFIG_NEW_THING=y\n"
    fidelity.check_config(_profile(), _config_out(tmp_path, final), allow_mismatch=False)
    err = capsys.readouterr().err
    assert "fidelity risk: CONFIG_NEW_THING: absent -> y" in err
    assert "fidelity risk: CONFIG_ZFS_DUMMY: m -> not set" in err
    assert "2 config symbols differ" in err
    risks = fidelity.config_risks(_profile(), kconfig.parse(DESKTOP_CONFIG))
    assert risks == []


VERMAGIC = "6.12.54-linuxkit SMP preempt mod_unload aarch64"


def test_a_build_of_another_release_is_refused():
    fidelity.check_built(_profile(), "6.12.54-linuxkit", VERMAGIC + " ", False)
    with pytest.raises(UserError) as err:
        fidelity.check_built(_profile(), "6.12.54-lkdev", "", False)
    assert "'6.12.54-lkdev'" in err.value.line() and "CONFIG_LOCALVERSION" in err.value.line()


def test_a_build_of_another_vermagic_is_refused_before_tagging_unless_allowed(capsys):
    p = _profile(vermagic=VERMAGIC)
    with pytest.raises(UserError) as err:
        fidelity.check_built(p, "6.12.54-linuxkit", "6.12.54-linuxkit SMP mod_unload aarch64",
                             False)
    line = err.value.line()
    assert "kernel has preempt" in line and "nothing was tagged" in line
    fidelity.check_built(p, "6.12.54-linuxkit", "6.12.54-linuxkit SMP mod_unload aarch64", True)
    assert "--allow-mismatch" in capsys.readouterr().err


SEED = "0123456789abcdef" * 4
RANDSTRUCT_CONFIG = DESKTOP_CONFIG + "CONFIG_GCC_PLUGINS=y\nCONFIG_RANDSTRUCT_FULL=y\n"


def test_the_seed_hash_is_the_kernels(tmp_path):
    """Same as the kernel's gen-randstruct-seed.sh (`echo -n SEED | sha256sum`), and the
    script lkbuild puts in its place writes both files in the kernel's format."""
    import hashlib
    import subprocess

    assert fidelity.seed_hash(SEED) == hashlib.sha256(SEED.encode()).hexdigest()
    script = Path(__file__).parents[2] / "kernel" / "scripts" / "randstruct-seed.sh"
    subprocess.run(["sh", str(script), str(tmp_path / "seed"), str(tmp_path / "hash.h")],
                   check=True, env={"RANDSTRUCT_SEED": SEED, "PATH": "/usr/bin:/bin"})
    assert (tmp_path / "seed").read_text() == SEED + "\n"
    assert (tmp_path / "hash.h").read_text() == \
        f'#define RANDSTRUCT_HASHED_SEED "{fidelity.seed_hash(SEED)}"\n'
    failed = subprocess.run(["sh", str(script), str(tmp_path / "s2"), str(tmp_path / "h2")],
                            capture_output=True, env={"PATH": "/usr/bin:/bin"})
    assert failed.returncode != 0 and not (tmp_path / "s2").exists()


def test_a_seed_gives_the_vermagic_hash_the_config_cannot():
    p = _profile(config=RANDSTRUCT_CONFIG)
    assert p.expected_vermagic().endswith(" RANDSTRUCT_?")
    seeded = _profile(config=RANDSTRUCT_CONFIG, randstruct_seed=SEED)
    assert seeded.expected_vermagic().endswith(f" RANDSTRUCT_{fidelity.seed_hash(SEED)}")


def test_a_seed_that_does_not_hash_to_the_targets_vermagic_is_refused(tmp_path):
    p = _profile(vermagic=f"{VERMAGIC} RANDSTRUCT_{fidelity.seed_hash(SEED)}")
    (tmp_path / "good").write_text(SEED + "\n")
    assert fidelity.with_seed(p, tmp_path / "good").randstruct_seed == SEED
    (tmp_path / "other").write_text("f" * 64)
    with pytest.raises(UserError) as err:
        fidelity.with_seed(p, tmp_path / "other")
    assert "not the target's" in err.value.line() and "other" in err.value.line()
    (tmp_path / "short").write_text("abc")
    with pytest.raises(UserError) as err:
        fidelity.with_seed(p, tmp_path / "short")
    assert "64 lowercase hex digits" in err.value.line()
    with pytest.raises(UserError) as err:
        fidelity.with_seed(p, tmp_path / "missing")
    assert "does not exist" in err.value.line()


def test_a_randstruct_target_without_a_seed_is_refused_before_the_compile(tmp_path, capsys):
    out = _config_out(tmp_path, RANDSTRUCT_CONFIG)
    p = _profile(config=RANDSTRUCT_CONFIG)
    with pytest.raises(UserError) as err:
        fidelity.check_config(p, out, allow_mismatch=False)
    assert "randstruct_seed" in err.value.line() and "--randstruct-seed" in err.value.line()
    fidelity.check_config(p, out, allow_mismatch=True)
    assert "struct layout" in capsys.readouterr().err
    fidelity.check_config(_profile(config=RANDSTRUCT_CONFIG, randstruct_seed=SEED), out, False)


def test_a_kernel_with_another_vermagic_is_refused_naming_the_fields():
    p = _profile(source="target.yaml")
    fidelity.check_vermagic(p, "k", "6.12.54-linuxkit SMP preempt mod_unload aarch64")
    with pytest.raises(UserError) as err:
        fidelity.check_vermagic(p, "lkbuild/kernel:6.12.54-arm64",
                                "6.12.54-other SMP mod_unload aarch64")
    line = err.value.line()
    assert "release 6.12.54-linuxkit vs 6.12.54-other" in line and "kernel has preempt" in line
    assert "inv build --profile target.yaml" in line
