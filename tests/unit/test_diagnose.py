import pytest

from recipes.diagnose import diagnose

# Lines as they appear in real build logs (the 6.12.54 build log and BuildKit output).
CASES = [
    ("#10 512.3 gcc: fatal error: Killed signal terminated program cc1", "out-of-memory"),
    ('process "/bin/sh -c make -j8" did not complete successfully: exit code: 137',
     "out-of-memory"),
    ("failed to solve: Internal: error committing kk0nx: write "
     "/var/lib/buildkit/runc-overlayfs/metadata_v2.db: input/output error", "disk-full"),
    ("tar: Cannot write: I/O error", "disk-full"),
    ("write /var/lib/docker/tmp/x: no space left on device", "disk-full"),
    ("error getting credentials - err: exit status 1, out: `keychain cannot be accessed "
     "because the current session does not allow user interaction`", "credentials"),
    ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker "
     "daemon running?", "context"),
    ("lkbuild: patch 0001-fix.patch does not apply: Hunk #1 FAILED at 12.", "patch"),
    ("ERROR: failed to solve: failed to resolve source metadata for "
     "docker.io/linuxkit/alpine:35b33c6b", "build-image"),
    ("drivers/x.c:12:3: error: 'foo' undeclared (first use in this function)", "compile"),
]


@pytest.mark.parametrize("line,name", CASES)
def test_each_known_failure_is_recognised(line, name):
    found = diagnose(f"some output\n{line}\nmore output\n")
    assert found is not None and found.name == name
    assert found.cause and found.fix and "\n" not in found.cause + found.fix


def test_a_patch_failure_names_the_patch_and_hunk():
    found = diagnose("lkbuild: patch 0002-net.patch does not apply: Hunk #3 FAILED at 40.")
    assert found.cause == "patch 0002-net.patch does not apply (Hunk #3 FAILED at 40.)"


def test_out_of_memory_wins_over_the_compile_errors_it_causes():
    log = "a.c:1:1: error: x\ngcc: fatal error: Killed signal terminated program cc1\n"
    assert diagnose(log).name == "out-of-memory"


def test_an_unknown_failure_is_not_guessed():
    assert diagnose("everything is fine\n") is None


def test_out_of_memory_names_the_jobs_the_builder_allows_when_the_log_says():
    log = ("#10 0.2 lkbuild: -j12 is more than the builder's memory (cgroup limit 1024 MiB) "
           "allows -j1\n#10 80.1 gcc: fatal error: Killed signal terminated program cc1\n")
    found = diagnose(log)
    assert found.name == "out-of-memory"
    assert found.fix.startswith("use --jobs 1, what the builder's memory (cgroup limit 1024 MiB)")
    assert "inv doctor" in diagnose(log.splitlines()[1]).fix  # no such line: the general fix
