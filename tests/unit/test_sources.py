"""Pure logic of recipes.sources: names, URLs, checksum lists, Makefiles and the file index."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from recipes import sources
from recipes.errors import UserError, VerifyError
from recipes.settings import Settings

pytestmark = pytest.mark.unit

A = "a" * 64
B = "b" * 64
C = "0123456789abcdef" * 4

KERNEL_MAKEFILE = """\
# SPDX-License-Identifier: GPL-2.0
VERSION = 6
PATCHLEVEL = 12
SUBLEVEL = 54
EXTRAVERSION = -rc3
NAME = Baby Opossum Posse
"""


def make_tarball(path: Path, makefile: str, top: str = "linux-6.12.54", mode: str = "w:gz") -> Path:
    """A tiny source tarball: `top`/Makefile plus one other file."""
    with tarfile.open(path, mode) as tar:
        for name, text in ((f"{top}/README", "readme\n"), (f"{top}/Makefile", makefile)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# --- names and URLs ---------------------------------------------------------------------------


def test_tarball_name_is_kernel_orgs_file_name():
    assert sources.tarball_name("6.12.54") == "linux-6.12.54.tar.xz"


def test_a_dot_zero_release_is_named_without_its_sublevel():
    assert sources.tarball_name("6.12.0") == "linux-6.12.tar.xz"


@pytest.mark.parametrize("mirror", ["https://mirror.example/pub/linux/kernel",
                                    "https://mirror.example/pub/linux/kernel/"])
def test_mirror_urls_follow_kernel_orgs_layout(mirror):
    assert sources.mirror_urls(mirror, "6.12.54") == (
        "https://mirror.example/pub/linux/kernel/v6.x/linux-6.12.54.tar.xz",
        "https://mirror.example/pub/linux/kernel/v6.x/sha256sums.asc",
    )


def test_mirror_urls_use_the_major_version_directory():
    url, sums = sources.mirror_urls("http://127.0.0.1:1", "5.15.170")
    assert url == "http://127.0.0.1:1/v5.x/linux-5.15.170.tar.xz"
    assert sums == "http://127.0.0.1:1/v5.x/sha256sums.asc"


@pytest.mark.parametrize("version", ["6.12", "v6.12.54", "6.12.54/../../x", ""])
def test_a_malformed_version_builds_no_url(version):
    with pytest.raises(UserError):
        sources.mirror_urls("http://127.0.0.1:1", version)


def test_a_sha256_fragment_pins_the_digest():
    url, pin = sources.split_pin(f"https://h.example/k/linux.tar.xz#sha256={C.upper()}")
    assert url == "https://h.example/k/linux.tar.xz"
    assert pin == C


def test_a_url_without_fragment_pins_nothing():
    assert sources.split_pin("https://h.example/linux.tar.xz") == (
        "https://h.example/linux.tar.xz", None)


@pytest.mark.parametrize("fragment", ["sha256=abc", "md5=" + "a" * 32, "sha256=" + "g" * 64,
                                      "sha256=" + A + "0"])
def test_any_other_fragment_is_refused(fragment):
    with pytest.raises(UserError) as info:
        sources.split_pin(f"https://h.example/linux.tar.xz#{fragment}")
    assert "#sha256=" in info.value.line()


def test_the_checksum_list_is_looked_up_beside_the_tarball():
    assert sources.sums_url_beside("https://h.example/a/b/linux-6.12.54.tar.xz?x=1") == \
        "https://h.example/a/b/sha256sums.asc"


def test_url_file_names_are_decoded_and_empty_names_rejected():
    assert sources.url_file_name("https://h.example/a/linux%206.tar.xz") == "linux 6.tar.xz"
    assert sources.url_file_name("https://h.example/a/") == ""
    assert sources.url_file_name("https://h.example/a/%2E%2E") == ""


@pytest.mark.parametrize("text, expected", [
    ("https://h.example/x", True), ("http://127.0.0.1:8/x", True), ("ftp://h/x", True),
    ("/usr/src/linux.tar.xz", False), ("linux-6.12.tar.xz", False), ("./a:b", False),
])
def test_urls_are_told_from_paths_by_their_scheme(text, expected):
    assert sources.is_url(text) is expected


# --- checksum lists ---------------------------------------------------------------------------


def test_sha256sums_lines_are_read_in_text_and_binary_form():
    text = f"{A}  linux-6.12.54.tar.xz\n{B.upper()} *linux-6.12.53.tar.xz\n"
    assert sources.parse_sha256sums(text) == {
        "linux-6.12.54.tar.xz": A, "linux-6.12.53.tar.xz": B}


def test_lines_that_are_not_checksums_are_ignored():
    text = f"Hash: SHA256\n\n{A[:-1]}  short.tar.xz\n{A}linux.tar.xz\nnot a line\n{B}  ok.tar\n"
    assert sources.parse_sha256sums(text) == {"ok.tar": B}


def test_a_file_listed_twice_with_different_digests_is_refused():
    with pytest.raises(VerifyError) as info:
        sources.parse_sha256sums(f"{A}  linux.tar.xz\n{B}  linux.tar.xz\n", "LIST")
    assert "LIST" in info.value.line() and "linux.tar.xz" in info.value.line()


def test_a_file_listed_twice_with_the_same_digest_is_fine():
    assert sources.parse_sha256sums(f"{A}  x.tar\n{A}  x.tar\n") == {"x.tar": A}


CLEARSIGNED = f"""\
{B}  before-the-message.tar.xz
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

{A}  linux-6.12.54.tar.xz
- -----dash escaped line
-----BEGIN PGP SIGNATURE-----

iHUEARYIAB0WIQSZQrviFSXV1ptQDsfPlzMmZwhKKgUCawVZtQAKCRDPlzMmZwhK
=+qYF
-----END PGP SIGNATURE-----
{C}  appended.tar.xz
"""


def test_only_the_signed_part_of_a_clearsigned_list_is_read():
    body = sources.clearsigned_body(CLEARSIGNED)
    assert body == f"{A}  linux-6.12.54.tar.xz\n-----dash escaped line\n"
    assert sources.parse_sha256sums(body) == {"linux-6.12.54.tar.xz": A}


def test_a_plain_list_is_read_as_it_is():
    text = f"{A}  linux-6.12.54.tar.xz\n"
    assert sources.clearsigned_body(text) == text


# --- Makefiles --------------------------------------------------------------------------------


def test_the_version_comes_from_version_patchlevel_and_sublevel():
    assert sources.makefile_version(KERNEL_MAKEFILE) == "6.12.54"


def test_extraversion_and_comments_do_not_change_the_version():
    text = "# VERSION = 9\nVERSION = 6\nPATCHLEVEL := 1\nSUBLEVEL = 0 # release\n" \
           "EXTRAVERSION = -debian\n"
    assert sources.makefile_version(text) == "6.1.0"


@pytest.mark.parametrize("text", ["", "all:\n\techo hi\n", "VERSION = 6\nPATCHLEVEL = 12\n",
                                  "VERSION = 6\nPATCHLEVEL = x\nSUBLEVEL = 1\n",
                                  "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL =\n"])
def test_a_makefile_without_a_full_version_is_not_a_kernels(text):
    assert sources.makefile_version(text) is None


@pytest.mark.parametrize("name, expected", [
    ("linux-6.12.54/Makefile", True), ("linux-source-6.12/Makefile", True),
    ("./linux/Makefile", True), ("Makefile", True), ("linux/scripts/Makefile", False),
    ("linux/Makefile.orig", False), ("linux/", False),
])
def test_only_the_top_level_makefile_counts(name, expected):
    assert sources.is_top_makefile(name) is expected


# --- keyrings and gpg -------------------------------------------------------------------------


def test_an_armored_keyring_is_turned_back_into_its_packets():
    packets = bytes(range(256)) * 3
    b64 = base64.b64encode(packets).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    text = "\n".join(["-----BEGIN PGP PUBLIC KEY BLOCK-----", "Comment: test", "",
                      *lines, "=abcd", "-----END PGP PUBLIC KEY BLOCK-----", ""])
    assert sources.dearmor(text) == packets
    assert sources.dearmor(text + text) == packets + packets


def test_gpgv_writes_only_the_signed_content_to_a_file():
    cmd = sources.verify_command("/usr/bin/gpgv", Path("/k.gpg"), Path("/h"), Path("/o"))
    assert cmd == ["/usr/bin/gpgv", "--homedir", "/h", "--keyring", "/k.gpg", "--status-fd", "1",
                   "--output", "/o", "-"]


def test_gpg_is_kept_away_from_the_users_own_keyrings():
    cmd = sources.verify_command("/usr/bin/gpg", Path("/k.gpg"), Path("/h"), Path("/o"))
    assert cmd[0] == "/usr/bin/gpg"
    for flag in ("--batch", "--no-default-keyring", "--decrypt"):
        assert flag in cmd
    assert cmd[cmd.index("--homedir") + 1] == "/h"
    assert cmd[cmd.index("--keyring") + 1] == "/k.gpg"
    assert cmd[cmd.index("--output") + 1] == "/o"


# --- the digest and version index ------------------------------------------------------------


def test_digest_is_the_files_sha256(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"kernel" * 1000)
    assert sources.digest(path, tmp_path / "cache") == hashlib.sha256(b"kernel" * 1000).hexdigest()
    index = json.loads((tmp_path / "cache" / sources.INDEX_NAME).read_text())
    assert str(path.resolve()) in index["files"]


def _rewrite_keeping_stat(path: Path, data: bytes) -> None:
    st = path.stat()
    with path.open("r+b") as fh:  # same inode
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_digest_is_remembered_while_size_and_mtime_stay(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"A" * 100)
    first = sources.digest(path, tmp_path)
    _rewrite_keeping_stat(path, b"B" * 100)
    assert sources.digest(path, tmp_path) == first  # answered from the index, not the file


def test_digest_is_recomputed_when_mtime_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"A" * 100)
    first = sources.digest(path, tmp_path)
    _rewrite_keeping_stat(path, b"B" * 100)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert sources.digest(path, tmp_path) == hashlib.sha256(b"B" * 100).hexdigest() != first


def test_digest_is_recomputed_when_size_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"A" * 100)
    sources.digest(path, tmp_path)
    st = path.stat()
    path.write_bytes(b"A" * 101)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sources.digest(path, tmp_path) == hashlib.sha256(b"A" * 101).hexdigest()


def test_a_damaged_index_is_ignored(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"A")
    (tmp_path / sources.INDEX_NAME).write_text("{not json")
    assert sources.digest(path, tmp_path) == hashlib.sha256(b"A").hexdigest()
    assert json.loads((tmp_path / sources.INDEX_NAME).read_text())["schema"] == 1


def test_index_entries_of_vanished_files_are_dropped(tmp_path):
    gone, kept = tmp_path / "gone.bin", tmp_path / "kept.bin"
    gone.write_bytes(b"1")
    kept.write_bytes(b"2")
    sources.digest(gone, tmp_path)
    gone.unlink()
    sources.digest(kept, tmp_path)
    files = json.loads((tmp_path / sources.INDEX_NAME).read_text())["files"]
    assert list(files) == [str(kept.resolve())]


def test_digest_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(UserError) as info:
        sources.digest(tmp_path / "nope.tar.xz", tmp_path)
    assert "nope.tar.xz" in info.value.line()


def test_the_digest_index_lives_in_the_cache_dir_setting_by_default(tmp_path, hermetic):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    sources.digest(path)
    assert (Settings().cache_dir / sources.INDEX_NAME).is_file()
    assert Settings().cache_dir == hermetic / "cache" / "lkbuild"


def test_tarball_version_reads_the_top_makefile_whatever_the_top_dir(tmp_path):
    path = make_tarball(tmp_path / "src.tar.gz", KERNEL_MAKEFILE, top="linux-source-6.12")
    assert sources.tarball_version(path, tmp_path) == "6.12.54"


@pytest.mark.parametrize("mode", ["w", "w:xz"])
def test_tarball_version_reads_plain_and_xz_tarballs(tmp_path, mode):
    path = make_tarball(tmp_path / "src.tar", KERNEL_MAKEFILE, mode=mode)
    assert sources.tarball_version(path, tmp_path) == "6.12.54"


def test_tarball_version_is_remembered_until_mtime_changes(tmp_path):
    path = make_tarball(tmp_path / "src.tar.gz", KERNEL_MAKEFILE)
    assert sources.tarball_version(path, tmp_path) == "6.12.54"
    _rewrite_keeping_stat(path, b"\0" * path.stat().st_size)
    assert sources.tarball_version(path, tmp_path) == "6.12.54"  # from the index
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(UserError) as info:
        sources.tarball_version(path, tmp_path)
    assert "not a kernel source tarball" in info.value.line()


def test_digest_and_version_share_one_index_entry(tmp_path):
    path = make_tarball(tmp_path / "src.tar.gz", KERNEL_MAKEFILE)
    sources.tarball_version(path, tmp_path)
    sources.digest(path, tmp_path)
    entry = json.loads((tmp_path / sources.INDEX_NAME).read_text())["files"][str(path.resolve())]
    assert entry["version"] == "6.12.54"
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_tarball_without_a_kernel_makefile_is_refused(tmp_path):
    path = make_tarball(tmp_path / "src.tar.gz", "all:\n\ttrue\n", top="hello")
    with pytest.raises(UserError) as info:
        sources.tarball_version(path, tmp_path)
    assert "not a kernel source tarball" in info.value.line()


def test_a_file_that_is_not_a_tarball_is_refused(tmp_path):
    path = tmp_path / "notes.tar.xz"
    path.write_text("just some text\n")
    with pytest.raises(UserError) as info:
        sources.tarball_version(path, tmp_path)
    assert "not a kernel source tarball" in info.value.line() and str(path) in info.value.line()


# --- the cache of verified downloads, without any network ------------------------------------


def _settings(cache: Path) -> Settings:
    return Settings(flags={"cache_dir": str(cache), "kernel_mirror": "http://127.0.0.1:9"})


def test_nothing_cached_means_no_cached_sha256(tmp_path):
    assert sources.cached_sha256(_settings(tmp_path), "6.12.54") is None


def test_cached_sha256_is_the_recorded_digest_when_the_file_still_matches(tmp_path):
    target = tmp_path / "sources" / "linux-6.12.54.tar.xz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tarball")
    sha = hashlib.sha256(b"tarball").hexdigest()
    record = {"sha256": sha, "version": "6.12.54", "origin": "u", "signature": "s",
              "keyring": None}
    (target.parent / "linux-6.12.54.tar.xz.verified.json").write_text(json.dumps(record))
    assert sources.cached_sha256(_settings(tmp_path), "6.12.54") == sha
    target.write_bytes(b"tampered")
    assert sources.cached_sha256(_settings(tmp_path), "6.12.54") is None


def test_source_tarball_json_is_plain_strings():
    src = sources.SourceTarball(Path("/c/linux-6.12.54.tar.xz"), A, "6.12.54", "u", "s")
    assert src.as_json() == {"path": "/c/linux-6.12.54.tar.xz", "sha256": A,
                             "version": "6.12.54", "origin": "u", "signature": "s"}
    json.dumps(src.as_json())
