"""Push and pull: which local images go to which tags, and the indexes that join the arches.

Every local image is pushed under its per-arch tags (`<v>-<hash>-<arch>`, `<v>-<arch>`); the
arches are then joined in OCI indexes: `<v>` (updated: other arches already in it stay) and
`<v>-<ihash>` (exactly this set, `ihash` hashing the per-arch hashes). The whole plan, with
every digest and what the registry holds now, is made before anything is sent, so a conflict
stops the push before any tag moved, and `--dry-run` is the plan printed.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import kernel, module as modulemod, registry, sources, ui
from .arch import Arch, canonical, resolve
from .atomic import write_text
from .engine import Engine, Images
from .errors import InfraError, LkbuildError, UserError
from .registry import Client, Entry, Platform
from .series import parse_version
from .settings import Settings

GZIP_LEVEL = 6
INDEX_HASH_LEN = 12


@dataclass
class Image:
    """One local image and the per-arch tags it is pushed under."""

    local: str
    image_id: str
    platform: Platform
    repo: str
    tags: list[str]
    group: str  # the index it joins, e.g. 6.12.54, 6.12.54-dbg, 2.3.2-6.12.54-linuxkit-loader
    digest: str  # lkbuild's content hash of its inputs
    arch: str
    diff_ids: list[str]
    in_index: bool = True  # a cross builder runs on the build platform: arch tags only


@dataclass
class Outcome:
    """What one tag got (or would get)."""

    ref: str
    digest: str
    status: str  # new, unchanged, update, conflict, pushed, replaced
    kind: str  # image or index
    platforms: list[str] = field(default_factory=list)
    current: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "digest": self.digest, "status": self.status,
                "kind": self.kind, "platforms": self.platforms,
                **({"current": self.current} if self.current else {})}


def index_hash(images: list[Image]) -> str:
    """A name for exactly this set of arches and builds."""
    text = "\n".join(sorted(f"{i.arch} {i.digest} {i.image_id}" for i in images))
    return hashlib.sha256(text.encode()).hexdigest()[:INDEX_HASH_LEN]


def groups(images: list[Image]) -> dict[tuple[str, str], list[Image]]:
    """Images by the index they join; an index holds one image per platform."""
    out: dict[tuple[str, str], list[Image]] = {}
    for image in images:
        if not image.in_index:
            continue
        members = out.setdefault((image.repo, image.group), [])
        twin = next((m for m in members if m.platform.same(image.platform)), None)
        if twin is not None:
            raise UserError(f"{twin.local} and {image.local} are both {image.platform} images",
                            "an index holds one image per platform: rebuild the wrong one, or "
                            "push them with separate --arch runs")
        members.append(image)
    return out


def index_tags(group: str, images: list[Image]) -> list[str]:
    """`<group>` and `<group>-<ihash>` (the kind stays whole within 128 characters)."""
    ihash = index_hash(images)
    return [group, f"{group[:127 - len(ihash)]}-{ihash}"]


# --- which local images ------------------------------------------------------------------------

def local_candidates(settings: Settings, name: str, org: str = "") -> list[str]:
    """Local repositories an image may stand under: with the registry prefix, then without
    (under `org`, the settings' org by default)."""
    org = org or settings.org
    prefix = f"{settings.registry.rstrip('/')}/" if settings.registry else ""
    return list(dict.fromkeys([f"{prefix}{org}/{name}", f"{org}/{name}"]))


def _find(engine: Images, settings: Settings, name: str, tag: str,
          orgs: Sequence[str] = ()) -> tuple[str, dict] | None:
    for org in orgs or [settings.org]:
        for repo in local_candidates(settings, name, org):
            attrs = engine.image(f"{repo}:{tag}")
            if attrs is not None:
                return f"{repo}:{tag}", attrs
    return None


def _labels(attrs: dict) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def _image(local: str, attrs: dict, repo: str, tags: list[str], group: str, digest: str,
           arch: str, in_index: bool = True) -> Image:
    return Image(local, str(attrs["Id"]), Platform.of(attrs), repo, tags, group, digest, arch,
                 list((attrs.get("RootFS") or {}).get("Layers") or []), in_index)


@dataclass
class Found:
    """A local image that may be pushed: the ref it stands under and the engine's list entry."""

    ref: str
    entry: dict[str, Any]

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.entry.get("Labels") or {})

    @property
    def org(self) -> str:
        return self.ref.rsplit(":", 1)[0].rsplit("/", 2)[-2]


def tagged_anywhere(entries: list[dict[str, Any]], name: str, tag: str) -> list[Found]:
    """The images tagged `<any org>/<name>:<tag>` (one ref each, the first by name)."""
    out = []
    for entry in entries:
        refs = sorted(t for t in entry.get("RepoTags") or []
                      if t.rpartition(":")[2] == tag
                      and t.rpartition(":")[0].rsplit("/", 1)[-1] == name)
        if refs:
            out.append(Found(refs[0], entry))
    return out


def choose(found: list[Found], digest_label: str, what: str, org: str,
           prefer: Callable[[Found], bool] = lambda f: False) -> Found | None:
    """One of the builds other orgs hold: those `prefer` picks (the current inputs') first,
    then the one hash there is; builds of one hash are the same inputs, the newest is taken.
    Builds of different hashes with nothing to choose between them are refused, listed."""
    if not found:
        return None
    preferred = [f for f in found if prefer(f)] or found
    hashes = {f.labels.get(digest_label, "") for f in preferred}
    if len(hashes) > 1:
        now = time.time()
        listed = ", ".join(
            f"{f.ref} ({f.labels.get(digest_label, '')}, built "
            f"{ui.age(max(0, int(now - int(f.entry.get('Created') or 0))))})"
            for f in sorted(preferred, key=lambda f: f.ref))
        raise UserError(f"{len(preferred)} local builds of {what} could go under {org}: "
                        f"{listed}",
                        "name the org they were built under with --from-org ORG")
    return max(preferred, key=lambda f: int(f.entry.get("Created") or 0))


def current_digest(settings: Settings, version: str, a: Arch, debug: bool) -> str | None:
    """The hash the series' config and this version's verified source give, when that source
    is in the cache (a push never downloads one to find out)."""
    if sources.cached_sha256(settings, version) is None:
        return None
    try:
        return kernel.plan(settings, kernel.Request(version=version, arch=a, debug=debug)).digest
    except LkbuildError:
        return None


def _kernel_elsewhere(settings: Settings, engine: Engine, version: str, a: Arch, dbg: bool,
                      builder: bool, kernel_hash: str | None) -> tuple[str, dict] | None:
    """A kernel (the current inputs' first) or the builder of the kernel chosen, built under
    another org."""
    label = f"{kernel.LABEL}.hash"
    want = kernel_hash if builder else current_digest(settings, version, a, dbg)
    t = kernel.tag(version, None, a, dbg, builder)
    picked = choose(tagged_anywhere(engine.labelled_images(label), kernel.IMAGE, t), label,
                    f"{kernel.IMAGE}:{t}", settings.org,
                    lambda f: want is not None and f.labels.get(label) == want)
    attrs = None if picked is None else engine.image(picked.entry["Id"])
    if picked is None or attrs is None:
        return None
    ui.info(f"{picked.ref} (built under org {picked.org}) goes under {settings.org}")
    return picked.ref, attrs


def kernel_images(settings: Settings, engine: Images, version: str, arches: list[Arch],
                  debug: bool, orgs: Sequence[str] = (), elsewhere: bool = True
                  ) -> list[Image]:
    """The kernel (and -builder, and with debug the -dbg) images of a version, per arch.

    With no --arch, every arch that has a local image; a named arch must have one. Looked up
    under `orgs` in order (the org pushed to by default), then, with `elsewhere`, under any
    org: push names where images go, not where they were built.
    """
    parse_version(version)
    target(settings)
    repo = f"{settings.org}/{kernel.IMAGE}"
    registry.check_repository(repo)
    wanted = arches or [resolve(a) for a in canonical()]
    label = f"{kernel.LABEL}.hash"
    out: list[Image] = []
    for a in wanted:
        chosen: dict[bool, str] = {}  # debug -> the kernel's hash, which its builder carries

        def lookup(dbg: bool, builder: bool, a: Arch = a,
                   chosen: dict[bool, str] = chosen) -> tuple[str, dict] | None:
            found = _find(engine, settings, kernel.IMAGE, kernel.tag(version, None, a, dbg,
                                                                      builder), orgs)
            if found is not None or not elsewhere:
                return found
            assert isinstance(engine, Engine), "only the local engine lists images by label"
            return _kernel_elsewhere(settings, engine, version, a, dbg, builder,
                                     chosen.get(dbg))

        if lookup(False, False) is None:
            if arches:
                raise UserError(f"no local image {kernel.ref(settings, version, None, a)}",
                                f"build it with `inv build --version {version} --arch {a.name}`")
            continue
        kinds = [(False, False), (False, True)] + ([(True, False)] if debug else [])
        for dbg, builder in kinds:
            found = lookup(dbg, builder)
            if found is None:
                if dbg:
                    raise UserError(
                        f"no local debug image {kernel.ref(settings, version, None, a, True)}",
                        f"build it with `inv builddebugkernel --version {version} "
                        f"--arch {a.name}`")
                if builder:
                    ui.info(f"no -builder image for {version} {a.name} (`inv build` makes it): "
                            "pushing the kernel without it")
                continue
            local, attrs = found
            digest = _labels(attrs).get(label, "")
            if not digest:
                raise UserError(f"{local} carries no {label} label",
                                "push only images lkbuild built; rebuild with `inv build`")
            if not builder:
                chosen[dbg] = digest
            elif digest != chosen.get(dbg):
                ui.info(f"{local} was built from other inputs than the kernel pushed with it")
            platform = Platform.of(attrs)
            native = platform.architecture == a.platform.split("/")[1]
            if not builder and not native:
                raise UserError(f"{local} is a {platform} image, not {a.platform}",
                                f"rebuild it with `inv build --version {version} --arch "
                                f"{a.name} --force`")
            if builder and not native:
                ui.info(f"{local} is a cross builder that runs on {platform}: pushed under its "
                        f"arch tags, not in the {kernel.tag(version, None, None, dbg, builder)} "
                        "index")
            out.append(_image(local, attrs, repo,
                              [kernel.tag(version, digest, a, dbg, builder),
                               kernel.tag(version, None, a, dbg, builder)],
                              kernel.tag(version, None, None, dbg, builder), digest, a.name,
                              in_index=not builder or native))
    if not out:
        where = " or ".join(r for org in orgs or [settings.org]
                            for r in local_candidates(settings, kernel.IMAGE, org))
        raise UserError(f"no local kernel images for {version} under {where}"
                        + (" or any other org" if elsewhere else ""),
                        f"build them with `inv build --version {version} --arch ARCH`")
    return out


def release_matches(release: str, kernel_version: str) -> bool:
    """`6.12.54` names the kernel `6.12.54-linuxkit`; a full release names itself."""
    return release == kernel_version or (release.startswith(kernel_version) and
                                         release[len(kernel_version):][:1] in ("-", "+", "_"))


def _module_for(labels: dict[str, str], name: str, kernel_version: str,
                arches: list[Arch]) -> tuple[Arch, str, str, str] | None:
    """(arch, module version, kernel release, hash) of a module image of `name` built for
    the kernel asked, or None."""
    label = modulemod.LABEL
    release = labels.get(f"{label}.kernel.release", "")
    arch_name = labels.get(f"{label}.arch", "")
    if labels.get(f"{label}.name") != name or not release_matches(release, kernel_version):
        return None
    if arches and arch_name not in [a.name for a in arches]:
        return None
    return (resolve(arch_name), labels.get(f"{label}.version", ""), release,
            labels.get(f"{label}.hash", ""))


def module_images(settings: Settings, engine: Images, name: str, kernel_version: str,
                  arches: list[Arch], orgs: Sequence[str] = (), elsewhere: bool = True
                  ) -> list[Image]:
    """The module and loader images built for a kernel, per arch and module version: under
    `orgs` (the org pushed to by default), and with `elsewhere`, for the arches none is there,
    under any org."""
    target(settings)
    repo = f"{settings.org}/{name}"
    registry.check_repository(repo)
    out: list[Image] = []
    seen: set[tuple[str, str, str, bool]] = set()  # the first org's build of each is pushed
    repos = [r for org in orgs or [settings.org] for r in local_candidates(settings, name, org)]
    for local_repo in dict.fromkeys(repos):
        for image_id in engine.image_ids(local_repo):
            attrs = engine.image(image_id)
            found = None if attrs is None else _module_for(_labels(attrs), name,
                                                           kernel_version, arches)
            if attrs is None or found is None:
                continue
            a, version, release, digest = found
            tags_here = {t.rsplit(":", 1)[1] for t in attrs.get("RepoTags") or []
                         if t.rsplit(":", 1)[0] == local_repo}
            for loader in (False, True):
                moving = modulemod.tags(version, release, a, None, loader)
                if moving not in tags_here or (a.name, version, release, loader) in seen:
                    continue
                seen.add((a.name, version, release, loader))
                out.append(_module_image(f"{local_repo}:{moving}", attrs, repo, version,
                                         release, a, digest, loader))
    here = {i.arch for i in out}
    if elsewhere:
        assert isinstance(engine, Engine), "only the local engine lists images by label"
        out += _modules_elsewhere(settings, engine, name, kernel_version,
                                  [a for a in arches or [resolve(x) for x in canonical()]
                                   if a.name not in here])
    missing = [a.name for a in arches if a.name not in {i.arch for i in out}]
    if not out or missing:
        which = f" for {', '.join(missing)}" if missing else ""
        raise UserError(f"no local {name} module images for kernel {kernel_version}{which}",
                        f"build them with `inv buildmodule --module {name} --kernel "
                        f"{kernel_version}" + (f" --arch {missing[0]}`" if missing else "`"))
    return out


def _module_image(local: str, attrs: dict, repo: str, version: str, release: str, a: Arch,
                  digest: str, loader: bool) -> Image:
    moving = modulemod.tags(version, release, a, None, loader)
    return _image(local, attrs, repo, [modulemod.tags(version, release, a, digest, loader),
                                       moving], moving[:-len(a.name) - 1], digest, a.name)


def _modules_elsewhere(settings: Settings, engine: Engine, name: str, kernel_version: str,
                       arches: list[Arch]) -> list[Image]:
    """Per arch, module version and kind, the one build under other orgs (those against the
    series' current kernel first)."""
    if not arches:
        return []
    label = f"{modulemod.LABEL}.hash"
    entries = engine.labelled_images(label)
    kinds: dict[tuple[str, str, str, bool], list[dict[str, Any]]] = {}
    for entry in entries:
        found = _module_for(dict(entry.get("Labels") or {}), name, kernel_version, arches)
        if found is not None:
            a, version, release, _ = found
            for loader in (False, True):
                kinds.setdefault((a.name, version, release, loader), []).append(entry)
    out: list[Image] = []
    for (arch_name, version, release, loader), group in sorted(kinds.items()):
        a = resolve(arch_name)
        moving = modulemod.tags(version, release, a, None, loader)
        current = _kernel_version_digest(settings, release, kernel_version, a)
        picked = choose(tagged_anywhere(group, name, moving), label, f"{name}:{moving}",
                        settings.org, partial(built_against, current))
        attrs = None if picked is None else engine.image(picked.entry["Id"])
        if picked is None or attrs is None:
            continue
        ui.info(f"{picked.ref} (built under org {picked.org}) goes under {settings.org}")
        out.append(_module_image(picked.ref, attrs, f"{settings.org}/{name}", version, release,
                                 a, picked.labels.get(label, ""), loader))
    return out


def built_against(kernel_hash: str | None, found: Found) -> bool:
    """A module image built against the kernel of that hash."""
    image = found.labels.get(f"{modulemod.LABEL}.kernel.image", "")
    return kernel_hash is not None and f"-{kernel_hash}-" in image


def _kernel_version_digest(settings: Settings, release: str, kernel_version: str,
                           a: Arch) -> str | None:
    """The series' current kernel hash for a module's kernel, when its version is plain."""
    version = release.split("-", 1)[0] if release_matches(release, kernel_version) else ""
    try:
        parse_version(version)
    except LkbuildError:
        return None
    return current_digest(settings, version, a, False)


# --- blobs: exported from the engine, compressed once, remembered ------------------------------

class LayerCache:
    """diff_id -> compressed (digest, size), and image configs by ID, under the cache dir.

    With both known, an image's manifest (and so its digest) is known without exporting it.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.file = root / "layers.json"
        try:
            self.layers: dict[str, dict[str, Any]] = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.layers = {}

    def config(self, image_id: str) -> bytes | None:
        path = self.root / "configs" / image_id.replace(":", "-")
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if registry.sha256(data) == image_id else None

    def remember(self, image_id: str, config: bytes, layers: dict[str, tuple[str, int]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(self.root / "configs" / image_id.replace(":", "-"), config.decode())
        self.layers.update({k: {"digest": d, "size": s} for k, (d, s) in layers.items()})
        write_text(self.file, json.dumps(self.layers, indent=1, sort_keys=True))

    def holders(self, host: str, digest: str) -> list[str]:
        """The repositories of a registry lkbuild sent (or linked) the blob to."""
        return list(self._sent().get(host, {}).get(digest, []))

    def sent(self, host: str, repo: str, digest: str) -> None:
        sent = self._sent()
        repos = sent.setdefault(host, {}).setdefault(digest, [])
        if repo not in repos:
            repos.append(repo)
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(self.root / "sent.json", json.dumps(sent, indent=1, sort_keys=True))

    def _sent(self) -> dict[str, dict[str, list[str]]]:
        try:
            return dict(json.loads((self.root / "sent.json").read_text()))
        except (OSError, ValueError):
            return {}

    def known(self, image: Image) -> tuple[bytes, list[tuple[str, int]]] | None:
        config = self.config(image.image_id)
        if config is None or not all(d in self.layers for d in image.diff_ids):
            return None
        return config, [(self.layers[d]["digest"], int(self.layers[d]["size"]))
                        for d in image.diff_ids]


@dataclass
class Exported:
    config: bytes
    layers: list[tuple[str, int]]  # compressed digest, size, in order
    files: dict[str, Path]  # compressed digest -> file


def _safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar:
        name = Path(member.name)
        if member.isfile() and not name.is_absolute() and ".." not in name.parts:
            yield member


def export(engine: Engine, image: Image, dest: Path) -> Exported:
    """`docker save` the image, then gzip each layer (mtime 0: the same bytes every time).

    Both save formats are read: the classic one (`<id>/layer.tar`) and the OCI layout of newer
    engines, whose layers may already be compressed (then they are sent as they are).
    """
    spool = dest / "save"
    spool.mkdir(parents=True)
    try:
        stream = engine.client.api.get_image(image.local)
        with tempfile.TemporaryFile(dir=dest) as raw:
            for chunk in stream:
                raw.write(chunk)
            raw.seek(0)
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                for member in _safe_members(tar):
                    target = spool / member.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, target.open("wb") as fh:
                        shutil.copyfileobj(src, fh, 1 << 20)
    except (tarfile.TarError, OSError) as exc:
        raise InfraError(f"exporting {image.local} from {engine.describe()} failed: {exc}") \
            from None
    except Exception as exc:  # the SDK raises several unrelated types
        raise InfraError(f"exporting {image.local} from {engine.describe()} failed: "
                         f"{' '.join(str(exc).split())[:200]}") from None
    (entry,) = json.loads((spool / "manifest.json").read_text())
    config = (spool / entry["Config"]).read_bytes()
    if registry.sha256(config) != image.image_id:
        raise InfraError(f"the engine exported another config for {image.local}",
                         "it changed while being pushed: push again")
    layers: list[tuple[str, int]] = []
    files: dict[str, Path] = {}
    for n, rel in enumerate(entry["Layers"]):
        path = spool / rel
        with path.open("rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        if compressed:
            out = path
        else:
            out = dest / f"layer-{n}.tar.gz"
            try:
                gzip_file(path, out)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise InfraError(f"compressing a layer of {image.local} failed: {exc}") from None
            path.unlink()
        digest = "sha256:" + sources.hash_file(out)
        layers.append((digest, out.stat().st_size))
        files[digest] = out
    return Exported(config, layers, files)


def gzip_file(src: Path, out: Path) -> None:
    """gzip without name or timestamp, so the same layer gives the same blob; pigz uses every
    core where it is installed (its bytes differ from zlib's, which only costs a re-upload)."""
    pigz = shutil.which("pigz")
    with src.open("rb") as fin, out.open("wb") as fout:
        if pigz:
            subprocess.run([pigz, "-n", f"-{GZIP_LEVEL}", "-c"], stdin=fin, stdout=fout,
                           check=True)
            return
        with gzip.GzipFile(fileobj=fout, mode="wb", compresslevel=GZIP_LEVEL, mtime=0,
                           filename="") as gz:
            shutil.copyfileobj(fin, gz, 1 << 20)


# --- the push ----------------------------------------------------------------------------------

@dataclass
class Prepared:
    image: Image
    config: bytes
    layers: list[tuple[str, int]]
    exported: Exported | None = None
    held: Entry | None = None  # the registry's own manifest of this same content, if any

    @property
    def body(self) -> bytes:
        return registry.canonical(registry.manifest(self.image.image_id, len(self.config),
                                                    self.layers))

    @property
    def digest(self) -> str:
        return registry.sha256(self.body)

    def entry(self) -> Entry:
        return self.held or Entry(self.digest, len(self.body), self.image.platform)


class Pusher:
    """One push run: images prepared, the registry compared, then (unless dry) sent."""

    def __init__(self, settings: Settings, engine: Engine | None, client: Client,
                 work: Path) -> None:
        self.engine = engine
        self.client = client
        self.work = work
        self.cache = LayerCache(Path(settings.cache_dir) / "push")
        self.config_of: dict[str, str] = {}

    def ref(self, repo: str, tag: str) -> str:
        host = self.client.host
        return f"{repo}:{tag}" if host == registry.DOCKER_HUB else f"{host}/{repo}:{tag}"

    def prepare(self, image: Image) -> Prepared:
        known = self.cache.known(image)
        if known is not None:
            return Prepared(image, *known)
        return self._export(image)

    def _export(self, image: Image) -> Prepared:
        ui.info(f"exporting {image.local}")
        dest = Path(tempfile.mkdtemp(dir=self.work, prefix="image-"))
        assert self.engine is not None, "images on a build host are pushed from there"
        exported = export(self.engine, image, dest)
        ours = dict(zip(image.diff_ids, exported.layers, strict=False))
        if len(ours) == len(exported.layers):
            self.cache.remember(image.image_id, exported.config, ours)
        return Prepared(image, exported.config, exported.layers, exported)

    def remote_config(self, repo: str, digest: str) -> str:
        """The config digest of a manifest in the registry (what identifies its content)."""
        if digest not in self.config_of:
            found = self.client.get_manifest(repo, digest, push=True)
            doc = found.doc if found is not None else {}
            self.config_of[digest] = str((doc.get("config") or {}).get("digest", ""))
        return self.config_of[digest]

    def image_outcomes(self, p: Prepared) -> list[Outcome]:
        out = []
        for tag in p.image.tags:
            current = self.client.get_manifest(p.image.repo, tag, push=True)
            ref = self.ref(p.image.repo, tag)
            status, was = "new", ""
            if current is not None:
                was = current.digest
                same = current.digest == p.digest or (
                    current.media_type not in registry.INDEXES
                    and str((current.doc.get("config") or {}).get("digest")) == p.image.image_id)
                status = "unchanged" if same else "conflict"
                if same and current.digest != p.digest:  # the same image, compressed otherwise
                    p.held = Entry(current.digest, len(current.body), p.image.platform,
                                   current.media_type)
            out.append(Outcome(ref, was if status == "unchanged" else p.digest, status, "image",
                               [str(p.image.platform)], was))
        return out

    def clashing(self, repo: str, old: list[Entry],
                 ours: list[tuple[Platform, str, str]]) -> list[Entry]:
        """Entries of an index in the registry that hold another image (by config digest) for
        one of our (platform, manifest digest, config digest)."""
        return [e for e in old for platform, digest, config in ours
                if e.platform.same(platform) and e.digest != digest
                and self.remote_config(repo, e.digest) != config]

    def index_outcome(self, repo: str, tag: str, entries: list[Entry], merge: bool,
                      by_platform: dict[str, str]) -> tuple[Outcome, bytes]:
        current = self.client.get_manifest(repo, tag, push=True)
        status, was = "new", ""
        final = entries
        if current is not None:
            was = current.digest
            if current.media_type in registry.INDEXES:
                old = registry.index_entries(current.doc)
                clash = self.clashing(repo, old, [(o.platform, o.digest,
                                                   by_platform[str(o.platform)])
                                                  for o in entries])
                final = registry.merged(old, entries) if merge else entries
                status = "conflict" if clash else "update"
            else:
                status = "conflict"
        body = registry.canonical(registry.index(final))
        if current is not None and current.digest == registry.sha256(body):
            status = "unchanged"
        return Outcome(self.ref(repo, tag), registry.sha256(body), status, "index",
                       [str(e.platform) for e in registry.index_entries(
                           json.loads(body))], was), body

    def plan(self, images: list[Image]) -> tuple[list[Prepared], list[Outcome],
                                                  list[tuple[Outcome, str, bytes]]]:
        prepared = [self.prepare(i) for i in images]
        outcomes = [o for p in prepared for o in self.image_outcomes(p)]
        indexes: list[tuple[Outcome, str, bytes]] = []
        by_image = {id(p.image): p for p in prepared}
        for (repo, group), members in groups(images).items():
            entries = [by_image[id(i)].entry() for i in members]
            by_platform = {str(i.platform): i.image_id for i in members}
            for n, tag in enumerate(index_tags(group, members)):
                outcome, body = self.index_outcome(repo, tag, entries, merge=n == 0,
                                                   by_platform=by_platform)
                indexes.append((outcome, repo, body))
        return prepared, outcomes, indexes

    def send(self, prepared: list[Prepared], outcomes: list[Outcome],
             indexes: list[tuple[Outcome, str, bytes]]) -> None:
        todo = {o.ref for o in outcomes if o.status in ("new", "conflict")}
        for p in prepared:
            tags = [t for t in p.image.tags if self.ref(p.image.repo, t) in todo]
            if not tags:
                continue
            p = self._blobs(p)
            for tag in tags:
                self.client.put_manifest(p.image.repo, tag, registry.OCI_MANIFEST, p.body)
        for outcome, repo, body in indexes:
            if outcome.status in ("new", "update", "conflict"):
                self.client.put_manifest(repo, outcome.ref.rsplit(":", 1)[1], registry.OCI_INDEX,
                                         body)

    def _mount(self, repo: str, digest: str) -> bool:
        """A layer already sent to another repository of the registry is linked, not sent:
        the same images pushed under a second org cost no export."""
        for source in self.cache.holders(self.client.host, digest):
            if source != repo and self.client.has_blob(source, digest) and \
                    self.client.mount_blob(repo, digest, source):
                ui.info(f"linked {digest[:19]} from {source} to {repo}")
                return True
        return False

    def _there(self, repo: str, digest: str) -> bool:
        """The registry holds the blob in `repo` (linked there now if it can be)."""
        if self.client.has_blob(repo, digest) or self._mount(repo, digest):
            self.cache.sent(self.client.host, repo, digest)
            return True
        return False

    def _blobs(self, p: Prepared) -> Prepared:
        """Send what the registry lacks; export the image only if a layer must be sent."""
        repo = p.image.repo
        missing = [(d, s) for d, s in p.layers if not self._there(repo, d)]
        if missing and p.exported is None:
            fresh = self._export(p.image)
            if fresh.layers != p.layers:  # compressed otherwise than remembered: now it is
                raise InfraError(f"the layers of {p.image.local} compressed to other digests "
                                 "than lkbuild remembered (nothing was pushed for it)",
                                 "push again: the digests are now up to date")
            p = fresh
        if missing:
            layers = "a layer" if len(missing) == 1 else f"{len(missing)} layers"
            with ui.transfer(f"sending {layers} of {p.image.local} to {repo}",
                             sum(s for _, s in missing)) as moved:
                for digest, size in missing:
                    assert p.exported is not None
                    # Which layer is on the wire, for the log of a push that stops there.
                    ui.info(f"sending {digest[:19]} ({size / 1e6:.1f} MB) to {repo}")
                    with p.exported.files[digest].open("rb") as fh:
                        self.client.put_blob(repo, digest, size, moved.reader(fh))
                    self.cache.sent(self.client.host, repo, digest)
        if not self.client.has_blob(repo, p.image.image_id):
            self.client.put_blob(repo, p.image.image_id, len(p.config), p.config)
        return p


def target(settings: Settings) -> str:
    """The registry host pushes and pulls go to (Docker Hub when none is set)."""
    return registry.check_host(settings.registry or registry.DOCKER_HUB)


def push(settings: Settings, engine: Engine, images: list[Image], *, force: bool = False,
         dry_run: bool = False) -> list[Outcome]:
    """Push images and their indexes; refuse before sending anything if a tag would move."""
    host = target(settings)
    with Client(host, registry.load_auth(host)) as client, \
            tempfile.TemporaryDirectory(prefix="lkbuild-push-") as tmp:
        client.ping()
        pusher = Pusher(settings, engine, client, Path(tmp))
        prepared, outcomes, indexes = pusher.plan(images)
        everything = outcomes + [o for o, _, _ in indexes]
        if not force:
            refuse_conflicts(everything)
        if dry_run:
            return everything
        pusher.send(prepared, outcomes, indexes)
        return done(everything)


DONE = {"new": "pushed", "conflict": "replaced", "update": "updated"}


def done(outcomes: list[Outcome]) -> list[Outcome]:
    """The planned statuses as what happened."""
    for o in outcomes:
        o.status = DONE.get(o.status, o.status)
    return outcomes


def refuse_conflicts(outcomes: list[Outcome]) -> None:
    conflicts = [o for o in outcomes if o.status == "conflict"]
    if conflicts:
        first = conflicts[0]
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        ours = f", ours is {first.digest[:19]}" if first.digest else ""
        raise UserError(f"{first.ref} already holds other content ({first.current[:19]}{ours})"
                        f"{more}", "nothing was pushed; --force moves the tag")


def host_push(settings: Settings, images: list[Image], send: Callable[[Image, str], None], *,
              force: bool = False) -> list[Outcome]:
    """Push images that stay on a build host, which sends them itself (`send(image, ref)`).

    Here only the plan, every conflict found before any tag moves, and the indexes, made from
    the manifests the host pushed. The host's engine compresses the layers its own way, so a
    tag is unchanged when it holds the same image config, whatever its manifest digest.
    """
    host = target(settings)
    with Client(host, registry.load_auth(host)) as client, \
            tempfile.TemporaryDirectory(prefix="lkbuild-push-") as tmp:
        client.ping()
        pusher = Pusher(settings, None, client, Path(tmp))
        planned: list[tuple[Image, str, Outcome]] = []
        for image in images:
            for tag in image.tags:
                current = client.get_manifest(image.repo, tag, push=True)
                status, was = "new", current.digest if current else ""
                if current is not None:
                    same = current.media_type not in registry.INDEXES and \
                        str((current.doc.get("config") or {}).get("digest")) == image.image_id
                    status = "unchanged" if same else "conflict"
                planned.append((image, tag, Outcome(pusher.ref(image.repo, tag), was, status,
                                                    "image", [str(image.platform)], was)))
        members_of = groups(images)
        clashes = [o for (repo, group), members in members_of.items()
                   for tag in index_tags(group, members)
                   for o in [_index_clash(pusher, repo, tag, members)] if o is not None]
        if not force:
            refuse_conflicts([o for _, _, o in planned] + clashes)
        for image, _tag, outcome in planned:
            if outcome.status != "unchanged":
                send(image, outcome.ref)
        entries: dict[int, Entry] = {}
        for image, tag, outcome in planned:
            got = client.get_manifest(image.repo, tag, push=True)
            if got is None:
                raise InfraError(f"{outcome.ref} is not in the registry after the host pushed "
                                 "it", "check the host's registry login and push again")
            outcome.digest = got.digest
            entries.setdefault(id(image), Entry(got.digest, len(got.body), image.platform,
                                                got.media_type))
        outcomes = [o for _, _, o in planned]
        for (repo, group), members in members_of.items():
            by_platform = {str(i.platform): i.image_id for i in members}
            for n, tag in enumerate(index_tags(group, members)):
                outcome, body = pusher.index_outcome(repo, tag, [entries[id(i)] for i in members],
                                                     n == 0, by_platform)
                if outcome.status in ("new", "update", "conflict"):
                    client.put_manifest(repo, tag, registry.OCI_INDEX, body)
                outcomes.append(outcome)
        return done(outcomes)


def _index_clash(pusher: Pusher, repo: str, tag: str, members: list[Image]) -> Outcome | None:
    """An index tag that holds something else, or another image for one of our platforms."""
    current = pusher.client.get_manifest(repo, tag, push=True)
    if current is None:
        return None
    if current.media_type in registry.INDEXES and not pusher.clashing(
            repo, registry.index_entries(current.doc),
            [(i.platform, "", i.image_id) for i in members]):
        return None
    return Outcome(pusher.ref(repo, tag), "", "conflict", "index", [], current.digest)


def pull(settings: Settings, engine: Engine, version: str, arches: list[Arch],
         debug: bool = False) -> list[str]:
    """Pull a version's kernel (and -builder) images and tag them as a local build would."""
    parse_version(version)
    host = target(settings)
    repo = f"{settings.org}/{kernel.IMAGE}"
    pulled: list[str] = []
    with Client(host, registry.load_auth(host)) as client:
        client.ping()
        for a in arches:
            kinds = [(debug, False)] + ([] if debug else [(False, True)])
            for dbg, builder in kinds:
                tag = kernel.tag(version, None, a, dbg, builder)
                found = client.get_manifest(repo, tag)
                if found is None:
                    if builder:
                        continue
                    raise UserError(f"{host}/{repo}:{tag} is not in the registry",
                                    f"push it with `inv push --version {version} --arch "
                                    f"{a.name} --registry {host}`")
                pulled += _pull_one(settings, engine, client, repo, tag, found)
    return pulled


def _pull_one(settings: Settings, engine: Engine, client: Client, repo: str, tag: str,
              found: registry.Remote) -> list[str]:
    doc = found.doc
    if found.media_type in registry.INDEXES:
        raise UserError(f"{client.host}/{repo}:{tag} is an index, not one arch's image",
                        "pull per-arch tags")
    config_digest = str((doc.get("config") or {}).get("digest", ""))
    config = json.loads(client.request(
        "GET", f"/v2/{repo}/blobs/{config_digest}", client.scope(repo, False)).content)
    platform = Platform.of(config)
    remote = f"{client.host}/{repo}" if client.host != registry.DOCKER_HUB else repo
    ui.info(f"pulling {remote}:{tag} ({platform})")
    layers: dict[str, tuple[int, int]] = {}  # layer -> bytes downloaded, of its size
    try:
        with ui.transfer(f"pulling {remote}:{tag}") as moved:
            for event in engine.client.api.pull(remote, tag=tag, stream=True, decode=True,
                                                platform=str(platform)):
                detail = event.get("progressDetail") or {}
                if event.get("status") == "Downloading" and "current" in detail:
                    layers[str(event.get("id"))] = (int(detail["current"]),
                                                    int(detail.get("total") or 0))
                    moved.update(sum(c for c, _ in layers.values()),
                                 sum(t for _, t in layers.values()) or None)
    except Exception as exc:  # the SDK raises several unrelated types
        raise InfraError(f"pulling {remote}:{tag} into {engine.describe()} failed: "
                         f"{' '.join(str(exc).split())[:200]}",
                         registry.login_hint(client.host)) from None
    attrs = engine.image(f"{remote}:{tag}")
    if attrs is None or attrs["Id"] != config_digest:
        raise InfraError(f"{remote}:{tag} did not arrive as {config_digest[:19]}")
    digest = _labels(attrs).get(f"{kernel.LABEL}.hash", "")
    local_tags = [tag]
    if digest:
        head, _, arch = tag.rpartition("-")
        local_tags.insert(0, f"{head}-{digest}-{arch}")
    refs = []
    for local_repo in local_candidates(settings, kernel.IMAGE):
        for t in local_tags:
            try:
                engine.client.api.tag(attrs["Id"], local_repo, t)
            except Exception as exc:  # the SDK raises several unrelated types
                raise InfraError(f"tagging {local_repo}:{t} failed: {exc}") from None
            refs.append(f"{local_repo}:{t}")
    return refs
