"""Kernel config files: parse, compare, and say which symbols changed.

linuxkit requires a config to be final: running it through the kernel's config tool must
change nothing. A raw diff of two 7000-line files hides the answer, so lkbuild reports the
symbols that changed (`CONFIG_X: y -> not set`). Symbols that only describe the toolchain
(compiler version, assembler features) follow the compiler, not the user: they are reported
apart, as a toolchain difference, and do not make a config non-final.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SET_RE = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
UNSET_RE = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")
NOT_SET = "n"

# Symbols computed from the compiler, assembler and linker rather than chosen. The configure
# stage adds every symbol whose Kconfig entry calls the toolchain; these are the ones that
# hold its version and identity.
TOOLCHAIN_RE = re.compile(
    r"CONFIG_(CC_VERSION_TEXT|(CC|AS|LD)_IS_[A-Z]+|(GCC|CLANG|AS|LD|LLD|RUSTC|RUSTC_LLVM|"
    r"PAHOLE)_VERSION|BINDGEN_VERSION_TEXT|RUST_IS_AVAILABLE)"
)


def first_bad_line(text: str) -> int:
    """The number of the first line that is neither blank, a comment nor `CONFIG_X=value`
    (0 when there is none): a config or fragment holding anything else is another file."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#") and not SET_RE.fullmatch(line):
            return number
    return 0


def parse(text: str) -> dict[str, str]:
    """Symbol -> value; `# CONFIG_X is not set` reads as "n" (as Kconfig treats it)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        match = SET_RE.fullmatch(line)
        if match:
            values[match.group(1)] = match.group(2)
            continue
        match = UNSET_RE.fullmatch(line)
        if match:
            values[match.group(1)] = NOT_SET
    return values


def show(value: str | None) -> str:
    if value is None:
        return "absent"
    return "not set" if value == NOT_SET else value


@dataclass(frozen=True)
class Change:
    symbol: str
    before: str | None  # None: the symbol was not in the file
    after: str | None

    def __str__(self) -> str:
        # A symbol that vanished (its dependencies are off) is "not set" to Kconfig.
        return f"{self.symbol}: {show(self.before)} -> {show(self.after or NOT_SET)}"


def is_toolchain(symbol: str, extra: frozenset[str] = frozenset()) -> bool:
    return symbol in extra or bool(TOOLCHAIN_RE.fullmatch(symbol))


def changes(before: dict[str, str], after: dict[str, str]) -> list[Change]:
    """Every symbol whose value differs, or that one side lacks, in symbol order.

    A symbol missing on one side and "not set" on the other is no change: Kconfig reads both
    the same way.
    """
    out = []
    for symbol in sorted(set(before) | set(after)):
        old, new = before.get(symbol), after.get(symbol)
        if (old or NOT_SET) == (new or NOT_SET):
            continue
        out.append(Change(symbol, old, new))
    return out


def finality(requested: dict[str, str], result: dict[str, str],
             toolchain: frozenset[str] = frozenset()) -> tuple[list[Change], list[Change]]:
    """(changes that make the config non-final, toolchain-only changes)."""
    found = changes(requested, result)
    user = [c for c in found if not is_toolchain(c.symbol, toolchain)]
    tool = [c for c in found if is_toolchain(c.symbol, toolchain)]
    return user, tool


def unmet(fragments: list[dict[str, str]], result: dict[str, str]) -> list[Change]:
    """Fragment settings that did not survive olddefconfig (a dependency is missing).

    Later fragments win over earlier ones, as they do when merged.
    """
    wanted: dict[str, str] = {}
    for fragment in fragments:
        wanted.update(fragment)
    return [Change(sym, value, result.get(sym)) for sym, value in sorted(wanted.items())
            if (result.get(sym) or NOT_SET) != value]


def summary(found: list[Change], limit: int = 8) -> str:
    """The first few changes on one line, and how many more."""
    shown = ", ".join(str(c) for c in found[:limit])
    more = len(found) - limit
    return shown + (f" and {more} more" if more > 0 else "")
