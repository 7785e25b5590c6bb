"""Kernel source tarballs: fetched once, verified, cached.

A kernel build trusts its source tarball completely, so nothing enters the cache unless its
sha256 matched a checksum list (taken only from the signed part when a keyring is set) or a
digest the user pinned in the URL. A download lands in a temp file beside its target and is
renamed into place only after it verified, so a refused or interrupted fetch leaves nothing a
later run could trust.

Local tarballs (`--source FILE`) are used where they are. Hashing a 145 MB .tar.xz and
decompressing it to find its Makefile takes a while, so both answers are remembered in a
small index keyed by the file's path, size, mtime and inode.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import atomic, ui
from .errors import InfraError, UserError, VerifyError
from .series import parse_version
from .settings import Settings

TIMEOUT = 30.0
"""Seconds to wait for a server to connect or send the next bytes."""

CHUNK = 1 << 20
SUMS_NAME = "sha256sums.asc"
SUMS_LIMIT = 32 << 20
"""kernel.org's lists are a few hundred KB; anything far larger is not a checksum list."""
MAKEFILE_LIMIT = 64 << 10
"""The version lines open the kernel's top-level Makefile; no need to read all of it."""
INDEX_NAME = "tarball-index.json"
INDEX_SCHEMA = 1
USER_AGENT = "lkbuild"

NO_KEYRING = "not checked: no keyring set (setting keyring / LKBUILD_KEYRING / --keyring)"
PINNED = "not checked: sha256 pinned in the URL"
LOCAL = "not checked: local file used as given"

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SUM_LINE_RE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
_MAKEFILE_VAR_RE = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL)[ \t]*:?=[ \t]*([^\s#]*)", re.M)
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_PIN_RE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_NUMBER_RE = re.compile(r"[0-9]+")

MIRROR_HINT = ("check LKBUILD_KERNEL_MIRROR (setting kernel_mirror), "
               "or give a local tarball with --source FILE")
URL_HINT = "check the URL, or give a local tarball with --source FILE"
TARBALL_HINT = "give a kernel source tarball (.tar.xz, .tar.gz or .tar) with a top-level Makefile"


@dataclass
class SourceTarball:
    """A kernel source tarball on disk whose digest and version lkbuild has checked."""

    path: Path
    sha256: str
    version: str
    origin: str
    signature: str

    def as_json(self) -> dict[str, str]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


# ---------------------------------------------------------------------------------------------
# Pure helpers: names, URLs and the text formats we read.


def tarball_name(version: str) -> str:
    """kernel.org's file name for a release; x.y.0 is published as linux-x.y.tar.xz."""
    major, minor, sub = parse_version(version)
    return f"linux-{major}.{minor}.tar.xz" if sub == 0 else f"linux-{major}.{minor}.{sub}.tar.xz"


def mirror_urls(mirror: str, version: str) -> tuple[str, str]:
    """The tarball and checksum-list URLs for `version` on a mirror laid out like kernel.org."""
    major = parse_version(version)[0]
    base = f"{mirror.rstrip('/')}/v{major}.x"
    return f"{base}/{tarball_name(version)}", f"{base}/{SUMS_NAME}"


def is_url(source: str) -> bool:
    return bool(_SCHEME_RE.match(source))


def split_pin(url: str) -> tuple[str, str | None]:
    """The URL without its fragment, and the sha256 a `#sha256=<hex>` fragment pins."""
    base, sep, fragment = url.partition("#")
    if not sep:
        return base, None
    match = _PIN_RE.fullmatch(fragment)
    if not match:
        raise UserError(f"unsupported fragment #{fragment} in source URL {base}",
                        "the only fragment understood is #sha256=<64 hex digits>")
    return base, match.group(1).lower()


def url_file_name(url: str) -> str:
    """The last path segment of a URL, decoded; empty when there is none."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    return "" if name in ("", ".", "..") or "/" in name or "\0" in name else name


def sums_url_beside(url: str) -> str:
    """The sha256sums.asc in the same directory as `url`, as kernel.org publishes them."""
    parts = urllib.parse.urlsplit(url)
    directory = parts.path.rsplit("/", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"{directory}/{SUMS_NAME}",
                                    "", ""))


def clearsigned_body(text: str) -> str:
    """The signed text of a clearsigned message, dash-escaping undone; other text unchanged.

    Used when no keyring is set, so the same lines count whether or not the signature is
    checked: anything outside the signed part is ignored either way.
    """
    lines = text.splitlines()
    stripped = [line.rstrip() for line in lines]
    try:
        start = stripped.index("-----BEGIN PGP SIGNED MESSAGE-----")
    except ValueError:
        return text
    index = start + 1
    while index < len(lines) and stripped[index]:
        index += 1  # armor headers such as "Hash: SHA256"
    body = []
    for line, bare in zip(lines[index + 1:], stripped[index + 1:], strict=True):
        if bare == "-----BEGIN PGP SIGNATURE-----":
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "".join(f"{line}\n" for line in body)


def parse_sha256sums(text: str, where: str = "the checksum list") -> dict[str, str]:
    """`<sha256>  <file>` lines (sha256sum's format) as {file: sha256}; other lines ignored.

    A file listed twice with different digests makes the list worthless for it: refused.
    """
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUM_LINE_RE.fullmatch(line.strip())
        if not match:
            continue
        value, name = match.group(1).lower(), match.group(2).strip()
        if sums.get(name, value) != value:
            raise VerifyError(f"{where} lists {name} twice with different sha256",
                              "the list is inconsistent; use another mirror or --source FILE")
        sums[name] = value
    return sums


def makefile_version(text: str) -> str | None:
    """VERSION.PATCHLEVEL.SUBLEVEL from a kernel's top-level Makefile (EXTRAVERSION ignored)."""
    found: dict[str, str] = {}
    for match in _MAKEFILE_VAR_RE.finditer(text):
        found.setdefault(match.group(1), match.group(2))
    parts = [found.get(key, "") for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL")]
    if not all(_NUMBER_RE.fullmatch(part) for part in parts):
        return None
    return ".".join(str(int(part)) for part in parts)


def is_top_makefile(member_name: str) -> bool:
    """True for `Makefile` or `<any top dir>/Makefile` inside a tarball."""
    name = member_name
    while name.startswith("./"):
        name = name[2:]
    parts = PurePosixPath(name.lstrip("/")).parts
    return 1 <= len(parts) <= 2 and parts[-1] == "Makefile"


def dearmor(text: str) -> bytes:
    """The binary packets of ASCII-armored OpenPGP blocks (gpgv reads only binary keyrings)."""
    out = bytearray()
    inside = in_headers = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("-----BEGIN PGP "):
            inside = in_headers = True
            continue
        if not inside:
            continue
        if line.startswith("-----END PGP "):
            inside = False
            continue
        if in_headers:
            if not line:
                in_headers = False
            elif ":" not in line:
                in_headers = False  # armor without headers or blank line
                out += base64.b64decode(line, validate=True)
            continue
        if line.startswith("=") or not line:
            continue  # CRC24 line
        out += base64.b64decode(line, validate=True)
    return bytes(out)


def verify_command(tool: str, keyring: Path, home: Path, output: Path) -> list[str]:
    """Check a signed message on stdin with gpgv (or gpg), writing only the signed content."""
    if Path(tool).name.startswith("gpgv"):
        return [tool, "--homedir", str(home), "--keyring", str(keyring), "--status-fd", "1",
                "--output", str(output), "-"]
    return [tool, "--batch", "--no-options", "--homedir", str(home), "--no-default-keyring",
            "--keyring", str(keyring), "--trust-model", "always", "--status-fd", "1",
            "--output", str(output), "--decrypt", "-"]


# ---------------------------------------------------------------------------------------------
# The digest/version index for files that are read more than once.


def _default_cache_dir() -> Path:
    return Path(Settings().cache_dir)


def _identity(path: Path) -> tuple[str, dict[str, int]]:
    st = path.stat()
    return str(path.resolve()), {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                 "ino": st.st_ino}


def _load_index(cache_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((cache_dir / INDEX_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != INDEX_SCHEMA:
        return {}
    files = data.get("files")
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) \
        else {}


def _lookup(cache_dir: Path, path: Path, field: str) -> str | None:
    key, ident = _identity(path)
    entry = _load_index(cache_dir).get(key)
    if entry is None or any(entry.get(k) != v for k, v in ident.items()):
        return None
    value = entry.get(field)
    return value if isinstance(value, str) else None


def _remember(cache_dir: Path, path: Path, **facts: str) -> None:
    """Record facts about `path` as it is now; entries for changed or gone files are dropped."""
    key, ident = _identity(path)
    files = _load_index(cache_dir)
    entry = files.get(key, {})
    if any(entry.get(k) != v for k, v in ident.items()):
        entry = {}
    files[key] = {**entry, **facts, **ident}
    kept = {}
    for name, item in files.items():
        try:
            st = os.stat(name)
        except OSError:
            continue
        if (item.get("size"), item.get("mtime_ns"), item.get("ino")) == \
                (st.st_size, st.st_mtime_ns, st.st_ino):
            kept[name] = item
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(cache_dir / INDEX_NAME, json.dumps(
            {"schema": INDEX_SCHEMA, "files": kept}, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # only a speed-up: the next call computes the answer again


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def _remembered(path: Path | str, cache_dir: Path | None, field: str,
                compute: Callable[[Path], str]) -> str:
    """`compute(path)`, remembered by (path, size, mtime, inode) so a big tarball is read once."""
    path = Path(path)
    cache_dir = _default_cache_dir() if cache_dir is None else cache_dir
    try:
        known = _lookup(cache_dir, path, field)
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if known is not None:
        return known
    value = compute(path)
    _remember(cache_dir, path, **{field: value})
    return value


def digest(path: Path | str, cache_dir: Path | None = None) -> str:
    """sha256 of a file (remembered; `cache_dir` defaults to the setting cache_dir)."""
    return _remembered(path, cache_dir, "sha256", hash_file)


def _read_tarball_version(path: Path) -> str:
    """Stream the tarball until its top-level Makefile and read the version from it."""
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not (member.isfile() and is_top_makefile(member.name)):
                    continue
                fh = tar.extractfile(member)
                if fh is None:
                    continue
                text = fh.read(MAKEFILE_LIMIT).decode("utf-8", errors="replace")
                found = makefile_version(text)
                if found is not None:
                    return found
    except PermissionError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{path} is not a kernel source tarball ({why})", TARBALL_HINT) from None
    raise UserError(f"{path} is not a kernel source tarball (no top-level Makefile with "
                    "VERSION, PATCHLEVEL and SUBLEVEL)", TARBALL_HINT)


def tarball_version(path: Path | str, cache_dir: Path | None = None) -> str:
    """Kernel version inside a source tarball, from its Makefile (remembered like `digest`)."""
    return _remembered(path, cache_dir, "version", _read_tarball_version)


# ---------------------------------------------------------------------------------------------
# The network.


def _reason(exc: BaseException) -> str:
    """A short, one-line cause for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}".strip()
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return " ".join(str(exc.reason).split())
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def _open(url: str, hint: str, missing: VerifyError | None = None) -> http.client.HTTPResponse:
    """GET `url`; every way of not getting it is one InfraError naming the URL and the fix."""
    request = urllib.request.Request(  # noqa: S310 (http/https only)
        url, headers={"User-Agent": USER_AGENT})
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(  # noqa: S310 (as above)
            request, timeout=TIMEOUT)
        return response
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404 and missing is not None:
            raise missing from None
        raise InfraError(f"cannot fetch {url}: {_reason(exc)}", hint) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise InfraError(f"cannot fetch {url}: {_reason(exc)}", hint) from None


def _read_small(url: str, hint: str, missing: VerifyError | None = None) -> bytes:
    with _open(url, hint, missing) as response:
        try:
            data = response.read(SUMS_LIMIT + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise InfraError(f"download of {url} broke off: {_reason(exc)}", hint) from None
    if len(data) > SUMS_LIMIT:
        raise VerifyError(f"{url} is larger than {SUMS_LIMIT >> 20} MB: not a checksum list",
                          hint)
    return data


def _download(url: str, dest: Path, hint: str) -> str:
    """Stream `url` into `dest`, returning the sha256 of what arrived."""
    h = hashlib.sha256()
    received = 0
    with _open(url, hint) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with dest.open("wb") as fh, \
                ui.transfer(f"downloading {url_file_name(url) or url}", total) as moved:
            while True:
                try:
                    chunk = response.read1(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise InfraError(f"download of {url} broke off: {_reason(exc)}",
                                     hint) from None
                if not chunk:
                    break
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise InfraError(f"cannot write {dest.parent}: {exc.strerror}",
                                     "free some disk space or point LKBUILD_CACHE_DIR "
                                     "elsewhere") from None
                h.update(chunk)
                received += len(chunk)
                moved.advance(len(chunk))
    if total is not None and received != total:
        raise InfraError(f"download of {url} broke off after {received} of {total} bytes",
                         hint)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Signatures.


def _gpg_ready(keyring: Path) -> str:
    """The tool to check signatures with; asked before any download, so a fetch fails early."""
    if not keyring.is_file():
        raise UserError(f"keyring {keyring} does not exist",
                        "point keyring (LKBUILD_KEYRING, --keyring) at an OpenPGP public keyring")
    tool = shutil.which("gpgv") or shutil.which("gpg")
    if tool is None:
        raise InfraError("a keyring is set but neither gpgv nor gpg is installed",
                         "apt-get install gpgv, or unset keyring (LKBUILD_KEYRING, --keyring) "
                         "to check the sha256 only")
    return tool


def signed_text(keyring: Path, message: bytes, where: str) -> str:
    """The content of a signed message, only if a key in `keyring` made a good signature.

    The text comes from gpg's own output, never from the message, so lines someone appended
    outside the signed part are not seen at all.
    """
    keyring = Path(keyring)
    tool = _gpg_ready(keyring)
    with tempfile.TemporaryDirectory(prefix="lkbuild-gpg-") as tmp:
        home = Path(tmp)
        ring = keyring.resolve()
        try:
            data = keyring.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read keyring {keyring}: {exc.strerror}") from None
        if data.lstrip().startswith(b"-----BEGIN PGP"):
            try:
                packets = dearmor(data.decode("ascii", errors="replace"))
            except (binascii.Error, ValueError):
                raise UserError(f"keyring {keyring} is not valid ASCII-armored OpenPGP") from None
            ring = home / "keyring.gpg"
            ring.write_bytes(packets)
        output = home / "signed.txt"
        try:
            proc = subprocess.run(verify_command(tool, ring, home, output), input=message,
                                  capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InfraError(f"cannot run {tool}: {exc}",
                             "apt-get install --reinstall gpgv") from None
        status = proc.stdout.decode("utf-8", errors="replace")
        if proc.returncode != 0 or "[GNUPG:] VALIDSIG " not in status:
            raise VerifyError(f"bad signature on {where}: {_gpg_reason(proc)}",
                              f"the list was altered or not signed by a key in {keyring}; "
                              "nothing was downloaded")
        return output.read_bytes().decode("utf-8", errors="replace")


def _gpg_reason(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = [line.split(":", 1)[-1].strip()
             for line in proc.stderr.decode("utf-8", errors="replace").splitlines()
             if line.strip()]
    for needle in ("BAD signature", "No public key", "no valid OpenPGP data",
                   "no signature found", "keydb_search failed"):
        for line in lines:
            if needle in line:
                return line
    return lines[-1] if lines else f"exit status {proc.returncode}"


# ---------------------------------------------------------------------------------------------
# The cache of verified downloads.


def _record_path(target: Path) -> Path:
    return target.with_name(target.name + ".verified.json")


def _read_record(target: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_record_path(target).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not SHA256_RE.fullmatch(str(data.get("sha256", ""))):
        return None
    return data


def _result(target: Path, record: dict[str, Any]) -> SourceTarball:
    return SourceTarball(path=target, sha256=record["sha256"], version=str(record["version"]),
                         origin=str(record["origin"]), signature=str(record["signature"]))


def _record_fits(record: dict[str, Any], version: str, pinned: str | None,
                 keyring: Path | None) -> bool:
    """Whether an earlier verification still answers today's question."""
    if record.get("version") != version:
        return False
    if pinned is not None:
        return bool(record["sha256"] == pinned)
    if keyring is not None:
        return record.get("keyring") == str(keyring)
    return True


def _warn_unsigned(src: SourceTarball) -> None:
    if src.signature == NO_KEYRING:
        ui.warn(f"only the sha256 of {src.path.name} was checked, not the signature of its "
                f"{SUMS_NAME}; to check it, set keyring in lkbuild.yaml, LKBUILD_KEYRING or "
                "--keyring to an OpenPGP keyring with the kernel.org signing keys")


def _expected(settings: Settings, sums_url: str, name: str, hint: str,
              missing: VerifyError | None) -> tuple[str, str]:
    """The sha256 the (signed) list gives `name`, and how the list itself was checked."""
    keyring = settings.keyring
    if keyring is not None:
        _gpg_ready(Path(keyring))
    raw = _read_small(sums_url, hint, missing)
    if keyring is not None:
        text = signed_text(keyring, raw, sums_url)
        signature = f"verified with {keyring}"
    else:
        text = clearsigned_body(raw.decode("utf-8", errors="replace"))
        signature = NO_KEYRING
    sums = parse_sha256sums(text, sums_url)
    if name not in sums:
        signed = " signed" if keyring is not None else ""
        raise VerifyError(f"{sums_url} has no{signed} sha256 line for {name}",
                          f"is {name} published there? {hint}")
    return sums[name], signature


def _fetch_remote(settings: Settings, version: str, url: str, target: Path, *,
                  sums_url: str, pinned: str | None, hint: str,
                  missing: VerifyError | None = None) -> SourceTarball:
    """Verified cache hit without any network, or a download that verifies before it lands."""
    cache = Path(settings.cache_dir)
    record = _read_record(target)
    if record is not None and _record_fits(record, version, pinned, settings.keyring) \
            and target.is_file() and digest(target, cache) == record["sha256"]:
        src = _result(target, record)
        _warn_unsigned(src)
        return src

    if pinned is not None:
        expected, signature = pinned, PINNED
    else:
        expected, signature = _expected(settings, sums_url, url_file_name(url), hint, missing)
    new_record = {"sha256": expected, "version": version, "origin": url,
                  "signature": signature,
                  "keyring": str(settings.keyring) if signature.startswith("verified") else None}

    try:
        if not (target.is_file() and digest(target, cache) == expected):
            with atomic.new_file(target) as tmp:
                actual = _download(url, tmp, hint)
                if actual != expected:
                    raise VerifyError(
                        f"{target.name} from {url} does not match its checksum: "
                        f"expected sha256 {expected}, got {actual}",
                        "the download is corrupt or the server sends other content; "
                        "nothing was kept")
                found = _read_tarball_version(tmp)
                if found != version:
                    raise VerifyError(f"{url} holds kernel {found}, not the requested {version}",
                                      "nothing was kept; ask for the version it holds")
            _remember(cache, target, sha256=expected, version=version)
        atomic.write_text(_record_path(target),
                          json.dumps(new_record, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise InfraError(f"cannot write into {target.parent}: {exc.strerror or exc}",
                         "check LKBUILD_CACHE_DIR (setting cache_dir) and its free space") from None
    src = _result(target, new_record)
    _warn_unsigned(src)
    return src


# ---------------------------------------------------------------------------------------------
# The three kinds of source.


def _sources_dir(settings: Settings) -> Path:
    return Path(settings.cache_dir) / "sources"


def _mirror_urls(settings: Settings, version: str) -> tuple[str, str]:
    """The tarball and sha256sums.asc URLs on the configured mirror, which must be http(s)."""
    mirror = str(settings.kernel_mirror or "").strip()
    if not re.match(r"https?://", mirror, re.I):
        raise UserError(f"kernel mirror {mirror!r} is not an http(s) URL",
                        "set LKBUILD_KERNEL_MIRROR (setting kernel_mirror) to a base URL "
                        "holding v<major>.x/, or give --source FILE|URL")
    return mirror_urls(mirror, version)


def _from_mirror(settings: Settings, version: str) -> SourceTarball:
    url, sums_url = _mirror_urls(settings, version)
    target = _sources_dir(settings) / tarball_name(version)
    return _fetch_remote(settings, version, url, target, sums_url=sums_url, pinned=None,
                         hint=MIRROR_HINT)


def _from_url(settings: Settings, version: str, source: str) -> SourceTarball:
    url, pinned = split_pin(source)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise UserError(f"unsupported source URL {url}", "use http(s)://... or a local file")
    sums_url = sums_url_beside(url)
    missing = VerifyError(f"no {SUMS_NAME} beside {url} to verify it against",
                          "append #sha256=<64 hex digits> to the URL, or use --source FILE")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    target = _sources_dir(settings) / f"url-{key}" / (url_file_name(url) or tarball_name(version))
    return _fetch_remote(settings, version, url, target, sums_url=sums_url, pinned=pinned,
                         hint=URL_HINT, missing=missing)


def local_path(source: str) -> Path:
    """A local --source, checked to be a readable file."""
    path = Path(os.path.abspath(Path(source).expanduser()))
    if not path.exists():
        raise UserError(f"source tarball {path} does not exist",
                        "give an existing kernel source tarball or an http(s) URL")
    if not path.is_file():
        raise UserError(f"source {path} is not a file", TARBALL_HINT)
    if not os.access(path, os.R_OK):
        raise UserError(f"source tarball {path} is not readable", "check its permissions")
    return path


def _from_file(settings: Settings, version: str, source: str) -> SourceTarball:
    path = local_path(source)
    cache = Path(settings.cache_dir)
    found = tarball_version(path, cache)
    if found != version:
        raise VerifyError(f"{path} holds kernel {found}, not the requested {version}",
                          f"pass --version {found}, or the tarball of {version}")
    return SourceTarball(path=path, sha256=digest(path, cache), version=found,
                         origin=str(path), signature=LOCAL)


@dataclass(frozen=True)
class Located:
    """A mirror or URL source known by its verified digest, not downloaded: a build host
    fetches it itself and checks it against that digest."""

    url: str
    sha256: str
    name: str
    signature: str


def locate(settings: Settings, version: str, source: str | None = None) -> Located | None:
    """Where a non-local source comes from and its digest (None for a local file)."""
    parse_version(version)
    if source and not is_url(source):
        return None
    if not source:
        url, sums_url = _mirror_urls(settings, version)
        known = cached_sha256(settings, version)  # verified when it was fetched here
        if known is not None:
            return Located(url, known, tarball_name(version), "verified when fetched here")
        sha, signature = _expected(settings, sums_url, tarball_name(version), MIRROR_HINT, None)
        return Located(url, sha, tarball_name(version), signature)
    url, pinned = split_pin(source)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise UserError(f"unsupported source URL {url}", "use http(s)://... or a local file")
    name = url_file_name(url) or tarball_name(version)
    if pinned is not None:
        return Located(url, pinned.lower(), name, PINNED)
    missing = VerifyError(f"no {SUMS_NAME} beside {url} to verify it against",
                          "append #sha256=<64 hex digits> to the URL, or use --source FILE")
    sha, signature = _expected(settings, sums_url_beside(url), url_file_name(url), URL_HINT,
                               missing)
    return Located(url, sha, name, signature)


def fetch(settings: Settings, version: str, source: str | None = None) -> SourceTarball:
    """The verified source tarball of `version`: from the mirror, a URL or a local file."""
    parse_version(version)
    if not source:
        return _from_mirror(settings, version)
    if is_url(source):
        return _from_url(settings, version, source)
    return _from_file(settings, version, source)


def cached_sha256(settings: Settings, version: str) -> str | None:
    """The verified digest of the cached mirror tarball of `version`; never touches the network."""
    target = _sources_dir(settings) / tarball_name(version)
    record = _read_record(target)
    if record is None or record.get("version") != version or not target.is_file():
        return None
    try:
        actual = digest(target, Path(settings.cache_dir))
    except UserError:
        return None
    return record["sha256"] if actual == record["sha256"] else None


def fetch_pinned(settings: Settings, url: str, sha256: str, under: str) -> Path:
    """A file pinned by its sha256 (a module's source), downloaded once into the cache.

    A cached copy is trusted only while its digest still matches the pin; a download lands
    beside its target and is renamed into place only once it matched.
    """
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        raise UserError(f"unsupported source URL {url}", "use an http(s) URL")
    name = url_file_name(url)
    if not name:
        raise UserError(f"source URL {url} names no file")
    cache = Path(settings.cache_dir)
    target = _sources_dir(settings) / under / name
    if target.is_file() and digest(target, cache) == sha256:
        return target
    hint = "check the URL and the network, or pass --source with a local copy"
    try:
        with atomic.new_file(target) as tmp:
            actual = _download(url, tmp, hint)
            if actual != sha256:
                raise VerifyError(f"{name} from {url} does not match its pin: expected sha256 "
                                  f"{sha256}, got {actual}",
                                  "the download is corrupt or the server sends other content; "
                                  "nothing was kept")
    except OSError as exc:
        raise InfraError(f"cannot write into {target.parent}: {exc.strerror or exc}",
                         "check LKBUILD_CACHE_DIR (setting cache_dir) and its free space") from None
    _remember(cache, target, sha256=sha256)
    return target
