"""In-tree modules: Kconfig expressions, the closure of CONFIG_X=m, the refusals, the steps."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from recipes import intree, kconfig_tree, modrecipe
from recipes.errors import UserError

pytestmark = pytest.mark.unit

# A tree shaped like the kernel's around sctp and wireguard: a tristate protocol under NET and
# INET with options in its `if` block and a choice that selects a tristate; a driver that
# selects a kernel bool (DST_CACHE) and hidden arch bools of the crypto library.
KCONFIG = {
    "Kconfig": 'source "net/Kconfig"\nsource "lib/Kconfig"\n',
    "net/Kconfig": """
menuconfig NET
	bool "Networking support"
if NET
config INET
	bool "TCP/IP networking"
config IPV6
	tristate "IPv6"
	depends on INET
source "net/sctp/Kconfig"
config DST_CACHE
	bool
config WIREGUARD
	tristate "WireGuard"
	depends on NET && INET
	depends on IPV6 || !IPV6
	select DST_CACHE
	select CRYPTO_LIB_CHACHA
	select ARCH_HAVE_LIB_CHACHA
endif
""",
    "net/sctp/Kconfig": """
menuconfig IP_SCTP
	tristate "The SCTP Protocol"
	depends on INET
	depends on IPV6 || IPV6=n
	select CRYPTO_HMAC
	select NET_UDP_TUNNEL
	help
		SCTP.
if IP_SCTP
config SCTP_DBG_OBJCNT
	bool "SCTP: Debug object counts"
choice
	prompt "Default SCTP cookie HMAC encoding"
config SCTP_DEFAULT_COOKIE_HMAC_MD5
	bool "MD5"
	select SCTP_COOKIE_HMAC_MD5
config SCTP_DEFAULT_COOKIE_HMAC_NONE
	bool "none"
endchoice
config SCTP_COOKIE_HMAC_MD5
	bool "Enable optional MD5 hmac cookie generation"
	select CRYPTO_MD5 if SCTP_COOKIE_HMAC_MD5
endif
config NET_UDP_TUNNEL
	tristate
""",
    "lib/Kconfig": """
config CRYPTO_HMAC
	tristate "HMAC"
config CRYPTO_MD5
	tristate "MD5"
config CRYPTO_LIB_CHACHA
	tristate
config ARCH_HAVE_LIB_CHACHA
	bool
config FRAME_WARN
	int "Warn for stack frames larger than"
	default 2048
""",
}
MAKEFILES = {
    "net/sctp/Makefile": "obj-$(CONFIG_IP_SCTP) += sctp.o\nsctp-y := sm_statetable.o \\\n"
                         "\tprotocol.o\nsctp-$(CONFIG_SCTP_DBG_OBJCNT) += objcnt.o\n",
    "net/ipv4/Makefile": "obj-y := route.o\nobj-$(CONFIG_NET_UDP_TUNNEL) += udp_tunnel.o\n",
    "net/Makefile": "obj-$(CONFIG_IP_SCTP) += sctp/\n",
    "crypto/Makefile": "obj-$(CONFIG_CRYPTO_HMAC) += hmac.o\nobj-$(CONFIG_CRYPTO_MD5) += \\\n"
                       "\tmd5.o # the md5 digest\n",
    "lib/crypto/Makefile": "obj-$(CONFIG_CRYPTO_LIB_CHACHA) += libchacha-generic.o\n",
    "arch/arm/crypto/Makefile": "obj-$(CONFIG_CRYPTO_LIB_CHACHA) += chacha-neon.o\n",
    "arch/arm64/crypto/Makefile": "obj-$(CONFIG_CRYPTO_LIB_CHACHA) += chacha-neon.o\n",
}
NET = {"CONFIG_NET": "y", "CONFIG_INET": "y", "CONFIG_IPV6": "n", "CONFIG_FRAME_WARN": "2048"}


@pytest.fixture(scope="module")
def facts() -> kconfig_tree.Facts:
    return kconfig_tree.parse(KCONFIG, "x86")


@pytest.mark.parametrize(("expr", "config", "value"), [
    ("INET", {"CONFIG_INET": "y"}, 2),
    ("INET", {}, 0),
    ("IPV6 || IPV6=n", {}, 2),
    ("IPV6 || IPV6=n", {"CONFIG_IPV6": "m"}, 1),
    ("NET && INET", {"CONFIG_NET": "y", "CONFIG_INET": "m"}, 1),
    ("!KMSAN", {}, 2),
    ("!(A || B)", {"CONFIG_B": "y"}, 0),
    ("A != n", {"CONFIG_A": "m"}, 2),
    ('X = "ab"', {"CONFIG_X": '"ab"'}, 2),
    ("", {}, 2),
])
def test_expressions_evaluate_in_tristate_logic(expr: str, config: dict, value: int) -> None:
    assert intree.evaluate(expr, config) == value


def test_the_tree_reads_types_dependencies_and_selectors(facts: kconfig_tree.Facts) -> None:
    assert facts.types["CONFIG_IP_SCTP"] == "tristate"
    assert facts.types["CONFIG_SCTP_DBG_OBJCNT"] == "bool"
    assert facts.types["CONFIG_FRAME_WARN"] == "int"
    assert facts.depends["CONFIG_IP_SCTP"] == (("NET", "INET", "IPV6 || IPV6=n"),)
    # the choice member is scoped by the `if IP_SCTP` around its choice
    assert "CONFIG_IP_SCTP" in facts.scope("CONFIG_SCTP_DEFAULT_COOKIE_HMAC_MD5")
    assert facts.selectors["CONFIG_DST_CACHE"] == {"CONFIG_WIREGUARD"}
    assert facts.selectors["CONFIG_CRYPTO_MD5"] == {"CONFIG_SCTP_COOKIE_HMAC_MD5"}


def test_what_a_symbol_needs_is_named_innermost_first(facts: kconfig_tree.Facts) -> None:
    assert intree.unmet("CONFIG_IP_SCTP", {}, facts) == ["CONFIG_NET", "CONFIG_INET"]
    assert intree.unmet("CONFIG_IP_SCTP", NET, facts) == []


def sctp_after(before: dict) -> dict:
    """What the kernel's olddefconfig makes of CONFIG_IP_SCTP=m on `before` (written out by
    hand from the Kconfig above, as the builder's run gives it)."""
    return before | {"CONFIG_IP_SCTP": "m", "CONFIG_NET_UDP_TUNNEL": "m",
                     "CONFIG_CRYPTO_HMAC": "m", "CONFIG_SCTP_DEFAULT_COOKIE_HMAC_MD5": "y",
                     "CONFIG_SCTP_COOKIE_HMAC_MD5": "y", "CONFIG_CRYPTO_MD5": "y",
                     "CONFIG_SCTP_DBG_OBJCNT": "n"}


def test_sctp_takes_its_dependency_modules_and_its_options(facts: kconfig_tree.Facts) -> None:
    closure = intree.close(["CONFIG_IP_SCTP"], NET, sctp_after(NET), facts)
    assert closure.fits, closure.as_json()
    # MD5 is forced to y only by an SCTP option: it is built as a module with the rest
    assert closure.modules == ["CONFIG_IP_SCTP", "CONFIG_CRYPTO_HMAC", "CONFIG_NET_UDP_TUNNEL",
                               "CONFIG_CRYPTO_MD5"]
    assert closure.options == {"CONFIG_SCTP_COOKIE_HMAC_MD5": "y",
                               "CONFIG_SCTP_DEFAULT_COOKIE_HMAC_MD5": "y"}
    assert "CONFIG_CRYPTO_MD5=m" in closure.make_vars()
    assert "CONFIG_SCTP_COOKIE_HMAC_MD5=y" in closure.make_vars()
    header = closure.header()
    assert "#define CONFIG_IP_SCTP_MODULE 1" in header
    assert "#define CONFIG_SCTP_COOKIE_HMAC_MD5 1" in header
    assert "#define CONFIG_CRYPTO_MD5 1" not in header


def test_a_kernel_without_inet_is_refused_naming_what_it_needs(facts: kconfig_tree.Facts
                                                               ) -> None:
    before = {"CONFIG_FRAME_WARN": "2048"}
    closure = intree.close(["CONFIG_IP_SCTP"], before, before, facts)
    assert closure.missing == {"CONFIG_IP_SCTP": ["CONFIG_NET", "CONFIG_INET"]}
    error = intree.refusal(closure, "k:1", "sctp")
    assert error is not None
    assert "CONFIG_IP_SCTP needs CONFIG_NET, CONFIG_INET" in str(error)
    assert "CONFIG_NET=y CONFIG_INET=y CONFIG_IP_SCTP=m" in error.hint


def test_a_module_the_kernels_headers_test_is_refused(facts: kconfig_tree.Facts) -> None:
    uses = intree.header_uses([
        "include/net/net_namespace.h:140:#if defined(CONFIG_IP_SCTP) || "
        "defined(CONFIG_IP_SCTP_MODULE)",
        "include/linux/skbuff.h:1011:#if IS_ENABLED(CONFIG_IP_SCTP)",
        "include/crypto/chacha.h:44:\tif (IS_ENABLED(CONFIG_ARCH_HAVE_LIB_CHACHA))",
    ], ["CONFIG_IP_SCTP", "CONFIG_ARCH_HAVE_LIB_CHACHA"])
    assert uses == {"CONFIG_IP_SCTP": ["include/linux/skbuff.h",
                                       "include/net/net_namespace.h"]}
    closure = intree.close(["CONFIG_IP_SCTP"], NET, sctp_after(NET), facts, uses)
    error = intree.refusal(closure, "k:1", "sctp")
    assert error is not None and "headers test CONFIG_IP_SCTP" in str(error)
    assert "include/net/net_namespace.h" in str(error)
    # a kernel configured with it (a VM that left the .ko out) lays its structures out for it
    configured = sctp_after(NET)
    closure = intree.close(["CONFIG_IP_SCTP"], configured, configured, facts, uses)
    assert closure.fits and closure.modules == ["CONFIG_IP_SCTP"]


def test_a_bool_of_the_kernel_itself_is_refused(facts: kconfig_tree.Facts) -> None:
    after = NET | {"CONFIG_WIREGUARD": "m", "CONFIG_DST_CACHE": "y", "CONFIG_FRAME_WARN": "1024",
                   "CONFIG_CRYPTO_LIB_CHACHA": "m", "CONFIG_ARCH_HAVE_LIB_CHACHA": "y"}
    closure = intree.close(["CONFIG_WIREGUARD"], NET, after, facts)
    # the hidden bools only it selects are its options; a prompted int of the kernel is not
    assert set(closure.options) == {"CONFIG_DST_CACHE", "CONFIG_ARCH_HAVE_LIB_CHACHA"}
    assert [c.symbol for c in closure.kernel] == ["CONFIG_FRAME_WARN"]
    error = intree.refusal(closure, "k:1", "wireguard")
    assert error is not None and "CONFIG_FRAME_WARN: 2048 -> 1024" in str(error)
    assert "CONFIG_FRAME_WARN=1024 CONFIG_WIREGUARD=m" in error.hint


def test_built_in_and_unknown_symbols(facts: kconfig_tree.Facts) -> None:
    built = NET | {"CONFIG_IP_SCTP": "y"}
    assert intree.close(["CONFIG_IP_SCTP"], built, built, facts).built_in == ["CONFIG_IP_SCTP"]
    closure = intree.close(["CONFIG_NOPE"], NET, NET, facts)
    error = intree.refusal(closure, "k:1", "nope")
    assert error is not None and "has no CONFIG_NOPE in its Kconfig" in str(error)


def test_makefiles_name_each_symbols_modules() -> None:
    found = intree.objects(MAKEFILES, ["CONFIG_IP_SCTP", "CONFIG_CRYPTO_MD5",
                                       "CONFIG_NET_UDP_TUNNEL", "CONFIG_CRYPTO_LIB_CHACHA",
                                       "CONFIG_SCTP_DBG_OBJCNT"], "x86")
    # another arch's dir is never built (arch/arm's glue has arm64's symbol names)
    arm64 = intree.objects(MAKEFILES, ["CONFIG_CRYPTO_LIB_CHACHA"], "arm64")
    assert arm64 == {"CONFIG_CRYPTO_LIB_CHACHA": ["arch/arm64/crypto/chacha-neon",
                                                  "lib/crypto/libchacha-generic"]}
    assert found == {"CONFIG_IP_SCTP": ["net/sctp/sctp"], "CONFIG_CRYPTO_MD5": ["crypto/md5"],
                     "CONFIG_NET_UDP_TUNNEL": ["net/ipv4/udp_tunnel"],
                     "CONFIG_CRYPTO_LIB_CHACHA": ["lib/crypto/libchacha-generic"],
                     "CONFIG_SCTP_DBG_OBJCNT": []}


def test_the_steps_build_each_dir_and_resolve_across_dirs(tmp_path: Path) -> None:
    one = intree.steps_script(["net/sctp/sctp"], ["CONFIG_IP_SCTP=m"])
    assert "build net/sctp '' '' sctp.ko" in one  # one dir: modpost's errors stand
    two = intree.steps_script(["net/sctp/sctp", "net/ipv4/udp_tunnel"], ["CONFIG_IP_SCTP=m"])
    assert "build net/sctp '' '1' sctp.ko" in two
    assert 'build net/sctp "$KERNELDIR/net/ipv4/Module.symvers" \'\' sctp.ko' in two
    assert 'cp "$KERNELDIR/net/ipv4/udp_tunnel.ko" lkbuild-ko/' in two
    script = tmp_path / "build.sh"
    script.write_text(two)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_modposts_undefined_symbols_are_read_from_the_log() -> None:
    log = ('#14 9.1 ERROR: modpost: "dst_cache_get" [drivers/net/wireguard/wireguard.ko] '
           'undefined!\n#14 9.1 ERROR: modpost: "dst_cache_set_ip4" '
           '[drivers/net/wireguard/wireguard.ko] undefined!\n')
    assert intree.unresolved(log) == {"wireguard.ko": ["dst_cache_get", "dst_cache_set_ip4"]}


def test_symbols_and_names() -> None:
    assert intree.symbol("IP_SCTP") == "CONFIG_IP_SCTP"
    with pytest.raises(UserError, match="not a Kconfig symbol"):
        intree.symbol("sctp; rm -rf /")
    assert intree.module_name(["CONFIG_IP_SCTP", "CONFIG_WIREGUARD"]) == "ip_sctp-wireguard"
    module = modrecipe.in_tree_module(["IP_SCTP", "CONFIG_IP_SCTP"])
    assert (module.name, module.version, module.in_tree) == ("ip_sctp", "in-tree",
                                                             ("CONFIG_IP_SCTP",))
    assert intree.status({"CONFIG_A": "m"}, ["CONFIG_A"]) == "module"
    assert intree.status({"CONFIG_A": "y"}, ["CONFIG_A"]) == "built-in"
    assert intree.status({}, ["CONFIG_A"]) == "missing"


def test_in_tree_recipes_validate(tmp_path: Path) -> None:
    for name in ("sctp", "wireguard", "openvswitch"):
        module = modrecipe.load(modrecipe.ROOT / "module" / name / "recipe.yml")
        assert module.in_tree and module.checks and module.version == "in-tree"
    bad = tmp_path / "x" / "recipe.yml"
    bad.parent.mkdir()
    bad.write_text("name: x\nin_tree: [CONFIG_X]\nsource: {dir: .}\nbuild: [make]\n")
    with pytest.raises(UserError) as found:
        modrecipe.load(bad)
    assert "give exactly one of source and in_tree" in str(found.value)
    assert "build: not used with in_tree" in str(found.value)
