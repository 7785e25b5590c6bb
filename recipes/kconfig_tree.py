"""A kernel's Kconfig files, read for what the finality check must know of each symbol.

Of every symbol olddefconfig moved, the check asks: can a user set it (it has a prompt), does
this version still define it, and did the toolchain move it (its entry calls the compiler, or
it depends on a symbol that does). The answers are in the Kconfig files, which the config step
packs into kconfig.tgz; they are read here as text, following `source` from the top-level
Kconfig for the build's arch, without evaluating anything.
"""
from __future__ import annotations

import fnmatch
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Kconfig macros that name the tree, not the machine: a `$(...)` of any other (cc-option,
# success, shell, CC_VERSION_TEXT, ...) asks the toolchain or the build machine.
TREE_MACROS = frozenset({"SRCARCH", "ARCH", "srctree", "HEADER_ARCH", "SUBARCH",
                         "KERNELVERSION"})
TYPES = frozenset({"bool", "tristate", "string", "int", "hex"})
WORD_RE = re.compile(r"[A-Za-z0-9_]+")
NUMBER_RE = re.compile(r"-?(0x[0-9a-fA-F]+|[0-9]+)")
MACRO_RE = re.compile(r"\$\(([A-Za-z0-9_-]+)")
ASSIGN_RE = re.compile(r"[A-Za-z0-9_-]+\s*(:=|\+=|=)")
NOT_SYMBOLS = frozenset({"if", "on", "y", "m", "n"})


@dataclass(frozen=True)
class Facts:
    """Per symbol (CONFIG_ names): defined, has a prompt, calls the toolchain, and the symbols
    its value is computed from (dependencies, defaults, enclosing blocks, selectors)."""

    defined: frozenset[str]
    prompted: frozenset[str]
    toolchain: frozenset[str]
    refs: Mapping[str, frozenset[str]]
    types: Mapping[str, str] = field(default_factory=dict)
    depends: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    """Per definition of a symbol, the expressions it depends on (its own `depends on` and
    its enclosing `if` and menu blocks'): an in-tree module's options are scoped by them."""
    selectors: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def scope(self, symbol: str) -> frozenset[str]:
        """Every symbol any definition of `symbol` depends on."""
        return frozenset(s for definition in self.depends.get(symbol, ())
                         for expr in definition for s in symbols_in(expr))


@dataclass
class _Frame:
    kind: str  # if, menu, choice, comment
    refs: set[str] = field(default_factory=set)
    members: list[str] = field(default_factory=list)
    exprs: list[str] = field(default_factory=list)


@dataclass
class _State:
    files: Mapping[str, str]
    variables: Mapping[str, str]
    defined: set[str] = field(default_factory=set)
    prompted: set[str] = field(default_factory=set)
    toolchain: set[str] = field(default_factory=set)
    refs: dict[str, set[str]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    depends: dict[str, list[list[str]]] = field(default_factory=dict)
    selectors: dict[str, set[str]] = field(default_factory=dict)
    frames: list[_Frame] = field(default_factory=list)
    entry: str | _Frame | None = None
    reading: set[str] = field(default_factory=set)


def _strip_comment(line: str) -> str:
    """The line without its `#` comment; a `#` in quotes or in a `$(...)` call is text."""
    quote, depth = "", 0
    for i, ch in enumerate(line):
        if quote:
            if ch == "\\":
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif line.startswith("$(", i):
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif ch == "#" and not depth:
            return line[:i]
    return line


def _without_text(expr: str) -> str:
    """The expression without quoted strings and `$(...)` calls: what is left names symbols."""
    out, quote, depth = [], "", 0
    i = 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == quote:
                quote = ""
        elif depth:
            if expr.startswith("$(", i):
                depth += 1
                i += 1
            elif ch == ")":
                depth -= 1
        elif ch in "\"'":
            quote = ch
        elif expr.startswith("$(", i):
            depth = 1
            i += 1
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def symbols_in(expr: str) -> set[str]:
    """The symbols an expression names, as CONFIG_ names."""
    return {f"CONFIG_{w}" for w in WORD_RE.findall(_without_text(expr))
            if w not in NOT_SYMBOLS and not NUMBER_RE.fullmatch(w)}


def _condition(rest: str) -> str:
    """What follows a top-level ` if ` in an attribute (a prompt's or default's condition)."""
    text = _without_text(rest)
    match = re.search(r"(^|\s)if\s", text)
    return text[match.end():] if match else ""


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with `\\` continuations joined and help text left out."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i]
        i += 1
        yield line
        if line.strip() in ("help", "---help---"):
            indent = -1
            while i < len(lines):
                body = lines[i]
                if body.strip():
                    width = len(body.expandtabs(8)) - len(body.expandtabs(8).lstrip())
                    if indent < 0:
                        indent = width
                    if width < indent or indent == 0:
                        break
                i += 1


def _expand(path: str, variables: Mapping[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z0-9_-]+)\)", lambda m: variables.get(m.group(1), ""), path)


def _source(state: _State, keyword: str, rest: str, here: str) -> None:
    path = _expand(rest.strip().strip('"'), state.variables)
    if keyword.startswith(("rsource", "orsource")):
        path = str(PurePosixPath(here).parent / path)
    path = str(PurePosixPath(path.removeprefix("./")))
    names = sorted(n for n in state.files if fnmatch.fnmatchcase(n, path)) \
        if any(c in path for c in "*?[") else [path]
    for name in names:
        if name in state.files and name not in state.reading:
            _read_file(state, name)


def _read_file(state: _State, name: str) -> None:
    state.reading.add(name)
    for raw in _logical_lines(state.files[name]):
        _line(state, _strip_comment(raw).strip(), name)
    state.reading.discard(name)


def _enclosing(state: _State) -> set[str]:
    refs: set[str] = set()
    for frame in state.frames:
        refs |= frame.refs
    return refs


def _line(state: _State, line: str, here: str) -> None:
    if not line or ASSIGN_RE.match(line):
        return
    keyword, _, rest = line.replace("\t", " ").partition(" ")
    rest = rest.strip()
    if keyword in ("config", "menuconfig"):
        symbol = f"CONFIG_{rest.split()[0]}" if rest else ""
        state.entry = symbol or None
        if symbol:
            state.defined.add(symbol)
            state.refs.setdefault(symbol, set()).update(_enclosing(state))
            state.depends.setdefault(symbol, []).append(
                [e for frame in state.frames for e in frame.exprs])
            if state.frames and state.frames[-1].kind == "choice":
                state.frames[-1].members.append(symbol)
        return
    if keyword in ("source", "rsource", "osource", "orsource"):
        state.entry = None
        _source(state, keyword, rest, here)
        return
    if keyword in ("if", "menu", "choice", "comment"):
        frame = _Frame(keyword, symbols_in(rest) if keyword == "if" else set(),
                       exprs=[_without_text(rest).strip()] if keyword == "if" else [])
        if keyword == "comment":  # its `depends on` is its own; nothing nests in it
            state.entry = frame
            return
        state.frames.append(frame)
        state.entry = None if keyword == "if" else frame
        return
    if keyword in ("endif", "endmenu", "endchoice"):
        state.entry = None
        if not state.frames:
            return
        frame = state.frames.pop()
        for member in frame.members:  # a choice's values move together
            state.refs[member].update(m for m in frame.members if m != member)
        return
    if keyword == "mainmenu":
        state.entry = None
        return
    _attribute(state, keyword, rest)


def _attribute(state: _State, keyword: str, rest: str) -> None:
    entry = state.entry
    if entry is None:
        return
    if keyword in ("depends", "visible"):  # depends on, visible if: every word is a symbol
        refs = symbols_in(rest)
        if keyword == "depends":
            expr = _without_text(rest).strip().removeprefix("on").strip()
            if isinstance(entry, _Frame):
                entry.exprs.append(expr)
            else:
                state.depends[entry][-1].append(expr)
    elif keyword in ("select", "imply"):
        if isinstance(entry, str) and rest:
            target = f"CONFIG_{rest.split()[0]}"
            state.refs.setdefault(target, set()).update({entry} | symbols_in(_condition(rest)))
            if keyword == "select":
                state.selectors.setdefault(target, set()).add(entry)
        return
    elif keyword in TYPES or keyword == "prompt":
        refs = symbols_in(_condition(rest))
        if isinstance(entry, str) and (keyword == "prompt" or rest.startswith(("\"", "'"))):
            state.prompted.add(entry)
    elif keyword in ("default", "def_bool", "def_tristate", "range"):
        refs = symbols_in(rest)
        if keyword.startswith("def_") and isinstance(entry, str):
            state.types.setdefault(entry, keyword.removeprefix("def_"))
    else:  # help, modules, option, optional, transitional, ...
        return
    if isinstance(entry, _Frame):
        entry.refs |= refs
        return
    if keyword in TYPES:
        state.types.setdefault(entry, keyword)
    state.refs.setdefault(entry, set()).update(refs)
    if any(m not in TREE_MACROS for m in MACRO_RE.findall(rest)):
        state.toolchain.add(entry)


def parse(files: Mapping[str, str], srcarch: str) -> Facts:
    """The facts of the tree `files` (path -> text) holds, read from its top-level Kconfig."""
    variables = {"SRCARCH": srcarch, "ARCH": srcarch, "HEADER_ARCH": srcarch,
                 "SUBARCH": srcarch, "srctree": "."}
    state = _State(files, variables)
    if "Kconfig" in files:
        _read_file(state, "Kconfig")
    return Facts(frozenset(state.defined), frozenset(state.prompted),
                 frozenset(state.toolchain),
                 {s: frozenset(r - {s}) for s, r in state.refs.items()},
                 dict(state.types),
                 {s: tuple(tuple(d) for d in defs) for s, defs in state.depends.items()},
                 {s: frozenset(v) for s, v in state.selectors.items()})


def srcarch_of(kernel_arch: str) -> str:
    """The arch/ directory of a make ARCH= value (x86_64 builds from arch/x86)."""
    return "x86" if kernel_arch in ("x86_64", "i386", "x86") else kernel_arch


def tree_files(path: Path) -> dict[str, str]:
    """The text files of a packed tree (path -> text), e.g. the config step's kconfig.tgz."""
    files: dict[str, str] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                name = str(PurePosixPath(member.name.removeprefix("./")))
                files[name] = handle.read().decode(errors="replace")
    return files


def read(path: Path, kernel_arch: str) -> Facts | None:
    """The facts of the config step's kconfig.tgz (None when the step wrote none)."""
    if not path.is_file():
        return None
    return parse(tree_files(path), srcarch_of(kernel_arch))
