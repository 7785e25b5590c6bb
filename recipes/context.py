"""Build contexts staged on disk for BuildKit, and the lock that guards each one.

A context is rewritten only where its content changed, so BuildKit's context transfer and its
content-keyed layer cache see unchanged files as unchanged and a repeated build redoes nothing.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from . import ui


@contextlib.contextmanager
def locked(ctx: Path, what: str) -> Iterator[None]:
    """One build per staged context at a time; a second one waits and says so.

    The lock sits beside the context dir, named after all of it: a key holds dots
    (`<scope>-6.12.117-arm64`), so a suffix swap would give every version and arch of a
    series one lock.
    """
    path = ctx.parent / f"{ctx.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            ui.info(f"waiting for another build of {what} to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def put_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write only when different, so BuildKit's context sync and layer cache see no change."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and (path.stat().st_mode & 0o777) == mode and path.read_bytes() == data:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def sync_tree(root: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Make `root` hold exactly `files` (relative path -> bytes, mode), writing what changed."""
    root.mkdir(parents=True, exist_ok=True)
    wanted_dirs = {str(Path(rel).parent) for rel in files}
    for path in sorted(root.rglob("*"), reverse=True):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_dir():
            if rel not in files:
                path.unlink()
        elif rel in files or not any(d == rel or d.startswith(rel + "/") for d in wanted_dirs):
            shutil.rmtree(path)
    for rel, (data, mode) in files.items():
        put_file(root / rel, data, mode)


def link_file(target_dir: Path, source: Path) -> None:
    """Make `source` the only file in `target_dir`, hard-linked (a copy across filesystems)."""
    target_dir.mkdir(parents=True, exist_ok=True)
    dest = target_dir / source.name
    for child in target_dir.iterdir():
        if child != dest:
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    if dest.exists() and os.path.samestat(dest.stat(), source.stat()):
        return
    tmp = target_dir / f".{source.name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    os.replace(tmp, dest)
