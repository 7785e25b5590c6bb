"""Kernel config files: parse, compare, and say which symbols changed.

linuxkit requires a config to be final: running it through the kernel's config tool must
change nothing. A raw diff of two 7000-line files hides the answer, so lkbuild reports the
symbols that changed (`CONFIG_X: y -> not set`). A config made with another compiler, or for
another point release of its series, moves symbols no user chose, so lkbuild's rule follows
what a user can set: the config is non-final when a symbol that has a prompt, and that the
config sets, changes. Every other change is a notice, in one of three groups: toolchain
(the compiler decides it), computed (the kernel derives it: no prompt) and version (new in,
or gone from, the source built). linuxkit's own rule, every change counts, is `strict`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .kconfig_tree import Facts

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


NOTICE_GROUPS = {
    "toolchain": "toolchain symbols differ from the config (another compiler made it)",
    "computed": "symbols the kernel computes moved (no prompt, or moved by one that has none)",
    "version": "symbols are new in, or gone from, this source",
}


@dataclass
class Finality:
    """A config's changes through olddefconfig, sorted into what a user chose and the rest."""

    nonfinal: list[Change] = field(default_factory=list)
    toolchain: list[Change] = field(default_factory=list)
    computed: list[Change] = field(default_factory=list)
    version: list[Change] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return not self.nonfinal

    def notices(self) -> dict[str, list[Change]]:
        return {name: getattr(self, name) for name in NOTICE_GROUPS}

    def as_json(self) -> dict[str, object]:
        return {"final": self.final, "nonfinal": [str(c) for c in self.nonfinal],
                **{name: [str(c) for c in found] for name, found in self.notices().items()}}


def classify(requested: Mapping[str, str], result: Mapping[str, str], facts: Facts | None,
             strict: bool = False) -> Finality:
    """Sort the changes from `requested` to `result` (see the module's docstring).

    A change is the toolchain's when its symbol holds the toolchain's identity, calls it, or
    depends on a symbol that changed for that reason; a symbol with a prompt that moved only
    because a symbol it depends on did is computed too (its choice was not the user's to keep).
    Without the tree's facts only the toolchain's identity is known and every other change
    counts.
    """
    found = changes(dict(requested), dict(result))
    out = Finality()
    if strict:
        out.nonfinal = found
        return out
    moved = {c.symbol for c in found}
    tool = {s for s in moved
            if TOOLCHAIN_RE.fullmatch(s) or (facts is not None and s in facts.toolchain)}
    while facts is not None:  # what depends on a moved toolchain symbol moved with it
        more = {s for s in moved - tool if facts.refs.get(s, frozenset()) & tool}
        if not more:
            break
        tool |= more
    if facts is None:
        out.toolchain = [c for c in found if c.symbol in tool]
        out.nonfinal = [c for c in found if c.symbol not in tool]
        return out
    version = {s for s in moved - tool if s not in facts.defined or
               (s in facts.prompted and s not in requested)}
    computed = {s for s in moved - tool - version if s not in facts.prompted}
    while True:  # a chosen symbol moved by one of those moves is the kernel's doing, not a choice
        more = {s for s in moved - tool - version - computed
                if facts.refs.get(s, frozenset()) & (tool | version | computed)}
        if not more:
            break
        computed |= more
    for change in found:
        group = out.toolchain if change.symbol in tool else out.version \
            if change.symbol in version else out.computed \
            if change.symbol in computed else out.nonfinal
        group.append(change)
    return out


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
