"""Remote kernel builds: the same build, run over SSH on a Linux host's engine.

The remote needs only SSH, Docker and buildx. The context is staged here exactly as for a local
build, then sent as files named by their sha256 into a store on the remote (so an input it
already has, such as the source tarball, is not sent again) and linked into a per-build dir
that is removed when the build ends, however it ends. The three BuildKit steps run there with
their output streamed here; the image comes back as a `docker save` stream into the local
engine, checked by ID.
"""
from __future__ import annotations

import io
import os
import shlex
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from . import buildx, kernel, resources, sources, ssh, ui
from .arch import Arch, resolve
from .engine import Engine, connect
from .errors import InfraError, LkbuildError, UserError, VerifyError
from .settings import Settings

WORK_DIR = ".cache/lkbuild"
"""Under the remote user's home: blobs/ (content-addressed inputs) and builds/<id>/."""
GB = 1000 ** 3


@dataclass(frozen=True)
class FileEntry:
    """One file of a staged context: where it goes, its mode and its content's sha256."""

    rel: str
    mode: int
    sha256: str
    size: int
    path: Path


def context_files(ctx: Path, cache_dir: Path) -> list[FileEntry]:
    """Every file under a staged context; big files' digests are remembered by path."""
    out = []
    for path in sorted(ctx.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.name.startswith("."):
            continue
        st = path.stat()
        digest = sources.digest(path, cache_dir) if st.st_size > (1 << 20) else \
            sources.hash_file(path)
        out.append(FileEntry(path.relative_to(ctx).as_posix(), st.st_mode & 0o777, digest,
                             st.st_size, path))
    return out


def blobs_tar(entries: list[FileEntry]) -> Iterator[bytes]:
    """A tar stream of the given files named by their sha256, produced as it is sent."""
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.sha256)
            info.size, info.mode, info.mtime = e.size, 0o644, 0
            with e.path.open("rb") as fh:
                tar.addfile(info, fh)
                yield from sink.take()
    yield from sink.take()


class _Chunks(io.RawIOBase):
    """A write-only file whose written bytes are taken out in pieces (for streaming a tar)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> Iterator[bytes]:
        parts, self.parts = self.parts, []
        yield from parts


def context_dirs(ctx: Path) -> list[str]:
    """Every dir under a staged context, empty ones too (an empty patches/ is still mounted)."""
    return sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*")
                  if p.is_dir() and not p.is_symlink())


def assemble_script(entries: list[FileEntry], blobs: PurePosixPath, dest: PurePosixPath,
                    dirs: list[str] | None = None) -> str:
    """The shell that builds a context dir from the blob store: 0644 files are hard links
    (the source tarball costs nothing), others copies with their own mode."""
    lines = ["set -e", f"mkdir -p {shlex.quote(str(dest))}", f"cd {shlex.quote(str(dest))}"]
    wanted = set(dirs or []) | {str(PurePosixPath(e.rel).parent) for e in entries}
    for d in sorted(wanted - {"."}):
        lines.append(f"mkdir -p {shlex.quote(d)}")
    for e in entries:
        blob, rel = shlex.quote(str(blobs / e.sha256)), shlex.quote(e.rel)
        if e.mode == 0o644:
            lines.append(f"ln -f {blob} {rel} 2>/dev/null || cp {blob} {rel}")
        else:
            lines.append(f"cp {blob} {rel} && chmod {e.mode:o} {rel}")
    return "\n".join(lines) + "\n"


@dataclass
class Target:
    """How to reach a remote host."""

    spec: str
    identity: str = ""
    known_hosts: str = ""
    accept_new: bool = False
    timeout: float = 15.0

    def connect(self) -> ssh.Remote:
        return ssh.connect(self.spec, identity=self.identity, known_hosts=self.known_hosts,
                           accept_new=self.accept_new, timeout=self.timeout)


class RemoteSession:
    """The kernel build's steps, run by buildx on the remote; local outputs come back here."""

    def __init__(self, remote: ssh.Remote, base: dict[str, Any], build_dir: PurePosixPath,
                 log: Path, echo: Callable[[str], None]) -> None:
        self.remote = remote
        self.base = base
        self.build_dir = build_dir
        self.log = log
        self.echo = echo
        self.steps = 0

    def run(self, what: str, **kw: Any) -> None:
        b = buildx.Build(**{**self.base, **kw})
        local_out = b.local_output
        self.steps += 1
        if local_out is not None:
            b.local_output = self.build_dir / f"out-{self.steps}"  # type: ignore[assignment]
        argv = buildx.command(b, [])
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a") as sink:
            sink.write("$ " + shlex.join(argv) + "\n")

            def line(text: str) -> None:
                sink.write(text + "\n")
                self.echo(text)

            code, _ = self.remote.run(shlex.join(argv), on_line=line, check=False)
        kernel.check_exit(code, self.log, what)
        if local_out is not None:
            fetch_dir(self.remote, PurePosixPath(str(b.local_output)), local_out)


def fetch_dir(remote: ssh.Remote, src: PurePosixPath, dest: Path) -> None:
    """A remote dir's files, as a tar stream, into a local dir."""
    buf = io.BytesIO()
    remote.recv_stream(f"tar -C {shlex.quote(str(src))} -c .", buf)
    buf.seek(0)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=buf, mode="r:") as tar:
        tar.extractall(dest, filter="data")


@dataclass
class Host:
    """A connected build host: its facts and where lkbuild works there."""

    target: Target
    conn: ssh.Remote
    facts: ssh.RemoteFacts
    home: PurePosixPath

    @property
    def work(self) -> PurePosixPath:
        return self.home / WORK_DIR

    @property
    def arch(self) -> Arch:
        return resolve(self.facts.arch)

    def describe(self) -> str:
        return self.target.spec

    def images(self, refs: list[str]) -> dict[str, str]:
        """ref -> image ID for those of `refs` the remote engine has."""
        out = {}
        for ref in refs:
            code, text = self.conn.run(
                f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(ref)}", check=False)
            if code == 0 and text.strip().startswith("sha256:"):
                out[ref] = text.strip().splitlines()[-1]
        return out


def open_host(target: Target) -> Host:
    conn = target.connect()
    try:
        facts = ssh.preflight(conn)
        _, home = conn.run("printf %s \"$HOME\"")
        return Host(target, conn, facts, PurePosixPath(home.strip() or "/tmp"))
    except BaseException:
        conn.close()
        raise


def check_room(settings: Settings, r: Host) -> None:
    need = settings.min_free_gb * GB
    for what, free in (("docker's data root", r.facts.docker_free),
                       ("the work dir", r.facts.work_free)):
        if free is not None and free < need:
            raise InfraError(f"{r.describe()}: {free / GB:.1f} GB free in {what}, a build needs "
                             f"{settings.min_free_gb} GB",
                             "free space there (`docker system prune`), or lower min_free_gb "
                             "for small configs")


def choose_jobs(r: Host, requested: int) -> int:
    """The request, else what the remote engine's cpus and memory allow; refuse too many."""
    if not requested:
        return r.facts.jobs
    need = resources.memory_needed(requested)
    if r.facts.memory and need > r.facts.memory:
        raise UserError(f"--jobs {requested} needs about {need / 1024**3:.1f} GiB but "
                        f"{r.describe()}'s engine has {r.facts.memory / 1024**3:.1f} GiB",
                        f"use --jobs {resources.jobs_for(r.facts.cpus, r.facts.memory)} or "
                        "leave --jobs out")
    return requested


_ENGINE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def engine_lock(r: Host) -> threading.Lock:
    """One lock per remote engine, so hosts sharing one do not send it the same image twice."""
    with _LOCKS_LOCK:
        return _ENGINE_LOCKS.setdefault(r.facts.engine_id or r.describe(), threading.Lock())


def ensure_build_image(r: Host, engine: Engine | None, image: str) -> None:
    """The build image on the remote: there already, pulled there, or sent from here."""
    with engine_lock(r):
        _ensure_build_image(r, engine, image)


def _ensure_build_image(r: Host, engine: Engine | None, image: str) -> None:
    if r.images([image]):
        return
    code, _ = r.conn.run(f"docker pull {shlex.quote(image)}", check=False)
    if code == 0:
        return
    if engine is None or not engine.image_exists(image):
        raise UserError(f"build image {image} is not on {r.describe()} and cannot be pulled "
                        "there", "make it there, or build it here and lkbuild sends it")
    ui.info(f"sending build image {image} to {r.describe()}")
    r.conn.send_stream("docker load -q", engine.client.api.get_image(image))


def fetch_source(r: Host, src: sources.Located) -> FileEntry:
    """The host downloads the source into its blob store itself (once) and checks its digest;
    the entry that links it into the context."""
    blob = r.work / "blobs" / src.sha256
    q = shlex.quote
    script = (
        f'set -e; b={q(str(blob))}; [ -f "$b" ] && exit 0; mkdir -p "$(dirname "$b")"; '
        'tmp="$b.part.$$"; trap \'rm -f "$tmp"\' EXIT; '
        f'if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 2 -o "$tmp" {q(src.url)}; '
        f'elif command -v wget >/dev/null 2>&1; then wget -q -O "$tmp" {q(src.url)}; '
        'else echo "neither curl nor wget" >&2; exit 3; fi; '
        f'echo "{src.sha256}  $tmp" | sha256sum -c --quiet; mv "$tmp" "$b"')
    ui.info(f"{r.describe()} fetches {src.url} (sha256 {src.sha256[:16]}...)")
    code, out = r.conn.run(script, check=False)
    if code == 3:
        raise UserError(f"{r.describe()} has neither curl nor wget to fetch the source",
                        "install one there, or pass --ship-sources to send it from here")
    if code != 0:
        tail = " ".join(out.split())[-200:]
        if "did NOT match" in out:
            raise VerifyError(f"{src.url} as fetched by {r.describe()} does not match sha256 "
                              f"{src.sha256}", "nothing was kept there; check the URL or "
                              "pass --ship-sources")
        raise InfraError(f"{r.describe()} could not fetch {src.url}: {tail}",
                         "check that it reaches that URL, or pass --ship-sources")
    return FileEntry(f"source/{src.name}", 0o644, src.sha256, 0, Path(os.devnull))


def sync_context(r: Host, ctx: Path, cache_dir: Path, build_dir: PurePosixPath,
                 extra: list[FileEntry] | None = None) -> int:
    """Send the blobs the remote lacks and link the context there; bytes sent."""
    entries = context_files(ctx, cache_dir) + list(extra or [])
    blobs = r.work / "blobs"
    _, listing = r.conn.run(f"mkdir -p {shlex.quote(str(blobs))} && ls {shlex.quote(str(blobs))}")
    have = set(listing.split())
    missing = {e.sha256: e for e in entries if e.sha256 not in have}
    sent = sum(e.size for e in missing.values())
    if missing:
        ui.info(f"sending {len(missing)} context files ({sent / 1e6:.1f} MB) to {r.describe()}")
        incoming = r.work / f"incoming-{uuid.uuid4().hex[:8]}"
        q = shlex.quote
        check = " ".join(f"{e.sha256}  {e.sha256}\\n" for e in missing.values())
        r.conn.send_stream(
            f"set -e; mkdir -p {q(str(incoming))}; trap 'rm -rf {q(str(incoming))}' EXIT; "
            f"tar -x -C {q(str(incoming))}; cd {q(str(incoming))}; "
            f"printf '{check}' | sha256sum -c --quiet; mv -f -- * {q(str(blobs))}/",
            blobs_tar(list(missing.values())))
    script = assemble_script(entries, blobs, build_dir / "ctx", context_dirs(ctx))
    r.conn.send_stream("sh -s", iter([script.encode()]))
    return sent


@dataclass
class Outcome:
    """One remote build: what was built where, and what came back."""

    version: str
    arch: str
    host: str
    refs: list[str]
    image_id: str = ""
    skipped: bool = False
    fetched: bool = False
    sent_bytes: int = 0
    seconds: float = 0.0
    log: str = ""
    error: str = ""
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "up to date" if self.skipped else "built"

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "arch": self.arch, "host": self.host,
                "refs": self.refs, "image_id": self.image_id, "status": self.status,
                "fetched": self.fetched, "sent_bytes": self.sent_bytes,
                "seconds": round(self.seconds, 2), "log": self.log, "error": self.error}


def located_plan(settings: Settings, request: kernel.Request, ship_sources: bool
                 ) -> tuple[kernel.Plan, sources.Located | None]:
    """The plan; a mirror or URL source is only located (the host fetches it) unless it is
    to be shipped from here."""
    found = None if ship_sources else sources.locate(settings, request.version, request.source)
    if found is None:
        return kernel.plan(settings, request), None
    tarball = sources.SourceTarball(Path(os.devnull), found.sha256, request.version, found.url,
                                    found.signature)
    return kernel.plan(settings, request, source=tarball), found


def build(settings: Settings, request: kernel.Request, target: Target, *, fetch: bool = True,
          ship_sources: bool = False, echo: Callable[[str], None] | None = None,
          active: set[ssh.Remote] | None = None) -> Outcome:
    """Build one kernel on a remote host (skipped when it has the images) and bring it back.

    `active` holds the open connection while it works, so another thread can stop it.
    """
    started = time.monotonic()
    p, located = located_plan(settings, request, ship_sources)
    wanted = p.refs + (p.builder_refs if request.builder_image else [])
    out = Outcome(request.version, p.arch.name, target.spec, wanted)
    show = echo or (lambda text: ui.err.print(text, markup=False, style="dim"))
    engine = connect(settings) if fetch else None
    try:
        r = open_host(target)
        if active is not None:
            active.add(r.conn)
        try:
            have = r.images(wanted)
            if len(have) == len(wanted) and not request.force:
                ui.info(f"{p.refs[0]} is up to date on {r.describe()} (hash {p.digest})")
                out.skipped = True
            else:
                out.sent_bytes, out.log = _run_build(settings, p, r, engine, show, located)
            if fetch and engine is not None:
                out.image_id = fetch_images(r, engine, p, wanted)
                out.fetched = True
            else:
                out.image_id = r.images(wanted[:1]).get(wanted[0], "")
        finally:
            if active is not None:
                active.discard(r.conn)
            r.conn.close()
    finally:
        if engine is not None:
            engine.close()
    out.seconds = time.monotonic() - started
    return out


def _run_build(settings: Settings, p: kernel.Plan, r: Host, engine: Engine | None,
               show: Callable[[str], None], located: sources.Located | None
               ) -> tuple[int, str]:
    request = p.request
    jobs = choose_jobs(r, request.jobs or settings.jobs or kernel.series_jobs(p))
    check_room(settings, r)
    ensure_build_image(r, engine, p.build_image)
    log = kernel.log_path(settings, p)
    build_dir = r.work / "builds" / uuid.uuid4().hex[:12]
    with kernel.staged(settings, p, r.arch, jobs, with_source=located is None) as (ctx, base):
        ui.info(f"building {p.refs[0]} on {r.describe()} with make -j{jobs}; log: {log}")
        try:
            extra = [fetch_source(r, located)] if located is not None else []
            sent = sync_context(r, ctx, Path(settings.cache_dir), build_dir, extra)
            session = RemoteSession(r.conn, {**base, "context": build_dir / "ctx"}, build_dir,
                                    log, show)
            kernel.make_images(session, p, r.arch.platform)
        finally:
            _cleanup(r, build_dir)
    return sent, str(log)


def _cleanup(r: Host, build_dir: PurePosixPath) -> None:
    """Remove the build dir; after a dropped connection, say what is left and where."""
    try:
        r.conn.run(f"rm -rf {shlex.quote(str(build_dir))}", check=False, timeout=60)
    except LkbuildError:
        ui.warn(f"could not remove {build_dir} on {r.describe()}: remove it by hand")


def fetch_images(r: Host, engine: Engine, p: kernel.Plan, wanted: list[str]) -> str:
    """Bring the kernel (and -builder) image back unless the local engine has it already."""
    have = r.images(wanted)
    first = ""
    for group in (p.refs, p.builder_refs):
        if group[0] not in wanted:
            continue
        image_id = have.get(group[0], "")
        local = engine.image(group[0])
        if local is None or local["Id"] != image_id:
            ui.info(f"fetching {group[0]} from {r.describe()}")
            image_id = ssh.fetch_image(r.conn, group[0], engine)
        for ref in group[1:]:
            repo, tag = ref.rsplit(":", 1)
            engine.client.api.tag(image_id, repo, tag)
        first = first or image_id
    return first
