"""Fan-out: many (version, arch) builds spread over several build hosts at once.

Each host takes the next build from one queue when it is free, so a fast host does more; one
failed build does not stop the others, and the table at the end shows every row. Ctrl-C stops
the builds running on every host and waits until each has cleaned up.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import kernel, remote, ssh, ui
from .arch import Arch
from .errors import LkbuildError
from .settings import Settings


@dataclass(frozen=True)
class Job:
    version: str
    arch: Arch

    def __str__(self) -> str:
        return f"{self.version} {self.arch.name}"


def jobs_of(versions: list[str], arches: list[Arch]) -> list[Job]:
    """Every version with every arch, in order, without repeats."""
    out: list[Job] = []
    for v in versions:
        for a in arches:
            job = Job(v, a)
            if job not in out:
                out.append(job)
    return out


def run(settings: Settings, jobs: list[Job], targets: list[remote.Target],
        request_for: Callable[[Job], kernel.Request], **options: Any) -> list[remote.Outcome]:
    """Run every job on some host (`options` go to remote.build); the outcomes in job order."""
    if len(jobs) == 1 and len(targets) == 1:  # no threads: Ctrl-C lands where the work is
        return [remote.build(settings, request_for(jobs[0]), targets[0], **options)]
    todo: queue.Queue[tuple[int, Job]] = queue.Queue()
    for n, job in enumerate(jobs):
        todo.put((n, job))
    results: dict[int, remote.Outcome] = {}
    active: set[ssh.Remote] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def worker(target: remote.Target) -> None:
        while not stop.is_set():
            try:
                n, job = todo.get_nowait()
            except queue.Empty:
                return
            prefix = f"[{target.spec} {job}] "
            ui.info(f"{prefix}starting")

            def echo(text: str, prefix: str = prefix) -> None:
                ui.err.print(prefix + text, markup=False, style="dim")

            try:
                out = remote.build(settings, request_for(job), target, echo=echo,
                                   active=active, **options)
            except LkbuildError as exc:
                out = remote.Outcome(job.version, job.arch.name, target.spec, [],
                                     error=exc.line().removeprefix("lkbuild: error: "))
            except Exception as exc:  # one host's surprise must not stop the others
                out = remote.Outcome(job.version, job.arch.name, target.spec, [],
                                     error=f"{type(exc).__name__}: {exc}")
            with lock:
                results[n] = out
                done = len(results)
            ui.info(f"{prefix}{out.status} ({done}/{len(jobs)} done)"
                    + (f": {out.error}" if out.error else ""))

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        ui.info("stopping the builds on every host")
        for conn in list(active):
            conn.stop_all()
        for t in threads:
            t.join(120)
        raise
    return [results[n] for n in sorted(results)]
