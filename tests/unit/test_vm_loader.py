"""vm.verdict() when a module loader runs in the VM: its own refusal is the verdict."""
from __future__ import annotations

import pytest

from recipes import vm

pytestmark = pytest.mark.unit

RELEASE = "6.12.54-linuxkit"
BOOT = f"""\x1bc\x1b[?7l\x1b[2JSeaBIOS (version 1.16.2-debian-1.16.2-1)
Linux version {RELEASE} (root@buildkitsandbox) #1 SMP PREEMPT\r
Run /init as init process\r
{vm.MARK_BEGIN} {RELEASE} aarch64\r
{vm.MARK_RUN} 1: /lkbuild/bin/busybox sh /lkbuild/load\r
"""
MISMATCH = (f"vermagic mismatch: zfs.ko has '{RELEASE} SMP mod_unload aarch64', "
            f"the kernel has '{RELEASE} SMP preempt mod_unload aarch64'")
FAIL = f"{vm.MARK_FAIL} command 1 exited 1: /lkbuild/bin/busybox sh /lkbuild/load\r\n"


def test_a_loader_refusal_is_the_verdict_when_init_fails():
    log = f"{BOOT}lkbuild-loader: loading spl\r\nlkbuild-loader: error: {MISMATCH}\r\n{FAIL}"
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok
    assert line.startswith("the loader refused: vermagic mismatch")
    assert line == f"the loader refused: {MISMATCH}"


def test_a_loader_refusal_verdict_is_one_short_line_without_escapes():
    long = MISMATCH + " " + "x" * 500
    log = f"{BOOT}\x1b[31mlkbuild-loader: error: {long}\x1b[0m\r\n{FAIL}"
    ok, line = vm.verdict(log, RELEASE, exited=False, timeout=60)
    assert not ok and line.startswith("the loader refused: vermagic mismatch: zfs.ko has")
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert len(line) <= 300 and line.endswith("...")


def test_the_first_loader_error_is_the_one_reported():
    log = (f"{BOOT}lkbuild-loader: error: {MISMATCH}\n"
           f"lkbuild-loader: error: spl is not in /proc/modules\n{FAIL}")
    assert vm.verdict(log, RELEASE, exited=True, timeout=60) == (
        False, f"the loader refused: {MISMATCH}")


def test_a_failing_init_without_a_loader_error_is_an_init_failure():
    log = f"{BOOT}insmod: can't insert 'zfs.ko': invalid module format\r\n{FAIL}"
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok and line.startswith("init failed: command 1 exited 1")


def test_a_loader_error_line_without_an_init_failure_is_not_a_refusal():
    log = f"{BOOT}lkbuild-loader: error: {MISMATCH}\r\n{vm.MARK_PASS}\r\n"
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert ok and line.startswith(f"booted {RELEASE}")


def test_a_kernel_panic_still_wins_over_a_loader_refusal():
    log = (f"{BOOT}lkbuild-loader: error: {MISMATCH}\r\n{FAIL}"
           "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\r\n")
    ok, line = vm.verdict(log, RELEASE, exited=True, timeout=60)
    assert not ok and line.startswith("init exited with status 1")
