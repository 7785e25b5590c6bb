"""What a build must match of its target kernel, and the checks that refuse one that does not.

A module loads only into a kernel whose vermagic it carries, and a kernel built for a target
(a profile, Docker Desktop's or any) is of use only when it reproduces that target: the
release and vermagic, the profile's config (olddefconfig must not move its symbols), the
RANDSTRUCT seed when the target has one (struct layout, and the hash in its vermagic), and
the compiler. The kernel and module builds both check these, and detect writes the profile
they check against, so the profile and the checks live here, below all three.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from . import kconfig, kconfig_tree, ui
from .arch import Arch, resolve
from .atomic import write_text
from .errors import UserError

PROFILE_FORMAT = 1
RANDSTRUCT = ("CONFIG_RANDSTRUCT_FULL", "CONFIG_RANDSTRUCT_PERFORMANCE")
SEED_RE = re.compile(r"[0-9a-f]{64}")
SEED_HASH_RE = re.compile(r"(?:^|\s)RANDSTRUCT_([0-9a-f]{64})(?:\s|$)")


# --- vermagic ----------------------------------------------------------------------------------

def words(text: str) -> str:
    """A vermagic with its spacing normalised (the kernel's ends in a space)."""
    return " ".join(str(text).split())


def config_vermagic(release: str, config: Mapping[str, str], arch: Arch) -> str:
    """The vermagic include/linux/vermagic.h gives a kernel with this release and config.

    A RANDSTRUCT kernel's seed hash is not in the config: the last word is then
    `RANDSTRUCT_?`, which `same_vermagic` treats as any seed.
    """
    out = [release]
    on = {k for k, v in config.items() if v == "y"}
    if "CONFIG_SMP" in on:
        out.append("SMP")
    if "CONFIG_PREEMPT_BUILD" in on:
        out.append("preempt")
    elif "CONFIG_PREEMPT_RT" in on:
        out.append("preempt_rt")
    if "CONFIG_MODULE_UNLOAD" in on:
        out.append("mod_unload")
    if "CONFIG_MODVERSIONS" in on:
        out.append("modversions")
    if arch.vermagic:
        out.append(arch.vermagic)
    if on.intersection(RANDSTRUCT):
        out.append("RANDSTRUCT_?")
    return " ".join(out)


def same_vermagic(kernel_side: str, module_side: str) -> bool:
    a, b = words(kernel_side), words(module_side)
    if a.endswith(" RANDSTRUCT_?"):
        seeded = re.search(r" RANDSTRUCT_\S+$", b)
        return seeded is not None and a[:-len(" RANDSTRUCT_?")] == b[:seeded.start()]
    return a == b


def vermagic_diff(kernel_side: str, module_side: str) -> str:
    """The fields that differ, for a one-line refusal: `release 6.12.54 vs 6.12.54-x, ...`."""
    a, b = words(kernel_side).split(), words(module_side).split()
    parts = []
    if (a[:1] or [""]) != (b[:1] or [""]):
        parts.append(f"release {a[0] if a else '?'} vs {b[0] if b else '?'}")
    fa, fb = set(a[1:]), set(b[1:])
    if fa - fb:
        parts.append(f"kernel has {' '.join(sorted(fa - fb))}")
    if fb - fa:
        parts.append(f"module has {' '.join(sorted(fb - fa))}")
    return ", ".join(parts) or "same words in another order"


# --- the profile -------------------------------------------------------------------------------

def split_release(release: str) -> tuple[str, str]:
    """`6.12.54-linuxkit` -> (`6.12.54`, `-linuxkit`)."""
    found = re.match(r"(\d+\.\d+(?:\.\d+)?)(.*)$", release)
    if not found:
        raise UserError(f"kernel release {release!r} does not start with a version",
                        "capture the target again")
    return found.group(1), found.group(2)


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
                 facts: kconfig_tree.Facts | None = None) -> list[kconfig.Change]:
    """Symbols olddefconfig moved away from the target's config (toolchain ones aside:
    the compiler check covers them)."""
    found = kconfig.classify(kconfig.parse(profile.config or ""), final, facts)
    return sorted(found.nonfinal + found.computed + found.version, key=lambda c: c.symbol)


def check_config(profile: Profile, out: Path, allow_mismatch: bool) -> None:
    """After the config step: the compiler must be the target's, and every moved symbol is
    reported as a fidelity risk."""
    final = kconfig.parse((out / "config").read_text())
    facts = kconfig_tree.read(out / "kconfig.tgz", profile.arch.kernel_arch)
    ours = final.get("CONFIG_CC_VERSION_TEXT", "").strip('"')
    if ours != profile.compiler:
        if not allow_mismatch:
            raise UserError(f"the build image's compiler is {ours!r}, the target kernel was "
                            f"built with {profile.compiler!r}",
                            "use a build image with that compiler (--build-image), or "
                            "--allow-mismatch to build anyway (modules may not load)")
        ui.warn(f"compiler {ours!r} differs from the target's {profile.compiler!r} "
                "(--allow-mismatch)")
    risks = config_risks(profile, final, facts)
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
    want = profile.expected_vermagic()
    if want and not same_vermagic(want, vermagic):
        raise UserError(f"kernel {kernel_ref} has vermagic {words(vermagic)!r}, the target "
                        f"{profile.release} has {words(want)!r} ({vermagic_diff(want, vermagic)})",
                        f"build the kernel from the profile: inv build --profile "
                        f"{profile.source}")
