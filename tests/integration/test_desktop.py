"""`inv detect` and profile builds against real targets: the local engine, and a Docker
Desktop-like target simulated by an lkbuild kernel with another localversion booted in qemu,
where capture.sh runs and its console output becomes the profile."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import yaml

from tests.integration.kernels import (
    DATA,
    OTHER_VARIANT,
    SESSION,
    lkbuild,
    one_error_line,
    small_args,
)

RANDSTRUCT_FRAGMENT = "randstruct.fragment"  # -rs, RANDSTRUCT_FULL through the GCC plugin


@pytest.mark.ci
def test_detect_on_the_local_engine_equals_docker_info_and_the_engine_hosts_config(
        kernel_cache, docker_client):
    run = lkbuild(kernel_cache, "detect", "--json")
    assert run.code == 0, run.err[-2000:]
    found = run.json()
    info = docker_client.info()
    assert found["release"] == info["KernelVersion"]
    assert found["machine"] == info["Architecture"]
    assert found["engine"]["cpus"] == info["NCPU"]
    config = Path("/proc/config.gz")  # this engine runs on this machine's kernel
    if config.exists():
        assert found["has_config"] is True
        assert found["config_sha256"] == hashlib.sha256(gzip.decompress(
            config.read_bytes())).hexdigest()
    assert [c for c in docker_client.containers.list(all=True)
            if c.labels.get("org.lkbuild.detect")] == [], "the capture container was left"


@pytest.mark.ci
def test_privileged_detect_on_an_engine_that_is_not_desktop_says_so_and_goes_on(kernel_cache):
    run = lkbuild(kernel_cache, "detect", "--privileged", "--json")
    assert run.code == 0, run.err[-2000:]
    assert "is not Docker Desktop" in run.err and "without --privileged" in run.err
    assert run.json()["release"] and run.json()["kernel_image"] == ""


def capture_in_vm(kernel_cache: Path, ref: str) -> Path:
    """Boot the kernel in qemu with its modules, run capture.sh there: the console log."""
    from recipes import desktop, vm
    from recipes.arch import resolve
    from recipes.settings import Settings

    result = vm.boot(Settings(flags={"cache_dir": str(kernel_cache)}), ref,
                     resolve("amd64"), extra_files={"/capture.sh": desktop.CAPTURE_SCRIPT},
                     commands=["sh /capture.sh"], kernel_modules=True, append="quiet")
    assert result.passed, result.verdict
    return Path(result.log)


@pytest.fixture(scope="module")
def target(kernel_cache, kver, small_kernel, kernel_variant, tmp_path_factory
           ) -> tuple[dict, Path]:
    """The simulated target booted in qemu; capture.sh's console output saved as a profile."""
    small_kernel("amd64")  # the session's cold build comes first: others measure against it
    kernel = kernel_variant("amd64", *OTHER_VARIANT)
    log = capture_in_vm(kernel_cache, kernel["refs"][0])
    profile = tmp_path_factory.mktemp("target") / "target.yaml"
    run = lkbuild(kernel_cache, "detect", "--from-dir", str(log), "--save",
                  str(profile), "--json")
    assert run.code == 0, run.err[-2000:]
    return kernel, profile


@pytest.mark.ci
def test_the_capture_in_the_vm_becomes_a_profile_of_that_kernel(target, docker_client):
    kernel, profile = target
    doc = yaml.safe_load(profile.read_text())
    labels = docker_client.api.inspect_image(kernel["refs"][0])["Config"]["Labels"]
    assert doc["release"] == kernel["release"] == labels["org.lkbuild.kernel.release"]
    assert doc["arch"] == "amd64"
    assert doc["compiler"] == labels["org.lkbuild.kernel.compiler"]
    assert doc["config_sha256"] == labels["org.lkbuild.kernel.config.sha256"]
    assert "CONFIG_LOCALVERSION=\"-other\"" in doc["config"]


@pytest.mark.ci
def test_a_profile_build_gives_a_module_that_loads_in_the_target_vm(
        kernel_cache, kver, target, docker_client):
    kernel, profile = target
    source = small_args(kver, "amd64")[4:6]  # --source TARBALL
    build = lkbuild(kernel_cache, "build", "--profile", str(profile), *source, "--json")
    assert build.code == 0, build.err[-3000:]
    (built,) = build.json()
    assert built["release"] == kernel["release"] and built["arch"] == "amd64"
    assert "fidelity risk" not in build.err  # the target's config is final as it is
    module = lkbuild(kernel_cache, "buildmodule", "--profile", str(profile), *source,
                     "--module", "hello", "--json")
    assert module.code == 0, module.err[-3000:]
    result = module.json()
    assert result["release"] == kernel["release"]
    boot = lkbuild(kernel_cache, "vmtest", "--kernel", kernel["refs"][0], "--arch", "amd64",
                   "--module", result["loader_refs"][0], "--json")
    assert boot.code == 0, boot.err[-3000:]
    assert boot.json()["passed"] is True


@pytest.mark.ci
def test_the_profile_gate_refuses_a_kernel_of_another_localversion(
        kernel_cache, kver, target, small_kernel, hello):
    _, profile = target
    other = small_kernel("amd64")["refs"][0]  # -linuxkit: the session's plain small kernel
    hello("amd64")  # built for it already: the gate must come before that build is reused
    run = lkbuild(kernel_cache, "buildmodule", "--profile", str(profile), "--kernel", other,
                  "--module", "hello")
    assert run.code == 2, run.err[-2000:]
    line = one_error_line(run.err)
    assert f"release {kver}-other vs {kver}-linuxkit" in line
    assert "inv build --profile" in line and run.out == ""
    # The same module refused by its loader in the target VM is
    # test_modules.py::test_the_loader_refuses_a_kernel_with_another_localversion.


@pytest.mark.parametrize("args,words", [
    (["--from-dir", "/nonexistent/capture"], ["capture /nonexistent/capture does not exist"]),
    (["--context", "no-such-context"], ["no-such-context"]),
    (["--from-dir", "{empty}"], ["not an lkbuild capture"]),
])
@pytest.mark.ci
def test_bad_detect_input_is_one_line(kernel_cache, tmp_path, args, words):
    empty = tmp_path / "empty.log"
    empty.write_text("a console without a capture\n")
    run = lkbuild(kernel_cache, "detect", *[a.replace("{empty}", str(empty)) for a in args])
    assert run.code == 2, run.err[-2000:]
    line = one_error_line(run.err)
    for word in words:
        assert word in line
    assert run.out == ""


@pytest.mark.ci
def test_a_profile_of_another_arch_or_a_corrupt_one_is_refused(kernel_cache, kver, target,
                                                              tmp_path):
    _, profile = target
    run = lkbuild(kernel_cache, "build", "--profile", str(profile), "--arch", "arm64")
    assert run.code == 2 and "is for amd64, not arm64" in one_error_line(run.err)
    corrupt = tmp_path / "corrupt.yaml"
    corrupt.write_text(profile.read_text()[:-200] + "\n  : [\n")
    run = lkbuild(kernel_cache, "build", "--profile", str(corrupt))
    assert run.code == 2 and str(corrupt) in one_error_line(run.err)


SEED = "5eed" * 16


@pytest.mark.full
def test_a_randstruct_target_is_built_with_its_seed_and_its_module_loads_there(
        kernel_cache, kver, tmp_path):
    """A RANDSTRUCT target whose seed is known: lkbuild's seed writer makes it (the vermagic
    hash proves the seed was not drawn). The profile build then runs in the same build dir:
    had its seed not reached kbuild, the changed generator command would draw a new one and
    the built vermagic would be refused. Its module loads in the target VM. Both builds use a
    cache scope of their own: RANDSTRUCT recompiles everything, and the session's shared
    build dir stays as the other tests expect it."""
    own = {"LKBUILD_CACHE_ID": f"test-{SESSION}-rs"}
    try:
        _randstruct_target_and_profile(kernel_cache, kver, tmp_path, own)
    finally:
        assert lkbuild(kernel_cache, "prune", env=own).code == 0


def _randstruct_target_and_profile(kernel_cache: Path, kver: str, tmp_path: Path,
                                   own: dict[str, str]) -> None:
    target = lkbuild(kernel_cache, "build", *small_args(kver, "amd64"), "--fragment",
                     str(DATA / RANDSTRUCT_FRAGMENT), "--build-arg", f"RANDSTRUCT_SEED={SEED}",
                     "--json", env=own)
    assert target.code == 0, target.err[-3000:]
    (kernel,) = target.json()
    assert kernel["vermagic"].split()[-1] == \
        f"RANDSTRUCT_{hashlib.sha256(SEED.encode()).hexdigest()}"
    log = capture_in_vm(kernel_cache, kernel["refs"][0])
    source = small_args(kver, "amd64")[4:6]
    bare = tmp_path / "bare.yaml"
    assert lkbuild(kernel_cache, "detect", "--from-dir", str(log), "--save", str(bare)).code == 0
    run = lkbuild(kernel_cache, "build", "--profile", str(bare), *source, env=own)
    assert run.code == 2 and "randstruct_seed" in one_error_line(run.err)

    seed, wrong = tmp_path / "randstruct.seed", tmp_path / "wrong.seed"
    seed.write_text(SEED + "\n")
    wrong.write_text("0" * 64 + "\n")
    profile = tmp_path / "rs.yaml"
    run = lkbuild(kernel_cache, "detect", "--from-dir", str(log), "--randstruct-seed",
                  str(wrong), "--save", str(profile))
    assert run.code == 2 and "not the target's" in one_error_line(run.err)
    assert not profile.exists()
    run = lkbuild(kernel_cache, "detect", "--from-dir", str(log), "--randstruct-seed",
                  str(seed), "--save", str(profile))
    assert run.code == 0, run.err[-2000:]

    build = lkbuild(kernel_cache, "build", "--profile", str(profile), *source, "--json",
                    env=own)
    assert build.code == 0, build.err[-3000:]
    (built,) = build.json()
    assert built["vermagic"].split() == kernel["vermagic"].split()
    module = lkbuild(kernel_cache, "buildmodule", "--profile", str(profile), *source,
                     "--module", "hello", "--json", env=own)
    assert module.code == 0, module.err[-3000:]
    boot = lkbuild(kernel_cache, "vmtest", "--kernel", kernel["refs"][0], "--arch", "amd64",
                   "--module", module.json()["loader_refs"][0], "--json")
    assert boot.code == 0, boot.err[-3000:]
    assert boot.json()["passed"] is True
