"""The pure parts of module builds: tags, vermagic, load order, config needs, facts, sources."""
from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from recipes import module
from recipes.arch import resolve
from recipes.errors import BuildError, UserError, VerifyError
from recipes.modrecipe import Module

AMD64, ARM64 = resolve("amd64"), resolve("arm64")
B = module.Built


def test_tags_put_the_kind_and_hash_between_release_and_arch():
    assert module.tags("2.3.2", "6.12.54-linuxkit", ARM64, None) == "2.3.2-6.12.54-linuxkit-arm64"
    assert module.tags("2.3.2", "6.12.54-linuxkit", ARM64, "abc", loader=True) == \
        "2.3.2-6.12.54-linuxkit-loader-abc-arm64"


def test_a_release_with_characters_tags_cannot_hold_is_made_safe():
    assert module.tags("1.0", "6.12.0+", AMD64, None) == "1.0-6.12.0_-amd64"
    assert len(module.tags("1" * 100, "6" * 100, AMD64, "h" * 12)) == 128


@pytest.mark.parametrize("arch,config,expected", [
    (AMD64, {"CONFIG_MODULE_UNLOAD": "y"}, "6.12.54 mod_unload"),
    (ARM64, {"CONFIG_SMP": "y", "CONFIG_PREEMPT_BUILD": "y", "CONFIG_MODULE_UNLOAD": "y",
             "CONFIG_MODVERSIONS": "y"}, "6.12.54 SMP preempt mod_unload modversions aarch64"),
    (AMD64, {"CONFIG_SMP": "y", "CONFIG_PREEMPT_RT": "y"}, "6.12.54 SMP preempt_rt"),
    (ARM64, {"CONFIG_RANDSTRUCT_FULL": "y"}, "6.12.54 aarch64 RANDSTRUCT_?"),
])
def test_the_vermagic_follows_the_kernels_config(arch, config, expected):
    assert module.config_vermagic("6.12.54", config, arch) == expected


def test_vermagic_spacing_does_not_matter_but_words_do():
    assert module.same_vermagic("6.12.54 SMP mod_unload ", "6.12.54 SMP  mod_unload")
    assert not module.same_vermagic("6.12.54 SMP mod_unload", "6.12.54 mod_unload")


def test_an_unknown_randstruct_seed_matches_any_seed_but_nothing_else():
    assert module.same_vermagic("6.12.54 aarch64 RANDSTRUCT_?", "6.12.54 aarch64 RANDSTRUCT_ab12")
    assert not module.same_vermagic("6.12.54 aarch64 RANDSTRUCT_?", "6.12.55 aarch64 RANDSTRUCT_a")


def test_a_vermagic_difference_names_the_fields():
    assert module.vermagic_diff("6.12.54-linuxkit SMP mod_unload",
                                "6.12.54-other mod_unload modversions") == \
        "release 6.12.54-linuxkit vs 6.12.54-other, kernel has SMP, module has modversions"


def test_module_facts_are_read_per_line():
    facts = "spl\textra/spl.ko\t6.12.54 SMP \t\nzfs\textra/zfs.ko\t6.12.54 SMP \tspl,zlib-deflate\n"
    assert module.parse_module_facts(facts) == [
        B("spl", "extra/spl.ko", "6.12.54 SMP ", ()),
        B("zfs", "extra/zfs.ko", "6.12.54 SMP ", ("spl", "zlib_deflate"))]


def test_dependencies_load_first_and_outside_ones_are_left_to_the_kernel():
    built = [B("zfs", "z", "", ("spl", "zlib_deflate")), B("spl", "s", "", ()),
             B("a", "a", "", ("zfs",))]
    assert [b.name for b in module.load_order(built)] == ["spl", "zfs", "a"]


def test_modules_that_depend_on_each_other_in_a_cycle_are_refused():
    with pytest.raises(BuildError, match="cycle: a -> b -> a"):
        module.load_order([B("a", "a", "", ("b",)), B("b", "b", "", ("a",))])


def test_every_missing_and_forbidden_config_option_is_listed():
    config = {"CONFIG_MODULES": "y", "CONFIG_BLOCK": "m", "CONFIG_TRIM_UNUSED_KSYMS": "y"}
    assert module.missing_config(
        config, ["CONFIG_MODULES", "CONFIG_BLOCK", "CONFIG_ZLIB_DEFLATE", "CONFIG_ZLIB_INFLATE"],
        ["CONFIG_TRIM_UNUSED_KSYMS", "CONFIG_DEBUG_LOCK_ALLOC"]) == [
        "CONFIG_ZLIB_DEFLATE must be y or m (is not set)",
        "CONFIG_ZLIB_INFLATE must be y or m (is not set)",
        "CONFIG_TRIM_UNUSED_KSYMS must be off (is y)"]


def test_the_loader_conf_is_sh_that_gives_back_every_value(tmp_path):
    mod = Module("it's", "1.0", Path("/m"))
    conf = module.loader_conf(mod, "6.12.54-linuxkit", "6.12.54-linuxkit SMP mod_unload ",
                              ARM64, "f" * 64)
    path = tmp_path / "loader.conf"
    path.write_text(conf)
    out = subprocess.run(["sh", "-c", f'. {path}; printf "%s|%s|%s|%s" "$LK_MODULE" '
                          '"$LK_VERMAGIC" "$LK_UNAME" "$LK_ARCH_VERMAGIC"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "it's|6.12.54-linuxkit SMP mod_unload|aarch64|aarch64"


def test_builder_candidates_start_with_the_kernels_own_builder():
    labels = {"org.lkbuild.kernel.builder": "o/kernel:6.12.54-builder-abc-arm64",
              "org.lkbuild.kernel.version": "6.12.54",
              "org.lkbuild.kernel.build-image": "lkbuild/build:bookworm"}
    found = module.builder_candidates("o/kernel:6.12.54-abc-arm64", labels, ARM64,
                                      "lkbuild/build:bookworm")
    assert found == ["o/kernel:6.12.54-builder-abc-arm64", "o/kernel:6.12.54-abc-builder-arm64",
                     "o/kernel:6.12.54-abc-builder", "o/kernel:6.12.54-abc-arm64-builder",
                     "lkbuild/build:bookworm"]


def test_a_linuxkit_kernel_has_its_builder_beside_it():
    assert module.builder_candidates("linuxkit/kernel:6.12.52", {}, AMD64) == [
        "linuxkit/kernel:6.12.52-builder"]
    assert module.builder_candidates("localhost:5000/linuxkit/kernel:6.6.13-amd64", {}, AMD64,
                                     "linuxkit/alpine:abc")[:2] == [
        "localhost:5000/linuxkit/kernel:6.6.13-builder-amd64",
        "localhost:5000/linuxkit/kernel:6.6.13-builder"]


def test_compiler_error_lines_come_without_buildkit_prefixes(tmp_path):
    log = tmp_path / "b.log"
    log.write_text("#13 0.31 lkbuild: building /src\n"
                   "#13 1.20 /src/m.c:2:30: error: 'nope' undeclared (first use in this function)\n"
                   "#13 1.21 make[2]: *** [scripts/Makefile.build:229: m.o] Error 1\n"
                   "#13 1.30 ok line\n")
    assert module.error_lines(log) == [
        "/src/m.c:2:30: error: 'nope' undeclared (first use in this function)",
        "make[2]: *** [scripts/Makefile.build:229: m.o] Error 1"]
    assert module.error_lines(tmp_path / "missing") == []


def tar_bytes(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_sources_come_out_of_a_tarball_below_its_subdir(tmp_path):
    path = tmp_path / "m-1.0.tar.gz"
    path.write_bytes(tar_bytes({"./m-1.0/Makefile": b"all:\n", "./m-1.0/run.sh": b"#!",
                                "./other/x": b"x"}))
    files = module.archive_files(path, "m-1.0")
    assert files == {"Makefile": (b"all:\n", 0o644), "run.sh": (b"#!", 0o755)}


def test_sources_come_out_of_a_debian_package(tmp_path):
    data = tar_bytes({"./usr/src/zfs-2.3.2/configure": b"#!/bin/sh\n"}, "w:xz")
    deb = b"!<arch>\n" + ar_member("debian-binary", b"2.0\n") + \
        ar_member("control.tar.xz", b"ctl") + ar_member("data.tar.xz", data)
    path = tmp_path / "zfs-dkms_2.3.2_all.deb"
    path.write_bytes(deb)
    assert module.archive_files(path, "usr/src/zfs-2.3.2") == {
        "configure": (b"#!/bin/sh\n", 0o644)}
    with pytest.raises(VerifyError, match="has no files under usr/src/zfs-9/"):
        module.archive_files(path, "usr/src/zfs-9")


def test_a_file_that_is_no_archive_is_refused(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"not an archive")
    with pytest.raises(VerifyError, match="cannot read the module source"):
        module.archive_files(path)


def elf(machine: int) -> bytes:
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    head[18:20] = machine.to_bytes(2, "little")
    return bytes(head)


def test_nothing_is_tagged_unless_every_module_matches_the_kernel(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "m.ko").write_bytes(elf(62))
    mod = Module("m", "1", tmp_path, modules=("m",))
    ok = [B("m", "extra/m.ko", "6.12.54 SMP ", ())]
    module.check_built(mod, ok, tmp_path, AMD64, "6.12.54 SMP", tmp_path / "log")
    with pytest.raises(BuildError, match="vermagic '6.12.54-x SMP', the kernel has"):
        module.check_built(mod, [B("m", "extra/m.ko", "6.12.54-x SMP", ())], tmp_path, AMD64,
                           "6.12.54 SMP", tmp_path / "log")
    with pytest.raises(BuildError, match="not an arm64 object"):
        module.check_built(mod, ok, tmp_path, ARM64, "6.12.54 SMP", tmp_path / "log")
    with pytest.raises(BuildError, match="did not make n"):
        module.check_built(Module("m", "1", tmp_path, modules=("m", "n")), ok, tmp_path, AMD64,
                           "6.12.54 SMP", tmp_path / "log")
    with pytest.raises(UserError, match="made no .ko files"):
        module.check_built(mod, [], tmp_path, AMD64, "6.12.54 SMP", tmp_path / "log")
