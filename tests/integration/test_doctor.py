"""`lkbuild doctor` against the real engine on this machine: no mocks."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recipes.resources import jobs_for

pytestmark = pytest.mark.ci


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def by_name(out: str) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in json.loads(out)}


def test_doctor_passes_on_this_machine_and_reports_what_docker_info_says(lk: Callable) -> None:
    run = lk("doctor", "--json", env={"LKBUILD_MIN_FREE_GB": "1"})
    assert run.code == 0, run.err
    checks = by_name(run.out)
    context = docker("context", "show")
    engine = checks["engine"]
    assert engine["status"] == "ok"
    assert engine["data"]["context"] == context and f"context {context}" in engine["detail"]
    assert checks["buildx"]["status"] == "ok"
    assert checks["buildx"]["data"]["builder"]
    info = json.loads(docker("info", "--format", "{{json .}}"))
    memory = checks["memory"]["data"]
    assert (memory["cpus"], memory["memory"]) == (info["NCPU"], info["MemTotal"])
    assert memory["jobs"] == jobs_for(info["NCPU"], info["MemTotal"])
    assert checks["disk-cache"]["status"] == "ok"
    assert checks["disk-engine"]["status"] in ("ok", "warn")
    storage = checks["storage"]
    assert storage["data"]["driver"] == info["Driver"]
    assert storage["data"]["data_root"] == info["DockerRootDir"]
    slow = info["Driver"] in ("fuse-overlayfs", "vfs")
    assert storage["status"] == ("warn" if slow else "ok")
    if slow and storage["data"]["filesystem"] in ("ext4", "xfs"):  # this machine's kind
        assert "overlay2 works" in storage["fix"]


def test_an_unreachable_engine_is_one_error_line_and_the_rest_is_skipped(
        lk: Callable, tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/no.sock"
    run = lk("doctor", "--json", env={"DOCKER_HOST": host, "LKBUILD_MIN_FREE_GB": "1"})
    assert run.code != 0
    assert "Traceback" not in run.err
    assert run.err_lines[-1].startswith("lkbuild: error:")
    assert sum(line.startswith("lkbuild: error:") for line in run.err_lines) == 1
    checks = by_name(run.out)
    assert checks["engine"]["status"] == "fail"
    assert host in checks["engine"]["detail"] and "DOCKER_HOST" in checks["engine"]["fix"]
    assert checks["memory"]["detail"] == "skipped: engine unreachable"
    assert checks["disk-engine"]["detail"] == "skipped: engine unreachable"


def test_a_context_that_does_not_exist_is_one_line_listing_the_existing_ones(
        lk: Callable) -> None:
    run = lk("doctor", "--context", "nosuch")
    assert run.code == 2
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("lkbuild: error:") and "nosuch" in line and "default" in line


def test_a_credential_helper_off_path_is_used_and_the_export_path_fix_given(
        lk: Callable, tmp_path: Path) -> None:
    config = tmp_path / "docker-config"
    helper_dir = config / "bin"
    helper_dir.mkdir(parents=True)
    (config / "config.json").write_text(json.dumps({"credsStore": "desktop"}))
    helper = helper_dir / "docker-credential-desktop"
    helper.write_text("#!/bin/sh\nexit 0\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    path = os.environ.get("PATH", "")
    assert str(helper_dir) not in path.split(os.pathsep)
    env = {"DOCKER_CONFIG": str(config), "PATH": path, "LKBUILD_MIN_FREE_GB": "1"}
    run = lk("doctor", "--json", env=env)
    cred = by_name(run.out)["credentials"]
    assert (cred["status"], cred["blocker"]) == ("warn", False)
    assert cred["fix"] == f'export PATH="{helper_dir}:$PATH"'
    assert "docker-credential-desktop" in cred["detail"] and "lkbuild uses it" in cred["detail"]
    assert f"using the credential helper in {helper_dir}" in run.err
    assert "credentials" not in (run.err_lines[-1] if run.code else "")
    helper.unlink()  # installed nowhere: registry logins would fail
    run = lk("doctor", "--json", env=env)
    assert run.code == 3, run.err
    cred = by_name(run.out)["credentials"]
    assert (cred["status"], cred["blocker"]) == ("fail", True)
    assert "docker-credential-desktop not found" in cred["detail"]
    assert run.err_lines[-1] == "lkbuild: error: doctor found blockers: credentials"


class TcpToUnix:
    """The local engine's socket served on a loopback TCP port, so lkbuild sees an engine
    whose data root is not this machine's path (as for Docker Desktop or a remote host)."""

    def __init__(self, socket_path: str) -> None:
        import socket
        import threading

        self.socket_path = socket_path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.socket_path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: Any, b: Any) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(2)

    def close(self) -> None:
        self.server.close()


def test_an_engine_disk_not_visible_here_is_measured_in_a_container_of_the_build_image(
        lk: Callable, docker_client: Any) -> None:
    """Over TCP the engine's data root is not a path here: doctor measures it with `df` in a
    container of the build image, which must agree with statvfs of the real data root."""
    proxy = TcpToUnix("/var/run/docker.sock")
    try:
        before = {c.id for c in docker_client.containers.list(all=True)}
        run = lk("doctor", "--json", env={"DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}",
                                          "LKBUILD_MIN_FREE_GB": "1",
                                          "LKBUILD_BUILD_IMAGE": "lkbuild/build:bookworm"})
        assert run.code == 0, run.err
        disk = by_name(run.out)["disk-engine"]
        st = os.statvfs(docker_client.info()["DockerRootDir"])
        assert disk["status"] == "ok" and "on another machine" in disk["detail"]
        assert abs(disk["data"]["free"] - st.f_bavail * st.f_frsize) < 2 * 10 ** 9
        assert {c.id for c in docker_client.containers.list(all=True)} == before
        huge = lk("doctor", "--json", env={"DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}",
                                           "LKBUILD_MIN_FREE_GB": "100000",
                                           "LKBUILD_BUILD_IMAGE": "lkbuild/build:bookworm"})
        assert huge.code != 0 and by_name(huge.out)["disk-engine"]["status"] == "fail"
    finally:
        proxy.close()
