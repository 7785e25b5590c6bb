"""Real services for integration tests, started and stopped by pid: a registry, a second Docker
engine, and sshd servers whose logins talk to that engine.

All listen on loopback only. Everything lives in a temp dir of the test session; nothing here
touches the host engine's networking or data.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import bcrypt
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """argv run inside a test network namespace (nsenter execs it: the pid stays its own)."""
    return ["nsenter", f"--net=/run/netns/{netns}", *argv] if netns else argv


def port_open(port: int, netns: str = "", address: str = "127.0.0.1") -> bool:
    if not netns:
        with socket.socket() as s:
            return s.connect_ex((address, port)) == 0
    return subprocess.run(in_netns(netns, ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"]),
                          capture_output=True).returncode == 0


def wait_for(check, what: str, timeout: float = 30.0,
             proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout:.0f}s")


def stop_pid(proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Registry:
    """Debian's docker-registry on 127.0.0.1, optionally behind htpasswd auth."""

    def __init__(self, root: Path, user: str = "", password: str = "", netns: str = "") -> None:
        self.root = root
        self.netns = netns  # inside a test namespace: reachable only from there
        self.port = free_port()
        self.user, self.password = user, password
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if user:
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (root / "htpasswd").write_text(f"{user}:{hashed}\n")
            auth = (f"auth:\n  htpasswd:\n    realm: lkbuild-test\n"
                    f"    path: {root / 'htpasswd'}\n")
        (root / "config.yml").write_text(
            f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        if self.netns:
            return port_open(self.port, self.netns)
        try:
            urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
            return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401
        except OSError:
            return False

    def start(self) -> None:
        log = (self.root / "registry.log").open("ab")
        self.proc = subprocess.Popen(
            in_netns(self.netns, ["docker-registry", "serve", str(self.root / "config.yml")]),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._answers, f"registry on {self.host}", proc=self.proc)
        except RuntimeError:
            self.stop()
            raise

    def kill(self) -> None:
        """The registry goes down (its storage stays): a fault to inject."""
        stop_pid(self.proc)

    stop = kill


class DockerEngine:
    """A second dockerd with its own data root, socket and containerd, in a network namespace
    of its own, so it cannot disturb the host engine."""

    def __init__(self, root: Path, args: tuple[str, ...] = ()) -> None:
        self.root = root  # short: the socket path must fit in 108 bytes
        self.proc: subprocess.Popen | None = None
        self.netns = f"lkbuild-{root.name}"
        self.args = args  # more dockerd flags (--cgroup-parent for a memory-capped builder)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        env = {**os.environ, "DOCKER_HOST": self.host}
        env.pop("DOCKER_CONTEXT", None)
        return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, **kw)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text("{}\n")  # not the host engine's settings
        # Its own network namespace: its bridge and iptables rules cannot meet the host's.
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self._launch()

    def _launch(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns}", "dockerd",
             "--config-file", str(self.root / "daemon.json"), "--data-root", str(self.data_root),
             "--exec-root", str(self.root / "x"), "--pidfile", str(self.root / "dockerd.pid"),
             "-H", self.host, "--containerd-namespace", "lkbuild-test",
             "--containerd-plugins-namespace", "lkbuild-test-plugins", *self.args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: self.socket.exists() and self.docker("info").returncode == 0,
                     "the second dockerd", 60, self.proc)
        except RuntimeError:
            self.stop()
            raise RuntimeError((self.root / "dockerd.log").read_text()[-1500:]) from None

    def load_from_host(self, image: str) -> None:
        """Copy an image from the host engine (nothing can be pulled)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        env = {**os.environ, "DOCKER_HOST": self.host}
        subprocess.run(["docker", "load", "-q"], stdin=save.stdout, env=env, check=True,
                       capture_output=True)
        assert save.wait() == 0

    def stop(self) -> None:
        stop_pid(self.proc, 60)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    def down(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """The engine goes down by a signal to its dockerd's pid, as `systemctl stop docker`
        (SIGTERM) would take it down; its data root, socket dir and namespace stay, so `up`
        brings the same engine back. dockerd's exit code."""
        assert self.proc is not None and self.proc.poll() is None, "the engine is not running"
        os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout)

    def up(self) -> None:
        """Start the engine `down` stopped again, on the same data root, socket and namespace."""
        assert self.proc is not None and self.proc.poll() is not None, "the engine is running"
        self._launch()


class SSHServer:
    """sshd on a loopback port with a throwaway host key, one authorized user key, and
    DOCKER_HOST set for every login (through authorized_keys' environment=)."""

    def __init__(self, root: Path, docker_host: str, user_key: Path | None = None,
                 netns: str = "", address: str = "127.0.0.1",
                 env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.netns = netns
        self.address = address
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        keys = ["host_key"] if user_key else ["host_key", "user_key"]
        for name in keys:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(root / name)], check=True)
        if user_key:  # one user, several hosts: the same key logs in everywhere
            for suffix in ("", ".pub"):
                shutil.copy(f"{user_key}{suffix}", root / f"user_key{suffix}")
        pub = (root / "user_key.pub").read_text().strip()
        # `env` adds to every login's environment (HOME=DIR gives the logins a home of their
        # own, so what lkbuild leaves in its work dir there is the test's to inspect).
        extra = "".join(f'environment="{k}={v}",' for k, v in (env or {}).items())
        (root / "authorized_keys").write_text(
            f'{extra}environment="DOCKER_HOST={docker_host}" {pub}\n')
        (root / "sshd_config").write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {address}", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            "PermitUserEnvironment yes", "LogLevel VERBOSE", ""]))

    @property
    def identity(self) -> Path:
        return self.root / "user_key"

    @property
    def host_spec(self) -> str:
        return f"root@{self.address}:{self.port}"

    def known_hosts_line(self) -> str:
        key = " ".join((self.root / "host_key.pub").read_text().split()[:2])
        return f"[{self.address}]:{self.port} {key}\n"

    @property
    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.root / "host_key.pub")],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]

    def start(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        log = (self.root / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            in_netns(self.netns, ["/usr/sbin/sshd", "-D", "-e", "-f",
                                  str(self.root / "sshd_config")]),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: port_open(self.port, self.netns, self.address),
                     f"sshd on port {self.port}", proc=self.proc)
        except RuntimeError:
            self.stop()
            raise

    def session_pids(self) -> list[int]:
        """Processes below this sshd: the sessions it serves (and what they started)."""
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
        children: dict[int, list[int]] = {}
        for line in out.stdout.splitlines():
            pid, ppid = (int(x) for x in line.split())
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def stop(self) -> None:
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        stop_pid(self.proc)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("auth-registry"), "lk", uuid.uuid4().hex)
    reg.start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def remote_engine() -> Iterator[DockerEngine]:
    root = Path(tempfile.mkdtemp(prefix="lkd-", dir="/tmp"))
    engine = DockerEngine(root)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


def serve_ssh(tmp_path_factory: pytest.TempPathFactory, engine: DockerEngine,
              name: str, user_key: Path | None = None, **kw: Any) -> Iterator[SSHServer]:
    """An SSHServer for `engine` for as long as the generator runs (a fixture's body)."""
    server = SSHServer(tmp_path_factory.mktemp(name), engine.host, user_key, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory,
               remote_engine: DockerEngine) -> Iterator[SSHServer]:
    yield from serve_ssh(tmp_path_factory, remote_engine, "sshd")


@pytest.fixture(scope="session")
def ssh_server2(tmp_path_factory: pytest.TempPathFactory, remote_engine: DockerEngine,
                ssh_server: SSHServer) -> Iterator[SSHServer]:
    """A second host for the same user (same key), on another port."""
    yield from serve_ssh(tmp_path_factory, remote_engine, "sshd2", ssh_server.identity)


class Link:
    """A network namespace reached from here over a veth pair shaped to `mbit` each way: a
    build host across a real link instead of loopback, for benchmarks."""

    def __init__(self, name: str, mbit: int, subnet: str = "10.213.7") -> None:
        self.netns = name
        self.mbit = mbit
        self.here, self.there = f"{subnet}.1", f"{subnet}.2"
        self.veth = f"{name[:10]}-h"

    def start(self) -> None:
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.netns)
        try:
            run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0",
                "netns", self.netns)
            run("ip", "addr", "add", f"{self.here}/30", "dev", self.veth)
            run("ip", "link", "set", self.veth, "up")
            run("ip", "-n", self.netns, "addr", "add", f"{self.there}/30", "dev", "eth0")
            run("ip", "-n", self.netns, "link", "set", "eth0", "up")
            run("ip", "-n", self.netns, "link", "set", "lo", "up")
            for ns in ([], ["-n", self.netns]):
                dev = "eth0" if ns else self.veth
                run("tc", *ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                    f"{self.mbit}mbit", "burst", "256k", "latency", "50ms")
        except subprocess.CalledProcessError:
            self.stop()
            raise

    def stop(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)


class Tmpfs:
    """A size-limited tmpfs mounted at a dir and unmounted again: a real small filesystem,
    whose free space statvfs reports as any disk's, for tests of a full disk."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False

    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755",
                        "lkbuild-test", str(self.path)], check=True, capture_output=True)
        self.mounted = True

    def resize(self, size_mb: int) -> None:
        """Grow (or shrink) it in place: what freeing space on a full disk looks like."""
        subprocess.run(["mount", "-o", f"remount,size={size_mb}m", str(self.path)],
                       check=True, capture_output=True)
        self.size_mb = size_mb

    def stop(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True, capture_output=True)
            self.mounted = False


class MemoryCap:
    """A memory-limited cgroup for a builder: a dockerd started with `--cgroup-parent
    self.parent` puts every container and every BuildKit step under it, so the limit is what
    a capped Docker Desktop VM or CI runner gives a build. Its OOM kills are counted."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.v1 = (self.ROOT / "memory" / "memory.stat").exists()

    @property
    def parent(self) -> str:
        return f"/{self.name}"

    @property
    def memory_dir(self) -> Path:
        return self.ROOT / "memory" / self.name if self.v1 else self.ROOT / self.name

    def start(self) -> None:
        self.memory_dir.mkdir()
        self.set_limit(self.limit)

    def set_limit(self, limit: int) -> None:
        """Change the cap; what runs under it from then on sees the new one."""
        knob = "memory.limit_in_bytes" if self.v1 else "memory.max"
        (self.memory_dir / knob).write_text(str(limit))
        self.limit = limit

    def oom_kills(self) -> int:
        """OOM kills under the cap so far. cgroup v2 counts its descendants' in the cap's
        memory.events; v1 counts each kill only in the victim's own cgroup, which BuildKit
        removes with its step, so there the machine's own counter (/proc/vmstat) is read:
        nothing else on a test machine runs under a memory limit."""
        if self.v1:
            for line in Path("/proc/vmstat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
            raise AssertionError("no oom_kill counter in /proc/vmstat")
        for line in (self.memory_dir / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise AssertionError(f"no oom_kill counter in {self.memory_dir / 'memory.events'}")

    def stop(self) -> None:
        """Remove the cgroup dockerd made in every hierarchy, children first."""
        for top in [*self.ROOT.glob(f"*/{self.name}"), self.ROOT / self.name]:
            if top.is_dir():
                for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                    d.rmdir()
                top.rmdir()
