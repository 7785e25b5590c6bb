"""Faults injected into real runs: Ctrl-C in a local and a remote compile, an SSH link cut while
an image comes back, a cache dir on a full filesystem, the engine stopped mid-compile, the
registry killed mid-push, and two builds of one kernel at once.

Every fault is a real event (a signal, a killed process, a small filesystem) against the real
engine, BuildKit, sshd and registry. After each one the run must have said what happened in
one line (`lkbuild: interrupted` and exit 130 for Ctrl-C) and left nothing behind: no process
it started, no temp file, no container, no partial image, no tag moved. Then the same command
is run again and must succeed from the caches the faulted run left (no second unpack, only
the objects not yet compiled, only the blobs not yet sent).

The builds reuse the test run's small amd64 kernel (`small_kernel`) and its cache scope, so
each fault costs an incremental build; only the build host's engine, which starts empty,
compiles the small kernel once from cold (split between the interrupted remote build and its
rerun).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import docker
import pytest
import requests

from tests.integration.daemons import DockerEngine, Link, Registry, SSHServer, Tmpfs, serve_ssh
from tests.integration.kernels import (
    BUILD_IMAGE,
    DEBIAN_SOURCE,
    ROOT,
    SCOPE,
    SESSION,
    image_files,
    labels,
    lkbuild,
    lkbuild_env,
    objects_in,
    one_error_line,
    remove_images,
    small_args,
)
from tests.reliability.conftest import Snapshot, changes, processes, refused, session_members, take
from tests.run import Run

FAULTS = f"lkbuild-faults-{SESSION}"
"""Each test tags under an org of its own below this one (not one of the orgs the snapshot
leaves out as other runs'), so what a faulted run tagged is seen and nothing it finds there
is another test's."""
HOST_KEY = f"faults-{SESSION}"
HOST_SCOPE = {"LKBUILD_CACHE_ID": HOST_KEY}
"""The scope of every build on the second engine: a build dir of these tests' own there, so
the interrupted remote build is cold whatever test_remote built on that engine before."""
CC = re.compile(r"^#\d+ \d+\.\d+ +CC(?: \[M\])? +(\S+)\s*$", re.M)
INTERRUPTED = "lkbuild: interrupted"


def org(kind: str) -> str:
    return f"{FAULTS}-{kind}"


@pytest.fixture(scope="module", autouse=True)
def faults_images() -> Iterator[None]:
    """What the faults' builds tagged here goes when the module ends."""
    yield
    client = docker.from_env()
    prefixes = {t.split("/")[0] for i in client.images.list() for t in i.tags
                if t.startswith(FAULTS)}
    for prefix in sorted(prefixes):
        remove_images(prefix)


# --- processes -------------------------------------------------------------------------------

def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every process below pid: pid -> (start time, command line)."""
    table = processes()
    children: dict[int, list[int]] = {}
    for child, proc in table.items():
        children.setdefault(proc.ppid, []).append(child)
    found: dict[int, tuple[int, str]] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = (table[child].start, table[child].cmd)
            todo.append(child)
    return found


def wait_gone(check: Callable[[], list[str]], timeout: float = 30) -> list[str]:
    """What `check` still finds after up to `timeout` seconds (BuildKit stops a cancelled
    step's processes a moment after buildx has gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = check()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def build_processes(key: str) -> list[str]:
    """Processes of a kernel build with this cache key, wherever they run (compile.sh, make,
    gcc and cc1 name the key's source or build dir in their arguments)."""
    me = os.getpid()
    return [f"{pid} {p.cmd[:120]}" for pid, p in processes().items()
            if key in p.cmd and pid != me]


class Job:
    """lkbuild started in the background as the leader of its own session, its output in
    files (a fault is timed by what it printed) and every process it started recorded while
    it ran, so that whatever outlives it is found."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / f"{name}.out", logs / f"{name}.err"
        self.argv = list(argv)
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "recipes", *argv], cwd=ROOT,
                                         env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        self.seen: dict[int, tuple[int, str]] = {}
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._done.is_set() and self.proc.poll() is None:
            for pid, what in descendants(self.proc.pid).items():
                self.seen.setdefault(pid, what)
            time.sleep(0.1)

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 900, start: int = 0) -> re.Match[str]:
        """The first match of `pattern` in what it printed on stderr (from offset `start`)."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            text = self.err
            found = rx.search(text, start)
            if found:
                return found
            assert self.proc.poll() is None, \
                f"lkbuild ended (exit {self.proc.returncode}) before {pattern!r}:\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout:.0f}s:\n{text[-3000:]}"
            time.sleep(0.05)

    def compiling(self, least: int = 1, quiet: float = 12.0, timeout: float = 900) -> None:
        """Wait until make runs and has compiled `least` objects; a tree with nothing to
        compile counts once make ends or has run `quiet` seconds without a CC line."""
        start = self.wait_for(r"lkbuild: make -j", timeout).end()
        began = time.monotonic()
        while len(CC.findall(self.err, start)) < least:
            if "lkbuild: make took" in self.err[start:]:
                return
            if time.monotonic() - began > quiet and not CC.search(self.err, start):
                return
            assert self.proc.poll() is None, self.err[-3000:]
            time.sleep(0.05)

    def signal(self, sig: int = signal.SIGINT) -> None:
        """What a terminal's Ctrl-C sends lkbuild itself."""
        assert self.proc.poll() is None, f"lkbuild already ended:\n{self.err[-3000:]}"
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 900) -> Run:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            raise AssertionError(f"lkbuild {self.argv[0]} ran over {timeout:.0f}s:\n"
                                 f"{self.err[-3000:]}") from None
        self._done.set()
        self._watcher.join(10)
        return Run(self.proc.returncode, self.out_path.read_text(), self.err)

    def left_running(self, timeout: float = 30) -> list[str]:
        """Processes it started (its session's, and every descendant seen while it ran, such
        as buildx in a session of its own) still alive after it ended."""
        def check() -> list[str]:
            table = processes()
            alive = [f"{pid} {cmd[:120]}" for pid, (start, cmd) in self.seen.items()
                     if pid in table and table[pid].start == start]
            return alive + session_members(self.proc.pid)
        return wait_gone(check, timeout)


def run_env(cache: Path, tmp: Path, org_name: str, **extra: str) -> dict[str, str]:
    """The environment of tests/integration/kernels.py's `lkbuild`, with a temp dir of the
    test's own (so a temp file left behind is seen) and the test's org. Verbose: the faults
    are timed by make's own lines on stderr (a pipe gets the progress lines otherwise)."""
    return lkbuild_env(cache, {"LKBUILD_ORG": org_name, "TMPDIR": str(tmp),
                               "LKBUILD_VERBOSE": "1", **extra})


def run_now(cache: Path, tmp: Path, org_name: str, *argv: str, **extra: str) -> Run:
    """A run in the foreground with the same environment as the faulted one."""
    tmp.mkdir(parents=True, exist_ok=True)
    return lkbuild(cache, *argv, env={"LKBUILD_ORG": org_name, "TMPDIR": str(tmp), **extra})


# --- what a faulted run may leave ------------------------------------------------------------

KEPT = [
    re.compile(r"^(created|changed) \S+/logs(/[^/ ]+\.log)?( \(.*\))?$"),  # the run's log
    # The staged context and its lock are lkbuild's own, restaged by every build of the key.
    re.compile(r"^(created|changed|removed) \S+/context(/[^ ]+)?( \(.*\))?$"),
    re.compile(r"^(created|changed) \S+/tarball-index\.json( \(.*\))?$"),  # digests known
]
MEASURED = re.compile(r"^(created|changed) \S+/(jobs|progress)(/[^/ ]+\.json)?( \(.*\))?$")
"""A finished compile's measured job size and object count, kept for the next build's jobs
and progress estimate."""
TEMP = re.compile(r"\.(tmp|part)\b|/lkbuild-[^/]*$|/incoming-[0-9a-f]+")


def leftovers(before: Snapshot, after: Snapshot, kept: Sequence[re.Pattern[str]] = KEPT
              ) -> list[str]:
    """Every change the snapshot saw but those `kept` allows; a temp file is never allowed."""
    return [line for line in changes(before, after)
            if TEMP.search(line) or not any(k.match(line) for k in kept)]


def nothing_left(before: Snapshot, roots: Sequence[Path], engines: Sequence[str] = ("",),
                 kept: Sequence[re.Pattern[str]] = KEPT) -> None:
    """The files under `roots` and the engines are as `before`, but for what `kept` allows."""
    left = leftovers(before, take(roots, engines), kept)
    assert not left, "left behind:\n  " + "\n  ".join(left)


def compiled(text: str) -> list[str]:
    """The objects a build log shows compiled (the CC lines of make)."""
    return CC.findall(text)


REPAIRED = re.compile(r"lkbuild: the last make in this build dir did not finish; removed "
                      r"(\d+) files? it may have left half-written")


def repaired(log: str) -> int:
    """How many files the rerun removed from the build dir the killed make left (BuildKit ends
    a cancelled step with SIGKILL, so make cannot remove what it was writing); the rerun must
    say it did this."""
    found = REPAIRED.search(log)
    assert found, "the rerun did not check the build dir the killed make left"
    return int(found.group(1))


def assert_interrupted(run: Run) -> None:
    """Ctrl-C's outcome: `lkbuild: interrupted` last, exit 130, no error line, no traceback."""
    everything = run.out + run.err
    assert run.code == 130, everything[-3000:]
    assert run.err.rstrip().endswith(INTERRUPTED), run.err[-2000:]
    assert "Traceback" not in everything and "internal error" not in everything
    assert "lkbuild: error:" not in run.err, run.err[-2000:]
    assert run.out == ""


def layers(image: str) -> list[str]:
    """An image's layer diff IDs: the same content whatever labels and tags it has."""
    return list(docker.from_env().api.inspect_image(image)["RootFS"]["Layers"])


def local_version(name: str) -> str:
    """A release suffix of this run alone: BuildKit's cache on the engine may hold a compile
    of any fixed config from an earlier run, and these tests need one that has not been."""
    return f"-{name}-{SESSION}"


def fragment(tmp: Path, name: str) -> Path:
    """A fragment that moves the release: a real recompile of a few objects and a relink."""
    path = tmp / f"{name}.fragment"
    path.write_text(f'CONFIG_LOCALVERSION="{local_version(name)}"\n')
    return path


# --- 1. Ctrl-C in a local compile -------------------------------------------------------------

@pytest.mark.ci
def test_ctrl_c_in_a_local_compile_leaves_nothing_and_the_rerun_goes_on_where_it_stopped(
        small_kernel, kernel_cache, kver, docker_client, tmp_path):
    """test_kernel_build's test_ctrl_c_during_a_build_leaves_no_build_process_or_image proves
    the exit code, the line and that no compile process or new tag is left. This adds the
    rest: the snapshot (temp files, containers, a tag that was there, every process lkbuild
    started) and the rerun, which must take up the build dir where the interrupt left it."""
    base = small_kernel("amd64")
    name, tmp = org("ctrlc"), tmp_path / "tmp"
    tmp.mkdir()
    # The build dir holds whatever config the test run built in it last (other tests build
    # other configs there): one finished build of the small config with a release fragment
    # first, so the interrupted build is the small recompile it is measured against.
    ready = run_now(kernel_cache, tmp, org("ctrlc-ready"), "buildplainkernel",
                    *small_args(kver, "amd64"), "--fragment",
                    str(fragment(tmp_path, "ctrl-c-ready")), "--json")
    assert ready.code == 0, ready.err[-3000:]
    moving = f"{kver}-amd64"
    docker_client.api.tag(base["image_id"], f"{name}/kernel", moving)  # an earlier build's
    args = ["buildplainkernel", *small_args(kver, "amd64"), "--fragment",
            str(fragment(tmp_path, "ctrl-c")), "--json"]
    before = take([tmp, kernel_cache])
    job = Job("ctrl-c", args, run_env(kernel_cache, tmp, name), tmp_path / "runs")
    job.compiling(least=1)
    job.signal(signal.SIGINT)
    run = job.finish(180)
    assert_interrupted(run)
    assert job.left_running() == []
    assert wait_gone(lambda: build_processes(f"{SCOPE}-{kver}-amd64")) == []
    nothing_left(before, [tmp, kernel_cache])
    assert docker_client.api.inspect_image(f"{name}/kernel:{moving}")["Id"] == base["image_id"]

    again = run_now(kernel_cache, tmp, name, *args)
    assert again.code == 0, again.err[-3000:]
    (result,) = again.json()
    log = Path(result["log"]).read_text()
    assert "lkbuild: unpacking" not in log, "the source tree was unpacked again"
    repaired(log)
    done, redone = set(compiled(run.err)), compiled(log)
    assert len(redone) < 0.15 * objects_in(log), (len(redone), objects_in(log))
    assert len(done & set(redone)) <= 4, f"compiled again: {sorted(done & set(redone))}"
    assert result["release"] == kver + local_version("ctrl-c")
    assert docker_client.api.inspect_image(f"{name}/kernel:{moving}")["Id"] == \
        result["image_id"]


# --- 7. two builds of one kernel at once ------------------------------------------------------

@pytest.mark.ci
def test_two_builds_of_one_kernel_at_once_wait_for_each_other_and_end_with_one_image(
        small_kernel, kernel_cache, kver, docker_client, tmp_path):
    """The same version, arch, config and cache id twice at once, as from two terminals: the
    second says it waits, then finds the first one's compile in BuildKit's cache instead of
    compiling again; both name the same image, which boots."""
    small_kernel("amd64")
    name, tmp = org("twice"), tmp_path / "tmp"
    tmp.mkdir()
    args = ["buildplainkernel", *small_args(kver, "amd64"), "--fragment",
            str(fragment(tmp_path, "twice")), "--json"]
    env = run_env(kernel_cache, tmp, name)
    before = take([tmp, kernel_cache])
    first = Job("first", args, env, tmp_path / "runs")
    first.wait_for(r"^building \S+ on ")  # under the key's lock now
    second = Job("second", args, env, tmp_path / "runs")
    second.wait_for(rf"waiting for another build of {re.escape(kver)} amd64 to finish", 60)
    assert first.proc.poll() is None, "the first build ended before the second waited"
    a, b = first.finish(), second.finish()
    assert a.code == 0, a.err[-3000:]
    assert b.code == 0, b.err[-3000:]
    (ra,), (rb,) = a.json(), b.json()
    assert ra["image_id"] == rb["image_id"] and ra["refs"] == rb["refs"]
    for job in (first, second):
        assert job.left_running() == []
    second_log = Path(rb["log"]).read_text()
    assert compiled(second_log) == [] and "lkbuild: make -j" not in second_log, \
        "the second build compiled again"
    assert "lkbuild: unpacking" not in Path(ra["log"]).read_text()
    # Nothing but the two tags of the one image and the compile's measured job size, and no
    # temp file.
    ours = rf"'{re.escape(name)}/kernel:[^']+'"
    tagged = re.compile(rf"^engine: image {re.escape(ra['image_id'][:19])}: tags absent -> "
                        rf"\[{ours}, {ours}\]$")
    nothing_left(before, [tmp, kernel_cache], kept=[*KEPT, MEASURED, tagged])
    ref = ra["refs"][0]
    assert labels(ref)["org.lkbuild.kernel.release"] == kver + local_version("twice")
    assert f'CONFIG_LOCALVERSION="{local_version("twice")}"'.encode() in \
        image_files(ref)["config"]
    boot = run_now(kernel_cache, tmp, name, "vmtest", "--kernel", ref, "--arch", "amd64",
                   "--json")
    assert boot.code == 0, boot.err[-2000:]
    assert boot.json()["passed"] is True


@pytest.mark.ci
def test_a_build_of_the_other_arch_does_not_wait_for_a_running_one(
        small_kernel, kernel_cache, kver, tmp_path):
    """Only builds of the same kernel share a staged context and its lock: an arm64 build
    started while an amd64 one of the same version runs goes ahead at once. Both are stopped
    with Ctrl-C as soon as that is seen."""
    small_kernel("amd64")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = run_env(kernel_cache, tmp, org("arches"))
    amd64 = Job("amd64", ["buildplainkernel", *small_args(kver, "amd64"), "--force"], env,
                tmp_path / "runs")
    arm64 = None
    try:
        amd64.wait_for(r"^building \S+ on ")
        arm64 = Job("arm64", ["buildplainkernel", *small_args(kver, "arm64")], env,
                    tmp_path / "runs")
        first = arm64.wait_for(r"^(building \S+ on |waiting for another build of )", 120)
        assert amd64.proc.poll() is None, "the amd64 build ended before the arm64 one started"
        assert first.group(0).startswith("building "), \
            f"the arm64 build waited for the amd64 one: {first.group(0)!r}"
    finally:
        for job in (arm64, amd64):  # the waiting one first: it takes the lock the other frees
            if job is not None and job.proc.poll() is None:
                job.signal(signal.SIGINT)
                job.finish(180)


# --- 4. a cache dir on a full filesystem ------------------------------------------------------

@pytest.mark.ci
def test_a_cache_dir_on_a_small_filesystem_is_refused_and_the_rerun_reuses_the_build(
        small_kernel, kver, tmp_path):
    """The cache dir on a 64 MB tmpfs (the real disk has room: only the mount can fail the
    check): the preflight refuses in one line and changes nothing. Once the filesystem has
    room, the same command builds from BuildKit's cache: the small kernel's very layers,
    nothing compiled."""
    base = small_kernel("amd64")
    name, tmp = org("disk"), tmp_path / "tmp"
    tmp.mkdir()
    fs = Tmpfs(tmp_path / "cache", 64)
    fs.start()
    try:
        args = ["build", *small_args(kver, "amd64"), "--json"]
        used = run_now(fs.path, tmp, name, "fetch", "--source", str(DEBIAN_SOURCE))
        assert used.code == 0, used.err[-2000:]  # a cache dir that has served before
        before = take([tmp, fs.path])
        run = run_now(fs.path, tmp, name, *args)
        refused(run, ["the cache dir", str(fs.path), "5 GB"], "free disk space")
        assert re.search(r"only 0\.\d GB free", run.err), run.err[-2000:]
        assert run.out == ""
        assert changes(before, take([tmp, fs.path])) == []
        fs.resize(6 * 1024)  # space freed
        again = run_now(fs.path, tmp, name, *args)
        assert again.code == 0, again.err[-3000:]
        (result,) = again.json()
        # The small kernel's very layers (the labels name this org's refs, so not its image
        # ID): those of its cold build, or of a forced rebuild of it that another test made.
        assert layers(result["image_id"]) in [
            layers(i) for i in [base["image_id"], *base.get("earlier_image_ids", [])]], \
            "BuildKit's cache was not reused"
        log = Path(result["log"]).read_text()
        assert "lkbuild: unpacking" not in log and "lkbuild: make -j" not in log
        assert compiled(log) == []
    finally:
        fs.stop()


# --- 6. the registry killed mid-push ----------------------------------------------------------

def registry_tags(reg: Registry, repo: str) -> dict[str, str]:
    """tag -> manifest digest, as the registry answers (not through lkbuild's client)."""
    got = requests.get(f"http://{reg.host}/v2/{repo}/tags/list", timeout=30)
    if got.status_code == 404:
        return {}
    got.raise_for_status()
    out = {}
    accept = ", ".join(["application/vnd.oci.image.index.v1+json",
                        "application/vnd.oci.image.manifest.v1+json"])
    for tag in got.json().get("tags") or []:
        head = requests.head(f"http://{reg.host}/v2/{repo}/manifests/{tag}",
                             headers={"Accept": accept}, timeout=30)
        head.raise_for_status()
        out[tag] = head.headers["Docker-Content-Digest"]
    return out


def has_blob(reg: Registry, repo: str, digest: str) -> bool:
    return requests.head(f"http://{reg.host}/v2/{repo}/blobs/{digest}",
                         timeout=30).status_code == 200


SENDING = re.compile(r"^sending (sha256:[0-9a-f]{12,64}) \((\d+\.\d) MB\) to", re.M)
"""What push prints before each blob it sends: the digest's start and the size."""
REMEMBERED = re.compile(r"^(created|changed) \S+/push(/configs)?(/[^/ ]+)?( \(.*\))?$")
"""The compressed digests push remembers for every layer it exported (never a temp file)."""


def full_digest(cache: Path, start: str) -> str:
    """The layer digest push printed the start of, from the digests it remembers."""
    known = json.loads((cache / "push" / "layers.json").read_text())
    (digest,) = {v["digest"] for v in known.values() if v["digest"].startswith(start)}
    return str(digest)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of the test's own: one the session shares may hold the -builder layers
    already (another test pushed them), and a push then mounts them instead of sending."""
    reg = Registry(tmp_path / "registry")
    reg.start()
    yield reg
    reg.stop()


@pytest.mark.full
def test_a_registry_killed_mid_push_moves_no_tag_and_the_rerun_sends_only_the_rest(
        small_kernel, kernel_cache, kver, own_registry, docker_client, tmp_path):
    """test_push's test_a_registry_that_went_down_is_one_line stops the registry before the
    push starts. Here it is killed while the -builder image's big layer is on the wire: one
    line, the tags already there (the kernel's and its indexes) unchanged, no -builder tag and
    no partial blob; started again, the same push sends the -builder layers and nothing of
    the kernel's."""
    registry = own_registry
    base = small_kernel("amd64")
    name, tmp = org("push"), tmp_path / "tmp"
    tmp.mkdir()
    kernel_ref, moving, builder_ref, builder_moving = base["refs"]
    builder_id = docker_client.api.inspect_image(builder_ref)["Id"]
    for ref, image_id in ((kernel_ref, base["image_id"]), (moving, base["image_id"])):
        docker_client.api.tag(image_id, f"{name}/kernel", ref.rsplit(":", 1)[1])
    # --from-org: this org's images alone (push would take a -builder from another org)
    args = ["push", "--registry", registry.host, "--version", kver, "--arch", "amd64",
            "--from-org", name, "--json"]
    first = run_now(kernel_cache, tmp, name, *args)  # the kernel alone, pushed before
    assert first.code == 0, first.err[-2000:]
    repo = f"{name}/kernel"
    pushed = registry_tags(registry, repo)
    assert kver in pushed and f"{kver}-amd64" in pushed
    kernel_layers = {d for d, _ in SENDING.findall(first.err)}
    for ref in (builder_ref, builder_moving):
        docker_client.api.tag(builder_id, repo, ref.rsplit(":", 1)[1])

    before = take([tmp, kernel_cache])
    job = Job("push", args, run_env(kernel_cache, tmp, name), tmp_path / "runs")
    big = job.wait_for(r"^sending (sha256:[0-9a-f]{12,64}) \((\d{3,}\.\d) MB\) to", 600)
    registry.kill()
    try:
        run = job.finish(300)
    finally:
        registry.start()
    line = one_error_line(run.err)
    assert run.code == 3 and f"registry {registry.host} is not reachable" in line, line
    assert "internal error" not in run.err and run.out == ""
    assert job.left_running() == []
    nothing_left(before, [tmp, kernel_cache], kept=[*KEPT, REMEMBERED])
    assert registry_tags(registry, repo) == pushed, "a tag moved or a -builder tag appeared"
    in_flight = full_digest(kernel_cache, big.group(1))
    assert not has_blob(registry, repo, in_flight), "a partial blob is in the registry"

    again = run_now(kernel_cache, tmp, name, *args)
    assert again.code == 0, again.err[-3000:]
    sent = [d for d, _ in SENDING.findall(again.err)]
    assert big.group(1) in sent
    assert not set(sent) & kernel_layers, "the kernel's layers were sent again"
    status = {o["ref"].rsplit(":", 1)[1]: o["status"] for o in again.json()}
    assert status[f"{kver}-amd64"] == "unchanged" and status[kver] == "unchanged"
    assert status[f"{kver}-builder-amd64"] == "pushed"
    manifest = requests.get(f"http://{registry.host}/v2/{repo}/manifests/{kver}-builder-amd64",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
                            timeout=30).json()
    assert manifest["config"]["digest"] == builder_id
    assert all(has_blob(registry, repo, layer["digest"]) for layer in manifest["layers"])


# --- the build host: 2, 3 and 5 ---------------------------------------------------------------

@pytest.fixture(scope="module")
def remote_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SSH logins' home: lkbuild's work dir there (blobs, builds, transfers) is ours."""
    return tmp_path_factory.mktemp("remote-home")


@pytest.fixture(scope="module")
def build_host(tmp_path_factory, remote_engine: DockerEngine, remote_home: Path
               ) -> Iterator[SSHServer]:
    """sshd on loopback whose logins use the second engine; the build image is there already
    (sending it is test_remote's subject, and a snapshot would see it arrive)."""
    if remote_engine.docker("image", "inspect", BUILD_IMAGE).returncode != 0:
        remote_engine.load_from_host(BUILD_IMAGE)
    yield from serve_ssh(tmp_path_factory, remote_engine, "faults-sshd",
                         env={"HOME": str(remote_home)})


@pytest.fixture(scope="module")
def slow_host(tmp_path_factory, remote_engine: DockerEngine, remote_home: Path,
              build_host: SSHServer) -> Iterator[SSHServer]:
    """The same host (engine, home, key) across a veth link shaped to 160 Mbit/s, so an image
    coming back streams for seconds and a cut lands in the middle of it."""
    link = Link(f"lkf{SESSION[:6]}", 160, subnet="10.213.11")
    link.start()
    try:
        yield from serve_ssh(tmp_path_factory, remote_engine, "faults-slow-sshd",
                             build_host.identity, netns=link.netns, address=link.there,
                             env={"HOME": str(remote_home)})
    finally:
        link.stop()


@pytest.fixture(scope="module")
def known(tmp_path_factory, build_host: SSHServer) -> Path:
    path = tmp_path_factory.mktemp("faults-ssh") / "known_hosts"
    path.write_text(build_host.known_hosts_line())
    return path


def remote_args(server: SSHServer, known_hosts: Path, kver: str, *extra: str) -> list[str]:
    if server.known_hosts_line() not in known_hosts.read_text():
        with known_hosts.open("a") as fh:
            fh.write(server.known_hosts_line())
    return ["remote-build", "--host", server.host_spec, "--identity", str(server.identity),
            "--known-hosts", str(known_hosts), *small_args(kver, "amd64"), *extra]


def remote_work(home: Path) -> dict[str, list[str]]:
    """What lkbuild keeps in its work dir on the host, by dir (blobs stay by design)."""
    work = home / ".cache" / "lkbuild"
    return {d: sorted(p.name for p in (work / d).iterdir()) if (work / d).is_dir() else []
            for d in ("builds", "transfer")} | \
        {"incoming": sorted(p.name for p in work.glob("incoming-*"))}


REMOTE_KEPT = [
    *KEPT,
    # The host's content-addressed store and lkbuild's work dir there are kept on purpose.
    re.compile(r"^created \S+/remote-home\d*/\.cache(/lkbuild(/blobs(/[0-9a-f]{64})?)?)?$"),
    re.compile(r"^created \S+/remote-home\d*/\.cache/lkbuild/builds$"),
    re.compile(r"^created \S+/remote-home\d*/\.docker(/\S*)?$"),  # the host's docker CLI's
]


def remote_ids(engine: DockerEngine, refs: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for ref in refs:
        got = engine.docker("image", "inspect", "--format", "{{.Id}}", ref)
        out[ref] = got.stdout.strip() if got.returncode == 0 else None
    return out


@pytest.mark.full
def test_ctrl_c_in_a_remote_build_leaves_nothing_there_or_here_and_the_rerun_reuses_the_hosts_tree(
        kernel_cache, kver, remote_engine, build_host, known, remote_home, tmp_path):
    """test_remote's test_ctrl_c_mid_build_leaves_no_remote_process_container_or_build_dir
    proves the exit code, the line, and that no SSH session, remote make, container or build
    dir is left. This adds the snapshot of both sides (temp files here, the host's work dir,
    both engines' images and containers) and the rerun, which must send nothing and take up
    the host's build dir where the interrupt left it."""
    name, tmp = org("remote"), tmp_path / "tmp"
    tmp.mkdir()
    args = remote_args(build_host, known, kver, "--force", "--no-fetch", "--json")
    engines = ("", remote_engine.host)
    before = take([tmp, kernel_cache, remote_home], engines)
    job = Job("remote-ctrl-c", args, run_env(kernel_cache, tmp, name, **HOST_SCOPE),
              tmp_path / "runs")
    job.compiling(least=40)
    job.signal(signal.SIGINT)
    run = job.finish(300)
    assert_interrupted(run)
    assert job.left_running() == []
    assert wait_gone(lambda: [str(p) for p in build_host.session_pids()]) == [], \
        "an SSH session outlived the interrupt"
    assert wait_gone(lambda: build_processes(f"{HOST_KEY}-{kver}-amd64")) == []
    assert remote_engine.docker("ps", "-aq").stdout.strip() == ""
    assert remote_work(remote_home) == {"builds": [], "transfer": [], "incoming": []}
    nothing_left(before, [tmp, kernel_cache, remote_home], engines, REMOTE_KEPT)

    again = run_now(kernel_cache, tmp, name, *args, **HOST_SCOPE)
    assert again.code == 0, again.err[-3000:]
    (row,) = again.json()
    assert row["status"] == "built" and not row["fetched"]
    assert row["sent_bytes"] == 0, "the context was sent again"
    log = Path(row["log"]).read_text()
    assert "lkbuild: unpacking" not in log, "the host unpacked the source again"
    repaired(log)
    done, redone = set(compiled(run.err)), compiled(log)
    assert len(done & set(redone)) <= 4, f"compiled again: {sorted(done & set(redone))}"
    assert remote_work(remote_home) == {"builds": [], "transfer": [], "incoming": []}


@pytest.fixture(scope="module")
def remote_kernel(kernel_cache, kver, remote_engine, build_host, known, tmp_path_factory
                  ) -> dict:
    """The faults' kernel and -builder images on the host (built by the test above when it
    ran first, else here)."""
    tmp = tmp_path_factory.mktemp("remote-kernel")
    run = run_now(kernel_cache, tmp, org("remote"),
                  *remote_args(build_host, known, kver, "--no-fetch", "--json"), **HOST_SCOPE)
    assert run.code == 0, run.err[-3000:]
    (row,) = run.json()
    return row


@pytest.mark.full
def test_an_ssh_link_cut_while_an_image_comes_back_loads_nothing_and_the_rerun_fetches_it(
        small_kernel, kernel_cache, kver, remote_engine, remote_kernel, slow_host, known,
        remote_home, docker_client, tmp_path):
    """test_remote's test_a_connection_cut_mid_transfer_is_one_error_and_loads_nothing cuts
    ssh.fetch_image called in-process. Here `remote-build` itself runs, across a shaped link,
    and the host's sshd sessions are killed by pid while `docker save` of the kernel image
    streams: one line, nothing loaded, the tag that was here not moved, nothing left on the
    host; the rerun finds the images built there and brings them back (the -builder without
    the build image's layers, which are here)."""
    base = small_kernel("amd64")
    name, tmp = org("remote"), tmp_path / "tmp"
    tmp.mkdir()
    refs = remote_kernel["refs"]
    there = remote_ids(remote_engine, refs)
    assert all(there.values()), there
    moving = f"{kver}-amd64"
    docker_client.api.tag(base["image_id"], f"{name}/kernel", moving)  # an older build's here
    for ref in refs:
        if ref.endswith(f":{moving}"):
            continue
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.api.remove_image(ref)
    args = remote_args(slow_host, known, kver, "--json")
    engines = ("", remote_engine.host)
    before = take([tmp, kernel_cache, remote_home], engines)
    job = Job("cut", args, run_env(kernel_cache, tmp, name, **HOST_SCOPE), tmp_path / "runs")
    job.wait_for(r"^fetching \S+ from ", 300)

    def streaming() -> list[int]:
        table = processes()
        return [pid for pid in slow_host.session_pids()
                if pid in table and re.search(r"docker save \S*kernel", table[pid].cmd)]

    deadline = time.monotonic() + 120
    while not streaming():
        assert job.proc.poll() is None and time.monotonic() < deadline, job.err[-3000:]
        time.sleep(0.02)
    time.sleep(1.0)
    assert streaming(), "the image had come back before the cut"
    for pid in slow_host.session_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    run = job.finish(300)
    line = one_error_line(run.err)
    assert run.code == 3 and re.search(r"dropped|was cut|lost", line), line
    assert "internal error" not in run.err and run.out == ""
    assert job.left_running() == []
    assert wait_gone(lambda: [str(p) for p in slow_host.session_pids()]) == []
    for ref in refs:
        if not ref.endswith(f":{moving}"):
            with pytest.raises(docker.errors.ImageNotFound):
                docker_client.api.inspect_image(ref)
    assert docker_client.api.inspect_image(f"{name}/kernel:{moving}")["Id"] == base["image_id"]
    assert remote_work(remote_home)["transfer"] == []
    nothing_left(before, [tmp, kernel_cache, remote_home], engines, REMOTE_KEPT)

    again = run_now(kernel_cache, tmp, name, *args, **HOST_SCOPE)
    assert again.code == 0, again.err[-3000:]
    (row,) = again.json()
    assert row["status"] == "up to date" and row["fetched"] and row["sent_bytes"] == 0
    assert "is up to date on" in again.err and "building " not in again.err
    assert "without the" in again.err, "the -builder came back with the build image's layers"
    for ref in refs:
        assert docker_client.api.inspect_image(ref)["Id"] == there[ref], ref
    assert remote_work(remote_home)["transfer"] == []


# --- 5. the engine stopped mid-compile --------------------------------------------------------

@pytest.mark.full
def test_an_engine_stopped_mid_compile_is_one_error_and_once_it_is_back_the_rerun_reuses_its_tree(
        kernel_cache, kver, remote_engine, remote_kernel, tmp_path):
    """A build against the second engine (DOCKER_HOST at it) whose dockerd gets SIGTERM by pid
    while make runs, as `systemctl stop docker` does: one line, no process, container or tag
    left; started again on the same data root, the same command compiles only what the
    config change needs in the engine's build dir."""
    name, tmp = org("engine"), tmp_path / "tmp"
    tmp.mkdir()
    host = {"DOCKER_HOST": remote_engine.host, **HOST_SCOPE}
    moving = f"{name}/kernel:{kver}-amd64"
    got = remote_engine.docker("tag", remote_kernel["image_id"], moving)
    assert got.returncode == 0, got.stderr
    args = ["buildplainkernel", *small_args(kver, "amd64"), "--fragment",
            str(fragment(tmp_path, "engine")), "--json"]
    engines = (remote_engine.host,)
    before = take([tmp, kernel_cache], engines)
    job = Job("engine-down", args, run_env(kernel_cache, tmp, name, **host), tmp_path / "runs")
    job.compiling(least=1, quiet=8)
    remote_engine.down(signal.SIGTERM)
    try:
        run = job.finish(300)
    finally:
        remote_engine.up()
    line = one_error_line(run.err)
    assert run.code != 0 and "internal error" not in run.err and run.out == "", line
    assert job.left_running() == []
    assert wait_gone(lambda: build_processes(f"{HOST_KEY}-{kver}-amd64")) == []
    assert remote_engine.docker("ps", "-aq").stdout.strip() == ""
    nothing_left(before, [tmp, kernel_cache], engines)
    assert remote_ids(remote_engine, [moving])[moving] == remote_kernel["image_id"]

    again = run_now(kernel_cache, tmp, name, *args, **host)
    assert again.code == 0, again.err[-3000:]
    (result,) = again.json()
    log = Path(result["log"]).read_text()
    assert "lkbuild: unpacking" not in log, "the engine's source tree was unpacked again"
    repaired(log)
    assert len(compiled(log)) < 0.15 * objects_in(log), (len(compiled(log)), objects_in(log))
    assert result["release"] == f"{kver}{local_version('engine')}"
    assert remote_ids(remote_engine, [moving])[moving] == result["image_id"]
