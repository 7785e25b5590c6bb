"""The build image recipe: digest, package list, references, rootfs trimming, log reading."""
from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from recipes import arch, buildimage
from recipes.buildimage import recipe_digest
from recipes.errors import BuildError, InfraError, UserError
from recipes.settings import Settings

pytestmark = pytest.mark.unit

AMD64 = arch.resolve("amd64")
ARM64 = arch.resolve("arm64")
PKGS = ["build-essential", "bc", "bison", "flex"]


# --- digest ----------------------------------------------------------------------------------

def test_the_recipe_digest_is_a_stable_sha256():
    first = recipe_digest("bookworm", PKGS, "amd64")
    assert first == recipe_digest("bookworm", list(PKGS), "amd64")
    assert len(first) == 64 and int(first, 16) >= 0


def test_package_order_and_duplicates_do_not_change_the_digest():
    base = recipe_digest("bookworm", PKGS, "amd64")
    assert recipe_digest("bookworm", list(reversed(PKGS)), "amd64") == base
    assert recipe_digest("bookworm", [*PKGS, "bc"], "amd64") == base
    assert recipe_digest("bookworm", tuple(sorted(PKGS)), "amd64") == base


@pytest.mark.parametrize("change", [
    {"packages": [*PKGS, "git"]},
    {"packages": PKGS[:-1]},
    {"packages": [p if p != "bc" else "dc" for p in PKGS]},
    {"suite": "trixie"},
    {"arch": "arm64"},
    {"schema": buildimage.RECIPE_SCHEMA + 1},
])
def test_any_change_to_the_recipe_changes_the_digest(change):
    args = {"suite": "bookworm", "packages": PKGS, "arch": "amd64"}
    base = recipe_digest(**args)
    assert recipe_digest(**{**args, **change}) != base


def test_the_recipe_labels_carry_the_digest_and_the_suite():
    rec = buildimage.recipe("bookworm", AMD64)
    labels = rec.labels()
    assert labels[buildimage.LABEL_RECIPE] == rec.digest
    assert labels[buildimage.LABEL_SUITE] == "bookworm"
    assert labels[buildimage.LABEL_ARCH] == "amd64"
    changes = rec.changes()
    assert f'LABEL org.lkbuild.recipe="{rec.digest}"' in changes
    assert 'LABEL org.lkbuild.suite="bookworm"' in changes
    assert 'CMD ["/bin/bash"]' in changes
    assert any(c.startswith("ENV PATH=/usr/local/sbin:") for c in changes)


def test_the_same_recipe_on_another_host_arch_has_another_digest():
    assert buildimage.recipe("bookworm", AMD64).digest != \
        buildimage.recipe("bookworm", ARM64).digest


# --- package list -----------------------------------------------------------------------------

def test_an_amd64_host_gets_the_arm64_cross_compiler_and_not_its_own():
    pkgs = buildimage.packages(AMD64)
    assert ARM64.cross_package == "gcc-aarch64-linux-gnu"
    assert "gcc-aarch64-linux-gnu" in pkgs and "libc6-dev-arm64-cross" in pkgs
    assert "gcc-x86-64-linux-gnu" not in pkgs and "libc6-dev-amd64-cross" not in pkgs


def test_an_arm64_host_gets_the_amd64_cross_compiler_and_not_its_own():
    pkgs = buildimage.packages(ARM64)
    assert AMD64.cross_package in pkgs and "libc6-dev-amd64-cross" in pkgs
    assert "gcc-aarch64-linux-gnu" not in pkgs and "libc6-dev-arm64-cross" not in pkgs


def test_this_hosts_recipe_has_the_cross_compiler_for_every_other_arch():
    host = arch.host()
    pkgs = buildimage.packages()
    for name in arch.canonical():
        target = arch.resolve(name)
        assert (target.cross_package in pkgs) == (name != host.name)


def test_the_package_list_has_the_kernel_toolchain_sorted_and_unique():
    pkgs = buildimage.packages(AMD64)
    for needed in ("build-essential", "bc", "bison", "flex", "libelf-dev", "libssl-dev",
                   "cpio", "kmod", "xz-utils", "zstd", "perl", "python3", "ccache", "rsync",
                   "busybox-static", "patch"):
        assert needed in pkgs
    assert pkgs == sorted(set(pkgs))
    assert all(buildimage.PACKAGE_RE.fullmatch(p) for p in pkgs)


def test_the_debootstrap_command_is_minbase_with_every_package(tmp_path):
    rec = buildimage.recipe("bookworm", AMD64)
    cmd = buildimage.debootstrap_command(rec, tmp_path / "root", "http://deb.debian.org/debian")
    assert cmd[0] == "debootstrap" and "--variant=minbase" in cmd
    include = next(a for a in cmd if a.startswith("--include="))
    assert include.split("=", 1)[1].split(",") == list(rec.packages)
    assert cmd[-3:] == ["bookworm", str(tmp_path / "root"), "http://deb.debian.org/debian"]


# --- references and inputs --------------------------------------------------------------------

@pytest.mark.parametrize("ref", [
    "lkbuild/build:bookworm", "build", "a/b/c", "localhost:5000/lkbuild/build:v1",
    "registry.example.com/org/img", "my-org/my_img.x:Tag_1.2-rc", "a__b", "x:latest",
])
def test_valid_references_are_accepted_as_given(ref):
    assert buildimage.validate_ref(ref) == ref


@pytest.mark.parametrize("ref", [
    "Bad Ref!", "", "Upper/case", "lkbuild/Build:x", "name:", ":tag", "a//b", "-a", "a-",
    "a:b:c", "img@sha256:" + "0" * 64, "a/b:" + "t" * 129, "x" * 256, "a b", "a/.b",
])
def test_invalid_references_are_a_user_error_with_the_expected_form(ref):
    with pytest.raises(UserError) as info:
        buildimage.validate_ref(ref)
    line = info.value.line()
    assert line.startswith("lkbuild: error: invalid image reference") and "\n" not in line
    assert "[host[:port]/]name[:tag]" in line


@pytest.mark.parametrize("ref,expected", [
    ("lkbuild/build:bookworm", ("lkbuild/build", "bookworm")),
    ("build", ("build", "latest")),
    ("localhost:5000/build", ("localhost:5000/build", "latest")),
    ("localhost:5000/a/build:v2", ("localhost:5000/a/build", "v2")),
])
def test_a_reference_splits_into_repository_and_tag(ref, expected):
    assert buildimage.split_ref(ref) == expected


def test_a_bad_reference_is_refused_before_anything_else_happens(tmp_path):
    settings = Settings(flags={"bootstrap_image": "Bad Ref!",
                               "cache_dir": str(tmp_path / "cache")}, files=[])
    with pytest.raises(UserError):
        buildimage.bootstrap(settings)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("suite", ["", "Bookworm", "bookworm;ls", "../x", "a b"])
def test_bad_suites_are_user_errors(suite):
    with pytest.raises(UserError):
        buildimage.validate_suite(suite)


@pytest.mark.parametrize("mirror,expected", [
    ("http://deb.debian.org/debian/", "http://deb.debian.org/debian"),
    ("https://mirror.example/debian", "https://mirror.example/debian"),
    ("file:///srv/mirror", "file:///srv/mirror"),
])
def test_mirror_urls_are_accepted_without_a_trailing_slash(mirror, expected):
    assert buildimage.validate_mirror(mirror) == expected


@pytest.mark.parametrize("mirror", ["", "deb.debian.org/debian", "http://", "http://a b/c",
                                    "gopher://x/debian"])
def test_bad_mirrors_are_user_errors(mirror):
    with pytest.raises(UserError):
        buildimage.validate_mirror(mirror)


# --- preflight --------------------------------------------------------------------------------

def test_a_non_root_user_is_told_to_use_sudo(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(UserError) as info:
        buildimage._preflight(tmp_path, "bookworm")
    assert "root" in info.value.message and "sudo" in info.value.hint


def test_a_non_linux_host_is_told_to_use_a_linux_host(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(UserError) as info:
        buildimage._preflight(tmp_path, "bookworm")
    assert "Linux" in info.value.message


def test_missing_debootstrap_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(buildimage.shutil, "which", lambda *a, **k: None)
    with pytest.raises(InfraError) as info:
        buildimage._find_debootstrap()
    assert "apt-get install debootstrap" in info.value.hint


# --- reading debootstrap's log ----------------------------------------------------------------

LOG = Path("/cache/logs/bootstrap.log")


def test_missing_packages_name_the_packages_and_the_data_file():
    err = buildimage.failure_from_log(
        "I: Checking component main\nE: Couldn't find these debs: nosuchpkg other\n",
        "http://m/debian", "bookworm", LOG, 1)
    assert isinstance(err, BuildError)
    assert "nosuchpkg other" in err.message and "build-image.yaml" in err.hint
    assert str(LOG) in err.hint


def test_a_release_file_failure_mentions_the_mirror():
    err = buildimage.failure_from_log(
        "I: Retrieving Release\nE: Failed getting release file http://m/debian/dists/x/Release",
        "http://m/debian", "x", LOG, 1)
    assert isinstance(err, InfraError) and "http://m/debian" in err.message


def test_any_other_failure_quotes_the_last_error_and_the_log():
    err = buildimage.failure_from_log(
        "E: first\nW: meh\nE: Failure while configuring base packages.\n",
        "http://m/debian", "bookworm", LOG, 1)
    assert isinstance(err, BuildError)
    assert err.message == "debootstrap failed: Failure while configuring base packages."
    assert err.line().count("\n") == 0 and str(LOG) in err.line()


def test_a_failure_without_error_lines_gives_the_exit_status():
    err = buildimage.failure_from_log("I: something\n", "http://m/debian", "bookworm", LOG, 9)
    assert "exit status 9" in err.message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probing_a_closed_port_says_the_mirror_is_unreachable():
    mirror = f"http://127.0.0.1:{_free_port()}/debian"
    err = buildimage.probe_mirror(mirror, "bookworm", timeout=5)
    assert isinstance(err, InfraError)
    assert mirror in err.message and "unreachable" in err.message


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server over tmp_path that has only dists/bookworm/Release."""
    (tmp_path / "dists/bookworm").mkdir(parents=True)
    (tmp_path / "dists/bookworm/Release").write_text("Suite: stable\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_probing_a_mirror_without_the_suite_says_so(http_mirror):
    err = buildimage.probe_mirror(http_mirror, "trixie", timeout=5)
    assert isinstance(err, UserError)
    assert "has no suite trixie" in err.message and "404" in err.message


def test_probing_a_mirror_with_the_suite_finds_nothing_wrong(http_mirror):
    assert buildimage.probe_mirror(http_mirror, "bookworm", timeout=5) is None


def test_explain_failure_adds_the_log_to_the_probed_cause():
    mirror = f"http://127.0.0.1:{_free_port()}/debian"
    err = buildimage.explain_failure(
        f"E: Failed getting release file {mirror}/dists/bookworm/Release", mirror, "bookworm",
        LOG, 1)
    assert isinstance(err, InfraError) and "unreachable" in err.message
    assert str(LOG) in err.hint and mirror in err.line()


# --- the engine's import answer ---------------------------------------------------------------

def test_the_import_answer_gives_the_image_id():
    answer = json.dumps({"status": "sha256:" + "a" * 64}) + "\r\n"
    assert buildimage.parse_import_response(answer) == "sha256:" + "a" * 64


def test_an_error_in_the_import_answer_is_an_infra_error():
    answer = json.dumps({"errorDetail": {"message": "no space left on device"},
                         "error": "no space left on device"})
    with pytest.raises(InfraError) as info:
        buildimage.parse_import_response(answer)
    assert "no space left on device" in info.value.message


def test_an_import_answer_without_an_id_is_an_infra_error():
    with pytest.raises(InfraError):
        buildimage.parse_import_response('{"status": "Downloading"}\n')


# --- the rootfs on disk -----------------------------------------------------------------------

def _write(root: Path, rel: str, text: str = "x") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_trimming_drops_caches_docs_and_logs_but_keeps_copyrights(tmp_path):
    root = tmp_path / "rootfs"
    keep = [
        "usr/share/doc/gcc-12/copyright", "usr/share/locale/locale.alias",
        "usr/bin/gcc", "var/lib/dpkg/status", "usr/lib/locale/C.utf8/LC_CTYPE",
    ]
    gone = [
        "var/cache/apt/archives/gcc_12_amd64.deb", "var/cache/apt/pkgcache.bin",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "usr/share/doc/gcc-12/changelog.Debian.gz", "usr/share/doc/gcc-12/examples/a.c",
        "usr/share/man/man1/gcc.1.gz", "usr/share/info/gcc.info.gz",
        "usr/share/locale/de/LC_MESSAGES/gcc.mo", "var/log/dpkg.log", "var/log/apt/term.log",
        "var/cache/debconf/config.dat-old", "var/lib/dpkg/status-old",
        "var/cache/ldconfig/aux-cache", "tmp/junk", "dev/null",
    ]
    for rel in keep + gone:
        _write(root, rel)
    _write(root, "etc/hostname", "buildhost\n")
    _write(root, "etc/resolv.conf", "nameserver 10.0.0.1\n")
    (root / "tmp").chmod(0o1777)
    root.chmod(0o700)

    buildimage.trim_rootfs(root)

    for rel in keep:
        assert (root / rel).exists(), rel
    for rel in gone:
        assert not (root / rel).exists(), rel
    assert (root / "var/cache/apt/archives/partial").is_dir()
    assert (root / "var/lib/apt/lists/partial").is_dir()
    assert (root / "var/log/apt").is_dir() and (root / "dev").is_dir()
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert (root / "etc/hostname").read_text() == "localhost\n"
    assert (root / "etc/resolv.conf").read_text() == ""
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_trimming_does_not_follow_symlinks_out_of_the_rootfs(tmp_path):
    outside = tmp_path / "outside"
    _write(outside, "precious")
    root = tmp_path / "rootfs"
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/linked").symlink_to(outside)
    (root / "usr/share").joinpath("man").symlink_to(outside)
    buildimage.trim_rootfs(root)
    assert (outside / "precious").exists()


def test_the_tar_stream_keeps_the_rootfs_uids_and_stays_on_one_filesystem(tmp_path):
    cmd = buildimage.tar_command(tmp_path)
    assert cmd[0] == "tar" and "--numeric-owner" in cmd and "--one-file-system" in cmd
    assert cmd[cmd.index("-C") + 1] == str(tmp_path) and cmd[-1] == "."


def test_stale_work_dirs_of_dead_runs_are_swept_and_others_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{buildimage.TMP_PREFIX}{dead.pid}-abc"
    _write(stale, "rootfs/etc/passwd")
    mine = tmp_path / f"{buildimage.TMP_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    alive = tmp_path / f"{buildimage.TMP_PREFIX}1-ghi"
    alive.mkdir()
    other = tmp_path / "something-else"
    other.mkdir()
    buildimage.sweep_stale(tmp_path)
    assert not stale.exists()
    assert mine.exists() and alive.exists() and other.exists()


def test_removing_a_work_dir_removes_it_whole(tmp_path):
    work = tmp_path / "work"
    _write(work, "rootfs/usr/bin/x")
    (work / "rootfs/link").symlink_to(tmp_path)
    buildimage.remove_tree(work)
    assert not work.exists() and tmp_path.exists()
    buildimage.remove_tree(work)


def test_debootstraps_package_lines_become_a_line_per_step_and_a_count_every_thirty_seconds():
    now = [0.0]
    said: list[str] = []
    steps = buildimage.DebootstrapSteps(said.append, clock=lambda: now[0])
    steps.feed("I: Retrieving InRelease")
    lines = [f"I: {verb} pkg{i}" for verb in ("Retrieving", "Validating") for i in range(40)]
    lines += [f"I: Unpacking pkg{i}..." for i in range(100)]
    lines += ["W: Failure trying to run: chroot x", "I: Configuring pkg1..."]
    for line in lines:
        now[0] += 0.5
        steps.feed(line)
    assert said == ["debootstrap: retrieving packages",
                    "debootstrap: retrieving: 61 packages, 30 s elapsed",
                    "debootstrap: unpacking packages",
                    "debootstrap: unpacking: 61 packages, 1 min elapsed",
                    "W: Failure trying to run: chroot x",
                    "debootstrap: configuring packages"]
