"""Fetching kernel sources against a real HTTP server on 127.0.0.1 and a real OpenPGP key.

The server plays a kernel.org-style mirror (v6.x/linux-<v>.tar.xz + v6.x/sha256sums.asc);
the checksum list is clearsigned by a key made for this module, whose public half is the
keyring lkbuild checks against. Nothing here talks to any other host.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recipes import sources
from recipes.errors import InfraError, UserError, VerifyError
from recipes.settings import Settings
from tests.conftest import ROOT

pytestmark = pytest.mark.ci

VERSION = "6.12.54"
NAME = f"linux-{VERSION}.tar.xz"
TARBALL_PATH = f"/v6.x/{NAME}"
SUMS_PATH = "/v6.x/sha256sums.asc"
DEBIAN_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_tarball(workdir: Path, version: str, top: str | None = None) -> bytes:
    """A real tar.xz made by tar(1): <top>/Makefile with the version, and some bulk."""
    major, minor, sub = version.split(".")
    top = top or f"linux-{version}"
    tree = workdir / f"tree-{version}-{top}"
    (tree / top / "kernel").mkdir(parents=True)
    (tree / top / "Makefile").write_text(
        "# SPDX-License-Identifier: GPL-2.0\n"
        f"VERSION = {major}\nPATCHLEVEL = {minor}\nSUBLEVEL = {sub}\nEXTRAVERSION =\n"
        "NAME = Baby Opossum Posse\n")
    (tree / top / "kernel" / "bulk.bin").write_bytes(os.urandom(96 * 1024))
    out = workdir / f"{top}.tar.xz"
    subprocess.run(["tar", "-C", str(tree), "-cJf", str(out), top], check=True)
    return out.read_bytes()


# --- an OpenPGP signer ------------------------------------------------------------------------


@dataclass
class Signer:
    home: Path
    keyring: Path  # binary export of the trusted key only
    armored: Path  # the same, ASCII-armored

    def gpg(self, *args: str, input: bytes | None = None) -> bytes:
        proc = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", *args],
                              input=input, capture_output=True, check=True, timeout=120)
        return proc.stdout

    def clearsign(self, text: str, uid: str = "signer@lkbuild.invalid") -> bytes:
        return self.gpg("--pinentry-mode", "loopback", "--passphrase", "", "--local-user", uid,
                        "--clearsign", input=text.encode())


@pytest.fixture(scope="module")
def signer() -> Iterator[Signer]:
    """A throwaway signing key (and a stranger's key that the keyring does not hold)."""
    home = Path(tempfile.mkdtemp(prefix="lkgpg-"))  # short: gpg-agent's socket lives here
    s = Signer(home, home / "trusted.gpg", home / "trusted.asc")
    try:
        for uid in ("lkbuild test signer <signer@lkbuild.invalid>",
                    "someone else <stranger@lkbuild.invalid>"):
            s.gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "1d")
        s.keyring.write_bytes(s.gpg("--export", "signer@lkbuild.invalid"))
        s.armored.write_bytes(s.gpg("--armor", "--export", "signer@lkbuild.invalid"))
        assert s.keyring.stat().st_size > 0
        yield s
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("tarballs")
    return {VERSION: build_tarball(work, VERSION), "6.12.53": build_tarball(work, "6.12.53")}


# --- a loopback mirror ------------------------------------------------------------------------


@dataclass
class Site:
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    slow: set[str] = field(default_factory=set)
    short: set[str] = field(default_factory=set)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def settings(self, keyring: Path | None = None) -> Settings:
        flags = {"kernel_mirror": self.url}
        if keyring is not None:
            flags["keyring"] = str(keyring)
        return Settings(flags=flags)


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        site: Site = self.server.site  # type: ignore[attr-defined]
        site.requests.append(self.path)
        body = site.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if self.path in site.short:
                self.wfile.write(body[:len(body) // 2])
            elif self.path in site.slow:
                for i in range(0, len(body), 512):
                    self.wfile.write(body[i:i + 512])
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the loopback mirror go straight to it, whatever proxy the host sets."""
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def signed_sums(signer: Signer, entries: dict[str, bytes]) -> bytes:
    lines = "".join(f"{sha(data)}  {name}\n" for name, data in entries.items())
    return signer.clearsign(f"{'f' * 64}  ChangeLog-6.12.1\n{lines}")


@pytest.fixture
def site(signer: Signer, tarballs: dict[str, bytes]) -> Iterator[Site]:
    good = tarballs[VERSION]
    s = Site({
        TARBALL_PATH: good,
        SUMS_PATH: signed_sums(signer, {NAME: good, "linux-6.12.53.tar.xz": tarballs["6.12.53"]}),
        "/v6.x/linux-6.12.53.tar.xz": tarballs["6.12.53"],
    })
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.site = s  # type: ignore[attr-defined]
    s.server = server
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.stop()
        thread.join(timeout=10)


def cache_files() -> list[Path]:
    root = Settings().cache_dir / "sources"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the mirror -------------------------------------------------------------------------------


def test_a_signed_fetch_lands_in_the_cache_and_says_it_was_verified(site, signer, tarballs):
    src = sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert src.path == Settings().cache_dir / "sources" / NAME
    assert src.path.read_bytes() == tarballs[VERSION]
    assert src.sha256 == sha(tarballs[VERSION])
    assert src.version == VERSION
    assert src.origin == site.url + TARBALL_PATH
    assert src.signature == f"verified with {signer.keyring}"
    assert not [p for p in src.path.parent.iterdir() if p.name.endswith(".part")]
    assert sources.cached_sha256(site.settings(), VERSION) == src.sha256


def test_a_second_fetch_needs_no_network(site, signer):
    first = sources.fetch(site.settings(signer.keyring), VERSION, None)
    settings = site.settings(signer.keyring)
    site.stop()
    again = sources.fetch(settings, VERSION, None)
    assert again == first
    assert sources.cached_sha256(settings, VERSION) == first.sha256


def test_an_armored_keyring_is_accepted(site, signer):
    src = sources.fetch(site.settings(signer.armored), VERSION, None)
    assert src.signature == f"verified with {signer.armored}"


def test_a_corrupted_download_is_refused_and_nothing_is_kept(site, signer, tarballs):
    bad = bytearray(tarballs[VERSION])
    bad[len(bad) // 2] ^= 0xFF
    site.files[TARBALL_PATH] = bytes(bad)
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(signer.keyring), VERSION, None)
    line = info.value.line()
    assert NAME in line and sha(tarballs[VERSION]) in line and sha(bytes(bad)) in line
    assert "\n" not in line
    assert cache_files() == []
    assert sources.cached_sha256(site.settings(), VERSION) is None


def test_a_tampered_checksum_list_fails_its_signature(site, signer, tarballs):
    text = site.files[SUMS_PATH].decode()
    digest = sha(tarballs[VERSION])
    forged = "0" * 64 if digest != "0" * 64 else "1" * 64
    site.files[SUMS_PATH] = text.replace(digest, forged).encode()
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert "bad signature" in info.value.line() and SUMS_PATH in info.value.line()
    assert TARBALL_PATH not in site.requests
    assert cache_files() == []


def test_a_list_signed_by_a_key_outside_the_keyring_is_refused(site, signer, tarballs):
    site.files[SUMS_PATH] = signer.clearsign(f"{sha(tarballs[VERSION])}  {NAME}\n",
                                             uid="stranger@lkbuild.invalid")
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert "bad signature" in info.value.line() and "No public key" in info.value.line()
    assert cache_files() == []


def test_a_list_without_the_tarballs_line_is_refused(site, signer, tarballs):
    site.files[SUMS_PATH] = signed_sums(signer, {"linux-6.12.53.tar.xz": tarballs["6.12.53"]})
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert NAME in info.value.line() and SUMS_PATH in info.value.line()
    assert cache_files() == []


@pytest.mark.parametrize("with_keyring", [True, False])
def test_lines_appended_outside_the_signed_part_are_not_trusted(site, signer, tarballs,
                                                                 with_keyring):
    signed = signed_sums(signer, {"linux-6.12.53.tar.xz": tarballs["6.12.53"]})
    site.files[SUMS_PATH] = signed + f"{sha(tarballs[VERSION])}  {NAME}\n".encode()
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(signer.keyring if with_keyring else None), VERSION, None)
    assert NAME in info.value.line()
    assert cache_files() == []


def test_without_a_keyring_the_sha256_is_checked_and_a_warning_says_how_to_check_more(
        site, tarballs, capsys):
    src = sources.fetch(site.settings(), VERSION, None)
    assert src.sha256 == sha(tarballs[VERSION])
    assert src.signature.startswith("not checked: no keyring")
    err = capsys.readouterr().err
    assert "warning" in err and "not the signature" in err and "LKBUILD_KEYRING" in err
    assert "--keyring" in err


def test_a_missing_keyring_file_is_refused_before_any_download(site, tmp_path):
    with pytest.raises(UserError) as info:
        sources.fetch(site.settings(tmp_path / "nope.gpg"), VERSION, None)
    assert "nope.gpg" in info.value.line()
    assert site.requests == []


def test_setting_a_keyring_later_checks_the_signature_without_downloading_again(site, signer):
    unsigned = sources.fetch(site.settings(), VERSION, None)
    site.requests.clear()
    signed = sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert site.requests == [SUMS_PATH]
    assert signed.sha256 == unsigned.sha256
    assert signed.signature == f"verified with {signer.keyring}"


def test_a_damaged_cached_tarball_is_fetched_again(site, signer, tarballs):
    src = sources.fetch(site.settings(signer.keyring), VERSION, None)
    src.path.write_bytes(b"damaged")
    assert sources.cached_sha256(site.settings(), VERSION) is None
    again = sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert again.path.read_bytes() == tarballs[VERSION]


def test_a_download_cut_short_is_an_infra_error_and_nothing_is_kept(site, signer):
    site.short.add(TARBALL_PATH)
    with pytest.raises(InfraError) as info:
        sources.fetch(site.settings(signer.keyring), VERSION, None)
    assert "broke off" in info.value.line() and TARBALL_PATH in info.value.line()
    assert cache_files() == []


def test_a_mirror_that_is_down_is_one_infra_error_line():
    url = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(flags={"kernel_mirror": url})
    with pytest.raises(InfraError) as info:
        sources.fetch(settings, VERSION, None)
    line = info.value.line()
    assert "\n" not in line and url in line and "LKBUILD_KERNEL_MIRROR" in line
    assert "--source" in line
    assert cache_files() == []


def test_a_missing_release_directory_is_an_infra_error_naming_the_url(site):
    with pytest.raises(InfraError) as info:
        sources.fetch(site.settings(), "5.15.170", None)
    assert f"{site.url}/v5.x/sha256sums.asc" in info.value.line()
    assert "404" in info.value.line()


@pytest.mark.timeout(60)  # a fetch that waited on forever fails here
def test_a_mirror_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(sources, "TIMEOUT", 1.0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)  # connections complete, nobody ever answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(InfraError) as info:
            sources.fetch(Settings(flags={"kernel_mirror": url}), VERSION, None)
    assert "no answer within 1 s" in info.value.line() and url in info.value.line()


# --- URLs -------------------------------------------------------------------------------------


def test_a_url_is_verified_against_the_list_beside_it(site, signer, tarballs):
    url = site.url + TARBALL_PATH
    src = sources.fetch(site.settings(signer.keyring), VERSION, url)
    assert src.origin == url
    assert src.signature == f"verified with {signer.keyring}"
    assert src.path.read_bytes() == tarballs[VERSION]
    assert src.path.is_relative_to(Settings().cache_dir / "sources")


def test_a_url_with_a_pinned_sha256_needs_no_list(site, tarballs):
    site.files["/elsewhere/kernel.tar.xz"] = tarballs[VERSION]
    url = f"{site.url}/elsewhere/kernel.tar.xz#sha256={sha(tarballs[VERSION])}"
    src = sources.fetch(site.settings(), VERSION, url)
    assert src.sha256 == sha(tarballs[VERSION])
    assert "/elsewhere/sha256sums.asc" not in site.requests


def test_a_url_with_a_wrong_pin_is_refused(site, tarballs):
    site.files["/elsewhere/kernel.tar.xz"] = tarballs[VERSION]
    url = f"{site.url}/elsewhere/kernel.tar.xz#sha256={'0' * 64}"
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(), VERSION, url)
    assert "0" * 64 in info.value.line() and sha(tarballs[VERSION]) in info.value.line()
    assert cache_files() == []


def test_a_url_with_neither_list_nor_pin_is_refused(site, tarballs):
    site.files["/elsewhere/kernel.tar.xz"] = tarballs[VERSION]
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(), VERSION, f"{site.url}/elsewhere/kernel.tar.xz")
    assert "#sha256=" in info.value.line()
    assert "/elsewhere/kernel.tar.xz" not in site.requests
    assert cache_files() == []


def test_a_url_holding_another_version_is_refused_naming_both(site, tarballs):
    site.files["/elsewhere/kernel.tar.xz"] = tarballs["6.12.53"]
    url = f"{site.url}/elsewhere/kernel.tar.xz#sha256={sha(tarballs['6.12.53'])}"
    with pytest.raises(VerifyError) as info:
        sources.fetch(site.settings(), VERSION, url)
    assert "6.12.53" in info.value.line() and VERSION in info.value.line()
    assert cache_files() == []


# --- local files ------------------------------------------------------------------------------


def test_a_local_tarball_is_used_in_place(tmp_path, tarballs):
    path = tmp_path / "linux-source-6.12.tar.xz"
    path.write_bytes(build_tarball(tmp_path, VERSION, top="linux-source-6.12"))
    src = sources.fetch(Settings(), VERSION, str(path))
    assert src.path == path and src.origin == str(path)
    assert src.sha256 == sha(path.read_bytes())
    assert src.signature.startswith("not checked: local file")
    assert cache_files() == []


def test_a_local_tarball_of_another_version_is_refused_naming_both(tmp_path, tarballs):
    path = tmp_path / "linux-6.12.53.tar.xz"
    path.write_bytes(tarballs["6.12.53"])
    with pytest.raises(VerifyError) as info:
        sources.fetch(Settings(), VERSION, str(path))
    assert "6.12.53" in info.value.line() and VERSION in info.value.line()
    assert str(path) in info.value.line()


def test_a_local_file_that_is_not_a_tarball_is_refused(tmp_path):
    path = tmp_path / "linux-6.12.54.tar.xz"
    path.write_text("<html>not found</html>\n")
    with pytest.raises(UserError) as info:
        sources.fetch(Settings(), VERSION, str(path))
    assert "not a kernel source tarball" in info.value.line() and str(path) in info.value.line()


@pytest.mark.skipif(not DEBIAN_TARBALL.is_file(),
                    reason=f"{DEBIAN_TARBALL} is absent (apt-get install linux-source-6.12)")
def test_debians_linux_source_tarball_reports_its_real_version():
    makefile = subprocess.run(
        ["tar", "-xOJf", str(DEBIAN_TARBALL), "--wildcards", "--no-wildcards-match-slash",
         "--occurrence=1", "*/Makefile"], capture_output=True, text=True, timeout=300).stdout
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d+)$", makefile, re.M))
    expected = f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields['SUBLEVEL']}"
    assert expected.startswith("6.12.")
    assert sources.tarball_version(DEBIAN_TARBALL) == expected
    assert sources.tarball_version(DEBIAN_TARBALL) == expected  # the second from the index


# --- through the command line ----------------------------------------------------------------


def one_error_line(run, *needles: str) -> str:
    assert run.code != 0
    assert "Traceback" not in run.err
    assert len(run.err_lines) == 1, run.err
    line = run.err_lines[0]
    assert line.startswith("lkbuild: error:")
    for needle in needles:
        assert needle in line
    return line


def test_cli_a_missing_local_file_is_one_line_naming_it(lk):
    run = lk("fetch", "--version", VERSION, "--source", "/nonexistent")
    one_error_line(run, "/nonexistent")
    assert run.code == 2 and run.out == ""


@pytest.mark.parametrize("version", ["6.12", "v6.12.54", "6.12.54; true"])
def test_cli_a_malformed_version_is_one_line(lk, version):
    run = lk("fetch", "--version", version, env={"LKBUILD_KERNEL_MIRROR": "http://127.0.0.1:9"})
    one_error_line(run, "malformed kernel version")
    assert run.code == 2


def test_cli_fetch_prints_the_cached_path_and_json(lk, site, signer, tarballs):
    env = {"LKBUILD_KERNEL_MIRROR": site.url}
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring), env=env)
    assert run.code == 0, run.err
    path = Path(run.out.strip())
    assert path == Settings().cache_dir / "sources" / NAME
    assert path.read_bytes() == tarballs[VERSION]
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring), "--json", env=env)
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data == {"path": str(path), "sha256": sha(tarballs[VERSION]), "version": VERSION,
                    "origin": site.url + TARBALL_PATH,
                    "signature": f"verified with {signer.keyring}"}


def test_cli_a_bad_signature_exits_with_the_verify_code(lk, site, signer):
    site.files[SUMS_PATH] = site.files[SUMS_PATH].replace(b"ChangeLog", b"ChangeLag")
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring),
             env={"LKBUILD_KERNEL_MIRROR": site.url})
    one_error_line(run, "bad signature")
    assert run.code == 4


def test_cli_a_mirror_that_is_down_is_one_line(lk):
    url = f"http://127.0.0.1:{closed_port()}"
    run = lk("fetch", "--version", VERSION, env={"LKBUILD_KERNEL_MIRROR": url})
    one_error_line(run, url, "LKBUILD_KERNEL_MIRROR")
    assert run.code == 3


def test_cli_a_local_file_of_another_version_is_one_line_naming_both(lk, tmp_path, tarballs):
    path = tmp_path / "linux-6.12.53.tar.xz"
    path.write_bytes(tarballs["6.12.53"])
    run = lk("fetch", "--version", VERSION, "--source", str(path))
    one_error_line(run, str(path), "6.12.53", VERSION)
    assert run.code == 4


def test_cli_a_keyring_without_gpg_is_an_infra_error_with_the_fix(lk, site, signer, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring),
             env={"LKBUILD_KERNEL_MIRROR": site.url, "PATH": str(empty)})
    one_error_line(run, "gpgv", "apt-get install gpgv")
    assert run.code == 3
    assert site.requests == []


def test_cli_gpg_alone_verifies_too(lk, site, signer, tmp_path):
    gpg = shutil.which("gpg")
    assert gpg is not None
    only_gpg = tmp_path / "only-gpg"
    only_gpg.mkdir()
    (only_gpg / "gpg").symlink_to(gpg)
    env = {"LKBUILD_KERNEL_MIRROR": site.url, "PATH": str(only_gpg)}
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring), "--json", env=env)
    assert run.code == 0, run.err
    assert json.loads(run.out)["signature"] == f"verified with {signer.keyring}"
    site.files[SUMS_PATH] = site.files[SUMS_PATH].replace(b"ChangeLog", b"ChangeLag")
    shutil.rmtree(Settings().cache_dir / "sources")
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring), env=env)
    one_error_line(run, "bad signature")


def test_cli_gpg_alone_refuses_an_unsigned_openpgp_message(lk, site, signer, tarballs, tmp_path):
    only_gpg = tmp_path / "only-gpg"
    only_gpg.mkdir()
    (only_gpg / "gpg").symlink_to(shutil.which("gpg") or "/usr/bin/gpg")
    text = f"{sha(tarballs[VERSION])}  {NAME}\n".encode()
    site.files[SUMS_PATH] = signer.gpg("--store", "--armor", input=text)  # data, no signature
    run = lk("fetch", "--version", VERSION, "--keyring", str(signer.keyring),
             env={"LKBUILD_KERNEL_MIRROR": site.url, "PATH": str(only_gpg)})
    one_error_line(run, "bad signature")
    assert run.code == 4
    assert cache_files() == []


def test_cli_ctrl_c_during_a_download_leaves_nothing_behind(site, signer):
    site.slow.add(TARBALL_PATH)
    env = dict(os.environ, LKBUILD_KERNEL_MIRROR=site.url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "recipes", "fetch", "--version", VERSION, "--keyring",
         str(signer.keyring)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 60
        part: list[Path] = []
        while not part and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            part = [p for p in cache_files() if p.name.endswith(".part") and p.stat().st_size]
        assert part, "the download never started"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()] == ["lkbuild: interrupted"]
    assert out == ""
    assert cache_files() == []
