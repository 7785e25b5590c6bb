"""In-tree modules: a tristate symbol a kernel has off, built as a module for that kernel.

Docker Desktop's kernel leaves out modules people use (sctp, wireguard, openvswitch). The
kernel's own Kconfig, run on the target's config with `CONFIG_X=m` (olddefconfig, in the
builder), says what else must change; this module sorts those changes into what a module
build can take and what only a rebuilt kernel can:

- a tristate that becomes `m` is built too (a dependency module);
- an option of one of those modules (it depends on one, directly or through its `if` or
  menu) is set for the module build only;
- a tristate forced to `y` only by such options is built as a module instead;
- anything else (a bool of the kernel itself, a tristate that must be built in, a symbol
  that is lost) changes the kernel: refused, naming the symbols and the fragment that would
  make a kernel with the module;
- and a module symbol that the kernel's own headers test (a member of `struct net` or
  `struct sk_buff` exists only with it) changes the kernel's structures: a module built
  against them would not match the running kernel, so it is refused too.

Everything here is pure: the builder's olddefconfig output, the kernel's Kconfig and
Makefiles and the header matches come in as text.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import UserError
from .kconfig import NOT_SET, Change, changes
from .kconfig_tree import Facts

SYMBOL_RE = re.compile(r"CONFIG_[A-Z0-9_]+")
TOKEN_RE = re.compile(r"\s*(\|\||&&|!=|<=|>=|[!()=<>]|\"[^\"]*\"|'[^']*'|[A-Za-z0-9_.-]+)")
OBJ_RE = re.compile(r"^obj-\$\((CONFIG_[A-Za-z0-9_]+)\)\s*[:+]?=\s*(.*)$")
TRISTATE = {"n": 0, "m": 1, "y": 2}


def symbol(spec: str) -> str:
    """`CONFIG_IP_SCTP` or `IP_SCTP` as a CONFIG_ name; anything else is refused."""
    name = spec.strip()
    name = name if name.startswith("CONFIG_") else f"CONFIG_{name}"
    if not SYMBOL_RE.fullmatch(name):
        raise UserError(f"--in-tree {spec!r} is not a Kconfig symbol",
                        "give a tristate symbol such as CONFIG_IP_SCTP")
    return name


def module_name(symbols: Sequence[str]) -> str:
    """The image name of an `--in-tree` build: its symbols, lower case, without CONFIG_."""
    return "-".join(s.removeprefix("CONFIG_").lower() for s in symbols)[:64].strip("-_.")


# --- Kconfig expressions ---------------------------------------------------------------------

def _value(word: str, config: Mapping[str, str]) -> str:
    if word in TRISTATE:
        return word
    if word.startswith(("'", '"')):
        return word[1:-1]
    if re.fullmatch(r"-?(0x[0-9a-fA-F]+|[0-9]+)", word):
        return word
    value: str = config.get(f"CONFIG_{word}", NOT_SET)
    return value.strip('"')


def evaluate(expr: str, config: Mapping[str, str]) -> int:
    """A Kconfig dependency expression's tristate value (0 n, 1 m, 2 y) under `config`."""
    tokens: list[str] = [str(t) for t in TOKEN_RE.findall(expr) if t.strip()]
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def primary() -> int:
        token = take()
        if token == "!":
            return 2 - primary()
        if token == "(":
            value = disjunction()
            if peek() == ")":
                take()
            return value
        if peek() in ("=", "!="):
            op, other = take(), take()
            same = _value(token, config) == _value(other, config)
            return 2 if same == (op == "=") else 0
        return TRISTATE.get(_value(token, config), 0)

    def conjunction() -> int:
        value = primary()
        while peek() == "&&":
            take()
            value = min(value, primary())
        return value

    def disjunction() -> int:
        value = conjunction()
        while peek() == "||":
            take()
            value = max(value, conjunction())
        return value

    return disjunction() if tokens else 2


def _needed(expr: str, config: Mapping[str, str], facts: Facts) -> list[str] | None:
    """The fewest off symbols of `expr` that, turned on, satisfy it (None: none do)."""
    off = sorted(s for s in {f"CONFIG_{w}" for w in re.findall(r"[A-Za-z0-9_]+", expr)}
                 if s in facts.defined and config.get(s, NOT_SET) == NOT_SET)
    on = dict(config) | dict.fromkeys(off, "y")
    if evaluate(expr, on) == 0:
        return None
    for s in list(off):
        trial = dict(on) | {s: NOT_SET}
        if evaluate(expr, trial) > 0:
            on, off = trial, [o for o in off if o != s]
    return off


def unmet(name: str, config: Mapping[str, str], facts: Facts, depth: int = 0) -> list[str]:
    """The symbols that must be on for `name` to be possible, innermost first."""
    best: list[str] | None = None
    for definition in facts.depends.get(name, ()) or ((),):
        found: list[str] = []
        for expr in definition:
            if evaluate(expr, config) > 0:
                continue
            needed = _needed(expr, config, facts)
            if needed is None:
                found = []
                break
            found += [s for s in needed if s not in found]
        else:
            if best is None or len(found) < len(best):
                best = found
    out: list[str] = []
    for s in best or []:
        if depth < 8:
            out += [d for d in unmet(s, config, facts, depth + 1) if d not in out]
        if s not in out:
            out.append(s)
    return out


# --- the closure -----------------------------------------------------------------------------

@dataclass
class Closure:
    """What `CONFIG_X=m` takes on one kernel: the modules to build and the options they set."""

    requested: tuple[str, ...]
    modules: list[str] = field(default_factory=list)  # tristates built as modules
    options: dict[str, str] = field(default_factory=dict)  # module-scoped symbol -> value
    built_in: list[str] = field(default_factory=list)  # asked for, but the kernel has it (y)
    missing: dict[str, list[str]] = field(default_factory=dict)  # asked for -> what it needs
    undefined: list[str] = field(default_factory=list)  # not in this kernel's Kconfig
    kernel: list[Change] = field(default_factory=list)  # changes only a new kernel can take
    headers: dict[str, list[str]] = field(default_factory=dict)  # module -> headers testing it
    fix: list[str] = field(default_factory=list)  # `CONFIG_X=v` a kernel built for it needs

    @property
    def fits(self) -> bool:
        return not (self.missing or self.undefined or self.kernel or self.headers)

    def make_vars(self) -> list[str]:
        """`CONFIG_X=value` words for make: what Kbuild's Makefiles read."""
        out = [f"{s}=m" for s in self.modules]
        for s, value in sorted(self.options.items()):
            if not value.startswith('"') and " " not in value:
                out.append(f"{s}={'' if value == NOT_SET else value}")
        return out

    def header(self) -> str:
        """The C definitions autoconf.h would have for these symbols, for the module build."""
        lines = ["/* The module build's symbols, on top of the kernel's autoconf.h. */"]
        for s in self.modules:
            lines += [f"#undef {s}", f"#undef {s}_MODULE", f"#define {s}_MODULE 1"]
        for s, value in sorted(self.options.items()):
            lines += [f"#undef {s}", f"#undef {s}_MODULE"]
            if value == "y":
                lines.append(f"#define {s} 1")
            elif value == "m":
                lines.append(f"#define {s}_MODULE 1")
            elif value != NOT_SET:
                lines.append(f"#define {s} {value}")
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, object]:
        return {"requested": list(self.requested), "modules": self.modules,
                "options": self.options, "built_in": self.built_in, "missing": self.missing,
                "undefined": self.undefined, "kernel": [str(c) for c in self.kernel],
                "headers": self.headers}


HEADER_LINE_RE = re.compile(r"([^:]+):\d+:(.*)")
TESTED_RE = re.compile(r"\bIS_(ENABLED|REACHABLE|MODULE|BUILTIN)\(\s*(CONFIG_[A-Za-z0-9_]+)\s*\)")


def header_uses(lines: Iterable[str], symbols: Iterable[str]) -> dict[str, list[str]]:
    """Which shared headers use each symbol in a way that can change the kernel: in a
    preprocessor condition (a struct member, a macro) or as a value (an array size). An
    `if (IS_ENABLED(CONFIG_X))` in an inline function's code only picks a call, which
    modpost checks, so it does not count."""
    wanted = set(symbols)
    out: dict[str, set[str]] = {}
    for line in lines:
        match = HEADER_LINE_RE.match(line)
        if not match:
            continue
        path, text = match.groups()
        text = text.split("//", 1)[0]
        if not text.lstrip().startswith("#"):
            text = TESTED_RE.sub("", text)
        for name in SYMBOL_RE.findall(text):
            name = name.removesuffix("_MODULE") if name not in wanted else name
            if name in wanted:
                out.setdefault(name, set()).add(path)
    return {s: sorted(paths) for s, paths in out.items()}


def _on(value: str | None) -> bool:
    return (value or NOT_SET) != NOT_SET


def close(requested: Sequence[str], before: Mapping[str, str], after: Mapping[str, str],
          facts: Facts, headers: Mapping[str, Sequence[str]] | None = None) -> Closure:
    """Sort olddefconfig's changes (from `before`, the kernel's config, to `after`, the same
    with the requested symbols set to m) into a module build, or the reasons there is none."""
    out = Closure(tuple(requested))
    for s in requested:
        if s not in facts.defined:
            out.undefined.append(s)
        elif before.get(s) == "y":
            out.built_in.append(s)
        elif after.get(s) != "m":
            out.missing[s] = unmet(s, before, facts) or [s]
    moved = {c.symbol: c for c in changes(dict(before), dict(after))}
    modules = [s for s in requested if s not in out.built_in and after.get(s) == "m"]
    modules += [s for s, c in moved.items() if facts.types.get(s) == "tristate"
                and not _on(c.before) and c.after == "m" and s not in modules]
    options: dict[str, str] = {}
    rest = {s: c for s, c in moved.items() if s not in modules}
    grew = True
    while grew:  # options of options, and tristates their selects force to y
        grew = False
        scope = set(modules) | set(options)
        for s, c in sorted(rest.items()):
            selectors = {sel for sel in facts.selectors.get(s, ()) if _on(after.get(sel))}
            if facts.scope(s) & scope or (s not in facts.prompted and selectors
                                          and selectors <= scope):
                options[s] = c.after or NOT_SET
            elif facts.types.get(s) == "tristate" and c.after == "y" \
                    and (c.before or NOT_SET) in (NOT_SET, "m") \
                    and facts.selectors.get(s, frozenset()) & scope \
                    and all(sel in scope or not _on(after.get(sel))
                            or sel not in moved for sel in facts.selectors.get(s, ())):
                modules.append(s)
            else:
                continue
            del rest[s]
            grew = True
            break
    out.modules = modules
    out.options = options
    out.kernel = sorted(rest.values(), key=lambda c: c.symbol)
    out.fix = [f"{c.symbol}={c.after}" for c in out.kernel
               if c.symbol in facts.prompted and _on(c.after)]
    for s in [*modules, *options]:
        found = sorted((headers or {}).get(s, ()))
        if found and _on(after.get(s)) and not _on(before.get(s)):
            out.headers[s] = found
    return out


def refusal(closure: Closure, kernel_ref: str, name: str) -> UserError | None:
    """The one line that says why this kernel cannot take the module, and the fix."""
    if closure.fits:
        return None
    fragment = [*(f"{s}=y" for needs in closure.missing.values() for s in needs
                  if s not in closure.missing), *closure.fix,
                *(f"{s}=m" for s in closure.requested)]
    fix = (f"rebuild the kernel with a fragment holding {' '.join(dict.fromkeys(fragment))} "
           "(inv build --fragment FILE), then build the module against it")
    if closure.undefined:
        return UserError(f"kernel {kernel_ref} has no {', '.join(closure.undefined)} in its "
                         "Kconfig", "give a tristate symbol of this kernel's version "
                         "(inv kconfig --json lists them)")
    if closure.missing:
        needs = "; ".join(f"{s} needs {', '.join(d for d in deps if d != s) or 'its dependencies'}"
                          for s, deps in closure.missing.items())
        return UserError(f"kernel {kernel_ref} cannot take {name} as a module: {needs} "
                         "(off in this kernel)", fix)
    if closure.headers:
        where = "; ".join(f"{s} in {', '.join(h[:3])}"
                          + (f" and {len(h) - 3} more" if len(h) > 3 else "")
                          for s, h in closure.headers.items())
        return UserError(f"kernel {kernel_ref} cannot take {name} as a module: the kernel's own "
                         f"headers test {where}, so its structures differ without them", fix)
    shown = ", ".join(str(c) for c in closure.kernel[:8])
    more = f" and {len(closure.kernel) - 8} more" if len(closure.kernel) > 8 else ""
    return UserError(f"kernel {kernel_ref} cannot take {name} as a module: it would change the "
                     f"kernel itself ({shown}{more})", fix)


# --- where the modules are built -------------------------------------------------------------

def _makefile_lines(text: str) -> Iterable[str]:
    joined = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        yield (joined + line).strip()
        joined = ""


def objects(makefiles: Mapping[str, str], symbols: Iterable[str], srcarch: str
            ) -> dict[str, list[str]]:
    """Per symbol, the modules its Makefile lines build (`dir/name`, without .ko), outside
    other arches' dirs (arch/arm's crypto glue shares arm64's symbol names)."""
    wanted = set(symbols)
    out: dict[str, list[str]] = {s: [] for s in wanted}
    for path in sorted(makefiles):
        base = path.rsplit("/", 1)[-1]
        if base not in ("Makefile", "Kbuild") or "/" not in path:
            continue
        if path.startswith("arch/") and not path.startswith(f"arch/{srcarch}/"):
            continue
        directory = path.rsplit("/", 1)[0]
        for line in _makefile_lines(makefiles[path]):
            match = OBJ_RE.match(line)
            if not match or match.group(1) not in wanted:
                continue
            for word in match.group(2).split():
                module = f"{directory}/{word[:-2]}"
                if word.endswith(".o") and module not in out[match.group(1)]:
                    out[match.group(1)].append(module)
    return out


def steps_script(modules: Sequence[str], make_vars: Sequence[str]) -> str:
    """The compile stage's script: the kernel's own sources of those dirs go over kernel-dev,
    each dir's modules are built with the closure's symbols (a first pass that lets symbols
    of the other dirs' modules be unresolved, a second that resolves them against their
    Module.symvers), and the .ko files come back to the source dir for packaging."""
    dirs: dict[str, list[str]] = {}
    for m in modules:
        d, name = m.rsplit("/", 1)
        dirs.setdefault(d, []).append(f"{name}.ko")
    words = " ".join(make_vars)
    lines = ["#!/bin/sh", "# generated by lkbuild for an in-tree module build", "set -eu",
             'cp -a tree/. "$KERNELDIR/"',
             f'vars="{words}"',
             "build() {  # DIR EXTRA-SYMBOLS WARN TARGETS...",
             "  d=$1 extra=$2 warn=$3; shift 3",
             '  make -C "$KERNELDIR" M="$KERNELDIR/$d" $vars KCFLAGS="-include $PWD/intree.h" '
             'KBUILD_EXTRA_SYMBOLS="$extra" KBUILD_MODPOST_WARN="$warn" '
             '-j"$JOBS" "$@"',
             "}"]
    warn = "1" if len(dirs) > 1 else ""
    for d, kos in dirs.items():
        lines.append(f"build {d} '' '{warn}' {' '.join(kos)}")
    if len(dirs) > 1:
        for d, kos in dirs.items():
            extra = " ".join(f"$KERNELDIR/{o}/Module.symvers" for o in dirs if o != d)
            lines.append(f'build {d} "{extra}" \'\' {" ".join(kos)}')
    lines.append("mkdir -p lkbuild-ko")
    lines += [f'cp "$KERNELDIR/{m}.ko" lkbuild-ko/' for m in modules]
    return "\n".join(lines) + "\n"


MODPOST_UNDEFINED_RE = re.compile(r'ERROR: modpost: "([^"]+)" \[([^\]]+)\] undefined!')


def unresolved(log: str) -> dict[str, list[str]]:
    """modpost's undefined symbols in a build log: module file -> kernel symbols."""
    out: dict[str, list[str]] = {}
    for sym, module in MODPOST_UNDEFINED_RE.findall(log):
        name = module.rsplit("/", 1)[-1]
        if sym not in out.setdefault(name, []):
            out[name].append(sym)
    return out


def status(config: Mapping[str, str], symbols: Sequence[str]) -> str:
    """How a kernel has a recipe's symbols: built-in, module, partly, or missing."""
    values = [config.get(s, NOT_SET) for s in symbols]
    if values and all(v == "y" for v in values):
        return "built-in"
    if values and all(v in ("y", "m") for v in values):
        return "module"
    if any(v in ("y", "m") for v in values):
        return "partly"
    return "missing"
