"""SSH to build hosts: strict host keys, raw channels for bytes, remote commands that stop.

Fabric gives the connection (`~/.ssh/config` honoured: HostName, User, Port, IdentityFile) but
accepts any unknown host key by default; lkbuild loads known_hosts and refuses unknown keys
unless the user opts in. Streams (context files, `docker save`) go over raw Paramiko channels
in large chunks, never through Invoke's `run(in_stream=...)`, which reads a byte at a time as
text. Without a pty, sshd does not stop a command when its channel closes, so every command
runs as its own process group whose id it reports first, and an interrupt kills that group.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko

from . import resources, ui
from .engine import parse_df
from .errors import InfraError, UserError

# Paramiko logs a transport's failure with its traceback, which Python prints when nobody
# handles the log; lkbuild reports every such failure itself, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CHUNK = 1 << 20
BUFFER = 64 << 20  # image bytes held between the SSH channel and the local load
PID_MARK = "lkbuild-pgid "
HOST_RE = re.compile(r"(?:(?P<user>[^@\s:\[\]]+)@)?"
                     r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^@\s:\[\]/]+))"
                     r"(?::(?P<port>[0-9]+))?")


@dataclass(frozen=True)
class HostSpec:
    user: str
    host: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"{self.user}@" if self.user else "") + host + \
            (f":{self.port}" if self.port else "")


def parse_host(spec: str) -> HostSpec:
    """`[user@]host[:port]`, IPv6 in brackets."""
    m = HOST_RE.fullmatch((spec or "").strip())
    if not m:
        raise UserError(f"bad host {spec!r}", "use [USER@]HOST[:PORT], e.g. --host me@server:2222")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UserError(f"bad port in host {spec!r}", "a port is 1-65535")
    return HostSpec(m["user"] or "", m["v6"] or m["host"], port)


def fingerprint(key: paramiko.PKey) -> str:
    """As `ssh-keygen -l` prints it: SHA256 of the key blob, unpadded base64."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: plain on port 22, `[host]:port` otherwise."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(host: str, port: int, key: paramiko.PKey) -> str:
    return f"{known_hosts_name(host, port)} {key.get_name()} {key.get_base64()}\n"


class UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(hostname)
        self.hostname, self.key = hostname, key


class StrictPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys; with accept_new, trust a first key and append it to known_hosts."""

    def __init__(self, known_hosts: Path, accept_new: bool) -> None:
        self.known_hosts, self.accept_new = known_hosts, accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise UnknownHostKey(hostname, key)
        self.known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


def unknown_key_error(spec: HostSpec, port: int, exc: UnknownHostKey,
                      known_hosts: Path) -> UserError:
    scan = f"ssh-keyscan{'' if port == 22 else f' -p {port}'} {spec.host} >> {known_hosts}"
    return UserError(
        f"host key of {exc.hostname} is not known: {exc.key.get_name()} "
        f"{fingerprint(exc.key)}",
        f"if that fingerprint is the host's, pass --accept-new-host-key (it is then added to "
        f"{known_hosts}), or run `{scan}`")


@dataclass
class RemoteFacts:
    """What a build host offers, as its engine sees it."""

    user: str
    cpus: int
    memory: int
    arch: str
    data_root: str
    server_version: str
    buildx: str
    docker_free: int | None
    work_free: int | None
    jobs: int
    engine_id: str = ""  # the same engine may stand behind several hosts

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_info(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                break
    return {}


class Remote:
    """One SSH connection to a build host."""

    def __init__(self, conn: Any, spec: HostSpec, port: int) -> None:
        self.conn = conn
        self.spec = spec
        self.port = port
        self.user = conn.user
        self.lock = threading.Lock()
        self.groups: set[int] = set()  # remote process groups still running

    def __str__(self) -> str:
        return str(self.spec)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection may raise anything
            self.conn.close()
        _abandon(self.conn)

    def _channel(self) -> paramiko.Channel:
        transport: paramiko.Transport | None = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise InfraError(f"the SSH connection to {self.spec} was lost",
                             "check the network and run the command again")
        try:
            return transport.open_session(timeout=30)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise InfraError(f"the SSH connection to {self.spec} failed: {exc}") from None

    def _start(self, ch: paramiko.Channel, cmd: str) -> None:
        """Run cmd as a new process group, its id on the first line of stdout."""
        inner = f"echo {PID_MARK}$$; exec sh -c {shlex.quote(cmd)}"
        ch.exec_command(f"exec setsid -w sh -c {shlex.quote(inner)}")

    def _read_pgid(self, ch: paramiko.Channel, buf: bytearray) -> int | None:
        while b"\n" not in buf:
            data = ch.recv(4096)
            if not data:
                return None
            buf.extend(data)
        line, _, rest = bytes(buf).partition(b"\n")
        buf[:] = rest
        text = line.decode(errors="replace")
        if text.startswith(PID_MARK) and text[len(PID_MARK):].isdigit():
            pgid = int(text[len(PID_MARK):])
            with self.lock:
                self.groups.add(pgid)
            return pgid
        buf[:0] = line + b"\n"
        return None

    def _done(self, pgid: int | None) -> None:
        if pgid is not None:
            with self.lock:
                self.groups.discard(pgid)

    def stop_all(self) -> None:
        """Stop every remote command this connection started and has not seen end: SIGINT
        first (buildx then cancels the build in BuildKit), then TERM, then KILL."""
        with self.lock:
            groups = sorted(self.groups)
        if not groups:
            return
        ids = " ".join(f"-{g}" for g in groups)
        script = (f"kill -INT {ids} 2>/dev/null; for i in $(seq 50); do "
                  f"kill -0 {ids} 2>/dev/null || exit 0; sleep 0.2; done; "
                  f"kill -TERM {ids} 2>/dev/null; sleep 2; kill -KILL {ids} 2>/dev/null; "
                  "exit 0")
        try:
            ch = self._channel()
            ch.exec_command(script)
            ch.settimeout(30)
            while ch.recv(4096):
                pass
            ch.recv_exit_status()
            ch.close()
        except (TimeoutError, InfraError, OSError, paramiko.SSHException, EOFError):
            pass
        with self.lock:
            self.groups.difference_update(groups)

    @contextlib.contextmanager
    def _command(self, cmd: str, *, combine: bool, cut: str,
                 timeout: float | None = None) -> Iterator[tuple[paramiko.Channel, bytearray]]:
        """cmd on a channel of its own, as its own process group: any failure or interrupt
        here stops that group on the host before it is passed on."""
        ch = self._channel()
        ch.set_combine_stderr(combine)
        if timeout:
            ch.settimeout(timeout)
        pgid = None
        try:
            self._start(ch, cmd)
            buf = bytearray()
            pgid = self._read_pgid(ch, buf)
            yield ch, buf
        except TimeoutError:
            self.stop_all()
            raise InfraError(f"{_short(cmd)} on {self.spec} did not finish in "
                             f"{timeout or 0:.0f}s") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            self.stop_all()
            raise InfraError(cut.format(exc=str(exc) or "the connection closed"),
                             "nothing was kept; check the network and "
                             "run the command again") from None
        except BaseException:
            self.stop_all()
            raise
        finally:
            self._done(pgid)
            # On a dead connection close() itself fails (EOFError): that must not replace
            # the one-line error above.
            with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                ch.close()

    def run(self, cmd: str, *, on_line: Callable[[str], None] | None = None,
            check: bool = True, timeout: float | None = None) -> tuple[int, str]:
        """Run cmd with stdout and stderr merged, lines streamed to on_line as they come."""
        out: list[str] = []

        def emit(raw: bytes) -> None:
            text = raw.decode(errors="replace").rstrip("\r")
            out.append(text)
            if on_line:
                on_line(text)

        with self._command(cmd, combine=True, timeout=timeout,
                           cut=f"the SSH connection to {self.spec} dropped during "
                               f"{_short(cmd)} ({{exc}})") as (ch, buf):
            while True:
                while b"\n" in buf:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf[:] = rest
                    emit(line)
                data = ch.recv(CHUNK)
                if not data:
                    break
                buf.extend(data)
            if buf:
                emit(bytes(buf))
            code = self._exit_status(ch, cmd)
        if check and code != 0:
            raise InfraError(f"{_short(cmd)} failed on {self.spec} (exit {code}): "
                             f"{' '.join(out[-3:])[:300]}")
        return code, "\n".join(out)

    def _exit_status(self, ch: paramiko.Channel, cmd: str) -> int:
        if not ch.exit_status_ready():
            transport = self.conn.client.get_transport()
            deadline = time.monotonic() + 10
            while not ch.exit_status_ready():
                if transport is None or not transport.is_active() or time.monotonic() > deadline:
                    raise InfraError(f"the SSH connection to {self.spec} dropped during "
                                     f"{_short(cmd)}", "check the network and run it again")
                time.sleep(0.05)
        code = ch.recv_exit_status()
        if code == -1:  # the channel closed without an exit status: the connection died
            raise InfraError(f"the SSH connection to {self.spec} dropped during {_short(cmd)}",
                             "nothing was kept; check the network and run it again")
        return code

    def send_stream(self, cmd: str, source: Iterable[bytes] | BinaryIO) -> str:
        """Run cmd with stdin fed from source; its output (small) is returned."""
        out = bytearray()
        with self._command(cmd, combine=True,
                           cut=f"sending to {self.spec} failed during {_short(cmd)} "
                               "({exc})") as (ch, buf):
            out.extend(buf)
            drain = threading.Thread(target=_drain, args=(ch, out), daemon=True)
            drain.start()
            chunks = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") \
                else iter(source)
            for chunk in chunks:
                if chunk:
                    ch.sendall(chunk)
            ch.shutdown_write()
            drain.join()
            code = self._exit_status(ch, cmd)
        text = out.decode(errors="replace")
        if code != 0:
            raise InfraError(f"{_short(cmd)} failed on {self.spec} (exit {code}): "
                             f"{' '.join(text.split())[-300:]}")
        return text

    def recv_stream(self, cmd: str, sink: Callable[[bytes], Any] | BinaryIO) -> int:
        """Stream cmd's stdout to sink in large chunks; bytes received. A cut connection or a
        failing command raises after the last chunk, so the receiver can discard it all."""
        write = sink.write if hasattr(sink, "write") else sink
        total = 0
        with self._command(cmd, combine=False,
                           cut=f"the transfer from {self.spec} was cut ({{exc}})") as (ch, buf):
            if buf:
                write(bytes(buf))
                total += len(buf)
            while True:
                data = ch.recv(CHUNK)
                if not data:
                    break
                write(data)
                total += len(data)
            code = self._exit_status(ch, cmd)
            err = b""
            while ch.recv_stderr_ready():
                err += ch.recv_stderr(CHUNK)
        if code != 0:
            raise InfraError(f"{_short(cmd)} failed on {self.spec} (exit {code}): "
                             f"{' '.join(err.decode(errors='replace').split())[-300:]}",
                             "nothing was kept")
        return total


def _drain(ch: paramiko.Channel, out: bytearray) -> None:
    try:
        while True:
            data = ch.recv(65536)
            if not data:
                return
            out.extend(data)
    except (OSError, paramiko.SSHException, EOFError):
        return


def _short(cmd: str) -> str:
    text = " ".join(cmd.split())
    return f"`{text[:60]}{'...' if len(text) > 60 else ''}`"


def connect(spec_text: str, *, identity: str = "", known_hosts: str = "",
            accept_new: bool = False, timeout: float = 15.0) -> Remote:
    """Open a checked connection: known host key, key authentication, within the timeout."""
    import fabric

    spec = parse_host(spec_text)
    if identity:
        check_identity(Path(identity).expanduser())
    # A port that accepts TCP but never speaks SSH must time out like one that never answers.
    kwargs: dict[str, Any] = {"banner_timeout": timeout, "auth_timeout": timeout}
    if identity:
        kwargs["key_filename"] = [str(Path(identity).expanduser())]
    conn = fabric.Connection(spec.host, user=spec.user or None, port=spec.port,
                             connect_timeout=int(timeout), connect_kwargs=kwargs)
    port = int(conn.port)
    host = str(conn.host)
    config_file = (conn.ssh_config.get("userknownhostsfile") or "").split()
    path = Path(known_hosts or (config_file[0] if config_file else "~/.ssh/known_hosts"))
    path = path.expanduser()
    if path.is_file():
        try:
            conn.client.load_host_keys(str(path))
        except (OSError, paramiko.SSHException) as exc:
            raise UserError(f"cannot read known hosts file {path}: {exc}") from None
    conn.client.set_missing_host_key_policy(StrictPolicy(path, accept_new))
    where = f"{host}:{port}"
    try:
        conn.open()
    except UnknownHostKey as exc:
        _abandon(conn)
        raise unknown_key_error(HostSpec(spec.user, host, port), port, exc, path) from None
    except paramiko.BadHostKeyException as exc:
        _abandon(conn)
        raise UserError(f"HOST KEY OF {where} HAS CHANGED: known_hosts has "
                        f"{fingerprint(exc.expected_key)}, the host sent "
                        f"{fingerprint(exc.key)}; refusing to connect",
                        f"if the host was really reinstalled, remove its line from {path} "
                        f"(`ssh-keygen -R '{known_hosts_name(host, port)}' -f {path}`)") from None
    except paramiko.AuthenticationException:
        _abandon(conn)
        tried = identity or "the keys of ~/.ssh/config, ssh-agent and ~/.ssh"
        raise UserError(f"{conn.user}@{where} refused the login (tried {tried})",
                        "pass --identity KEYFILE or add the key with ssh-add") from None
    except socket.gaierror as exc:
        _abandon(conn)
        raise InfraError(f"cannot resolve host {host}: {exc.strerror or exc}",
                         "check the name, or use an address") from None
    except TimeoutError:
        _abandon(conn)
        raise InfraError(f"{where} did not answer within {timeout:.0f}s",
                         "check the host is up and the port is right") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        _abandon(conn)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            reason = "connection refused"
        raise InfraError(f"cannot connect to {where}: {reason}",
                         "check the host is up, runs sshd, and the port is right") from None
    return Remote(conn, spec, port)


def check_identity(path: Path) -> None:
    """An --identity file must be a private key Paramiko can read (a passphrase-protected
    one counts): anything else is refused before a connection is opened."""
    if not path.is_file():
        raise UserError(f"identity file {path} does not exist",
                        "give the private key with --identity FILE")
    hint = "give the private key (not the .pub file) with --identity FILE"
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            kind.from_private_key_file(str(path))
            return
        except paramiko.PasswordRequiredException:
            return  # the agent or a later prompt supplies the passphrase
        except (paramiko.SSHException, ValueError, UnicodeDecodeError, IndexError,
                TypeError):
            continue
        except OSError as exc:
            raise UserError(f"cannot read identity file {path}: {exc.strerror}", hint) from None
    raise UserError(f"identity file {path} is not a private key", hint)


def _abandon(conn: Any) -> None:
    """Close a connection that failed to open: Fabric's close() skips one that never became
    connected, which would leave its socket (and the server's session) open."""
    with contextlib.suppress(Exception):  # closing a half-open connection may raise anything
        conn.client.close()


def preflight(remote: Remote, work: str = "$HOME/.cache/lkbuild") -> RemoteFacts:
    """Docker usable by this user, buildx, free disk, memory and cpus -> the jobs they allow."""
    code, text = remote.run("docker info --format '{{json .}}'", check=False, timeout=60)
    if code != 0:
        low = text.lower()
        if code == 127 or "not found" in low:
            raise InfraError(f"docker is not installed on {remote.spec} (or not on PATH for "
                             "SSH logins)", "install Docker there; lkbuild needs only SSH, "
                             "Docker and buildx on a build host")
        if "permission denied" in low:
            raise UserError(f"{remote.user} on {remote.spec.host} may not use docker "
                            "(permission denied on its socket)",
                            f"add them to the docker group (`sudo usermod -aG docker "
                            f"{remote.user}`) and log in again")
        raise InfraError(f"docker on {remote.spec} does not answer: "
                         f"{' '.join(text.split())[-200:]}", "start the engine there")
    info = parse_info(text)
    code, bx = remote.run("docker buildx version", check=False, timeout=60)
    if code != 0:
        raise InfraError(f"docker buildx is missing on {remote.spec}",
                         "install the docker-buildx plugin there")
    data_root = str(info.get("DockerRootDir") or "/var/lib/docker")
    _, df = remote.run(f"mkdir -p {work} && df -Pk {shlex.quote(data_root)} {work} "
                       "2>/dev/null; true", check=False, timeout=60)
    free = parse_df(df)
    cpus = int(info.get("NCPU") or 1)
    memory = int(info.get("MemTotal") or 0)
    return RemoteFacts(
        user=remote.user, cpus=cpus, memory=memory,
        arch=str(info.get("Architecture") or "x86_64"), data_root=data_root,
        server_version=str(info.get("ServerVersion") or ""), buildx=bx.strip().splitlines()[-1]
        if bx.strip() else "", docker_free=free.get("0") if len(free) > 1 else None,
        work_free=free.get("1", free.get("0")), jobs=resources.jobs_for(cpus, memory),
        engine_id=str(info.get("ID") or ""))


def image_id(remote: Remote, ref: str) -> str | None:
    found = inspect_image(remote, ref)
    return str(found["Id"]) if found else None


def inspect_image(remote: Remote, ref: str) -> dict[str, Any] | None:
    """The remote engine's inspect of ref (ID and layer diff IDs), or None without it."""
    code, text = remote.run(f"docker image inspect --format '{{{{json .}}}}' {shlex.quote(ref)}",
                            check=False, timeout=60)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if code != 0 or not last.startswith("{"):
        return None
    try:
        found = json.loads(last)
    except ValueError:
        return None
    return found if str(found.get("Id", "")).startswith("sha256:") else None


def layers_to_drop(manifest: list[dict[str, Any]], have: int) -> list[str]:
    """The layer files of a `docker save` (its manifest.json) that a receiver holding the
    first `have` layers of the chain needs no copy of; a file a later layer shares stays."""
    paths = [str(p) for p in (manifest[0].get("Layers") or [])] if manifest else []
    needed = set(paths[have:])
    return list(dict.fromkeys(p for p in paths[:have] if p not in needed))


def fetch_image(remote: Remote, ref: str, engine: Any, scratch: str = "",
                bases: Sequence[str] = ()) -> str:
    """`docker save` on the remote, streamed into the local engine's load; checked by ID.

    The layers the local engine already holds (usually the build image under a -builder
    image: most of its bytes) are left out of the stream when the host has GNU tar and a
    `scratch` dir for the saved file; `docker load` takes them from the local layer store.
    A load that refuses the shortened stream is retried with every layer.
    """
    found = inspect_image(remote, ref)
    if found is None:
        raise InfraError(f"{ref} is not on {remote.spec}")
    expected = str(found["Id"])
    layers = [str(x) for x in (found.get("RootFS") or {}).get("Layers") or []]
    have = engine.shared_layers(layers, [*bases, *engine.image_ids(ref.rsplit(":", 1)[0])]) \
        if scratch and layers else 0
    if have:
        try:
            got = _fetch_without(remote, ref, engine, expected, have, scratch)
            if got:
                return got
        except _Refused as exc:
            ui.info(f"the local engine would not take {ref} without its first {have} layers "
                    f"({exc.message}): sending every layer")
    return _load(remote, f"docker save {shlex.quote(ref)}", ref, engine, expected)


def _fetch_without(remote: Remote, ref: str, engine: Any, expected: str, have: int,
                   scratch: str) -> str:
    """Save on the host into a scratch dir, then stream it without the first `have` layers
    (GNU tar --delete); "" when the host's tar cannot do that."""
    code, version = remote.run("tar --version 2>/dev/null | head -n 1", check=False,
                               timeout=60)
    if "GNU tar" not in version:
        return ""
    where = f"{scratch.rstrip('/')}/{uuid.uuid4().hex[:12]}"
    q = shlex.quote(where)
    try:
        code, text = remote.run(f"mkdir -p {q} && docker save -o {q}/image.tar "
                                f"{shlex.quote(ref)} && tar -xOf {q}/image.tar manifest.json",
                                check=False, timeout=3600)
        try:
            manifest = json.loads(text.strip().splitlines()[-1]) if code == 0 else None
        except (ValueError, IndexError):
            manifest = None
        if not isinstance(manifest, list) or not manifest:
            raise InfraError(f"docker save of {ref} failed on {remote.spec}: "
                             f"{' '.join(text.split())[-200:]}", "nothing was kept")
        drop = layers_to_drop(manifest, have)
        names = " ".join(shlex.quote(d) for d in drop)
        cmd = f"tar --delete -f - {names} < {q}/image.tar" if drop else f"cat {q}/image.tar"
        ui.info(f"fetching {ref} from {remote.spec} without the {have} layers this engine "
                "has")
        return _load(remote, cmd, ref, engine, expected, refused=_Refused)
    finally:
        remote.run(f"rm -rf {q}", check=False, timeout=60)


def _load(remote: Remote, cmd: str, ref: str, engine: Any, expected: str,
          refused: type[InfraError] = InfraError) -> str:
    """Stream cmd's stdout (an image archive) into the local engine's load; check the ID."""
    failure: list[BaseException] = []

    def chunks() -> Iterable[bytes]:
        # At most BUFFER bytes wait here: when the local load is slower than the link, the
        # reader stops, SSH's window fills, and `docker save` on the host waits.
        queue: list[bytes] = []
        held = [0]
        cond = threading.Condition()
        finished, abandoned = [False], [False]

        def sink(data: bytes) -> None:
            with cond:
                while held[0] > BUFFER and not abandoned[0]:
                    cond.wait(0.5)
                if abandoned[0]:
                    raise _Abandoned(f"loading {ref} stopped")
                queue.append(data)
                held[0] += len(data)
                cond.notify_all()

        def pump() -> None:
            try:
                remote.recv_stream(cmd, sink)
            except BaseException as exc:  # handed to the consumer below
                failure.append(exc)
            finally:
                with cond:
                    finished[0] = True
                    cond.notify_all()

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            while True:
                data = b""
                with cond:
                    while not queue and not finished[0]:
                        cond.wait(0.5)
                    if queue:
                        data = b"".join(queue)
                        queue.clear()
                        held[0] = 0
                        cond.notify_all()
                    elif finished[0]:
                        break
                if data:
                    moved.advance(len(data))
                    yield data
        finally:
            with cond:
                abandoned[0] = True
                cond.notify_all()
        thread.join()
        if failure:
            raise failure[0]

    existed = engine.image(ref)
    try:
        with ui.transfer(f"fetching {ref} from {remote.spec}") as moved:
            for reply in engine.client.api.load_image(chunks(), quiet=True):
                if isinstance(reply, dict) and reply.get("error"):  # the engine's refusal
                    raise refused(f"the local engine refused {ref} from {remote.spec}: "
                                  f"{' '.join(str(reply['error']).split())[:200]}",
                                  "nothing was kept")
    except BaseException as exc:
        _forget(engine, ref, existed)
        real = [f for f in failure if not isinstance(f, _Abandoned)]
        if real:
            raise real[0] from None
        if isinstance(exc, (KeyboardInterrupt, InfraError)):
            raise
        raise InfraError(f"loading {ref} from {remote.spec} failed: "
                         f"{' '.join(str(exc).split())[:200]}", "nothing was kept") from None
    if failure:
        _forget(engine, ref, existed)
        raise failure[0]
    got = engine.image(ref)
    if got is None or got["Id"] != expected:
        _forget(engine, ref, existed)
        raise InfraError(f"{ref} arrived as {got['Id'] if got else 'nothing'}, expected "
                         f"{expected}", "nothing was kept; run the command again")
    return expected


class _Refused(InfraError):
    """The local engine refused a stream without the layers it was thought to hold."""


class _Abandoned(InfraError):
    """The local load stopped reading: the transfer's own end, not its cause."""


def _forget(engine: Any, ref: str, existed: dict | None) -> None:
    """After a failed load, drop the tag if this load made it (never one that was there)."""
    now = engine.image(ref)
    if now is not None and (existed is None or now["Id"] != existed["Id"]):
        with contextlib.suppress(Exception):  # best effort: the tag may already be gone
            engine.client.api.remove_image(ref)
        if existed is not None:
            repo, tag = ref.rsplit(":", 1)
            engine.client.api.tag(existed["Id"], repo, tag)

