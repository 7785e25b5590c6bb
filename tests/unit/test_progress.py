import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from recipes import progress, ui
from recipes.progress import Earlier, Line, Throttle, Tracker, forecast, make_object, parse

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]

CONFIG_RUN = """\
#5 [internal] load build context
#5 transferring context: 152.08MB 1.4s done
#5 DONE 1.4s

#9 [configure-base 2/2] RUN --mount=type=cache /lkbuild/configure.sh base /cache "k" "s"
#9 0.349 lkbuild: unpacking linux-source-6.12.tar.xz
#9 DONE 19.3s

#11 [configure 2/2] RUN --mount=type=cache /lkbuild/configure.sh final /cache "k" "s"
#11 DONE 2.1s

#13 exporting to client directory
#13 DONE 0.0s
"""
COMPILE_RUN = """\
#5 [internal] load build context
#5 DONE 0.0s

#9 [configure-base 2/2] RUN /lkbuild/configure.sh base /cache "k"
#9 CACHED

#11 [configure 2/2] RUN /lkbuild/configure.sh final /cache "k"
#11 CACHED

#12 [compile 1/1] RUN --mount=type=cache /lkbuild/compile.sh /cache "k" "s" /mnt/source
#12 0.186 lkbuild: make -j2 ARCH=x86_64 CROSS_COMPILE= in /cache/kbuild/k
#12 5.561   GEN     Makefile
#12 5.619   HOSTCC  scripts/basic/fixdep
#12 6.000   CC      init/main.o
#12 7.000   CC [M]  fs/zfs/x.o
#12 8.000   AS      arch/x86/entry/entry_64.o
#12 9.000   AR      init/built-in.a
#12 9.100   LD      vmlinux.o
#12 9.200   LD      vmlinux
#12 10.0 lkbuild: make took 10 s
#12 10.0 lkbuild: 702 objects in the build dir
#12 10.1 lkbuild: packaging modules
#12 12.0 lkbuild: built 6.12.117-linuxkit
#12 DONE 12.1s

#13 [facts 1/1] COPY --from=compile /out/facts/ /
#13 DONE 0.0s
"""
IMAGE_RUN = """\
#10 [compile 1/1] RUN /lkbuild/compile.sh /cache "k"
#10 CACHED

#11 [kernel 1/1] COPY --from=compile /out/image/ /
#11 DONE 0.1s

#12 exporting to image
#12 exporting layers 0.3s done
#12 naming to docker.io/lkbuild/kernel:6.12.117-amd64 done
#12 DONE 0.3s
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(target, text: str, clock: Clock | None = None, tick: float = 0.0) -> None:
    target.start([])
    for raw in text.splitlines():
        if clock is not None:
            clock.now += tick
        (target.line if isinstance(target, ui.BuildView) else target.feed)(raw)


@pytest.mark.parametrize("raw,line", [
    ("#12 1868.3 CC drivers/x.o", Line("output", 12, "CC drivers/x.o", 1868.3)),
    ("#12 5.561   CC      init/main.o", Line("output", 12, "  CC      init/main.o", 5.561)),
    ("#12 DONE 12.3s", Line("done", 12, seconds=12.3)),
    ("#12 DONE 0s", Line("done", 12, seconds=0.0)),
    ("#12 [compile 1/1] RUN /lkbuild/compile.sh /cache",
     Line("text", 12, "[compile 1/1] RUN /lkbuild/compile.sh /cache")),
    ("#7 CACHED", Line("cached", 7)),
    ("#7 CANCELED", Line("canceled", 7)),
    ("#12 ERROR: process \"/bin/sh -c x\" did not complete successfully: exit code: 2",
     Line("error", 12, "process \"/bin/sh -c x\" did not complete successfully: exit code: 2")),
    ("#12 exporting layers 0.3s done", Line("text", 12, "exporting layers 0.3s done")),
    ("", Line("other")),
    ("ERROR: failed to solve: exit code: 2",
     Line("other", text="ERROR: failed to solve: exit code: 2")),
])
def test_buildkit_plain_lines_parse_into_vertex_events(raw, line):
    assert parse(raw) == line


@pytest.mark.parametrize("text,obj", [
    ("  CC      init/main.o", "init/main.o"),
    ("  CC [M]  fs/zfs/x.o", "fs/zfs/x.o"),
    ("  AS      arch/x86/entry/entry_64.o", "arch/x86/entry/entry_64.o"),
    ("  LD      vmlinux.o", "vmlinux.o"),
    ("  HOSTCC  scripts/basic/fixdep", None),
    ("  AR      init/built-in.a", None),
    ("  GEN     Makefile", None),
    ("CC drivers/x.o", None),  # not kbuild's quiet form
    ("lkbuild: make took 10 s", None),
])
def test_make_objects_are_the_quiet_lines_that_build_a_dot_o(text, obj):
    assert make_object(text) == obj


def test_a_kernel_build_walks_its_steps_and_counts_the_objects_make_built():
    clock = Clock()
    t = Tracker(progress.KERNEL, clock)
    feed(t, CONFIG_RUN, clock, 1.0)
    assert t.step == "config" and t.note == "unpacking linux-source-6.12.tar.xz"
    feed(t, COMPILE_RUN, clock, 1.0)
    assert t.step == "package"
    assert t.objects == 4 and t.make_seconds == 10 and t.build_dir_objects == 702
    assert list(t.tail)[-1] == "LD      vmlinux"
    feed(t, IMAGE_RUN, clock, 1.0)
    assert t.step == "images" and not t.compile_cached
    s = t.summary()
    assert list(s.steps) == ["source", "config", "compile", "package", "images"]
    assert all(v > 0 for v in s.steps.values())
    assert sum(s.steps.values()) == pytest.approx(s.seconds)
    assert t.record() == Earlier(702, 10.0, 4)


def test_a_compile_taken_from_buildkits_cache_says_so_and_records_nothing():
    t = Tracker(progress.KERNEL, Clock())
    feed(t, CONFIG_RUN.replace("#9 0.349 lkbuild: unpacking linux-source-6.12.tar.xz\n", ""))
    feed(t, "#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n#12 CACHED\n"
            "#13 [facts 1/1] COPY --from=compile /out/facts/ /\n#13 CACHED\n")
    feed(t, IMAGE_RUN)
    assert t.compile_cached and t.step == "images" and t.objects == 0
    assert t.record() is None
    summary = t.summary()
    assert summary.cache_reused and "reused from BuildKit's cache" in summary.line()


def test_a_later_run_replaying_earlier_steps_as_cached_never_moves_the_step_back():
    t = Tracker(progress.KERNEL, Clock())
    feed(t, COMPILE_RUN)
    assert t.step == "package"
    feed(t, CONFIG_RUN)  # e.g. the builder image's run: its config vertices come first
    assert t.step == "package" and not t.compile_cached


def test_the_estimate_comes_from_the_earlier_build_then_more_and_more_from_this_one():
    earlier = Earlier(objects=9619, seconds=43 * 60, compiled=9619)
    start = forecast(0, 0.0, earlier)
    assert start.total == 9619 and start.left == pytest.approx(43 * 60)
    half = forecast(4629, 21 * 60, earlier)
    assert half.describe() == "4629/9619 objects, 21 min elapsed, about 22 min left"
    # This build runs twice as slow as the earlier one: the estimate follows it as it goes.
    slow_early = forecast(962, 9 * 60, earlier).left
    slow_late = forecast(8657, 77 * 60, earlier).left
    assert slow_early is not None and slow_late is not None
    assert 3 * 60 * 9 * 0.9 < slow_early < 8 * 60 * 9  # between the two paces, nearer the old
    assert slow_late == pytest.approx(962 * 77 * 60 / 8657, rel=0.2)
    assert forecast(9700, 44 * 60, earlier).describe().endswith("almost done")


def test_a_first_build_shows_its_count_and_rate_and_says_there_is_no_estimate():
    f = forecast(1234, 600.0, None)
    assert f.total is None and f.left is None
    assert f.describe() == ("1234 objects, 10 min elapsed, 2.1 objects/s "
                            "(first build of this config: no estimate yet)")


@pytest.mark.parametrize("seconds,text", [(0, "0 s"), (59.4, "59 s"), (61, "1 min"),
                                          (21 * 60 + 10, "21 min"), (3600 + 5 * 60, "1 h 05 min")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert progress.duration(seconds) == text


def test_the_throttle_lets_one_line_through_per_thirty_seconds_of_its_clock():
    clock = Clock()
    throttle = Throttle(30, clock)
    seen = []
    for _ in range(100):
        clock.now += 1.0
        seen.append(throttle.due())
    assert seen.count(True) == 3 and seen.index(True) == 29


def test_the_record_keeps_the_latest_count_and_the_pace_of_the_largest_compile(tmp_path):
    assert progress.earlier(tmp_path, "k") is None
    progress.remember(tmp_path, "k", Earlier(9619, 2580.0, 9600))
    progress.remember(tmp_path, "k", Earlier(9625, 30.0, 40))  # an incremental rebuild
    assert progress.earlier(tmp_path, "k") == Earlier(9625, 2580.0, 9600)
    (tmp_path / "progress" / "bad.json").write_text("{not json")
    assert progress.earlier(tmp_path, "bad") is None


def test_the_summary_gives_each_steps_share_and_goes_into_json():
    s = progress.Summary(200.0, {"source": 10.0, "config": 10.0, "compile": 170.0,
                                 "package": 8.0, "images": 2.0}, 698, 702, 165, False)
    assert s.line() == ("built in 3 min (source 5%, config 5%, compile 85%, package 4%, "
                        "images 1%); 698 objects compiled (the build dir holds 702)")
    data = json.loads(json.dumps(s.as_json()))
    assert [step["step"] for step in data["steps"]] == list(s.steps)
    assert data["steps"][2] == {"step": "compile", "seconds": 170.0, "share": 85}
    assert data["objects_compiled"] == 698 and data["cache_reused"] is False


def plain_view(earlier: Earlier | None = None) -> tuple[ui.BuildView, Console, Clock]:
    clock = Clock()
    console = Console(file=io.StringIO(), width=120)
    return ui.BuildView(progress.KERNEL, console, earlier, mode="plain", clock=clock), \
        console, clock


def many_objects(n: int) -> str:
    head = ("#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n#12 0.1 lkbuild: make -j2 X\n"
            "#12 0.2 lkbuild: 0 objects in the build dir before make\n")
    return head + "".join(f"#12 {i}.0   CC      drivers/x{i}.o\n" for i in range(n))


def test_piped_progress_is_a_line_per_step_and_one_every_thirty_seconds():
    view, console, clock = plain_view(Earlier(600, 600.0, 600))
    feed(view, many_objects(300), clock, 1.0)  # 300 s of compiling
    lines = console.file.getvalue().splitlines()
    assert lines[0] == ("step 3/5: compile (expecting 600 objects in about 10 min, as the "
                        "last build of this config)")
    progress_lines = lines[1:]
    assert len(progress_lines) == 10  # 300 s / 30 s
    assert progress_lines[-1] == ("compile: 300/600 objects, 5 min elapsed, about 5 min left; "
                                  "make -j2")


def test_a_piped_first_build_says_there_is_no_estimate():
    view, console, clock = plain_view()
    feed(view, many_objects(40), clock, 1.0)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "step 3/5: compile (first build of this config: no estimate yet)"
    assert lines[1].startswith("compile: 30 objects, 32 s elapsed, ")
    assert lines[1].endswith("(first build of this config: no estimate yet); make -j2")


def test_the_live_display_shows_the_steps_the_bar_and_the_last_make_lines():
    clock = Clock()
    view = ui.BuildView(progress.KERNEL, Console(file=io.StringIO()),
                        Earlier(600, 600.0, 600), mode="live", clock=clock)
    feed(view, many_objects(300), clock, 1.0)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True,
                      color_system="truecolor")
    console.print(view)
    text = console.export_text()
    assert "✓ source" in text and "● compile" in text and "· images" in text
    assert "300/600 objects, 5 min elapsed, about 5 min left" in text
    assert "━" in text  # the bar
    shown = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("CC")]
    assert shown == [f"CC      drivers/x{i}.o" for i in range(295, 300)]
    assert view.console.file.getvalue() == ""  # nothing printed line by line meanwhile


def with_memory(n: int, used_mib: int, limit_mib: int) -> str:
    """n objects, with peak.sh's memory line every tenth."""
    lines = many_objects(n).splitlines()
    out = []
    for i, line in enumerate(lines):
        out.append(line)
        if i and i % 10 == 0:
            out.append(f"#12 {i}.5 lkbuild: memory in use: {used_mib + i} MiB of {limit_mib} MiB")
    return "\n".join(out) + "\n"


def test_the_memory_in_use_against_the_limit_shows_under_the_bar_and_in_the_summary():
    clock = Clock()
    view = ui.BuildView(progress.KERNEL, Console(file=io.StringIO()),
                        Earlier(600, 600.0, 600), mode="live", clock=clock)
    feed(view, with_memory(300, 3000, 8000), clock, 1.0)
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True)
    console.print(view)
    text = console.export_text()
    assert "make -j2, memory in use 3.2 of 7.8 GiB" in text  # the last: 3000 + 300 MiB
    assert "lkbuild: memory" not in text  # not shown among the make lines
    assert view.tracker.note == "0 objects in the build dir before make"  # nor the note
    summary = view.tracker.summary()
    assert (summary.jobs, summary.memory_peak_mib, summary.memory_limit_mib) == (2, 3300, 8000)
    assert summary.line().endswith("; -j2, peak memory in use 3.2 of 7.8 GiB")
    data = summary.as_json()
    assert data["memory_peak_mib"] == 3300 and data["memory_limit_mib"] == 8000


def test_memory_near_the_limit_is_red_and_piped_progress_says_it_in_words():
    view, console, clock = plain_view(Earlier(600, 600.0, 600))
    feed(view, with_memory(100, 7300, 8000), clock, 1.0)
    last = console.file.getvalue().splitlines()[-1]
    assert last.endswith("; make -j2, memory in use 7.2 of 7.8 GiB")
    assert ui.memory_style((7300, 8000)) == "bold red"
    assert ui.memory_style((3000, 8000)) == "" and ui.memory_style(None) == ""


def test_peak_sh_reports_the_memory_in_use_while_make_runs(tmp_path):
    (tmp_path / "meminfo").write_text("MemTotal:        8192000 kB\nMemAvailable:    2048000 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    env = {"PATH": os.environ["PATH"], "LKBUILD_MEMINFO": str(tmp_path / "meminfo"),
           "LKBUILD_CGROUP_ROOT": str(cgroup), "LKBUILD_MEMORY_EVERY": "0.2"}
    script = ROOT / "kernel" / "scripts" / "peak.sh"
    run = subprocess.run(["sh", str(script), str(tmp_path / "peak"), "sleep", "1"], env=env,
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert len(lines) >= 3
    assert set(lines) == {"lkbuild: memory in use: 6000 MiB of 8000 MiB"}  # the machine's
    assert int((tmp_path / "peak").read_text()) > 0
    # A limited cgroup: its own use against its limit.
    (cgroup / "memory.max").write_text(f"{2 * 2**30}\n")
    (cgroup / "memory.current").write_text(f"{2**30}\n")
    run = subprocess.run(["sh", str(script), str(tmp_path / "peak"), "sh", "-c",
                          "sleep 0.5; exit 3"], env=env, capture_output=True, text=True)
    assert run.returncode == 3  # make's exit code is kept
    assert "lkbuild: memory in use: 1024 MiB of 2048 MiB" in run.stdout.splitlines()
    tracker = Tracker(progress.KERNEL)
    feed(tracker, "#12 [compile 1/1] RUN /lkbuild/compile.sh\n"
         + "".join(f"#12 1.0 {line}\n" for line in lines))
    assert tracker.memory == (6000, 8000)


def test_the_live_display_outside_the_compile_says_the_step_and_its_note():
    clock = Clock()
    view = ui.BuildView(progress.KERNEL, Console(file=io.StringIO()), mode="live", clock=clock)
    feed(view, CONFIG_RUN.split("#11")[0], clock, 2.0)
    console = Console(file=io.StringIO(), force_terminal=True, width=100, record=True)
    console.print(view)
    text = console.export_text()
    assert "● source" in text and "(unpacking linux-source-6.12.tar.xz)" in text


def test_verbose_streams_buildkits_own_lines_and_still_summarises():
    clock = Clock()
    console = Console(file=io.StringIO(), width=200)
    view = ui.BuildView(progress.KERNEL, console, mode="raw", clock=clock)
    feed(view, COMPILE_RUN, clock, 1.0)
    assert console.file.getvalue().splitlines() == COMPILE_RUN.splitlines()
    assert view.tracker.record() == Earlier(702, 10.0, 4)


SCRIPT = """
import sys
from pathlib import Path
from recipes import buildx, ui
buildx.docker_cli = lambda: "/bin/cat"
log = Path(sys.argv[1])
with ui.build_view("kernel"):
    code = buildx.run(["cat", sys.argv[2]], {"PATH": "/bin:/usr/bin"}, log)
assert code == 0
"""


def test_nothing_with_an_escape_code_reaches_a_pipe_and_the_log_holds_every_line(tmp_path):
    stream = tmp_path / "stream.txt"
    stream.write_text(CONFIG_RUN + COMPILE_RUN + IMAGE_RUN)
    log = tmp_path / "build.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR")}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(log), str(stream)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=50)
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stderr and "\r" not in run.stderr
    lines = run.stderr.splitlines()
    assert lines[:3] == ["step 1/5: source", "step 2/5: config",
                         "step 3/5: compile (first build of this config: no estimate yet)"]
    assert lines[-1].startswith("built in ") and "4 objects compiled" in lines[-1]
    assert "CC      init/main.o" not in run.stderr
    assert log.read_text().splitlines()[1:] == stream.read_text().splitlines()


def test_a_build_that_fails_says_where_it_stopped():
    console = Console(file=io.StringIO(), width=100)
    saved = ui.err
    ui.err = console
    try:
        with pytest.raises(RuntimeError), ui.build_view("kernel") as view:
            assert view is not None and ui.current_view() is view
            view.line("#12 [compile 1/1] RUN /lkbuild/compile.sh /cache")
            raise RuntimeError("boom")
    finally:
        ui.err = saved
    assert ui.current_view() is None
    assert console.file.getvalue().splitlines()[-1].startswith("stopped in compile after ")


def test_a_build_inside_another_builds_view_leaves_the_showing_to_it():
    saved = ui.err
    ui.err = Console(file=io.StringIO())
    try:
        with ui.build_view("kernel") as outer, ui.build_view("module") as inner:
            assert outer is not None and inner is None and ui.current_view() is outer
    finally:
        ui.err = saved


def test_a_piped_transfer_says_its_bytes_and_rate_every_thirty_seconds_and_at_the_end():
    clock = Clock()
    console = Console(file=io.StringIO(), width=200)
    moved = ui.Transfer("sending 2 layers of k to r", 600_000_000, console, live=False,
                        clock=clock)
    for _ in range(60):  # 10 MB a second for a minute
        clock.now += 1.0
        moved.advance(10_000_000)
    assert console.file.getvalue().splitlines() == [
        "sending 2 layers of k to r: 300.0 MB of 600.0 MB, 10.0 MB/s",
        "sending 2 layers of k to r: 600.0 MB of 600.0 MB, 10.0 MB/s"]
    assert moved.finished() == "sending 2 layers of k to r: 600.0 MB in 1 min (10.0 MB/s)"
    moved.update(50, total=100)  # a pull learns its layers' sizes as it goes
    assert moved.total == 100


def test_a_transfer_counts_what_an_http_client_reads_from_the_file(tmp_path):
    blob = tmp_path / "layer"
    blob.write_bytes(b"x" * 100_000)
    moved = ui.Transfer("t", None, Console(file=io.StringIO()), live=False)
    with blob.open("rb") as fh:
        reader = moved.reader(fh)
        while reader.read(8192):
            pass
        assert reader.fileno() == fh.fileno()  # what requests sizes a body by
    assert moved.done == 100_000 and moved.describe().startswith("t: 100.0 kB, ")


def test_a_transfer_on_a_pipe_never_writes_a_control_code():
    code = ("from recipes import ui\n"
            "with ui.transfer('fetching x', 1000) as t:\n"
            "    t.advance(1000)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "TERM": "xterm-256color"})
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stderr
    assert run.stderr.startswith("fetching x: 1.0 kB in 0 s (")


MODULE_RUN = """\
#3 [kfacts 2/2] RUN /lkbuild/kfacts.sh
#3 DONE 1.0s
#7 [compile 3/3] RUN /lkbuild/build.sh
#7 0.5 checking for gcc... gcc
""" + "".join(f"#7 {30 + i}.0   CC [M]  /src/module/zfs/f{i}.o\n" for i in range(120)) + """\
#7 DONE 150.0s
#9 [modules 1/1] COPY --from=built /out/root /
#9 DONE 0.1s
"""


def test_a_module_build_is_estimated_from_the_last_build_of_that_module(tmp_path):
    view, console, clock = plain_view()
    view = ui.BuildView(progress.MODULE, console, None, mode="plain", clock=clock)
    feed(view, MODULE_RUN, clock, 1.0)
    first = console.file.getvalue().splitlines()
    assert first[1] == "step 2/3: compile (first build of this module: no estimate yet)"
    measured = view.tracker.record()
    assert measured == Earlier(120, 123.0, 120)  # the compile step's time, by the clock
    progress.remember(tmp_path, "module-zfs-2.3.2-amd64", measured)
    earlier = progress.earlier(tmp_path, "module-zfs-2.3.2-amd64")
    again = ui.BuildView(progress.MODULE, Console(file=io.StringIO(), width=200), earlier,
                         mode="plain", clock=clock)
    feed(again, MODULE_RUN.split("#7 90.0")[0], clock, 1.0)
    lines = again.console.file.getvalue().splitlines()
    assert lines[1] == ("step 2/3: compile (expecting 120 objects in about 2 min, as the last "
                        "build of this module)")
    assert lines[-1].startswith("compile: 59/120 objects, ") and "left" in lines[-1]
    cached = Tracker(progress.MODULE)
    feed(cached, "#7 [compile 3/3] RUN /lkbuild/build.sh\n#7 CACHED\n")
    assert cached.record() is None  # BuildKit's cache made it: no pace to learn


def test_a_rebuild_says_it_recompiles_what_changed_instead_of_a_cold_builds_estimate():
    view, console, clock = plain_view(Earlier(3674, 1424.0, 3665))
    rebuild = ("#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n"
               "#12 0.1 lkbuild: make -j2 X\n"
               "#12 1.0 lkbuild: 3674 objects in the build dir before make\n"
               + "".join(f"#12 {2 + i}.0   CC      kernel/printk/p{i}.o\n" for i in range(40)))
    feed(view, rebuild, clock, 1.0)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == "step 3/5: compile (a rebuild: the build dir holds 3674 objects)"
    assert lines[1].startswith("compile: 30 objects recompiled, 32 s elapsed (a rebuild: make "
                               "recompiles what changed of the 3674 in the build dir)")
    assert "left" not in console.file.getvalue()
    live = Console(file=io.StringIO(), force_terminal=True, width=160, record=True)
    live.print(view)
    assert "40 objects recompiled" in live.export_text()


def test_the_compile_step_is_named_once_compile_sh_says_what_the_build_dir_held():
    view, console, clock = plain_view(Earlier(600, 600.0, 600))
    feed(view, "#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n#12 0.1 lkbuild: make -j2 X\n",
         clock, 20.0)
    assert console.file.getvalue() == ""  # not yet: a rebuild would be named otherwise
    view.line("#12 40.0 lkbuild: 0 objects in the build dir before make")
    assert console.file.getvalue().startswith("step 3/5: compile (expecting 600 objects")


def test_a_build_dir_of_another_config_is_a_cold_build_with_its_estimate():
    """The quick start's small config built in this build dir, then the full one: make
    compiles nearly all of it, so the earlier full build's estimate holds."""
    view, console, clock = plain_view(Earlier(3674, 1424.0, 3665))
    feed(view, "#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n#12 0.1 lkbuild: make -j2 X\n"
         "#12 0.3 lkbuild: 606 objects in the build dir before make, built from a config that "
         "differs in 1893 of 2104 symbols\n"
         + "".join(f"#12 {2 + i}.0   CC      kernel/k{i}.o\n" for i in range(40)), clock, 1.0)
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("step 3/5: compile (expecting 3674 objects in about 24 min")
    assert lines[1].startswith("compile: 30/3674 objects, 32 s elapsed, about ")
    assert not view.tracker.rebuild and view.tracker.held == 0


@pytest.mark.parametrize(("changed", "of", "rebuild"), [(0, 2104, True), (2, 2104, True),
                                                        (105, 2104, True), (106, 2104, False)])
def test_a_build_dir_is_a_rebuild_while_its_config_is_close_to_the_new_one(changed, of, rebuild):
    t = Tracker(progress.KERNEL)
    feed(t, "#12 [compile 1/1] RUN /lkbuild/compile.sh /cache\n"
         f"#12 0.3 lkbuild: 3674 objects in the build dir before make, built from a config that "
         f"differs in {changed} of {of} symbols\n")
    assert t.rebuild is rebuild and t.held == (3674 if rebuild else 0)


def held(build: Path) -> str:
    script = ROOT / "kernel" / "scripts" / "held.sh"
    return subprocess.run(["sh", str(script), str(build)], capture_output=True, text=True,
                          check=True).stdout


def test_held_sh_counts_the_objects_and_the_symbols_changed_since_the_last_make(tmp_path):
    build = tmp_path / "kbuild"
    (build / "scripts" / "kconfig").mkdir(parents=True)
    (build / "scripts" / "kconfig" / "conf.o").write_bytes(b"")  # the config step's host tool
    assert held(build) == "0 objects in the build dir before make\n"
    (build / "kernel").mkdir()
    for name in ("fork.o", "exit.o"):
        (build / "kernel" / name).write_bytes(b"")
    (build / ".config").write_text("# Linux/arm64 6.12.118 Kernel Configuration\nCONFIG_A=y\n"
                                   "CONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S=\"x\"\n")
    assert held(build) == "2 objects in the build dir before make\n"  # no make ran yet
    (build / "include" / "config").mkdir(parents=True)
    (build / "include" / "config" / "auto.conf").write_text(
        "#\n# Automatically generated file; DO NOT EDIT.\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\n"
        "CONFIG_S=x\n")  # strings unquoted there
    # B changed value, C was on and is off now: two symbols, of the three set now.
    assert held(build) == ("2 objects in the build dir before make, built from a config that "
                           "differs in 2 of 3 symbols\n")
