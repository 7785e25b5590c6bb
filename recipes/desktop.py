"""The target kernel (Docker Desktop's, or any): captured, kept as a profile, matched by builds.

A module loads only into the kernel whose release, config, compiler and vermagic it was built
for, and Docker Desktop's kernel shares its version number with linuxkit's while differing in
those. So the target is read from the running kernel itself (`capture.sh`, the same script in a
container, a VM or on a host), saved as a profile, and every profile build is checked against
it: the config through olddefconfig (each symbol that moves is a fidelity risk), the compiler
text, the release the build produced, and a module's vermagic.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import kconfig, ui
from .arch import Arch, from_uname, resolve
from .atomic import write_text
from .errors import UserError

CAPTURE_SCRIPT = Path(__file__).parent / "data" / "capture.sh"
CAPTURE_IMAGE = "alpine:3.20"
"""Where the capture runs when neither --image nor build_image names one: small, with sh."""
PROFILE_FORMAT = 1
BEGIN, END = "lkbuild-capture-begin ", "lkbuild-capture-end "
RANDSTRUCT = ("CONFIG_RANDSTRUCT_FULL", "CONFIG_RANDSTRUCT_PERFORMANCE")
SEED_RE = re.compile(r"[0-9a-f]{64}")
SEED_HASH_RE = re.compile(r"(?:^|\s)RANDSTRUCT_([0-9a-f]{64})(?:\s|$)")
KERNEL_IMAGE_RE = re.compile(r"^\s*image:\s*[\"']?(\S*?(?:for-desktop-kernel|/kernel):[^\"'\s]+)",
                             re.M)


# --- the capture -------------------------------------------------------------------------------

def parse_stream(text: str) -> dict[str, str]:
    """capture.sh's stdout (or a console log holding it) -> {fact: text}."""
    facts: dict[str, str] = {}
    name, lines = "", []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if name:
            if line.startswith(END) and line[len(END):].strip() == name:
                facts[name] = "\n".join(lines[:-1] if lines and lines[-1] == "" else lines)
                name = ""
            else:
                lines.append(line)
        elif line.startswith(BEGIN):
            name, lines = line[len(BEGIN):].strip(), []
    return facts


def read_dir(directory: Path) -> dict[str, str | bytes]:
    """A capture dir's files: text facts, and config.gz as bytes."""
    if not directory.is_dir():
        raise UserError(f"capture {directory} does not exist",
                        "run `sh capture.sh DIR` on the target (inv detect --script prints it)")
    out: dict[str, str | bytes] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            data = path.read_bytes()
            out[path.name] = data if path.name == "config.gz" else \
                data.decode(errors="replace")
    return out


@dataclass
class Capture:
    """What the target kernel told about itself."""

    release: str
    machine: str
    build: str = ""
    proc_version: str = ""
    config: str | None = None  # /proc/config.gz, unpacked; None when the kernel has none
    vermagic: str = ""
    sig_enforce: str = ""
    lockdown: str = ""
    modules_disabled: str = ""
    linuxkit_yml: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def compiler(self) -> str:
        """CONFIG_CC_VERSION_TEXT when the config is known, else read from /proc/version."""
        if self.config is not None:
            text = kconfig.parse(self.config).get("CONFIG_CC_VERSION_TEXT", "")
            if text:
                return text.strip('"')
        return compiler_of(self.proc_version)

    @property
    def kernel_image(self) -> str:
        found = KERNEL_IMAGE_RE.search(self.linuxkit_yml)
        return found.group(1) if found else ""


def capture_of(facts: Mapping[str, str | bytes], where: str) -> Capture:
    """Facts from a stream or a dir -> Capture; a damaged capture is refused."""
    def text(name: str) -> str:
        value = facts.get(name, "")
        return (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()

    release, machine = text("release"), text("machine")
    if not release or not machine:
        raise UserError(f"{where} is not an lkbuild capture (no release or machine)",
                        "run capture.sh on the target and give its whole output")
    config: str | None = None
    raw = facts.get("config.gz")
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if not raw and text("config.gz.b64"):
        try:
            raw = base64.b64decode("".join(text("config.gz.b64").split()), validate=True)
        except ValueError:
            raise UserError(f"the kernel config in {where} is damaged (bad base64)",
                            "capture it again") from None
        want = text("config.gz.sha256")
        if want and hashlib.sha256(raw).hexdigest() != want:
            raise UserError(f"the kernel config in {where} is damaged (sha256 differs from "
                            "the target's)", "capture it again") from None
    if raw:
        try:
            config = gzip.decompress(raw).decode(errors="replace")
        except (OSError, EOFError):
            raise UserError(f"the kernel config in {where} is not gzip data",
                            "capture it again") from None
    out = Capture(release, machine, text("build"), text("proc-version"), config,
                  " ".join(text("vermagic").split()), text("sig-enforce"), text("lockdown"),
                  text("modules-disabled"), text("linuxkit.yml"))
    if config is None:
        out.notes.append("the target has no /proc/config.gz (CONFIG_IKCONFIG_PROC): its config "
                         "cannot be matched, only its release, compiler and vermagic")
    return out


def compiler_of(proc_version: str) -> str:
    """The compiler in /proc/version: `Linux version R (u@h) (gcc (Alpine 14.2.0) 14.2.0,
    GNU ld ...) #1 ...` -> `gcc (Alpine 14.2.0) 14.2.0`."""
    start = proc_version.find(") (")
    if start < 0:
        return ""
    depth, text = 0, proc_version[start + 3:]
    for n, ch in enumerate(text):  # up to the first top-level ", " or the closing paren
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return text[:n].strip()
            depth -= 1
        elif ch == "," and depth == 0:
            return text[:n].strip()
    return ""


def split_release(release: str) -> tuple[str, str]:
    """`6.12.54-linuxkit` -> (`6.12.54`, `-linuxkit`)."""
    found = re.match(r"(\d+\.\d+(?:\.\d+)?)(.*)$", release)
    if not found:
        raise UserError(f"kernel release {release!r} does not start with a version",
                        "capture the target again")
    return found.group(1), found.group(2)


# --- the profile -------------------------------------------------------------------------------

@dataclass
class Profile:
    """A saved target: what a profile build must reproduce."""

    release: str
    arch: Arch
    compiler: str
    build: str = ""
    vermagic: str = ""
    config: str | None = None
    kernel_image: str = ""
    sig_enforce: str = ""
    lockdown: str = ""
    randstruct_seed: str = ""
    source: str = ""  # where the profile came from

    @property
    def version(self) -> str:
        return split_release(self.release)[0]

    @property
    def localversion(self) -> str:
        return split_release(self.release)[1]

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(self.config.encode()).hexdigest() if self.config else ""

    def expected_vermagic(self) -> str:
        """The target's vermagic as read, else as its config (and seed) give it."""
        if self.vermagic:
            return self.vermagic
        if self.config is None:
            return ""
        from .module import config_vermagic
        made = config_vermagic(self.release, kconfig.parse(self.config), self.arch)
        if self.randstruct_seed and made.endswith(" RANDSTRUCT_?"):
            made = made[:-1] + seed_hash(self.randstruct_seed)
        return made

    def as_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "lkbuild-profile": PROFILE_FORMAT, "release": self.release, "arch": self.arch.name,
            "compiler": self.compiler, "build": self.build, "vermagic": self.vermagic,
            "kernel_image": self.kernel_image, "sig_enforce": self.sig_enforce,
            "lockdown": self.lockdown, "config_sha256": self.config_sha256}
        if self.randstruct_seed:
            doc["randstruct_seed"] = self.randstruct_seed
        if self.config is not None:
            doc["config"] = self.config
        return doc


def seed_hash(seed: str) -> str:
    """What the kernel's gen-randstruct-seed.sh puts in vermagic for a seed."""
    return hashlib.sha256(seed.encode()).hexdigest()


def check_seed(seed: str, vermagic: str, where: str) -> str:
    """A seed is refused unless it is 64 hex digits and, when the target's vermagic carries a
    RANDSTRUCT hash, the one that hashes to it: a wrong seed builds modules that never load."""
    if not SEED_RE.fullmatch(seed):
        raise UserError(f"{where}: randstruct_seed must be 64 lowercase hex digits",
                        "copy it from the target kernel's scripts/basic/randstruct.seed")
    found = SEED_HASH_RE.search(vermagic)
    if found and found.group(1) != seed_hash(seed):
        raise UserError(f"{where}: the randstruct seed is not the target's (its hash "
                        f"{seed_hash(seed)[:16]}... vs RANDSTRUCT_{found.group(1)[:16]}... in "
                        "the target's vermagic)", "copy the target kernel's own "
                        "scripts/basic/randstruct.seed, from the build that made it")
    return seed


def with_seed(profile: Profile, path: Path | str) -> Profile:
    """detect --randstruct-seed: the profile with the target's seed, read from a seed file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"seed file {path} does not exist", "give the target kernel's "
                        "scripts/basic/randstruct.seed (kernel-dev.tar of its image holds it)")
    seed = path.read_text(errors="replace").strip()
    return replace(profile, randstruct_seed=check_seed(seed, profile.vermagic,
                                                       f"seed file {path}"))


def profile_of(capture: Capture, source: str) -> Profile:
    arch = from_uname(capture.machine)
    if arch is None:
        raise UserError(f"the target's machine {capture.machine!r} is not an arch lkbuild "
                        "builds", "lkbuild builds amd64 (x86_64) and arm64 (aarch64)")
    return Profile(capture.release, arch, capture.compiler, capture.build, capture.vermagic,
                   capture.config, capture.kernel_image, capture.sig_enforce,
                   capture.lockdown, source=source)


class _Literal(str):
    """A string YAML writes as a block, so a saved config reads as the file it is."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def save(profile: Profile, path: Path) -> None:
    doc = profile.as_doc()
    if "config" in doc:
        doc["config"] = _Literal(doc["config"])
    write_text(path, yaml.safe_dump(doc, sort_keys=False, width=100))


def load(path: Path | str, arch: Arch | None = None) -> Profile:
    """A saved profile, checked: a corrupt file or one of another arch is refused."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"profile {path} does not exist",
                        f"make it with `inv detect --save {path}`")
    try:
        doc = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"profile {path} is not valid YAML{where}",
                        f"make it again with `inv detect --save {path}`") from None
    if not isinstance(doc, dict) or doc.get("lkbuild-profile") != PROFILE_FORMAT:
        raise UserError(f"{path} is not an lkbuild profile (no `lkbuild-profile: "
                        f"{PROFILE_FORMAT}`)", f"make it with `inv detect --save {path}`")
    missing = [k for k in ("release", "arch", "compiler") if not str(doc.get(k) or "")]
    if missing:
        raise UserError(f"profile {path} lacks {', '.join(missing)}",
                        f"make it again with `inv detect --save {path}`")
    try:
        parch = resolve(str(doc["arch"]))
    except UserError:
        raise UserError(f"profile {path} names an unknown arch {doc['arch']!r}",
                        f"make it again with `inv detect --save {path}`") from None
    if arch is not None and arch.name != parch.name:
        raise UserError(f"profile {path} is for {parch.name}, not {arch.name}",
                        f"use --arch {parch.name}, or a profile of an {arch.name} target")
    config = doc.get("config")
    if config is not None and not isinstance(config, str):
        raise UserError(f"profile {path}: config is not text",
                        f"make it again with `inv detect --save {path}`")
    if config is not None and doc.get("config_sha256") and \
            hashlib.sha256(config.encode()).hexdigest() != doc["config_sha256"]:
        raise UserError(f"profile {path}: its config does not match its config_sha256 (edited "
                        "or damaged)", f"make it again with `inv detect --save {path}`")
    seed = str(doc.get("randstruct_seed") or "")
    if seed:
        check_seed(seed, str(doc.get("vermagic") or ""), f"profile {path}")
    split_release(str(doc["release"]))
    return Profile(str(doc["release"]), parch, str(doc["compiler"]), str(doc.get("build") or ""),
                   str(doc.get("vermagic") or ""), config, str(doc.get("kernel_image") or ""),
                   str(doc.get("sig_enforce") or ""), str(doc.get("lockdown") or ""), seed,
                   str(path))


# --- the fidelity gate -------------------------------------------------------------------------

def config_file(profile: Profile, cache_dir: Path) -> Path:
    """The profile's config as a file a build takes (named by content: stable hashes)."""
    if profile.config is None:
        raise UserError(f"profile {profile.source} has no kernel config (the target had no "
                        "/proc/config.gz)", "give the target's config with --config FILE, or "
                        "capture a target built with CONFIG_IKCONFIG_PROC=y")
    path = Path(cache_dir) / "profiles" / f"{profile.config_sha256[:16]}.config"
    if not path.is_file():
        write_text(path, profile.config)
    return path


def config_risks(profile: Profile, final: Mapping[str, str],
                 toolchain: frozenset[str] = frozenset()) -> list[kconfig.Change]:
    """Symbols olddefconfig moved away from the target's config (toolchain ones aside:
    the compiler check covers them)."""
    wanted = kconfig.parse(profile.config or "")
    return [c for c in kconfig.changes(wanted, dict(final))
            if not kconfig.is_toolchain(c.symbol, toolchain)]


def check_config(profile: Profile, out: Path, allow_mismatch: bool) -> None:
    """After the config step: the compiler must be the target's, and every moved symbol is
    reported as a fidelity risk."""
    final = kconfig.parse((out / "config").read_text())
    from .kernel import toolchain_symbols
    toolchain = toolchain_symbols(out)
    ours = final.get("CONFIG_CC_VERSION_TEXT", "").strip('"')
    if ours != profile.compiler:
        if not allow_mismatch:
            raise UserError(f"the build image's compiler is {ours!r}, the target kernel was "
                            f"built with {profile.compiler!r}",
                            "use a build image with that compiler (--build-image), or "
                            "--allow-mismatch to build anyway (modules may not load)")
        ui.warn(f"compiler {ours!r} differs from the target's {profile.compiler!r} "
                "(--allow-mismatch)")
    risks = config_risks(profile, final, toolchain)
    for change in risks:
        ui.warn(f"fidelity risk: {change}")
    if risks:
        ui.warn(f"{len(risks)} config symbols differ from the target after olddefconfig: "
                f"{kconfig.summary(risks, 4)}")
    if any(final.get(s) == "y" for s in RANDSTRUCT) and not profile.randstruct_seed:
        if not allow_mismatch:
            raise UserError(f"the target {profile.release} uses RANDSTRUCT and the profile "
                            "carries no randstruct_seed: its modules would never load there",
                            "add the target's seed: inv detect ... --randstruct-seed FILE "
                            "--save PROFILE (or --allow-mismatch to build anyway)")
        ui.warn("the target uses RANDSTRUCT but the profile carries no randstruct_seed: "
                "modules built here will not match its struct layout (--allow-mismatch)")


def check_built(profile: Profile, release: str, vermagic: str, allow_mismatch: bool) -> None:
    """After the compile, before anything is tagged: the target's release and vermagic."""
    from .module import same_vermagic, vermagic_diff, words

    if release != profile.release:
        raise UserError(f"the build made release {release!r}, the target is "
                        f"{profile.release!r}", "nothing was tagged; set CONFIG_LOCALVERSION "
                        "in the profile's config to the target's suffix")
    want = profile.expected_vermagic()
    if want and vermagic and not same_vermagic(want, vermagic):
        line = (f"the build made vermagic {words(vermagic)!r}, the target has {words(want)!r} "
                f"({vermagic_diff(want, vermagic)})")
        if not allow_mismatch:
            raise UserError(line, "nothing was tagged; a module built against it would not "
                            "load on the target (--allow-mismatch to tag it anyway)")
        ui.warn(line + " (--allow-mismatch)")


def check_vermagic(profile: Profile, kernel_ref: str, vermagic: str) -> None:
    """buildmodule --profile: the kernel it builds against must give the target's vermagic."""
    from .module import same_vermagic, vermagic_diff, words

    want = profile.expected_vermagic()
    if want and not same_vermagic(want, vermagic):
        raise UserError(f"kernel {kernel_ref} has vermagic {words(vermagic)!r}, the target "
                        f"{profile.release} has {words(want)!r} ({vermagic_diff(want, vermagic)})",
                        f"build the kernel from the profile: inv build --profile "
                        f"{profile.source}")


# --- detect: the capture run through an engine --------------------------------------------------

def is_desktop(info: Mapping[str, Any]) -> bool:
    return "docker desktop" in str(info.get("OperatingSystem", "")).lower()


def run_capture(engine: Any, image: str, privileged: bool) -> str:
    """capture.sh in a container on the engine (never started with a network); its stdout.

    The host's /lib/modules is bound read-only when it exists (an in-tree module gives the
    vermagic as the kernel has it); `privileged` adds the VM's pid namespace, through which
    the script reads Docker Desktop's /etc/linuxkit.yml. The container is removed however
    the run ends.
    """
    import docker

    script = CAPTURE_SCRIPT.read_text()
    mounts = [docker.types.Mount("/lib/modules", "/lib/modules", type="bind", read_only=True)]
    container = None
    try:
        for attempt in (mounts, []):
            try:
                container = engine.client.containers.create(
                    image, ["sh", "-c", script, "capture"], network_disabled=True,
                    mounts=attempt, privileged=privileged,
                    pid_mode="host" if privileged else None, labels={"org.lkbuild.detect": "1"})
                break
            except docker.errors.APIError as exc:
                if attempt and "/lib/modules" in str(exc):
                    continue  # the engine's host has no /lib/modules: capture without it
                raise
        assert container is not None
        container.start()
        status = container.wait(timeout=120)
        output = container.logs(stdout=True, stderr=False).decode(errors="replace")
        if int(status.get("StatusCode", 1)) != 0:
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            raise UserError(f"the capture failed in {image} on {engine.describe()}: "
                            f"{' '.join(err.split())[-200:]}",
                            "pass --image with an image that has sh, base64 and gzip")
        return output
    except docker.errors.ImageNotFound:
        raise UserError(f"image {image} is not on {engine.describe()}",
                        "pull it, or pass --image with an image that has sh") from None
    except docker.errors.APIError as exc:
        raise UserError(f"the capture container failed on {engine.describe()}: "
                        f"{' '.join(str(exc.explanation or exc).split())[:200]}") from None
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass


@dataclass
class Detected:
    """A capture, what it means, and the engine's resources when it came through one."""

    capture: Capture
    profile: Profile
    engine: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str]]:
        c, p = self.capture, self.profile
        rows = [("release", c.release), ("arch", f"{p.arch.name} ({c.machine})"),
                ("build", c.build), ("compiler", p.compiler or "unknown"),
                ("vermagic", p.expected_vermagic() or "unknown"),
                ("config", f"sha256 {p.config_sha256}" if c.config is not None
                 else "none (/proc/config.gz absent)"),
                ("module signatures", {"Y": "enforced", "N": "not enforced"}.get(
                    c.sig_enforce, c.sig_enforce or "unknown")),
                ("lockdown", c.lockdown or "unknown"),
                ("kernel image", c.kernel_image or "unknown")]
        rows += [(k if k == "engine" else f"engine {k}", str(v)) for k, v in self.engine.items()]
        return rows

    def as_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.profile.as_doc().items() if k != "config"}
        doc.update({"machine": self.capture.machine, "proc_version": self.capture.proc_version,
                    "has_config": self.capture.config is not None,
                    "modules_disabled": self.capture.modules_disabled,
                    "expected_vermagic": self.profile.expected_vermagic(),
                    "engine": self.engine, "notes": self.capture.notes})
        return doc


def detect(settings: Any, *, from_dir: str = "", image: str = "", privileged: bool = False
           ) -> Detected:
    """The target: from a capture dir, else through the current engine."""
    if from_dir:
        where = Path(from_dir).expanduser()
        if where.is_file():  # capture.sh's stdout, or a console log that holds it
            capture = capture_of(parse_stream(where.read_text(errors="replace")), str(where))
        else:
            capture = capture_of(read_dir(where), f"capture dir {where}")
        return Detected(capture, profile_of(capture, str(where)))
    from . import engine as enginemod
    from . import kernel

    eng = enginemod.connect(settings)
    try:
        info = eng.info()
        if privileged and not is_desktop(info):
            ui.warn(f"{eng.describe()} is not Docker Desktop ({info.get('OperatingSystem')}): "
                    "there is no /etc/linuxkit.yml to read; capturing the rest without "
                    "--privileged")
            privileged = False
        elif privileged:
            ui.info("--privileged: reading /etc/linuxkit.yml of Docker Desktop's VM through a "
                    "container in its pid namespace (the capture only reads files)")
        use = image or settings.build_image or CAPTURE_IMAGE
        kernel.ensure_build_image(eng, use)
        capture = capture_of(parse_stream(run_capture(eng, use, privileged)),
                             f"the capture on {eng.describe()}")
        if is_desktop(info) and not capture.linuxkit_yml and not privileged:
            capture.notes.append("the Docker Desktop kernel image name is in /etc/linuxkit.yml "
                                 "of its VM: run with --privileged to read it")
        from .resources import check_engine_disk
        disk = check_engine_disk(settings, eng)
        facts = {"engine": eng.describe(), "os": str(info.get("OperatingSystem", "")),
                 "cpus": eng.cpus, "memory": f"{eng.memory / 2**30:.1f} GiB",
                 "disk": disk.detail + (f" ({disk.fix})" if disk.fix else "")}
        return Detected(capture, profile_of(capture, eng.describe()), facts)
    finally:
        eng.close()
