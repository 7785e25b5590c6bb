"""Failure diagnosis: from a build log to one line of cause and one line of fix.

The failures users lose days to (out of memory, a full disk, a locked credential helper, the
wrong Docker context, a patch that no longer applies, a config that is not final) each leave a
recognisable line in the log. The table is data so the troubleshooting docs can be checked
against the same rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    cause: str
    fix: str
    user: bool = False  # the input is at fault (exit 2), not the build or the machine
    hint: re.Pattern[str] | None = None  # a line that makes the fix exact, when the log has it
    hint_fix: str = ""


@dataclass(frozen=True)
class Diagnosis:
    name: str
    cause: str
    fix: str
    user: bool = False


RULES: tuple[Rule, ...] = (
    Rule("patch", re.compile(r"lkbuild: patch (?P<patch>\S+) does not apply: (?P<hunk>.*)"),
         "patch {patch} does not apply ({hunk})",
         "rebase the patch onto this kernel version or remove it from the series"),
    Rule("out-of-memory", re.compile(
        r"Killed signal terminated program|exit code: 137|out of memory|"
        r"Cannot allocate memory|virtual memory exhausted|oom-kill", re.I),
         "the build ran out of memory",
         "lower --jobs (inv doctor shows what the engine's memory allows) or give the engine "
         "more memory",
         hint=re.compile(r"the builder's memory \((?P<where>[^)]*)\) allows -j(?P<jobs>\d+)"),
         hint_fix="use --jobs {jobs}, what the builder's memory ({where}) allows, or leave "
                  "--jobs out (automatic jobs fit it)"),
    Rule("disk-full", re.compile(
        r"no space left on device|input/output error|Cannot write: I/O error|"
        r"metadata_v2\.db", re.I),
         "the builder's disk is full or its storage failed",
         "free at least 30 GB where the engine keeps its data (docker system prune, or a larger "
         "Docker Desktop disk image), then restart the engine if the error persists"),
    Rule("credentials", re.compile(
        r"error getting credentials|keychain cannot be accessed|"
        r"docker-credential-\S+: executable file not found", re.I),
         "the Docker credential helper could not run",
         "put the helper on PATH (inv doctor prints the exact export line) or build from a "
         "logged-in terminal"),
    Rule("context", re.compile(
        r"Cannot connect to the Docker daemon|unable to create or find builder|"
        r"context \S+ does not exist|no such host", re.I),
         "the Docker engine of the chosen context is not reachable",
         "check `docker context ls` and pass --context NAME (or LKBUILD_CONTEXT)"),
    Rule("build-image", re.compile(
        r"pull access denied|failed to resolve source metadata for (?P<image>\S+)|"
        r"lkbuild: build image lacks:(?P<tools>.*)", re.I),
         "the build image is missing or incomplete",
         "make the offline one with `inv bootstrap-image` and pass --build-image "
         "lkbuild/build:bookworm (or set LKBUILD_BUILD_IMAGE)"),
    Rule("cross-compiler", re.compile(r"(?P<cc>\S+-linux-gnu-gcc): (not found|No such file)"),
         "the build image has no cross compiler {cc}",
         "use an image with the cross compiler (inv bootstrap-image) or build with --native"),
    Rule("no-kernel-dev", re.compile(r"lkbuild: the kernel image('s /kernel-dev\.tar has no "
                                     r"usr/src/<dir>/\.config| has no /kernel-dev\.tar)"),
         "the kernel image has no usable /kernel-dev.tar",
         "modules need the kernel's headers: use an image with /kernel-dev.tar (every lkbuild "
         "and linuxkit kernel image has one)", user=True),
    Rule("no-ko", re.compile(r"lkbuild: the module build made no \.ko files"),
         "the module build made no .ko files",
         "the Makefile's default target must build the modules (make -C $KERNELDIR M=$PWD "
         "modules), or use a Kbuild file with obj-m", user=True),
    Rule("compile", re.compile(r"(?P<line>\S+:\d+:\d+: error: .*)"),
         "the compiler failed: {line}",
         "fix the source, patch or config the error points at"),
)


def diagnose(text: str) -> Diagnosis | None:
    """The first rule, in table order, whose pattern the log matches."""
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            fields = {k: (v or "").strip() for k, v in match.groupdict().items()}
            hint = rule.hint.search(text) if rule.hint else None
            fix = rule.hint_fix.format(**hint.groupdict()) if hint else rule.fix
            return Diagnosis(rule.name, rule.cause.format(**fields), fix, rule.user)
    return None


def diagnose_file(path: Path) -> Diagnosis | None:
    try:
        return diagnose(path.read_text(errors="replace"))
    except OSError:
        return None
