"""Which way a module is compiled, decided from the builder image alone."""
from __future__ import annotations

import pytest

from recipes import module
from recipes.arch import resolve

pytestmark = pytest.mark.unit

AMD64, ARM64 = resolve("amd64"), resolve("arm64")


def target(arch, builder_arch="", env=(), labels=None, builder_labels=None):
    t = module.KernelTarget("org/kernel:6.12.54-abc-" + arch.name, "sha256:k", arch,
                            labels or {})
    t.builder, t.builder_arch, t.builder_env = "org/kernel:b", builder_arch, list(env)
    t.builder_labels = builder_labels or {}
    return t


def test_a_cross_builder_image_runs_on_the_build_platform_with_its_own_prefix():
    t = target(ARM64, "amd64", ["PATH=/bin", "ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"])
    assert module.toolchain_of(t, AMD64) == ("cross", "aarch64-linux-gnu-")


def test_a_plain_build_platform_image_cross_compiles_a_foreign_target():
    assert module.toolchain_of(target(ARM64, "amd64"), AMD64) == ("cross", "aarch64-linux-gnu-")


def test_a_same_arch_builder_needs_no_prefix():
    assert module.toolchain_of(target(AMD64, "amd64", ["CROSS_COMPILE="]), AMD64) == ("cross", "")


def test_a_target_arch_builder_without_a_cross_compiler_runs_as_the_target():
    assert module.toolchain_of(target(ARM64, "arm64"), AMD64) == ("native", "")


def test_kernel_dev_is_known_present_only_in_the_kernels_own_builder():
    labels = {"org.lkbuild.kernel.hash": "abc", "org.lkbuild.kernel.release": "6.12.54-linuxkit"}
    assert module.dev_present(target(AMD64, labels=labels, builder_labels=dict(labels)))
    other = dict(labels, **{"org.lkbuild.kernel.hash": "def"})
    assert not module.dev_present(target(AMD64, labels=labels, builder_labels=other))
    assert not module.dev_present(target(AMD64, labels={}, builder_labels={}))
    no_release = {"org.lkbuild.kernel.hash": "abc"}  # its release is what the module gets
    assert not module.dev_present(target(AMD64, labels=no_release,
                                         builder_labels=dict(no_release)))


def test_the_vm_runs_the_loader_checks_each_module_and_runs_the_loader_again():
    loader = module.Loader("org/zfs:l", None, ["spl", "zfs"], "6.12.54")
    commands = loader.commands()
    assert commands[0] == commands[-1] == "/lkbuild/bin/busybox sh /lkbuild/load"
    assert "grep -q '^spl ' /proc/modules" in commands[1]
    assert "grep -q '^zfs ' /proc/modules" in commands[2] and len(commands) == 4
