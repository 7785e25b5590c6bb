"""`inv push` and `inv pull` against Debian's docker-registry on loopback, read back by skopeo.

The session's small kernels are tagged under an org of this module's own, so removing and
pulling them back touches nothing other tests use.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.daemons import Registry
from tests.integration.kernels import (
    ORG,
    ROOT,
    SESSION,
    lkbuild,
    one_error_line,
    remove_images,
    small_args,
)

PUSH_ORG = f"lkbuild-push-{SESSION}"
ARCHES = ("amd64", "arm64")


def skopeo_raw(ref: str, creds: str = "") -> dict | None:
    """What an independent client reads at a reference (None when it is not there)."""
    args = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    if creds:
        args += ["--creds", creds]
    proc = subprocess.run([*args, f"docker://{ref}"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        assert "manifest unknown" in proc.stderr or "not found" in proc.stderr, proc.stderr
        return None
    return json.loads(proc.stdout)


def digest_of(ref: str) -> str:
    proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format",
                           "{{.Digest}}", f"docker://{ref}"], capture_output=True, text=True,
                          timeout=60, check=True)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def kernels(small_kernel: Callable[[str], dict], docker_client: docker.DockerClient
            ) -> Iterator[dict[str, dict]]:
    """Both small kernels and their -builder images, tagged under PUSH_ORG as a build would.

    By image ID: other tests of the session build other kernels of the same version, which
    move the version's tags (`<v>-<arch>`) in the session's own org.
    """
    out = {}
    for arch in ARCHES:
        result = small_kernel(arch)
        _kernel_ref, _, builder_ref, _ = result["refs"]  # hash tags: they never move
        ids = {"kernel": result["image_id"],
               "builder": docker_client.api.inspect_image(builder_ref)["Id"]}
        for ref in result["refs"]:
            image_id = ids["builder" if "-builder-" in ref else "kernel"]
            docker_client.api.tag(image_id, f"{PUSH_ORG}/kernel", ref.rsplit(":", 1)[1])
        out[arch] = {**result, "id": ids["kernel"], "builder_id": ids["builder"],
                     "refs": [r.replace(ORG, PUSH_ORG) for r in result["refs"]]}
    yield out
    remove_images(PUSH_ORG)


def by_tag(run) -> dict[str, dict]:
    return {o["ref"].rsplit(":", 1)[1]: o for o in run.json()}


@pytest.mark.ci
def test_push_makes_per_arch_tags_and_an_oci_index_that_skopeo_reads(
        kernels, kernel_cache, kver, registry, docker_client):
    repo = f"{registry.host}/{PUSH_ORG}/kernel"
    dry = push(kernel_cache, registry, "--version", kver, "--dry-run", "--json")
    assert dry.code == 0, dry.err[-2000:]
    planned = by_tag(dry)
    assert {o["status"] for o in planned.values()} == {"new"}
    assert skopeo_raw(f"{repo}:{kver}") is None, "a dry run sent something"

    run = push(kernel_cache, registry, "--version", kver, "--json")
    assert run.code == 0, run.err[-2000:]
    pushed = by_tag(run)
    assert {o["status"] for o in pushed.values()} == {"pushed"}
    assert {t: o["digest"] for t, o in pushed.items()} == \
        {t: o["digest"] for t, o in planned.items()}, "the dry run named other digests"

    index = skopeo_raw(f"{repo}:{kver}")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert platforms == {a: pushed[f"{kver}-{a}"]["digest"] for a in ARCHES}
    assert digest_of(f"{repo}:{kver}") == pushed[kver]["digest"]
    for arch in ARCHES:
        digest = kernels[arch]["hash"]
        assert pushed[f"{kver}-{digest}-{arch}"]["digest"] == pushed[f"{kver}-{arch}"]["digest"]
        manifest = skopeo_raw(f"{repo}:{kver}-{arch}")
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert manifest["config"]["digest"] == kernels[arch]["id"]
        assert skopeo_raw(f"{repo}:{kver}-builder-{arch}") is not None
    hashed = [t for t in pushed if t.startswith(f"{kver}-") and pushed[t]["kind"] == "index"
              and "builder" not in t]
    assert len(hashed) == 1 and pushed[hashed[0]]["digest"] == pushed[kver]["digest"]
    # The arm64 builder is a cross builder that runs on amd64: only the amd64 one is indexed.
    builders = skopeo_raw(f"{repo}:{kver}-builder")
    assert [m["platform"]["architecture"] for m in builders["manifests"]] == ["amd64"]


@pytest.mark.ci
def test_pushing_again_changes_nothing_and_says_so(kernels, kernel_cache, kver, registry):
    first = push(kernel_cache, registry, "--version", kver, "--json")
    assert first.code == 0, first.err[-2000:]
    before = digest_of(f"{registry.host}/{PUSH_ORG}/kernel:{kver}")
    run = push(kernel_cache, registry, "--version", kver)
    assert run.code == 0, run.err[-2000:]
    assert "unchanged" in run.err_lines[-1]
    assert re.search(r"^\s*pushed\s", run.err, re.M) is None, run.err
    assert "exporting" not in run.err, "an unchanged push exported the images again"
    assert digest_of(f"{registry.host}/{PUSH_ORG}/kernel:{kver}") == before
    lines = run.out.splitlines()
    assert f"{registry.host}/{PUSH_ORG}/kernel:{kver}@{before}" in lines


@pytest.mark.ci
def test_a_tag_holding_other_content_is_refused_and_moved_only_with_force(
        kernels, kernel_cache, kver, registry, docker_client):
    assert push(kernel_cache, registry, "--version", kver, "--arch", "amd64").code == 0
    ref = f"{registry.host}/{PUSH_ORG}/kernel:{kver}-amd64"
    before = digest_of(ref)
    local = f"{PUSH_ORG}/kernel:{kver}-amd64"
    builder = f"{PUSH_ORG}/kernel:{kver}-builder-amd64"
    docker_client.api.tag(builder, f"{PUSH_ORG}/kernel", f"{kver}-amd64")  # other content
    try:
        run = push(kernel_cache, registry, "--version", kver, "--arch", "amd64")
        assert run.code == 2
        line = one_error_line(run.err)
        assert "already holds other content" in line and "--force" in line
        assert digest_of(ref) == before, "a refused push moved the tag"
        forced = push(kernel_cache, registry, "--version", kver, "--arch", "amd64", "--force",
                      "--json")
        assert forced.code == 0, forced.err[-2000:]
        assert by_tag(forced)[f"{kver}-amd64"]["status"] == "replaced"
        assert skopeo_raw(ref)["config"]["digest"] == \
            docker_client.api.inspect_image(builder)["Id"]
    finally:
        docker_client.api.tag(kernels["amd64"]["id"], f"{PUSH_ORG}/kernel", f"{kver}-amd64")
    back = push(kernel_cache, registry, "--version", kver, "--arch", "amd64", "--force")
    assert back.code == 0, back.err[-2000:]
    assert digest_of(ref) == before
    assert docker_client.api.inspect_image(local)["Id"] == kernels["amd64"]["id"]


@pytest.mark.full
def test_pulled_back_images_are_the_pushed_ones_and_boot(
        kernels, kernel_cache, kver, registry, docker_client):
    assert push(kernel_cache, registry, "--version", kver).code == 0
    ids = {kernels[a][kind] for a in ARCHES for kind in ("id", "builder_id")}
    tags = {i: docker_client.api.inspect_image(i)["RepoTags"] for i in ids}
    for image_id, names in tags.items():  # gone from the engine, whatever org tagged them
        for name in names:
            docker_client.api.remove_image(name)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.api.inspect_image(image_id)
    try:
        run = lkbuild(kernel_cache, "pull", "--version", kver, "--arch", "amd64", "--arch",
                      "arm64", "--org", PUSH_ORG, "--registry", registry.host)
        assert run.code == 0, run.err[-2000:]
        for arch in ARCHES:
            for local in kernels[arch]["refs"]:  # kernel and -builder, hash and moving tags
                assert local in run.out.splitlines()
                assert docker_client.api.inspect_image(local)["Id"] == \
                    docker_client.api.inspect_image(
                        f"{registry.host}/{local}")["Id"]
            assert docker_client.api.inspect_image(kernels[arch]["refs"][0])["Id"] == \
                kernels[arch]["id"]
            boot = lkbuild(kernel_cache, "vmtest", "--kernel", kver,
                           *small_args(kver, arch)[2:], "--json", env={"LKBUILD_ORG": PUSH_ORG})
            assert boot.code == 0, boot.err[-2000:]
            assert boot.json()["passed"] is True
    finally:  # the session's other tests use these images under their own names
        for image_id, names in tags.items():
            for name in names:
                repo, tag = name.rsplit(":", 1)
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.api.tag(image_id, repo, tag)


@pytest.mark.ci
def test_module_and_loader_images_are_pushed_with_their_indexes(
        hello, kernel_cache, kver, registry):
    for arch in ARCHES:
        hello(arch)
    run = lkbuild(kernel_cache, "push", "--module", "hello", "--kernel", kver,
                  "--registry", registry.host, "--json")
    assert run.code == 0, run.err[-2000:]
    pushed = by_tag(run)
    release = hello("amd64")["release"]
    version = hello("amd64")["version"]
    for suffix in ("", "-loader"):
        index = skopeo_raw(f"{registry.host}/{ORG}/hello:{version}-{release}{suffix}")
        assert sorted(m["platform"]["architecture"] for m in index["manifests"]) == \
            sorted(ARCHES)
        for arch in ARCHES:
            tag = f"{version}-{release}{suffix}-{arch}"
            assert pushed[tag]["status"] == "pushed"


def docker_config(tmp_path: Path, reg: Registry, password: str) -> dict[str, str]:
    cfg = tmp_path / "docker-config"
    cfg.mkdir(exist_ok=True)
    token = base64.b64encode(f"{reg.user}:{password}".encode()).decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    return {"DOCKER_CONFIG": str(cfg)}


def push(cache: Path, reg: Registry, *args: str, env: dict[str, str] | None = None,
         trace: Path | None = None):
    """`inv push` under this module's org; with `trace`, under strace, which writes every
    program lkbuild and its children exec, with its whole argv and environment."""
    prefix = ["strace", "-f", "-qq", "-v", "-s", "65536", "-e", "trace=execve", "-o",
              str(trace)] if trace else None
    return lkbuild(cache, "push", "--org", PUSH_ORG, "--registry", reg.host, *args, env=env,
                   prefix=prefix)


def execs(trace: Path) -> list[str]:
    """The execve lines of a trace (program, argv, environment)."""
    return [line for line in trace.read_text(errors="replace").splitlines()
            if "execve(" in line]


def secrets(reg: Registry) -> list[str]:
    """The password and the forms it travels in (Basic's base64 of user:password)."""
    pair = f"{reg.user}:{reg.password}"
    return [reg.password, base64.b64encode(pair.encode()).decode()]


@pytest.mark.full
def test_credentials_come_from_the_docker_config_and_never_show(
        kernels, kernel_cache, kver, auth_registry, tmp_path):
    """Not in any exec's argv or environment, any output or log, nor in the manifests and
    configs pushed."""
    trace = tmp_path / "push.trace"
    ok = push(kernel_cache, auth_registry, "--version", kver, "--arch", "amd64", "--json",
              env=docker_config(tmp_path, auth_registry, auth_registry.password), trace=trace)
    assert ok.code == 0, ok.err[-2000:]
    assert [o["status"] for o in ok.json()].count("pushed") >= 1
    creds = f"{auth_registry.user}:{auth_registry.password}"
    ref = f"{auth_registry.host}/{PUSH_ORG}/kernel:{kver}-amd64"
    manifest = skopeo_raw(ref, creds)
    assert manifest is not None
    config = subprocess.run(["skopeo", "inspect", "--config", "--raw", "--tls-verify=false",
                             "--creds", creds, f"docker://{ref}"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    assert json.loads(config)["config"]["Labels"]
    calls = execs(trace)
    assert any("recipes" in line and '"push"' in line for line in calls), calls[:3]
    logs = "".join(p.read_text(errors="replace") for p in kernel_cache.rglob("*.log"))
    for text in (ok.out, ok.err, logs, "\n".join(calls), json.dumps(manifest), config):
        for secret in secrets(auth_registry):
            assert secret not in text


@pytest.mark.ci
def test_a_credential_helper_on_path_is_used(kernels, kernel_cache, kver, auth_registry,
                                            tmp_path):
    """The helper runs (the trace sees it) and what it answers goes to no other program."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-lktest"
    answer = json.dumps({"ServerURL": auth_registry.host, "Username": auth_registry.user,
                         "Secret": auth_registry.password})
    (bindir / "answer.json").write_text(answer)
    helper.write_text(f"#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat >/dev/null\n"
                      f"cat '{bindir / 'answer.json'}'\n")
    helper.chmod(0o755)
    cfg = tmp_path / "helper-config"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"credHelpers": {auth_registry.host: "lktest"}}))
    env = {"DOCKER_CONFIG": str(cfg), "PATH": f"{bindir}:{os.environ['PATH']}"}
    trace = tmp_path / "helper.trace"
    run = push(kernel_cache, auth_registry, "--version", kver, "--arch", "amd64",
               "--dry-run", env=env, trace=trace)
    assert run.code == 0, run.err[-2000:]
    calls = execs(trace)
    assert any(f'execve("{helper}", ["{helper}", "get"]' in line for line in calls), calls
    for text in (run.out, run.err, "\n".join(calls)):
        for secret in secrets(auth_registry):
            assert secret not in text
    missing = push(kernel_cache, auth_registry, "--version", kver, "--arch", "amd64",
                   env={"DOCKER_CONFIG": str(cfg)})
    assert missing.code == 3
    line = one_error_line(missing.err)
    assert "error getting credentials" in line and auth_registry.host in line


@pytest.mark.ci
@pytest.mark.parametrize("password,expect", [("wrong", "refused the credentials"),
                                             (None, "needs a login")])
def test_bad_or_missing_credentials_name_the_registry_and_the_login(
        kernels, kernel_cache, kver, auth_registry, tmp_path, password, expect):
    env = docker_config(tmp_path, auth_registry, password) if password else \
        {"DOCKER_CONFIG": str(tmp_path / "empty")}
    run = push(kernel_cache, auth_registry, "--version", kver, "--arch", "amd64", env=env)
    assert run.code == 2
    line = one_error_line(run.err)
    assert expect in line and f"docker login {auth_registry.host}" in line
    assert skopeo_raw(f"{auth_registry.host}/{PUSH_ORG}/kernel:{kver}-arm64",
                      f"{auth_registry.user}:{auth_registry.password}") is None


@pytest.mark.parametrize("args,code,words", [
    (["--version", "6.1.999"], 2, ["no local kernel images for 6.1.999", "inv build"]),
    (["--version", "{kver}", "--arch", "mips"], 2, ["unknown arch 'mips'"]),
    (["--version", "{kver}", "--registry", "http://host/x"], 2, ["bad registry"]),
    (["--module", "hello"], 2, ["--module needs --kernel"]),
    (["--module", "nosuch", "--kernel", "{kver}"], 2, ["no local nosuch module images"]),
    (["--version", "{kver}", "--registry", "127.0.0.1:9"], 3, ["127.0.0.1:9 is not reachable"]),
])
@pytest.mark.ci
def test_bad_push_input_is_one_line_and_sends_nothing(kernels, kernel_cache, kver, args, code,
                                                     words):
    args = [a.replace("{kver}", kver) for a in args]
    run = lkbuild(kernel_cache, "push", "--org", PUSH_ORG, *args)
    assert run.code == code, run.err[-2000:]
    line = one_error_line(run.err)
    for word in words:
        assert word in line
    assert run.out == ""


@pytest.mark.ci
def test_a_registry_that_went_down_is_one_line(kernels, kernel_cache, kver, registry):
    registry.kill()
    try:
        run = push(kernel_cache, registry, "--version", kver, "--arch", "amd64")
    finally:
        registry.start()
    assert run.code == 3
    assert f"registry {registry.host} is not reachable" in one_error_line(run.err)
    again = push(kernel_cache, registry, "--version", kver, "--arch", "amd64")
    assert again.code == 0, again.err[-2000:]


def readme_lines(*commands: str) -> list[list[str]]:
    """The README's first quick start's `inv` lines of those commands, in order, as argv."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line.split("  #", 1)[0]) for line in block.splitlines()]
    return [argv[1:] for argv in lines if argv[:1] == ["inv"] and argv[1] in commands]


def on_this_machine(argv: list[str], kver: str, registry: Registry) -> list[str]:
    """A README line with what differs here: the session's version and small config from
    Debian's source, the hello module for zfs, the loopback registry. The rest as written."""
    swap = {"6.12.54": kver, "zfs": "hello"}
    out = [swap.get(a, a) for a in argv]
    arch = out[out.index("--arch") + 1] if "--arch" in out else ""
    if argv[0] in ("build", "buildmodule"):
        out += [*small_args(kver, arch)[4:], "--json"]
    if argv[0] == "push":
        out += ["--registry", registry.host, "--json"]
    return out


@pytest.mark.ci
def test_the_readme_build_and_push_lines_push_what_was_built_under_the_asked_org(
        kernels, hello, kernel_cache, kver, registry, docker_client):
    """The README builds under the setting org and pushes with `--org myorg`: push names where
    images go, and takes them from where they were built."""
    lines = readme_lines("build", "buildmodule", "push")
    assert [a[0] for a in lines] == ["build", "buildmodule", "push", "push"], lines
    assert lines[2][-2:] == ["--org", "myorg"] and lines[3][-2:] == ["--org", "myorg"]
    hello("arm64")  # the module's kernel, built by the fixtures the way the line builds it
    results = []
    for argv in lines:
        run = lkbuild(kernel_cache, *on_this_machine(argv, kver, registry))
        assert run.code == 0, (argv, run.err[-3000:])
        results.append(run.json())
    (built,), module, kernel_push, module_push = results
    assert built["arch"] == "arm64" and module["arch"] == "arm64"
    here = docker_client.api.inspect_image
    repo = f"{registry.host}/myorg"
    pushed = {o["ref"] for o in kernel_push + module_push}
    kernel_ref = f"{repo}/kernel:{kver}-arm64"
    assert kernel_ref in pushed
    assert skopeo_raw(kernel_ref)["config"]["digest"] == built["image_id"]
    assert "arm64" in [m["platform"]["architecture"]
                       for m in skopeo_raw(f"{repo}/kernel:{kver}")["manifests"]]
    for ref in module["refs"] + module["loader_refs"]:
        tag = ref.rsplit(":", 1)[1]
        if re.search(r"-[0-9a-f]{16}-arm64$", tag):
            continue  # the hash tags name the same two images
        assert f"{repo}/hello:{tag}" in pushed
        assert skopeo_raw(f"{repo}/hello:{tag}")["config"]["digest"] == here(ref)["Id"]
    assert not [t for i in docker_client.images.list() for t in i.tags
                if t.startswith(("myorg/", f"{registry.host}/myorg/"))], \
        "push tagged something here"
