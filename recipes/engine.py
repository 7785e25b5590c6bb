"""The Docker engine, through the docker SDK: which engine, is it there, what it has.

Which engine to talk to is decided here once, the way the docker CLI decides it, so lkbuild
never builds on `default` while the user's engine is `desktop-linux` (the classic macOS
failure: `default` points at /var/run/docker.sock, which does not exist there). The
resolution is a pure function of the settings, the environment and the files under
$DOCKER_CONFIG, so it is tested without an engine. Every docker SDK, requests or socket
error is turned into a recipes.errors type here; nothing from docker.errors leaves this module.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import docker.tls
import requests.exceptions

from .errors import InfraError, UserError
from .settings import Settings

DEFAULT_CONTEXT = "default"
DEFAULT_HOST = "unix:///var/run/docker.sock"

PING_TIMEOUT = 10
"""Seconds to wait for the first answer: a half-started engine must not hang `inv doctor`."""

CLIENT_TIMEOUT = 300
"""Seconds per API call after that: image load/save and inspect of big images take a while."""

CLI_TIMEOUT = 60
"""Seconds for short docker CLI calls (`buildx version`, `buildx inspect`)."""

_WRAPPED: tuple[type[BaseException], ...] = (
    docker.errors.DockerException, requests.exceptions.RequestException, OSError)


# --- resolution: pure ------------------------------------------------------------------------

@dataclass(frozen=True)
class TLSFiles:
    """Client TLS material for a tcp:// engine (from a context's tls dir or DOCKER_CERT_PATH)."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    verify: bool


@dataclass(frozen=True)
class Endpoint:
    """Where the engine is and why this one was chosen (`source`, for messages)."""

    context: str
    host: str
    source: str
    tls: TLSFiles | None = None

    @property
    def socket_path(self) -> Path | None:
        """The socket file for a unix:// host, else None."""
        if not self.host.startswith("unix://"):
            return None
        return Path(self.host[len("unix://"):] or "/")

    @property
    def from_docker_host(self) -> bool:
        return self.source == "DOCKER_HOST"


def docker_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """$DOCKER_CONFIG, else ~/.docker: where the CLI keeps config.json and contexts."""
    env = os.environ if env is None else env
    explicit = env.get("DOCKER_CONFIG", "")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HOME", "")
    return (Path(home) if home else Path.home()) / ".docker"


def context_id(name: str) -> str:
    """The directory name the docker CLI stores a context under: sha256 of its name."""
    return hashlib.sha256(name.encode()).hexdigest()


def read_config(config_dir: Path) -> dict[str, Any]:
    """config.json as a dict ({} when absent); broken JSON is the user's to fix, with the path."""
    path = config_dir / "config.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UserError(f"cannot read Docker config file {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"bad JSON in Docker config file {path} line {exc.lineno}: {exc.msg}",
                        "fix or remove the file") from None
    if not isinstance(data, dict):
        raise UserError(f"Docker config file {path} must hold a JSON object")
    return data


def _tls_files(tls_dir: Path, verify: bool) -> TLSFiles | None:
    files = {name: tls_dir / f"{name}.pem" for name in ("ca", "cert", "key")}
    present = {name: (p if p.is_file() else None) for name, p in files.items()}
    if not any(present.values()):
        return None
    return TLSFiles(present["ca"], present["cert"], present["key"], verify)


def _context_endpoint(config_dir: Path, meta_file: Path, source: str) -> Endpoint | None:
    """One stored context, or None when its meta.json is unreadable or has no docker endpoint."""
    try:
        meta = json.loads(meta_file.read_text())
        name = str(meta["Name"])
        docker_ep = meta.get("Endpoints", {}).get("docker", {})
        host = str(docker_ep.get("Host", ""))
        skip_verify = bool(docker_ep.get("SkipTLSVerify", False))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not host:
        return None
    tls = _tls_files(config_dir / "contexts" / "tls" / context_id(name) / "docker",
                     not skip_verify)
    return Endpoint(name, host, source, tls)


def list_contexts(env: Mapping[str, str] | None = None) -> dict[str, Endpoint]:
    """Every context the CLI knows, by name; `default` (the standard socket) is always there."""
    config_dir = docker_config_dir(env)
    found: dict[str, Endpoint] = {
        DEFAULT_CONTEXT: Endpoint(DEFAULT_CONTEXT, DEFAULT_HOST, "built-in default")}
    meta_root = config_dir / "contexts" / "meta"
    try:
        entries = sorted(meta_root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        ep = _context_endpoint(config_dir, entry / "meta.json", "context")
        if ep is not None and ep.context != DEFAULT_CONTEXT:
            found[ep.context] = ep
    return found


def _named(name: str, source: str, env: Mapping[str, str] | None) -> Endpoint:
    if name == DEFAULT_CONTEXT:
        return Endpoint(DEFAULT_CONTEXT, DEFAULT_HOST, source)
    config_dir = docker_config_dir(env)
    ep = _context_endpoint(config_dir,
                           config_dir / "contexts" / "meta" / context_id(name) / "meta.json",
                           source)
    if ep is None or ep.context != name:
        known = ", ".join(sorted(list_contexts(env), key=lambda n: (n != DEFAULT_CONTEXT, n)))
        raise UserError(f"Docker context {name!r} (from {source}) does not exist",
                        f"existing contexts: {known}")
    return ep


def _docker_host_tls(env: Mapping[str, str]) -> TLSFiles | None:
    """DOCKER_TLS_VERIFY / DOCKER_CERT_PATH, read the way the docker CLI and SDK read them."""
    cert_path = env.get("DOCKER_CERT_PATH", "")
    verify_raw = env.get("DOCKER_TLS_VERIFY")
    verify = verify_raw is not None and verify_raw != ""
    if not cert_path and not verify:
        return None
    base = Path(cert_path).expanduser() if cert_path else docker_config_dir(env)
    return _tls_files(base, verify) or TLSFiles(None, None, None, verify)


def resolve(context: str = "", env: Mapping[str, str] | None = None,
            context_source: str = "--context") -> Endpoint:
    """Pick the engine: explicit context, DOCKER_HOST, DOCKER_CONTEXT, currentContext, default.

    An explicit context (flag, LKBUILD_CONTEXT or config file) wins over DOCKER_HOST, as
    `docker --context` does, so a stale DOCKER_HOST cannot silently redirect a build the user
    pointed somewhere; `default` then means the standard socket, not DOCKER_HOST.
    """
    env = os.environ if env is None else env
    if context:
        return _named(context, context_source, env)
    host = env.get("DOCKER_HOST", "")
    if host:
        return Endpoint(DEFAULT_CONTEXT, host, "DOCKER_HOST", _docker_host_tls(env))
    name = env.get("DOCKER_CONTEXT", "")
    if name:
        return _named(name, "DOCKER_CONTEXT", env)
    config_dir = docker_config_dir(env)
    current = read_config(config_dir).get("currentContext") or ""
    if isinstance(current, str) and current:
        return _named(current, f"currentContext in {config_dir / 'config.json'}", env)
    return Endpoint(DEFAULT_CONTEXT, DEFAULT_HOST, "built-in default")


def alternatives(endpoint: Endpoint, env: Mapping[str, str] | None = None) -> list[str]:
    """Contexts other than this one whose unix socket exists here: likely the live engine.

    Named contexts come before `default`: one the user (or Docker Desktop) created is the
    better guess than the standard socket.
    """
    out = []
    contexts = list_contexts(env)
    for name in sorted(contexts, key=lambda n: (n == DEFAULT_CONTEXT, n)):
        ep = contexts[name]
        path = ep.socket_path
        if ep.host == endpoint.host or path is None:
            continue
        if path.exists():
            out.append(name)
    return out


def unreachable_hint(endpoint: Endpoint, env: Mapping[str, str] | None = None) -> str:
    """What to do when the engine does not answer, from what is on disk (pure but for stat)."""
    path = endpoint.socket_path
    others = alternatives(endpoint, env)
    switch = (f"use --context {others[0]} or `docker context use {others[0]}`"
              if others else "")
    if endpoint.from_docker_host:
        lead = f"DOCKER_HOST={endpoint.host} overrides every context: unset it"
        if others:
            return f"{lead}, or use --context {others[0]}"
        return f"{lead} or fix it; is the engine running?"
    if path is not None and not path.exists():
        if switch:
            return f"{path} does not exist; {switch}"
        return (f"{path} does not exist: start the engine (Docker Desktop, or "
                "`sudo systemctl start docker`); `docker context ls` lists the contexts")
    if path is not None and not os.access(path, os.R_OK | os.W_OK):
        return (f"no permission on {path}: add your user to its group "
                "(`sudo usermod -aG docker $USER`, then log in again)")
    if path is not None:
        return f"{path} exists but nothing answers: restart the engine"
    return f"check that an engine listens at {endpoint.host} and that the network reaches it"


# --- the connected engine --------------------------------------------------------------------

@contextmanager
def _wrapped(what: str, hint: str = "") -> Iterator[None]:
    """docker/requests/socket errors -> InfraError with one line; ours pass through."""
    try:
        yield
    except _WRAPPED as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InfraError(f"{what}: {detail}", hint) from None


class Images(Protocol):
    """The image lookups that plan a module build or a push. Engine answers them, and so does
    a build host's engine over SSH (remote.HostEngine), so the planning code is the same."""

    def describe(self) -> str: ...

    def info(self) -> dict[str, Any]: ...

    def image(self, ref: str) -> dict[str, Any] | None: ...

    def image_exists(self, ref: str) -> bool: ...

    def image_ids(self, repo: str) -> list[str]: ...

    def tag(self, image: str, ref: str) -> None: ...

    def archives(self, ref: str, paths: Sequence[str], dest: Path) -> dict[str, Path]: ...


def aliases_to_move(ids: Mapping[str, str], groups: Sequence[Sequence[str]]
                    ) -> list[tuple[str, str]]:
    """(image ID, ref) for each ref after a group's first that does not name the first's
    image: the plain tags a build moves, which a skipped build must move the same way (a tag
    like `6.12.54-arm64` names the latest build, whatever config built the one before)."""
    return [(ids[group[0]], ref) for group in groups if group and group[0] in ids
            for ref in group[1:] if ids.get(ref) != ids[group[0]]]


def realign(engine: Images, groups: Sequence[Sequence[str]]) -> list[str]:
    """Point each group's other refs at the group's first (hash-tagged) image; the refs
    moved."""
    ids: dict[str, str] = {}
    for ref in {r for group in groups for r in group}:
        found = engine.image(ref)
        if found is not None:
            ids[ref] = str(found["Id"])
    moved = aliases_to_move(ids, groups)
    for image_id, ref in moved:
        engine.tag(image_id, ref)
    return [ref for _, ref in moved]


class Engine:
    """A reachable engine: the SDK client plus the facts lkbuild sizes builds with."""

    def __init__(self, endpoint: Endpoint, client: docker.DockerClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self._info: dict[str, Any] | None = None

    @property
    def context(self) -> str:
        return self.endpoint.context

    @property
    def host(self) -> str:
        return self.endpoint.host

    def describe(self) -> str:
        return f"context {self.context} ({self.host})"

    def info(self) -> dict[str, Any]:
        """`docker info`, fetched once per Engine."""
        if self._info is None:
            with _wrapped(f"docker info failed on {self.describe()}"):
                self._info = dict(self.client.info())
        return self._info

    @property
    def cpus(self) -> int:
        return int(self.info().get("NCPU") or 0)

    @property
    def memory(self) -> int:
        """Bytes of memory the engine (its VM, on Docker Desktop) has."""
        return int(self.info().get("MemTotal") or 0)

    @property
    def data_root(self) -> str:
        return str(self.info().get("DockerRootDir") or "")

    @property
    def server_version(self) -> str:
        return str(self.info().get("ServerVersion") or "")

    @property
    def in_vm(self) -> bool:
        """Docker Desktop runs the engine in a VM: its paths are not this machine's paths."""
        return "docker desktop" in str(self.info().get("OperatingSystem", "")).lower()

    def is_local(self) -> bool:
        """A unix socket that exists on this machine."""
        path = self.endpoint.socket_path
        return path is not None and path.exists()

    def data_root_visible(self) -> bool:
        """True when statvfs here measures the engine's own disk (local, not in a VM)."""
        if not self.is_local() or self.in_vm or not self.data_root:
            return False
        return Path(self.data_root).exists()

    @contextmanager
    def container(self, image: str, command: Sequence[str]) -> Iterator[Any]:
        """A container of `image` without a network, created for the block and removed
        however it ends (never pulled: the image must be on the engine)."""
        container = None
        try:
            with _wrapped(f"cannot create a container from {image} on {self.describe()}"):
                container = self.client.containers.create(image, list(command),
                                                          network_disabled=True)
            yield container
        finally:
            if container is not None:
                with suppress(*_WRAPPED):
                    container.remove(force=True)

    def output(self, image: str, command: Sequence[str], timeout: int = 60) -> str:
        """stdout of a short command run in a container of `image`."""
        with self.container(image, command) as container:
            with _wrapped(f"cannot run {command[0]} in {image} on {self.describe()}"):
                container.start()
                status = container.wait(timeout=timeout)
                out: str = container.logs(stdout=True, stderr=False).decode(errors="replace")
            if int(status.get("StatusCode", 1)) != 0:
                raise InfraError(f"{command[0]} failed in {image} on {self.describe()} "
                                 f"(exit {status.get('StatusCode')})")
            return out

    def data_root_free(self, image: str) -> int | None:
        """Free bytes where the engine keeps its data: statvfs here when that is its disk,
        else `df` in a container of `image` (a container's root sits on the data root's
        filesystem), which also reaches a Docker Desktop VM's disk. None when neither can."""
        if self.data_root_visible():
            st = os.statvfs(self.data_root)
            return st.f_bavail * st.f_frsize
        if not image or not self.image_exists(image):
            return None
        return parse_df(self.output(image, ["df", "-Pk", "/"])).get("0")

    def image(self, ref: str) -> dict[str, Any] | None:
        """The image's inspect attributes, or None when the engine has no such image."""
        try:
            return dict(self.client.api.inspect_image(ref))
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 400:
                raise UserError(f"invalid image reference {ref!r}: {exc.explanation}",
                                "give a reference like [host[:port]/]name[:tag], lowercase, "
                                "without spaces"
                                ) from None
            raise InfraError(f"inspecting {ref} on {self.describe()} failed: "
                             f"{' '.join(str(exc.explanation or exc).split())}") from None
        except _WRAPPED as exc:
            raise InfraError(f"inspecting {ref} on {self.describe()} failed: "
                             f"{' '.join(str(exc).split())}") from None

    def image_exists(self, ref: str) -> bool:
        return self.image(ref) is not None

    def shared_layers(self, layers: Sequence[str], candidates: Sequence[str]) -> int:
        """How many leading layers of a chain (diff IDs) this engine holds, judged by the
        candidate images it has: `docker load` skips a layer whose chain it has already."""
        best = 0
        for ref in dict.fromkeys(candidates):
            try:
                found = self.image(ref) if ref else None
            except UserError:
                continue
            mine = ((found or {}).get("RootFS") or {}).get("Layers") or []
            n = 0
            while n < min(len(mine), len(layers)) and mine[n] == layers[n]:
                n += 1
            best = max(best, n)
        return best

    def labelled_images(self, label: str) -> list[dict[str, Any]]:
        """Every image carrying the label key (the engine's image list entries: Id, RepoTags,
        Labels, Size, Created)."""
        with _wrapped(f"cannot list images on {self.describe()}"):
            return [dict(i) for i in self.client.api.images(filters={"label": label})]

    def image_ids(self, repo: str) -> list[str]:
        """IDs of the images tagged in `repo`."""
        with _wrapped(f"cannot list images on {self.describe()}"):
            return [str(i["Id"]) for i in self.client.api.images(name=repo)]

    def tag(self, image: str, ref: str) -> None:
        repo, _, tag = ref.rpartition(":")
        with _wrapped(f"cannot tag {ref} on {self.describe()}"):
            self.client.api.tag(image, repo, tag, force=True)

    def archives(self, ref: str, paths: Sequence[str], dest: Path) -> dict[str, Path]:
        """Tar streams of `paths` inside an image, spooled to files in `dest`, never running it.

        A container is created (never started; FROM scratch images have no command, so a
        dummy one is given), copied from and removed again whatever happens. Paths the image
        lacks are left out of the answer.
        """
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        found: dict[str, Path] = {}
        with self.container(ref, ["/lkbuild-never-run"]) as container:
            for n, path in enumerate(paths):
                spool = dest / f"archive-{n}.tar"
                try:
                    chunks, _ = container.get_archive(path)
                except docker.errors.NotFound:
                    continue
                with _wrapped(f"cannot copy {path} out of {ref}"), open(spool, "wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
                found[path] = spool
        return found

    def cli_args(self) -> list[str]:
        """Global docker CLI flags that select this engine (for `docker buildx ...`)."""
        if self.endpoint.context != DEFAULT_CONTEXT:
            return ["--context", self.endpoint.context]
        return []

    def cli_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a docker CLI child so it talks to this very engine."""
        env = dict(os.environ if base is None else base)
        env.pop("DOCKER_CONTEXT", None)
        if self.endpoint.context != DEFAULT_CONTEXT:
            env.pop("DOCKER_HOST", None)
            return env
        env["DOCKER_HOST"] = self.host
        if not self.endpoint.from_docker_host:
            env.pop("DOCKER_TLS_VERIFY", None)
            env.pop("DOCKER_CERT_PATH", None)
        return env

    def close(self) -> None:
        with suppress(*_WRAPPED):
            self.client.close()


def parse_df(text: str) -> dict[str, int]:
    """`df -Pk A B` -> {mount point's query path: free bytes}, in the order asked."""
    out: dict[str, int] = {}
    lines = [line for line in text.splitlines() if line.strip()]
    for n, line in enumerate(lines[1:]):
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit():
            out[str(n)] = int(fields[3]) * 1024
    return out


def _tls_config(tls: TLSFiles | None) -> docker.tls.TLSConfig | None:
    if tls is None:
        return None
    cert = (str(tls.cert), str(tls.key)) if tls.cert and tls.key else None
    try:
        return docker.tls.TLSConfig(client_cert=cert, ca_cert=str(tls.ca) if tls.ca else None,
                                    verify=tls.verify)
    except docker.errors.DockerException as exc:
        raise UserError(f"bad TLS material for the Docker engine: {exc}") from None


def connect_endpoint(endpoint: Endpoint, env: Mapping[str, str] | None = None) -> Engine:
    """Open a client and check the engine answers; InfraError with the way out when not."""
    tls = _tls_config(endpoint.tls)
    try:
        client = docker.DockerClient(base_url=endpoint.host, timeout=PING_TIMEOUT,
                                     tls=tls or False)
    except _WRAPPED as exc:
        raise InfraError(
            f"cannot connect to the Docker engine at {endpoint.host} (context {endpoint.context})",
            unreachable_hint(endpoint, env)) from exc
    client.api.timeout = CLIENT_TIMEOUT
    return Engine(endpoint, client)


def connect(settings: Settings | None = None, context: str | None = None,
            env: Mapping[str, str] | None = None) -> Engine:
    """The engine the settings point at (`context` overrides settings.context, e.g. a builder)."""
    if context is not None:
        return connect_endpoint(resolve(context, env), env)
    name = settings.context if settings else ""
    return connect_endpoint(resolve(name or "", env, context_source(settings)), env)


def context_source(settings: Settings | None) -> str:
    """Where settings.context came from, in the words a user would type."""
    if settings is None:
        return "--context"
    source = settings.source("context")
    if source == "flag":
        return "--context"
    if source.startswith("env "):
        return source[len("env "):]
    if source.startswith("file "):
        return f"context in {source[len('file '):]}"
    return source


# --- buildx through the docker CLI -----------------------------------------------------------

def docker_cli() -> str | None:
    return shutil.which("docker")


def _run_cli(args: list[str], env: Mapping[str, str] | None) -> subprocess.CompletedProcess[str]:
    cli = docker_cli()
    if cli is None:
        raise InfraError("the docker CLI is not on PATH",
                         "install the docker CLI (Debian: docker.io; macOS: Docker Desktop)")
    try:
        return subprocess.run([cli, *args], env=dict(env) if env is not None else None,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InfraError(f"`docker {' '.join(args)}` did not finish in {CLI_TIMEOUT} s") from None
    except OSError as exc:
        raise InfraError(f"cannot run {cli}: {exc.strerror}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def buildx_version(engine: Engine | None = None) -> str | None:
    """The buildx plugin's version ("0.13.1"), or None when the CLI or the plugin is missing."""
    if docker_cli() is None:
        return None
    args = (engine.cli_args() if engine else []) + ["buildx", "version"]
    try:
        proc = _run_cli(args, engine.cli_env() if engine else None)
    except InfraError:
        return None
    if proc.returncode != 0:
        return None
    parts = proc.stdout.split()
    if len(parts) >= 2 and "buildx" in parts[0]:
        return parts[1].lstrip("v")
    return proc.stdout.strip() or None


def parse_buildx_inspect(text: str) -> dict[str, str]:
    """`docker buildx inspect` output -> name, driver, status, platforms (first node's)."""
    out: dict[str, str] = {}
    keys = {"Name": "name", "Driver": "driver", "Status": "status", "Platforms": "platforms",
            "BuildKit version": "buildkit", "BuildKit": "buildkit", "Endpoint": "endpoint"}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        field = keys.get(key.strip())
        if field and field not in out:
            out[field] = value.strip()
    return out


def buildx_inspect(engine: Engine, builder: str = "") -> dict[str, str]:
    """Facts about a buildx builder on this engine (its own builder when `builder` is empty)."""
    args = engine.cli_args() + ["buildx", "inspect"] + ([builder] if builder else [])
    proc = _run_cli(args, engine.cli_env())
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or _last_line(proc.stdout) or f"exit {proc.returncode}"
        hint = ("`docker buildx ls` lists the builders" if builder else
                "install the buildx plugin (docker-buildx) in /usr/libexec/docker/cli-plugins/ "
                "or ~/.docker/cli-plugins/")
        command = " ".join(["docker", "buildx", "inspect"] + ([builder] if builder else []))
        raise InfraError(f"`{command}` failed on {engine.describe()}: {reason}", hint)
    facts = parse_buildx_inspect(proc.stdout)
    if not facts.get("name"):
        raise InfraError(f"cannot read the builder name from `docker buildx inspect` on "
                         f"{engine.describe()}")
    return facts


def buildx_builder(engine: Engine, builder: str = "") -> str:
    """The builder name buildx will use; for the docker driver it is the context's name."""
    return buildx_inspect(engine, builder)["name"]
