import re
from pathlib import Path

import pytest

from recipes import diagnose as diagnosemod
from recipes.diagnose import (
    CHECKS,
    DOC,
    FAILURES,
    REGENERATE,
    RULES,
    Rule,
    diagnose,
    diagnose_file,
    markdown,
)
from recipes.errors import BuildError, UserError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LOGS = ROOT / "tests" / "data" / "logs"

# Recorded build logs (BuildKit plain progress as lkbuild keeps it) and what each failed of.
RECORDED = [
    ("kernel-oom-asked-jobs.log", "out-of-memory"),
    ("kernel-oom-automatic-jobs.log", "out-of-memory"),
    ("kernel-disk-full.log", "disk-full"),
    ("desktop-tar-io-error.log", "storage-io"),
    ("kernel-buildkit-db-io-error.log", "storage-io"),
    ("desktop-credentials.log", "credentials"),
    ("desktop-no-daemon.log", "context"),
    ("context-not-found.log", "context"),
    ("kernel-patch.log", "patch"),
    ("kernel-compile-error.log", "compile"),
]

# More lines as real tools print them, beside the ones each rule lists as seen.
CASES = [
    ('process "/bin/sh -c make -j8" did not complete successfully: exit code: 137',
     "out-of-memory"),
    ("make[2]: *** [scripts/Makefile.vmlinux:34: vmlinux] Error 137", "out-of-memory"),
    ("failed to solve: Internal: error committing kk0nx: write "
     "/var/lib/buildkit/runc-overlayfs/metadata_v2.db: input/output error", "storage-io"),
    ("cp: error writing '/out/image/kernel': Input/output error", "storage-io"),
    ("write /var/lib/docker/tmp/x: no space left on device", "disk-full"),
    ("error getting credentials - err: exit status 1, out: `Cannot autolaunch D-Bus without "
     "X11 $DISPLAY`", "credentials"),
    ('error during connect: Get "http://build-host:2375/_ping": dial tcp: lookup build-host: '
     "no such host", "context"),
    ("ERROR: failed to solve: pull access denied, repository does not exist or may require "
     "authorization", "build-image"),
    ("drivers/x.c:12:3: error: 'foo' undeclared (first use in this function)", "compile"),
]


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text


@pytest.mark.parametrize("log,name", RECORDED)
def test_each_recorded_failure_is_named_with_a_one_line_cause_and_fix(log: str, name: str) -> None:
    found = diagnose_file(LOGS / log)
    assert found is not None and found.name == name
    assert one_line(found.cause) and one_line(found.fix)


def test_a_log_of_a_build_that_worked_matches_no_rule() -> None:
    assert diagnose_file(LOGS / "kernel-ok.log") is None


@pytest.mark.parametrize("name,line", [(r.name, line) for r in RULES for line in r.seen])
def test_every_line_a_rule_lists_as_seen_is_diagnosed_as_that_rule(name: str, line: str) -> None:
    found = diagnose(f"#10 512.3 some output\n#10 512.4 {line}\n#10 512.5 more output\n")
    assert found is not None and found.name == name
    assert one_line(found.cause) and one_line(found.fix)


@pytest.mark.parametrize("line,name", CASES)
def test_other_real_forms_of_each_failure_are_recognised(line: str, name: str) -> None:
    found = diagnose(f"some output\n{line}\nmore output\n")
    assert found is not None and found.name == name


def test_a_patch_failure_names_the_patch_and_hunk() -> None:
    found = diagnose_file(LOGS / "kernel-patch.log")
    assert found is not None and found.user
    assert found.cause == "patch bad-makefile.patch does not apply (Hunk #1 FAILED at 1.)"


def test_a_compile_error_is_quoted_in_the_cause() -> None:
    found = diagnose_file(LOGS / "kernel-compile-error.log")
    assert found is not None
    assert found.cause.endswith("huf_decompress.c:586:27: error: 'dtd' undeclared (first use in "
                                "this function)")


def test_out_of_memory_wins_over_the_compile_errors_it_causes() -> None:
    caused = ("lib/zstd/decompress/huf_decompress.c:1740:1: fatal error: error writing to "
              "/tmp/cccMKpKg.s: Cannot allocate memory")
    compile_rule = next(r for r in RULES if r.name == "compile")
    assert compile_rule.pattern.search(caused)  # the compile rule alone would take it
    assert diagnose(f"#10 99.1 {caused}\n").name == "out-of-memory"
    log = "a.c:1:1: error: x\ngcc: fatal error: Killed signal terminated program cc1\n"
    assert diagnose(log).name == "out-of-memory"


def test_a_full_disk_wins_over_the_compile_error_it_causes() -> None:
    text = (LOGS / "kernel-disk-full.log").read_text()
    compile_rule = next(r for r in RULES if r.name == "compile")
    assert compile_rule.pattern.search(text)
    assert diagnose(text).name == "disk-full"


def test_a_full_disk_is_named_over_the_io_errors_that_follow_it() -> None:
    log = ("#10 80.2 tar: Cannot write: I/O error\n"
           "ERROR: failed to solve: write /var/lib/docker/tmp/x: no space left on device\n")
    assert diagnose(log).name == "disk-full"


def test_a_locked_keychain_is_not_mistaken_for_a_missing_build_image() -> None:
    text = (LOGS / "desktop-credentials.log").read_text()
    assert "failed to resolve source metadata for" in text
    assert diagnose(text).name == "credentials"


def test_an_unreachable_registry_is_not_mistaken_for_a_wrong_context() -> None:
    log = ("ERROR: failed to solve: linuxkit/alpine:35b33c6b: failed to resolve source metadata "
           "for docker.io/linuxkit/alpine:35b33c6b: failed to do request: Head "
           '"https://registry-1.docker.io/v2/linuxkit/alpine/manifests/35b33c6b": dial tcp: '
           "lookup registry-1.docker.io: no such host\n")
    assert diagnose(log).name == "build-image"


def test_an_unknown_failure_is_not_guessed() -> None:
    assert diagnose("everything is fine\n") is None


def test_an_unreadable_log_is_not_diagnosed(tmp_path: Path) -> None:
    assert diagnose_file(tmp_path / "missing.log") is None


def test_out_of_memory_names_the_jobs_the_builder_allows_when_the_log_says() -> None:
    log = ("#10 0.2 lkbuild: -j12 is more than the builder's memory (cgroup limit 1024 MiB) "
           "allows -j1\n#10 80.1 gcc: fatal error: Killed signal terminated program cc1\n")
    found = diagnose(log)
    assert found.name == "out-of-memory"
    assert found.fix.startswith("use --jobs 1, what the builder's memory (cgroup limit 1024 MiB)")
    assert "inv doctor" in diagnose(log.splitlines()[1]).fix  # no such line: the general fix


def test_asked_for_jobs_over_the_builders_limit_get_the_number_that_fits() -> None:
    found = diagnose_file(LOGS / "kernel-oom-asked-jobs.log")
    assert found.fix.startswith("use --jobs 1, what the builder's memory (cgroup limit 4096 MiB)")


def test_automatic_jobs_that_still_run_out_of_memory_get_the_general_fix() -> None:
    text = (LOGS / "kernel-oom-automatic-jobs.log").read_text()
    assert "allows -j1: using it" in text  # jobs were already lowered to the limit
    assert "inv doctor" in diagnose(text).fix


def test_a_diagnosed_step_prints_cause_fix_and_log_on_one_line() -> None:
    log = LOGS / "kernel-oom-asked-jobs.log"
    found = diagnose_file(log)
    error = found.error("compiling the kernel", log)
    line = error.line()
    assert isinstance(error, BuildError) and one_line(line)
    assert line.startswith("lkbuild: error: compiling the kernel failed: the build ran out of "
                           "memory (use --jobs 1")
    assert found.fix in line and f"log: {log})" in line


def test_a_failure_of_the_input_is_a_user_error() -> None:
    log = LOGS / "kernel-patch.log"
    error = diagnose_file(log).error("configuring the kernel", log)
    assert isinstance(error, UserError) and error.exit_code == 2


def test_every_failure_has_a_unique_name_and_one_line_texts() -> None:
    names = [f.name for f in FAILURES]
    assert len(names) == len(set(names))
    for f in FAILURES:
        symptoms = f.seen if isinstance(f, Rule) else (f.symptom,)
        assert all(one_line(t) for t in (f.cause, f.fix, *symptoms)), f.name


def test_every_check_is_raised_in_the_words_the_docs_quote() -> None:
    for check in CHECKS:
        source = (ROOT / check.source).read_text()
        for words in check.says:
            assert words in source, f"{check.name}: {check.source} no longer says {words!r}"


def test_no_check_is_mistaken_for_a_log_diagnosis() -> None:
    for check in CHECKS:
        assert diagnose(check.symptom) is None, check.name


def test_a_config_that_is_not_final_is_documented_but_never_read_from_a_log() -> None:
    check = next(c for c in CHECKS if c.name == "config-not-final")
    assert check.source == "recipes/kernel.py" and "config-not-final" not in {r.name for r in RULES}
    assert check.symptom in markdown()


def test_docs_troubleshooting_md_is_what_the_table_renders() -> None:
    assert DOC == ROOT / "docs" / "troubleshooting.md"
    assert DOC.read_text() == markdown(), \
        f"docs/troubleshooting.md differs from FAILURES in recipes/diagnose.py: run `{REGENERATE}`"


def test_the_page_has_one_row_of_three_cells_per_failure() -> None:
    rows = [line for line in markdown().splitlines() if line.startswith("| ")]
    body = [row for row in rows if row != "| symptom | cause | what to do |"]
    assert len(body) == len(FAILURES)
    assert all(len(re.findall(r"(?<!\\)\|", row)) == 4 for row in rows)


def test_the_page_names_placeholders_instead_of_showing_format_fields() -> None:
    page = markdown()
    assert "patch PATCH does not apply (HUNK)" in page and "{patch}" not in page


def test_python_m_recipes_diagnose_write_regenerates_the_page(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    target = tmp_path / "docs" / "troubleshooting.md"
    monkeypatch.setattr(diagnosemod, "DOC", target)
    assert diagnosemod.main(["--write"]) == 0
    assert target.read_text() == markdown()
    assert diagnosemod.main([]) == 0
    assert capsys.readouterr().out.endswith(markdown())


def test_the_readme_points_at_the_troubleshooting_page() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    assert "docs/troubleshooting.md" in section
