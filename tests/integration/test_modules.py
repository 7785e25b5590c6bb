"""Module builds through the real engine and BuildKit, loaded by their own loader in real qemu.

The kernels are the session's small kernels (and small kernels with the options OpenZFS needs,
or another localversion), built by lkbuild. Nothing here loads a module into this machine's
kernel: the loader only ever runs inside a VM booted with the kernel the module was built for.
"""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import docker
import pytest

from tests.integration.kernels import (
    DEBIAN_SOURCE,
    ORG,
    OTHER_VARIANT,
    ROOT,
    SCOPE,
    config_body,
    image_files,
    labels,
    lkbuild,
    one_error_line,
    small_args,
)

ZFS_SOURCE = Path("/usr/local/lib/lkbuild/sources/zfs-dkms_2.3.2-2~bpo12+2_all.deb")
ELF_MACHINE = {"amd64": 62, "arm64": 183}


def kernel_flags(kver: str, arch: str) -> list[str]:
    """--kernel VERSION and the flags that pick the session's small kernel image for it."""
    return ["--kernel", kver, *small_args(kver, arch)[2:]]


def containers() -> set[str]:
    return {c.id for c in docker.from_env().containers.list(all=True)}


@pytest.mark.ci
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_hello_builds_into_a_module_image_and_a_loader_image(hello, small_kernel, kver, arch):
    result = hello(arch)
    kernel = small_kernel(arch)
    release = kernel["release"]
    assert result["release"] == release and result["modules"] == ["hello"]
    assert result["vermagic"] == kernel["vermagic"]
    assert result["refs"][1] == f"{ORG}/hello:1.0-{release}-{arch}"
    assert re.fullmatch(rf"{ORG}/hello:1\.0-{release}-[0-9a-f]{{12}}-{arch}", result["refs"][0])
    assert result["loader_refs"][1] == f"{ORG}/hello:1.0-{release}-loader-{arch}"

    files = image_files(result["refs"][0])
    ko = files[f"lib/modules/{release}/extra/hello.ko"]
    assert ko[:4] == b"\x7fELF" and int.from_bytes(ko[18:20], "little") == ELF_MACHINE[arch]
    assert f"lib/modules/{release}/modules.dep" in files
    assert b"extra/hello.ko:" in files[f"lib/modules/{release}/modules.dep"]

    lab = labels(result["refs"][0])
    assert lab["org.lkbuild.module.kernel.release"] == release
    assert lab["org.lkbuild.module.vermagic"] == kernel["vermagic"]
    assert lab["org.lkbuild.module.kernel.config.sha256"] == \
        labels(kernel["refs"][0])["org.lkbuild.kernel.config.sha256"]

    loader = docker.from_env().images.get(result["loader_refs"][0])
    assert loader.attrs["Architecture"] == arch
    assert loader.attrs["Config"]["Entrypoint"] == ["/lkbuild/bin/busybox", "sh", "/lkbuild/load"]
    loader_files = image_files(result["loader_refs"][0])
    assert f"lkbuild/root/lib/modules/{release}/extra/hello.ko" in loader_files
    assert loader_files["lkbuild/modules"].decode().split("\t")[0] == "hello"


@pytest.mark.ci
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_hello_loads_in_qemu_with_the_kernel_it_was_built_for(hello, small_kernel, kernel_cache,
                                                              arch):
    result = hello(arch)
    kernel = small_kernel(arch)["refs"][0]
    before = containers()
    run = lkbuild(kernel_cache, "vmtest", "--kernel", kernel, "--arch", arch, "--module",
                  result["loader_refs"][0], "--json")
    assert run.code == 0, run.err[-3000:]
    verdict = run.json()
    assert verdict["passed"], verdict
    console = Path(verdict["log"]).read_text(errors="replace")
    assert "lkbuild-loader: loaded hello" in console and "hello: loaded" in console
    assert "lkbuild-loader: hello is already loaded" in console
    assert "LKBUILD-VMTEST-PASS" in console
    assert containers() == before


@pytest.mark.ci
def test_a_module_named_by_recipe_is_found_for_vmtest_by_its_hash(hello, small_kernel,
                                                                    kernel_cache, kver):
    hello("amd64")
    run = lkbuild(kernel_cache, "vmtest", *kernel_flags(kver, "amd64"), "--module", "hello",
                  "--json")
    assert run.code == 0, run.err[-3000:]
    assert run.json()["passed"]


@pytest.mark.ci
def test_an_unchanged_module_is_not_built_again(hello, small_kernel, kernel_cache):
    first = hello("amd64")
    again = lkbuild(kernel_cache, "buildmodule", "--kernel", small_kernel("amd64")["refs"][0],
                    "--module", "hello", "--json")
    assert again.code == 0, again.err[-2000:]
    result = again.json()
    assert result["skipped"] and result["refs"] == first["refs"]


@pytest.mark.ci
def test_an_unchanged_module_points_its_plain_tags_at_itself_again(hello, small_kernel,
                                                                   kernel_cache):
    """Another kernel of the same release builds a module under the same plain tag: building
    against this kernel again takes the tag back, without building."""
    first = hello("amd64")
    (module_hash, module_plain), (loader_hash, loader_plain) = \
        first["refs"], first["loader_refs"]
    api = docker.from_env().api
    module_id = api.inspect_image(module_hash)["Id"]
    try:
        api.tag(loader_hash, *module_plain.rsplit(":", 1))
        api.remove_image(loader_plain)
        again = lkbuild(kernel_cache, "buildmodule", "--kernel",
                        small_kernel("amd64")["refs"][0], "--module", "hello", "--json")
        assert again.code == 0, again.err[-2000:]
        assert again.json()["skipped"]
        assert api.inspect_image(module_plain)["Id"] == module_id
        assert api.inspect_image(loader_plain)["Id"] == api.inspect_image(loader_hash)["Id"]
    finally:
        api.tag(module_id, *module_plain.rsplit(":", 1), force=True)
        api.tag(loader_hash, *loader_plain.rsplit(":", 1), force=True)


@pytest.mark.ci
def test_list_shows_the_kernel_and_module_images_built_here(hello, small_kernel, kernel_cache):
    kernel, module = small_kernel("amd64"), hello("amd64")
    run = lkbuild(kernel_cache, "list", "--json")
    assert run.code == 0, run.err[-2000:]
    rows = run.json()
    assert any(r["kind"] == "series" for r in rows)
    # Other tests of the session move the version tags (`<v>-<arch>`) to other kernels, and
    # tag these images under other orgs: they are found by the session's hash tags.
    mine = {(r["kind"], r["hash"]): r for r in rows
            if r["kind"] != "series" and any(t.startswith(f"{ORG}/") for t in r["tags"])}
    got = mine[("kernel", kernel["hash"])]
    assert kernel["refs"][0] in got["tags"] and got["id"] == kernel["image_id"]
    assert got["release"] == kernel["release"] and got["arch"] == "amd64" and got["size"] > 0
    assert ("builder", kernel["hash"]) in mine
    loader = mine[("loader", module["hash"])]
    assert set(module["loader_refs"]) & set(loader["tags"]), (module, loader)
    assert set(module["refs"]) & set(mine[("module", module["hash"])]["tags"])
    table = lkbuild(kernel_cache, "list")
    assert table.code == 0 and "images on this engine" in table.out, table.err[-2000:]


@pytest.mark.full
def test_a_version_kernel_and_a_path_module_build_like_docker_module_builder(
        small_kernel, kernel_cache, kver, tmp_path):
    small_kernel("amd64")
    mod = tmp_path / "greet"
    mod.mkdir()
    (mod / "greet.c").write_text(
        '#include <linux/module.h>\n'
        'static int __init g_init(void) { return 0; }\n'
        'static void __exit g_exit(void) {}\n'
        'module_init(g_init);\nmodule_exit(g_exit);\n'
        'MODULE_LICENSE("GPL");\nMODULE_VERSION("0.3");\n')
    (mod / "Makefile").write_text("obj-m := greet.o\n")  # a bare Kbuild dir
    run = lkbuild(kernel_cache, "buildmodule", *kernel_flags(kver, "amd64"), "--module",
                  str(mod))
    assert run.code == 0, run.err[-3000:]
    refs = run.out.split()
    assert len(refs) == 4 and refs[1].startswith(f"{ORG}/greet:0.3-{kver}-linuxkit-")
    boot = lkbuild(kernel_cache, "vmtest", *kernel_flags(kver, "amd64"), "--module", refs[2])
    assert boot.code == 0, boot.err[-3000:]


@pytest.mark.ci
def test_the_loader_refuses_a_kernel_with_another_localversion(hello, kernel_variant,
                                                               kernel_cache, small_kernel):
    built_for = small_kernel("amd64")["release"]
    other = kernel_variant("amd64", *OTHER_VARIANT)
    assert other["release"].endswith("-other")
    run = lkbuild(kernel_cache, "vmtest", "--kernel", other["refs"][0], "--arch", "amd64",
                  "--module", hello("amd64")["loader_refs"][0])
    assert run.code != 0
    line = one_error_line(run.err)
    assert "vermagic mismatch" in line and other["release"] in line and built_for in line
    assert "lkbuild-loader: loaded" not in run.err


@pytest.mark.ci
def test_the_loader_loads_only_the_files_it_was_built_with(hello, small_kernel, kernel_cache,
                                                          docker_client):
    """An image FROM the loader with its hello.ko swapped for a changed one (trailing bytes,
    which insmod would take) is refused in the VM before anything loads."""
    result = hello("amd64")
    loader, release = result["loader_refs"][0], result["release"]
    path = f"lkbuild/root/lib/modules/{release}/extra/hello.ko"
    changed = image_files(loader)[path] + b"\0" * 64
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", f"FROM {loader}\nCOPY hello.ko /{path}\n".encode()),
                           ("hello.ko", changed)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"{ORG}/hello-changed:{release}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                               forcerm=True)
    try:
        assert image_files(tag)[path] == changed
        run = lkbuild(kernel_cache, "vmtest", "--kernel", small_kernel("amd64")["refs"][0],
                      "--arch", "amd64", "--module", tag)
        assert run.code != 0
        line = one_error_line(run.err)
        assert "extra/hello.ko is not the file this image was built with" in line, line
        assert "nothing loaded" in line
        assert "lkbuild-loader: loaded" not in run.err
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.mark.ci
@pytest.mark.skipif(not ZFS_SOURCE.is_file(), reason="scripts/setup-debian.sh fetches it")
def test_openzfs_builds_from_zfs_dkms_and_spl_and_zfs_load_in_qemu(small_kernel, kernel_cache):
    kernel = small_kernel("amd64")  # its config has what OpenZFS needs
    run = lkbuild(kernel_cache, "buildmodule", "--kernel", kernel["refs"][0], "--module", "zfs",
                  "--module-source", str(ZFS_SOURCE), "--json", timeout=2400)
    assert run.code == 0, run.err[-3000:]
    result = run.json()
    assert result["modules"] == ["spl", "zfs"] and result["version"] == "2.3.2"
    assert result["refs"][1] == f"{ORG}/zfs:2.3.2-{kernel['release']}-amd64"
    boot = lkbuild(kernel_cache, "vmtest", "--kernel", kernel["refs"][0], "--arch", "amd64",
                   "--module", result["loader_refs"][0], "--json", "--timeout", "300")
    assert boot.code == 0, boot.err[-3000:]
    console = Path(boot.json()["log"]).read_text(errors="replace")
    assert "lkbuild-loader: loaded spl" in console and "lkbuild-loader: loaded zfs" in console
    assert re.search(r"ZFS: Loaded module v2\.3\.2", console), console[-3000:]


@pytest.mark.full
@pytest.mark.timeout(9000)  # a cold cross build of the full config, then OpenZFS and qemu
@pytest.mark.skipif(not ZFS_SOURCE.is_file(), reason="scripts/setup-debian.sh fetches it")
def test_openzfs_builds_against_the_shipped_arm64_config_and_loads_in_qemu(kernel_cache, kver):
    """The kernel `inv build --arch arm64` makes with no --config (the series' container-host
    config, cross-built: about 15 minutes on 2 cores), OpenZFS against it, and spl and zfs
    loaded from its loader image in qemu booted with that kernel."""
    env = {"LKBUILD_CACHE_ID": f"{SCOPE}-shipped"}  # a full build dir of its own
    built = lkbuild(kernel_cache, "build", "--version", kver, "--arch", "arm64", "--source",
                    str(DEBIAN_SOURCE), "--json", env=env, timeout=5400)
    assert built.code == 0, built.err[-3000:]
    (kernel,) = built.json()
    assert config_body(image_files(kernel["refs"][0])["config"]) == \
        config_body((ROOT / "kernel" / "6.12.x" / "config-aarch64").read_text())
    run = lkbuild(kernel_cache, "buildmodule", "--kernel", kernel["refs"][0], "--module", "zfs",
                  "--module-source", str(ZFS_SOURCE), "--json", env=env, timeout=2400)
    assert run.code == 0, run.err[-3000:]
    result = run.json()
    assert result["modules"] == ["spl", "zfs"] and result["arch"] == "arm64"
    boot = lkbuild(kernel_cache, "vmtest", "--kernel", kernel["refs"][0], "--arch", "arm64",
                   "--module", result["loader_refs"][0], "--json", "--timeout", "600", env=env)
    assert boot.code == 0, boot.err[-3000:]
    console = Path(boot.json()["log"]).read_text(errors="replace")
    assert "lkbuild-loader: loaded spl" in console and "lkbuild-loader: loaded zfs" in console
    assert re.search(r"ZFS: Loaded module v2\.3\.2", console), console[-3000:]


# --- bad input: one line, non-zero, nothing tagged -------------------------------------------

def module_tags() -> set[str]:
    return {t for image in docker.from_env().images.list() for t in image.tags
            if t.startswith(f"{ORG}/") and not t.startswith(f"{ORG}/kernel:")}


def refused(kernel_cache: Path, *args: str) -> str:
    before_tags, before_containers = module_tags(), containers()
    run = lkbuild(kernel_cache, "buildmodule", *args)
    assert run.code != 0, run.out
    assert run.out == ""
    assert module_tags() == before_tags and containers() == before_containers
    return one_error_line(run.err)


@pytest.mark.ci
def test_a_module_dir_without_a_makefile_is_refused(small_kernel, kernel_cache, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "m.c").write_text("int x;\n")
    line = refused(kernel_cache, "--kernel", small_kernel("amd64")["refs"][0], "--module",
                   str(tmp_path / "m"))
    assert "has no Makefile" in line and str(tmp_path / "m") in line


@pytest.mark.ci
def test_a_makefile_that_builds_no_ko_is_refused(small_kernel, kernel_cache, tmp_path):
    mod = tmp_path / "noko"
    mod.mkdir()
    (mod / "Makefile").write_text("all:\n\techo nothing to build\n")
    line = refused(kernel_cache, "--kernel", small_kernel("amd64")["refs"][0], "--module",
                   str(mod))
    assert "made no .ko files" in line and "log:" in line


@pytest.mark.ci
def test_a_compile_error_shows_the_compiler_lines_and_the_log(small_kernel, kernel_cache,
                                                              tmp_path):
    mod = tmp_path / "broken"
    mod.mkdir()
    (mod / "broken.c").write_text("#include <linux/module.h>\nint broken(void) { return nope; }\n"
                                  'MODULE_LICENSE("GPL");\n')
    (mod / "Makefile").write_text("obj-m := broken.o\n")
    before = module_tags()
    run = lkbuild(kernel_cache, "buildmodule", "--kernel", small_kernel("amd64")["refs"][0],
                  "--module", str(mod))
    assert run.code != 0 and module_tags() == before
    line = one_error_line(run.err)
    assert "broken.c:2:" in line and "'nope' undeclared" in line
    log = re.search(r"log: (\S+?)\)?$", line).group(1)
    assert Path(log).is_file()
    assert any("error: 'nope' undeclared" in ln for ln in run.err.splitlines()
               if not ln.startswith("lkbuild: error:") and not ln.startswith("#"))


@pytest.mark.ci
def test_a_missing_kernel_image_is_refused(kernel_cache):
    line = refused(kernel_cache, "--kernel", f"{ORG}/kernel:9.9.9-amd64", "--module", "hello")
    assert f"{ORG}/kernel:9.9.9-amd64 does not exist" in line


@pytest.mark.ci
def test_a_kernel_image_without_kernel_dev_is_refused(small_kernel, kernel_cache, tmp_path):
    client = docker.from_env()
    kernel = small_kernel("amd64")
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("kernel")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"bzIm"))
    ref = f"{ORG}/bare-kernel:1"
    client.api.import_image_from_data(data.getvalue(), repository=f"{ORG}/bare-kernel", tag="1")
    try:
        line = refused(kernel_cache, "--kernel", ref, "--module", "hello", "--builder-image",
                       kernel["refs"][0].replace(f"{kernel['version']}-",
                                                 f"{kernel['version']}-builder-"))
    finally:
        client.images.remove(ref)
    assert "no usable /kernel-dev.tar" in line


@pytest.mark.ci
def test_a_kernel_whose_compiler_cannot_be_found_names_the_compiler_it_needs(
        small_kernel, kernel_cache):
    """A foreign kernel image (no labels, no -builder beside it, no /kernel-builder)."""
    client = docker.from_env()
    kernel = small_kernel("amd64")
    files = image_files(kernel["refs"][0])
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for name in ("kernel", "kernel.tar", "kernel-dev.tar"):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    ref = f"{ORG}/foreign-kernel:6.12"
    client.api.import_image_from_data(data.getvalue(), repository=f"{ORG}/foreign-kernel",
                                      tag="6.12")
    try:
        line = refused(kernel_cache, "--kernel", ref, "--module", "hello")
    finally:
        client.images.remove(ref)
    compiler = labels(kernel["refs"][0])["org.lkbuild.kernel.compiler"]
    assert f"it was built with '{compiler}'" in line
    assert f"{ref}-builder" in line and "--builder-image" in line


@pytest.mark.ci
def test_a_recipe_with_schema_errors_lists_them_all(small_kernel, kernel_cache, tmp_path):
    mod = tmp_path / "bad"
    mod.mkdir()
    (mod / "recipe.yml").write_text("name: Bad Name\nversion: 1\nsource: {url: ftp://x}\n"
                                    "colour: blue\n")
    line = refused(kernel_cache, "--kernel", small_kernel("amd64")["refs"][0], "--module",
                   str(mod))
    assert "4 error(s)" in line or "error(s)" in line
    for part in ("name:", "colour: unknown field", "source.url:"):
        assert part in line


@pytest.mark.ci
def test_missing_kernel_config_options_are_listed_before_compiling(small_kernel, kernel_cache):
    # The small arm64 config lacks what OpenZFS needs (the amd64 one has it).
    line = refused(kernel_cache, "--kernel", small_kernel("arm64")["refs"][0], "--module", "zfs",
                   "--module-source", str(ZFS_SOURCE))
    for sym in ("CONFIG_BLOCK", "CONFIG_ZLIB_DEFLATE"):
        assert sym in line
    assert "--fragment" in line


@pytest.mark.ci
def test_an_unknown_module_name_lists_the_known_ones(small_kernel, kernel_cache):
    line = refused(kernel_cache, "--kernel", small_kernel("amd64")["refs"][0], "--module",
                   "wireguardd")
    assert "unknown module 'wireguardd'" in line and "hello" in line and "zfs" in line


@pytest.mark.ci
def test_a_matrix_builds_every_row_and_a_failing_row_does_not_stop_the_others(
        hello, small_kernel, kernel_cache, tmp_path):
    hello("amd64")
    hello("arm64")
    matrix = tmp_path / "versions"
    matrix.write_text(f"# kernel arch module\n"
                      f"{small_kernel('amd64')['refs'][0]} amd64 hello\n"
                      f"{ORG}/kernel:9.9.9-amd64 amd64 hello\n"
                      f"{small_kernel('arm64')['refs'][0]} arm64 hello 1.0\n")
    run = lkbuild(kernel_cache, "buildmodule", "--matrix", str(matrix), "--json")
    assert run.code != 0
    rows = run.json()
    assert [r["status"] for r in rows] == ["exists", "failed", "exists"]
    assert "does not exist" in rows[1]["detail"]
    assert rows[2]["image"] == hello("arm64")["loader_refs"][0]
    assert one_error_line(run.err) == "lkbuild: error: 1 of 3 matrix rows failed"
