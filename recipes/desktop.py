"""The target kernel (Docker Desktop's, or any): captured from the kernel itself, detected.

A module loads only into the kernel whose release, config, compiler and vermagic it was built
for, and Docker Desktop's kernel shares its version number with linuxkit's while differing in
those. So the target is read from the running kernel itself (`capture.sh`, the same script in a
container, a VM or on a host) and becomes a profile; what a profile build must then match, and
the checks that hold it to that, are in fidelity.py.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kconfig, ui
from .arch import from_uname
from .errors import UserError
from .fidelity import Profile

CAPTURE_SCRIPT = Path(__file__).parent / "data" / "capture.sh"
CAPTURE_IMAGE = "alpine:3.20"
"""Where the capture runs when neither --image nor build_image names one: small, with sh."""
BEGIN, END = "lkbuild-capture-begin ", "lkbuild-capture-end "
KERNEL_IMAGE_RE = re.compile(r"^\s*image:\s*[\"']?(\S*?(?:for-desktop-kernel|/kernel):[^\"'\s]+)",
                             re.M)


# --- the capture -------------------------------------------------------------------------------

def parse_stream(text: str) -> dict[str, str]:
    """capture.sh's stdout (or a console log holding it) -> {fact: text}."""
    facts: dict[str, str] = {}
    name = ""
    lines: list[str] = []
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


def profile_of(capture: Capture, source: str) -> Profile:
    """The profile a capture gives: what a build for this target must reproduce."""
    arch = from_uname(capture.machine)
    if arch is None:
        raise UserError(f"the target's machine {capture.machine!r} is not an arch lkbuild "
                        "builds", "lkbuild builds amd64 (x86_64) and arm64 (aarch64)")
    return Profile(capture.release, arch, capture.compiler, capture.build, capture.vermagic,
                   capture.config, capture.kernel_image, capture.sig_enforce,
                   capture.lockdown, source=source)


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
        output: str = container.logs(stdout=True, stderr=False).decode(errors="replace")
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
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)


@dataclass
class Detected:
    """A capture, what it means, and the engine's resources when it came through one."""

    capture: Capture
    profile: Profile
    engine: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)  # in-tree recipe -> how it has it

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
        if self.modules:
            rows.append(("in-tree modules", ", ".join(f"{name}: {state}" for name, state
                                                      in self.modules.items())))
        rows += [(k if k == "engine" else f"engine {k}", str(v)) for k, v in self.engine.items()]
        return rows

    def as_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.profile.as_doc().items() if k != "config"}
        doc.update({"machine": self.capture.machine, "proc_version": self.capture.proc_version,
                    "has_config": self.capture.config is not None,
                    "modules_disabled": self.capture.modules_disabled,
                    "expected_vermagic": self.profile.expected_vermagic(),
                    "engine": self.engine, "notes": self.capture.notes,
                    "modules": self.modules})
        return doc


def detect(settings: Any, *, from_dir: str = "", image: str = "", privileged: bool = False
           ) -> Detected:
    """The target, and which in-tree recipes' modules its config has."""
    found = _detect(settings, from_dir=from_dir, image=image, privileged=privileged)
    if found.profile.config:
        from .kconfig import parse
        from .modrecipe import in_tree_status

        found.modules = in_tree_status(Path(settings.module_dir), parse(found.profile.config))
    return found


def _detect(settings: Any, *, from_dir: str = "", image: str = "", privileged: bool = False
            ) -> Detected:
    """The target: from a capture dir, else through the current engine."""
    if from_dir:
        where = Path(from_dir).expanduser()
        if where.is_file():  # capture.sh's stdout, or a console log that holds it
            capture = capture_of(parse_stream(where.read_text(errors="replace")), str(where))
        else:
            capture = capture_of(read_dir(where), f"capture dir {where}")
        return Detected(capture, profile_of(capture, str(where)))
    from . import engine as enginemod, kernel

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
