"""The offline build image: a Debian rootfs made by debootstrap and imported into the engine.

No image can be pulled on the machines lkbuild targets, so the toolchain image that kernels and
modules are compiled in is made from a Debian mirror: `debootstrap --variant=minbase` with the
packages in data/build-image.yaml, trimmed, streamed as a tar into the engine's image import.

The image carries a recipe digest (suite, packages, arch, schema) as a label, so asking for it
again is a no-op until the recipe changes. A failed or interrupted run never replaces a good
tag and never leaves its ~1 GB root-owned rootfs behind.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
import yaml

from . import arch as archmod, progress, ui
from .arch import Arch
from .errors import BuildError, InfraError, LkbuildError, UserError

if TYPE_CHECKING:
    from .engine import Engine
    from .settings import Settings

RECIPE_SCHEMA = 1
"""Bump when the way the image is made changes (trimming, labels, config) without a package
change, so existing images are rebuilt."""

LABEL_RECIPE = "org.lkbuild.recipe"
LABEL_SUITE = "org.lkbuild.suite"
LABEL_ARCH = "org.lkbuild.arch"
LABEL_PACKAGES = "org.lkbuild.packages"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
TMP_PREFIX = "bootstrap-"
MIN_FREE_BYTES = 2 * 1024**3

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
REF_RE = re.compile(rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?")
SUITE_RE = re.compile(r"[a-z][a-z0-9.-]{0,63}")
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")

_ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException, requests.exceptions.RequestException, OSError)


# --- the recipe: pure data and hashes -------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """What the image is made of; its digest decides whether an existing image is current."""

    suite: str
    arch: str
    packages: tuple[str, ...]

    @property
    def digest(self) -> str:
        return recipe_digest(self.suite, self.packages, self.arch)

    def labels(self) -> dict[str, str]:
        return {
            LABEL_RECIPE: self.digest,
            LABEL_SUITE: self.suite,
            LABEL_ARCH: self.arch,
            LABEL_PACKAGES: " ".join(sorted(set(self.packages))),
        }

    def changes(self) -> list[str]:
        """Dockerfile instructions applied by the import (docker import --change)."""
        labels = [f"LABEL {key}={json.dumps(value)}" for key, value in self.labels().items()]
        return [*labels, f"ENV PATH={IMAGE_PATH}", 'CMD ["/bin/bash"]']


def recipe_digest(suite: str, packages: Any, arch: str, schema: int = RECIPE_SCHEMA) -> str:
    """sha256 of the recipe; package order and duplicates do not matter, anything else does."""
    doc = {"schema": schema, "suite": suite, "arch": arch, "packages": sorted(set(packages))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@functools.cache
def _data() -> dict[str, Any]:
    text = resources.files("recipes").joinpath("data/build-image.yaml").read_text()
    where = "recipes/data/build-image.yaml"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"bad YAML in {where}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping with 'packages' and 'cross_extra'")
    base = data.get("packages")
    extra = data.get("cross_extra") or {}
    if not isinstance(base, list) or not isinstance(extra, dict):
        raise UserError(f"{where} needs a 'packages' list and a 'cross_extra' mapping")
    names = [*base, *(p for v in extra.values() for p in (v or []))]
    bad = [str(p) for p in names if not isinstance(p, str) or not PACKAGE_RE.fullmatch(p)]
    if bad:
        raise UserError(f"{where}: not Debian package names: {', '.join(bad)}")
    return {"packages": list(base),
            "cross_extra": {str(k): list(v or []) for k, v in extra.items()}}


def packages(host: Arch | None = None) -> list[str]:
    """The toolchain for `host`, plus a cross toolchain for every other supported arch."""
    host = host or archmod.host()
    data = _data()
    out = list(data["packages"])
    for name in archmod.canonical():
        if name == host.name:
            continue
        target = archmod.resolve(name)
        out += [target.cross_package, *data["cross_extra"].get(name, [])]
    return sorted(set(out))


def recipe(suite: str, host: Arch | None = None) -> Recipe:
    host = host or archmod.host()
    return Recipe(suite=suite, arch=host.name, packages=tuple(packages(host)))


# --- input checks --------------------------------------------------------------------------

def validate_ref(ref: str) -> str:
    """A reference we can tag: [host[:port]/]name[:tag], lowercase name, no digest."""
    ref = (ref or "").strip()
    if not REF_RE.fullmatch(ref) or len(split_ref(ref)[0]) > 255:
        raise UserError(
            f"invalid image reference {ref!r}",
            "use [host[:port]/]name[:tag] with a lowercase name, e.g. lkbuild/build:bookworm",
        )
    return ref


def _has_tag(ref: str) -> bool:
    return ":" in ref.rsplit("/", 1)[-1]


def split_ref(ref: str) -> tuple[str, str]:
    """(repository, tag) as the engine's tag call wants them; the tag defaults to latest."""
    if _has_tag(ref):
        repo, tag = ref.rsplit(":", 1)
        return repo, tag
    return ref, "latest"


def validate_suite(suite: str) -> str:
    if not SUITE_RE.fullmatch(suite or ""):
        raise UserError(f"invalid Debian suite {suite!r}", "e.g. bookworm or trixie")
    return suite


def validate_mirror(mirror: str) -> str:
    mirror = (mirror or "").strip().rstrip("/")
    if not re.fullmatch(r"(https?|ftp)://[^\s/]+(/\S*)?|file:///\S*", mirror):
        raise UserError(f"invalid Debian mirror {mirror!r}",
                        "give a URL such as http://deb.debian.org/debian")
    return mirror


# --- commands and log reading (pure) -------------------------------------------------------

def debootstrap_command(rec: Recipe, root: Path, mirror: str,
                        debootstrap: str = "debootstrap") -> list[str]:
    return [debootstrap, "--variant=minbase", f"--include={','.join(rec.packages)}",
            rec.suite, str(root), mirror]


def tar_command(root: Path) -> list[str]:
    """The rootfs as one tar stream, with the rootfs' own uids (not the host's names)."""
    return ["tar", "--numeric-owner", "--one-file-system", "--sort=name", "-C", str(root),
            "-cf", "-", "."]


def failure_from_log(log: str, mirror: str, suite: str, log_path: Path,
                     code: int) -> LkbuildError:
    """Turn debootstrap's output into one error line. Mirror trouble is probed separately."""
    errors = [line[3:].strip() for line in log.splitlines() if line.startswith("E: ")]
    last = errors[-1] if errors else f"exit status {code}"
    missing = re.search(r"Couldn't find these debs: (.+)", log)
    if missing:
        return BuildError(
            f"the suite {suite} on {mirror} lacks packages: {missing.group(1).strip()}",
            f"fix recipes/data/build-image.yaml or pick another --suite; log: {log_path}")
    if "No such script" in log:
        return UserError(f"debootstrap does not know the suite {suite!r}",
                         "give a suite it has a script for, e.g. bookworm")
    if "Failed getting release file" in log:
        return InfraError(f"debootstrap could not get the {suite} release file from the "
                          f"Debian mirror {mirror}", f"log: {log_path}")
    return BuildError(f"debootstrap failed: {last}", f"log: {log_path}")


def explain_failure(log: str, mirror: str, suite: str, log_path: Path,
                    code: int) -> LkbuildError:
    """failure_from_log, sharpened by asking the mirror itself when the release file failed:
    an unreachable mirror and a suite the mirror lacks need different fixes."""
    err = failure_from_log(log, mirror, suite, log_path, code)
    if "Failed getting release file" not in log:
        return err
    probed = probe_mirror(mirror, suite)
    if probed is None:
        return err
    probed.hint = f"{probed.hint}; log: {log_path}" if probed.hint else f"log: {log_path}"
    return probed


def probe_mirror(mirror: str, suite: str, timeout: float = 10) -> LkbuildError | None:
    """Why the suite's Release file cannot be fetched: unreachable mirror, or no such suite."""
    url = f"{mirror}/dists/{suite}/Release"
    method = "HEAD" if url.startswith(("http://", "https://")) else None
    try:
        # S310: file:// and ftp:// mirrors are accepted on purpose (validate_mirror)
        with urllib.request.urlopen(urllib.request.Request(url, method=method),  # noqa: S310
                                    timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return UserError(f"the Debian mirror {mirror} has no suite {suite} "
                         f"(HTTP {exc.code} for {url})", "check --suite and --mirror")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        return InfraError(f"the Debian mirror {mirror} is unreachable: {reason}",
                          "check the network or proxy, or pass --mirror URL")


# --- the rootfs ----------------------------------------------------------------------------

def _clear(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove what is inside `path` (not following symlinks), except names in `keep`."""
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def trim_rootfs(root: Path) -> None:
    """Drop what a build never reads (apt caches and lists, docs, man pages, translations,
    logs, device nodes) and the host's identity that debootstrap copied in."""
    root = Path(root)
    _clear(root / "var/cache/apt")
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    _clear(root / "var/lib/apt/lists")
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for pkg in doc.iterdir():
            if pkg.is_dir() and not pkg.is_symlink():
                _clear(pkg, keep=("copyright",))
    for rel in ("usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/linda",
                "tmp", "var/tmp", "dev"):
        _clear(root / rel)
    _clear(root / "usr/share/locale", keep=("locale.alias",))
    log_dir = root / "var/log"
    if log_dir.is_dir():
        for log in [p for p in log_dir.rglob("*") if p.is_file() or p.is_symlink()]:
            log.unlink()
    for old in [*(root / "var/cache/debconf").glob("*-old"),
                *(root / "var/lib/dpkg").glob("*-old")]:
        old.unlink()
    with contextlib.suppress(FileNotFoundError):
        (root / "var/cache/ldconfig/aux-cache").unlink()
    etc = root / "etc"
    if etc.is_dir():
        for name, text in (("hostname", "localhost\n"), ("resolv.conf", "")):
            target = etc / name
            if target.is_symlink() or target.exists():
                target.unlink()
            target.write_text(text)
    os.chmod(root, 0o755)


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (from /proc/self/mountinfo)."""
    base = os.path.realpath(path)
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a (root-owned) work dir: unmount anything debootstrap left mounted in it first,
    and never descend into a mount that would not go away."""
    if not os.path.lexists(path):
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "--lazy", point], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    left = _mounts_under(path)
    if left:
        ui.warn(f"not removing {path}: still mounted: {', '.join(left)} (unmount, then rm -rf)")
        return
    try:
        shutil.rmtree(path)
    except OSError as exc:
        ui.warn(f"could not remove {path}: {exc.strerror or exc} (remove it by hand)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(tmp: Path) -> None:
    """Remove work dirs of earlier runs that were killed too hard to clean up after
    themselves (their pid is in the name and no longer runs)."""
    if not tmp.is_dir():
        return
    for child in tmp.iterdir():
        match = re.fullmatch(rf"{TMP_PREFIX}(\d+)-.*", child.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            ui.info(f"removing {child}, left behind by an interrupted bootstrap-image")
            remove_tree(child)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so the cleanup still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold off Ctrl-C and SIGTERM while cleaning up, so a second Ctrl-C cannot leave
    half a rootfs behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- the engine ----------------------------------------------------------------------------

def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def image_state(eng: Engine, ref: str) -> tuple[str, dict[str, str]] | None:
    """(image id, labels) of `ref` in the engine, or None when there is no such image."""
    attrs = eng.image(ref)
    if attrs is None:
        return None
    return str(attrs.get("Id", "")), dict((attrs.get("Config") or {}).get("Labels") or {})


def _chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        block = stream.read(size)
        if not block:
            return
        yield block


def parse_import_response(text: str) -> str:
    """The image id from the engine's import answer (JSON lines; errors arrive in-band)."""
    image_id = ""
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("error") or msg.get("errorDetail"):
            detail = msg.get("error") or msg["errorDetail"].get("message", "")
            raise InfraError(f"the engine refused the image import: {detail}")
        status = str(msg.get("status", ""))
        if status.startswith("sha256:"):
            image_id = status
    if not image_id:
        raise InfraError("the engine's image import gave no image id",
                         f"answer was: {' '.join((text or '').split())[:200]}")
    return image_id


def import_rootfs(client: docker.DockerClient, root: Path, rec: Recipe,
                  log: IO[bytes]) -> str:
    """Stream `root` into the engine as an untagged image; return its id. A tar that fails
    midway never becomes an image."""
    proc = subprocess.Popen(tar_command(root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=log)
    image_id = ""
    try:
        assert proc.stdout is not None
        try:
            answer = client.api.import_image_from_stream(_chunks(proc.stdout),
                                                         changes=rec.changes())
        except _ENGINE_ERRORS as exc:
            raise InfraError(f"importing the rootfs into the engine failed: {_short(exc)}") \
                from None
        image_id = parse_import_response(answer if isinstance(answer, str) else str(answer))
        code = proc.wait()
        if code != 0:
            raise BuildError(f"tar of the rootfs failed (exit status {code})",
                             f"log: {getattr(log, 'name', '')}")
        return image_id
    except BaseException:
        if image_id:
            _remove_image(client, image_id)
        raise
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def _remove_image(client: docker.DockerClient, image_id: str) -> bool:
    """Best effort: an image still tagged elsewhere or used by a container stays."""
    try:
        client.images.remove(image_id)
        return True
    except _ENGINE_ERRORS:
        return False


def tag(client: docker.DockerClient, image_id: str, ref: str) -> None:
    repo, tag_ = split_ref(ref)
    try:
        client.api.tag(image_id, repo, tag_, force=True)
    except _ENGINE_ERRORS as exc:
        raise InfraError(f"cannot tag the new image as {ref}: {_short(exc)}") from None


# --- the task ------------------------------------------------------------------------------

def _find_debootstrap() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which("debootstrap", path=path)
    if not found:
        raise InfraError("debootstrap is not installed",
                         "apt-get install debootstrap (Debian/Ubuntu), then run this again")
    return found


def _preflight(tmp: Path, suite: str) -> str:
    if not sys.platform.startswith("linux"):
        raise UserError(
            "bootstrap-image needs a Linux host: debootstrap makes a Linux rootfs with chroot",
            "run it on a Linux host or VM, then move the image with docker save | docker load")
    if os.geteuid() != 0:
        raise UserError(
            "bootstrap-image must run as root: debootstrap creates root-owned files and chroots",
            "run it with sudo, e.g. sudo -E inv bootstrap-image")
    found = _find_debootstrap()
    scripts = Path(os.environ.get("DEBOOTSTRAP_DIR") or "/usr/share/debootstrap") / "scripts"
    if scripts.is_dir() and not (scripts / suite).exists():
        raise UserError(f"debootstrap does not know the suite {suite!r}",
                        f"pick one of the scripts in {scripts}, e.g. bookworm")
    if not DEBIAN_KEYRING.is_file():
        raise InfraError(f"no Debian archive keyring at {DEBIAN_KEYRING} to verify the mirror",
                         "apt-get install debian-archive-keyring")
    tmp.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(tmp).free
    if free < MIN_FREE_BYTES:
        raise InfraError(f"only {free / 1024**3:.1f} GB free under {tmp}",
                         f"bootstrap-image needs {MIN_FREE_BYTES // 1024**3} GB; free some space "
                         "or set cache_dir elsewhere")
    return found


def _check_engine_arch(eng: Engine, host: Arch) -> None:
    """The rootfs is made for the host's arch; an engine of another arch would mislabel it."""
    engine_arch = str(eng.info().get("Architecture") or "")
    if engine_arch and archmod.resolve(engine_arch).name != host.name:
        raise UserError(
            f"the engine ({eng.describe()}) runs on {engine_arch} but this host is {host.name}: "
            "the image would hold binaries the engine cannot run",
            "run bootstrap-image on a host of the engine's arch")


DEBOOTSTRAP_STEPS = {"Retrieving": "retrieving", "Validating": "retrieving",
                     "Extracting": "extracting", "Unpacking": "unpacking",
                     "Configuring": "configuring"}
"""debootstrap's per-package `I:` lines, by the step they belong to."""


class DebootstrapSteps:
    """debootstrap's hundreds of per-package lines as a line per step and a count every 30
    seconds; its warnings and errors, and every other line, as they come."""

    def __init__(self, say: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.clock = clock
        self.step = ""
        self.count = 0
        self.started = clock()
        self.throttle = progress.Throttle(progress.EVERY, clock)

    def feed(self, line: str) -> None:
        word = line[3:].split(" ", 1)[0] if line.startswith("I: ") else ""
        step = DEBOOTSTRAP_STEPS.get(word, "")
        if not step:
            self.say(line)
            return
        if step != self.step:
            self.step, self.count = step, 0
            self.throttle.reset()
            self.say(f"debootstrap: {step} packages")
        self.count += 1
        if self.throttle.due():
            self.say(f"debootstrap: {step}: {self.count} packages, "
                     f"{progress.duration(self.clock() - self.started)} elapsed")


def run_debootstrap(cmd: list[str], log: IO[bytes], env: dict[str, str],
                    verbose: bool = False) -> tuple[int, str]:
    """Run debootstrap, its output to the log and, as steps (every line when verbose), to
    stderr; return (exit code, output)."""
    lines: list[str] = []
    shown = DebootstrapSteps(ui.info)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            log.write(raw)
            log.flush()
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            if verbose:
                ui.info(line)
            else:
                shown.feed(line)
        return proc.wait(), "\n".join(lines)
    finally:
        _stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def bootstrap(settings: Settings, force: bool = False) -> str:
    """Make (or find up to date) the build image `settings.bootstrap_image`; return its ref."""
    ref = validate_ref(settings.bootstrap_image)
    suite = validate_suite(settings.debian_suite)
    mirror = validate_mirror(settings.debian_mirror)
    host = archmod.host()
    rec = recipe(suite, host)

    from . import engine

    eng = engine.connect(settings)
    client = eng.client
    existing = image_state(eng, ref)
    if existing and existing[1].get(LABEL_RECIPE) == rec.digest and not force:
        ui.info(f"{ref} is up to date (recipe {rec.digest[:12]}); --force rebuilds it")
        return ref
    if existing:
        ui.info(f"{ref} exists but " + ("--force was given" if force else
                                       "was made from another recipe") + "; rebuilding it")

    cache = Path(settings.cache_dir)
    tmp = cache / "tmp"
    debootstrap = _preflight(tmp, suite)
    _check_engine_arch(eng, host)
    sweep_stale(tmp)

    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"bootstrap-image-{suite}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive",
               PATH=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))

    work: Path | None = None
    try:
        with _sigterm_as_interrupt(), open(log_path, "wb") as log:
            work = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=tmp))
            root = work / "rootfs"
            cmd = debootstrap_command(rec, root, mirror, debootstrap)
            log.write((" ".join(cmd) + "\n").encode())
            ui.info(f"debootstrap {suite} ({host.name}, {len(rec.packages)} packages) from "
                    f"{mirror}; log: {log_path}")
            started = time.monotonic()
            code, output = run_debootstrap(cmd, log, env, settings.verbose)
            if code != 0:
                raise explain_failure(output, mirror, suite, log_path, code)
            ui.info(f"debootstrap done in {time.monotonic() - started:.0f}s; trimming and "
                    "importing the rootfs")
            trim_rootfs(root)
            image_id = import_rootfs(client, root, rec, log)
            previous = existing[0] if existing else None
            try:
                tag(client, image_id, ref)
            except BaseException:
                if image_id != previous:
                    _remove_image(client, image_id)
                raise
            if previous and previous != image_id and _remove_image(client, previous):
                ui.info(f"removed the replaced image {previous[:19]}")
            ui.info(f"{ref} is {image_id[:19]} (recipe {rec.digest[:12]}) after "
                    f"{time.monotonic() - started:.0f}s")
            return ref
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise InfraError(f"bootstrap-image failed: {exc.strerror or _short(exc)}{where}",
                         f"log: {log_path}") from None
    finally:
        if work is not None:
            with _uninterrupted():
                remove_tree(work)
