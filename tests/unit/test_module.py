"""module.py's pure parts: tags, facts, load order, the loader conf, builder candidates,
compiler error lines, module sources from archives and the check before tagging."""
from __future__ import annotations

import hashlib
import io
import re
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from recipes import fidelity, module
from recipes.arch import resolve
from recipes.errors import BuildError, UserError, VerifyError
from recipes.modrecipe import Module

pytestmark = pytest.mark.unit

AMD64, ARM64 = resolve("amd64"), resolve("arm64")
B = module.Built
REL = "6.12.54-linuxkit"
DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


# --- tags --------------------------------------------------------------------------------------

def test_a_module_tag_is_version_release_hash_arch():
    assert module.tags("2.3.2", REL, AMD64, "0123456789ab") == \
        "2.3.2-6.12.54-linuxkit-0123456789ab-amd64"


def test_a_module_tag_without_a_hash_leaves_it_out():
    assert module.tags("2.3.2", REL, ARM64, None) == "2.3.2-6.12.54-linuxkit-arm64"
    assert module.tags("2.3.2", REL, ARM64, "") == "2.3.2-6.12.54-linuxkit-arm64"


def test_the_loader_tag_puts_loader_after_the_release():
    assert module.tags("2.3.2", REL, ARM64, "abc", loader=True) == \
        "2.3.2-6.12.54-linuxkit-loader-abc-arm64"
    assert module.tags("1", REL, ARM64, None, loader=True) == "1-6.12.54-linuxkit-loader-arm64"


@pytest.mark.parametrize("release,safe", [
    ("6.12.0+", "6.12.0_"), ("6.12.54-rc1+dirty", "6.12.54-rc1_dirty"),
    ("6.1.0~x/y z", "6.1.0_x_y_z"), ("6.12.54-linuxkit", "6.12.54-linuxkit")])
def test_characters_a_tag_cannot_hold_become_underscores(release, safe):
    assert module.tag_part(release) == safe
    assert module.tags("1+git", release, AMD64, None) == f"1_git-{safe}-amd64"


def test_every_tag_is_a_valid_docker_tag_of_at_most_128_characters():
    for loader in (False, True):
        tag = module.tags("1.0+" + "v" * 60, "6.12.54+" + "x" * 100, ARM64, "h" * 12, loader)
        assert len(tag) <= 128 and DOCKER_TAG.fullmatch(tag)


def test_long_tags_of_different_arches_or_hashes_stay_distinct():
    version, release = "1." + "0" * 60, "6.12.54-" + "x" * 60
    assert module.tags(version, release, AMD64, "a" * 12) != \
        module.tags(version, release, ARM64, "a" * 12)
    assert module.tags(version, release, AMD64, "a" * 12) != \
        module.tags(version, release, AMD64, "b" * 12)


# --- module facts and load order ---------------------------------------------------------------

def test_module_facts_are_one_module_per_line_with_normalised_dependencies():
    text = (f"spl\textra/spl.ko\t{REL} SMP \t\n\n"
            f"zfs\textra/zfs.ko\t{REL} SMP \tspl, zlib-deflate ,\n")
    assert module.parse_module_facts(text) == [
        B("spl", "extra/spl.ko", f"{REL} SMP ", ()),
        B("zfs", "extra/zfs.ko", f"{REL} SMP ", ("spl", "zlib_deflate"))]


def test_short_fact_lines_get_empty_fields():
    assert module.parse_module_facts("hello\textra/hello.ko\n") == [
        B("hello", "extra/hello.ko", "", ())]


def test_no_facts_are_no_modules():
    assert module.parse_module_facts("\n  \n") == []


def test_dependencies_load_before_the_modules_that_need_them():
    built = [B("zfs", "z", "", ("spl", "zcommon")), B("zcommon", "c", "", ("spl",)),
             B("spl", "s", "", ())]
    assert [b.name for b in module.load_order(built)] == ["spl", "zcommon", "zfs"]


def test_independent_modules_load_in_name_order():
    built = [B("c", "c", "", ()), B("a", "a", "", ()), B("b", "b", "", ())]
    assert [b.name for b in module.load_order(built)] == ["a", "b", "c"]


def test_dependencies_outside_the_set_are_left_to_the_kernel():
    built = [B("zfs", "z", "", ("spl", "zlib_deflate", "crc32c")), B("spl", "s", "", ())]
    order = module.load_order(built)
    assert [b.name for b in order] == ["spl", "zfs"] and order[1] is built[0]


def test_a_dependency_on_a_dashed_module_name_finds_it():
    built = [B("a", "a", "", ("my_dep",)), B("my-dep", "d", "", ())]
    assert [b.name for b in module.load_order(built)] == ["my-dep", "a"]


@pytest.mark.parametrize("built,chain", [
    ([B("a", "a", "", ("b",)), B("b", "b", "", ("a",))], "a -> b -> a"),
    ([B("a", "a", "", ("a",))], "a -> a"),
    ([B("x", "x", "", ("y",)), B("y", "y", "", ("z",)), B("z", "z", "", ("x",))],
     "x -> y -> z -> x"),
])
def test_a_dependency_cycle_is_a_build_error_naming_the_chain(built, chain):
    with pytest.raises(BuildError) as info:
        module.load_order(built)
    assert info.value.message.endswith(f"cycle: {chain}")


# --- config needs ------------------------------------------------------------------------------

def test_a_config_with_everything_needed_has_no_problems():
    config = {"CONFIG_MODULES": "y", "CONFIG_BLOCK": "m", "CONFIG_PREEMPT_RT": "n"}
    assert module.missing_config(config, ["CONFIG_MODULES", "CONFIG_BLOCK"],
                                 ["CONFIG_PREEMPT_RT", "CONFIG_DEBUG_LOCK_ALLOC"]) == []


def test_every_config_problem_is_listed_in_order():
    config = {"CONFIG_MODULES": "n", "CONFIG_BLOCK": "y", "CONFIG_PREEMPT_RT": "y",
              "CONFIG_TRIM_UNUSED_KSYMS": "m"}
    assert module.missing_config(
        config, ["CONFIG_MODULES", "CONFIG_ZLIB_DEFLATE", "CONFIG_BLOCK"],
        ["CONFIG_PREEMPT_RT", "CONFIG_DEBUG_LOCK_ALLOC", "CONFIG_TRIM_UNUSED_KSYMS"]) == [
        "CONFIG_MODULES must be y or m (is not set)",
        "CONFIG_ZLIB_DEFLATE must be y or m (is not set)",
        "CONFIG_PREEMPT_RT must be off (is y)",
        "CONFIG_TRIM_UNUSED_KSYMS must be off (is m)"]


# --- the loader conf ---------------------------------------------------------------------------

def source_conf(tmp_path: Path, conf: str, var: str) -> str:
    path = tmp_path / "loader.conf"
    path.write_text(conf)
    return subprocess.run(["sh", "-c", f'. {path}; echo "${var}"'], capture_output=True,
                          text=True, check=True, cwd=tmp_path).stdout


def test_the_loader_conf_is_one_assignment_per_setting():
    conf = module.loader_conf(Module("zfs", "2.3.2", Path("/m")), REL, f"{REL} SMP aarch64 ",
                              ARM64, "f" * 64)
    assert conf.splitlines() == [
        "LK_MODULE='zfs'", "LK_VERSION='2.3.2'", f"LK_RELEASE='{REL}'",
        f"LK_VERMAGIC='{REL} SMP aarch64'", "LK_UNAME='aarch64'", "LK_ARCH_VERMAGIC='aarch64'",
        f"LK_CONFIG_SHA256='{'f' * 64}'"]


def test_the_loader_conf_gives_back_a_vermagic_with_quotes_and_shell_characters(tmp_path):
    vermagic = "6.12.54-it's SMP $(touch pwned) `touch pwned2` \"x\" ;"
    conf = module.loader_conf(Module("m", "1", Path("/m")), REL, vermagic, AMD64, "0" * 64)
    assert source_conf(tmp_path, conf, "LK_VERMAGIC") == fidelity.words(vermagic) + "\n"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_the_loader_conf_gives_back_an_empty_arch_vermagic_on_amd64(tmp_path):
    conf = module.loader_conf(Module("m", "1", Path("/m")), REL, REL, AMD64, "0" * 64)
    assert source_conf(tmp_path, conf, "LK_ARCH_VERMAGIC") == "\n"
    assert source_conf(tmp_path, conf, "LK_UNAME") == "x86_64\n"


# --- builder candidates ------------------------------------------------------------------------

LK = "org.lkbuild.kernel"


def test_an_lkbuild_kernel_tries_its_builder_label_first():
    labels = {f"{LK}.builder": "me/builder:special", f"{LK}.version": "6.12.54"}
    assert module.builder_candidates("lkbuild/kernel:6.12.54-0123abcd-arm64", labels,
                                     ARM64)[0] == "me/builder:special"


def test_an_lkbuild_kernel_tag_gives_the_builder_tag_with_the_kind_before_the_hash():
    labels = {f"{LK}.version": "6.12.54", f"{LK}.hash": "0123abcd"}
    found = module.builder_candidates("lkbuild/kernel:6.12.54-0123abcd-arm64", labels, ARM64)
    assert found[0] == "lkbuild/kernel:6.12.54-builder-0123abcd-arm64"
    debug = module.builder_candidates("lkbuild/kernel:6.12.54-dbg-0123abcd-arm64", labels, ARM64)
    assert debug[0] == "lkbuild/kernel:6.12.54-dbg-builder-0123abcd-arm64"


def test_a_linuxkit_kernel_tag_gives_its_builder_tag():
    assert module.builder_candidates("linuxkit/kernel:6.12.52", {}, AMD64) == [
        "linuxkit/kernel:6.12.52-builder"]


def test_a_linuxkit_per_arch_tag_tries_builder_before_the_arch_then_after_the_tag():
    assert module.builder_candidates("linuxkit/kernel:6.6.13-amd64", {}, AMD64) == [
        "linuxkit/kernel:6.6.13-builder-amd64", "linuxkit/kernel:6.6.13-builder",
        "linuxkit/kernel:6.6.13-amd64-builder"]


def test_a_registry_port_is_not_taken_for_a_tag():
    assert module.builder_candidates("localhost:5000/kernel", {}, AMD64, "b:1") == ["b:1"]


def test_the_kernel_builder_file_and_the_build_image_label_come_last():
    labels = {f"{LK}.build-image": "lkbuild/build:bookworm", f"{LK}.version": "6.12.54",
              f"{LK}.builder": "lkbuild/kernel:6.12.54-builder-h-amd64"}
    found = module.builder_candidates("lkbuild/kernel:6.12.54-h-amd64", labels, AMD64,
                                      " linuxkit/alpine:abc\n")
    assert found[0] == "lkbuild/kernel:6.12.54-builder-h-amd64"
    assert found[-2:] == ["linuxkit/alpine:abc", "lkbuild/build:bookworm"]


def test_builder_candidates_have_no_duplicates_and_never_the_kernel_itself():
    ref = "lkbuild/kernel:6.12.54-h-amd64"
    labels = {f"{LK}.builder": "lkbuild/kernel:6.12.54-builder-h-amd64",
              f"{LK}.version": "6.12.54", f"{LK}.build-image": ref}
    found = module.builder_candidates(ref, labels, AMD64,
                                      "lkbuild/kernel:6.12.54-builder-h-amd64")
    assert len(found) == len(set(found)) and ref not in found
    assert found.count("lkbuild/kernel:6.12.54-builder-h-amd64") == 1


def test_a_kernel_without_tag_or_labels_has_only_the_builder_file():
    assert module.builder_candidates("kernel", {}, AMD64, "") == []
    assert module.builder_candidates("kernel", {}, AMD64, "my/builder:1") == ["my/builder:1"]


def test_a_kernel_pinned_by_digest_gets_no_builder_guessed_from_its_digest():
    ref = "linuxkit/kernel@sha256:" + "a" * 64
    assert module.builder_candidates(ref, {}, AMD64, "linuxkit/alpine:abc") == [
        "linuxkit/alpine:abc"]


# --- compiler error lines ----------------------------------------------------------------------

BUILDKIT_LOG = """\
#12 [built 2/3] COPY src /src
#12 DONE 0.1s

#13 [built 3/3] RUN /scripts/build.sh
#13 0.312 lkbuild: building hello for 6.12.54-linuxkit
#13 1.234 /src/hello.c: In function 'hello_init':
#13 1.234 /src/hello.c:7:9: error: implicit declaration of function 'nope'
#13 1.240 /src/hello.c:7:9: error: implicit declaration of function 'nope'
#13 1.301 make[2]: *** [scripts/Makefile.build:229: /src/hello.o] Error 1
#13 1.302 make[1]: *** [Makefile:1947: /src] Error 2
#13 1.305 ERROR: modpost: "nope" [/src/hello.ko] undefined!
#13 ERROR: process "/bin/sh -c /scripts/build.sh" did not complete successfully: exit code: 2
------
"""


def test_error_lines_are_the_compilers_own_lines_once_and_in_order(tmp_path):
    log = tmp_path / "build.log"
    log.write_text(BUILDKIT_LOG)
    assert module.error_lines(log) == [
        "/src/hello.c:7:9: error: implicit declaration of function 'nope'",
        "make[2]: *** [scripts/Makefile.build:229: /src/hello.o] Error 1",
        "make[1]: *** [Makefile:1947: /src] Error 2",
        'ERROR: modpost: "nope" [/src/hello.ko] undefined!']


def test_error_lines_stop_at_the_limit(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("".join(f"#7 0.{i} /src/m.c:{i}:1: error: e{i}\n" for i in range(1, 20)))
    lines = module.error_lines(log, limit=3)
    assert lines == [f"/src/m.c:{i}:1: error: e{i}" for i in (1, 2, 3)]
    assert len(module.error_lines(log)) == 8


def test_a_missing_log_has_no_error_lines(tmp_path):
    assert module.error_lines(tmp_path / "missing.log") == []


def test_buildkits_failure_summary_does_not_repeat_error_lines(tmp_path):
    log = tmp_path / "build.log"
    log.write_text(BUILDKIT_LOG + " > [built 3/3] RUN /scripts/build.sh:\n"
                   "1.234 /src/hello.c:7:9: error: implicit declaration of function 'nope'\n"
                   "1.301 make[2]: *** [scripts/Makefile.build:229: /src/hello.o] Error 1\n"
                   "------\nERROR: failed to solve: process \"/bin/sh -c /scripts/build.sh\" "
                   "did not complete successfully: exit code: 2\n")
    assert len(module.error_lines(log)) == 4


# --- module sources from archives --------------------------------------------------------------

def tarball(files: dict[str, bytes], mode: str = "w:gz", dirs: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(("configure", ".sh")) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def ar_member(name: str, data: bytes) -> bytes:
    """A 60-byte ar header (name, mtime, uid, gid, mode, size, magic) and the padded body."""
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def deb(data_tar: bytes, data_name: str = "data.tar.xz") -> bytes:
    return (b"!<arch>\n" + ar_member("debian-binary", b"2.0\n")
            + ar_member("control.tar.gz", b"ctl")  # an odd size: padded to an even offset
            + ar_member(data_name, data_tar))


def test_a_tarballs_files_under_the_subdir_come_with_their_mode(tmp_path):
    path = tmp_path / "wg-1.0.tar.gz"
    path.write_bytes(tarball({"wg-1.0/Makefile": b"all:\n", "wg-1.0/src/wg.c": b"int x;\n",
                              "wg-1.0/configure": b"#!/bin/sh\n", "wg-1.0.extra/x": b"no",
                              "README": b"no"}, dirs=("wg-1.0", "wg-1.0/src")))
    assert module.archive_files(path, "wg-1.0") == {
        "Makefile": (b"all:\n", 0o644), "src/wg.c": (b"int x;\n", 0o644),
        "configure": (b"#!/bin/sh\n", 0o755)}


@pytest.mark.parametrize("subdir", ["wg-1.0", "wg-1.0/", "./wg-1.0", "/wg-1.0/"])
def test_the_subdir_may_be_spelled_with_slashes_and_a_dot(tmp_path, subdir):
    path = tmp_path / "wg.tar"
    path.write_bytes(tarball({"./wg-1.0/Makefile": b"all:\n"}, "w"))
    assert module.archive_files(path, subdir) == {"Makefile": (b"all:\n", 0o644)}


def test_a_tarball_without_subdir_gives_every_file(tmp_path):
    path = tmp_path / "m.tar.xz"
    path.write_bytes(tarball({"./a.c": b"a", "b/c.c": b"c"}, "w:xz"))
    assert sorted(module.archive_files(path)) == ["a.c", "b/c.c"]


def test_members_that_climb_out_of_the_subdir_are_left_out(tmp_path):
    path = tmp_path / "m.tar.gz"
    path.write_bytes(tarball({"m/a.c": b"a", "m/../../etc/x": b"evil", "m/b/../../c": b"evil"}))
    assert module.archive_files(path, "m") == {"a.c": (b"a", 0o644)}


@pytest.mark.parametrize("data_name,mode", [("data.tar.xz", "w:xz"), ("data.tar.gz", "w:gz"),
                                            ("data.tar", "w")])
def test_a_debs_data_member_gives_the_files_under_the_subdir(tmp_path, data_name, mode):
    data = tarball({"./usr/src/zfs-2.3.2/configure": b"#!/bin/sh\n",
                    "./usr/src/zfs-2.3.2/module/Makefile.in": b"x\n",
                    "./usr/share/doc/zfs-dkms/copyright": b"c\n"}, mode)
    path = tmp_path / "zfs-dkms_2.3.2_all.deb"
    path.write_bytes(deb(data, data_name))
    assert module.archive_files(path, "usr/src/zfs-2.3.2") == {
        "configure": (b"#!/bin/sh\n", 0o755), "module/Makefile.in": (b"x\n", 0o644)}


def test_gnu_ar_member_names_with_a_trailing_slash_are_read(tmp_path):
    path = tmp_path / "x.deb"
    path.write_bytes(b"!<arch>\n" + ar_member("debian-binary/", b"2.0\n")
                     + ar_member("data.tar.gz/", tarball({"./src/a.c": b"a"})))
    assert module.archive_files(path, "src") == {"a.c": (b"a", 0o644)}


def test_a_subdir_with_no_files_is_a_verify_error_that_points_at_the_recipe(tmp_path):
    path = tmp_path / "x.deb"
    path.write_bytes(deb(tarball({"./usr/src/zfs-2.3.2/a.c": b"a"}, "w:xz",
                                 dirs=("./usr/src/empty",))))
    with pytest.raises(VerifyError) as info:
        module.archive_files(path, "usr/src/empty")
    assert info.value.message == f"the module source {path} has no files under usr/src/empty/"
    assert "source.subdir" in info.value.hint


def test_a_deb_without_a_data_member_is_a_verify_error(tmp_path):
    path = tmp_path / "x.deb"
    path.write_bytes(b"!<arch>\n" + ar_member("debian-binary", b"2.0\n"))
    with pytest.raises(VerifyError, match=r"x.deb is a .deb without a data.tar member"):
        module.archive_files(path)


@pytest.mark.parametrize("content", [
    b"not an archive",
    b"!<arch>\n" + f"{'debian-binary':<48}{'size?':<10}`\n".encode(),  # a header, no size
])
def test_a_file_that_is_no_archive_is_a_verify_error(tmp_path, content):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(content)
    with pytest.raises(VerifyError) as info:
        module.archive_files(path)
    assert info.value.message.startswith(f"cannot read the module source {path}")
    assert "\n" not in info.value.line()


def test_a_missing_archive_is_a_verify_error(tmp_path):
    with pytest.raises(VerifyError, match="cannot read the module source"):
        module.archive_files(tmp_path / "nope.tar.gz")


# --- the check before anything is tagged -------------------------------------------------------

def elf(machine: int) -> bytes:
    """A 64-bit little-endian ELF header with no program headers (a relocatable .ko)."""
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<H", head, 18, machine)
    return bytes(head)


@pytest.fixture
def built_root(tmp_path: Path) -> Path:
    root = tmp_path / "lib" / "modules" / REL
    (root / "extra").mkdir(parents=True)
    (root / "extra" / "spl.ko").write_bytes(elf(183))
    (root / "extra" / "zfs.ko").write_bytes(elf(183))
    return root


ZFS = Module("zfs", "2.3.2", Path("/m"), modules=("spl", "zfs"))
KERNEL_VERMAGIC = f"{REL} SMP preempt mod_unload aarch64 "


def zfs_built(vermagic: str = f"{REL} SMP preempt mod_unload aarch64") -> list:
    return [B("spl", "extra/spl.ko", vermagic, ()), B("zfs", "extra/zfs.ko", vermagic, ("spl",))]


def test_modules_that_match_the_kernel_pass_the_check(built_root, tmp_path):
    module.check_built(ZFS, zfs_built(), built_root, ARM64, KERNEL_VERMAGIC, tmp_path / "log")


def test_a_vermagic_mismatch_is_a_build_error_naming_the_difference(built_root, tmp_path):
    built = zfs_built()
    built[1] = B("zfs", "extra/zfs.ko", f"{REL} SMP mod_unload aarch64", ("spl",))
    with pytest.raises(BuildError) as info:
        module.check_built(ZFS, built, built_root, ARM64, KERNEL_VERMAGIC, tmp_path / "log")
    assert info.value.message == (
        f"zfs.ko has vermagic '{REL} SMP mod_unload aarch64', the kernel has "
        f"'{REL} SMP preempt mod_unload aarch64' (kernel has preempt)")
    assert "nothing was tagged" in info.value.hint and str(tmp_path / "log") in info.value.hint


def test_a_module_for_another_arch_is_a_build_error(built_root, tmp_path):
    (built_root / "extra" / "zfs.ko").write_bytes(elf(62))
    with pytest.raises(BuildError, match=r"zfs.ko is not an arm64 object \(ELF machine 62\)"):
        module.check_built(ZFS, zfs_built(), built_root, ARM64, KERNEL_VERMAGIC, tmp_path / "l")


def test_a_missing_expected_module_is_a_build_error(built_root, tmp_path):
    with pytest.raises(BuildError) as info:
        module.check_built(ZFS, zfs_built()[:1], built_root, ARM64, KERNEL_VERMAGIC,
                           tmp_path / "log")
    assert info.value.message == "the build of zfs did not make zfs"


def test_extra_modules_beyond_the_expected_ones_are_allowed(built_root, tmp_path):
    spl_only = Module("zfs", "2.3.2", Path("/m"), modules=("spl",))
    module.check_built(spl_only, zfs_built(), built_root, ARM64, KERNEL_VERMAGIC, tmp_path / "l")


def test_a_build_that_made_no_ko_at_all_is_a_user_error(built_root, tmp_path):
    with pytest.raises(UserError) as info:
        module.check_built(ZFS, [], built_root, ARM64, KERNEL_VERMAGIC, tmp_path / "log")
    assert info.value.message == "the build of zfs made no .ko files"
    assert "default target" in info.value.hint


def test_the_loader_list_carries_each_files_digest_in_load_order(tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "spl.ko").write_bytes(b"spl")
    (extra / "zfs.ko").write_bytes(b"zfs")
    order = module.load_order([module.Built("zfs", "extra/zfs.ko", "v", ("spl",)),
                               module.Built("spl", "extra/spl.ko", "v", ())])
    lines = module.loader_modules(order, tmp_path).splitlines()
    assert [line.split("\t") for line in lines] == [
        ["spl", "extra/spl.ko", hashlib.sha256(b"spl").hexdigest(), ""],
        ["zfs", "extra/zfs.ko", hashlib.sha256(b"zfs").hexdigest(), "spl"]]


class _Images:
    """An engine that knows image attributes by ref (loader_ref reads nothing else)."""

    def __init__(self, images: dict) -> None:
        self.images = images

    def image(self, ref: str):
        return self.images.get(ref)

    def describe(self) -> str:
        return "the test engine"


def test_vmtest_takes_a_loader_image_as_named_and_a_module_image_to_its_loader() -> None:
    label = {f"{module.LABEL}.loader": "org/hello:1.0-r-loader-amd64"}
    engine = _Images({
        "org/hello:1.0-r-amd64": {"Config": {"Labels": label, "Entrypoint": None}},
        "mine/hello-tools:1": {"Config": {"Labels": label, "Entrypoint": [
            "/lkbuild/bin/busybox", "sh", "/lkbuild/load"]}}})
    pick = lambda ref: module.loader_ref(None, engine, ref, None, None)  # noqa: E731
    assert pick("org/hello:1.0-r-amd64") == "org/hello:1.0-r-loader-amd64"
    assert pick("mine/hello-tools:1") == "mine/hello-tools:1"
