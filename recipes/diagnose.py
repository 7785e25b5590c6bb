"""Failure diagnosis: from a build log to one line of cause and one line of fix.

The failures users lose days to (out of memory, a full disk, a locked credential helper, the
wrong Docker context, a patch that no longer applies) each leave a recognisable line in the
log. Others (a config that is not final, a changed host key, ...) lkbuild finds itself and
raises in its own words. Both kinds are rows of one table, FAILURES, so the troubleshooting
page (docs/troubleshooting.md) is rendered from the same data the diagnosis uses and cannot
drift from it: `python -m recipes.diagnose --write` regenerates it.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text
from .errors import BuildError, LkbuildError, UserError

DOC = Path(__file__).resolve().parent.parent / "docs" / "troubleshooting.md"
REGENERATE = "python -m recipes.diagnose --write"


@dataclass(frozen=True)
class Rule:
    """A failure read from a failed step's log; the first matching rule in FAILURES wins."""

    name: str
    pattern: re.Pattern[str]
    cause: str  # one line; {group} is a named group of the pattern
    fix: str  # one line
    seen: tuple[str, ...]  # lines real logs carry: the docs' symptom, and each must match
    more: str = ""  # for the docs only: what lkbuild does about it, the longer fix
    user: bool = False  # the input is at fault (exit 2), not the build or the machine
    hint: re.Pattern[str] | None = None  # a line that makes the fix exact, when the log has it
    hint_fix: str = ""


@dataclass(frozen=True)
class Check:
    """A failure lkbuild finds itself (before, after or outside a build) and raises directly.

    It is never looked for in a log; it is in the table so the docs list it beside the rest.
    """

    name: str
    symptom: str  # the message as a user sees it
    cause: str
    fix: str
    source: str  # the checkout's file that raises it
    says: tuple[str, ...]  # fixed words of the message as that file spells them


Failure = Rule | Check


@dataclass(frozen=True)
class Diagnosis:
    """What a failed step's log says went wrong, in the words the user is shown."""

    name: str
    cause: str
    fix: str
    user: bool = False

    def error(self, what: str, log: Path) -> LkbuildError:
        """The error a failed step raises: cause, fix and the log, on the one line printed."""
        kind = UserError if self.user else BuildError
        return kind(f"{what} failed: {self.cause}", f"{self.fix}; log: {log}")


FAILURES: tuple[Failure, ...] = (
    # --- read from the log, in the order they are tried --------------------------------------
    Rule(
        "patch",
        re.compile(r"lkbuild: patch (?P<patch>\S+) does not apply: (?P<hunk>.*)"),
        cause="patch {patch} does not apply ({hunk})",
        fix="rebase the patch onto this kernel version or remove it from the series",
        seen=("lkbuild: patch bad-makefile.patch does not apply: Hunk #1 FAILED at 1.",),
        more="The patches of the series (and of its variant) are applied in name order; "
             "patch's own output is in the log just above that line",
        user=True),
    Rule(
        "out-of-memory",
        re.compile(r"Killed signal terminated program|exit code: 137|\] Error 137\b|"
                   r"\] Killed\s*$|out of memory|Cannot allocate memory|virtual memory exhausted|"
                   r"oom-kill", re.I | re.M),
        cause="the build ran out of memory",
        fix="lower --jobs (inv doctor shows what the engine's memory allows) or give the engine "
            "more memory",
        seen=("gcc: fatal error: Killed signal terminated program cc1",
              "make[4]: *** [scripts/Makefile.build:234: fs/btrfs/inode.o] Killed",
              "did not complete successfully: exit code: 137"),
        more="Make then stops with `exit code: 2`, as `-j8` did on the 7.75 GB Docker Desktop "
             "VM of the 6.12.54 build log. Without --jobs, lkbuild picks make jobs from the "
             "engine's cpus and memory (that VM gets at most 3) and the builder lowers them to "
             "its own memory limit; when --jobs asked for more than the builder's limit allows, "
             "the fix names the number that fits (`use --jobs N`). Or raise the VM's memory in "
             "Docker Desktop, Settings, Resources",
        hint=re.compile(r"is more than the builder's memory \((?P<where>[^)]*)\) "
                        r"allows -j(?P<jobs>\d+)"),
        hint_fix="use --jobs {jobs}, what the builder's memory ({where}) allows, or leave "
                 "--jobs out (automatic jobs fit it)"),
    Rule(
        "disk-full",
        re.compile(r"no space left on device", re.I),
        cause="the builder's disk is full",
        fix="free at least 30 GB where the engine keeps its data (docker system prune; inv "
            "doctor shows how much is free there)",
        seen=("no space left on device",
              "lib/zstd/decompress/huf_decompress.c:1740:1: fatal error: error writing to "
              "/tmp/ccQ2xV1a.s: No space left on device"),
        more="`inv doctor` and every build check the free disk in the cache, in the engine's data "
             "root (inside Docker Desktop's VM too, with `df` in a container of the build "
             "image) and, on a Mac, on the disk `Docker.raw` grows into, against `min_free_gb`; "
             "on a Mac, also limit Docker.raw (Settings, Resources, Disk image size: doctor "
             "names a size the Mac can hold)"),
    Rule(
        "storage-io",
        re.compile(r"input/output error|Cannot write: I/O error", re.I),
        cause="the builder's storage failed to write (an I/O error): most often its disk is "
              "full, else its state is damaged",
        fix="free disk space where the engine keeps its data (inv doctor shows how much is "
            "free), then restart the engine (Docker Desktop: quit it and open it again)",
        seen=("write /var/lib/buildkit/runc-overlayfs/metadata_v2.db: input/output error",
              "tar: Cannot write: I/O error"),
        more="On a Mac: `osascript -e 'quit app \"Docker\"' && open -a Docker`, then check with "
             "`docker --context desktop-linux ps`; if the error stays, Docker Desktop's "
             "Troubleshoot, Clean / Purge data"),
    Rule(
        "credentials",
        re.compile(r"error getting credentials|keychain cannot be accessed|"
                   r"docker-credential-\S+: executable file not found", re.I),
        cause="the Docker credential helper could not run",
        fix="put the helper on PATH (inv doctor prints the exact export line) or build from a "
            "logged-in terminal",
        seen=("error getting credentials - err: exit status 1, out: `keychain cannot be "
              "accessed because the current session does not allow user interaction`",),
        more="Over SSH on a Mac, `docker-credential-desktop` is not on PATH and the keychain is "
             "locked; `inv doctor` finds the helper named in `~/.docker/config.json` and prints "
             "`export PATH=\"/Applications/Docker.app/Contents/Resources/bin:$PATH\"`"),
    Rule(
        "context",
        re.compile(r"Cannot connect to the Docker daemon|error during connect|"
                   r"context not found|context \S+ does not exist", re.I),
        cause="the Docker engine of the chosen context is not reachable",
        fix="check `docker context ls` and pass --context NAME (or LKBUILD_CONTEXT), or start "
            "the engine",
        seen=("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
              "daemon running?",
              'context "desktop-linux": context not found'),
        more="On a Mac the `default` context points at `/var/run/docker.sock`, which does not "
             "exist, while `desktop-linux` is the running one (by hand, linuxkit says "
             "`creating builder container ... in context 'default'`). lkbuild uses the active "
             "context (or --context / LKBUILD_CONTEXT), names it in its output, and when the "
             "socket is missing names the context that is alive: `docker context use "
             "desktop-linux`"),
    Rule(
        "build-image",
        re.compile(r"pull access denied|failed to resolve source metadata for (?P<image>\S+)|"
                   r"lkbuild: build image lacks:(?P<tools>.*)", re.I),
        cause="the build image is missing or incomplete",
        fix="make the offline one with `inv bootstrap-image` and pass --build-image "
            "lkbuild/build:bookworm (or set LKBUILD_BUILD_IMAGE)",
        seen=("failed to resolve source metadata for "
              "docker.io/linuxkit/alpine:35b33c6b03c40e51046c3b053dd131a68a26c37a",
              "lkbuild: build image lacks: bc flex"),
        more="The series' `BUILD_IMAGE` is pulled from its registry; where none is reachable, "
             "the offline image is made from a Debian mirror"),
    Rule(
        "cross-compiler",
        re.compile(r"(?P<cc>\S+-linux-gnu-gcc): (not found|No such file)"),
        cause="the build image has no cross compiler {cc}",
        fix="use an image with the cross compiler (inv bootstrap-image) or build with --native",
        seen=("/bin/sh: 1: aarch64-linux-gnu-gcc: not found",)),
    Rule(
        "no-kernel-dev",
        re.compile(r"lkbuild: the kernel image('s /kernel-dev\.tar has no "
                   r"usr/src/<dir>/\.config| has no /kernel-dev\.tar)"),
        cause="the kernel image has no usable /kernel-dev.tar",
        fix="modules need the kernel's headers: use an image with /kernel-dev.tar (every lkbuild "
            "and linuxkit kernel image has one)",
        seen=("lkbuild: the kernel image has no /kernel-dev.tar",),
        user=True),
    Rule(
        "no-ko",
        re.compile(r"lkbuild: the module build made no \.ko files"),
        cause="the module build made no .ko files",
        fix="the Makefile's default target must build the modules (make -C $KERNELDIR M=$PWD "
            "modules), or use a Kbuild file with obj-m",
        seen=("lkbuild: the module build made no .ko files",),
        user=True),
    Rule(
        "compile",
        re.compile(r"(?P<line>\S+:\d+:\d+: (fatal )?error: .*)"),
        cause="the compiler failed: {line}",
        fix="fix the source, patch or config the error points at",
        seen=("lib/zstd/decompress/huf_decompress.c:586:27: error: 'dtd' undeclared (first use "
              "in this function)",
              "include/linux/kconfig.h:5:10: fatal error: generated/autoconf.h: No such file or "
              "directory"),
        more="A module build also prints the compiler's own error lines above it"),

    # --- found by lkbuild itself ------------------------------------------------------------
    Check(
        "config-not-final",
        symptom="config 6.12.x/config-aarch64 is not final (1 symbols change): "
                "CONFIG_SERIAL_8250_CONSOLE: y -> not set",
        cause="olddefconfig changes a symbol the config sets and a user can set (it has a "
              "prompt): the build would not be the config asked for, so lkbuild stops before "
              "compiling",
        fix="run the `inv kconfig --version V --arch A --olddefconfig --save` the message names "
            "and review the changes; the shipped configs are regenerated with `inv kconfig "
            "--version V --regenerate`. Symbols no user sets (the compiler's, the ones the kernel "
            "computes, the ones new in or gone from this point release) are warnings; "
            "`--strict-config` makes every change this error, as linuxkit does",
        source="recipes/kernel.py", says=("is not final (",)),
    Check(
        "fragment-unmet",
        symptom="fragment settings did not stick (1): CONFIG_ZFS_DEP: y -> not set",
        cause="a fragment sets an option whose dependency is not enabled, so olddefconfig "
              "dropped it",
        fix="add the dependency to the fragment",
        source="recipes/kernel.py", says=("fragment settings did not stick",)),
    Check(
        "checksum",
        symptom="linux-6.12.54.tar.xz from URL does not match its checksum: expected sha256 "
                "..., got ...",
        cause="a corrupted or tampered download",
        fix="lkbuild removed the file; run `inv fetch` again, or use another --source or mirror",
        source="recipes/sources.py",
        says=("does not match its checksum", "does not match its pin")),
    Check(
        "signature",
        symptom="bad signature on sha256sums.asc: ...",
        cause="the checksum list was altered or not signed by a key in the keyring",
        fix="nothing was downloaded; check the keyring (--keyring, LKBUILD_KEYRING) and the "
            "mirror",
        source="recipes/sources.py", says=("bad signature on",)),
    Check(
        "profile-compiler",
        symptom="the build image's compiler is '...', the target kernel was built with '...'",
        cause="a profile build would compile with another compiler than the target's (Docker "
              "Desktop's kernels are built with Alpine's gcc)",
        fix="--build-image with that compiler, or --allow-mismatch to build anyway (modules may "
            "then not load)",
        source="recipes/fidelity.py", says=("the build image's compiler is",)),
    Check(
        "module-compiler",
        symptom="kernel IMAGE was built with 'gcc (...) 12.2.0' but BUILDER has "
                "'gcc (...) 13.2.1'",
        cause="the module would be compiled with another compiler than the kernel",
        fix="use the kernel's own -builder image (the default when it exists) or "
            "--builder-image with the same compiler",
        source="recipes/module.py", says=("was built with", "no such compiler")),
    Check(
        "module-config",
        symptom="kernel IMAGE lacks what zfs needs (1): CONFIG_BLOCK must be y or m ...",
        cause="the kernel's config misses options the module needs",
        fix="build a kernel with them: `inv build --fragment FILE` (for OpenZFS see "
            "`tests/data/zfs.fragment`)",
        source="recipes/module.py", says=("lacks what",)),
    Check(
        "vermagic",
        symptom="lkbuild-loader: error: vermagic mismatch: the running kernel has '...', these "
                "modules were built for '...'",
        cause="the modules were built for another kernel (release, localversion, SMP/preempt "
              "flags or RANDSTRUCT seed differ); the kernel would refuse them with `version "
              "magic ... should be ...`",
        fix="capture the running kernel (`inv detect --save target.yaml`, on Docker Desktop with "
            "--privileged for its kernel image name) and build with `inv build --profile "
            "target.yaml` and `inv buildmodule --profile target.yaml`, or against the running "
            "kernel's image: `inv buildmodule --kernel IMAGE`",
        source="module/scripts/load.sh", says=("vermagic mismatch: the running kernel has",)),
    Check(
        "busybox",
        symptom="no static busybox for arm64 (looked at ...)",
        cause="the loader image and VM tests need a static busybox for the target arch",
        fix="the message prints the exact commands (Debian's busybox-static)",
        source="recipes/vm.py", says=("no static busybox for",)),
    Check(
        "host-key-unknown",
        symptom="host key of [HOST]:PORT is not known: ssh-ed25519 SHA256:...",
        cause="the build host's key is not in known_hosts",
        fix="check the fingerprint with the host's owner, then --accept-new-host-key (or "
            "ssh-keyscan, as the message says)",
        source="recipes/ssh.py", says=("is not known: ",)),
    Check(
        "host-key-changed",
        symptom="HOST KEY OF HOST HAS CHANGED: known_hosts has SHA256:..., the host sent "
                "SHA256:...",
        cause="the host's key differs from the one in known_hosts: a reinstalled host, or "
              "someone in between",
        fix="find out which; only then remove the old line with `ssh-keygen -R`",
        source="recipes/ssh.py", says=("HAS CHANGED: known_hosts has",)),
    Check(
        "docker-permission",
        symptom="USER on HOST may not use docker (permission denied on its socket)",
        cause="the SSH user is not in the host's docker group",
        fix="`sudo usermod -aG docker USER` there, then log in again",
        source="recipes/ssh.py", says=("may not use docker",)),
    Check(
        "registry-login",
        symptom="registry HOST needs a login; registry HOST refused the credentials of 'USER'",
        cause="no or wrong credentials for that registry in the Docker config",
        fix="`docker login HOST`; lkbuild reads the same config and credential helpers",
        source="recipes/registry.py", says=("needs a login", "refused the credentials of")),
    Check(
        "tag-conflict",
        symptom="REF already holds other content (...), ours is ...",
        cause="the tag was pushed from another build (another config, or rebuilt with other "
              "inputs)",
        fix="nothing was pushed; check which one you mean, and --force moves the tag",
        source="recipes/push.py", says=("already holds other content",)),
    Check(
        "oci-index",
        symptom="registry HOST refused the OCI index for REPO:TAG",
        cause="some registries will not replace a tag holding an old Docker manifest list with "
              "an OCI index",
        fix="delete that tag in the registry, or push under a new version, then push again",
        source="recipes/registry.py", says=("refused the OCI index for",)),
    Check(
        "no-series",
        symptom="no series 6.13.x for kernel 6.13.2 in /path/to/kernel",
        cause="the kernel tree has no dir for that series",
        fix="`inv add-kernel --version 6.13.2` starts it from the nearest earlier series",
        source="recipes/series.py", says=("no series ",)),
)

RULES: tuple[Rule, ...] = tuple(f for f in FAILURES if isinstance(f, Rule))
CHECKS: tuple[Check, ...] = tuple(f for f in FAILURES if isinstance(f, Check))


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
    """An unreadable log is not diagnosed: the caller still reports the exit code and path."""
    try:
        return diagnose(path.read_text(errors="replace"))
    except OSError:
        return None


# --- the troubleshooting page ----------------------------------------------------------------

INTRO = """\
Every failure lkbuild reports is one `lkbuild: error:` line on stderr: what went wrong, then in
parentheses what to do. Any failure not listed here prints such a line too; `LKBUILD_DEBUG=1`
adds the traceback of an unexpected one."""

LOG_INTRO = """\
A failed build step's output is kept in a log under `$XDG_CACHE_HOME/lkbuild/logs`. lkbuild
reads it, and the first row below whose symptom it finds names the failure:
`lkbuild: error: STEP failed: CAUSE (FIX; log: PATH)`. Rows are tried in this order, so out of
memory wins over the compile errors it causes. A log none of them matches gives the step's
exit code and the log path."""

CHECK_INTRO = """\
lkbuild finds these itself, before a step runs (a config that is not final stops the build
before compiling), when it checks a result, or outside a build, and says so in its own words."""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    """A code span, with wider fences when the text has backticks of its own."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _placeholders(text: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), text)


def _row(symptom: str, cause: str, todo: str) -> str:
    return f"| {_cell(symptom)} | {_cell(cause)} | {_cell(todo)} |"


def markdown(failures: Sequence[Failure] = FAILURES) -> str:
    """docs/troubleshooting.md, rendered from the table (symptom, cause, what to do)."""
    head = ["| symptom | cause | what to do |", "|---|---|---|"]
    logs = [_row(", ".join(_code(s) for s in f.seen), _placeholders(f.cause),
                 f"{f.fix}{'. ' + f.more if f.more else ''}")
            for f in failures if isinstance(f, Rule)]
    checks = [_row(_code(f.symptom), f.cause, f.fix) for f in failures if isinstance(f, Check)]
    parts = [
        f"<!-- Generated from FAILURES in recipes/diagnose.py by `{REGENERATE}`: "
        "edit the table there, not this file. -->",
        "# Troubleshooting", INTRO,
        "## Read from the build log", LOG_INTRO, "\n".join(head + logs),
        "## Checked by lkbuild", CHECK_INTRO, "\n".join(head + checks),
    ]
    return "\n\n".join(parts) + "\n"


ERROR_LINE = re.compile(r"(error:|Error \d+|undefined!|No rule to make target|not found)")


def error_lines(log: Path, limit: int = 8) -> list[str]:
    """The compiler's own error lines from a build log, without BuildKit's step prefixes."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        line = re.sub(r"^(#\d+ )?\d+\.\d+ ", "", line).rstrip()
        if ERROR_LINE.search(line) and not line.startswith(("ERROR: process", "------")) \
                and line not in out:
            out.append(line)
    return out[:limit]


def step_error(code: int, log: Path, what: str) -> LkbuildError:
    """A failed build step as one line: the diagnosed cause and fix, else the last error
    line the log holds (or the exit code), with the log path either way."""
    found = diagnose_file(log)
    if found is not None:
        return found.error(what, log)
    lines = error_lines(log, 3)
    detail = f": {lines[-1]}" if lines else f" (buildx exit {code})"
    return BuildError(f"{what} failed{detail}", f"see the log: {log}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the troubleshooting page, or replace docs/troubleshooting.md with it."""
    parser = argparse.ArgumentParser(prog="python -m recipes.diagnose",
                                     description="render docs/troubleshooting.md from FAILURES")
    parser.add_argument("--write", action="store_true", help=f"write it to {DOC}")
    args = parser.parse_args(argv)
    if args.write:
        write_text(DOC, markdown())
        print(DOC)
    else:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
