"""Kernel builds through the real engine and BuildKit: layout, labels, skip, rebuild, checks."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker
import pytest

from recipes import progress
from recipes.arch import host
from recipes.progress import Tracker
from tests.conftest import make_tree
from tests.integration.kernels import (
    DATA,
    ORG,
    ROOT,
    SCOPE,
    SESSION,
    UNAME,
    config_body,
    image_files,
    labels,
    lkbuild,
    objects_in,
    remove_images,
    small_args,
)


@pytest.mark.parametrize("arch,magic,platform", [("amd64", None, "amd64"),
                                                 ("arm64", b"\x1f\x8b", "arm64")])
@pytest.mark.ci
def test_small_kernel_has_the_linuxkit_layout_and_labels(small_kernel, kver, arch, magic,
                                                         platform):
    result = small_kernel(arch)
    ref = result["refs"][0]
    assert re.fullmatch(rf"{ORG}/kernel:{kver}-[0-9a-f]{{16}}-{arch}", ref)
    assert result["refs"][1] == f"{ORG}/kernel:{kver}-{arch}"
    assert result["release"] == f"{kver}-linuxkit"
    files = image_files(ref)
    assert set(files) == {"kernel", "System.map", "kernel.tar", "kernel-dev.tar",
                          "kernel-headers.tar", "kernel-source-info", "kernel-builder", "config"}
    if magic:
        assert files["kernel"][:2] == magic
    else:
        assert files["kernel"][0x202:0x206] == b"HdrS"  # x86 boot protocol header
    release = result["release"]
    with tarfile.open(fileobj=io.BytesIO(files["kernel.tar"])) as t:
        build_link = t.getmember(f"lib/modules/{release}/build")
        assert build_link.issym() and build_link.linkname == f"/usr/src/linux-headers-{release}"
        assert f"lib/modules/{release}/modules.dep" in t.getnames()
    dev = f"usr/src/linux-headers-{release}"
    with tarfile.open(fileobj=io.BytesIO(files["kernel-dev.tar"])) as t:
        names = set(t.getnames())
        for need in ("Makefile", ".config", "Module.symvers", "include/generated/autoconf.h",
                     "include/config/auto.conf", "scripts/Makefile.modpost", "scripts/mod/modpost",
                     "scripts/basic/fixdep",
                     f"arch/{'x86' if arch == 'amd64' else 'arm64'}/Makefile"):
            assert f"{dev}/{need}" in names, need
    with tarfile.open(fileobj=io.BytesIO(files["kernel-headers.tar"])) as t:
        assert "usr/include/linux/types.h" in t.getnames()
    assert files["kernel-builder"].decode().strip() == "lkbuild/build:bookworm"
    assert f"KERNEL_RELEASE={release}" in files["kernel-source-info"].decode()
    lab = labels(ref)
    assert lab["org.lkbuild.kernel.release"] == release
    assert lab["org.lkbuild.kernel.vermagic"].startswith(release + " ")
    assert "mod_unload" in lab["org.lkbuild.kernel.vermagic"]
    assert lab["org.lkbuild.kernel.config.sha256"] == hashlib.sha256(files["config"]).hexdigest()
    assert re.match(r"(aarch64-linux-gnu-)?gcc \(Debian ", lab["org.lkbuild.kernel.compiler"])
    assert lab["org.lkbuild.kernel.hash"] == result["hash"]
    assert lab["org.lkbuild.kernel.arch"] == arch
    assert docker.from_env().images.get(ref).attrs["Architecture"] == platform
    assert config_body(files["config"]) == config_body(
        (DATA / f"small-{UNAME[arch]}.config").read_bytes())


@pytest.mark.ci
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_builder_image_compiles_a_module_whose_vermagic_matches_the_kernel(small_kernel, arch):
    result = small_kernel(arch)
    builder = next(r for r in result["refs"] if "-builder-" in r and result["hash"] in r)
    script = (
        "mkdir -p /tmp/m && cd /tmp/m && "
        "printf '#include <linux/module.h>\\nMODULE_LICENSE(\"GPL\");\\n' > hello.c && "
        "echo 'obj-m := hello.o' > Kbuild && make -s -C $KERNELDIR M=/tmp/m modules && "
        "modinfo -F vermagic hello.ko"
    )
    client = docker.from_env()
    # It runs where it was built (cross compiler, host tools), and says so.
    assert client.images.get(builder).attrs["Architecture"] == host().name
    out = client.containers.run(builder, ["sh", "-c", script], remove=True, network_mode="none")
    assert out.decode().strip() == labels(result["refs"][0])["org.lkbuild.kernel.vermagic"]


@pytest.mark.ci
def test_an_unchanged_build_is_skipped_and_names_the_image_it_kept(small_kernel, kernel_cache,
                                                                  kver):
    # How fast the skip is, is a benchmark figure (bench/), not a test's.
    first = small_kernel("amd64")
    run = lkbuild(kernel_cache, "build", *small_args(kver, "amd64"), "--json")
    assert run.code == 0, run.err
    (again,) = run.json()
    assert again["skipped"], (again, first)
    assert again["image_id"] == first["image_id"]
    assert again["refs"] == first["refs"]
    assert "up to date" in run.err


@pytest.mark.ci
def test_a_skipped_build_points_its_plain_tags_at_itself_again(small_kernel, kernel_cache,
                                                               kver):
    """`6.12.54-arm64` names the latest build: after another config's build took the tag (or
    the tag was removed), building these inputs again moves it back, as a push then takes it."""
    first = small_kernel("amd64")
    _, kernel_plain, builder_hash, builder_plain = first["refs"]
    api = docker.from_env().api
    try:
        api.tag(builder_hash, *kernel_plain.rsplit(":", 1))  # another image under the tag
        api.remove_image(builder_plain)  # untags it only: the hash tag keeps the image
        run = lkbuild(kernel_cache, "build", *small_args(kver, "amd64"), "--json")
        assert run.code == 0, run.err[-3000:]
        (again,) = run.json()
        assert again["skipped"] and again["refs"] == first["refs"]
        assert api.inspect_image(kernel_plain)["Id"] == first["image_id"]
        assert api.inspect_image(builder_plain)["Id"] == api.inspect_image(builder_hash)["Id"]
        assert f"{kernel_plain} now names this build again" in run.err
    finally:
        api.tag(first["image_id"], *kernel_plain.rsplit(":", 1), force=True)
        api.tag(builder_hash, *builder_plain.rsplit(":", 1), force=True)


STEP_LINE = re.compile(r"^step (\d)/5: (source|config|compile|package|images)\b")
PROGRESS_LINE = re.compile(r"^(source|config|compile|package|images): ")


def plain_progress(err: str) -> list[str]:
    """The progress lines of a piped build's stderr (its first line names the log)."""
    return [ln for ln in err.splitlines() if STEP_LINE.match(ln) or PROGRESS_LINE.match(ln)
            or ln.startswith("built in ")]


@pytest.mark.full
def test_a_piped_build_prints_plain_progress_and_a_summary_and_logs_every_make_line(
        kernel_cache, kver):
    """Piped (as CI and scripts run it): a line per step and progress lines, no control code,
    BuildKit's and make's own lines in the log alone. The same build under another org is
    then taken whole from BuildKit's cache, and still says its steps and that it was reused."""
    args = [*small_args(kver, "amd64"), "--jobs", "2", "--json"]  # the same args both times
    runs = []
    try:
        for org in (f"{ORG}-piped", f"{ORG}-cached"):
            run = lkbuild(kernel_cache, "buildplainkernel", *args, env={"LKBUILD_ORG": org})
            assert run.code == 0, run.err[-3000:]
            runs.append((run, run.json()[0]))
    finally:
        for org in (f"{ORG}-piped", f"{ORG}-cached"):
            remove_images(org)
    for run, result in runs:
        assert "\x1b" not in run.err and "\r" not in run.err
        assert "log: " in run.err_lines[0]
        assert not re.search(r"^#\d+ ", run.err, re.M), "BuildKit's own lines reached stderr"
        lines = plain_progress(run.err)
        steps = [m.group(2) for m in map(STEP_LINE.match, lines) if m]
        assert steps[:3] == ["source", "config", "compile"] and steps[-1] == "images", lines
        assert lines[-1].startswith("built in "), lines
        summary = result["summary"]
        assert [s["step"] for s in summary["steps"]] == ["source", "config", "compile",
                                                         "package", "images"]
        assert 97 <= sum(s["share"] for s in summary["steps"]) <= 103

    (first, built), (again, cached) = runs
    log = Path(built["log"]).read_text()
    if not built["summary"]["cache_reused"]:  # this session's args were new to BuildKit
        make_lines = re.findall(r"^#\d+ [\d.]+ +([A-Z][A-Z0-9_]* .*)$", log, re.M)
        assert "lkbuild: make -j" in log and "lkbuild: make took" in log and make_lines
        assert not set(make_lines) & {ln.strip() for ln in first.err_lines}
        objects = [ln for ln in make_lines if re.fullmatch(r"[A-Z][A-Z0-9_]*( \[M\])? +\S+\.o", ln)]
        assert built["summary"]["objects_compiled"] == len(objects)
        compile_line = next(ln for ln in plain_progress(first.err)
                            if ln.startswith("step 3/5: compile"))
        held = Tracker(progress.KERNEL)  # what compile.sh said of the build dir, read back
        for ln in log.splitlines():
            held.feed(ln)
        assert held.objects_before is not None, "compile.sh did not say what the build dir held"
        assert not held.objects_before or held.config_changed, \
            "a make ran there: its config is known"
        # The scope's build dir, its last make of this config or one near it (another test's
        # fragment): make recompiles what changed.
        if held.rebuild:
            assert f"(a rebuild: the build dir holds {held.held} objects)" in compile_line
        else:
            assert "first build of this config: no estimate yet" in compile_line or \
                re.search(r"expecting \d+ objects in about ", compile_line), compile_line
        assert f"{objects_in(log)} objects in the build dir" in log
        assert "objects compiled" in plain_progress(first.err)[-1]
    assert cached["summary"]["cache_reused"] is True
    assert any(ln.startswith("compile: cached") for ln in plain_progress(again.err))
    assert "reused from BuildKit's cache" in plain_progress(again.err)[-1]
    assert "#1 [internal] load build definition" in Path(cached["log"]).read_text()


def compile_count(log: str) -> int:
    return len(re.findall(r"^\S+ \d+\.\d+ +CC +", log, re.M))


@pytest.mark.full
def test_a_one_symbol_fragment_rebuilds_a_fraction_of_the_tree(small_kernel, kernel_cache,
                                                             kver, tmp_path):
    cold = small_kernel("amd64")
    # The build dir is shared with whatever was built last for this version and arch: the
    # small config, compiled again where it differs, is what the fragment is measured from.
    base = lkbuild(kernel_cache, "buildplainkernel", *small_args(kver, "amd64"), "--force")
    assert base.code == 0, base.err[-3000:]
    # One string symbol of this run's own: BuildKit's cache may hold any fixed one's compile.
    hostname = f'CONFIG_DEFAULT_HOSTNAME="lkbuild-{SESSION}"'
    frag = tmp_path / "hostname.fragment"
    frag.write_text(hostname + "\n")
    run = lkbuild(kernel_cache, "buildplainkernel", *small_args(kver, "amd64"),
                  "--fragment", str(frag), "--json")
    assert run.code == 0, run.err[-3000:]
    (result,) = run.json()
    assert not result["skipped"] and result["hash"] != cold["hash"]
    files = image_files(result["refs"][0])
    assert hostname.encode() in files["config"]
    log = Path(result["log"]).read_text()
    rebuilt, objects = compile_count(log), objects_in(log)
    assert objects > 300, "the build dir holds no whole kernel"
    assert 0 < rebuilt < 0.15 * objects, (rebuilt, objects)


@pytest.mark.full
def test_force_runs_the_steps_again_and_keeps_the_cache_mount(small_kernel, kernel_cache,
                                                               kver):
    """--force re-runs the compile without BuildKit's --no-cache, which would empty the
    shared cache mount: every scope's unpacked sources and build dirs, other users' too."""
    cold = small_kernel("amd64")
    run = lkbuild(kernel_cache, "buildplainkernel", *small_args(kver, "amd64"), "--force",
                  "--json")
    assert run.code == 0, run.err[-3000:]
    (forced,) = run.json()
    assert not forced["skipped"] and forced["hash"] == cold["hash"]
    log = Path(forced["log"]).read_text()
    assert "lkbuild: make -j" in log, "the compile step did not run again"
    assert "lkbuild: unpacking" not in log, "the cache mount was emptied"
    assert compile_count(log) < 0.15 * objects_in(log)


@pytest.mark.ci
def test_a_build_keeps_the_memory_and_disk_it_took_for_the_next_one(small_kernel,
                                                                   kernel_cache):
    """The next build of it is sized by these (jobs by the peak, the disk check by the disk
    its build dir and source held) instead of the defaults."""
    small_kernel("amd64")
    kept = [json.loads(p.read_text()) for p in (kernel_cache / "jobs").glob("*.json")]
    assert kept, "no build kept what it measured"
    for found in kept:
        assert found["peak_rss"] > 10 * 2**20, found  # the largest process: a cc1 or the link
        assert found["disk_bytes"] > 500 * 10**6, found  # the unpacked source alone is more


@pytest.mark.ci
def test_a_non_final_config_stops_before_compiling_and_names_the_symbols(kernel_cache, kver,
                                                                       tmp_path):
    config = tmp_path / "not-final.config"
    text = (DATA / "small-x86_64.config").read_text()
    text = text.replace("CONFIG_SERIAL_8250=y", "# CONFIG_SERIAL_8250 is not set")
    config.write_text(text)
    args = small_args(kver, "amd64")
    args[args.index("--config") + 1] = str(config)
    run = lkbuild(kernel_cache, "buildplainkernel", *args)
    assert run.code != 0
    last = run.err_lines[-1]
    assert last.startswith("lkbuild: error: config --config") and "is not final" in last
    assert "CONFIG_SERIAL_8250_CONSOLE: y -> not set" in last
    assert "inv kconfig" in last and "Traceback" not in run.err
    assert run.out == ""


@pytest.mark.full
def test_a_patch_that_does_not_apply_is_named_with_its_hunk(kernel_cache, kver, tmp_path):
    tree = tmp_path / "kernel"
    series = tree / "6.12.x"
    (series / "patches").mkdir(parents=True)
    (series / "build-args").write_text(f"KERNEL_VERSION={kver}\nKERNEL_SERIES=6.12.x\n"
                                       "BUILD_IMAGE=lkbuild/build:bookworm\n")
    shutil.copy(DATA / "small-x86_64.config", series / "config-x86_64")
    (series / "patches" / "0001-bad-makefile.patch").write_text(
        "--- a/Makefile\n+++ b/Makefile\n@@ -1,3 +1,3 @@\n-not the first line\n+x\n a\n b\n")
    run = lkbuild(kernel_cache, "buildplainkernel", "--version", kver, "--arch", "amd64",
                  "--source", "/usr/src/linux-source-6.12.tar.xz", "--kernel-dir", str(tree))
    assert run.code != 0
    last = run.err_lines[-1]
    assert "patch 0001-bad-makefile.patch does not apply" in last or \
        "patch bad-makefile.patch does not apply" in last, last
    assert "Hunk #1 FAILED" in last and "log: " in last


@pytest.mark.full
def test_ctrl_c_during_a_build_leaves_no_build_process_or_image(kernel_cache, kver, tmp_path):
    frag = tmp_path / "interrupt.fragment"
    frag.write_text(f'CONFIG_LOCALVERSION="-interrupt-{SESSION}"\n')  # a compile not cached
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    env.update({"LKBUILD_CACHE_DIR": str(kernel_cache), "LKBUILD_ORG": ORG,
                "LKBUILD_CACHE_ID": SCOPE,
                "LKBUILD_BUILD_IMAGE": "lkbuild/build:bookworm", "LKBUILD_MIN_FREE_GB": "5",
                "LKBUILD_CONFIG": str(kernel_cache / "none.yaml"),
                "LKBUILD_VERBOSE": "1"})  # make's own lines on stderr say when it compiles
    proc = subprocess.Popen([sys.executable, "-m", "recipes", "buildplainkernel",
                             *small_args(kver, "amd64"), "--fragment", str(frag), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    seen = ""
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if re.search(r"\s(CC|LD|AR)\s", line):
            break
        assert line or proc.poll() is None, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    rest_out, rest_err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + rest_err)[-2000:]
    assert "lkbuild: interrupted" in rest_err
    assert rest_out == ""
    for _ in range(60):
        busy = subprocess.run(["pgrep", "-f", "lkbuild/compile.sh"], capture_output=True)
        if busy.returncode != 0:
            break
        time.sleep(1)
    assert busy.returncode != 0, "a compile process outlived the interrupted build"
    tags = [t for image in docker.from_env().images.list(f"{ORG}/kernel") for t in image.tags]
    assert not [t for t in tags if "interrupt" in t]
    lock_holders = subprocess.run(["pgrep", "-f", "docker-buildx buildx build"],
                                  capture_output=True)
    assert lock_holders.returncode != 0


@pytest.mark.parametrize("args,needle", [
    (["--version", "6.13.2", "--arch", "amd64"], "no series 6.13.x"),
    (["--version", "6.12", "--arch", "amd64"], "malformed kernel version '6.12'"),
    (["--version", "6.12.54", "--arch", "riscv64"], "unknown arch 'riscv64'"),
    (["--version", "6.6.70", "--arch", "arm64", "--kernel-dir", "{tree}"],
     "has no config for arm64"),
    (["--version", "6.12.54", "--arch", "amd64", "--kernel-dir", "{tree}/nope"],
     "does not exist"),
])
@pytest.mark.ci
def test_bad_build_input_is_one_line_and_builds_nothing(kernel_cache, args, needle, tmp_path):
    tree = make_tree(tmp_path / "kernel")
    run = lkbuild(kernel_cache, "buildplainkernel", *[a.format(tree=tree) for a in args])
    assert run.code != 0 and run.out == ""
    assert len(run.err_lines) == 1 and run.err_lines[0].startswith("lkbuild: error: ")
    assert needle in run.err_lines[0]


@pytest.mark.parametrize("extra,env,needle", [
    (["--builders", "linux/amd64=no-such-context"], {}, "'no-such-context'"),
    (["--build-image", "127.0.0.1:9/missing/build:1"], {}, "inv bootstrap-image"),
    (["--jobs", "4096"], {}, "use --jobs"),  # more than any job model fits in memory
    ([], {"LKBUILD_MIN_FREE_GB": "100000"}, "100000 GB"),
    ([], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "cannot connect to the Docker engine"),
])
@pytest.mark.ci
def test_preflight_refuses_before_starting(kernel_cache, kver, extra, env, needle):
    run = lkbuild(kernel_cache, "buildplainkernel", *small_args(kver, "amd64"), "--force",
                  *extra, env=env)
    assert run.code != 0 and run.out == ""
    assert run.err_lines[-1].startswith("lkbuild: error: ") and needle in run.err_lines[-1]
    assert "Traceback" not in run.err


@pytest.mark.full
def test_kconfig_saves_a_config_that_builds_agree_is_final_and_prune_frees_its_scope(
        kernel_cache, kver, tmp_path, small_kernel):
    small_kernel("amd64")  # the session's tree of this source, in another scope
    scope = {"LKBUILD_CACHE_ID": f"test-{SESSION}-kconfig"}
    target = tmp_path / "small.config"
    args = ["kconfig", "--version", kver, "--arch", "amd64", "--source",
            "/usr/src/linux-source-6.12.tar.xz", "--base", "tinyconfig", "--fragment",
            str(DATA / "small-x86_64.fragment"), "--save", "--output", str(target)]
    run = lkbuild(kernel_cache, *args, env=scope)
    assert run.code == 0, run.err[-2000:]
    assert run.out.strip() == str(target)
    assert config_body(target.read_text()) == \
        config_body((DATA / "small-x86_64.config").read_text())
    # The scope's tree is a hard-link copy of one another scope holds (the session's, or any
    # other tree of this source: it is the same for every arch), not a second unpack.
    linked = rf"source tree \S+ linked from \S+-{re.escape(kver)}-(amd64|arm64)"
    assert re.search(linked, run.err) and "unpacking" not in run.err, run.err[-2000:]
    pruned = lkbuild(kernel_cache, "prune", env=scope)
    assert pruned.code == 0, pruned.err[-2000:]
    assert re.fullmatch(r"freed (\d+\.\d+) GB\n", pruned.out), pruned.out
    again = lkbuild(kernel_cache, "prune", env=scope)
    assert again.out == "freed 0.00 GB\n"
    # The other scopes' trees survived this scope's prune: one is linked from again (a new
    # fragment, a comment only, makes BuildKit run the config step instead of reusing it).
    (tmp_path / "comment.fragment").write_text("# nothing to change\n")
    rerun = lkbuild(kernel_cache, *args, "--fragment", str(tmp_path / "comment.fragment"),
                    env=scope)
    assert rerun.code == 0 and re.search(linked, rerun.err), rerun.err[-2000:]
    assert lkbuild(kernel_cache, "prune", env=scope).code == 0


@pytest.mark.ci
def test_kconfig_refuses_a_fragment_that_does_not_stick(kernel_cache, kver, tmp_path):
    frag = tmp_path / "bad.fragment"
    frag.write_text("CONFIG_SERIAL_8250_CONSOLE=y\n# CONFIG_SERIAL_8250 is not set\n")
    run = lkbuild(kernel_cache, "kconfig", *small_args(kver, "amd64"), "--fragment", str(frag),
                  "--save", "--output", str(tmp_path / "out.config"))
    assert run.code != 0 and not (tmp_path / "out.config").exists()
    assert "CONFIG_SERIAL_8250_CONSOLE: y -> not set" in run.err_lines[-1]


@pytest.mark.full
def test_the_debug_kernel_has_its_release_fragment_and_vmlinux(kernel_cache, kver,
                                                              small_kernel):
    """A build dir of its own (a compile from scratch), but the UAPI headers, which depend on
    the source and arch alone, are the plain kernel's, not made again."""
    plain = small_kernel("amd64")
    run = lkbuild(kernel_cache, "builddebugkernel", *small_args(kver, "amd64"), "--json")
    assert run.code == 0, run.err[-3000:]
    (result,) = run.json()
    log = Path(result["log"]).read_text()
    assert re.search(rf"^\S+ \S+ lkbuild: make -j\d+ .* in \S+-{kver}-amd64-dbg$", log, re.M), \
        "the debug kernel did not compile in a build dir of its own"
    assert "HDRINST" not in log, "the UAPI headers of this source and arch were made again"
    assert result["release"] == f"{kver}-linuxkit-dbg"
    assert re.fullmatch(rf"{ORG}/kernel:{kver}-dbg-[0-9a-f]{{16}}-amd64", result["refs"][0])
    files = image_files(result["refs"][0])
    assert files["kernel-headers.tar"] == image_files(plain["refs"][0])["kernel-headers.tar"]
    assert files["vmlinux"][:4] == b"\x7fELF"
    assert b"CONFIG_DEBUG_KERNEL=y" in files["config"]
    assert labels(result["refs"][0])["org.lkbuild.kernel.release"] == result["release"]
