"""A registry client for the distribution API: auth, blobs, manifests, OCI indexes.

The engine can push a single image but cannot write a multi-arch index, and `docker manifest`
writes Docker's old list type. lkbuild speaks the registry API itself, in OCI media types:
its manifests are computed before anything is sent, so `--dry-run` knows every digest and a
repeated push finds each blob and tag already there and sends nothing. Credentials come from
the Docker config and its credential helpers (through the docker SDK), never from argv.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import requests

from .errors import InfraError, UserError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
DOCKER_HUB = "docker.io"
HUB_API = "registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"
TIMEOUT = (10, 300)  # connect, read (seconds)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
HOST_RE = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9A-Fa-f:]+\](?::[0-9]{1,5})?")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(doc: Mapping[str, Any]) -> bytes:
    """The bytes a manifest is stored as: compact and key-sorted, so its digest is stable."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# --- pure parts: hosts, challenges, manifests, indexes ----------------------------------------

def check_host(host: str) -> str:
    """A registry host as docker spells it (host[:port]); refuse URLs and paths."""
    text = host.strip().rstrip("/")
    if not text or not HOST_RE.fullmatch(text):
        raise UserError(f"bad registry {host!r}",
                        "give a host and optional port, e.g. --registry 127.0.0.1:5000 or "
                        "ghcr.io, without a scheme or path")
    if text in ("index.docker.io", "registry-1.docker.io"):
        return DOCKER_HUB
    return text


def check_repository(repo: str) -> str:
    if not REPO_RE.fullmatch(repo):
        raise UserError(f"bad repository name {repo!r}",
                        "use lowercase letters, digits and . _ - separators (setting org)")
    return repo


def is_loopback(host: str) -> bool:
    """Docker itself talks plain HTTP to registries on loopback; so does lkbuild."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:host.index("]")]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def base_url(host: str) -> str:
    if host == DOCKER_HUB:
        return f"https://{HUB_API}"
    return f"{'http' if is_loopback(host) else 'https'}://{host}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="..",service=".."` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def manifest(config_digest: str, config_size: int,
             layers: list[tuple[str, int]]) -> dict[str, Any]:
    """An OCI image manifest for a config and gzip layers (digest, size) in order."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d, "size": s} for d, s in layers],
    }


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> Platform:
        """From an image config, an inspect result or an index entry's platform."""
        return cls(str(doc.get("os") or doc.get("Os") or "linux"),
                   str(doc.get("architecture") or doc.get("Architecture") or ""),
                   str(doc.get("variant") or doc.get("Variant") or ""))

    def same(self, other: Platform) -> bool:
        """arm64 and arm64/v8 are the same machine: the variant counts only when both name one."""
        return (self.os, self.architecture) == (other.os, other.architecture) and \
            (not self.variant or not other.variant or self.variant == other.variant)


@dataclass(frozen=True)
class Entry:
    """One manifest in an index."""

    digest: str
    size: int
    platform: Platform
    media_type: str = OCI_MANIFEST

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size,
                "platform": self.platform.as_json()}


def index(entries: list[Entry]) -> dict[str, Any]:
    """An OCI index, entries ordered by platform so equal sets give equal bytes."""
    ordered = sorted(entries, key=lambda e: (str(e.platform), e.digest))
    return {"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [e.as_json() for e in ordered]}


def index_entries(doc: Mapping[str, Any]) -> list[Entry]:
    return [Entry(str(m.get("digest", "")), int(m.get("size", 0)),
                  Platform.of(m.get("platform") or {}), str(m.get("mediaType") or OCI_MANIFEST))
            for m in doc.get("manifests") or []]


def merged(existing: list[Entry], ours: list[Entry]) -> list[Entry]:
    """Our entries replace those of the same platform; the other platforms stay."""
    kept = [e for e in existing if not any(e.platform.same(o.platform) for o in ours)]
    return kept + ours


def auth_header(auth: Mapping[str, str] | None) -> dict[str, str]:
    """HTTP Basic from a docker config entry (Username/Password or the encoded `auth`)."""
    if not auth:
        return {}
    user, password = credentials(auth)
    if not user:
        return {}
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def credentials(auth: Mapping[str, object]) -> tuple[str, str]:
    """(user, secret) from either spelling the docker SDK returns."""
    low = {k.lower(): v for k, v in auth.items() if isinstance(v, str)}
    if low.get("username"):
        return low["username"], low.get("password", "")
    if low.get("identitytoken"):
        return "<token>", low["identitytoken"]
    if low.get("auth"):
        user, _, password = base64.b64decode(low["auth"]).decode(errors="replace").partition(":")
        return user, password
    return "", ""


def load_auth(host: str) -> dict[str, str] | None:
    """The credentials the Docker config (or its credential helper) holds for `host`."""
    import docker.auth
    import docker.errors

    key = HUB_AUTH_KEY if host == DOCKER_HUB else host
    try:
        config = docker.auth.load_config()
        found = config.resolve_authconfig(key)
    except docker.errors.DockerException as exc:
        raise InfraError(f"error getting credentials for {host}: "
                         f"{' '.join(str(exc).split())[:200]}",
                         "the credential helper named in ~/.docker/config.json failed: check "
                         "it is on PATH and unlocked (`docker login " +
                         ("" if host == DOCKER_HUB else host) + "` shows the same error)") from None
    return dict(found) if found else None


def login_hint(host: str) -> str:
    return f"run `docker login{'' if host == DOCKER_HUB else ' ' + host}`"


# --- the client --------------------------------------------------------------------------------

@dataclass
class Remote:
    """What a registry holds at a reference."""

    media_type: str
    body: bytes
    digest: str

    @property
    def doc(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Client:
    """Distribution API calls for one registry, with Basic or Bearer auth negotiated per scope."""

    def __init__(self, host: str, auth: Mapping[str, str] | None = None) -> None:
        self.host = check_host(host)
        self.url = base_url(self.host)
        self.auth = dict(auth) if auth else None
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or netrc credentials from the environment
        self.tokens: dict[str, str] = {}
        self.basic = False  # the registry asked for Basic auth: send it with every call

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, headers: Mapping[str, str], **kw: Any
              ) -> requests.Response:
        try:
            return self.session.request(method, url, headers=dict(headers), timeout=TIMEOUT,
                                        allow_redirects=method in ("GET", "HEAD"), **kw)
        except requests.exceptions.SSLError as exc:
            raise InfraError(f"registry {self.host}: TLS failed ({_short(exc)})",
                             "check its certificate (a loopback registry is spoken to in "
                             "plain HTTP)") from None
        except requests.exceptions.ConnectionError as exc:
            raise InfraError(f"registry {self.host} is not reachable ({_short(exc)})",
                             f"check that it runs and that {self.url} is right") from None
        except requests.exceptions.Timeout:
            raise InfraError(f"registry {self.host} did not answer in time",
                             "check the network and try again") from None

    def _token(self, params: Mapping[str, str], scope: str) -> str:
        realm = params.get("realm", "")
        if not realm:
            raise InfraError(f"registry {self.host} asked for a token without a realm")
        query = {"service": params.get("service", ""), "scope": scope.split()}  # one each
        headers = auth_header(self.auth)
        r = self._send("GET", realm, headers, params=query)
        if r.status_code in (401, 403):
            raise self._denied()
        if r.status_code != 200:
            raise InfraError(f"registry {self.host}: token request failed (HTTP {r.status_code})")
        body = r.json()
        return str(body.get("token") or body.get("access_token") or "")

    def _denied(self) -> UserError:
        if self.auth:
            user, _ = credentials(self.auth)
            return UserError(f"registry {self.host} refused the credentials of {user!r}",
                             f"{login_hint(self.host)} with the right user and password")
        return UserError(f"registry {self.host} needs a login", login_hint(self.host))

    def request(self, method: str, path: str, scope: str, headers: Mapping[str, str] | None = None,
                ok: tuple[int, ...] = (200,), **kw: Any) -> requests.Response:
        """One API call; on 401 answer the challenge once (Basic, or a Bearer token)."""
        url = path if path.startswith("http") else f"{self.url}{path}"
        hdrs = dict(headers or {})
        if scope in self.tokens:
            hdrs["Authorization"] = f"Bearer {self.tokens[scope]}"
        elif self.basic:
            hdrs.update(auth_header(self.auth))
        r = self._send(method, url, hdrs, **kw)
        if r.status_code == 401:
            scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
            if scheme == "bearer":
                self.tokens[scope] = self._token(params, scope)
                hdrs["Authorization"] = f"Bearer {self.tokens[scope]}"
            elif scheme == "basic" and self.auth:
                self.basic = True
                hdrs.update(auth_header(self.auth))
            else:
                raise self._denied()
            _rewind(kw)
            r = self._send(method, url, hdrs, **kw)
            if r.status_code == 401:
                raise self._denied()
        if r.status_code == 403:
            raise UserError(f"registry {self.host} denies {method} on {path.split('?')[0]}",
                            f"the account needs push rights there; {login_hint(self.host)}")
        if r.status_code not in ok:
            raise InfraError(f"registry {self.host}: {method} {path.split('?')[0]} failed "
                             f"(HTTP {r.status_code}: {_error_text(r)})")
        return r

    def ping(self) -> None:
        """Reach the API root; a login is checked only when an operation needs it."""
        r = self._send("GET", f"{self.url}/v2/", {})
        if r.status_code not in (200, 401):
            raise InfraError(f"{self.url} does not speak the registry API (HTTP {r.status_code})",
                             "check --registry")

    @staticmethod
    def scope(repo: str, push: bool) -> str:
        return f"repository:{repo}:{'pull,push' if push else 'pull'}"

    def get_manifest(self, repo: str, reference: str, push: bool = False) -> Remote | None:
        r = self.request("GET", f"/v2/{repo}/manifests/{reference}", self.scope(repo, push),
                         headers={"Accept": ACCEPT}, ok=(200, 404))
        if r.status_code == 404:
            return None
        body = r.content
        media = r.headers.get("Content-Type", "").split(";")[0].strip()
        if not media or media == "application/json":
            media = str(json.loads(body).get("mediaType", ""))
        return Remote(media, body, sha256(body))

    def has_blob(self, repo: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", self.scope(repo, True),
                         ok=(200, 404))
        return r.status_code == 200

    def mount_blob(self, repo: str, digest: str, source: str) -> bool:
        """Have the registry link a blob another of its repositories holds (nothing sent).
        False when it would not: it then opened an upload session, left to expire."""
        scope = f"{self.scope(repo, True)} {self.scope(source, False)}"
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}",
                         scope, ok=(201, 202))
        return r.status_code == 201

    def put_blob(self, repo: str, digest: str, size: int, data: bytes | BinaryIO) -> None:
        """Monolithic upload: POST for a session, PUT the bytes with their digest."""
        scope = self.scope(repo, True)
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/", scope, ok=(202,))
        location = r.headers.get("Location", "")
        if not location:
            raise InfraError(f"registry {self.host} gave no upload location for {repo}")
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        self.request("PUT", f"{location}{sep}digest={digest}", scope,
                     headers={"Content-Type": "application/octet-stream",
                              "Content-Length": str(size)}, ok=(201, 204), data=data)

    def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        try:
            r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", self.scope(repo, True),
                             headers={"Content-Type": media_type}, ok=(201, 200), data=body)
        except InfraError as exc:
            if media_type == OCI_INDEX and "HTTP 4" in exc.message:
                raise InfraError(
                    f"registry {self.host} refused the OCI index for {repo}:{reference} "
                    f"({exc.message.split('(', 1)[-1].rstrip(')')})",
                    "some registries will not replace a tag that holds a Docker manifest "
                    "list with an OCI index: delete that tag in the registry (or push under "
                    "a new version) and push again") from None
            raise
        digest = r.headers.get("Docker-Content-Digest", "") or sha256(body)
        if digest != sha256(body):
            raise InfraError(f"registry {self.host} stored {repo}:{reference} as {digest}, "
                             f"not {sha256(body)}")
        return digest


def _rewind(kw: dict[str, Any]) -> None:
    seek = getattr(kw.get("data"), "seek", None)
    if seek is not None:
        seek(0)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    m = re.search(r"\[Errno -?\d+\] [^'\")\]]+|Connection refused|Name or service not known", text)
    return m.group(0) if m else text[:160]


def _error_text(r: requests.Response) -> str:
    try:
        errors = r.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:200] \
            or r.reason
    except ValueError:
        return r.reason or r.text[:120]
