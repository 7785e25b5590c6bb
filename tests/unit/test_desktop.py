"""Target captures: parsing recorded Docker Desktop-like outputs, and the profile a capture
gives."""
from __future__ import annotations

import base64
import gzip
import hashlib
import subprocess
from pathlib import Path

import pytest

from recipes import desktop, fidelity
from recipes.errors import UserError
from tests.unit.test_fidelity import DESKTOP_CONFIG

pytestmark = pytest.mark.unit

DESKTOP_VERSION = ("Linux version 6.12.54-linuxkit (root@buildkitsandbox) (gcc (Alpine 14.2.0) "
                   "14.2.0, GNU ld (GNU Binutils) 2.44) #1 SMP PREEMPT Thu Oct 30 10:12:41 UTC "
                   "2025")
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
        fidelity.config_file(profile, Path("/nonexistent"))
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


def test_detect_says_which_in_tree_modules_the_target_lacks(tmp_path: Path) -> None:
    config = DESKTOP_CONFIG + "CONFIG_IP_SCTP=m\nCONFIG_WIREGUARD=y\n"
    stream = tmp_path / "console.log"
    stream.write_text(desktop_stream(config=config))

    class Settings:
        module_dir = str(Path(__file__).resolve().parents[2] / "module")

    found = desktop.detect(Settings(), from_dir=str(stream))
    assert found.modules == {"openvswitch": "missing", "sctp": "module",
                             "wireguard": "built-in"}
    assert ("in-tree modules", "openvswitch: missing, sctp: module, wireguard: built-in") \
        in found.rows()
    assert found.as_json()["modules"]["openvswitch"] == "missing"
