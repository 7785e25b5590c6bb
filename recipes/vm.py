"""Boot a kernel image in qemu and decide, from its serial console, whether it works.

A kernel that builds is not a kernel that boots: this boots the image's own `/kernel` with a
tiny busybox initramfs, lets `/init` print a release marker, run any extra commands (module
loads, later) and say PASS or FAIL, then end the VM. The verdict comes from the console log
alone, so it is the same on every host and is unit-tested from sample logs.

The initramfs is a newc cpio written here in pure Python: no cpio, fakeroot or root needed,
and byte-for-byte the same for the same inputs. The kernel only ever runs inside qemu.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import progress, ui
from .arch import Arch, host as host_arch
from .errors import InfraError, UserError
from .settings import Settings

MARK_BEGIN = "LKBUILD-VMTEST-BEGIN"
MARK_RUN = "LKBUILD-VMTEST-RUN"
MARK_PASS = "LKBUILD-VMTEST-PASS"
MARK_FAIL = "LKBUILD-VMTEST-FAIL"
LOADER = "lkbuild-loader: "
LOADER_ERROR = "lkbuild-loader: error:"
"""How a module loader states a problem; the first one is the verdict's reason."""

MEMORY_MB = 256
KILL_GRACE = 5.0
"""Seconds qemu gets to exit after SIGTERM before SIGKILL."""

QEMU_PACKAGE = {"amd64": "qemu-system-x86", "arm64": "qemu-system-arm"}
"""Debian package that ships each arch's qemu-system binary."""

QEMU_MACHINE: dict[str, list[str]] = {
    "amd64": [],
    "arm64": ["-M", "virt", "-cpu", "cortex-a57"],
}
"""Machine flags per guest arch: arm64 has no default machine, `virt` powers off via PSCI."""

FINISH = {"amd64": "reboot -f", "arm64": "poweroff -f"}
"""How init ends the VM: a small x86_64 kernel without ACPI cannot power off, so it resets
and qemu's -no-reboot turns the reset into an exit; arm64 `virt` powers off through PSCI."""

ELF_MACHINE = {"amd64": 62, "arm64": 183}
"""e_machine of a static busybox for each arch (EM_X86_64, EM_AARCH64)."""

BUSYBOX_DIR = Path("/usr/local/lib/lkbuild")
"""Where a busybox for a foreign arch is installed as busybox-<arch> (scripts/setup-debian.sh)."""

ACCELS = ("auto", "tcg", "kvm", "hvf")

IMAGE_FILES = ("kernel", "kernel.tar", "config", "kernel-source-info")
"""What vmtest needs from a kernel image; kernel-dev.tar (tens of MB) is never copied."""


# --- results ---------------------------------------------------------------------------------

@dataclass
class VmResult:
    """One boot: the verdict line, the console log that proves it, and how long it took."""

    passed: bool
    verdict: str
    log: Path
    seconds: float
    release: str
    arch: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "verdict": self.verdict, "log": str(self.log),
                "seconds": round(self.seconds, 2), "release": self.release, "arch": self.arch}


@dataclass(frozen=True)
class KernelFiles:
    """A kernel image's files on local disk (its linuxkit layout, without kernel-dev.tar)."""

    kernel: Path
    modules_tar: Path | None
    config: Path | None
    release: str
    source: str  # the image ref or directory it came from, for messages


# --- getting the kernel out of an image ------------------------------------------------------

def _version_of(ref: str) -> str:
    """The kernel version at the start of a tag (`org/kernel:6.12.54-abc-arm64` -> 6.12.54)."""
    tag = ref.rsplit("/", 1)[-1].partition(":")[2]
    match = re.match(r"\d+\.\d+(?:\.\d+)?", tag)
    return match.group(0) if match else "V"


def _build_hint(ref: str, arch: Arch | None) -> str:
    return (f"build it with `inv build --version {_version_of(ref)} "
            f"--arch {arch.name if arch else 'A'}`")


def release_from_tar(path: Path) -> str:
    """The release a modules_install tree is for: the name under lib/modules/."""
    try:
        with tarfile.open(path) as tar:
            for name in tar.getnames():
                parts = Path(name.lstrip("./")).parts
                if len(parts) >= 3 and parts[:2] == ("lib", "modules"):
                    return parts[2]
    except (tarfile.TarError, OSError):
        return ""
    return ""


def release_from_source_info(text: str) -> str:
    """KERNEL_RELEASE from /kernel-source-info (KEY=value lines)."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "KERNEL_RELEASE":
            return value.strip().strip("\"'")
    return ""


def kernel_files(directory: Path, source: str = "") -> KernelFiles:
    """Read an extracted (or hand-made) kernel image layout: `kernel` plus optional files."""
    directory = Path(directory)
    source = source or str(directory)
    kernel = directory / "kernel"
    if not kernel.is_file():
        raise UserError(f"{source} has no /kernel: not a kernel image",
                        "a kernel image holds /kernel, /kernel.tar, /System.map and /config")
    modules_tar = directory / "kernel.tar"
    config = directory / "config"
    info = directory / "kernel-source-info"
    release = release_from_tar(modules_tar) if modules_tar.is_file() else ""
    if not release and info.is_file():
        release = release_from_source_info(info.read_text(errors="replace"))
    if not release:
        raise UserError(f"cannot tell the kernel release of {source}",
                        "it needs lib/modules/<release>/ in /kernel.tar or KERNEL_RELEASE in "
                        "/kernel-source-info")
    return KernelFiles(kernel, modules_tar if modules_tar.is_file() else None,
                       config if config.is_file() else None, release, source)


def extract_kernel(engine: Any, ref: str, dest_dir: Path,
                   arch: Arch | None = None) -> KernelFiles:
    """Copy the files vmtest needs out of a kernel image, without ever running it."""
    attrs = engine.image(ref)
    if attrs is None:
        raise UserError(f"kernel image {ref} does not exist on {engine.describe()}",
                        _build_hint(ref, arch))
    image_arch = str(attrs.get("Architecture") or "")
    if arch is not None and image_arch and image_arch != arch.name:
        raise UserError(f"kernel image {ref} is for {image_arch}, not {arch.name}",
                        f"use --arch {image_arch} or the {arch.name} image")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    spooled = engine.archives(ref, [f"/{name}" for name in IMAGE_FILES], dest_dir / ".spool")
    for name in IMAGE_FILES:
        if f"/{name}" in spooled:
            _untar_one(spooled[f"/{name}"], name, dest_dir / name, ref)
    shutil.rmtree(dest_dir / ".spool", ignore_errors=True)
    return kernel_files(dest_dir, ref)


def _untar_one(spool: Path, name: str, dest: Path, ref: str) -> None:
    """Write the one regular file `name` from a spooled get_archive tar to `dest`."""
    try:
        with tarfile.open(spool) as tar:
            member = tar.getmember(name)
            if not member.isfile():
                raise tarfile.TarError(f"/{name} is not a regular file")
            src = tar.extractfile(member)
            assert src is not None
            with open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise InfraError(f"cannot copy /{name} out of {ref}: {' '.join(str(exc).split())}") \
            from None


# --- the initramfs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


@dataclass
class Cpio:
    """A newc ("070701") archive built in memory: the format the kernel unpacks as initramfs.

    Parents are added for every path and entries are written sorted with uid/gid 0 and
    mtime 0, so the same inputs give the same bytes and the kernel always sees a directory
    before what is in it.
    """

    entries: dict[str, CpioEntry] = field(default_factory=dict)

    @staticmethod
    def _clean(name: str) -> str:
        parts = [p for p in str(name).split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise UserError(f"bad initramfs path {name!r}")
        return "/".join(parts)

    def _put(self, entry: CpioEntry) -> None:
        parts = entry.name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = CpioEntry(parent, stat.S_IFDIR | 0o755)
            elif not stat.S_ISDIR(existing.mode):
                raise UserError(f"initramfs path {entry.name!r} is below the file {parent!r}")
        self.entries[entry.name] = entry

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        self._put(CpioEntry(self._clean(name), stat.S_IFDIR | (perm & 0o7777)))

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._put(CpioEntry(self._clean(name), stat.S_IFREG | (perm & 0o7777), bytes(data)))

    def add_symlink(self, name: str, target: str) -> None:
        self._put(CpioEntry(self._clean(name), stat.S_IFLNK | 0o777, target.encode()))

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._put(CpioEntry(self._clean(name), stat.S_IFCHR | (perm & 0o7777), b"",
                            (major, minor)))

    def add_path(self, name: str, path: Path) -> None:
        """A host file, symlink or whole directory tree at `name`."""
        path = Path(path)
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            self.add_symlink(name, os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            self.add_dir(name, st.st_mode)
            for child in sorted(path.iterdir()):
                self.add_path(f"{name}/{child.name}", child)
        elif stat.S_ISREG(st.st_mode):
            self.add_file(name, path.read_bytes(), st.st_mode)
        else:
            raise UserError(f"cannot put {path} in an initramfs: not a file, dir or symlink")

    def add_tar(self, path: Path, under: str = "") -> None:
        """Every file, dir and symlink of a tar (e.g. kernel.tar's lib/modules/<release>)."""
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    name = member.name.lstrip("/")
                    if name in ("", ".", "./"):
                        continue
                    if under:
                        name = f"{under}/{name}"
                    if member.isdir():
                        self.add_dir(name, member.mode)
                    elif member.issym():
                        self.add_symlink(name, member.linkname)
                    elif member.isfile():
                        src = tar.extractfile(member)
                        self.add_file(name, src.read() if src else b"", member.mode)
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"cannot read {path} for the initramfs: {exc}") from None

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        ordered = sorted(self.entries.values(), key=lambda e: e.name.split("/"))
        for ino, entry in enumerate(ordered, start=1):
            _write_entry(out, entry, ino)
        _write_entry(out, CpioEntry("TRAILER!!!", 0), 0)
        return out.getvalue()


def _pad(out: io.BytesIO) -> None:
    out.write(b"\0" * (-out.tell() % 4))


def _write_entry(out: io.BytesIO, entry: CpioEntry, ino: int) -> None:
    name = entry.name.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    out.write(b"070701" + b"".join(b"%08X" % v for v in fields))
    out.write(name)
    _pad(out)
    out.write(entry.data)
    _pad(out)


def read_cpio(data: bytes) -> list[CpioEntry]:
    """Parse a newc archive (gzip'd or not) back into entries: for tests and inspection."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"bad cpio magic at offset {pos}")
        values = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = values[1], values[6], values[9], values[10], values[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append(CpioEntry(name, mode, body, (rmaj, rmin)))


def elf_facts(path: Path) -> tuple[int, bool]:
    """(e_machine, statically linked) of a 64-bit little-endian ELF; (0, False) if not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return 0, False
            machine = struct.unpack_from("<H", head, 18)[0]
            phoff = struct.unpack_from("<Q", head, 32)[0]
            phentsize, phnum = struct.unpack_from("<HH", head, 54)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return 0, False
    for i in range(phnum):
        if struct.unpack_from("<I", table, i * phentsize)[0] == 3:  # PT_INTERP
            return machine, False
    return machine, True


def busybox_candidates(arch: Arch, host: Arch | None = None) -> list[Path]:
    """Where a static busybox for `arch` may be: the installed busybox-<arch>, and Debian's
    busybox-static when the host runs the same arch."""
    host = host or host_arch()
    found = [BUSYBOX_DIR / f"busybox-{arch.name}"]
    if host.name == arch.name:
        found += [Path("/bin/busybox"), Path("/usr/bin/busybox")]
    return found


def busybox_hint(arch: Arch, host: Arch | None = None) -> str:
    host = host or host_arch()
    if host.name == arch.name:
        return "apt-get install busybox-static"
    deb = f"busybox-static_*_{arch.name}.deb"
    return (f"dpkg --add-architecture {arch.name} && apt-get update && "
            f"apt-get download busybox-static:{arch.name} && dpkg -x {deb} bb && "
            f"install -D -m 0755 bb/bin/busybox {BUSYBOX_DIR}/busybox-{arch.name}")


def find_busybox(arch: Arch, host: Arch | None = None) -> Path:
    """The first static busybox built for `arch`; InfraError naming the package if none."""
    checked = []
    for path in busybox_candidates(arch, host):
        if not path.is_file():
            continue
        machine, static = elf_facts(path)
        if machine == ELF_MACHINE[arch.name] and static:
            return path
        checked.append(f"{path} ({'dynamically linked' if machine else 'wrong arch'})")
    where = ", ".join(str(p) for p in busybox_candidates(arch, host))
    detail = f"; unusable: {', '.join(checked)}" if checked else ""
    raise InfraError(f"no static busybox for {arch.name} (looked at {where}{detail})",
                     busybox_hint(arch, host))


def default_init(arch: Arch, commands: Sequence[str] = ()) -> str:
    """The /init script: mounts, a release marker, each command, PASS or FAIL, end the VM.

    A failing command stops the run with a FAIL line naming it; the VM is ended in every case
    so a failure is reported at once instead of waiting for the timeout.
    """
    finish = FINISH[arch.name]
    lines = [
        "#!/bin/sh",
        "/bin/busybox mkdir -p /proc /sys /dev /tmp /bin /sbin /usr/bin /usr/sbin",
        "/bin/busybox mount -t proc proc /proc",
        "/bin/busybox --install -s",
        "export PATH=/sbin:/bin:/usr/sbin:/usr/bin",
        "mount -t sysfs sysfs /sys",
        "mount -t devtmpfs devtmpfs /dev 2>/dev/null",
        f"finish() {{ sync; {finish}; sleep 5; exit 1; }}",
        f'echo "{MARK_BEGIN} $(uname -r) $(uname -m)"',
    ]
    for n, command in enumerate(commands, start=1):
        shown = shlex.quote(" ".join(command.split()))
        lines += [
            f"echo {shlex.quote(f'{MARK_RUN} {n}:')} {shown}",
            f"/bin/sh -c {shlex.quote(command)} </dev/null 2>&1; rc=$?",
            f'if [ "$rc" -ne 0 ]; then echo "{MARK_FAIL} command {n} exited $rc:" {shown}; '
            "finish; fi",
        ]
    lines += [f"echo {MARK_PASS}", "finish", ""]
    return "\n".join(lines)


def make_initramfs(arch: Arch, dest: Path, busybox: Path, init_script: str,
                   extra_files: Mapping[str, Path] | None = None, *,
                   tars: Sequence[Path] = ()) -> Path:
    """Write a gzip'd newc initramfs: busybox, /init, device nodes, then extra files and tars.

    `extra_files` maps a path inside the initramfs to a host file or directory (modules go
    under lib/modules/<release>/...); `tars` are added whole (kernel.tar, a module image's
    files). The busybox must be a static one for `arch`: the guest has no libc.
    """
    machine, static = elf_facts(Path(busybox))
    if machine != ELF_MACHINE[arch.name] or not static:
        raise InfraError(f"{busybox} is not a static busybox for {arch.name}",
                         busybox_hint(arch))
    cpio = Cpio()
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root",
                 "etc", "lib/modules"):
        cpio.add_dir(name)
    cpio.add_file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    cpio.add_symlink("bin/sh", "busybox")
    cpio.add_chardev("dev/console", 5, 1, 0o600)
    cpio.add_chardev("dev/null", 1, 3, 0o666)
    for tar in tars:
        cpio.add_tar(Path(tar))
    for name, path in sorted((extra_files or {}).items()):
        cpio.add_path(name, Path(path))
    cpio.add_file("init", init_script.encode(), 0o755)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                compresslevel=6, mtime=0) as gz:
        gz.write(cpio.to_bytes())
    return dest


# --- qemu ------------------------------------------------------------------------------------

def resolve_accel(accel: str, arch: Arch, host_os: str | None = None,
                  host: Arch | None = None) -> str:
    """`auto` is hvf on macOS when guest and host arch match, else TCG.

    KVM only when asked for: on the development machines /dev/kvm exists but QEMU 7.2 aborts
    or hangs with it, so it is never picked by itself.
    """
    accel = (accel or "auto").strip().lower()
    if accel not in ACCELS:
        raise UserError(f"unknown accelerator {accel!r}", f"supported are {', '.join(ACCELS)}")
    if accel != "auto":
        return accel
    host_os = sys.platform if host_os is None else host_os
    if host_os == "darwin":
        try:
            same = (host or host_arch()).name == arch.name
        except UserError:
            same = False
        if same:
            return "hvf"
    return "tcg"


def kernel_cmdline(arch: Arch, extra: str = "") -> str:
    """Console on the arch's first serial port; any panic or oops ends the VM at once."""
    args = [f"console={arch.console}", "panic=-1", "oops=panic", "rdinit=/init"]
    return " ".join(args + ([extra] if extra else []))


def qemu_command(arch: Arch, kernel: Path, initrd: Path, accel: str = "tcg",
                 append: str = "", memory_mb: int = MEMORY_MB) -> list[str]:
    """The qemu command line: serial console on stdout, no display, no NIC, exit on reset."""
    accel = resolve_accel(accel, arch)
    cmd = [arch.qemu, *QEMU_MACHINE[arch.name], "-accel", accel]
    if accel in ("kvm", "hvf"):
        if arch.name == "arm64":
            cmd[cmd.index("-cpu") + 1] = "host"
        else:
            cmd += ["-cpu", "host"]
    cmd += ["-m", str(memory_mb), "-smp", "1", "-nographic", "-monitor", "none",
            "-serial", "stdio", "-nic", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", kernel_cmdline(arch, append)]
    return cmd


def find_qemu(arch: Arch) -> str:
    path = shutil.which(arch.qemu)
    if path is None:
        fix = ("brew install qemu" if sys.platform == "darwin"
               else f"apt-get install {QEMU_PACKAGE[arch.name]}")
        raise InfraError(f"{arch.qemu} is not on PATH (needed to boot {arch.name} kernels)", fix)
    return path


# --- the verdict -----------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-Z\\-_a-z])")
_PANIC = re.compile(r"Kernel panic - not syncing:?\s*(.*)")
_INIT_EXIT = re.compile(r"Attempted to kill init!\s*exitcode=0x([0-9a-fA-F]+)")


def clean_lines(text: str) -> list[str]:
    """Console text as lines without CRs, terminal escapes or trailing blanks."""
    out = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _ANSI.sub("", line).rstrip()
        if line:
            out.append(line)
    return out


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def step_of(line: str) -> str | None:
    """What a person watching a boot wants of a console line (the kernel up, each command as
    it starts, the module loader's own lines), or None."""
    if MARK_BEGIN in line:
        release, _, machine = _after(line, MARK_BEGIN).partition(" ")
        return f"booted {release} ({machine})" if machine else f"booted {release}"
    if MARK_RUN in line:
        return "running " + _after(line, MARK_RUN)
    if LOADER in line:
        return line[line.index(LOADER):]
    return None


def _after(line: str, marker: str) -> str:
    return line[line.index(marker) + len(marker):].strip()


def verdict(console: str, release: str, exited: bool, timeout: float, seconds: float = 0.0,
            returncode: int | None = 0, qemu_error: str = "",
            uname: str = "") -> tuple[bool, str]:
    """(passed, one line) from the serial console: pure, so every case is unit-tested.

    Passed needs all three: the kernel's release marker equals the image's release, init
    printed PASS, and qemu ended by itself (the guest powered off or reset).
    """
    lines = clean_lines(console)
    begins = [_after(ln, MARK_BEGIN).split() for ln in lines if MARK_BEGIN in ln]
    passed = any(ln.endswith(MARK_PASS) or MARK_PASS + " " in ln for ln in lines)
    fails = [_after(ln, MARK_FAIL) for ln in lines if MARK_FAIL in ln]
    runs = [_after(ln, MARK_RUN) for ln in lines if MARK_RUN in ln]
    panics = [m.group(1).strip() for ln in lines if (m := _PANIC.search(ln))]
    booted = begins[0][0] if begins and begins[0] else ""
    seen_arch = begins[0][1] if begins and len(begins[0]) > 1 else ""
    last = _short(lines[-1]) if lines else ""

    if panics:
        why = panics[0].rstrip(" ]-").strip() or "no reason given"
        code = _INIT_EXIT.search(why)
        if code:
            status = int(code.group(1), 16)
            how = f"status {status >> 8}" if status & 0x7F == 0 else f"signal {status & 0x7F}"
            return False, _short(f"init exited with {how} (kernel panic: {why})", 200)
        return False, _short(f"kernel panic: {why}", 200)
    loader_errors = [_after(ln, LOADER_ERROR) for ln in lines if LOADER_ERROR in ln]
    if fails and loader_errors:
        return False, _short(f"the loader refused: {loader_errors[0]}", 300)
    if fails:
        return False, _short(f"init failed: {fails[0] or 'no reason given'}", 200)
    if booted and booted != release:
        return False, f"kernel reports release {booted}, the image is {release}"
    if booted and uname and seen_arch and seen_arch != uname:
        return False, f"kernel reports arch {seen_arch}, expected {uname}"
    if not exited:
        if not lines:
            return False, f"timed out after {timeout:g}s with no output from the kernel"
        if not booted:
            return False, f"timed out after {timeout:g}s; init did not start (last line: {last})"
        if passed:
            return False, f"timed out after {timeout:g}s: init passed but the VM did not end"
        if runs:
            return False, _short(f"timed out after {timeout:g}s in command {runs[-1]}", 200)
        return False, f"timed out after {timeout:g}s; init started, last line: {last}"
    if qemu_error and returncode not in (0, None):
        return False, _short(f"qemu exited {returncode}: {qemu_error}", 200)
    if not lines:
        return False, "no output from the kernel"
    if not booted:
        return False, f"init did not start (last line: {last})"
    if not passed:
        return False, f"init ended without {MARK_PASS} (last line: {last})"
    return True, f"booted {release} and init passed in {seconds:.1f}s"


# --- boot ------------------------------------------------------------------------------------

def is_version(text: str) -> bool:
    """A kernel version (6.12.54, 6.12.54-dbg) rather than an image reference or a directory."""
    return bool(re.fullmatch(r"\d+\.\d+(?:\.\d+)?(?:-[A-Za-z0-9_.]+)?", text.strip()))


def console_tail(log: Path, count: int = 25) -> list[str]:
    """The last console lines of a log, without lkbuild's own framing lines: what to show
    under a failed verdict when the console was not streamed."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return []
    lines = [line for line in clean_lines(text) if not line.startswith("--- ")]
    return lines[-count:]


def _log_path(settings: Settings, release: str, arch: Arch) -> Path:
    logs = Path(settings.cache_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(dir=logs, prefix=f"vmtest-{release}-{arch.name}-{stamp}-",
                                suffix=".log")
    os.close(fd)
    return Path(name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the qemu we started (by its pid only): TERM, then KILL after a grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


@dataclass
class QemuRun:
    console: str
    exited: bool
    returncode: int | None
    stderr: str
    seconds: float
    pid: int


def run_qemu(cmd: Sequence[str], log: Path, timeout: float,
             echo: Callable[[str], None] | None = None,
             on_start: Callable[[int], None] | None = None) -> QemuRun:
    """Run qemu with its serial console on stdout, copied to `log` (and `echo`) as it comes.

    After `timeout` seconds the qemu process is stopped; it is never left running, also not
    on Ctrl-C.
    """
    with tempfile.TemporaryFile() as err, open(log, "ab") as logfh:
        logfh.write(f"--- {shlex.join(cmd)}\n".encode())
        logfh.flush()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err)
        except OSError as exc:
            raise InfraError(f"cannot run {cmd[0]}: {exc.strerror or exc}") from None
        if on_start is not None:
            on_start(proc.pid)
        captured: list[bytes] = []

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                captured.append(raw)
                logfh.write(raw)
                logfh.flush()
                if echo is not None:
                    text = _ANSI.sub("", raw.decode(errors="replace")).rstrip()
                    if text:
                        echo(text)

        reader = threading.Thread(target=pump, name="qemu-console", daemon=True)
        reader.start()
        exited = True
        try:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                exited = False
        finally:
            _stop(proc)
            reader.join(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        seconds = time.monotonic() - start
        err.seek(0)
        stderr = err.read().decode(errors="replace").strip()
        if stderr:
            logfh.write(f"--- qemu stderr\n{stderr}\n".encode())
        logfh.write(f"--- qemu {'exited ' + str(proc.returncode) if exited else 'stopped'}"
                    f" after {seconds:.2f}s\n".encode())
    console = b"".join(captured).decode(errors="replace")
    return QemuRun(console, exited, proc.returncode if exited else None, stderr, seconds,
                   proc.pid)


def boot(settings: Settings, ref_or_dir: str | Path, arch: Arch, *, timeout: float = 120,
         extra_files: Mapping[str, Path] | None = None, commands: Sequence[str] | None = None,
         accel: str = "auto", kernel_modules: bool = False, init_script: str | None = None,
         engine: Any = None, busybox: Path | None = None, stream: bool = False,
         append: str = "", on_start: Callable[[int], None] | None = None,
         tars: Sequence[Path] = (), memory_mb: int = MEMORY_MB) -> VmResult:
    """Boot a kernel image (a ref, or a directory in its layout) and judge the console.

    `commands` run in the guest after the release marker and must all exit 0 (module loads);
    `extra_files` go into the initramfs at the given paths; `kernel_modules` adds the image's
    own kernel.tar (lib/modules/<release>) so modprobe finds in-tree modules; `tars` are added
    whole (a loader image's /lkbuild). `init_script`
    replaces the whole /init; `append` adds kernel parameters. A failed boot is a VmResult
    with passed False, not an exception; exceptions are for what stops the test from running
    at all.
    """
    if timeout <= 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    qemu = find_qemu(arch)
    resolve_accel(accel, arch)
    bb = Path(busybox) if busybox else find_busybox(arch)
    with tempfile.TemporaryDirectory(prefix="lkbuild-vm-") as tmp:
        work = Path(tmp)
        if isinstance(ref_or_dir, Path) or Path(ref_or_dir).is_dir():
            files = kernel_files(Path(ref_or_dir))
        else:
            ref = str(ref_or_dir)
            own = engine is None
            if own:
                from . import engine as enginemod
                engine = enginemod.connect(settings)
            try:
                files = extract_kernel(engine, ref, work / "image", arch)
            finally:
                if own:
                    engine.close()
        tars = ([files.modules_tar] if kernel_modules and files.modules_tar else []) \
            + [Path(t) for t in tars]
        script = init_script if init_script is not None else default_init(arch, commands or ())
        initrd = make_initramfs(arch, work / "initramfs.cpio.gz", bb, script, extra_files,
                                tars=tars)
        cmd = qemu_command(arch, files.kernel, initrd, accel, append, memory_mb)
        cmd[0] = qemu
        log = _log_path(settings, files.release, arch)
        ui.info(f"booting {files.source} ({files.release}, {arch.name}) in qemu; "
                f"console log {log}")
        started = time.monotonic()

        def steps(line: str) -> None:
            said = step_of(line)
            if said:
                ui.info(f"  {progress.duration(time.monotonic() - started):>6}  {said}")

        echo = (lambda line: ui.info(f"  | {line}")) if stream else steps
        run = run_qemu(cmd, log, timeout, echo, on_start)
    ok, line = verdict(run.console, files.release, run.exited, timeout, run.seconds,
                       run.returncode, run.stderr.splitlines()[-1] if run.stderr else "",
                       arch.uname)
    return VmResult(ok, line, log, run.seconds, files.release, arch.name)
