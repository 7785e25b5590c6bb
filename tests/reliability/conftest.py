"""What a refused run must leave alone, and the sandbox such a run happens in.

A bad input must cost the user nothing: no file under their dirs or lkbuild's cache created,
changed or removed, no image tagged or untagged, no container left, no process left running.
`snapshot` records all of that before a run and compares it after; `refused` checks the one
error line. Both are meant for any test that makes lkbuild fail on purpose (bad inputs here,
injected faults later).
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.run import Run

BUILD_IMAGE = "lkbuild/build:bookworm"
VERSION = "6.12.54"
ERROR_PREFIX = "lkbuild: error:"
OTHER_SESSIONS = re.compile(r"lkbuild-(test|bench)-[0-9a-z-]+/")
"""Orgs that lkbuild's own integration tests and benchmarks tag under. They may share the
engine with this suite and tag or untag images while a case runs: their changes are not the
case's."""
GOOD_PATCH = """\
--- a/Makefile
+++ b/Makefile
@@ -1,4 +1,4 @@
 VERSION = 6
 PATCHLEVEL = 12
 SUBLEVEL = 54
-EXTRAVERSION =
+EXTRAVERSION = -lk
"""


# --- files -----------------------------------------------------------------------------------

def file_state(roots: Sequence[Path]) -> dict[str, tuple[str, int, int, int]]:
    """Every entry under `roots` by path: kind, size, mtime and mode (lstat, links unfollowed).

    A directory counts by its path and mode only: its mtime moves when a temp file came and
    went inside it, which leaves nothing behind.
    """
    state: dict[str, tuple[str, int, int, int]] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_dir() and not path.is_symlink():
                state[str(path)] = ("dir", 0, 0, st.st_mode)
            else:
                kind = "link" if path.is_symlink() else "file"
                state[str(path)] = (kind, st.st_size, st.st_mtime_ns, st.st_mode)
    return state


# --- the engine ------------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineState:
    """Image IDs with their tags, and every container (stopped ones too) with its image."""

    images: Mapping[str, tuple[str, ...]]
    containers: Mapping[str, tuple[str, str, str]]  # id -> (name, image id, status)


def engine_state(docker_host: str = "") -> EngineState | None:
    """The engine's images and containers (None when no engine answers there)."""
    import docker

    try:
        client = (docker.DockerClient(base_url=docker_host, timeout=30) if docker_host
                  else docker.from_env(timeout=30))
    except docker.errors.DockerException:
        return None
    try:
        images = {i.id: tuple(sorted(i.tags)) for i in client.images.list(all=True)}
        containers = {c.id: (c.name, str(c.attrs.get("Image", "")), c.status)
                      for c in client.containers.list(all=True)}
    except (docker.errors.DockerException, OSError):
        return None
    finally:
        client.close()
    return EngineState(images, containers)


def _foreign(tags: Sequence[str]) -> bool:
    return bool(tags) and all(OTHER_SESSIONS.match(t) for t in tags)


def engine_changes(before: EngineState | None, after: EngineState | None) -> list[str]:
    """What changed in the engine, leaving out what other lkbuild sessions did meanwhile."""
    if before is None and after is None:
        return []
    if before is None or after is None:
        return [f"the engine {'stopped' if after is None else 'started'} answering"]
    out = []
    for image in sorted(set(before.images) | set(after.images)):
        old, new = before.images.get(image), after.images.get(image)
        if old == new:
            continue
        if _foreign(sorted(set(old or ()) ^ set(new or ()))):
            continue
        out.append(f"image {image[:19]}: tags {list(old) if old is not None else 'absent'} -> "
                   f"{list(new) if new is not None else 'absent'}")
    tags_of = {**before.images, **after.images}
    for cid in sorted(set(before.containers) | set(after.containers)):
        old, new = before.containers.get(cid), after.containers.get(cid)
        if old == new:
            continue
        image = (new or old)[1]  # type: ignore[index]
        if _foreign(tags_of.get(image, ())):
            continue
        out.append(f"container {cid[:12]} {(new or old)[0]}: "  # type: ignore[index]
                   f"{old[2] if old else 'absent'} -> {new[2] if new else 'absent'}")
    return out


# --- processes -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    ppid: int
    sid: int
    start: int  # clock ticks after boot: with the pid, one process even when pids are reused
    comm: str
    cmd: str


def processes() -> dict[int, Proc]:
    """Every process now, by pid, from /proc (one that ends while it is read is left out)."""
    out: dict[int, Proc] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        comm_end = text.rfind(")")
        fields = text[comm_end + 2:].split()
        out[int(stat.parent.name)] = Proc(int(fields[1]), int(fields[3]), int(fields[19]),
                                          text[text.find("(") + 1:comm_end], cmd)
    return out


def session_members(sid: int) -> list[str]:
    """Processes still in session `sid` (a run is started as the leader of its own)."""
    return [f"{pid} {p.comm}" for pid, p in processes().items() if p.sid == sid]


# --- the snapshot ----------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Files under some roots plus one or more engines, as they were at one moment."""

    files: dict[str, tuple[str, int, int, int]]
    engines: dict[str, EngineState | None] = field(default_factory=dict)


def take(roots: Sequence[Path], engines: Sequence[str] = ("",)) -> Snapshot:
    """`engines` are DOCKER_HOST values; "" is the one docker.from_env() finds."""
    return Snapshot(file_state(roots), {h: engine_state(h) for h in engines})


def changes(before: Snapshot, after: Snapshot) -> list[str]:
    """Every difference, one line each: what a refused run must not have caused."""
    out = []
    for path in sorted(set(before.files) | set(after.files)):
        old, new = before.files.get(path), after.files.get(path)
        if old == new:
            continue
        if old is None:
            out.append(f"created {path}")
        elif new is None:
            out.append(f"removed {path}")
        else:
            what = [name for name, a, b in zip(("kind", "size", "mtime", "mode"), old, new,
                                               strict=False)
                    if a != b]
            out.append(f"changed {path} ({', '.join(what)})")
    for host in before.engines:
        out += [f"{host or 'engine'}: {line}"
                for line in engine_changes(before.engines[host], after.engines.get(host))]
    return out


@pytest.fixture
def snapshot() -> Callable[..., contextlib.AbstractContextManager[Snapshot]]:
    """`with snapshot(root, ..., engines=(...)):` fails the test if anything changed inside."""

    @contextlib.contextmanager
    def unchanged(*roots: Path, engines: Sequence[str] = ("",)) -> Iterator[Snapshot]:
        before = take(roots, engines)
        yield before
        diff = changes(before, take(roots, engines))
        assert not diff, "the refused run left changes behind:\n  " + "\n  ".join(diff)

    return unchanged


# --- the error line --------------------------------------------------------------------------

def split_hint(line: str) -> tuple[str, str]:
    """`lkbuild: error: MESSAGE (HINT)` -> (MESSAGE, HINT); HINT is "" when there is none."""
    text = line[len(ERROR_PREFIX):].strip()
    if not text.endswith(")"):
        return text, ""
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[index], 0)
        if depth == 0:
            return text[:index].rstrip(), text[index + 1:-1]
    return text, ""


def refused(run: Run, names: Sequence[str], fix: str) -> str:
    """The run failed with exactly one error line naming every value and carrying the fix."""
    everything = run.out + run.err
    assert run.code != 0, f"exit 0 for a bad input:\n{everything[-2000:]}"
    assert "Traceback" not in everything, everything[-3000:]
    assert "internal error" not in everything, everything[-2000:]
    lines = [line for line in run.err.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(lines) == 1, f"{len(lines)} error lines:\n{run.err[-2000:]}"
    line = lines[0]
    message, hint = split_hint(line)
    for name in names:
        assert name in message, f"the error does not name {name!r}: {line}"
    assert hint, f"the error gives no fix: {line}"
    assert fix.lower() in hint.lower(), f"the fix should say {fix!r}: {line}"
    return line


# --- the sandbox -----------------------------------------------------------------------------

def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tarball(path: Path, version: str = VERSION) -> Path:
    """A tiny kernel source tarball: the top-level Makefile is all lkbuild reads of it."""
    major, minor, sub = version.split(".")
    makefile = path.parent / "Makefile"
    makefile.write_text(f"VERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = {sub}\n"
                        "EXTRAVERSION =\n")
    with tarfile.open(path, "w:xz") as tar:
        tar.add(makefile, arcname=f"linux-{version}/Makefile")
    makefile.unlink()
    return path


def make_kernel_tree(root: Path) -> Path:
    """A good kernel dir in linuxkit's layout: one series with both configs and a patch."""
    series = root / "6.12.x"
    (series / "patches").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (series / "build-args").write_text(f"KERNEL_VERSION={VERSION}\nKERNEL_SERIES=6.12.x\n"
                                       f"BUILD_IMAGE={BUILD_IMAGE}\n")
    (series / "config-x86_64").write_text("CONFIG_MODULES=y\n")
    (series / "config-aarch64").write_text("CONFIG_MODULES=y\nCONFIG_ARM64=y\n")
    (series / "patches" / "0001-sublevel.patch").write_text(GOOD_PATCH)
    return root


ENTRY_POINTS = {"lkbuild": ["recipes"], "inv": ["invoke", "--search-root", str(ROOT)]}
"""The two programs that run lkbuild's tasks, as `python -m` arguments."""


@dataclass
class Sandbox:
    """One case's own dirs (home, cache, temp, inputs) and the lkbuild runs made in them."""

    root: Path
    org: str = field(default_factory=lambda: f"lkbuild-reliability-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=closed_port)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for d in (self.home, self.cache, self.tmp, self.work, self.docker_config):
            d.mkdir(parents=True, exist_ok=True)
        make_kernel_tree(self.tree)
        make_tarball(self.tarball)

    home = property(lambda self: self.root / "home")
    cache = property(lambda self: self.root / "cache")
    tmp = property(lambda self: self.root / "tmp")
    work = property(lambda self: self.root / "work")
    docker_config = property(lambda self: self.root / "docker")
    tree = property(lambda self: self.root / "work" / "kernel")
    tarball = property(lambda self: self.root / "work" / f"linux-{VERSION}.tar.xz")

    @property
    def dead_url(self) -> str:
        """An http URL on loopback where nothing answers."""
        return f"http://127.0.0.1:{self.port}"

    def base_env(self, engine: bool) -> dict[str, str]:
        """Nothing of the user's: own home, cache, config, Docker config, temp dir, org.

        Mirrors point at a loopback port nobody listens on, so no case reaches a network. A
        case that must fail before any engine call gets an engine address where no engine
        is: if it reached the engine after all, its error would say so.
        """
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LKBUILD_", "DOCKER_", "XDG_"))}
        env.update({
            "HOME": str(self.home), "TMPDIR": str(self.tmp), "NO_COLOR": "1",
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "DOCKER_CONFIG": str(self.docker_config),
            "LKBUILD_CACHE_DIR": str(self.cache), "LKBUILD_ORG": self.org,
            "LKBUILD_CONFIG": str(self.root / "no-lkbuild.yaml"),
            "LKBUILD_BUILD_IMAGE": BUILD_IMAGE,
            "LKBUILD_KERNEL_MIRROR": f"{self.dead_url}/linux/kernel",
            "LKBUILD_DEBIAN_MIRROR": f"{self.dead_url}/debian",
            # A tripwire: a build that got past every check still stops at the disk check.
            "LKBUILD_MIN_FREE_GB": "1000000",
            "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1",
        })
        if not engine:
            env["DOCKER_HOST"] = f"unix://{self.root / 'no-engine.sock'}"
        return env

    def lkbuild(self, *argv: str, engine: bool = False, env: Mapping[str, str] | None = None,
                timeout: float = 120, entry: str = "lkbuild") -> Run:
        """Run lkbuild as the leader of its own session and check it left no process.

        `entry` is the program a user types: `lkbuild` (the console script) or `inv` (Invoke
        with this checkout's tasks.py)."""
        full = {**self.base_env(engine), **(env or {})}
        proc = subprocess.Popen([sys.executable, "-m", *ENTRY_POINTS[entry], *argv],
                                cwd=self.work,
                                env=full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            raise AssertionError(f"lkbuild {' '.join(argv)} took over {timeout:.0f}s") from None
        left = session_members(proc.pid)
        assert not left, f"lkbuild left processes running: {left}"
        return Run(proc.returncode, out, err)


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)
