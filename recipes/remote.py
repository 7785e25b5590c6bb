"""Remote kernel builds: the same build, run over SSH on a Linux host's engine.

The remote needs only SSH, Docker and buildx. The context is staged here exactly as for a local
build, then sent as files named by their sha256 into a store on the remote (so an input it
already has, such as the source tarball, is not sent again) and linked into a per-build dir
that is removed when the build ends, however it ends. The three BuildKit steps run there with
their output streamed here; the image comes back as a `docker save` stream into the local
engine, checked by ID.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import (
    buildx,
    kernel,
    module as modulemod,
    progress,
    push as pushmod,
    resources,
    sources,
    ssh,
    ui,
)
from .arch import Arch, resolve
from .engine import Engine, connect, realign
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
        if path.is_symlink() or not path.is_file() or (path.name.startswith(".") and
                                                        path.name.endswith(".tmp")):
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
    lines = ["set -e", f"rm -rf {shlex.quote(str(dest))}", f"mkdir -p {shlex.quote(str(dest))}",
             f"cd {shlex.quote(str(dest))}"]
    wanted = set(dirs or []) | {str(PurePosixPath(e.rel).parent) for e in entries}
    lines.extend(f"mkdir -p {shlex.quote(d)}" for d in sorted(wanted - {"."}))
    for e in entries:
        blob, rel = shlex.quote(str(blobs / e.sha256)), shlex.quote(e.rel)
        if e.mode == 0o644:
            lines.append(f"ln -f {blob} {rel} 2>/dev/null || cp {blob} {rel}")
        else:
            lines.append(f"cp {blob} {rel} && chmod {e.mode:o} {rel}")
    # One function, called on the last line: a script cut short by a dropped connection is
    # a syntax error, not a partial run.
    return "assemble() {\n" + "\n".join(lines) + "\n}\nassemble\n"


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
        view = ui.current_view()
        if view is not None:
            view.start(argv)
        with self.log.open("a") as sink:
            sink.write("$ " + shlex.join(argv) + "\n")

            def line(text: str) -> None:
                sink.write(text + "\n")
                if view is not None:
                    view.line(text)
                else:
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


class HostEngine:
    """The engine calls that plan a module build or a push, answered by a build host's engine
    over SSH, so the planning code is the same as for the local engine."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def describe(self) -> str:
        return self.host.describe()

    def info(self) -> dict[str, Any]:
        return {"Architecture": self.host.facts.arch}

    def image(self, ref: str) -> dict[str, Any] | None:
        code, text = self.host.conn.run(f"docker image inspect {shlex.quote(ref)} 2>/dev/null",
                                        check=False, timeout=60)
        if code != 0:
            return None
        try:
            found = json.loads(text)
        except ValueError:
            raise InfraError(f"docker image inspect {ref} on {self.describe()} did not answer "
                             f"in JSON: {' '.join(text.split())[:200]}") from None
        return dict(found[0]) if found else None

    def image_exists(self, ref: str) -> bool:
        return self.image(ref) is not None

    def image_ids(self, repo: str) -> list[str]:
        _, text = self.host.conn.run(
            f"docker images --no-trunc --format '{{{{.ID}}}}' {shlex.quote(repo)}", timeout=60)
        return sorted({line.strip() for line in text.splitlines()
                       if line.strip().startswith("sha256:")})

    def tag(self, image: str, ref: str) -> None:
        self.host.conn.run(f"docker tag {shlex.quote(image)} {shlex.quote(ref)}", timeout=60)

    def archives(self, ref: str, paths: Sequence[str], dest: Path) -> dict[str, Path]:
        """As Engine.archives: paths copied out of a created (never started) container."""
        dest.mkdir(parents=True, exist_ok=True)
        q = shlex.quote
        _, text = self.host.conn.run(f"docker create --network none {q(ref)} /lkbuild-never-run",
                                     timeout=120)
        container = text.strip().splitlines()[-1]
        found: dict[str, Path] = {}
        try:
            for n, path in enumerate(paths):
                spool = dest / f"archive-{n}.tar"
                code, _ = self.host.conn.run(f"docker cp {q(container)}:{q(path)} - >/dev/null",
                                             check=False, timeout=120)
                if code != 0:
                    continue
                with spool.open("wb") as fh:
                    self.host.conn.recv_stream(f"docker cp {q(container)}:{q(path)} -", fh)
                found[path] = spool
        finally:
            self.host.conn.run(f"docker rm -f {q(container)} >/dev/null", check=False,
                               timeout=60)
        return found


class HostRunner:
    """A module build's steps on a build host: the staged context is synced before each step
    (the loader files change between them), and the steps run as one remote session."""

    def __init__(self, settings: Settings, r: Host, build_dir: PurePosixPath,
                 echo: Callable[[str], None]) -> None:
        self.engine = HostEngine(r)
        self.settings = settings
        self.host = r
        self.build_dir = build_dir
        self.echo = echo
        self.session: RemoteSession | None = None
        self.sent = 0

    def jobs(self, requested: int) -> int:
        return choose_jobs(self.host, requested)

    def run(self, ctx: Path, base: dict[str, Any], log: Path, what: str, **kw: Any) -> None:
        self.sent += sync_context(self.host, ctx, Path(self.settings.cache_dir), self.build_dir)
        remote_base = {**base, "context": self.build_dir / "ctx"}
        if self.session is None:
            self.session = RemoteSession(self.host.conn, remote_base, self.build_dir, log,
                                         self.echo)
        self.session.base = remote_base
        self.session.run(what, **kw)


def check_room(settings: Settings, r: Host, key: str = "") -> None:
    """Refuse a host without the disk for the build (`key`: the build whose measured disk to
    expect)."""
    need, how = resources.disk_needed(settings, key)
    for what, free in (("docker's data root", r.facts.docker_free),
                       ("the work dir", r.facts.work_free)):
        if free is not None and free < need:
            raise InfraError(f"{r.describe()}: {free / GB:.1f} GB free in {what}, a build needs "
                             f"{how}",
                             "free space there (`docker system prune`), or lower min_free_gb "
                             "for small configs")


def choose_jobs(r: Host, requested: int,
                model: resources.JobModel = resources.DEFAULT_MODEL) -> int:
    """The request, else what the remote engine's cpus and memory allow; refuse too many."""
    if not requested:
        return resources.jobs_for(r.facts.cpus, r.facts.memory, model) if r.facts.memory \
            else r.facts.jobs
    need = resources.memory_needed(requested, model)
    if r.facts.memory and need > r.facts.memory:
        raise UserError(f"--jobs {requested} needs about {need / 1024**3:.1f} GiB but "
                        f"{r.describe()}'s engine has {r.facts.memory / 1024**3:.1f} GiB",
                        f"use --jobs {resources.jobs_for(r.facts.cpus, r.facts.memory, model)} "
                        "or leave --jobs out")
    return requested


_ENGINE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def engine_lock(r: Host) -> threading.Lock:
    """One lock per remote engine, so hosts sharing one do not send it the same image twice."""
    with _LOCKS_LOCK:
        return _ENGINE_LOCKS.setdefault(r.facts.engine_id or r.describe(), threading.Lock())


def ensure_build_image(settings: Settings, r: Host, image: str) -> None:
    """The build image on the remote: there already, pulled there, or sent from here."""
    with engine_lock(r):
        _ensure_build_image(settings, r, image)


def _ensure_build_image(settings: Settings, r: Host, image: str) -> None:
    if r.images([image]):
        return
    code, _ = r.conn.run(f"docker pull {shlex.quote(image)}", check=False)
    if code == 0:
        return
    engine = connect(settings)
    try:
        if not engine.image_exists(image):
            raise UserError(f"build image {image} is not on {r.describe()} and cannot be "
                            "pulled there", "make it there, or build it here (inv "
                            "bootstrap-image) and lkbuild sends it")
        ui.info(f"sending build image {image} to {r.describe()}")
        r.conn.send_stream("docker load -q", engine.client.api.get_image(image))
    finally:
        engine.close()


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
    """One remote build: what was built where, and what came back (or was pushed)."""

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
    module: str = ""
    pushed: list[str] = field(default_factory=list)
    summary: progress.Summary | None = None  # the remote compile, when this one showed it

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "up to date" if self.skipped else "built"

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "arch": self.arch, "host": self.host,
                "module": self.module, "refs": self.refs, "image_id": self.image_id,
                "status": self.status, "fetched": self.fetched, "pushed": self.pushed,
                "sent_bytes": self.sent_bytes, "seconds": round(self.seconds, 2),
                "log": self.log, "error": self.error,
                "summary": self.summary.as_json() if self.summary else None}


@dataclass(frozen=True)
class ModuleJob:
    """A module to build on the host against the kernel the job builds there."""

    name: str
    version: str = ""
    source: str = ""


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
          ship_sources: bool = False, module: ModuleJob | None = None,
          push_to: Settings | None = None, force_push: bool = False,
          echo: Callable[[str], None] | None = None,
          active: set[ssh.Remote] | None = None) -> Outcome:
    """Build one kernel on a remote host (skipped when it has the images), and a module against
    it when asked; bring the images back, or have the host push them (`push_to` holds the
    registry: it names the pushed tags only, not the images built).

    `active` holds the open connection while it works, so another thread can stop it.
    """
    started = time.monotonic()
    p, located = located_plan(settings, request, ship_sources)
    groups = kernel.tag_groups(p, request.builder_image)
    wanted = [r for group in groups for r in group]
    out = Outcome(request.version, p.arch.name, target.spec, wanted,
                  module=module.name if module else "")
    show = echo or (lambda text: ui.err.print(text, markup=False, style="dim"))
    # One build: its progress as a local build shows it. Several at once (echo prefixes each
    # line with its host): their lines, as they come.
    view = echo is None
    r = open_host(target)
    if active is not None:
        active.add(r.conn)
    try:
        have = r.images([g[0] for g in groups])
        if len(have) == len(groups) and not request.force:
            ui.info(f"{p.refs[0]} is up to date on {r.describe()} (hash {p.digest})")
            for ref in realign(HostEngine(r), groups):
                ui.info(f"{ref} now names this build again on {r.describe()}")
            out.skipped = True
        else:
            out.sent_bytes, out.log, out.summary = _run_build(settings, p, r, show, located,
                                                               view)
        if module is not None:
            result, sent = _run_module(settings, p, r, module, show)
            out.refs = result.refs + result.loader_refs
            out.skipped = out.skipped and result.skipped
            out.sent_bytes += sent
            out.log = result.log or out.log
            groups = [result.refs, result.loader_refs]
        if push_to is not None:
            out.pushed = push_from_host(push_to, r, p, module, force_push)
        if fetch and push_to is None:
            engine = connect(settings)
            try:
                out.image_id = fetch_images(r, engine, groups, [p.build_image])
            finally:
                engine.close()
            out.fetched = True
        else:
            out.image_id = r.images(groups[0][:1]).get(groups[0][0], "")
    finally:
        if active is not None:
            active.discard(r.conn)
        r.conn.close()
    out.seconds = time.monotonic() - started
    return out


def _run_build(settings: Settings, p: kernel.Plan, r: Host, show: Callable[[str], None],
               located: sources.Located | None, view: bool = True
               ) -> tuple[int, str, progress.Summary | None]:
    requested, model = kernel.job_request(settings, p)
    jobs = choose_jobs(r, requested, model)
    check_room(settings, r, kernel.jobs_key(p))
    ensure_build_image(settings, r, p.build_image)
    log = kernel.log_path(settings, p)
    build_dir = r.work / "builds" / uuid.uuid4().hex[:12]
    with kernel.staged(settings, p, r.arch, jobs, with_source=located is None,
                       auto=None if requested else model) as (ctx, base):
        ui.info(f"building {p.refs[0]} on {r.describe()} with make -j{jobs}; log: {log}")
        try:
            extra = [fetch_source(r, located)] if located is not None else []
            sent = sync_context(r, ctx, Path(settings.cache_dir), build_dir, extra)
            session = RemoteSession(r.conn, {**base, "context": build_dir / "ctx"}, build_dir,
                                    log, show)
            # The estimate is this host's own: another machine compiles at another pace.
            key = f"{kernel.progress_key(p, ctx)}-{r.describe()}"
            shown = ui.build_view("kernel", settings.verbose,
                                  progress.earlier(settings.cache_dir, key)) if view \
                else contextlib.nullcontext(None)
            with shown as progress_view:
                facts, _ = kernel.make_images(session, p, r.arch.platform)
            summary = progress_view.final if progress_view is not None else None
            measured = progress_view.tracker.record() if progress_view is not None else None
            if measured is not None:
                progress.remember(settings.cache_dir, key, measured)
            kernel.remember_jobs(settings, p, facts, jobs)
        finally:
            _cleanup(r, build_dir)
    return sent, str(log), summary


def _run_module(settings: Settings, p: kernel.Plan, r: Host, job: ModuleJob,
                show: Callable[[str], None]) -> tuple[modulemod.Result, int]:
    """The module built on the host against the kernel just built (or found) there."""
    def plan_for(version: str, arch: Arch) -> kernel.Plan:
        assert (version, arch.name) == (p.request.version, p.arch.name)
        return p

    request = modulemod.Request(module=job.name, kernel=p.request.version, arch=p.arch,
                                version=job.version, source=job.source, jobs=p.request.jobs,
                                force=p.request.force)
    runner = HostRunner(settings, r, r.work / "builds" / uuid.uuid4().hex[:12], show)
    try:
        return modulemod.build(settings, request, plan_for, runner), runner.sent
    finally:
        _cleanup(r, runner.build_dir)


def push_from_host(settings: Settings, r: Host, p: kernel.Plan, module: ModuleJob | None,
                   force: bool) -> list[str]:
    """The host pushes the images it built with its own engine and registry login; the plan
    and the indexes are made here. The pushed refs, with their digests."""
    engine = HostEngine(r)
    if module is None:
        images = pushmod.kernel_images(settings, engine, p.request.version, [p.arch], False,
                                        elsewhere=False)
    else:
        images = pushmod.module_images(settings, engine, module.name, p.request.version,
                                       [p.arch], elsewhere=False)
    q = shlex.quote

    def send(image: pushmod.Image, ref: str) -> None:
        ui.info(f"{r.describe()} pushes {ref}")
        # Tagged for the push only; a tag of that name that was there before is put back.
        script = (f"had=$(docker image inspect --format '{{{{.Id}}}}' {q(ref)} 2>/dev/null); "
                  f"docker tag {q(image.image_id)} {q(ref)} || exit $?; docker push {q(ref)}; "
                  f's=$?; if [ -z "$had" ]; then docker rmi {q(ref)} >/dev/null 2>&1; '
                  f'elif [ "$had" != {q(image.image_id)} ]; then docker tag "$had" {q(ref)}; '
                  "fi; exit $s")
        code, text = r.conn.run(script, check=False, on_line=lambda line: None)
        if code != 0:
            tail = " ".join(text.split())[-240:]
            raise InfraError(f"{r.describe()} could not push {ref}: {tail}",
                             "log that host in to the registry (`docker login` there) and "
                             "push again")

    outcomes = pushmod.host_push(settings, images, send, force=force)
    for o in outcomes:
        ui.info(f"{o.status:>10}  {o.kind:5}  {o.ref}")
    return [f"{o.ref}@{o.digest}" for o in outcomes]


def _cleanup(r: Host, build_dir: PurePosixPath) -> None:
    """Remove the build dir; after a dropped connection, say what is left and where."""
    try:
        r.conn.run(f"rm -rf {shlex.quote(str(build_dir))}", check=False, timeout=60)
    except LkbuildError:
        ui.warn(f"could not remove {build_dir} on {r.describe()}: remove it by hand")


def fetch_images(r: Host, engine: Engine, groups: list[list[str]],
                 bases: Sequence[str] = ()) -> str:
    """Bring each group's image (tagged with every ref of the group) back unless the local
    engine has it already; the first group's image ID. Layers of `bases` (the build image)
    that the local engine has are not sent."""
    have = r.images([g[0] for g in groups])
    first = ""
    for group in groups:
        image_id = have.get(group[0], "")
        local = engine.image(group[0])
        if local is None or local["Id"] != image_id:
            ui.info(f"fetching {group[0]} from {r.describe()}")
            image_id = ssh.fetch_image(r.conn, group[0], engine, str(r.work / "transfer"),
                                       bases)
        for ref in group[1:]:
            engine.tag(image_id, ref)
        first = first or image_id
    return first
