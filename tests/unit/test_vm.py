"""vm.py's pure parts: qemu command lines, the cpio writer, the /init script and the verdict."""
from __future__ import annotations

import gzip
import io
import shutil
import stat
import struct
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from recipes import arch, vm
from recipes.errors import InfraError, UserError
from recipes.settings import Settings
from tests.conftest import alive

pytestmark = pytest.mark.unit

AMD64 = arch.resolve("amd64")
ARM64 = arch.resolve("arm64")
RELEASE = "6.12.117-linuxkit"


def fake_elf(path: Path, machine: int, interp: bool = False) -> Path:
    """A minimal 64-bit little-endian ELF header with one program header (PT_INTERP or LOAD)."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", header, 18, machine)
    struct.pack_into("<Q", header, 32, 64)  # e_phoff
    struct.pack_into("<HH", header, 54, 56, 1)  # e_phentsize, e_phnum
    phdr = bytearray(56)
    struct.pack_into("<I", phdr, 0, 3 if interp else 1)
    path.write_bytes(bytes(header + phdr) + b"busybox body")
    path.chmod(0o755)
    return path


def arg_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


# --- qemu command lines ----------------------------------------------------------------------

def test_x86_64_boots_on_the_default_pc_with_ttyS0_and_exits_on_reset():
    cmd = vm.qemu_command(AMD64, Path("/k/kernel"), Path("/k/initrd"))
    assert cmd[0] == "qemu-system-x86_64"
    assert "-M" not in cmd and "-cpu" not in cmd
    assert arg_after(cmd, "-accel") == "tcg"
    assert "-no-reboot" in cmd and "-nographic" in cmd
    assert arg_after(cmd, "-m") == "256"
    assert arg_after(cmd, "-serial") == "stdio" and arg_after(cmd, "-monitor") == "none"
    assert arg_after(cmd, "-nic") == "none"
    assert (arg_after(cmd, "-kernel"), arg_after(cmd, "-initrd")) == ("/k/kernel", "/k/initrd")
    append = arg_after(cmd, "-append").split()
    assert "console=ttyS0" in append and "panic=-1" in append and "rdinit=/init" in append


def test_arm64_boots_on_virt_with_a_cortex_a57_and_ttyAMA0():
    cmd = vm.qemu_command(ARM64, Path("/k/kernel"), Path("/k/initrd"))
    assert cmd[0] == "qemu-system-aarch64"
    assert (arg_after(cmd, "-M"), arg_after(cmd, "-cpu")) == ("virt", "cortex-a57")
    assert arg_after(cmd, "-accel") == "tcg"
    assert "-no-reboot" in cmd
    assert "console=ttyAMA0" in arg_after(cmd, "-append").split()


def test_kvm_is_used_only_when_asked_and_then_with_the_host_cpu():
    x86 = vm.qemu_command(AMD64, Path("k"), Path("i"), accel="kvm")
    assert (arg_after(x86, "-accel"), arg_after(x86, "-cpu")) == ("kvm", "host")
    arm = vm.qemu_command(ARM64, Path("k"), Path("i"), accel="kvm")
    assert arg_after(arm, "-cpu") == "host" and arm.count("-cpu") == 1


def test_auto_is_tcg_on_linux_even_with_dev_kvm():
    assert vm.resolve_accel("auto", AMD64, host_os="linux", host=AMD64) == "tcg"
    assert vm.resolve_accel("", ARM64, host_os="linux", host=ARM64) == "tcg"


def test_auto_is_hvf_on_macos_only_when_guest_and_host_arch_match():
    assert vm.resolve_accel("auto", ARM64, host_os="darwin", host=ARM64) == "hvf"
    assert vm.resolve_accel("auto", AMD64, host_os="darwin", host=ARM64) == "tcg"


def test_an_unknown_accelerator_is_refused_with_the_list():
    with pytest.raises(UserError) as info:
        vm.resolve_accel("xen", AMD64)
    assert "'xen'" in info.value.line() and "tcg" in info.value.line()


def test_missing_qemu_names_the_package_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InfraError) as info:
        vm.find_qemu(ARM64)
    line = info.value.line()
    assert "qemu-system-aarch64" in line and "apt-get install qemu-system-arm" in line


# --- the cpio writer -------------------------------------------------------------------------

def sample_cpio() -> vm.Cpio:
    c = vm.Cpio()
    c.add_file("lib/modules/6.12/extra/hello.ko", b"\x7fELF module", 0o644)
    c.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    c.add_symlink("bin/sh", "busybox")
    c.add_chardev("dev/console", 5, 1)
    c.add_dir("proc")
    return c


def test_cpio_round_trips_names_modes_sizes_and_device_numbers():
    entries = {e.name: e for e in vm.read_cpio(sample_cpio().to_bytes())}
    ko = entries["lib/modules/6.12/extra/hello.ko"]
    assert stat.S_ISREG(ko.mode) and stat.S_IMODE(ko.mode) == 0o644 and ko.data == b"\x7fELF module"
    assert stat.S_IMODE(entries["init"].mode) == 0o755
    assert stat.S_ISLNK(entries["bin/sh"].mode) and entries["bin/sh"].data == b"busybox"
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)
    for parent in ("lib", "lib/modules", "lib/modules/6.12", "lib/modules/6.12/extra", "bin"):
        assert stat.S_ISDIR(entries[parent].mode)


def test_cpio_lists_every_directory_before_what_is_in_it():
    names = [e.name for e in vm.read_cpio(sample_cpio().to_bytes())]
    for i, name in enumerate(names):
        if "/" in name:
            assert name.rsplit("/", 1)[0] in names[:i]


def test_cpio_output_does_not_depend_on_insertion_order():
    other = vm.Cpio()
    other.add_dir("proc")
    other.add_chardev("dev/console", 5, 1)
    other.add_symlink("bin/sh", "busybox")
    other.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    other.add_file("lib/modules/6.12/extra/hello.ko", b"\x7fELF module", 0o644)
    assert other.to_bytes() == sample_cpio().to_bytes()


def test_cpio_records_are_four_byte_aligned_and_end_with_the_trailer():
    data = sample_cpio().to_bytes()
    assert len(data) % 4 == 0
    assert data.startswith(b"070701") and b"TRAILER!!!\0" in data[-128:]


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio is not installed")
def test_gnu_cpio_reads_our_archive(tmp_path):
    listing = subprocess.run(["cpio", "-itv", "--quiet"], input=sample_cpio().to_bytes(),
                             capture_output=True, check=True).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line
             for line in listing.splitlines()}
    assert lines["init"].startswith("-rwxr-xr-x")
    assert lines["dev/console"].startswith("crw-------")
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and lines["bin/sh"].endswith("-> busybox")
    assert " 11 " in lines["lib/modules/6.12/extra/hello.ko"]


@pytest.mark.parametrize("bad", ["", "/", "a/../b", ".."])
def test_paths_that_escape_or_are_empty_are_refused(bad):
    with pytest.raises(UserError):
        vm.Cpio().add_file(bad, b"")


def test_a_file_cannot_be_a_parent():
    c = vm.Cpio()
    c.add_file("lib", b"x")
    with pytest.raises(UserError):
        c.add_file("lib/modules/x.ko", b"y")


def test_add_path_keeps_a_directory_tree_and_its_symlinks(tmp_path):
    tree = tmp_path / "extra"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.ko").write_bytes(b"abc")
    (tree / "link").symlink_to("/usr/src/linux-headers")
    c = vm.Cpio()
    c.add_path("lib/modules/r/extra", tree)
    entries = {e.name: e for e in vm.read_cpio(c.to_bytes())}
    assert entries["lib/modules/r/extra/sub/a.ko"].data == b"abc"
    assert entries["lib/modules/r/extra/link"].data == b"/usr/src/linux-headers"


def test_add_tar_takes_a_modules_install_tree(tmp_path):
    tar_path = tmp_path / "kernel.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name in ("lib", "lib/modules", f"lib/modules/{RELEASE}"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        dep = tarfile.TarInfo(f"lib/modules/{RELEASE}/modules.dep")
        dep.size = 5
        tar.addfile(dep, io.BytesIO(b"a.ko:"))
        build = tarfile.TarInfo(f"lib/modules/{RELEASE}/build")
        build.type, build.linkname = tarfile.SYMTYPE, f"/usr/src/linux-headers-{RELEASE}"
        tar.addfile(build)
    c = vm.Cpio()
    c.add_tar(tar_path)
    entries = {e.name: e for e in vm.read_cpio(c.to_bytes())}
    assert entries[f"lib/modules/{RELEASE}/modules.dep"].data == b"a.ko:"
    assert stat.S_ISLNK(entries[f"lib/modules/{RELEASE}/build"].mode)
    assert vm.release_from_tar(tar_path) == RELEASE


# --- busybox and the initramfs ---------------------------------------------------------------

def test_the_initramfs_is_gzip_and_holds_busybox_init_console_and_extra_files(tmp_path):
    bb = fake_elf(tmp_path / "busybox", 62)
    ko = tmp_path / "hello.ko"
    ko.write_bytes(b"module")
    out = vm.make_initramfs(AMD64, tmp_path / "initrd.gz", bb, "#!/bin/sh\n",
                            {f"lib/modules/{RELEASE}/extra/hello.ko": ko})
    raw = out.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    entries = {e.name: e for e in vm.read_cpio(gzip.decompress(raw))}
    assert entries["bin/busybox"].data == bb.read_bytes()
    assert stat.S_IMODE(entries["bin/busybox"].mode) == 0o755
    assert entries["bin/sh"].data == b"busybox"
    assert entries["init"].data == b"#!/bin/sh\n" and stat.S_IMODE(entries["init"].mode) == 0o755
    assert entries["dev/console"].rdev == (5, 1)
    assert entries[f"lib/modules/{RELEASE}/extra/hello.ko"].data == b"module"
    for d in ("proc", "sys", "dev", "tmp", "sbin", "usr/bin"):
        assert stat.S_ISDIR(entries[d].mode)


def test_the_initramfs_is_the_same_bytes_every_time(tmp_path):
    bb = fake_elf(tmp_path / "busybox", 183)
    a = vm.make_initramfs(ARM64, tmp_path / "a.gz", bb, "#!/bin/sh\n", {})
    time.sleep(1.1)
    b = vm.make_initramfs(ARM64, tmp_path / "b.gz", bb, "#!/bin/sh\n", {})
    assert a.read_bytes() == b.read_bytes()


def test_a_busybox_for_the_wrong_arch_is_refused(tmp_path):
    bb = fake_elf(tmp_path / "busybox", 62)
    with pytest.raises(InfraError) as info:
        vm.make_initramfs(ARM64, tmp_path / "i.gz", bb, "#!/bin/sh\n", {})
    assert "not a static busybox for arm64" in info.value.line()


def test_elf_facts_tells_static_from_dynamic(tmp_path):
    assert vm.elf_facts(fake_elf(tmp_path / "s", 183)) == (183, True)
    assert vm.elf_facts(fake_elf(tmp_path / "d", 62, interp=True)) == (62, False)
    (tmp_path / "t").write_text("#!/bin/sh\n")
    assert vm.elf_facts(tmp_path / "t") == (0, False)


def test_a_missing_foreign_busybox_says_how_to_get_the_arm64_package(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "BUSYBOX_DIR", tmp_path)
    with pytest.raises(InfraError) as info:
        vm.find_busybox(ARM64, host=AMD64)
    line = info.value.line()
    assert "no static busybox for arm64" in line
    assert "apt-get download busybox-static:arm64" in line and "dpkg -x" in line
    assert str(tmp_path / "busybox-arm64") in line


def test_a_dynamic_busybox_is_skipped_and_the_native_package_is_named(tmp_path, monkeypatch):
    dynamic = fake_elf(tmp_path / "busybox", 62, interp=True)
    monkeypatch.setattr(vm, "busybox_candidates", lambda a, h=None: [dynamic])
    with pytest.raises(InfraError) as info:
        vm.find_busybox(AMD64, host=AMD64)
    line = info.value.line()
    assert "dynamically linked" in line and "apt-get install busybox-static" in line


def test_the_installed_busybox_for_an_arch_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "BUSYBOX_DIR", tmp_path)
    bb = fake_elf(tmp_path / "busybox-arm64", 183)
    assert vm.find_busybox(ARM64, host=AMD64) == bb


# --- /init -----------------------------------------------------------------------------------

def test_init_prints_the_markers_and_ends_the_vm_the_way_each_arch_can():
    x86 = vm.default_init(AMD64)
    assert x86.startswith("#!/bin/sh\n")
    assert f'echo "{vm.MARK_BEGIN} $(uname -r) $(uname -m)"' in x86
    assert f"echo {vm.MARK_PASS}" in x86
    assert "reboot -f" in x86 and "poweroff" not in x86
    assert "poweroff -f" in vm.default_init(ARM64)
    for mount in ("-t proc", "-t sysfs", "-t devtmpfs"):
        assert mount in x86


def test_init_runs_each_command_quoted_and_stops_at_the_first_failure():
    script = vm.default_init(AMD64, ["insmod /lib/modules/r/extra/it's.ko", "echo ok"])
    assert script.index("RUN 1:") < script.index("RUN 2:") < script.index(vm.MARK_PASS)
    assert f"{vm.MARK_FAIL} command 1 exited $rc:" in script
    assert shutil.which("sh")
    check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr


# --- the verdict -----------------------------------------------------------------------------

BOOT = f"""\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16.2-debian-1.16.2-1)
Linux version {RELEASE} (root@buildkitsandbox) #1 Tue Nov 24 09:44:52 UTC 2026\r
Run /init as init process\r
"""
PASS = f"""{BOOT}{vm.MARK_BEGIN} {RELEASE} x86_64\r
{vm.MARK_PASS}\r
reboot: Restarting system\r
"""


def test_a_clean_boot_passes_and_says_which_release():
    ok, line = vm.verdict(PASS, RELEASE, exited=True, timeout=60, seconds=1.3, uname="x86_64")
    assert ok and line == f"booted {RELEASE} and init passed in 1.3s"


def test_pass_needs_qemu_to_have_ended_by_itself():
    ok, line = vm.verdict(PASS, RELEASE, exited=False, timeout=60)
    assert not ok and line == "timed out after 60s: init passed but the VM did not end"


def test_a_different_release_fails_even_with_the_pass_marker():
    log = PASS.replace(f"BEGIN {RELEASE}", "BEGIN 6.6.60-linuxkit")
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok and line == f"kernel reports release 6.6.60-linuxkit, the image is {RELEASE}"


def test_a_different_arch_fails():
    ok, line = vm.verdict(PASS.replace("x86_64\r", "aarch64\r"), RELEASE, exited=True,
                          timeout=60, uname="x86_64")
    assert not ok and "arch aarch64" in line


def test_a_missing_pass_marker_fails_with_the_last_line():
    log = f"{BOOT}{vm.MARK_BEGIN} {RELEASE} x86_64\nreboot: Restarting system\n"
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok and line == (f"init ended without {vm.MARK_PASS} "
                               "(last line: reboot: Restarting system)")


def test_a_kernel_panic_is_the_verdict_line():
    log = (f"{BOOT}VFS: Cannot open root device \"\" or unknown-block(0,0): error -6\n"
           "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
           "---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on "
           "unknown-block(0,0) ]---\n")
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok
    assert line == "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"


def test_init_exiting_is_reported_with_its_status():
    log = (f"{BOOT}Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n")
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok and line.startswith("init exited with status 1 (kernel panic: Attempted")


def test_init_killed_by_a_signal_is_reported_with_the_signal():
    log = f"{BOOT}Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n"
    assert vm.verdict(log, RELEASE, exited=True, timeout=60)[1].startswith(
        "init exited with signal 11")


def test_a_panic_after_pass_still_fails():
    log = PASS + "Kernel panic - not syncing: Fatal exception\n"
    assert vm.verdict(log, RELEASE, exited=True, timeout=60) == (
        False, "kernel panic: Fatal exception")


def test_a_failing_command_is_named():
    log = (f"{BOOT}{vm.MARK_BEGIN} {RELEASE} x86_64\n{vm.MARK_RUN} 1: insmod /x.ko\n"
           f"insmod: can't insert '/x.ko': invalid module format\n"
           f"{vm.MARK_FAIL} command 1 exited 1: insmod /x.ko\n")
    assert vm.verdict(log, RELEASE, exited=True, timeout=60) == (
        False, "init failed: command 1 exited 1: insmod /x.ko")


def test_no_output_at_all_is_said_so():
    assert vm.verdict("", RELEASE, exited=True, timeout=60) == (
        False, "no output from the kernel")
    assert vm.verdict("\x1bc\x1b[?7l\r\n", RELEASE, exited=False, timeout=30) == (
        False, "timed out after 30s with no output from the kernel")


def test_a_kernel_that_never_reaches_init_is_said_so():
    ok, line = vm.verdict("Linux version x\nbooting\n", RELEASE, exited=True, timeout=60)
    assert not ok and line == "init did not start (last line: booting)"
    ok, line = vm.verdict("Linux version x\nbooting\n", RELEASE, exited=False, timeout=9)
    assert line == "timed out after 9s; init did not start (last line: booting)"


def test_a_timeout_inside_a_command_names_the_command():
    log = f"{BOOT}{vm.MARK_BEGIN} {RELEASE} x86_64\n{vm.MARK_RUN} 1: sleep 600\n"
    assert vm.verdict(log, RELEASE, exited=False, timeout=5) == (
        False, "timed out after 5s in command 1: sleep 600")


def test_qemu_failing_to_start_gives_its_error():
    ok, line = vm.verdict("", RELEASE, exited=True, timeout=60, returncode=1,
                          qemu_error="qemu-system-x86_64: -kernel k: could not open")
    assert not ok and line == "qemu exited 1: qemu-system-x86_64: -kernel k: could not open"


def test_every_verdict_is_one_line():
    long = "Kernel panic - not syncing: " + "x" * 1000 + "\n"
    line = vm.verdict(long, RELEASE, exited=True, timeout=60)[1]
    assert "\n" not in line and len(line) <= 200


# --- kernel files, results, the qemu runner --------------------------------------------------

def test_release_comes_from_kernel_source_info_when_kernel_tar_has_none(tmp_path):
    (tmp_path / "kernel").write_bytes(b"bz")
    (tmp_path / "kernel-source-info").write_text(
        f"KERNEL_VERSION=6.12.117\nKERNEL_RELEASE={RELEASE}\nSOURCE_SHA256=x\n")
    files = vm.kernel_files(tmp_path)
    assert files.release == RELEASE and files.modules_tar is None and files.config is None


def test_a_directory_without_a_kernel_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as info:
        vm.kernel_files(tmp_path)
    assert "has no /kernel" in info.value.line()


def test_a_kernel_without_any_release_is_a_user_error(tmp_path):
    (tmp_path / "kernel").write_bytes(b"bz")
    with pytest.raises(UserError) as info:
        vm.kernel_files(tmp_path)
    assert "cannot tell the kernel release" in info.value.line()


class NoImages:
    def image(self, ref):
        return None

    def describe(self):
        return "context default (unix:///var/run/docker.sock)"


def test_a_missing_image_names_it_and_the_build_command(tmp_path):
    with pytest.raises(UserError) as info:
        vm.extract_kernel(NoImages(), "lkbuild/kernel:6.12.54-abc123-arm64", tmp_path, ARM64)
    line = info.value.line()
    assert "lkbuild/kernel:6.12.54-abc123-arm64 does not exist" in line
    assert "inv build --version 6.12.54 --arch arm64" in line
    assert "\n" not in line


class WrongArch(NoImages):
    def image(self, ref):
        return {"Architecture": "amd64"}


def test_an_image_for_another_arch_is_refused_before_booting(tmp_path):
    with pytest.raises(UserError) as info:
        vm.extract_kernel(WrongArch(), "x/kernel:6.12.54-amd64", tmp_path, ARM64)
    assert "is for amd64, not arm64" in info.value.line()


def test_result_json_is_plain_data(tmp_path):
    r = vm.VmResult(True, "booted", tmp_path / "a.log", 1.234, RELEASE, "amd64")
    assert r.as_json() == {"passed": True, "verdict": "booted", "log": str(tmp_path / "a.log"),
                           "seconds": 1.23, "release": RELEASE, "arch": "amd64"}


def test_boot_refuses_a_non_positive_timeout(tmp_path):
    with pytest.raises(UserError):
        vm.boot(Settings(files=[]), tmp_path, AMD64, timeout=0)


def test_the_runner_logs_the_console_and_reports_a_clean_exit(tmp_path):
    log = tmp_path / "run.log"
    seen: list[str] = []
    run = vm.run_qemu(["sh", "-c", "printf 'one\\r\\ntwo\\n'; echo oops >&2"], log, 10,
                      echo=seen.append)
    assert run.exited and run.returncode == 0 and run.stderr == "oops"
    assert run.console == "one\r\ntwo\n" and seen == ["one", "two"]
    text = log.read_bytes()
    assert b"one\r\ntwo\n" in text and b"oops" in text and b"exited 0" in text


@pytest.mark.timeout(30)  # a runner that waited for the `sleep 60` fails here
def test_the_runner_stops_a_process_that_outlives_the_timeout(tmp_path):
    pids: list[int] = []
    run = vm.run_qemu(["sh", "-c", "echo started; exec sleep 60"], tmp_path / "l", 0.5,
                      on_start=pids.append)
    assert not run.exited and run.returncode is None
    assert run.console == "started\n"
    assert pids == [run.pid] and not alive(run.pid)


def test_the_runner_kills_a_process_that_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "KILL_GRACE", 0.3)
    run = vm.run_qemu(["sh", "-c", "trap '' TERM; echo up; exec sleep 60"], tmp_path / "l",
                      0.5)
    assert not run.exited and not alive(run.pid)


def test_a_program_that_cannot_run_is_an_infra_error(tmp_path):
    with pytest.raises(InfraError):
        vm.run_qemu([str(tmp_path / "no-qemu")], tmp_path / "l", 1)


@pytest.mark.parametrize("text", ["6.12.54", "6.12", "6.12.54-dbg", " 6.6.60 "])
def test_versions_are_told_apart_from_image_references(text):
    assert vm.is_version(text)


@pytest.mark.parametrize("text", ["lkbuild/kernel:6.12.54-amd64", "kernel:6.12.54", "./k",
                                  "localhost:5000/k:1", "6.12.54/x", ""])
def test_image_references_and_paths_are_not_versions(text):
    assert not vm.is_version(text)


def test_the_console_tail_leaves_out_the_framing_lines(tmp_path):
    log = tmp_path / "l.log"
    log.write_bytes(b"--- qemu-system-x86_64 -m 256\n\x1bcone\r\ntwo\r\nthree\n"
                    b"--- qemu exited 0 after 1.00s\n")
    assert vm.console_tail(log, 2) == ["two", "three"]
    assert vm.console_tail(tmp_path / "missing") == []


@pytest.mark.parametrize("line,said", [
    (f"[    0.9] {vm.MARK_BEGIN} 6.12.118-linuxkit x86_64", "booted 6.12.118-linuxkit (x86_64)"),
    (f"{vm.MARK_RUN} 1: /lkbuild/load.sh", "running 1: /lkbuild/load.sh"),
    ("lkbuild-loader: loaded sctp", "lkbuild-loader: loaded sctp"),
    ("lkbuild-loader: error: sctp: Unknown symbol", "lkbuild-loader: error: sctp: Unknown symbol"),
    ("[    0.5] Freeing unused kernel memory: 1024K", None),
])
def test_a_boot_on_a_pipe_shows_the_kernel_up_each_command_and_the_loaders_lines(line, said):
    assert vm.step_of(line) == said
