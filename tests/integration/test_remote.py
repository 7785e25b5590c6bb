"""`inv remote-build` through a real sshd to a second Docker engine (its own data root, socket
and network namespace), so every image that comes back crossed a real SSH transfer."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.daemons import (
    DockerEngine,
    Registry,
    SSHServer,
    Tmpfs,
    free_port,
    in_netns,
    stop_pid,
    wait_for,
)
from tests.integration.kernels import (
    BUILD_IMAGE,
    DATA,
    DEBIAN_SOURCE,
    ROOT,
    SESSION,
    lkbuild,
    one_error_line,
    remove_images,
)

REMOTE_ORG = f"lkbuild-remote-{SESSION}"
REMOTE_HOME = Path("/root")  # the SSH user of the test hosts is root on this machine


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kernel/ with the small configs as the series configs, so one flag set builds any arch."""
    tree = tmp_path_factory.mktemp("tree") / "kernel"
    shutil.copytree(ROOT / "kernel", tree)
    for uname in ("x86_64", "aarch64"):
        shutil.copy(DATA / f"small-{uname}.config", tree / "6.12.x" / f"config-{uname}")
    return tree


@pytest.fixture(scope="module")
def known_hosts(tmp_path_factory, ssh_server: SSHServer, ssh_server2: SSHServer) -> Path:
    path = tmp_path_factory.mktemp("ssh") / "known_hosts"
    path.write_text(ssh_server.known_hosts_line() + ssh_server2.known_hosts_line())
    return path


@pytest.fixture(scope="module")
def remote(remote_engine: DockerEngine) -> DockerEngine:
    """The remote engine; it starts without the build image, which lkbuild sends there."""
    yield remote_engine
    remove_images(REMOTE_ORG)


def flags(tree: Path, *extra: str) -> list[str]:
    return ["--kernel-dir", str(tree), "--source", str(DEBIAN_SOURCE), *extra]


def remote_build(cache: Path, servers: list[SSHServer], known: Path, *args: str,
                 env: dict[str, str] | None = None):
    hosts = [a for s in servers for a in ("--host", s.host_spec)]
    return lkbuild(cache, "remote-build", *hosts, "--identity", str(servers[0].identity),
                   "--known-hosts", str(known), *args,
                   env={"LKBUILD_ORG": REMOTE_ORG, **(env or {})})


def remote_id(engine: DockerEngine, ref: str) -> str | None:
    got = engine.docker("image", "inspect", "--format", "{{.Id}}", ref)
    return got.stdout.strip() if got.returncode == 0 else None


@pytest.mark.full
def test_two_hosts_build_both_arches_at_once_and_the_images_come_back(
        kernel_cache, kver, small_tree, known_hosts, remote, ssh_server, ssh_server2,
        docker_client):
    run = remote_build(kernel_cache, [ssh_server, ssh_server2], known_hosts,
                       *flags(small_tree, "--arch", "amd64", "--arch", "arm64", "--json"))
    assert run.code == 0, run.out + run.err[-3000:]
    assert f"sending build image {BUILD_IMAGE}" in run.err  # it could not be pulled there
    assert remote_id(remote, BUILD_IMAGE) is not None
    rows = {r["arch"]: r for r in run.json()}
    assert {r["status"] for r in rows.values()} == {"built"}
    assert {r["host"] for r in rows.values()} == {ssh_server.host_spec, ssh_server2.host_spec}
    for row in rows.values():
        assert all(ref.startswith(f"{REMOTE_ORG}/kernel:") for ref in row["refs"])
        for ref in row["refs"]:  # kernel and -builder, every tag
            here = docker_client.api.inspect_image(ref)["Id"]
            assert here == remote_id(remote, ref), f"{ref} differs from the remote's"
        assert row["image_id"] == docker_client.api.inspect_image(row["refs"][0])["Id"]
    boot = lkbuild(kernel_cache, "vmtest", "--arch", "amd64", *flags(small_tree), "--json",
                   env={"LKBUILD_ORG": REMOTE_ORG})
    assert boot.code == 0, boot.err[-2000:]
    assert boot.json()["passed"] is True
    assert leftover_builds() == [], "a build dir was left behind"


def leftover_builds() -> list[str]:
    """Build dirs left in the remote user's work dir (root@127.0.0.1: /root); the blob store
    stays by design."""
    builds = REMOTE_HOME / ".cache/lkbuild/builds"
    return sorted(p.name for p in builds.iterdir()) if builds.is_dir() else []


@pytest.fixture(scope="module")
def remote_kernel(kernel_cache, kver, small_tree, known_hosts, remote, ssh_server) -> dict:
    """The small amd64 kernel built on the host (or found there, when the two-hosts test ran
    first) and brought back here: its result row."""
    run = remote_build(kernel_cache, [ssh_server], known_hosts,
                       *flags(small_tree, "--arch", "amd64", "--json"))
    assert run.code == 0, run.err[-3000:]
    (row,) = run.json()
    if row["status"] == "built":  # what a script (or CI) piping it saw: steps, not make lines
        assert "\x1b" not in run.err and not re.search(r"^#\d+ ", run.err, re.M), run.err
        assert re.search(r"^step 3/5: compile", run.err, re.M), run.err[-3000:]
        assert re.search(r"^built in .* objects compiled", run.err, re.M), run.err[-3000:]
        assert row["summary"]["objects_compiled"] > 0
        # The images came back with their bytes and rate said.
        assert re.search(r"^fetching \S+ from \S+: [\d.]+ [kMG]B in .*/s\)$", run.err,
                         re.M), run.err[-3000:]
    return row


@pytest.mark.ci
def test_a_kernel_built_on_the_host_comes_back_and_a_repeat_is_found_there(
        kernel_cache, kver, small_tree, known_hosts, remote, ssh_server, docker_client,
        remote_kernel):
    row = remote_kernel
    assert row["status"] in ("built", "up to date") and row["host"] == ssh_server.host_spec
    assert remote_id(remote, BUILD_IMAGE) is not None  # sent there: it could not be pulled
    assert row["refs"] and all(ref.startswith(f"{REMOTE_ORG}/kernel:") for ref in row["refs"])
    for ref in row["refs"]:  # kernel and -builder, every tag, here as there
        assert docker_client.api.inspect_image(ref)["Id"] == remote_id(remote, ref), ref
    assert leftover_builds() == [], "a build dir was left behind"
    again = remote_build(kernel_cache, [ssh_server], known_hosts,
                         *flags(small_tree, "--arch", "amd64", "--json"))
    assert again.code == 0, again.err[-2000:]
    (row,) = again.json()
    assert row["status"] == "up to date" and row["sent_bytes"] == 0
    assert "is up to date on" in again.err and "compiling" not in again.err


def auto_env(ssh_server: SSHServer, known: Path, hosts: str) -> dict[str, str]:
    return {"LKBUILD_ORG": REMOTE_ORG, "LKBUILD_BUILD_HOSTS": hosts,
            "LKBUILD_BUILD_HOST_IDENTITY": str(ssh_server.identity),
            "LKBUILD_BUILD_HOST_KNOWN_HOSTS": str(known)}


@pytest.mark.ci
def test_doctor_lists_each_build_host_with_what_it_would_fit(kernel_cache, known_hosts, remote,
                                                            ssh_server):
    down = f"root@127.0.0.1:{free_port()}"
    run = lkbuild(kernel_cache, "doctor", "--json",
                  env={**auto_env(ssh_server, known_hosts, f"{ssh_server.host_spec},{down}"),
                       "LKBUILD_MIN_FREE_GB": "1"})
    rows = {r["name"]: r for r in run.json()}
    up = rows[f"build-host {ssh_server.host_spec}"]
    assert up["status"] == "ok" and up["detail"].endswith("fits a build"), up
    assert up["data"]["cpus"] >= 1 and up["data"]["memory"] > 0 and up["data"]["free"] > 10**9
    gone = rows[f"build-host {down}"]
    assert gone["status"] == "fail" and "connection refused" in gone["detail"], gone
    assert not gone["blocker"]  # a build host that is down does not stop local builds


@pytest.mark.ci
def test_where_auto_builds_on_a_host_when_this_engine_cannot_fit_and_the_images_come_here(
        kver, small_tree, known_hosts, remote, ssh_server, docker_client, remote_kernel,
        tmp_path):
    """The cache dir on a 64 MB tmpfs (min_free_gb 5): this engine cannot fit the build, the
    build host can, and has it already (remote_kernel); `inv build` as a script types it gets
    the images here with the line that says why, and the same result a local build gives.
    With the only host down, one line names what each place lacked and nothing is made."""
    refs = remote_kernel["refs"]
    # Untagged here for the test, tagged back after it: later tests expect the remote
    # kernel (and its -builder) here, and the host without the hello built here.
    kept = {ref: docker_client.api.inspect_image(ref)["Id"] for ref in refs}
    keepers = [f"lkbuild-keep-{SESSION}/kept:{n}" for n in range(len(refs))]
    # a keeper tag each: with its last tag gone, an image would be deleted too
    for keeper, image_id in zip(keepers, kept.values(), strict=True):
        docker_client.api.tag(image_id, *keeper.rsplit(":", 1))
    for ref in refs:
        docker_client.images.remove(ref)
    made_there: list[str] = []
    fs = Tmpfs(tmp_path / "cache", 64)
    fs.start()
    try:
        args = ["build", "--arch", "amd64", *flags(small_tree), "--json"]
        down = lkbuild(fs.path, *args,
                       env=auto_env(ssh_server, known_hosts, f"root@127.0.0.1:{free_port()}"))
        assert down.code == 3 and down.out == "", down.err[-2000:]
        line = one_error_line(down.err)
        assert "no place fits this build" in line and "the cache dir" in line, line
        assert "connection refused" in line and "Traceback" not in down.err
        assert not any(docker_client.images.list(name=ref) for ref in refs)

        run = lkbuild(fs.path, *args, env=auto_env(ssh_server, known_hosts,
                                                   ssh_server.host_spec))
        assert run.code == 0, run.err[-3000:]
        assert re.search(r"this engine cannot fit the build \(only 0\.\d GB free in the cache "
                         rf"dir {re.escape(str(fs.path))}.*\): building on "
                         rf"{re.escape(ssh_server.host_spec)}", run.err), run.err[-2000:]
        (result,) = run.json()
        assert result["host"] == ssh_server.host_spec and result["refs"] == refs
        assert result["release"] == f"{kver}-linuxkit" and result["hash"] == remote_kernel[
            "refs"][0].rsplit("-", 2)[-2]
        for ref in refs:
            assert docker_client.api.inspect_image(ref)["Id"] == remote_id(remote, ref), ref
        assert result["image_id"] == docker_client.api.inspect_image(refs[0])["Id"]

        # buildmodule: the kernel is not here and could not be built here, so hello and its
        # kernel are the host's work; the module and loader images come here
        for ref in refs:
            docker_client.images.remove(ref)
        mod = lkbuild(fs.path, "buildmodule", "--arch", "amd64", "--module", "hello",
                      *flags(small_tree), "--json",
                      env=auto_env(ssh_server, known_hosts, ssh_server.host_spec))
        assert mod.code == 0, mod.err[-3000:]
        assert f"building hello and its kernel on {ssh_server.host_spec}" in mod.err
        built = mod.json()
        made_there = built["refs"] + built["loader_refs"]
        assert built["module"] == "hello" and built["modules"] == ["hello"]
        assert built["release"] == f"{kver}-linuxkit" and built["vermagic"].startswith(kver)
        for ref in built["refs"] + built["loader_refs"]:
            assert docker_client.api.inspect_image(ref)["Id"] == remote_id(remote, ref), ref
    finally:
        fs.stop()
        for ref, image_id in kept.items():
            docker_client.api.tag(image_id, *ref.rsplit(":", 1))
        for keeper in keepers:
            docker_client.images.remove(keeper)
        for ref in made_there:
            remote.docker("image", "rm", ref)
    assert leftover_builds() == [], "a build dir was left behind"


@pytest.mark.full
def test_a_module_is_built_on_the_host_and_its_loader_comes_back_and_loads_in_a_vm(
        kernel_cache, kver, small_tree, known_hosts, remote, ssh_server, docker_client,
        remote_kernel):
    run = remote_build(kernel_cache, [ssh_server], known_hosts,
                       *flags(small_tree, "--arch", "amd64", "--module", "hello", "--json"))
    assert run.code == 0, run.err[-3000:]
    (row,) = run.json()
    assert row["module"] == "hello" and row["status"] == "built" and row["fetched"]
    assert "is up to date on" in run.err  # the kernel was there: only the module was built
    assert "building module hello" in run.err
    module_ref, _, loader_ref, _ = row["refs"]
    assert module_ref.startswith(f"{REMOTE_ORG}/hello:") and "-loader-" in loader_ref
    for ref in row["refs"]:
        assert docker_client.api.inspect_image(ref)["Id"] == remote_id(remote, ref), ref
    boot = lkbuild(kernel_cache, "vmtest", "--arch", "amd64", *flags(small_tree), "--module",
                   loader_ref, "--json", env={"LKBUILD_ORG": REMOTE_ORG})
    assert boot.code == 0, boot.err[-2000:]
    assert boot.json()["passed"] is True
    again = remote_build(kernel_cache, [ssh_server], known_hosts,
                         *flags(small_tree, "--arch", "amd64", "--module", "hello", "--json"))
    assert again.code == 0, again.err[-2000:]
    assert again.json()[0]["status"] == "up to date" and "building module" not in again.err
    assert leftover_builds() == []


@pytest.mark.ci
def test_an_unknown_host_key_is_refused_with_its_fingerprint_then_accepted_on_request(
        kernel_cache, small_tree, remote, ssh_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    run = remote_build(kernel_cache, [ssh_server], empty, *flags(small_tree, "--arch", "amd64"))
    assert run.code == 2
    line = one_error_line(run.err)
    assert ssh_server.fingerprint in line and "--accept-new-host-key" in line
    assert empty.read_text() == ""
    ok = remote_build(kernel_cache, [ssh_server], empty,
                      *flags(small_tree, "--arch", "amd64", "--accept-new-host-key",
                             "--no-fetch"))
    assert ok.code == 0, ok.err[-2000:]
    assert empty.read_text() == ssh_server.known_hosts_line()


@pytest.mark.ci
def test_a_changed_host_key_is_refused_even_with_accept_new(kernel_cache, small_tree, remote,
                                                           ssh_server, tmp_path):
    other = SSHServer(tmp_path / "other", remote.host)
    forged = tmp_path / "known_hosts"
    forged.write_text(other.known_hosts_line().replace(str(other.port), str(ssh_server.port)))
    run = remote_build(kernel_cache, [ssh_server], forged,
                       *flags(small_tree, "--arch", "amd64", "--accept-new-host-key"))
    assert run.code == 2
    assert "HOST KEY OF" in one_error_line(run.err)


def descendants(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True,
                         text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    children: dict[str, list[list[str]]] = {}
    for row in rows:
        children.setdefault(row[1], []).append(row)
    found, todo = [], [str(pid)]
    while todo:
        for row in children.get(todo.pop(), []):
            found.append(row[2] if len(row) > 2 else "")
            todo.append(row[0])
    return found


@pytest.mark.full
def test_ctrl_c_mid_build_leaves_no_remote_process_container_or_build_dir(
        kernel_cache, small_tree, known_hosts, remote, ssh_server, docker_client):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LKBUILD_")}
    env.update({"LKBUILD_CACHE_DIR": str(kernel_cache), "LKBUILD_ORG": f"{REMOTE_ORG}-int",
                "LKBUILD_BUILD_IMAGE": BUILD_IMAGE, "LKBUILD_MIN_FREE_GB": "5",
                "LKBUILD_CACHE_ID": f"ctrlc-{SESSION}",  # a cold build dir: a long compile
                "LKBUILD_CONFIG": str(kernel_cache / "no-config.yaml"), "NO_COLOR": "1",
                "PYTHONPATH": str(ROOT)})
    log = kernel_cache / "ctrl-c.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recipes", "remote-build", "--host", ssh_server.host_spec,
             "--identity", str(ssh_server.identity), "--known-hosts", str(known_hosts),
             "--arch", "amd64", "--force", *flags(small_tree)],
            cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while "step 3/5: compile" not in log.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(1)
        time.sleep(15)  # well inside the compile
        assert proc.poll() is None, log.read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(180) == 130, log.read_text()[-2000:]
    text = log.read_text()
    assert "lkbuild: interrupted" in text and "Traceback" not in text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (ssh_server.session_pids()
                                           or any("make" in a for a in
                                                  descendants(remote.proc.pid))):
        time.sleep(1)
    assert ssh_server.session_pids() == [], "an SSH session outlived the interrupt"
    assert not [a for a in descendants(remote.proc.pid) if "make" in a or "cc1" in a]
    assert remote.docker("ps", "-aq").stdout.strip() == ""
    assert leftover_builds() == []
    assert not [t for i in docker_client.images.list() for t in i.tags
                if t.startswith(f"{REMOTE_ORG}-int/")], "a half-built image came back"


@pytest.mark.parametrize("host,extra,code,words", [
    ("root@127.0.0.1:{closed}", [], 3, ["cannot connect to 127.0.0.1:{closed}",
                                        "connection refused"]),
    ("root@bad host", [], 2, ["bad host 'root@bad host'"]),
    ("root@127.0.0.1:{port}", ["--identity", "/nonexistent/key"], 2,
     ["identity file /nonexistent/key does not exist"]),
    ("root@127.0.0.1:{port}", ["--identity", "{stranger}"], 2, ["refused the login"]),
    ("root@127.0.0.1:{port}", ["--connect-timeout", "0"], 2, ["--connect-timeout"]),
])
@pytest.mark.ci
def test_bad_remote_input_is_one_line(kernel_cache, small_tree, known_hosts, remote,
                                      ssh_server, tmp_path, host, extra, code, words):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    closed = str(free_port())
    fill = {"{closed}": closed, "{port}": str(ssh_server.port), "{stranger}": str(stranger)}

    def sub(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    args = ["remote-build", "--host", sub(host), "--known-hosts", str(known_hosts),
            "--arch", "amd64", *flags(small_tree), *[sub(e) for e in extra]]
    if "--identity" not in extra:
        args += ["--identity", str(ssh_server.identity)]
    run = lkbuild(kernel_cache, *args, env={"LKBUILD_ORG": REMOTE_ORG})
    assert run.code == code, run.err[-2000:]
    line = one_error_line(run.err)
    for word in words:
        assert sub(word) in line
    assert run.out == ""


@pytest.fixture
def http_source() -> Iterator[str]:
    """Debian's kernel source tarball served over HTTP on loopback by a real server."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             str(port), "--directory", str(DEBIAN_SOURCE.parent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), "the HTTP server", proc=proc)
        yield f"http://127.0.0.1:{port}/{DEBIAN_SOURCE.name}"
    finally:
        stop_pid(proc)


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.full
def test_the_host_fetches_a_url_source_itself_and_checks_it(
        kernel_cache, kver, small_tree, known_hosts, remote, ssh_server, http_source, tmp_path):
    sha = hashlib.sha256(DEBIAN_SOURCE.read_bytes()).hexdigest()
    blob = REMOTE_HOME / ".cache/lkbuild/blobs" / sha
    blob.unlink(missing_ok=True)  # the host must fetch it again
    here = tmp_path / "cache"  # nothing of the source in the local cache
    args = ["remote-build", "--host", ssh_server.host_spec, "--identity",
            str(ssh_server.identity), "--known-hosts", str(known_hosts), "--version", kver,
            "--kernel-dir", str(small_tree), "--arch", "amd64", "--no-fetch", "--force"]
    bad = lkbuild(here, *args, "--source", f"{http_source}#sha256={'0' * 64}",
                  env={"LKBUILD_ORG": REMOTE_ORG})
    assert bad.code == 4, bad.err[-2000:]
    assert "does not match sha256" in one_error_line(bad.err)
    assert not blob.exists() and not list(blob.parent.glob("*.part*"))
    run = lkbuild(here, *args, "--source", f"{http_source}#sha256={sha}", "--json",
                  env={"LKBUILD_ORG": REMOTE_ORG})
    assert run.code == 0, run.err[-2000:]
    assert f"fetches {http_source}" in run.err
    assert run.json()[0]["sent_bytes"] < 1_000_000, "the source was sent from here"
    assert blob.is_file() and hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    assert not [p for p in here.rglob("*") if p.is_file() and p.stat().st_size > 50_000_000]


@pytest.mark.full
def test_a_connection_cut_mid_transfer_is_one_error_and_loads_nothing(
        kver, known_hosts, remote, ssh_server, docker_client):
    from recipes import engine as enginemod, ssh
    from recipes.errors import InfraError

    ref = f"{REMOTE_ORG}/kernel:{kver}-builder-amd64"  # built there by the tests above
    assert remote_id(remote, ref) is not None
    local_id = docker_client.api.inspect_image(ref)["Id"]
    docker_client.api.remove_image(local_id, force=True)
    conn = ssh.connect(ssh_server.host_spec, identity=str(ssh_server.identity),
                       known_hosts=str(known_hosts))
    engine = enginemod.connect()
    real = conn.recv_stream

    def cut_midway(cmd, sink):
        seen = [0]

        def counting(data: bytes) -> None:
            sink(data)
            seen[0] += len(data)
            if seen[0] > 50_000_000 and ssh_server.session_pids():
                for pid in ssh_server.session_pids():  # the session's sshd dies: a real cut
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

        return real(cmd, counting)

    conn.recv_stream = cut_midway
    try:
        with pytest.raises(InfraError) as err:
            ssh.fetch_image(conn, ref, engine)
    finally:
        conn.close()
        engine.close()
    assert "cut" in err.value.line() or "dropped" in err.value.line()
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.api.inspect_image(ref)


@pytest.mark.full
def test_the_layers_this_engine_has_are_not_sent_again(kver, known_hosts, remote, ssh_server,
                                                     docker_client, capsys):
    """The -builder image is the build image (here already) plus the kernel-dev layer: only
    that layer crosses, through a saved file on the host that is removed afterwards."""
    from recipes import engine as enginemod, ssh

    ref = f"{REMOTE_ORG}/kernel:{kver}-builder-amd64"  # built there by the tests above
    expected = remote_id(remote, ref)
    assert expected is not None and docker_client.images.get(BUILD_IMAGE)
    size = int(remote.docker("image", "inspect", "--format", "{{.Size}}", ref).stdout)
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_client.api.remove_image(ref, force=True)
    conn = ssh.connect(ssh_server.host_spec, identity=str(ssh_server.identity),
                       known_hosts=str(known_hosts))
    engine = enginemod.connect()
    real, seen = conn.recv_stream, [0]

    def counting(cmd, sink):
        def count(data: bytes) -> None:
            seen[0] += len(data)
            sink(data)
        return real(cmd, count)

    conn.recv_stream = counting
    scratch = REMOTE_HOME / ".cache" / "lkbuild" / "transfer"
    try:
        got = ssh.fetch_image(conn, ref, engine, str(scratch), [BUILD_IMAGE])
    finally:
        conn.close()
        engine.close()
    assert got == expected == docker_client.api.inspect_image(ref)["Id"]
    assert "without the" in capsys.readouterr().err
    assert 0 < seen[0] < 0.3 * size, (seen[0], size)
    assert not scratch.exists() or list(scratch.iterdir()) == [], "the saved file was left"


@pytest.fixture(scope="module")
def push_site(tmp_path_factory, remote: DockerEngine) -> Iterator[tuple[SSHServer, Registry]]:
    """An sshd and a registry inside the remote engine's network namespace: the host's engine
    reaches the registry on its loopback, and so does lkbuild when run in there."""
    reg = Registry(tmp_path_factory.mktemp("ns-registry"), netns=remote.netns)
    server = SSHServer(tmp_path_factory.mktemp("ns-sshd"), remote.host, netns=remote.netns)
    reg.start()
    try:
        server.start()
        try:
            yield server, reg
        finally:
            server.stop()
    finally:
        reg.stop()


def skopeo(netns: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(in_netns(netns, ["skopeo", *args, ]), capture_output=True, text=True)


def registry_doc(netns: str, ref: str) -> dict:
    got = skopeo(netns, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


@pytest.mark.full
def test_the_host_pushes_what_it_built_and_the_indexes_are_written_here(
        kernel_cache, kver, small_tree, remote, remote_kernel, push_site, docker_client,
        tmp_path):
    server, reg = push_site
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line())
    before = sorted(i.id for i in docker_client.images.list())

    def push(*extra: str):
        return lkbuild(kernel_cache, "remote-build", "--host", server.host_spec, "--identity",
                       str(server.identity), "--known-hosts", str(known),
                       *flags(small_tree, "--arch", "amd64", "--push", "--registry", reg.host,
                              "--json", *extra),
                       env={"LKBUILD_ORG": REMOTE_ORG}, prefix=in_netns(remote.netns, []))

    run = push()
    assert run.code == 0, run.err[-3000:]
    (row,) = run.json()
    assert row["status"] == "up to date" and not row["fetched"] and "fetching" not in run.err
    pushed = {ref.split("@")[0].split("/", 1)[1]: ref.split("@")[1] for ref in row["pushed"]}
    repo = f"{reg.host}/{REMOTE_ORG}/kernel"
    for tag in (f"{kver}-amd64", f"{kver}-builder-amd64"):
        manifest = registry_doc(remote.netns, f"{repo}:{tag}")
        assert manifest["config"]["digest"] == remote_id(remote, f"{REMOTE_ORG}/kernel:{tag}")
    index = registry_doc(remote.netns, f"{repo}:{kver}")
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64"]
    assert index["manifests"][0]["digest"] == pushed[f"{REMOTE_ORG}/kernel:{kver}-amd64"]
    assert sorted(i.id for i in docker_client.images.list()) == before, "an image came here"
    assert remote.docker("image", "ls", "--format", "{{.Repository}}").stdout.count(
        reg.host) == 0, "the push tags stayed on the host"

    again = push()
    assert again.code == 0, again.err[-2000:]
    assert "pushes" not in again.err
    assert {o for o in again.err.split() if o in ("pushed", "replaced")} == set()

    # Another image at the kernel's arch tag: refused before anything moves, then forced.
    copy = skopeo(remote.netns, "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                  f"docker://{repo}:{kver}-builder-amd64", f"docker://{repo}:{kver}-amd64")
    assert copy.returncode == 0, copy.stderr
    moved = registry_doc(remote.netns, f"{repo}:{kver}-amd64")
    refused = push()
    assert refused.code == 2, refused.err[-2000:]
    assert "already holds other content" in one_error_line(refused.err)
    assert registry_doc(remote.netns, f"{repo}:{kver}-amd64") == moved
    forced = push("--force-push")
    assert forced.code == 0, forced.err[-2000:]
    assert registry_doc(remote.netns, f"{repo}:{kver}-amd64")["config"]["digest"] == \
        remote_id(remote, f"{REMOTE_ORG}/kernel:{kver}-amd64")

    module = push("--module", "hello")
    assert module.code == 0, module.err[-2000:]
    loader_index = [r for r in module.json()[0]["pushed"] if r.split("@")[0].endswith("-loader")]
    assert loader_index, module.json()[0]["pushed"]
    doc = registry_doc(remote.netns, loader_index[0].split("@")[0])
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64"]
