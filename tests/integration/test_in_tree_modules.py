"""In-tree modules (sctp, wireguard, any tristate) built from the kernel's own source against
a kernel that lacks them, through the real engine and BuildKit, and loaded in real qemu.

The kernel is the session's small kernel with networking (tests/data/net*.fragment): SCTP
configured as a module (a VM that left its .ko out), no WireGuard, no IPv6, no Open vSwitch.
The small kernel itself has no networking at all. Nothing is loaded into this machine's
kernel: the loader only runs inside a VM booted with the kernel the modules were built for.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.kernels import DATA, DEBIAN_SOURCE, SCOPE, image_files, lkbuild, small_args
from tests.integration.test_modules import refused

NET_SCOPE = f"{SCOPE}-net"
"""The networking kernel's own cache scope: its config differs from the small kernel's in
thousands of objects, so sharing a build dir would rebuild most of both each time they
alternate."""


def net(arch: str) -> tuple[str, ...]:
    """The networking kernel's fragments: x86_64's WireGuard needs a bool of its own."""
    return ("net.fragment", *(("net-x86_64.fragment",) if arch == "amd64" else ()))


@pytest.fixture(scope="session")
def net_kernel(kernel_cache: Path, kver: str) -> Callable[[str], dict]:
    """The small kernel with networking, once a session per arch, in its own cache scope."""
    built: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in built:
            frags = [arg for f in net(arch) for arg in ("--fragment", str(DATA / f))]
            run = lkbuild(kernel_cache, "build", *small_args(kver, arch, *frags), "--json",
                          env={"LKBUILD_CACHE_ID": NET_SCOPE})
            assert run.code == 0, run.err[-3000:]
            (built[arch],) = run.json()
        return built[arch]

    return get


@pytest.fixture(scope="session")
def in_tree(kernel_cache: Path, net_kernel: Callable[[str], dict]) -> Callable[..., dict]:
    """buildmodule of an in-tree recipe against the networking kernel, once a session."""
    built: dict[tuple[str, str], dict] = {}

    def get(arch: str, module: str) -> dict:
        if (arch, module) not in built:
            kernel = net_kernel(arch)["refs"][0]
            run = lkbuild(kernel_cache, "buildmodule", "--kernel", kernel, "--source",
                          str(DEBIAN_SOURCE), "--module", module, "--json")
            assert run.code == 0, run.err[-3000:]
            built[(arch, module)] = run.json()
        return built[(arch, module)]

    return get


def loads_in_qemu(kernel_cache: Path, kernel: str, arch: str, loader: str,
                  modules: list[str]) -> str:
    run = lkbuild(kernel_cache, "vmtest", "--kernel", kernel, "--arch", arch, "--module",
                  loader, "--json")
    assert run.code == 0, run.err[-3000:]
    verdict = run.json()
    assert verdict["passed"], verdict
    console = Path(verdict["log"]).read_text(errors="replace")
    for name in modules:
        assert f"lkbuild-loader: loaded {name}" in console, console[-3000:]
    return console


def check_in_tree(in_tree: Callable[..., dict], net_kernel: Callable[[str], dict],
                  kernel_cache: Path, arch: str) -> None:
    kernel = net_kernel(arch)
    release = kernel["release"]
    sctp = in_tree(arch, "sctp")
    assert sctp["modules"] == ["sctp"] and sctp["release"] == release
    assert sctp["vermagic"] == kernel["vermagic"]
    files = image_files(sctp["refs"][0])
    assert f"lib/modules/{release}/extra/sctp.ko" in files
    console = loads_in_qemu(kernel_cache, kernel["refs"][0], arch, sctp["loader_refs"][0],
                            ["sctp"])
    assert "test -d /proc/net/sctp" in console

    wireguard = in_tree(arch, "wireguard")
    # WireGuard takes the crypto library modules the kernel lacks: the loader loads them
    # first, in the order their symbols need.
    mods = wireguard["modules"]
    assert mods[-1] == "wireguard" and len(mods) > 1, mods
    assert any(m.startswith("libcurve25519") or "curve25519" in m for m in mods), mods
    console = loads_in_qemu(kernel_cache, kernel["refs"][0], arch,
                            wireguard["loader_refs"][0], mods)
    assert "ip link add wg0 type wireguard" in console


@pytest.mark.ci
def test_sctp_and_wireguard_build_from_the_kernel_source_and_load_in_qemu(
        in_tree, net_kernel, kernel_cache):
    check_in_tree(in_tree, net_kernel, kernel_cache, "amd64")


@pytest.mark.full
def test_sctp_and_wireguard_load_in_qemu_on_arm64(in_tree, net_kernel, kernel_cache):
    check_in_tree(in_tree, net_kernel, kernel_cache, "arm64")


@pytest.mark.ci
def test_sctp_on_a_kernel_without_inet_is_one_line_naming_what_it_needs(small_kernel,
                                                                       kernel_cache):
    line = refused(kernel_cache, "--kernel", small_kernel("amd64")["refs"][0], "--source",
                   str(DEBIAN_SOURCE), "--module", "sctp")
    assert "cannot take sctp as a module" in line, line
    assert "CONFIG_IP_SCTP needs CONFIG_NET, CONFIG_INET" in line, line
    assert "CONFIG_NET=y CONFIG_INET=y CONFIG_IP_SCTP=m" in line, line


@pytest.mark.ci
def test_a_module_whose_symbol_changes_the_kernels_structures_is_refused(net_kernel,
                                                                         kernel_cache):
    # struct net has an ipv6 member only in a kernel built with IPv6
    line = refused(kernel_cache, "--kernel", net_kernel("amd64")["refs"][0],
                   "--source", str(DEBIAN_SOURCE), "--in-tree", "CONFIG_IPV6")
    assert "cannot take ipv6 as a module" in line, line
    assert "headers test CONFIG_IPV6 in include/" in line, line
    assert "CONFIG_IPV6=m" in line, line


@pytest.mark.full
def test_a_module_that_changes_the_kernel_itself_is_refused(net_kernel, kernel_cache):
    # Open vSwitch selects MPLS, a bool of the kernel's own networking
    line = refused(kernel_cache, "--kernel", net_kernel("amd64")["refs"][0],
                   "--source", str(DEBIAN_SOURCE), "--module", "openvswitch")
    assert "cannot take openvswitch as a module" in line, line
    assert "CONFIG_MPLS: not set -> y" in line, line


@pytest.mark.ci
def test_in_tree_input_errors_are_one_line(net_kernel, kernel_cache, tmp_path):
    kernel = net_kernel("amd64")["refs"][0]
    line = refused(kernel_cache, "--kernel", kernel, "--in-tree", "IP_SCTP")
    assert "needs the source" in line and "--source" in line, line
    other = tmp_path / "linux-6.12.1.tar.xz"
    other.write_bytes(b"not the kernel's source")
    line = refused(kernel_cache, "--kernel", kernel, "--source", str(other), "--in-tree",
                   "IP_SCTP")
    assert "is not the source" in line, line
    line = refused(kernel_cache, "--kernel", kernel, "--source", str(DEBIAN_SOURCE),
                   "--in-tree", "not a symbol")
    assert "is not a Kconfig symbol" in line, line
    line = refused(kernel_cache, "--kernel", kernel, "--source", str(DEBIAN_SOURCE),
                   "--in-tree", "CONFIG_NO_SUCH_THING")
    assert "has no CONFIG_NO_SUCH_THING in its Kconfig" in line, line
