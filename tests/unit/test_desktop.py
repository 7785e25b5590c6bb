"""Target captures and profiles: parsing recorded Docker Desktop-like outputs, the profile
file, and the fidelity gate's decisions."""
from __future__ import annotations

import base64
import gzip
import hashlib
import subprocess
from pathlib import Path

import pytest

from recipes import desktop, kconfig
from recipes.arch import resolve
from recipes.errors import UserError

pytestmark = pytest.mark.unit

DESKTOP_VERSION = ("Linux version 6.12.54-linuxkit (root@buildkitsandbox) (gcc (Alpine 14.2.0) "
                   "14.2.0, GNU ld (GNU Binutils) 2.44) #1 SMP PREEMPT Thu Oct 30 10:12:41 UTC "
                   "2025")
DESKTOP_CONFIG = ('CONFIG_CC_VERSION_TEXT="gcc (Alpine 14.2.0) 14.2.0"\n'
                  'CONFIG_LOCALVERSION="-linuxkit"\nCONFIG_SMP=y\nCONFIG_PREEMPT_BUILD=y\n'
                  "CONFIG_MODULES=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_ZFS_DUMMY=m\n"
                  "# CONFIG_RANDSTRUCT_FULL is not set\nCONFIG_RANDSTRUCT_NONE=y\n")
LINUXKIT_YML = """kernel:
  image: docker/for-desktop-kernel:6.12.54-a4b32cd1cbd0b1a2b11bd8b40a2e0bd5c4d3a9e1
  cmdline: "console=ttyAMA0"
init:
  - linuxkit/init:8eea386739975a43af558eec757a7dcb3a3d2e7b
"""


def desktop_stream(config: str = DESKTOP_CONFIG, damage: bool = False) -> str:
    """A capture as capture.sh prints it on a console (CRLF endings, kernel noise between)."""
    gz = gzip.compress(config.encode())
    b64 = base64.encodebytes(gz).decode()
    sha = hashlib.sha256(gz).hexdigest()
    if damage:
        b64 = b64.replace(b64[10], "!" if b64[10] != "!" else "?", 1)

    def section(name: str, text: str) -> str:
        return f"lkbuild-capture-begin {name}\n{text}\n\nlkbuild-capture-end {name}\n"

    out = ("[    1.234] random: crng init done\n" + section("format", "1")
           + section("release", "6.12.54-linuxkit") + section("machine", "aarch64")
           + section("build", "#1 SMP PREEMPT Thu Oct 30 10:12:41 UTC 2025")
           + section("proc-version", DESKTOP_VERSION)
           + section("config.gz.b64", b64.strip()) + section("config.gz.sha256", sha)
           + section("sig-enforce", "N") + section("linuxkit.yml", LINUXKIT_YML.strip()))
    return out.replace("\n", "\r\n")


def test_a_recorded_desktop_capture_becomes_a_profile():
    cap = desktop.capture_of(desktop.parse_stream(desktop_stream()), "the console")
    assert cap.release == "6.12.54-linuxkit" and cap.machine == "aarch64"
    assert cap.config == DESKTOP_CONFIG
    assert cap.compiler == "gcc (Alpine 14.2.0) 14.2.0"
    assert cap.kernel_image.startswith("docker/for-desktop-kernel:6.12.54-a4b32cd")
    profile = desktop.profile_of(cap, "the console")
    assert profile.arch.name == "arm64"
    assert (profile.version, profile.localversion) == ("6.12.54", "-linuxkit")
    assert profile.expected_vermagic() == "6.12.54-linuxkit SMP preempt mod_unload aarch64"


def test_a_damaged_config_in_a_capture_is_refused():
    with pytest.raises(UserError) as err:
        desktop.capture_of(desktop.parse_stream(desktop_stream(damage=True)), "the console")
    assert "damaged" in err.value.line()


def test_a_capture_without_config_says_what_that_limits():
    stream = desktop_stream()
    facts = desktop.parse_stream(stream)
    del facts["config.gz.b64"], facts["config.gz.sha256"]
    cap = desktop.capture_of(facts, "x")
    assert cap.config is None and cap.compiler == "gcc (Alpine 14.2.0) 14.2.0"
    assert "no /proc/config.gz" in cap.notes[0] and "only its release" in cap.notes[0]
    profile = desktop.profile_of(cap, "x")
    with pytest.raises(UserError) as err:
        desktop.config_file(profile, Path("/nonexistent"))
    assert "--config FILE" in err.value.line()


def test_not_a_capture_is_refused():
    with pytest.raises(UserError) as err:
        desktop.capture_of(desktop.parse_stream("just a console\n"), "the console log")
    assert "not an lkbuild capture" in err.value.line()


@pytest.mark.parametrize("text,compiler", [
    (DESKTOP_VERSION, "gcc (Alpine 14.2.0) 14.2.0"),
    ("Linux version 6.12.117-linuxkit (root@buildkitsandbox) (gcc (Debian 12.2.0-14) 12.2.0, "
     "GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC",
     "gcc (Debian 12.2.0-14) 12.2.0"),
    ("Linux version 6.6.1 (u@h) (Debian clang version 16.0.6, Debian LLD 16.0.6) #1 SMP",
     "Debian clang version 16.0.6"),
    ("garbage", ""),
])
def test_the_compiler_is_read_from_proc_version(text, compiler):
    assert desktop.compiler_of(text) == compiler


def test_capture_sh_runs_here_in_both_forms_and_they_agree(tmp_path):
    """The script only reads: run it on this host, as files and as a stream."""
    script = desktop.CAPTURE_SCRIPT
    subprocess.run(["sh", str(script), str(tmp_path / "cap")], check=True)
    stream = subprocess.run(["sh", str(script)], check=True, capture_output=True,
                            text=True).stdout
    from_dir = desktop.capture_of(desktop.read_dir(tmp_path / "cap"), "dir")
    from_stream = desktop.capture_of(desktop.parse_stream(stream), "stream")
    assert from_dir == from_stream
    assert from_dir.release == subprocess.run(["uname", "-r"], capture_output=True,
                                              text=True).stdout.strip()


def _profile(**kw) -> desktop.Profile:
    base = dict(release="6.12.54-linuxkit", arch=resolve("arm64"),
                compiler="gcc (Alpine 14.2.0) 14.2.0", config=DESKTOP_CONFIG)
    base.update(kw)
    return desktop.Profile(**base)


def test_a_profile_survives_save_and_load(tmp_path):
    p = _profile(vermagic="6.12.54-linuxkit SMP preempt mod_unload aarch64",
                 kernel_image="docker/for-desktop-kernel:6.12.54-a4b3")
    desktop.save(p, tmp_path / "p.yaml")
    text = (tmp_path / "p.yaml").read_text()
    assert "config: |" in text and "CONFIG_SMP=y" in text
    back = desktop.load(tmp_path / "p.yaml", resolve("aarch64"))
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
        desktop.load(path, resolve("arm64"))
    for word in words:
        assert word in err.value.line()


def _config_out(tmp_path: Path, final: str) -> Path:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "config").write_text(final)
    (out / "toolchain-symbols").write_text("CONFIG_CC_VERSION_TEXT\nCONFIG_GCC_VERSION\n")
    return out


def test_the_gate_refuses_another_compiler_unless_allowed(tmp_path, capsys):
    ours = DESKTOP_CONFIG.replace("Alpine 14.2.0) 14.2.0", "Debian 12.2.0-14) 12.2.0")
    out = _config_out(tmp_path, ours)
    with pytest.raises(UserError) as err:
        desktop.check_config(_profile(), out, allow_mismatch=False)
    line = err.value.line()
    assert "gcc (Debian 12.2.0-14) 12.2.0" in line and "gcc (Alpine 14.2.0) 14.2.0" in line
    desktop.check_config(_profile(), out, allow_mismatch=True)
    assert "--allow-mismatch" in capsys.readouterr().err


def test_every_symbol_olddefconfig_moves_is_a_fidelity_risk(tmp_path, capsys):
    final = DESKTOP_CONFIG.replace("CONFIG_ZFS_DUMMY=m\n", "") + "CONFIG_NEW_THING=y\n"
    desktop.check_config(_profile(), _config_out(tmp_path, final), allow_mismatch=False)
    err = capsys.readouterr().err
    assert "fidelity risk: CONFIG_NEW_THING: absent -> y" in err
    assert "fidelity risk: CONFIG_ZFS_DUMMY: m -> not set" in err
    assert "2 config symbols differ" in err
    risks = desktop.config_risks(_profile(), kconfig.parse(DESKTOP_CONFIG))
    assert risks == []


VERMAGIC = "6.12.54-linuxkit SMP preempt mod_unload aarch64"


def test_a_build_of_another_release_is_refused():
    desktop.check_built(_profile(), "6.12.54-linuxkit", VERMAGIC + " ", False)
    with pytest.raises(UserError) as err:
        desktop.check_built(_profile(), "6.12.54-lkdev", "", False)
    assert "'6.12.54-lkdev'" in err.value.line() and "CONFIG_LOCALVERSION" in err.value.line()


def test_a_build_of_another_vermagic_is_refused_before_tagging_unless_allowed(capsys):
    p = _profile(vermagic=VERMAGIC)
    with pytest.raises(UserError) as err:
        desktop.check_built(p, "6.12.54-linuxkit", "6.12.54-linuxkit SMP mod_unload aarch64",
                            False)
    line = err.value.line()
    assert "kernel has preempt" in line and "nothing was tagged" in line
    desktop.check_built(p, "6.12.54-linuxkit", "6.12.54-linuxkit SMP mod_unload aarch64", True)
    assert "--allow-mismatch" in capsys.readouterr().err


SEED = "0123456789abcdef" * 4
RANDSTRUCT_CONFIG = DESKTOP_CONFIG + "CONFIG_GCC_PLUGINS=y\nCONFIG_RANDSTRUCT_FULL=y\n"


def test_the_seed_hash_is_the_kernels(tmp_path):
    """Same as the kernel's gen-randstruct-seed.sh (`echo -n SEED | sha256sum`), and the
    script lkbuild puts in its place writes both files in the kernel's format."""
    import hashlib
    import subprocess

    assert desktop.seed_hash(SEED) == hashlib.sha256(SEED.encode()).hexdigest()
    script = Path(__file__).parents[2] / "kernel" / "scripts" / "randstruct-seed.sh"
    subprocess.run(["sh", str(script), str(tmp_path / "seed"), str(tmp_path / "hash.h")],
                   check=True, env={"RANDSTRUCT_SEED": SEED, "PATH": "/usr/bin:/bin"})
    assert (tmp_path / "seed").read_text() == SEED + "\n"
    assert (tmp_path / "hash.h").read_text() == \
        f'#define RANDSTRUCT_HASHED_SEED "{desktop.seed_hash(SEED)}"\n'
    failed = subprocess.run(["sh", str(script), str(tmp_path / "s2"), str(tmp_path / "h2")],
                            capture_output=True, env={"PATH": "/usr/bin:/bin"})
    assert failed.returncode != 0 and not (tmp_path / "s2").exists()


def test_a_seed_gives_the_vermagic_hash_the_config_cannot():
    p = _profile(config=RANDSTRUCT_CONFIG)
    assert p.expected_vermagic().endswith(" RANDSTRUCT_?")
    seeded = _profile(config=RANDSTRUCT_CONFIG, randstruct_seed=SEED)
    assert seeded.expected_vermagic().endswith(f" RANDSTRUCT_{desktop.seed_hash(SEED)}")


def test_a_seed_that_does_not_hash_to_the_targets_vermagic_is_refused(tmp_path):
    p = _profile(vermagic=f"{VERMAGIC} RANDSTRUCT_{desktop.seed_hash(SEED)}")
    (tmp_path / "good").write_text(SEED + "\n")
    assert desktop.with_seed(p, tmp_path / "good").randstruct_seed == SEED
    (tmp_path / "other").write_text("f" * 64)
    with pytest.raises(UserError) as err:
        desktop.with_seed(p, tmp_path / "other")
    assert "not the target's" in err.value.line() and "other" in err.value.line()
    (tmp_path / "short").write_text("abc")
    with pytest.raises(UserError) as err:
        desktop.with_seed(p, tmp_path / "short")
    assert "64 lowercase hex digits" in err.value.line()
    with pytest.raises(UserError) as err:
        desktop.with_seed(p, tmp_path / "missing")
    assert "does not exist" in err.value.line()


def test_a_randstruct_target_without_a_seed_is_refused_before_the_compile(tmp_path, capsys):
    out = _config_out(tmp_path, RANDSTRUCT_CONFIG)
    p = _profile(config=RANDSTRUCT_CONFIG)
    with pytest.raises(UserError) as err:
        desktop.check_config(p, out, allow_mismatch=False)
    assert "randstruct_seed" in err.value.line() and "--randstruct-seed" in err.value.line()
    desktop.check_config(p, out, allow_mismatch=True)
    assert "struct layout" in capsys.readouterr().err
    desktop.check_config(_profile(config=RANDSTRUCT_CONFIG, randstruct_seed=SEED), out, False)


def test_a_kernel_with_another_vermagic_is_refused_naming_the_fields():
    p = _profile(source="target.yaml")
    desktop.check_vermagic(p, "k", "6.12.54-linuxkit SMP preempt mod_unload aarch64")
    with pytest.raises(UserError) as err:
        desktop.check_vermagic(p, "lkbuild/kernel:6.12.54-arm64",
                               "6.12.54-other SMP mod_unload aarch64")
    line = err.value.line()
    assert "release 6.12.54-linuxkit vs 6.12.54-other" in line and "kernel has preempt" in line
    assert "inv build --profile target.yaml" in line
