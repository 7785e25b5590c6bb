"""Memory, disk and cpus -> make jobs, and the doctor's checks.

A kernel build fails late and obscurely when the machine is short of something: `-j8` in a
7.75 GiB Docker Desktop VM dies of out-of-memory as "exit code: 2", a full disk shows up as
"input/output error" in BuildKit's database, a credential helper missing from PATH in an SSH
session shows up as a keychain error. These checks say so before a build starts, with the fix.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import engine as enginemod
from .atomic import write_text
from .errors import InfraError, LkbuildError, UserError
from .settings import Settings

GiB = 1024 ** 3
GB = 1000 ** 3

MEMORY_RESERVE = 2 * GiB
MEMORY_PER_JOB = 3 * GiB // 2
"""The jobs model: jobs = (memory - MEMORY_RESERVE) // MEMORY_PER_JOB, within [1, cpus].

Chosen from a measured failure: a 7.75 GiB, 8-cpu Docker Desktop VM ran out of memory with
`make -j8` and finished with `-j3`, peaking under 7 GB, which puts one job at about 1.5 GiB
once 2 GiB is kept back for the engine, BuildKit, the page cache of the source tree and the
single-threaded final link (vmlinux, modpost, BTF). The same figures give 2 + 8 x 1.5 = 14 GiB
for `-j8`, inside the 12-16 GB the same log reports a `-j8` build needing. The model is
deliberately cautious: a build one job slower is better than one killed 20 minutes in.
"""


MiB = 1024 ** 2
MEASURED_RESERVE = GiB
MEASURED_MARGIN = 1.25
MEASURED_STEP = 64 * MiB
MEASURED_FLOOR = 256 * MiB
"""Once a build of the same kernel and config has run, a job costs what it measured: the
largest resident set of any process of that compile (the biggest cc1, or the final link),
with a quarter on top, rounded up to 64 MiB so the figure (a build argument) stays the same
from one build to the next. Counting every job at the largest process is cautious, and 1 GiB
stays back for make, the shell and the page cache of the tree. A rebuild that changed
nothing runs only small processes, so no job counts as less than 256 MiB."""


@dataclass(frozen=True)
class JobModel:
    """Memory kept back and memory per make job: the default, or one measured by a build."""

    reserve: int = MEMORY_RESERVE
    per_job: int = MEMORY_PER_JOB
    peak: int = 0  # the measured largest process, when the model comes from a build

    @classmethod
    def measured(cls, peak: int) -> JobModel:
        steps = -(-int(peak * MEASURED_MARGIN) // MEASURED_STEP)
        return cls(MEASURED_RESERVE, max(MEASURED_FLOOR, steps * MEASURED_STEP), peak)

    def describe(self) -> str:
        if self.peak:
            return (f"{gib(self.per_job)} per job, measured (largest process "
                    f"{self.peak / MiB:.0f} MiB)")
        return f"{gib(self.per_job)} per job (default, until a build measures it)"


DEFAULT_MODEL = JobModel()


def jobs_for(cpus: int, memory_bytes: int, model: JobModel = DEFAULT_MODEL) -> int:
    """Make jobs an engine with these cpus and this much memory can afford (at least 1)."""
    by_memory = (memory_bytes - model.reserve) // model.per_job
    return max(1, min(max(cpus, 1), by_memory))


def memory_needed(jobs: int, model: JobModel = DEFAULT_MODEL) -> int:
    """Bytes of memory `make -j<jobs>` needs under the same model: for "refuse early" messages."""
    return model.reserve + max(jobs, 1) * model.per_job


def _peak_file(cache_dir: Path | str, key: str) -> Path:
    return Path(cache_dir) / "jobs" / f"{key}.json"


def model_for(cache_dir: Path | str, key: str) -> JobModel:
    """The model a build of this kernel and config measured before, else the default."""
    try:
        peak = int(json.loads(_peak_file(cache_dir, key).read_text())["peak_rss"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MODEL
    return JobModel.measured(peak) if peak > 0 else DEFAULT_MODEL


def _measured(cache_dir: Path | str, key: str) -> dict[str, Any]:
    try:
        found = json.loads(_peak_file(cache_dir, key).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def remember_peak(cache_dir: Path | str, key: str, peak: int, jobs: int,
                  disk: int = 0) -> None:
    """Keep the largest peak and disk seen: an incremental rebuild compiles little and must
    not make the next cold build's jobs bolder or its disk check laxer."""
    peak = max(peak, model_for(cache_dir, key).peak)
    disk = max(disk, measured_disk(cache_dir, key))
    if peak > 0 or disk > 0:
        write_text(_peak_file(cache_dir, key),
                   json.dumps({"peak_rss": peak, "jobs": jobs, "disk_bytes": disk}) + "\n")


def measured_disk(cache_dir: Path | str, key: str) -> int:
    """The disk a build of this kernel and config held last time (0: never measured)."""
    value = _measured(cache_dir, key).get("disk_bytes", 0)
    return value if isinstance(value, int) and value > 0 else 0


DISK_MARGIN = 1.25  # over the measured build: the images it makes and a config that grew
IMAGES_BYTES = 2 * GB  # the kernel, -builder and BuildKit's snapshots of them


def disk_needed(settings: Settings, key: str) -> tuple[int, str]:
    """Bytes a build needs free, and where the figure comes from: min_free_gb when the user
    set it, else what this build measured before (with a margin), else the default (also
    for key "": no build in particular)."""
    measured = measured_disk(settings.cache_dir, key) if key else 0
    if settings.source("min_free_gb") != "default" or not measured:
        return settings.min_free_gb * GB, f"{settings.min_free_gb} GB"
    need = int(measured * DISK_MARGIN) + IMAGES_BYTES
    return need, f"about {need / GB:.1f} GB (measured by an earlier build of it)"


def free_bytes(path: Path | str) -> int:
    """Bytes an unprivileged writer can use on the filesystem that holds (or would hold) path."""
    current = Path(path).expanduser().absolute()
    while True:
        try:
            st = os.statvfs(current)
            return st.f_bavail * st.f_frsize
        except OSError:
            if current.parent == current:
                raise InfraError(f"cannot measure free space for {path}") from None
            current = current.parent


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def gb(n: int) -> str:
    return f"{n / GB:.1f} GB"


# --- credential helpers ----------------------------------------------------------------------

MACOS_HELPER_DIRS: tuple[str, ...] = ("/Applications/Docker.app/Contents/Resources/bin",
                                      "~/.docker/bin")
"""Where Docker Desktop installs docker-credential-*: the app bundle and the per-user dir.

An SSH session on macOS gets a PATH without them, and then every pull and push fails with
"error getting credentials ... keychain cannot be accessed".
"""


def credential_helpers(docker_config_dir: Path) -> list[str]:
    """Helper names config.json uses (`credsStore`, then each `credHelpers` value), once each."""
    config = enginemod.read_config(Path(docker_config_dir))
    names: list[str] = []
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        names.append(store)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for value in helpers.values():
            if isinstance(value, str) and value and value not in names:
                names.append(value)
    return names


@dataclass(frozen=True)
class Helper:
    """Where `docker-credential-<name>` is: on PATH, only in a known dir, or nowhere."""

    name: str
    path: Path | None
    on_path: bool

    @property
    def program(self) -> str:
        return f"docker-credential-{self.name}"

    @property
    def fix(self) -> str:
        if self.on_path:
            return ""
        if self.path is not None:
            return f'export PATH="{self.path.parent}:$PATH"'
        return (f"install {self.program} (Docker Desktop ships docker-credential-{self.name}) "
                f"or remove \"credsStore\"/\"credHelpers\" entries naming {self.name!r} "
                "from the Docker config.json")


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_helper(name: str, path_env: str, extra_dirs: Sequence[Path | str] = ()) -> Helper:
    """Look for docker-credential-<name> on path_env, then in extra_dirs (known install dirs)."""
    program = f"docker-credential-{name}"
    found = shutil.which(program, path=path_env)
    if found:
        return Helper(name, Path(found), True)
    for directory in extra_dirs:
        candidate = Path(directory).expanduser() / program
        if _executable(candidate):
            return Helper(name, candidate, False)
    return Helper(name, None, False)


def helper_dirs(docker_config_dir: Path) -> list[Path]:
    """Known install dirs: macOS Docker Desktop's, and bin/ under the Docker config dir."""
    dirs = [Path(d).expanduser() for d in MACOS_HELPER_DIRS]
    dirs.append(Path(docker_config_dir) / "bin")
    seen: list[Path] = []
    for d in dirs:
        if d not in seen:
            seen.append(d)
    return seen


def adopt_helpers(env: MutableMapping[str, str] | None = None) -> list[Path]:
    """Put the dirs of configured credential helpers that are installed but not on PATH (Docker
    Desktop's bin dir, in an SSH session) at the front of PATH, for lkbuild and its children:
    the docker CLI and the SDK's credential store then find them. The dirs added."""
    global _SHELL_PATH
    own = env is None
    env = os.environ if env is None else env
    config_dir = enginemod.docker_config_dir(env)
    try:
        names = credential_helpers(config_dir)
    except UserError:
        return []  # doctor and the first registry call say what is wrong with the file
    added: list[Path] = []
    for name in names:
        h = find_helper(name, env.get("PATH", ""), helper_dirs(config_dir))
        if h.path is not None and not h.on_path and h.path.parent not in added:
            added.append(h.path.parent)
    if added:
        if own and _SHELL_PATH is None:
            _SHELL_PATH = env.get("PATH", "")
        env["PATH"] = os.pathsep.join([str(d) for d in added] + [env.get("PATH", "")])
    return added


_SHELL_PATH: str | None = None
"""PATH as the user's shell had it before adopt_helpers changed it: what doctor judges."""


# --- doctor ----------------------------------------------------------------------------------

Status = str  # "ok" | "warn" | "fail"
SKIPPED = "skipped: engine unreachable"


@dataclass
class Check:
    """One doctor line: what was checked, how it went, and what to do about it."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    blocker: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check_engine(settings: Settings) -> tuple[Check, enginemod.Engine | None]:
    """Engine reachable; a context that does not exist is the user's error and raises."""
    endpoint = enginemod.resolve(settings.context or "", None,
                                 enginemod.context_source(settings))
    data = {"context": endpoint.context, "host": endpoint.host, "source": endpoint.source}
    try:
        eng = enginemod.connect_endpoint(endpoint)
        eng.info()
    except InfraError as exc:
        return Check("engine", "fail", exc.message, exc.hint, True, data), None
    version = eng.server_version
    data["server_version"] = version
    detail = f"{eng.describe()}, Docker {version}" if version else eng.describe()
    return Check("engine", "ok", f"{detail}; from {endpoint.source}", "", True, data), eng


def check_buildx(settings: Settings, eng: enginemod.Engine | None) -> Check:
    fix_install = ("install the buildx plugin: docker-buildx in /usr/libexec/docker/cli-plugins/ "
                   "or ~/.docker/cli-plugins/ (Debian: docker-buildx; macOS: Docker Desktop)")
    if enginemod.docker_cli() is None:
        return Check("buildx", "fail", "the docker CLI is not on PATH",
                     "install the docker CLI (Debian: docker.io; macOS: Docker Desktop)", True)
    version = enginemod.buildx_version(eng)
    if version is None:
        return Check("buildx", "fail", "`docker buildx` is not available", fix_install, True)
    if eng is None:
        return Check("buildx", "warn", f"buildx {version}; builder {SKIPPED}", "", True,
                     {"version": version})
    try:
        facts = enginemod.buildx_inspect(eng, settings.builder_name or "")
    except InfraError as exc:
        return Check("buildx", "fail", f"buildx {version}; {exc.message}", exc.hint, True,
                     {"version": version})
    status = facts.get("status", "")
    detail = (f"buildx {version}, builder {facts['name']} "
              f"({facts.get('driver', '?')} driver, {status or 'status unknown'})")
    data = {"version": version, "builder": facts["name"], "driver": facts.get("driver", ""),
            "status": status, "platforms": facts.get("platforms", "")}
    if status and status not in ("running", "inactive"):
        return Check("buildx", "fail", detail,
                     f"`docker buildx inspect --bootstrap {facts['name']}` or pick another "
                     "builder (setting builder_name)", True, data)
    return Check("buildx", "ok", detail, "", True, data)


def check_memory(settings: Settings, eng: enginemod.Engine | None) -> Check:
    """cpus and memory -> the make jobs lkbuild would use; warn when they will not fit."""
    if eng is None:
        return Check("memory", "warn", SKIPPED)
    cpus, memory = eng.cpus, eng.memory
    model = jobs_for(cpus, memory)
    jobs = settings.jobs or model
    source = settings.source("jobs")
    how = "from setting jobs" if settings.jobs else "memory-limited" if model < cpus else \
        "cpu-limited"
    data = {"cpus": cpus, "memory": memory, "jobs": jobs, "model_jobs": model,
            "memory_needed": memory_needed(jobs)}
    detail = f"{cpus} cpus, {gib(memory)} memory -> make -j{jobs} ({how})"
    where = ("Docker Desktop: Settings > Resources > Memory" if eng.in_vm
             else "the engine's VM or host")
    if memory < memory_needed(1):
        return Check("memory", "warn", f"{detail}; even -j1 needs about {gib(memory_needed(1))}",
                     f"give the engine more memory ({where})", False, data)
    if settings.jobs and memory_needed(jobs) > memory:
        return Check("memory", "warn",
                     f"{detail}; -j{jobs} needs about {gib(memory_needed(jobs))} "
                     f"({source})", f"use --jobs {model} or give the engine more memory ({where})",
                     False, data)
    return Check("memory", "ok", detail, "", False, data)


def _disk_check(name: str, where: str, path: Path | str, min_free_gb: int) -> Check:
    try:
        free = free_bytes(path)
    except InfraError as exc:
        return Check(name, "warn", exc.message, "", False, {"path": str(path)})
    return _disk_verdict(name, where, path, free, min_free_gb)


def _disk_verdict(name: str, where: str, path: Path | str, free: int, min_free_gb: int
                  ) -> Check:
    need = min_free_gb * GB
    data = {"path": str(path), "free": free, "needed": need}
    detail = f"{gb(free)} free in {where} {path} (a kernel build needs {min_free_gb} GB)"
    if free < need:
        fix = ("`docker system prune` (unused images and build cache), or move data-root"
               if name == "disk-engine" else "free space there or set cache_dir elsewhere")
        return Check(name, "fail", detail, fix, True, data)
    return Check(name, "ok", detail, "", True, data)


def probe_image(settings: Settings, eng: enginemod.Engine) -> str:
    """An image already on the engine that a short `df` can run in (never pulled): the build
    image, else the offline one."""
    for image in (settings.build_image, settings.bootstrap_image):
        if image and eng.image_exists(image):
            return str(image)
    return ""


def check_engine_disk(settings: Settings, eng: enginemod.Engine | None) -> Check:
    if eng is None:
        return Check("disk-engine", "warn", SKIPPED, "", True)
    where = f"{'the engine VM' if eng.in_vm else 'another machine'}"
    if eng.data_root_visible():
        return _disk_check("disk-engine", "the engine's data root", eng.data_root,
                           settings.min_free_gb)
    free = eng.data_root_free(probe_image(settings, eng))
    if free is None:
        fix = ("Docker Desktop: Settings > Resources > Disk image size, and free space on the Mac"
               if eng.in_vm else "check free space where the engine keeps its data")
        return Check("disk-engine", "warn",
                     f"cannot be measured from here: {eng.data_root or 'the data root'} is on "
                     f"{where} and no build image is there to measure it with", fix, True,
                     {"path": eng.data_root})
    return _disk_verdict("disk-engine", f"the engine's data root (on {where})", eng.data_root,
                         free, settings.min_free_gb)


DISK_IMAGE_IO = ("a full Mac disk reaches the engine as I/O errors (`metadata_v2.db: "
                 "input/output error`, `tar: Cannot write`), not as a full disk")


@dataclass(frozen=True)
class DiskImage:
    """Docker Desktop's Docker.raw: a sparse file whose size is the VM disk's limit, whose
    allocated blocks are what the VM holds, and which grows into the Mac's free space."""

    path: Path
    limit: int
    allocated: int
    host_free: int

    @classmethod
    def read(cls, path: Path | str | None) -> DiskImage | None:
        if path is None:
            return None
        path = Path(path).expanduser()
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(path, st.st_size, st.st_blocks * 512, free_bytes(path.parent))

    @property
    def growth(self) -> int:
        return max(0, self.limit - self.allocated)


def check_disk_image(settings: Settings, eng: enginemod.Engine | None) -> Check | None:
    """Docker.raw against the Mac's free space; None where there is no Docker Desktop."""
    img = DiskImage.read(settings.desktop_disk_image)
    if img is None:
        if eng is not None and eng.in_vm:
            return Check("disk-image", "warn", f"Docker Desktop's disk image is not at "
                         f"{settings.desktop_disk_image}: the Mac's free space is not checked",
                         "set desktop_disk_image (LKBUILD_DESKTOP_DISK_IMAGE) to the Docker.raw "
                         "under Settings > Resources > Disk image location", False)
        return None
    need = settings.min_free_gb * GB
    data = {"path": str(img.path), "limit": img.limit, "allocated": img.allocated,
            "host_free": img.host_free, "needed": need}
    detail = (f"{img.path.name} holds {gb(img.allocated)} of its {gb(img.limit)} limit; "
              f"{gb(img.host_free)} free on the disk it grows into")
    if img.host_free < need:
        return Check("disk-image", "fail", f"{detail} (a kernel build needs {settings.min_free_gb}"
                     f" GB)", f"free space on the Mac: {DISK_IMAGE_IO}", True, data)
    if img.growth > img.host_free:
        return Check("disk-image", "warn", f"{detail}: it may grow {gb(img.growth)}, more than "
                     "that disk has", "free space on the Mac, or lower Settings > Resources > "
                     f"Disk image size to at most {int((img.allocated + img.host_free) / GB)} GB: "
                     f"{DISK_IMAGE_IO}", False, data)
    return Check("disk-image", "ok", detail, "", False, data)


def check_cache_disk(settings: Settings) -> Check:
    return _disk_check("disk-cache", "the cache dir", settings.cache_dir, settings.min_free_gb)


def check_credentials(env: dict[str, str] | None = None) -> Check:
    """Credential helpers named in the Docker config must run from this shell's PATH."""
    if env is None:
        env = {**os.environ, "PATH": _SHELL_PATH if _SHELL_PATH is not None
               else os.environ.get("PATH", "")}
    env = dict(env)
    config_dir = enginemod.docker_config_dir(env)
    try:
        names = credential_helpers(config_dir)
    except UserError as exc:
        return Check("credentials", "fail", exc.message, exc.hint, True)
    if not names:
        return Check("credentials", "ok", "none configured", "", True, {"helpers": []})
    helpers = [find_helper(n, env.get("PATH", ""), helper_dirs(config_dir)) for n in names]
    data = {"helpers": [{"name": h.name, "path": str(h.path) if h.path else None,
                         "on_path": h.on_path} for h in helpers]}
    parts = []
    for h in helpers:
        if h.on_path:
            parts.append(f"{h.program} at {h.path}")
        elif h.path is not None:
            parts.append(f"{h.program} is not on PATH (found in {h.path.parent}; SSH sessions "
                         "do not get Docker Desktop's PATH)")
        else:
            parts.append(f"{h.program} not found (named in {config_dir / 'config.json'})")
    missing = [h for h in helpers if not h.on_path]
    if missing:
        # Found in a known dir: lkbuild adds it to PATH for itself; docker in this shell
        # still needs the export. Found nowhere: registry logins fail.
        absent = any(h.path is None for h in missing)
        detail = "; ".join(parts) + ("" if absent else "; lkbuild uses it from there")
        return Check("credentials", "fail" if absent else "warn", detail,
                     "; ".join(dict.fromkeys(h.fix for h in missing)), absent, data)
    return Check("credentials", "ok", "; ".join(parts), "", True, data)


SLOW_DRIVERS = {
    "fuse-overlayfs": "BuildKit commits every build step through FUSE: measured here, a no-op "
                      "step on a -builder image is followed by 2.75 s of commit, 1.15 s on the "
                      "build image (docs/benchmarks.md)",
    "vfs": "every build step's snapshot is a full copy of the image's files",
}
"""Storage drivers that make builds slow, and what they cost (the figure is a bench's)."""
OVERLAY_FILESYSTEMS = frozenset({"ext4", "xfs", "btrfs", "tmpfs", "f2fs"})
"""Filesystems overlay2 runs on as the engine's data root."""


def filesystem_of(path: str, mountinfo: str) -> str:
    """The type of the filesystem `path` is on: its longest mount point in /proc's
    mountinfo."""
    best, kind = "", ""
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        after = line.split(" - ", 1)[1].split()
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if after and inside and len(point) >= len(best):
            best, kind = point, after[0]
    return kind


def storage_check(driver: str, data_root: str, filesystem: str) -> Check:
    """Whether the engine's storage driver slows builds, and the fix when one would work."""
    data = {"driver": driver, "data_root": data_root, "filesystem": filesystem}
    if driver not in SLOW_DRIVERS:
        return Check("storage", "ok", f"storage driver {driver or 'unknown'}", "", False, data)
    detail = f"storage driver {driver}: {SLOW_DRIVERS[driver]}"
    if filesystem in OVERLAY_FILESYSTEMS:
        fix = (f"the data root {data_root} is on {filesystem}, where overlay2 works: set "
               '"storage-driver": "overlay2" in /etc/docker/daemon.json and restart the engine '
               "(images stored under the old driver are not carried over: build them again)")
    elif filesystem:
        fix = (f"the data root {data_root} is on {filesystem}, where overlay2 does not run; "
               "a data root on ext4 or xfs would let it")
    else:
        fix = ("overlay2 is faster where the engine's data root is on ext4 or xfs "
               "(\"storage-driver\" in its daemon.json)")
    return Check("storage", "warn", detail, fix, False, data)


def check_storage(eng: enginemod.Engine | None) -> Check:
    if eng is None:
        return Check("storage", "warn", SKIPPED)
    info = eng.info()
    root = str(info.get("DockerRootDir") or "")
    filesystem = ""
    if eng.is_local() and not eng.in_vm and root:
        try:
            filesystem = filesystem_of(root, Path("/proc/self/mountinfo").read_text())
        except OSError:
            filesystem = ""
    return storage_check(str(info.get("Driver") or ""), root, filesystem)


QEMU = ("qemu-system-x86_64", "qemu-system-aarch64")


def check_qemu(path_env: str | None = None) -> Check:
    found = {name: shutil.which(name, path=path_env) for name in QEMU}
    missing = [name for name, where in found.items() if not where]
    data = dict(found)
    if missing:
        fix = ("brew install qemu" if sys.platform == "darwin"
               else "apt-get install qemu-system-x86 qemu-system-arm")
        return Check("qemu", "warn", f"{', '.join(missing)} not on PATH (needed by vmtest)",
                     fix, False, data)
    return Check("qemu", "ok", ", ".join(f"{n} at {w}" for n, w in found.items()), "", False,
                 data)


def doctor(settings: Settings) -> list[Check]:
    """Every preflight check, in the order a user would fix them; never raises for a machine
    problem (only for a user error such as a context that does not exist)."""
    engine_check, eng = check_engine(settings)
    checks = [engine_check]
    later: list[tuple[str, Callable[[], Check | None]]] = [
        ("buildx", lambda: check_buildx(settings, eng)),
        ("memory", lambda: check_memory(settings, eng)),
        ("disk-engine", lambda: check_engine_disk(settings, eng)),
        ("disk-cache", lambda: check_cache_disk(settings)),
        ("disk-image", lambda: check_disk_image(settings, eng)),
        ("storage", lambda: check_storage(eng)),
        ("credentials", check_credentials),
        ("qemu", check_qemu),
    ]
    for name, run in later:
        try:
            check = run()
            if check is not None:
                checks.append(check)
        except UserError:
            raise
        except LkbuildError as exc:
            checks.append(Check(name, "fail", exc.message, exc.hint, True))
    if eng is not None:
        eng.close()
    return checks
